/*
 * main.c - the stratafs command: parse the command line the way mount.fuse3
 * calls it (stratafs SOURCE MOUNTPOINT -o OPTS), set up the union, mount,
 * and serve; without -f it returns only once the mount is live.
 */
#define _GNU_SOURCE
#include "stratafs.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <linux/securebits.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef STRATA_VERSION
#define STRATA_VERSION "0.1"
#endif

static const char usage[] =
    "usage: stratafs [SOURCE] MOUNTPOINT -o lowerdir=DIR[:DIR...][,upperdir=DIR,workdir=DIR]\n"
    "                [,OPTION...] [-f] [-d]\n"
    "\n"
    "A union filesystem with the semantics and on-disk format of the kernel's overlayfs.\n"
    "\n"
    "Overlay options (as the kernel's):\n"
    "  lowerdir=L1:L2:...      read-only layers, leftmost on top; '\\:' escapes a colon,\n"
    "                          '::' starts data-only layers; a layer may be a squashfs\n"
    "                          or erofs image file (mounted privately, read-only)\n"
    "  lowerdir+=DIR, datadir+=DIR  one layer each, appended (no ':' splitting)\n"
    "  upperdir=DIR,workdir=DIR  make it writable (workdir on the upper's filesystem)\n"
    "  redirect_dir=on|follow|off|nofollow, index=on|off, metacopy=on|off,\n"
    "  volatile, fsync=auto|strict|volatile, userxattr, xino=on|off|auto,\n"
    "  uuid=..., nfs_export=on|off\n"
    "Mount options:\n"
    "  fsname=NAME             source shown in /proc/mounts (default: SOURCE)\n"
    "  ro, nodev, nosuid, noexec  as for any mount; rw, dev, suid, exec, noatime,\n"
    "                          lazytime and the like are accepted\n"
    "stratafs options:\n"
    "  threads=N               worker threads (default: one per core)\n"
    "  passthrough=on|off      file data straight to the real files (default: on, as root)\n"
    "  io_uring=on|off         requests over io_uring (default: where the kernel offers\n"
    "                          it, i.e. the fuse module parameter enable_uring=1; with\n"
    "                          io_uring or io_uring=on, a warning when it does not)\n"
    "  entry_timeout=S, attr_timeout=S, negative_timeout=S  kernel cache times\n"
    "  debug                   trace every request (implies -f)\n"
    "\n"
    "  -f                      stay in the foreground\n"
    "  -d                      debug: -o debug\n"
    "  -h, --help              this text\n"
    "  -V, --version           the version\n"
    "\n"
    "Unmount with 'umount MOUNTPOINT' (or 'fusermount3 -u MOUNTPOINT'); the daemon exits.\n";

/* What the command line asked for, besides the overlay configuration. */
struct cmdline {
	const char *source;
	const char *mountpoint;
	char *opts;
	char *fsname;
	unsigned long mflags;
	bool foreground;
	bool debug;
	bool no_passthrough;
	int io_uring; /* -1: where the kernel offers it (default), 0: off, 1: asked for */
	int threads;
	double entry_timeout;
	double attr_timeout;
	double neg_timeout;
};

static int parse_seconds(const char *key, const char *val, double *out, char *err, size_t errlen)
{
	char *end;
	double d;

	if (!val || !*val)
		goto bad;
	d = strtod(val, &end);
	if (*end || d < 0)
		goto bad;
	*out = d;
	return 0;
bad:
	snprintf(err, errlen, "bad value for '%s': '%s'", key, val ? val : "");
	return -EINVAL;
}

