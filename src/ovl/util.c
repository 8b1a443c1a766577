/*
 * util.c - small helpers shared by the engine: the node lock, whiteout
 * tests, xattr access relative to a directory fd, inode number mapping
 * (xino) and resolving a node's real object.
 */
#define _GNU_SOURCE
#include "ovl.h"

#include <errno.h>
#include <linux/futex.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

/*
 * The node lock: 0 free, 1 held, 2 held with waiters (a futex mutex as in
 * Drepper's "Futexes Are Tricky").  4 bytes instead of pthread_mutex_t's
 * 40, for a struct there is one of per cached name.  The atomics carry the
 * ordering (acquire on taking, release on giving back), which is also what
 * ThreadSanitizer sees.
 */
void ovl_lock(struct ovl_lock *l)
{
	uint32_t c = 0;

	if (atomic_compare_exchange_strong_explicit(&l->v, &c, 1, memory_order_acquire,
						    memory_order_relaxed))
		return;
	if (c != 2)
		c = atomic_exchange_explicit(&l->v, 2, memory_order_acquire);
	while (c != 0) {
		syscall(SYS_futex, &l->v, FUTEX_WAIT_PRIVATE, 2, NULL, NULL, 0);
		c = atomic_exchange_explicit(&l->v, 2, memory_order_acquire);
	}
}

