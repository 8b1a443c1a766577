/*
 * super.c - build the per-mount context from a parsed configuration: open
 * and check every layer, work out the filesystems they live on (for xino),
 * and create the root node.  Also statfs.
 */
#define _GNU_SOURCE
#include "ovl.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <linux/magic.h>
#include <sys/vfs.h>
#include <sys/syscall.h>
#include <unistd.h>

static int fail(char *err, size_t errlen, int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return code;
}

static int config_copy(struct ovl_config *dst, const struct ovl_config *src)
{
	int i, n = src->nlower + src->ndata;

	*dst = *src;
	dst->lowerdirs = calloc((size_t)n, sizeof(char *));
	dst->upperdir = src->upperdir ? strdup(src->upperdir) : NULL;
	dst->workdir = src->workdir ? strdup(src->workdir) : NULL;
	if (!dst->lowerdirs)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		dst->lowerdirs[i] = strdup(src->lowerdirs[i]);
		if (!dst->lowerdirs[i])
			return -ENOMEM;
	}
	return 0;
}

static int open_layer(struct ovl_fs *fs, int idx, const char *path, bool lower, char *err,
		      size_t errlen)
{
	const char *what = lower ? "lower layer" : "upper layer";
	struct ovl_layer *l = &fs->layers[idx];
	struct statfs sfs;
	struct stat st;
	int fd, mfd, ret;

	l->fd = -1;
	l->idx = idx;
	l->path = strdup(path);
	if (!l->path)
		return -ENOMEM;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return fail(err, errlen, -errno, "cannot open %s '%s': %s", what, path,
			    strerror(errno));
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && lower) {
		/* a squashfs or erofs image: the layer is the root of its mount */
		ret = ovl_image_mount(fd, path, &mfd, err, errlen);
		close(fd);
		if (ret)
			return ret;
		fd = mfd;
	}
	if (fstat(fd, &st) < 0 || !S_ISDIR(st.st_mode)) {
		close(fd);
		return fail(err, errlen, -ENOTDIR, "%s '%s' is not a directory", what, path);
	}
	l->fd = fd;
	l->dev = st.st_dev;
	ovl_fs_uuid(fd, l->uuid);
	l->sorted_dirs = fstatfs(fd, &sfs) == 0 && sfs.f_type == SQUASHFS_MAGIC;
	return 0;
}

/* Give each distinct filesystem an fsid; the upper (or top) layer's is 0. */
static void assign_fsids(struct ovl_fs *fs)
{
	int i, j;

	fs->nfs = 0;
	for (i = 0; i < fs->nlayers; i++) {
		fs->layers[i].fsid = -1;
		for (j = 0; j < i; j++) {
			if (fs->layers[j].dev == fs->layers[i].dev) {
				fs->layers[i].fsid = fs->layers[j].fsid;
				break;
			}
		}
		if (fs->layers[i].fsid < 0)
			fs->layers[i].fsid = fs->nfs++;
	}
	fs->samefs = fs->nfs == 1;
	fs->xino_bits = 0;
	if (!fs->samefs) {
		/*
		 * Enough bits for every fsid, plus one as the kernel keeps.  With
		 * xino=off too: the kernel then tells files of two filesystems
		 * apart by st_dev, and a FUSE filesystem has one st_dev.
		 */
		while ((1 << fs->xino_bits) < fs->nfs)
			fs->xino_bits++;
		fs->xino_bits++;
	}
}

/* Is layer i on the upper layer's filesystem? */
static bool on_upper_fs(const struct ovl_fs *fs, int i)
{
	return fs->has_upper && fs->layers[i].fsid == fs->layers[0].fsid;
}

/*
 * A lower file handle names its filesystem by uuid (the kernel's
 * ovl_lower_uuid_ok()).  Two lower filesystems with one uuid (squashfs has
 * none: every squashfs's is null) cannot be told apart, nor can a null
 * uuid where lower changes are allowed (no index, metacopy, redirects or
 * xino=on).  Handles of those are not followed, and the index (which
 * names hard links by handle) is turned off, as the kernel does.
 */
