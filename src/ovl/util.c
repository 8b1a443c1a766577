/*
 * util.c - small helpers shared by the engine: whiteout tests, xattr
 * access relative to a directory fd, inode number mapping (xino) and
 * resolving a node's real object.
 */
#define _GNU_SOURCE
#include "ovl.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#ifndef SYS_getxattrat
#define SYS_getxattrat 464
#endif
#ifndef SYS_listxattrat
#define SYS_listxattrat 465
#endif

/* struct xattr_args of getxattrat(2) (Linux 6.13) */
struct ovl_xattr_args {
	uint64_t value;
	uint32_t size;
	uint32_t flags;
};

/* A whiteout is a character device with device number 0/0. */
bool ovl_is_whiteout(const struct stat *st)
{
	return S_ISCHR(st->st_mode) && st->st_rdev == makedev(0, 0);
}

/* aufs/OCI markers: ".wh.NAME" and ".wh..wh..opq" are never shown. */
bool ovl_is_wh_marker(const char *name)
{
	return strncmp(name, ".wh.", 4) == 0;
}

static _Atomic int have_xattrat = 1;

/* the /proc path of name inside dirfd, for kernels without *xattrat */
static int proc_path(char *buf, size_t size, int dirfd, const char *name)
{
	int n = snprintf(buf, size, "/proc/self/fd/%d/%s", dirfd, name);

	return (n < 0 || (size_t)n >= size) ? -ENAMETOOLONG : 0;
}

ssize_t ovl_getxattr_at(int dirfd, const char *name, const char *xname, void *buf, size_t size)
{
	struct ovl_xattr_args args = {.value = (uint64_t)(uintptr_t)buf, .size = (uint32_t)size};
	char path[64 + 256];
	long r;

	if (atomic_load(&have_xattrat)) {
		r = syscall(SYS_getxattrat, dirfd, name, AT_SYMLINK_NOFOLLOW, xname, &args,
			    sizeof(args));
		if (r >= 0)
			return r;
		if (errno != ENOSYS)
			return -errno;
		atomic_store(&have_xattrat, 0);
	}
	if (proc_path(path, sizeof(path), dirfd, name))
		return -ENAMETOOLONG;
	r = lgetxattr(path, xname, buf, size);
	return r < 0 ? -errno : r;
}

ssize_t ovl_listxattr_at(int dirfd, const char *name, char *buf, size_t size)
{
	char path[64 + 256];
	long r;

	if (atomic_load(&have_xattrat)) {
		r = syscall(SYS_listxattrat, dirfd, name, AT_SYMLINK_NOFOLLOW, buf, size);
		if (r >= 0)
			return r;
		if (errno != ENOSYS)
			return -errno;
		atomic_store(&have_xattrat, 0);
	}
	if (proc_path(path, sizeof(path), dirfd, name))
		return -ENAMETOOLONG;
	r = llistxattr(path, buf, size);
	return r < 0 ? -errno : r;
}

ssize_t ovl_getxattr_fd(int fd, const char *xname, void *buf, size_t size)
{
	ssize_t r = fgetxattr(fd, xname, buf, size);

	return r < 0 ? -errno : r;
}

/*
 * Read the private xattr overlay.<xname> of a real object: of dirfd itself
 * when name is NULL, else of name inside dirfd.  -ENODATA when absent.
 */
ssize_t ovl_get_ovl_xattr(struct ovl_fs *fs, int dirfd, const char *name, const char *xname,
			  char *buf, size_t size)
{
	char full[64];
	ssize_t r;

	snprintf(full, sizeof(full), "%s%s", fs->xprefix, xname);
	if (name)
		r = ovl_getxattr_at(dirfd, name, full, buf, size);
	else
		r = ovl_getxattr_fd(dirfd, full, buf, size);
	/* no xattr support on the layer's filesystem reads as "absent" */
	if (r == -EOPNOTSUPP)
		r = -ENODATA;
	return r;
}

/*
 * st_ino of a real inode as the union reports it.  On one filesystem the
 * real number is used as is; across filesystems the layer's fsid goes into
 * the high xino_bits, as the kernel's xino does.  A number too large for
 * that falls back to the real one (not unique; the kernel warns likewise).
 */
uint64_t ovl_map_ino(const struct ovl_fs *fs, int layer, ino_t real)
{
	uint64_t fsid, shift;

	if (fs->samefs || fs->xino_bits == 0)
		return real;
	shift = 64 - (uint64_t)fs->xino_bits;
	if ((uint64_t)real >> shift)
		return real;
	fsid = (uint64_t)fs->layers[layer].fsid;
	return (uint64_t)real | (fsid << shift);
}

/* The fd of the real directory of dir in layer, or -1. */
int ovl_layer_dirfd(const struct ovl_node *dir, int layer)
{
	int i;

	for (i = 0; i < dir->nstack; i++) {
		if (dir->stack[i].layer == layer)
			return dir->stack[i].fd;
	}
	return -1;
}

int ovl_real_stat(struct ovl_fs *fs, struct ovl_node *node, struct stat *st)
{
	int dfd;

	(void)fs;
	if (S_ISDIR(node->type)) {
		if (fstat(node->stack[0].fd, st) < 0)
			return -errno;
		return 0;
	}
	dfd = ovl_layer_dirfd(node->parent, node->layer);
	if (dfd < 0)
		return -ESTALE;
	if (fstatat(dfd, node->name, st, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	return 0;
}