/* Mount and FUSE options: the ones overlayfs does not know. */
static int other_opt(void *ctx, const char *key, const char *val, char *err, size_t errlen)
{
	static const char *const ignored[] = {"rw",	     "dev",
					      "suid",	     "exec",
					      "atime",	     "noatime",
					      "relatime",    "norelatime",
					      "strictatime", "nostrictatime",
					      "lazytime",    "nolazytime",
					      "diratime",    "nodiratime",
					      "async",	     "auto",
					      "noauto",	     "user",
					      "nouser",	     "users",
					      "owner",	     "_netdev",
					      "nofail",	     "defaults",
					      "allow_other", "default_permissions",
					      "allow_root",  "auto_unmount",
					      NULL};
	static const struct {
		const char *name;
		unsigned long flag;
	} flags[] = {{"ro", MS_RDONLY},	    {"nodev", MS_NODEV},      {"nosuid", MS_NOSUID},
		     {"noexec", MS_NOEXEC}, {"sync", MS_SYNCHRONOUS}, {"dirsync", MS_DIRSYNC}};
	struct cmdline *cl = ctx;
	char *end;
	size_t i;

	for (i = 0; ignored[i]; i++) {
		if (!strcmp(key, ignored[i]))
			return 0;
	}
	if (!strncmp(key, "x-", 2) || !strcmp(key, "comment") || !strcmp(key, "subtype"))
		return 0;
	for (i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
		if (!strcmp(key, flags[i].name)) {
			cl->mflags |= flags[i].flag;
			return 0;
		}
	}
	if (!strcmp(key, "fsname")) {
		free(cl->fsname);
		cl->fsname = strdup(val ? val : "");
		return cl->fsname ? 0 : -ENOMEM;
	}
	if (!strcmp(key, "passthrough") || !strcmp(key, "nopassthrough")) {
		cl->no_passthrough = !strcmp(key, "nopassthrough") || (val && !strcmp(val, "off"));
		if (val && strcmp(val, "on") && strcmp(val, "off")) {
			snprintf(err, errlen, "bad value for 'passthrough': '%s' (use on or off)",
				 val);
			return -EINVAL;
		}
		return 0;
	}
	if (!strcmp(key, "debug")) {
		cl->debug = true;
		return 0;
	}
	if (!strcmp(key, "io_uring")) {
		if (val && strcmp(val, "on") && strcmp(val, "off")) {
			snprintf(err, errlen, "bad value for 'io_uring': '%s' (use on or off)",
				 val);
			return -EINVAL;
		}
		cl->io_uring = !val || !strcmp(val, "on") ? 1 : 0;
#ifndef HAVE_LIBURING
		if (cl->io_uring == 1) {
			snprintf(err, errlen, "io_uring: this stratafs was built without liburing");
			return -EINVAL;
		}
#endif
		return 0;
	}
	if (!strcmp(key, "threads")) {
		cl->threads = val ? (int)strtol(val, &end, 10) : 0;
		if (!val || *end || cl->threads < 1 || cl->threads > 256) {
			snprintf(err, errlen, "bad value for 'threads': '%s'", val ? val : "");
			return -EINVAL;
		}
		return 0;
	}
	if (!strcmp(key, "entry_timeout"))
		return parse_seconds(key, val, &cl->entry_timeout, err, errlen);
	if (!strcmp(key, "attr_timeout"))
		return parse_seconds(key, val, &cl->attr_timeout, err, errlen);
	if (!strcmp(key, "negative_timeout"))
		return parse_seconds(key, val, &cl->neg_timeout, err, errlen);
	snprintf(err, errlen, "unknown option '%s'", key);
	return -EINVAL;
}

static int append_opts(struct cmdline *cl, const char *o)
{
	size_t old = cl->opts ? strlen(cl->opts) : 0;
	char *n = realloc(cl->opts, old + strlen(o) + 2);

	if (!n)
		return -ENOMEM;
	if (old)
		n[old++] = ',';
	strcpy(n + old, o);
	cl->opts = n;
	return 0;
}