static void check_lower_uuids(struct ovl_fs *fs)
{
	struct ovl_config *c = &fs->config;
	bool offline = c->index != OVL_ON && c->metacopy != OVL_ON &&
		       c->redirect_dir != OVL_REDIRECT_ON && c->xino != OVL_XINO_ON;
	struct ovl_layer *l, *bad = NULL;
	int i, j;

	if (!fs->has_upper && c->nfs_export != OVL_ON)
		return;
	for (i = fs->has_upper; i < fs->nlayers; i++) {
		l = &fs->layers[i];
		if (on_upper_fs(fs, i))
			continue;
		if (offline && ovl_uuid_null(l->uuid))
			l->bad_uuid = true;
		for (j = fs->has_upper; j < fs->nlayers && !l->bad_uuid; j++) {
			if (fs->layers[j].fsid != l->fsid && !on_upper_fs(fs, j) &&
			    !memcmp(fs->layers[j].uuid, l->uuid, sizeof(l->uuid)))
				l->bad_uuid = true;
		}
		if (l->bad_uuid && !bad)
			bad = l;
	}
	if (!bad || (c->index != OVL_ON && c->nfs_export != OVL_ON))
		return;
	c->index = OVL_OFF;
	c->nfs_export = OVL_OFF;
	snprintf(fs->note, sizeof(fs->note),
		 "%s uuid in lower layer '%s': falling back to index=off,nfs_export=off",
		 ovl_uuid_null(bad->uuid) ? "null" : "conflicting", bad->path);
}

static int make_root(struct ovl_fs *fs)
{
	struct ovl_node *root = ovl_node_alloc();
	struct ovl_stack *st;
	char v;
	struct stat sb;
	int i;

	if (!root)
		return -ENOMEM;
	st = calloc(1, sizeof(*st) + sizeof(st->p[0]) * (size_t)fs->nmerge);
	if (!st || ovl_node_set_loc(root, NULL, "", 0, NULL)) {
		free(st);
		ovl_node_free(root);
		return -ENOMEM;
	}
	atomic_store(&root->stack, st);
	for (i = 0; i < fs->nmerge; i++) {
		st->p[i].layer = i;
		st->p[i].fd = dup(fs->layers[i].fd);
		if (st->p[i].fd < 0) {
			st->n = i;
			ovl_node_free(root);
			return -errno;
		}
		st->n = i + 1;
	}
	if (fs->has_upper && ovl_get_ovl_xattr(fs, st->p[0].fd, NULL, "impure", &v, 1) >= 0) {
		st->p[0].flags |= OVL_PATH_IMPURE;
		ovl_nf_set(root, OVL_NF_IMPURE, true);
	}
	if (fstat(st->p[0].fd, &sb) < 0) {
		ovl_node_free(root);
		return -errno;
	}
	root->type = S_IFDIR;
	ovl_nf_set(root, OVL_NF_LOWER, fs->nmerge > 1);
	root->key_dev = sb.st_dev;
	root->key_ino = sb.st_ino;
	root->ino = ovl_map_ino(fs, 0, sb.st_ino);
	root->nlookup = 1; /* the kernel's implicit reference, never dropped */
	fs->root = ovl_node_insert(fs, root);
	return 0;
}

/* Is b below (or equal to) a?  For the kernel's "separate subtrees" rule. */
static bool path_below(const char *a, const char *b)
{
	char ra[PATH_MAX], rb[PATH_MAX];
	size_t la;

	if (!realpath(a, ra) || !realpath(b, rb))
		return false;
	la = strlen(ra);
	return !strncmp(ra, rb, la) && (rb[la] == '/' || rb[la] == '\0' || la == 1);
}

/* Remove everything in workdir/work: temporaries of copy-ups that never finished. */
static int clean_work(struct ovl_fs *fs)
{
	char name[NAME_MAX + 1];
	struct dirent *de;
	DIR *d;
	int fd, ret = 0;

	fd = openat(fs->work_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		snprintf(name, sizeof(name), "%s", de->d_name);
		ret = ovl_cleanup_tree(fs->work_fd, name);
		if (ret)
			break;
		rewinddir(d);
	}
	closedir(d);
	return ret;
}

