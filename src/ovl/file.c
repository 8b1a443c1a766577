/*
 * file.c - open files (the kernel's file.c).  Opening for writing (or with
 * O_TRUNC) copies the node up first; a file opened before a copy-up reads
 * the upper copy afterwards, as the kernel's overlay re-opens its real file.
 */
#define _GNU_SOURCE
#include "ovl.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* flags that make sense when opening the real file (O_APPEND: offsets come from the kernel) */
#define OVL_OPEN_KEEP (O_ACCMODE | O_NONBLOCK | O_DIRECT | O_SYNC | O_DSYNC | O_NOATIME)

static bool wants_write(int flags)
{
	return (flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC);
}

static int open_real(struct ovl_fs *fs, struct ovl_node *node, int flags)
{
	const char *name;
	int dfd, fd, ret;

	/* a metacopy file opened for reading reads the data below it */
	ret = wants_write(flags) ? ovl_real_at(fs, node, &dfd, &name)
				 : ovl_data_at(fs, node, &dfd, &name);
	if (ret)
		return ret;
	flags = (flags & (OVL_OPEN_KEEP | O_TRUNC)) | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY;
	if (!name[0]) {
		/* an object with no name left: reopen it through its O_PATH fd */
		char path[64];

		snprintf(path, sizeof(path), "/proc/self/fd/%d", dfd);
		fd = open(path, flags & ~O_NOFOLLOW);
		return fd < 0 ? -errno : fd;
	}
	fd = openat(dfd, name, flags);
	if (fd < 0 && errno == EPERM && (flags & O_NOATIME))
		fd = openat(dfd, name, flags & ~O_NOATIME);
	/* a whiteout took the name (a concurrent unlink): the file is gone */
	if (fd < 0 && errno == ENXIO && S_ISREG(node->type))
		return -ENOENT;
	return fd < 0 ? -errno : fd;
}

static int file_new(struct ovl_fs *fs, struct ovl_node *node, int flags, struct ovl_file **out)
{
	struct ovl_file *f;
	int fd;

	fd = open_real(fs, node, flags);
	if (fd < 0)
		return fd;
	f = calloc(1, sizeof(*f));
	if (!f) {
		close(fd);
		return -ENOMEM;
	}
	f->fd = fd;
	f->flags = flags;
	pthread_mutex_init(&f->lock, NULL);
	f->loc = ovl_loc_of(node);
	f->data = atomic_load(&node->data);
	f->node = node;
	ovl_node_ref(fs, node);
	*out = f;
	return 0;
}

int ovl_open(struct ovl_fs *fs, struct ovl_node *node, int flags, struct ovl_file **out)
{
	int ret;

	if (S_ISDIR(node->type))
		return -EISDIR;
	ovl_hl_refresh(fs, node);
	if (wants_write(flags)) {
		if (!fs->has_upper)
			return -EROFS;
		ret = ovl_copy_up_data(fs, node);
		if (ret)
			return ret;
	}
	ret = file_new(fs, node, flags, out);
	if (!ret && (flags & O_ACCMODE) == O_RDONLY && S_ISREG(node->type))
		ovl_prefetch_opened(fs, node);
	return ret;
}

int ovl_open_new(struct ovl_fs *fs, struct ovl_node *node, int flags, struct ovl_file **out)
{
	return file_new(fs, node, flags & ~O_TRUNC, out);
}

static bool same_object(int a, int b)
{
	struct stat x, y;

	return fstat(a, &x) == 0 && fstat(b, &y) == 0 && x.st_dev == y.st_dev &&
	       x.st_ino == y.st_ino;
}

/*
 * A read-only open from before a copy-up follows the node to its new
 * object.  Requests on the same open file run in parallel (the kernel
 * reads ahead in several READs): the old fd stays open until release, as
 * another worker may be reading from it right now.
 */
static int refresh(struct ovl_fs *fs, struct ovl_file *f)
{
	struct ovl_loc *loc, *data;
	int fd, *old;

	ovl_hl_refresh(fs, f->node);
	if ((f->flags & O_ACCMODE) != O_RDONLY)
		return 0;
	loc = ovl_loc_of(f->node);
	data = atomic_load(&f->node->data);
	if (loc == f->loc && data == f->data)
		return 0; /* every READ passes here: no lock unless the node moved */
	pthread_mutex_lock(&f->lock);
	if (loc == f->loc && data == f->data)
		goto out; /* another worker followed it first */
	fd = open_real(fs, f->node, f->flags & ~O_TRUNC);
	if (fd < 0)
		goto out; /* keep reading the old object */
	if (same_object(fd, f->fd)) {
		close(fd); /* a rename or another name: nothing moved */
		goto moved;
	}
	old = realloc(f->old_fds, (size_t)(f->nold + 1) * sizeof(*old));
	if (!old) {
		close(fd);
		goto out;
	}
	f->old_fds = old;
	old[f->nold++] = atomic_exchange(&f->fd, fd);
moved:
	f->loc = loc;
	f->data = data;
out:
	pthread_mutex_unlock(&f->lock);
	return 0;
}

ssize_t ovl_read(struct ovl_fs *fs, struct ovl_file *f, char *buf, size_t size, off_t off)
{
	ssize_t n;

	refresh(fs, f);
	n = pread(f->fd, buf, size, off);
	return n < 0 ? -errno : n;
}

