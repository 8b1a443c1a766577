/*
 * main.c - `strata <command> [args]`: find the command in the table and
 * run it.
 */
#define _GNU_SOURCE
#include "strata.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#ifndef STRATA_VERSION
#define STRATA_VERSION "0.1"
#endif

struct command {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *help;
};

static int cmd_help(int argc, char **argv);
static int cmd_version(int argc, char **argv);

static const struct command commands[] = {
    {"mount", cmd_mount, "mount LOWER[:LOWER...] MOUNTPOINT [-o OPTS]  mount a union"},
    {"umount", cmd_umount, "umount MOUNTPOINT                           unmount a union"},
    {"help", cmd_help, "help                                        this text"},
    {"version", cmd_version, "version                                     print the version"},
};

#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

int strata_error(const char *fmt, ...)
{
	va_list ap;

	fputs("strata: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return 1;
}

static int cmd_help(int argc, char **argv)
{
	size_t i;

	(void)argc;
	(void)argv;
	printf("usage: strata <command> [arguments]\n\ncommands:\n");
	for (i = 0; i < NCOMMANDS; i++)
		printf("  %s\n", commands[i].help);
	printf("\nSee strata(1) and stratafs(1).\n");
	return 0;
}

static int cmd_version(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	printf("strata %s\n", STRATA_VERSION);
	return 0;
}

int main(int argc, char **argv)
{
	size_t i;

	if (argc < 2)
		return cmd_help(argc, argv) ? 1 : 1;
	if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))
		return cmd_help(argc, argv);
	if (!strcmp(argv[1], "-V") || !strcmp(argv[1], "--version"))
		return cmd_version(argc, argv);
	for (i = 0; i < NCOMMANDS; i++) {
		if (!strcmp(argv[1], commands[i].name))
			return commands[i].fn(argc - 1, argv + 1);
	}
	return strata_error("'%s' is not a strata command (see 'strata help')", argv[1]);
}