/* The upper fs must take our xattrs and whiteouts; refuse the mount otherwise. */
static int check_upper_fs(struct ovl_fs *fs, char *err, size_t errlen)
{
	char tmp[64], tmp2[64];
	int ret;

	ovl_tmpname(fs, tmp, sizeof(tmp));
	if (mkdirat(fs->work_fd, tmp, 0700) < 0)
		return fail(err, errlen, -errno, "cannot write to workdir '%s': %s",
			    fs->config.workdir, strerror(errno));
	ret = ovl_set_ovl_xattr(fs, fs->work_fd, tmp, "opaque", "y", 1);
	if (ret) {
		ovl_cleanup_tree(fs->work_fd, tmp);
		return fail(err, errlen, ret, "upper filesystem does not support %s* xattrs: %s%s",
			    fs->xprefix, strerror(-ret),
			    fs->config.userxattr ? "" : " (try userxattr)");
	}
	ovl_tmpname(fs, tmp2, sizeof(tmp2));
	if (renameat2(fs->work_fd, tmp, fs->work_fd, tmp2, RENAME_WHITEOUT) < 0) {
		ret = -errno;
		ovl_cleanup_tree(fs->work_fd, tmp);
		return fail(err, errlen, ret, "upper filesystem does not support whiteouts: %s",
			    strerror(-ret));
	}
	ovl_cleanup_tree(fs->work_fd, tmp);
	ovl_cleanup_tree(fs->work_fd, tmp2);
	return 0;
}

static int open_subdir(int dirfd, const char *name, int *out)
{
	if (mkdirat(dirfd, name, 0) < 0 && errno != EEXIST)
		return -errno;
	*out = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	return *out < 0 ? -errno : 0;
}

