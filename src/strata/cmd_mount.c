/*
 * cmd_mount.c - `strata mount` and `strata umount`.  Mounting runs the
 * stratafs daemon that sits next to this binary (or the one on PATH).
 */
#define _GNU_SOURCE
#include "strata.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <unistd.h>

static const char mount_usage[] =
    "usage: strata mount LOWER[:LOWER...] MOUNTPOINT [-o OPTIONS] [-f]\n"
    "       strata mount MOUNTPOINT -o lowerdir=...[,upperdir=...,workdir=...]\n";

/* the stratafs next to /proc/self/exe, else "stratafs" from PATH */
static void find_stratafs(char *buf, size_t size)
{
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	char *slash;

	snprintf(buf, size, "stratafs");
	if (n <= 0)
		return;
	self[n] = '\0';
	slash = strrchr(self, '/');
	if (!slash)
		return;
	*slash = '\0';
	if ((size_t)snprintf(buf, size, "%s/stratafs", self) < size && access(buf, X_OK) == 0)
		return;
	snprintf(buf, size, "stratafs");
}

int cmd_mount(int argc, char **argv)
{
	char exe[PATH_MAX], *opts = NULL, **args;
	const char *pos[2];
	int i, npos = 0, nargs = 0;
	int fg = 0;

	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-o") && i + 1 < argc) {
			opts = argv[++i];
		} else if (!strcmp(argv[i], "-f")) {
			fg = 1;
		} else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			fputs(mount_usage, stdout);
			return 0;
		} else if (argv[i][0] != '-' && npos < 2) {
			pos[npos++] = argv[i];
		} else {
			fputs(mount_usage, stderr);
			return 1;
		}
	}
	if (npos == 0) {
		fputs(mount_usage, stderr);
		return 1;
	}
	args = calloc(8, sizeof(char *));
	if (!args)
		return strata_error("out of memory");
	find_stratafs(exe, sizeof(exe));
	args[nargs++] = exe;
	args[nargs++] = "strata";
	args[nargs++] = (char *)pos[npos - 1];
	if (npos == 2) {
		/* LOWERS MOUNTPOINT: the layers become lowerdir= */
		size_t len = strlen(pos[0]) + (opts ? strlen(opts) : 0) + 16;
		char *o = malloc(len);

		if (!o)
			return strata_error("out of memory");
		snprintf(o, len, "lowerdir=%s%s%s", pos[0], opts ? "," : "", opts ? opts : "");
		opts = o;
	}
	if (opts) {
		args[nargs++] = "-o";
		args[nargs++] = opts;
	}
	if (fg)
		args[nargs++] = "-f";
	execvp(exe, args);
	return strata_error("cannot run '%s': %s", exe, strerror(errno));
}

int cmd_umount(int argc, char **argv)
{
	if (argc != 2)
		return strata_error("usage: strata umount MOUNTPOINT");
	if (geteuid() == 0) {
		if (umount2(argv[1], UMOUNT_NOFOLLOW) == 0)
			return 0;
		return strata_error("cannot unmount '%s': %s", argv[1], strerror(errno));
	}
	execlp("fusermount3", "fusermount3", "-u", "--", argv[1], (char *)NULL);
	return strata_error("cannot run 'fusermount3': %s", strerror(errno));
}