/* Returns 0, 1 when the command is done (help/version), or -1 on error. */
static int parse_args(int argc, char **argv, struct cmdline *cl)
{
	const char *pos[2];
	int i, npos = 0;

	for (i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			fputs(usage, stdout);
			return 1;
		}
		if (!strcmp(a, "-V") || !strcmp(a, "--version")) {
			printf("stratafs %s\n", STRATA_VERSION);
			return 1;
		}
		if (!strcmp(a, "-f")) {
			cl->foreground = true;
		} else if (!strcmp(a, "-d")) {
			cl->debug = true;
		} else if (!strcmp(a, "-o") || !strncmp(a, "-o", 2)) {
			const char *o = a[2] ? a + 2 : (i + 1 < argc ? argv[++i] : NULL);

			if (!o) {
				fprintf(stderr, "stratafs: option '-o' needs a value\n");
				return -1;
			}
			if (append_opts(cl, o))
				return -1;
		} else if (a[0] == '-' && a[1]) {
			fprintf(stderr, "stratafs: unknown argument '%s' (see --help)\n", a);
			return -1;
		} else if (npos < 2) {
			pos[npos++] = a;
		} else {
			fprintf(stderr, "stratafs: too many arguments (see --help)\n");
			return -1;
		}
	}
	if (npos == 0) {
		fprintf(stderr, "stratafs: missing mountpoint (see --help)\n");
		return -1;
	}
	cl->mountpoint = pos[npos - 1];
	cl->source = npos == 2 ? pos[0] : "stratafs";
	return 0;
}

/* Many layers and many cached nodes need many fds. */
static void raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl))
		return;
	rl.rlim_cur = rl.rlim_max;
	if (geteuid() == 0 && rl.rlim_max < 1048576) {
		struct rlimit big = {1048576, 1048576};

		if (!setrlimit(RLIMIT_NOFILE, &big))
			return;
	}
	setrlimit(RLIMIT_NOFILE, &rl);
}

/*
 * Fork; the parent waits until the child reports the mount live (one byte
 * on the pipe) and exits with 0, or with 1 if the child died first.
 */
static int daemonize(int *notify_fd)
{
	int p[2], fd;
	pid_t pid;
	char c;

	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid > 0) {
		close(p[1]);
		_exit(read(p[0], &c, 1) == 1 ? 0 : 1);
	}
	close(p[0]);
	setsid();
	if (chdir("/") < 0)
		return -errno;
	fd = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (fd >= 0) {
		dup2(fd, STDIN_FILENO);
		dup2(fd, STDOUT_FILENO);
		close(fd);
	}
	*notify_fd = p[1];
	return 0;
}

/* Paths and options in a message are user input: one printable line. */
static void one_line(char *s)
{
	for (; *s; s++) {
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			*s = '?';
	}
}

static int setup_union(struct cmdline *cl, struct ovl_config *cfg, struct sfs *s)
{
	char err[512] = "";
	int ret;

	ret = ovl_params_parse(cfg, cl->opts, other_opt, cl, err, sizeof(err));
	if (!ret)
		ret = ovl_params_verify(cfg, err, sizeof(err));
	if (!ret)
		ret = ovl_fs_new(cfg, &s->fs, err, sizeof(err));
	if (ret) {
		one_line(err);
		fprintf(stderr, "stratafs: %s\n", err[0] ? err : strerror(-ret));
		return -1;
	}
	if (s->fs->note[0])
		fprintf(stderr, "stratafs: %s\n", s->fs->note);
	s->readonly = !s->fs->has_upper || (cl->mflags & MS_RDONLY);
	if (s->readonly)
		cl->mflags |= MS_RDONLY;
	s->entry_timeout = cl->entry_timeout;
	s->attr_timeout = cl->attr_timeout;
	s->neg_timeout = cl->neg_timeout;
	s->want_passthrough = !cl->no_passthrough;
	s->pt = pt_table_new();
	sfs_files_init(s);
	s->fs->changed = sfs_changed;
	s->fs->changed_ctx = s;
	return s->pt ? 0 : -1;
}

static int check_mountpoint(const char *mp)
{
	struct stat st;

	if (stat(mp, &st) < 0) {
		fprintf(stderr, "stratafs: cannot access mountpoint '%s': %s\n", mp,
			strerror(errno));
		return -1;
	}
	if (!S_ISDIR(st.st_mode)) {
		fprintf(stderr, "stratafs: mountpoint '%s' is not a directory\n", mp);
		return -1;
	}
	return 0;
}

