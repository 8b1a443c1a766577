/*
 * strata.h - the user-facing strata command: one function per subcommand,
 * dispatched from a table in main.c.
 */
#ifndef STRATA_CLI_H
#define STRATA_CLI_H

int cmd_mount(int argc, char **argv);
int cmd_umount(int argc, char **argv);

/* print "strata: <message>" on stderr and return 1 */
int strata_error(const char *fmt, ...);

#endif
