/*
 * copy_up.c - give a node an upper object (the kernel's copy_up.c).
 *
 * Parents first, then the object: it is built under a temporary name in
 * workdir/work (data by FICLONE, copy_file_range or read/write; xattrs;
 * owner, mode, times; overlay.origin) and renamed into place, so a crash
 * never leaves a half-copied object visible.  A lower hard link with
 * index=on goes through workdir/index/<origin>, and every other name of it
 * is a hard link to that entry.  Directories are copied without their
 * contents.  cu_lock of the node serializes copy-ups of it.
 */
#define _GNU_SOURCE
#include "ovl.h"
#include "../common/sysio.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef FICLONE
#define FICLONE _IOW(0x94, 9, int)
#endif

#define COPY_CHUNK (1 << 20)

/* pwrite all of buf: a short write (a full disk) is retried to get its errno */
static int write_all(int out, const char *buf, size_t len, off_t off)
{
	ssize_t w;

	while (len) {
		w = pwrite(out, buf, len, off);
		if (w < 0)
			return -errno;
		if (w == 0)
			return -EIO;
		buf += w;
		len -= (size_t)w;
		off += w;
	}
	return 0;
}

static bool cant_do(int err)
{
	return err == EXDEV || err == EINVAL || err == EOPNOTSUPP || err == ENOSYS;
}

/*
 * How a copy-up moves data, best first; a method the filesystems refuse
 * on the first chunk hands over to the next, and the layer remembers it,
 * so later copy-ups from there start with what works.  splice goes through
 * a pipe of our own (kept in fs->pipes between copy-ups), so across
 * filesystems the data moves in the kernel and no buffer of ours is
 * touched (a 1 MiB buffer per concurrent copy-up showed in the daemon's
 * RSS); read/write is the last resort.
 */
enum copy_method { COPY_RANGE, COPY_SPLICE, COPY_RW };

struct copier {
	struct ovl_fs *fs;
	struct ovl_layer *from;
	int in, out;
	enum copy_method how;
	int pipe[2];	 /* COPY_SPLICE, taken on first use */
	bool pipe_dirty; /* may hold data: closed, not given back */
	char *buf;	 /* COPY_RW */
};

/*
 * Is fd on the layer's own filesystem (not on a mount inside it)?  Only
 * then does a refusal tell something about the layer.  Asked only when a
 * refusal is to be remembered.
 */
static bool on_layer_fs(const struct ovl_layer *from, int fd)
{
	struct stat st;

	return fstat(fd, &st) == 0 && st.st_dev == from->dev;
}

/* An empty pipe from the pool, or a new one; false if none can be had. */
static bool pipe_take(struct ovl_fs *fs, int p[2])
{
	struct ovl_pipes *pp = &fs->pipes;
	bool got = false;

	pthread_mutex_lock(&pp->lock);
	if (pp->n > 0) {
		pp->n--;
		p[0] = pp->fds[pp->n][0];
		p[1] = pp->fds[pp->n][1];
		got = true;
	}
	pthread_mutex_unlock(&pp->lock);
	if (got)
		return true;
	if (pipe2(p, O_CLOEXEC) < 0)
		return false;
	fcntl(p[1], F_SETPIPE_SZ, COPY_CHUNK); /* best effort: 64 KiB otherwise */
	return true;
}

/* Give an empty pipe back to the pool (closed when the pool is full). */
static void pipe_give(struct ovl_fs *fs, int p[2])
{
	struct ovl_pipes *pp = &fs->pipes;

	pthread_mutex_lock(&pp->lock);
	if (pp->n < OVL_PIPES) {
		pp->fds[pp->n][0] = p[0];
		pp->fds[pp->n][1] = p[1];
		pp->n++;
		p[0] = p[1] = -1;
	}
	pthread_mutex_unlock(&pp->lock);
	if (p[0] >= 0) {
		close(p[0]);
		close(p[1]);
	}
}