void ovl_unlock(struct ovl_lock *l)
{
	if (atomic_exchange_explicit(&l->v, 0, memory_order_release) == 2)
		syscall(SYS_futex, &l->v, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

#ifndef SYS_getxattrat
#define SYS_getxattrat 464
#endif
#ifndef SYS_listxattrat
#define SYS_listxattrat 465
#endif
#ifndef SYS_setxattrat
#define SYS_setxattrat 463
#endif
#ifndef SYS_removexattrat
#define SYS_removexattrat 466
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
		r = syscall(SYS_getxattrat, dirfd, name,
			    AT_SYMLINK_NOFOLLOW | (name[0] ? 0 : AT_EMPTY_PATH), xname, &args,
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
		r = syscall(SYS_listxattrat, dirfd, name,
			    AT_SYMLINK_NOFOLLOW | (name[0] ? 0 : AT_EMPTY_PATH), buf, size);
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

struct ovl_stack *ovl_stack_of(const struct ovl_node *dir)
{
	return atomic_load_explicit(&((struct ovl_node *)dir)->stack, memory_order_acquire);
}

struct ovl_loc *ovl_loc_of(const struct ovl_node *node)
{
	return atomic_load_explicit(&((struct ovl_node *)node)->loc, memory_order_acquire);
}

/* The fd of the real directory of dir in layer, or -1. */
int ovl_layer_dirfd(const struct ovl_node *dir, int layer)
{
	struct ovl_stack *st = ovl_stack_of(dir);
	int i;

	for (i = 0; st && i < st->n; i++) {
		if (st->p[i].layer == layer)
			return st->p[i].fd;
	}
	return -1;
}

int ovl_upper_dirfd(const struct ovl_fs *fs, const struct ovl_node *dir)
{
	struct ovl_stack *st = ovl_stack_of(dir);

	if (!fs->has_upper || !st || st->n == 0 || st->p[0].layer != 0)
		return -1;
	return st->p[0].fd;
}

bool ovl_has_upper(const struct ovl_fs *fs, const struct ovl_node *node)
{
	if (!fs->has_upper)
		return false;
	if (S_ISDIR(node->type))
		return ovl_upper_dirfd(fs, node) >= 0;
	return ovl_loc_of(node)->layer == 0;
}

int ovl_real_at(struct ovl_fs *fs, struct ovl_node *node, int *dfd, const char **name)
{
	struct ovl_loc *loc = ovl_loc_of(node);

	*name = loc->iname ? loc->iname : loc->name;
	if (loc->iname)
		*dfd = fs->index_fd;
	else if (loc->dirfd >= 0)
		*dfd = loc->dirfd; /* "" in it: a pinned object with no name left */
	else
		*dfd = loc->parent ? ovl_layer_dirfd(loc->parent, loc->layer) : -1;
	return *dfd < 0 ? -ESTALE : 0;
}

/* Where the data of a node is: the metacopy data file, or its real object. */
int ovl_data_at(struct ovl_fs *fs, struct ovl_node *node, int *dfd, const char **name)
{
	struct ovl_loc *data = atomic_load_explicit(&node->data, memory_order_acquire);

	if (!data)
		return ovl_real_at(fs, node, dfd, name);
	*dfd = data->dirfd;
	*name = data->name;
	return 0;
}

int ovl_real_stat(struct ovl_fs *fs, struct ovl_node *node, struct stat *st)
{
	const char *name;
	int dfd, ret;

	if (S_ISDIR(node->type)) {
		if (fstat(ovl_stack_of(node)->p[0].fd, st) < 0)
			return -errno;
		return 0;
	}
	ret = ovl_real_at(fs, node, &dfd, &name);
	if (ret)
		return ret;
	if (fstatat(dfd, name, st, AT_SYMLINK_NOFOLLOW | (name[0] ? 0 : AT_EMPTY_PATH)) < 0)
		return -errno;
	/* unlinked while open: the real object's count (0 upper, 1 for a lower file) */
	/* the name now holds another kind of object: this node is stale */
	if ((st->st_mode & S_IFMT) != node->type)
		return -ESTALE;
	return 0;
}

void ovl_tmpname(struct ovl_fs *fs, char *buf, size_t size)
{
	snprintf(buf, size, "#%llx-%lx", (unsigned long long)atomic_fetch_add(&fs->tmp_seq, 1),
		 (unsigned long)getpid());
}

int ovl_mkwhiteout(int dirfd, const char *name)
{
	if (mknodat(dirfd, name, S_IFCHR | 0, makedev(0, 0)) < 0)
		return -errno;
	return 0;
}

int ovl_setxattr_at(int dirfd, const char *name, const char *xname, const void *val, size_t size,
		    int flags)
{
	struct ovl_xattr_args args = {
	    .value = (uint64_t)(uintptr_t)val, .size = (uint32_t)size, .flags = (uint32_t)flags};
	char path[64 + 256];
	long r;

	if (atomic_load(&have_xattrat)) {
		r = syscall(SYS_setxattrat, dirfd, name,
			    AT_SYMLINK_NOFOLLOW | (name[0] ? 0 : AT_EMPTY_PATH), xname, &args,
			    sizeof(args));
		if (r >= 0)
			return 0;
		if (errno != ENOSYS)
			return -errno;
		atomic_store(&have_xattrat, 0);
	}
	if (proc_path(path, sizeof(path), dirfd, name))
		return -ENAMETOOLONG;
	return lsetxattr(path, xname, val, size, flags) < 0 ? -errno : 0;
}

int ovl_removexattr_at(int dirfd, const char *name, const char *xname)
{
	char path[64 + 256];
	long r;

	if (atomic_load(&have_xattrat)) {
		r = syscall(SYS_removexattrat, dirfd, name,
			    AT_SYMLINK_NOFOLLOW | (name[0] ? 0 : AT_EMPTY_PATH), xname);
		if (r >= 0)
			return 0;
		if (errno != ENOSYS)
			return -errno;
		atomic_store(&have_xattrat, 0);
	}
	if (proc_path(path, sizeof(path), dirfd, name))
		return -ENAMETOOLONG;
	return lremovexattr(path, xname) < 0 ? -errno : 0;
}

int ovl_set_ovl_xattr(struct ovl_fs *fs, int dirfd, const char *name, const char *xname,
		      const void *val, size_t size)
{
	char full[64];

	snprintf(full, sizeof(full), "%s%s", fs->xprefix, xname);
	if (name)
		return ovl_setxattr_at(dirfd, name, full, val, size, 0);
	return fsetxattr(dirfd, full, val, size, 0) < 0 ? -errno : 0;
}

int ovl_remove_ovl_xattr(struct ovl_fs *fs, int dirfd, const char *name, const char *xname)
{
	char full[64];
	int r;

	snprintf(full, sizeof(full), "%s%s", fs->xprefix, xname);
	if (name)
		r = ovl_removexattr_at(dirfd, name, full);
	else
		r = fremovexattr(dirfd, full) < 0 ? -errno : 0;
	return r == -ENODATA ? 0 : r;
}

#ifndef FS_IOC_GETFSUUID
struct fsuuid2 {
	uint8_t len;
	uint8_t uuid[16];
};
#define FS_IOC_GETFSUUID _IOR(0x15, 0, struct fsuuid2)
#endif

/* A uuid of zeros: none (squashfs), or one FS_IOC_GETFSUUID did not give. */
bool ovl_uuid_null(const uint8_t uuid[16])
{
	static const uint8_t null[16];

	return !memcmp(uuid, null, sizeof(null));
}

/* The uuid of the filesystem fd is on, as overlay file handles carry it; zeros if none. */
void ovl_fs_uuid(int fd, uint8_t uuid[16])
{
	struct fsuuid2 u;

	memset(&u, 0, sizeof(u));
	u.len = 16;
	if (ioctl(fd, FS_IOC_GETFSUUID, &u) < 0 || u.len != 16)
		memset(u.uuid, 0, sizeof(u.uuid));
	memcpy(uuid, u.uuid, 16);
}

/*
 * struct ovl_fb as the kernel writes it: version 0, magic 0xfb, total
 * length, flags (0: little-endian CPU), handle type, the filesystem uuid,
 * then the file handle of the real object.
 */
ssize_t ovl_encode_origin(struct ovl_fs *fs, int dirfd, const char *name, int layer,
			  unsigned char *buf, size_t size)
{
	struct {
		struct file_handle fh;
		unsigned char data[MAX_HANDLE_SZ];
	} h;
	int mount_id;
	size_t len;

	h.fh.handle_bytes = MAX_HANDLE_SZ;
	if (name_to_handle_at(dirfd, name, &h.fh, &mount_id, name[0] ? 0 : AT_EMPTY_PATH) < 0)
		return -errno;
	len = 5 + 16 + h.fh.handle_bytes;
	if (len > size || len > 255)
		return -EOVERFLOW;
	buf[0] = 0;
	buf[1] = 0xfb;
	buf[2] = (unsigned char)len;
	/* OVL_FH_FLAG_PATH_UPPER for an upper object; little-endian CPU: no flag */
	buf[3] = fs->layers[layer].is_upper ? 4 : 0;
	buf[4] = (unsigned char)h.fh.handle_type;
	memcpy(buf + 5, fs->layers[layer].uuid, 16);
	memcpy(buf + 21, h.fh.f_handle, h.fh.handle_bytes);
	return (ssize_t)len;
}

/*
 * Per-thread fsuid/fsgid: with SECBIT_NO_SETUID_FIXUP set at start-up the
 * daemon keeps its capabilities, so only ownership of new objects changes.
 */
void ovl_cred_enter(const struct ovl_cred *cr, uid_t *olduid, gid_t *oldgid)
{
	*oldgid = (gid_t)setfsgid(cr->gid);
	*olduid = (uid_t)setfsuid(cr->uid);
}

void ovl_cred_leave(uid_t olduid, gid_t oldgid)
{
	setfsuid(olduid);
	setfsgid(oldgid);
}

/*
 * Check an overlay.origin / overlay.upper value (struct ovl_fb): version 0,
 * magic 0xfb, the length byte equal to the value's length, a handle that
 * fits a struct file_handle.  Returns the handle length or -EINVAL.
 */
int ovl_fb_check(const unsigned char *fb, size_t n)
{
	if (n < 21 || n > 255 || fb[0] != 0 || fb[1] != 0xfb || fb[2] != n ||
	    n - 21 > MAX_HANDLE_SZ)
		return -EINVAL;
	return (int)(n - 21);
}

/*
 * A valid overlay.redirect: a name (no '/', not "." or "..") or an absolute
 * path of such names, at most 256 bytes, as the kernel accepts.
 */
bool ovl_redirect_valid(const char *r, size_t n)
{
	size_t i, start;

	if (n == 0 || n > 256 || memchr(r, '\0', n))
		return false;
	if (r[0] != '/')
		return !memchr(r, '/', n) && !(n == 1 && r[0] == '.') &&
		       !(n == 2 && r[0] == '.' && r[1] == '.');
	for (start = 1, i = 1; i <= n; i++) {
		if (i < n && r[i] != '/')
			continue;
		if (i == start || (i - start == 1 && r[start] == '.') ||
		    (i - start == 2 && r[start] == '.' && r[start + 1] == '.'))
			return false; /* empty, "." or ".." component */
		start = i + 1;
	}
	return true;
}

/* Parse overlay.nlink ("U+1", "L-2"): 0 with base and diff, or -EINVAL. */
int ovl_nlink_parse(const char *buf, size_t n, char *base, long *diff)
{
	char tmp[32], *end;
	long v;

	if (n < 3 || n >= sizeof(tmp) || (buf[0] != 'U' && buf[0] != 'L') ||
	    (buf[1] != '+' && buf[1] != '-'))
		return -EINVAL;
	memcpy(tmp, buf, n);
	tmp[n] = '\0';
	errno = 0;
	v = strtol(tmp + 1, &end, 10);
	if (*end || errno || v < -65536 || v > 65536)
		return -EINVAL;
	*base = buf[0];
	*diff = v;
	return 0;
}

/* Lowercase hex of buf into out (2n+1 bytes), as index entry names are written. */
void ovl_hex(const unsigned char *buf, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < n; i++) {
		out[2 * i] = digits[buf[i] >> 4];
		out[2 * i + 1] = digits[buf[i] & 15];
	}
	out[2 * n] = '\0';
}

/* The name of the index entry of a lower object: the hex of its origin. */
int ovl_index_name(struct ovl_fs *fs, int dirfd, const char *name, int layer, char *hex,
		   size_t size)
{
	unsigned char fb[256];
	ssize_t n = ovl_encode_origin(fs, dirfd, name, layer, fb, sizeof(fb));

	if (n < 0)
		return (int)n;
	if ((size_t)n * 2 + 1 > size)
		return -ENAMETOOLONG;
	ovl_hex(fb, (size_t)n, hex);
	return 0;
}