static int serve(struct cmdline *cl, struct sfs *s)
{
	struct fw_session_opts so = {.threads = cl->threads,
				     .debug = cl->debug,
				     .io_uring = cl->io_uring != 0,
				     .io_uring_quiet = cl->io_uring < 0};
	struct fw_mount_opts mo = {0};
	char mp[PATH_MAX], err[512] = "";
	int fd, notify_fd = -1, ret;

	if (!realpath(cl->mountpoint, mp)) {
		fprintf(stderr, "stratafs: cannot access mountpoint '%s': %s\n", cl->mountpoint,
			strerror(errno));
		return 1;
	}
	mo.mountpoint = mp;
	mo.fsname = cl->fsname ? cl->fsname : cl->source;
	mo.subtype = "stratafs";
	mo.flags = cl->mflags;
	mo.allow_other = geteuid() == 0;
	mo.default_permissions = true;
	mo.rootmode = S_IFDIR;
	fd = fw_mount(&mo, err, sizeof(err));
	if (fd < 0) {
		fprintf(stderr, "stratafs: %s\n", err);
		return 1;
	}
	s->se = fw_session_new(fd, &sfs_ops, s, &so);
	if (!s->se) {
		fw_unmount(mp);
		close(fd);
		fprintf(stderr, "stratafs: out of memory\n");
		return 1;
	}
	if (!cl->foreground && daemonize(&notify_fd) < 0) {
		fw_unmount(mp);
		fprintf(stderr, "stratafs: cannot start the daemon: %s\n", strerror(errno));
		return 1;
	}
	ret = fw_session_init(s->se);
	if (ret) {
		fw_unmount(mp);
		fprintf(stderr, "stratafs: FUSE handshake failed: %s\n", strerror(-ret));
		return 1;
	}
	if (notify_fd >= 0) {
		/* the mount answers requests now: let the parent return */
		if (write(notify_fd, "", 1) != 1)
			ret = -errno;
		close(notify_fd);
		if (!cl->debug) {
			int null = open("/dev/null", O_WRONLY | O_CLOEXEC);

			if (null >= 0) {
				dup2(null, STDERR_FILENO);
				close(null);
			}
		}
	}
	fw_session_loop(s->se, mp);
	/* the kernel drops releases still queued when the connection ends */
	sfs_files_release_all(s);
	fw_session_destroy(s->se);
	return 0;
}

int main(int argc, char **argv)
{
	struct cmdline cl = {
	    .entry_timeout = 86400, .attr_timeout = 86400, .neg_timeout = 86400, .io_uring = -1};
	struct ovl_config cfg;
	struct sfs s = {0};
	int ret;

	ovl_config_init(&cfg);
	ret = parse_args(argc, argv, &cl);
	if (ret)
		return ret < 0 ? 1 : 0;
	if (cl.debug)
		cl.foreground = true;
#ifndef HAVE_LIBURING
	cl.io_uring = 0; /* asking for it was refused by the parser */
#endif
	raise_nofile();
	/*
	 * One malloc arena for all workers: nodes are small and long-lived,
	 * and an arena per thread left each partly used (peak RSS).
	 */
	mallopt(M_ARENA_MAX, 1);
	/* new objects get the caller's mode as given, and the caller as owner */
	umask(0);
	prctl(PR_SET_SECUREBITS, SECBIT_NO_SETUID_FIXUP);
	if (setup_union(&cl, &cfg, &s) || check_mountpoint(cl.mountpoint)) {
		ret = 1;
		goto out;
	}
	ret = serve(&cl, &s);
out:
	ovl_fs_free(s.fs);
	pt_table_free(s.pt);
	ovl_config_free(&cfg);
	free(cl.opts);
	free(cl.fsname);
	return ret;
}