void ovl_pipes_free(struct ovl_fs *fs)
{
	struct ovl_pipes *pp = &fs->pipes;

	while (pp->n > 0) {
		pp->n--;
		close(pp->fds[pp->n][0]);
		close(pp->fds[pp->n][1]);
	}
}

static ssize_t chunk_range(struct copier *c, off_t off, size_t len)
{
	loff_t oi = off, oo = off;
	ssize_t n = copy_file_range(c->in, &oi, c->out, &oo, len, 0);

	return n < 0 ? -errno : n;
}

static ssize_t chunk_splice(struct copier *c, off_t off, size_t len)
{
	loff_t oi = off, oo = off;
	ssize_t n;
	int ret;

	if (c->pipe[0] < 0 && !pipe_take(c->fs, c->pipe))
		return -EMFILE; /* read/write instead, this time */
	n = splice(c->in, &oi, c->pipe[1], NULL, len, SPLICE_F_MOVE);
	if (n <= 0)
		return n < 0 ? -errno : 0;
	ret = splice_exact(c->pipe[0], NULL, c->out, &oo, (size_t)n, 0);
	if (ret)
		c->pipe_dirty = true;
	return ret ? ret : n;
}

static ssize_t chunk_rw(struct copier *c, off_t off, size_t len)
{
	ssize_t n;
	int ret;

	if (!c->buf && !(c->buf = malloc(COPY_CHUNK)))
		return -ENOMEM;
	n = pread(c->in, c->buf, len < COPY_CHUNK ? len : COPY_CHUNK, off);
	if (n <= 0)
		return n < 0 ? -errno : 0;
	ret = write_all(c->out, c->buf, (size_t)n, off);
	return ret ? ret : n;
}

/* Copy [off, off + len) at the same offset; returns bytes copied (0: end of file). */
static ssize_t copy_chunk(struct copier *c, off_t off, size_t len, bool first)
{
	ssize_t n;

	for (;;) {
		if (c->how == COPY_RANGE)
			n = chunk_range(c, off, len);
		else if (c->how == COPY_SPLICE)
			n = chunk_splice(c, off, len);
		else
			return chunk_rw(c, off, len);
		if (n >= 0 || !first)
			return n;
		if (c->how == COPY_SPLICE && n == -EMFILE) {
			c->how = COPY_RW; /* no pipe to be had: not the filesystems' refusal */
			continue;
		}
		if (!cant_do((int)-n))
			return n;
		c->how++;
		if (n != -EINVAL && on_layer_fs(c->from, c->in)) /* EINVAL may be this file's */
			atomic_store(&c->from->copy_method, (uint8_t)c->how);
	}
}

static void copier_done(struct copier *c)
{
	if (c->pipe[0] >= 0 && !c->pipe_dirty) {
		pipe_give(c->fs, c->pipe);
	} else if (c->pipe[0] >= 0) {
		close(c->pipe[0]);
		close(c->pipe[1]);
	}
	free(c->buf);
}

/*
 * Reflink the whole file, unless the layer's filesystem has refused it
 * before.  Only a refusal of the filesystems counts (EXDEV, EOPNOTSUPP):
 * EINVAL can be this file's alone (btrfs nodatasum, xfs realtime), and a
 * file on a mount inside the layer says nothing about the layer.
 */
static bool try_clone(struct ovl_layer *from, int in, int out)
{
	if (atomic_load(&from->no_clone))
		return false;
	if (ioctl(out, FICLONE, in) == 0)
		return true;
	if ((errno == EXDEV || errno == EOPNOTSUPP || errno == ENOTTY || errno == ENOSYS) &&
	    on_layer_fs(from, in))
		atomic_store(&from->no_clone, true);
	return false;
}

/*
 * Copy len bytes from layer: reflink, else chunk by chunk, skipping holes
 * as the kernel's ovl_copy_up_file() does (a chunk is copied whole; where
 * the next data starts beyond the position, the gap stays a hole), so a
 * sparse lower file stays sparse in the upper layer.
 */