/* Read len bytes from offset 0, all of them unless the file is shorter. */
static ssize_t read_whole(int fd, char *buf, size_t len)
{
	size_t done = 0;
	ssize_t n;

	while (done < len) {
		n = pread(fd, buf + done, len - done, (off_t)done);
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		done += (size_t)n;
	}
	return (ssize_t)done;
}

int ovl_offer_lower(struct ovl_fs *fs, struct ovl_file *f, size_t max, ovl_offer_fn fn, void *ctx)
{
	struct ovl_node *node = f->node;
	struct stat st;
	ssize_t n;
	char *buf;
	int fd, ret = 0;

	/*
	 * Not the names of a lower hard link (a write through another name
	 * changes the data without a copy-up of this one), not O_DIRECT.
	 */
	if (!S_ISREG(node->type) || (f->flags & O_ACCMODE) != O_RDONLY || (f->flags & O_DIRECT) ||
	    ovl_nf(node, OVL_NF_OFFERED) || ovl_has_upper(fs, node) || ovl_hl_group(fs, node) ||
	    node->key_salt)
		return 0;
	fd = f->fd;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (st.st_size <= 0 || (size_t)st.st_size > max)
		return 0;
	buf = malloc((size_t)st.st_size);
	if (!buf)
		return -ENOMEM;
	n = read_whole(fd, buf, (size_t)st.st_size);
	if (n <= 0) {
		ret = (int)n;
		goto out;
	}
	ovl_lock(&node->cu_lock);
	if (!ovl_nf(node, OVL_NF_OFFERED) && !ovl_has_upper(fs, node) && f->fd == fd) {
		ret = fn(ctx, buf, (size_t)n);
		/* tried once: a refusal is not retried on every open */
		ovl_nf_set(node, OVL_NF_OFFERED, true);
		ret = ret ? ret : 1;
	}
	ovl_unlock(&node->cu_lock);
out:
	free(buf);
	return ret;
}

/*
 * Read into a pipe (splice(2)): the data moves from the page cache of the
 * real file without a copy through the daemon's memory.  Fewer bytes than
 * size only at end of file; -EOPNOTSUPP (before anything is moved) where
 * the real filesystem cannot splice; -EAGAIN when the pipe filled up (the
 * caller's only reader of it is the caller: never wait on it).
 */
ssize_t ovl_read_pipe(struct ovl_fs *fs, struct ovl_file *f, int pipefd, size_t size, off_t off)
{
	size_t done = 0;
	loff_t pos = off; /* advanced by splice */
	ssize_t n;
	int fd;

	refresh(fs, f);
	fd = f->fd; /* one object for the whole reply */
	while (done < size) {
		n = splice(fd, &pos, pipefd, NULL, size - done, SPLICE_F_NONBLOCK);
		if (n < 0) {
			if (!done && (errno == EINVAL || errno == ENOSYS))
				return -EOPNOTSUPP;
			return -errno;
		}
		if (n == 0)
			break;
		done += (size_t)n;
	}
	return (ssize_t)done;
}

ssize_t ovl_write(struct ovl_fs *fs, struct ovl_file *f, const char *buf, size_t size, off_t off)
{
	ssize_t n;

	(void)fs;
	n = pwrite(f->fd, buf, size, off);
	return n < 0 ? -errno : n;
}

int ovl_fsync(struct ovl_fs *fs, struct ovl_file *f, bool datasync)
{
	int ret;

	if (fs->config.ovl_volatile)
		return 0; /* volatile: syncs are dropped, as the kernel's */
	ret = datasync ? fdatasync(f->fd) : fsync(f->fd);
	return ret < 0 ? -errno : 0;
}

int ovl_fallocate(struct ovl_fs *fs, struct ovl_file *f, int mode, off_t off, off_t len)
{
	(void)fs;
	return fallocate(f->fd, mode, off, len) < 0 ? -errno : 0;
}

off_t ovl_lseek(struct ovl_fs *fs, struct ovl_file *f, off_t off, int whence)
{
	off_t r;

	refresh(fs, f);
	r = lseek(f->fd, off, whence);
	return r < 0 ? -errno : r;
}

ssize_t ovl_copy_file_range(struct ovl_fs *fs, struct ovl_file *in, off_t offin,
			    struct ovl_file *out, off_t offout, size_t len, unsigned int flags)
{
	loff_t oi = offin, oo = offout;
	ssize_t n;

	refresh(fs, in);
	n = copy_file_range(in->fd, &oi, out->fd, &oo, len, flags);
	return n < 0 ? -errno : n;
}

int ovl_fstat(struct ovl_fs *fs, struct ovl_file *f, struct stat *st)
{
	refresh(fs, f);
	if (fstat(f->fd, st) < 0)
		return -errno;
	st->st_ino = f->node->ino;
	/* an indexed hard link counts its union names, until the last is gone */
	if (ovl_nf(f->node, OVL_NF_INDEXED) && !ovl_nf(f->node, OVL_NF_DETACHED))
		ovl_union_nlink(fs, f->node, st);
	return 0;
}

void ovl_release(struct ovl_fs *fs, struct ovl_file *f)
{
	int i;

	close(f->fd);
	for (i = 0; i < f->nold; i++)
		close(f->old_fds[i]);
	free(f->old_fds);
	pthread_mutex_destroy(&f->lock);
	ovl_node_unref(fs, f->node);
	free(f);
}