static int setup_volatile(struct ovl_fs *fs)
{
	int inc, vol, fd, ret;

	ret = open_subdir(fs->work_fd, "incompat", &inc);
	if (ret)
		return ret;
	ret = open_subdir(inc, "volatile", &vol);
	close(inc);
	if (ret)
		return ret;
	fd = openat(vol, "dirty", O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
	close(vol);
	if (fd < 0)
		return -errno;
	close(fd);
	return 0;
}

/*
 * The upper root records the lower root it belongs to (overlay.origin, with
 * index=on) and the overlay's uuid, as the kernel writes them.
 */
static int mark_upper_root(struct ovl_fs *fs)
{
	unsigned char fb[256], uuid[16];
	int up = fs->layers[0].fd;
	ssize_t n;

	if (fs->config.index == OVL_ON && fs->nmerge > 1 &&
	    ovl_get_ovl_xattr(fs, up, NULL, "origin", (char *)fb, sizeof(fb)) == -ENODATA) {
		n = ovl_encode_origin(fs, fs->layers[1].fd, "", 1, fb, sizeof(fb));
		if (n > 0 && ovl_set_ovl_xattr(fs, up, NULL, "origin", fb, (size_t)n))
			return -EIO;
	}
	if (ovl_get_ovl_xattr(fs, up, NULL, "uuid", (char *)uuid, sizeof(uuid)) == -ENODATA) {
		if (getrandom(uuid, sizeof(uuid), 0) != sizeof(uuid))
			return -EIO;
		if (ovl_set_ovl_xattr(fs, up, NULL, "uuid", uuid, sizeof(uuid)))
			return -EIO;
	}
	return 0;
}

/* The index dir records which upper root it belongs to (overlay.upper). */
/*
 * Index entries of hard links whose union link count is 0 are orphans: a
 * crash between removing the last name and the entry, or an entry the
 * kernel made and had no overlay.nlink on yet.  The kernel removes them at
 * mount (ovl_indexdir_cleanup()); so do we, or the names would count wrong.
 * (Ours get "L+0" before they enter the index: one never used is kept.)
 */
static void clean_index(struct ovl_fs *fs)
{
	char nl[32], base;
	struct dirent *de;
	struct stat st;
	long diff;
	ssize_t n;
	DIR *d;
	int fd;

	fd = openat(fs->index_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || !(d = fdopendir(fd))) {
		if (fd >= 0)
			close(fd);
		return;
	}
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.' || de->d_name[0] == '#')
			continue;
		if (fstatat(fs->index_fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !S_ISREG(st.st_mode) || st.st_nlink != 1)
			continue;
		n = ovl_get_ovl_xattr(fs, fs->index_fd, de->d_name, "nlink", nl, sizeof(nl));
		if (n >= 0 &&
		    (ovl_nlink_parse(nl, (size_t)n, &base, &diff) || base != 'U' || 1 + diff > 0))
			continue; /* a union name may still be below ("L"), or a count we keep */
		unlinkat(fs->index_fd, de->d_name, 0);
	}
	closedir(d);
}

static int mark_index_dir(struct ovl_fs *fs)
{
	unsigned char fb[256];
	ssize_t n;

	if (ovl_get_ovl_xattr(fs, fs->index_fd, NULL, "upper", (char *)fb, sizeof(fb)) >= 0)
		return 0;
	n = ovl_encode_origin(fs, fs->layers[0].fd, "", 0, fb, sizeof(fb));
	if (n < 0)
		return 0;
	return ovl_set_ovl_xattr(fs, fs->index_fd, NULL, "upper", fb, (size_t)n);
}

/* upperdir= and workdir=: the kernel's checks, the workdir layout, the in-use lock. */
/*
 * Lock upperdir/workdir for this mount.  A daemon whose filesystem was just
 * unmounted may still be on its way out holding the lock: wait a second for
 * it before calling the pair in use, so that umount + mount works.
 */
static int lock_in_use(int fd)
{
	int i;

	for (i = 0; i < 100; i++) {
		if (flock(fd, LOCK_EX | LOCK_NB) == 0)
			return 0;
		if (errno != EWOULDBLOCK)
			return -errno;
		usleep(10000);
	}
	return -EBUSY;
}

static int setup_upper(struct ovl_fs *fs, char *err, size_t errlen)
{
	const struct ovl_config *cfg = &fs->config;
	struct stat ust, wst;
	int ret;

	fs->workdir_fd = open(cfg->workdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fs->workdir_fd < 0)
		return fail(err, errlen, -errno, "cannot open workdir '%s': %s", cfg->workdir,
			    strerror(errno));
	if (fstat(fs->layers[0].fd, &ust) < 0 || fstat(fs->workdir_fd, &wst) < 0)
		return fail(err, errlen, -errno, "cannot stat upperdir or workdir");
	if (ust.st_dev != wst.st_dev)
		return fail(err, errlen, -EINVAL,
			    "workdir and upperdir must reside under the same mount");
	if (path_below(cfg->upperdir, cfg->workdir) || path_below(cfg->workdir, cfg->upperdir))
		return fail(err, errlen, -EINVAL, "workdir and upperdir must be separate subtrees");
	if (lock_in_use(fs->workdir_fd) < 0 || lock_in_use(fs->layers[0].fd) < 0)
		return fail(err, errlen, -EBUSY,
			    "upperdir '%s' or workdir '%s' is in use by another mount",
			    cfg->upperdir, cfg->workdir);
	ret = open_subdir(fs->workdir_fd, "work", &fs->work_fd);
	if (ret)
		return fail(err, errlen, ret, "cannot create '%s/work': %s", cfg->workdir,
			    strerror(-ret));
	if (faccessat(fs->work_fd, "incompat/volatile", F_OK, AT_SYMLINK_NOFOLLOW) == 0)
		return fail(err, errlen, -EINVAL,
			    "workdir '%s' was used by a volatile mount: create fresh upper and "
			    "work dirs (or remove '%s/work/incompat')",
			    cfg->workdir, cfg->workdir);
	ret = clean_work(fs);
	if (ret)
		return fail(err, errlen, ret, "cannot clean '%s/work': %s", cfg->workdir,
			    strerror(-ret));
	ret = check_upper_fs(fs, err, errlen);
	if (ret)
		return ret;
	if (cfg->ovl_volatile && (ret = setup_volatile(fs)))
		return fail(err, errlen, ret, "cannot mark '%s' volatile: %s", cfg->workdir,
			    strerror(-ret));
	if (cfg->index == OVL_ON) {
		ret = open_subdir(fs->workdir_fd, "index", &fs->index_fd);
		if (!ret)
			ret = mark_index_dir(fs);
		if (!ret && !cfg->ro)
			clean_index(fs);
		if (ret)
			return fail(err, errlen, ret, "cannot create '%s/index': %s", cfg->workdir,
				    strerror(-ret));
	}
	fs->fsync_copy = !cfg->ovl_volatile;
	return mark_upper_root(fs);
}

int ovl_fs_new(const struct ovl_config *cfg, struct ovl_fs **out, char *err, size_t errlen)
{
	struct ovl_fs *fs = calloc(1, sizeof(*fs));
	int i, ret, nlower, base;

	*err = '\0';
	if (!fs)
		return -ENOMEM;
	fs->workdir_fd = fs->work_fd = fs->index_fd = -1;
	pthread_rwlock_init(&fs->rename_lock, NULL);
	pthread_mutex_init(&fs->impure_lock, NULL);
	pthread_mutex_init(&fs->listings.lock, NULL);
	pthread_mutex_init(&fs->pipes.lock, NULL);
	pthread_mutex_init(&fs->prefetch.lock, NULL);
	pthread_cond_init(&fs->prefetch.wake, NULL);
	ret = config_copy(&fs->config, cfg);
	if (ret)
		goto out_free;
	ret = ovl_nodes_init(fs);
	if (ret)
		goto out_free;
	nlower = cfg->nlower + cfg->ndata;
	fs->has_upper = cfg->upperdir != NULL;
	base = fs->has_upper ? 1 : 0;
	fs->nlayers = nlower + base;
	fs->nmerge = cfg->nlower + base;
	fs->layers = calloc((size_t)fs->nlayers, sizeof(*fs->layers));
	if (!fs->layers) {
		ret = -ENOMEM;
		goto out_free;
	}
	for (i = 0; i < fs->nlayers; i++)
		fs->layers[i].fd = -1;

	strcpy(fs->xprefix, cfg->userxattr ? "user.overlay." : "trusted.overlay.");
	fs->xprefix_len = strlen(fs->xprefix);
	if (fs->has_upper) {
		ret = open_layer(fs, 0, cfg->upperdir, false, err, errlen);
		if (ret)
			goto out_free;
		fs->layers[0].is_upper = true;
	}
	for (i = 0; i < nlower; i++) {
		ret = open_layer(fs, base + i, cfg->lowerdirs[i], true, err, errlen);
		if (ret)
			goto out_free;
		fs->layers[base + i].data_only = i >= cfg->nlower;
	}
	assign_fsids(fs);
	check_lower_uuids(fs);
	if (fs->has_upper) {
		ret = setup_upper(fs, err, errlen);
		if (ret)
			goto out_free;
	}
	ret = make_root(fs);
	if (ret)
		goto out_free;
	*out = fs;
	return 0;

out_free:
	if (!*err)
		snprintf(err, errlen, "cannot set up the union: %s", strerror(-ret));
	ovl_fs_free(fs);
	return ret;
}

void ovl_fs_free(struct ovl_fs *fs)
{
	int i;

	if (!fs)
		return;
	ovl_prefetch_stop(fs);
	ovl_listings_flush(fs);
	ovl_pipes_free(fs);
	ovl_nodes_free(fs);
	for (i = 0; fs->layers && i < fs->nlayers; i++) {
		if (fs->layers[i].fd >= 0)
			close(fs->layers[i].fd);
		free(fs->layers[i].path);
	}
	free(fs->layers);
	if (fs->index_fd >= 0)
		close(fs->index_fd);
	if (fs->work_fd >= 0)
		close(fs->work_fd);
	if (fs->workdir_fd >= 0)
		close(fs->workdir_fd);
	ovl_config_free(&fs->config);
	free(fs);
}

int ovl_syncfs(struct ovl_fs *fs)
{
	if (!fs->has_upper || fs->config.ovl_volatile)
		return 0;
	return syncfs(fs->layers[0].fd) < 0 ? -errno : 0;
}

/* statfs of the upper layer, or of the top lower layer when read-only. */
int ovl_statfs(struct ovl_fs *fs, struct ovl_node *node, struct statvfs *sv)
{
	(void)node;
	if (fstatvfs(fs->layers[0].fd, sv) < 0)
		return -errno;
	return 0;
}