static int copy_data(struct ovl_fs *fs, int layer, int in, int out, off_t len)
{
	struct ovl_layer *from = &fs->layers[layer];
	struct copier c = {.fs = fs, .from = from, .in = in, .out = out, .pipe = {-1, -1}};
	off_t pos = 0, data = -1;
	bool skip_hole = true, first = true;
	struct stat st;
	ssize_t n = 0;
	size_t chunk;

	if (len == 0)
		return 0;
	if (try_clone(from, in, out))
		return 0;
	c.how = (enum copy_method)atomic_load(&from->copy_method);
	while (pos < len) {
		if (skip_hole && data < pos) {
			data = lseek(in, pos, SEEK_DATA);
			if (data > pos) {
				pos = data;
				continue;
			}
			if (data < 0 && errno == ENXIO)
				break; /* a hole up to the end */
			if (data < 0)
				skip_hole = false;
		}
		chunk = len - pos < COPY_CHUNK ? (size_t)(len - pos) : COPY_CHUNK;
		n = copy_chunk(&c, pos, chunk, first);
		first = false;
		if (n <= 0)
			break; /* an error, or the file shrank: what there is was copied */
		pos += n;
	}
	copier_done(&c);
	if (n < 0)
		return (int)n;
	/* a hole at the end: the size, as the kernel sets it */
	if (fstat(out, &st) < 0)
		return -errno;
	if (st.st_size < len && ftruncate(out, len) < 0)
		return -errno;
	return 0;
}

/* Make the temporary object in workdir/work; for regular files *fdp is open. */
static int make_temp(struct ovl_fs *fs, int ldfd, const char *lname, int layer,
		     const struct stat *st, const char *tmp, bool data, int *fdp)
{
	char target[PATH_MAX];
	ssize_t n;
	int fd, in, ret = 0;

	*fdp = -1;
	switch (st->st_mode & S_IFMT) {
	case S_IFDIR:
		return mkdirat(fs->work_fd, tmp, 0700) < 0 ? -errno : 0;
	case S_IFLNK:
		n = readlinkat(ldfd, lname, target, sizeof(target) - 1);
		if (n < 0)
			return -errno;
		target[n] = '\0';
		return symlinkat(target, fs->work_fd, tmp) < 0 ? -errno : 0;
	case S_IFREG:
		break;
	default:
		return mknodat(fs->work_fd, tmp, st->st_mode & S_IFMT, st->st_rdev) < 0 ? -errno
											: 0;
	}
	fd = openat(fs->work_fd, tmp, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	*fdp = fd;
	if (!data) {
		/* metacopy: the size, but no data yet (it stays below) */
		if (ftruncate(fd, st->st_size) < 0)
			return -errno;
		return ovl_set_ovl_xattr(fs, fs->work_fd, tmp, "metacopy", "", 0);
	}
	in = openat(ldfd, lname, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOATIME);
	if (in < 0 && errno == EPERM)
		in = openat(ldfd, lname, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (in < 0)
		return -errno;
	ret = copy_data(fs, layer, in, fd, st->st_size);
	close(in);
	return ret;
}

/* Owner, mode, times of the temporary object, after its data and xattrs. */
static int copy_attrs(struct ovl_fs *fs, const char *tmp, const struct stat *st, int fd)
{
	struct timespec ts[2] = {st->st_atim, st->st_mtim};

	if (fchownat(fs->work_fd, tmp, st->st_uid, st->st_gid, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	if (!S_ISLNK(st->st_mode) && fchmodat(fs->work_fd, tmp, st->st_mode & 07777, 0) < 0)
		return -errno;
	if (fd >= 0 && fs->fsync_copy && fsync(fd) < 0)
		return -errno;
	if (fd < 0 && fs->config.fsync == OVL_FSYNC_STRICT && !S_ISLNK(st->st_mode)) {
		/* fsync=strict: metadata-only copies are made durable too */
		int mfd = openat(fs->work_fd, tmp, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);

		if (mfd >= 0) {
			int r = fsync(mfd);

			close(mfd);
			if (r < 0)
				return -errno;
		}
	}
	if (utimensat(fs->work_fd, tmp, ts, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	return 0;
}

static int set_origin(struct ovl_fs *fs, int ldfd, const char *lname, int layer, const char *tmp)
{
	unsigned char fb[256];
	ssize_t n = ovl_encode_origin(fs, ldfd, lname, layer, fb, sizeof(fb));

	if (n < 0)
		return 0; /* no file handles on the lower fs: no origin, as the kernel */
	n = ovl_set_ovl_xattr(fs, fs->work_fd, tmp, "origin", fb, (size_t)n);
	/* user.* xattrs are refused on symlinks and devices (userxattr): go without */
	return (n == -EPERM || n == -EOPNOTSUPP) ? 0 : (int)n;
}

/* Build a complete copy of the lower object under tmp in workdir/work. */
static int build_copy(struct ovl_fs *fs, int ldfd, const char *lname, int layer,
		      const struct stat *st, const char *tmp, bool data)
{
	int fd = -1, ret;

	ret = make_temp(fs, ldfd, lname, layer, st, tmp, data, &fd);
	if (!ret)
		ret = ovl_copy_xattrs(fs, ldfd, lname, fs->work_fd, tmp);
	/* no origin when the copy breaks a lower hard link (no index), as the kernel */
	if (!ret && !(S_ISREG(st->st_mode) && st->st_nlink > 1 && fs->index_fd < 0))
		ret = set_origin(fs, ldfd, lname, layer, tmp);
	if (!ret)
		ret = copy_attrs(fs, tmp, st, fd);
	if (fd >= 0)
		close(fd);
	if (ret)
		ovl_cleanup_tree(fs->work_fd, tmp);
	return ret;
}

int ovl_set_impure(struct ovl_fs *fs, struct ovl_node *dir)
{
	struct ovl_stack *st;
	int ret = 0;

	pthread_mutex_lock(&fs->impure_lock);
	/* a readdir that listed the dir before this call must not clear the flag */
	fs->impure_gen++;
	if (ovl_nf(dir, OVL_NF_IMPURE))
		goto out;
	st = ovl_stack_of(dir);
	ret = -EIO;
	if (st->n == 0 || st->p[0].layer != 0)
		goto out;
	ret = ovl_set_ovl_xattr(fs, st->p[0].fd, NULL, "impure", "y", 1);
	if (ret)
		goto out;
	st->p[0].flags |= OVL_PATH_IMPURE;
	ovl_nf_set(dir, OVL_NF_IMPURE, true);
out:
	pthread_mutex_unlock(&fs->impure_lock);
	return ret;
}

uint64_t ovl_impure_gen(struct ovl_fs *fs)
{
	uint64_t gen;

	pthread_mutex_lock(&fs->impure_lock);
	gen = fs->impure_gen;
	pthread_mutex_unlock(&fs->impure_lock);
	return gen;
}

/*
 * A readdir of the unmerged upper dir found no entry whose d_ino needs
 * fixing: drop overlay.impure, as the kernel's ovl_cache_get_impure() does,
 * unless an entry may have been moved in since the listing began (gen).
 */
void ovl_clear_impure(struct ovl_fs *fs, struct ovl_node *dir, uint64_t gen)
{
	struct ovl_stack *st;

	if (fs->config.ro)
		return;
	pthread_mutex_lock(&fs->impure_lock);
	st = ovl_stack_of(dir);
	if (fs->impure_gen == gen && ovl_nf(dir, OVL_NF_IMPURE) && st->n == 1 &&
	    st->p[0].layer == 0 && ovl_remove_ovl_xattr(fs, st->p[0].fd, NULL, "impure") == 0) {
		st->p[0].flags &= (uint8_t)~OVL_PATH_IMPURE;
		ovl_nf_set(dir, OVL_NF_IMPURE, false);
	}
	pthread_mutex_unlock(&fs->impure_lock);
}

/*
 * One more upper name for an index entry (the kernel's ovl_link_up()): the
 * union's link count stays, the index inode's grows.  Until the name is in,
 * overlay.nlink counts from the lower inode ("L"), then from the upper
 * ("U"), so that a crash at any point leaves a count that is right.
 */
static int link_up(struct ovl_fs *fs, const char *iname, nlink_t nlink, nlink_t lower, int updfd,
		   const char *name)
{
	char nl[32];
	struct stat ist;
	int ret;

	if (lower) {
		snprintf(nl, sizeof(nl), "L%+ld", (long)nlink - (long)lower);
		ret = ovl_set_ovl_xattr(fs, fs->index_fd, iname, "nlink", nl, strlen(nl));
		if (ret)
			return ret;
	}
	if (linkat(fs->index_fd, iname, updfd, name, 0) < 0)
		return -errno;
	if (fstatat(fs->index_fd, iname, &ist, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	snprintf(nl, sizeof(nl), "U%+ld", (long)nlink - (long)ist.st_nlink);
	return ovl_set_ovl_xattr(fs, fs->index_fd, iname, "nlink", nl, strlen(nl));
}

/*
 * A lower hard link: copy into workdir/index once, link every name to it.
 * The copy has its overlay.nlink before it enters the index: an entry
 * never lacks one (a crash before its first name is linked leaves an
 * unused entry, which the next copy-up of the file takes).
 */
static int copy_up_indexed(struct ovl_fs *fs, int ldfd, const char *lname, int layer,
			   const struct stat *st, int updfd, const char *name, char *hex, bool data)
{
	char tmp[64];
	struct stat ist;
	int ret;

	ret = ovl_index_name(fs, ldfd, lname, layer, hex, 600);
	if (ret)
		return ret;
	if (fstatat(fs->index_fd, hex, &ist, AT_SYMLINK_NOFOLLOW) < 0) {
		ovl_tmpname(fs, tmp, sizeof(tmp));
		ret = build_copy(fs, ldfd, lname, layer, st, tmp, data);
		if (ret)
			return ret;
		ret = ovl_set_ovl_xattr(fs, fs->work_fd, tmp, "nlink", "L+0", 3);
		if (!ret && renameat2(fs->work_fd, tmp, fs->index_fd, hex, RENAME_NOREPLACE) < 0)
			ret = -errno;
		if (ret)
			ovl_cleanup_tree(fs->work_fd, tmp);
		if (ret && ret != -EEXIST)
			return ret;
	}
	/* the union's link count is the lower's: no name of it was removed yet */
	return link_up(fs, hex, st->st_nlink, st->st_nlink, updfd, name);
}

/* The new stack of a directory: its upper dir on top of what it had. */
static int push_upper_dir(struct ovl_node *node, int updfd, const char *name)
{
	struct ovl_stack *old = ovl_stack_of(node), *st;
	int fd;

	fd = openat(updfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	st = malloc(sizeof(*st) + sizeof(st->p[0]) * (size_t)(old->n + 1));
	if (!st) {
		close(fd);
		return -ENOMEM;
	}
	st->n = old->n + 1;
	st->p[0].layer = 0;
	st->p[0].fd = fd;
	st->p[0].flags = OVL_PATH_ORIGIN;
	memcpy(st->p + 1, old->p, sizeof(old->p[0]) * (size_t)old->n);
	/* the fds move to the new stack: the old one must not close them */
	return ovl_node_set_stack(node, st);
}

/*
 * Copy the data of a metacopy file into its upper file, then drop
 * overlay.metacopy: until then a crash leaves the metacopy file, still
 * reading the lower data, so nothing half-copied is ever seen.
 */
static int copy_up_metacopy_data(struct ovl_fs *fs, struct ovl_node *node)
{
	struct ovl_loc *data = atomic_load(&node->data);
	const char *name;
	struct stat st;
	int in, out, dfd, ret;

	ret = ovl_real_at(fs, node, &dfd, &name);
	if (ret)
		return ret;
	in = openat(data->dirfd, data->name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (in < 0)
		return -errno;
	out = openat(dfd, name, O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
	if (out < 0) {
		ret = -errno;
		goto out_in;
	}
	ret = fstat(in, &st) < 0 ? -errno : copy_data(fs, data->layer, in, out, st.st_size);
	/* data written into the file moves its mtime, as in the kernel */
	if (!ret && st.st_size > 0 &&
	    futimens(out, (struct timespec[2]){{.tv_nsec = UTIME_OMIT}, {.tv_nsec = UTIME_NOW}}) <
		0)
		ret = -errno;
	if (!ret && fs->fsync_copy && fsync(out) < 0)
		ret = -errno;
	if (!ret)
		ret = ovl_remove_ovl_xattr(fs, dfd, name, "metacopy");
	if (!ret)
		ovl_node_drop_data(node);
	close(out);
out_in:
	close(in);
	return ret;
}

/*
 * Put a parent's atime and mtime back after a copy-up linked a name into it:
 * a copy-up changes no times of the union (the kernel's ovl_set_timestamps()
 * on c->pstat, best effort; ctime moves).
 */
static void restore_times(int dirfd, const struct stat *pst)
{
	(void)!futimens(dirfd, (struct timespec[2]){pst->st_atim, pst->st_mtim});
}

static int copy_up_locked(struct ovl_fs *fs, struct ovl_node *node, struct ovl_node *parent,
			  bool data)
{
	struct ovl_loc *loc = ovl_loc_of(node);
	const char *lname, *iname = loc->iname;
	char tmp[64], hex[600];
	struct stat st, cur, pst;
	int ldfd, updfd, ret;

	updfd = ovl_upper_dirfd(fs, parent);
	if (updfd < 0)
		return -EIO;
	/* the parent's times, put back once the new name is in (as the kernel) */
	if (fstat(updfd, &pst) < 0)
		return -errno;
	if (S_ISDIR(node->type)) {
		ldfd = ovl_stack_of(node)->p[0].fd;
		lname = "";
		if (fstat(ldfd, &st) < 0)
			return -errno;
	} else {
		ret = ovl_real_at(fs, node, &ldfd, &lname);
		if (ret)
			return ret;
		if (fstatat(ldfd, lname, &st, AT_SYMLINK_NOFOLLOW) < 0)
			return -errno;
	}
	if (loc->iname) {
		/* already in the index: one more upper name for it, same union nlink */
		ret = ovl_getattr_locked(fs, node, &cur);
		if (!ret)
			ret = link_up(fs, loc->iname, cur.st_nlink, node->lower_nlink, updfd,
				      loc->name);
	} else if (S_ISREG(st.st_mode) && st.st_nlink > 1 && fs->index_fd >= 0) {
		if (fs->config.metacopy != OVL_ON)
			data = true;
		ret =
		    copy_up_indexed(fs, ldfd, lname, loc->layer, &st, updfd, loc->name, hex, data);
		if (!ret) {
			ovl_nf_set(node, OVL_NF_INDEXED, true);
			node->lower_nlink = (uint32_t)st.st_nlink;
			iname = hex;
		}
	} else {
		if (!S_ISREG(st.st_mode) || st.st_nlink > 1 || fs->config.metacopy != OVL_ON)
			data = true;
		/* (a lower hard link without the index is copied whole: it breaks) */
		ovl_tmpname(fs, tmp, sizeof(tmp));
		if (S_ISDIR(node->type)) {
			/* a directory is copied from its real dir fd */
			ret = build_copy(fs, ldfd, "", ovl_stack_of(node)->p[0].layer, &st, tmp,
					 false);
		} else {
			ret = build_copy(fs, ldfd, lname, loc->layer, &st, tmp, data);
		}
		if (!ret && renameat2(fs->work_fd, tmp, updfd, loc->name, RENAME_NOREPLACE) < 0) {
			ret = -errno;
			ovl_cleanup_tree(fs->work_fd, tmp);
		}
	}
	if (ret)
		return ret;
	restore_times(updfd, &pst);
	ret = ovl_set_impure(fs, parent);
	if (ret)
		return ret;
	if (S_ISDIR(node->type))
		return push_upper_dir(node, updfd, loc->name);
	if (!data && S_ISREG(st.st_mode) && !loc->iname &&
	    (ret = ovl_node_set_data(node, ldfd, lname, loc->layer)))
		return ret;
	if (S_ISREG(st.st_mode) && st.st_nlink > 1 && !iname) {
		/* a broken hard link is a file of its own now, with its own st_ino */
		struct stat ust;

		if (fstatat(updfd, loc->name, &ust, AT_SYMLINK_NOFOLLOW) == 0) {
			node->ino = ovl_map_ino(fs, 0, ust.st_ino);
			/* no origin: nothing below it any more */
			ovl_nf_set(node, OVL_NF_LOWER, false);
			/* found by its upper inode from now on, as a lookup does */
			ovl_node_rekey(fs, node, ust.st_dev, ust.st_ino, 0);
		}
	}
	ovl_node_ref(fs, parent);
	return ovl_node_set_loc(node, parent, loc->name, 0, iname);
}

static int copy_up(struct ovl_fs *fs, struct ovl_node *node, bool data)
{
	struct ovl_node *parent;
	bool copied, breaks;
	int ret;

	if (!fs->has_upper)
		return -EROFS;
	if (ovl_has_upper(fs, node))
		return 0;
	ovl_hl_refresh(fs, node);
	parent = ovl_loc_of(node)->parent;
	if (!parent)
		return -ENOENT; /* unlinked while open: nothing to copy up to */
	ret = copy_up(fs, parent, false);
	if (ret)
		return ret;
	ovl_lock(&node->cu_lock);
	ret = 0;
	copied = false;
	/* a lower hard link without the index breaks: st_nlink and st_ino change */
	breaks = S_ISREG(node->type) && node->key_salt && fs->index_fd < 0;
	if (!ovl_has_upper(fs, node)) {
		ret = copy_up_locked(fs, node, parent, data);
		copied = !ret;
	}
	ovl_unlock(&node->cu_lock);
	if (copied && fs->changed) {
		/*
		 * A directory may now be merged (st_nlink 1); a lower hard link
		 * without the index is broken (st_nlink, st_ino); the parent's
		 * times moved.
		 */
		if (S_ISDIR(node->type) || breaks)
			fs->changed(fs->changed_ctx, node);
		fs->changed(fs->changed_ctx, parent);
	}
	return ret;
}

/* Copy up for a metadata change: with metacopy=on a file's data stays below. */
int ovl_copy_up(struct ovl_fs *fs, struct ovl_node *node)
{
	int ret;

	pthread_rwlock_rdlock(&fs->rename_lock);
	ret = copy_up(fs, node, fs->config.metacopy != OVL_ON);
	pthread_rwlock_unlock(&fs->rename_lock);
	return ret;
}

/* Copy up for writing: the data too. */
int ovl_copy_up_data(struct ovl_fs *fs, struct ovl_node *node)
{
	int ret;

	pthread_rwlock_rdlock(&fs->rename_lock);
	ret = copy_up(fs, node, true);
	pthread_rwlock_unlock(&fs->rename_lock);
	if (ret || !atomic_load(&node->data))
		return ret;
	ovl_lock(&node->cu_lock);
	if (atomic_load(&node->data))
		ret = copy_up_metacopy_data(fs, node);
	ovl_unlock(&node->cu_lock);
	if (!ret && fs->changed)
		fs->changed(fs->changed_ctx, node); /* its mtime moved */
	return ret;
}
