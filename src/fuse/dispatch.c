/*
 * dispatch.c - decode FUSE requests, call the filesystem's fw_ops, encode
 * the replies.  One do_<op> per opcode, reached through an opcode-indexed
 * table that also names each opcode for debug traces.
 */
#define _GNU_SOURCE
#include "fw_internal.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/uio.h>
#include <unistd.h>

typedef void (*fw_handler)(struct fw_worker *w, const struct fuse_in_header *h, const void *arg,
			   size_t arglen);

void fw_reply(struct fw_worker *w, uint64_t unique, int err, const void *data, size_t len)
{
	struct fuse_out_header oh;
	struct iovec iov[2];
	int n = 1;

	if (w->ring) {
		fw_uring_reply(w, unique, err, data, len);
		return;
	}
	oh.unique = unique;
	oh.error = err;
	oh.len = sizeof(oh);
	iov[0].iov_base = &oh;
	iov[0].iov_len = sizeof(oh);
	if (!err && len) {
		iov[1].iov_base = (void *)data;
		iov[1].iov_len = len;
		oh.len += (uint32_t)len;
		n = 2;
	}
	kernel_order_release(w->se);
	/* ENOENT: the request was interrupted and is gone; nothing to do */
	if (writev(w->fd, iov, n) < 0 && errno != ENOENT && w->se->debug)
		fprintf(stderr, "stratafs: reply %llu: %s\n", (unsigned long long)unique,
			strerror(errno));
}

void fw_reply_err(struct fw_worker *w, uint64_t unique, int err)
{
	fw_reply(w, unique, err, NULL, 0);
}

static void ctx_from(struct fw_ctx *c, struct fw_worker *w, const struct fuse_in_header *h)
{
	c->uid = h->uid;
	c->gid = h->gid;
	c->pid = (pid_t)h->pid;
	c->unique = h->unique;
	c->se = w->se;
	c->worker = w;
}

static void split_timeout(double t, uint64_t *sec, uint32_t *nsec)
{
	if (t <= 0) {
		*sec = 0;
		*nsec = 0;
		return;
	}
	*sec = (uint64_t)t;
	*nsec = (uint32_t)((t - (double)*sec) * 1e9);
}

static void fill_attr(struct fuse_attr *a, const struct stat *st)
{
	memset(a, 0, sizeof(*a));
	a->ino = st->st_ino;
	a->size = (uint64_t)st->st_size;
	a->blocks = (uint64_t)st->st_blocks;
	a->atime = (uint64_t)st->st_atim.tv_sec;
	a->mtime = (uint64_t)st->st_mtim.tv_sec;
	a->ctime = (uint64_t)st->st_ctim.tv_sec;
	a->atimensec = (uint32_t)st->st_atim.tv_nsec;
	a->mtimensec = (uint32_t)st->st_mtim.tv_nsec;
	a->ctimensec = (uint32_t)st->st_ctim.tv_nsec;
	a->mode = st->st_mode;
	a->nlink = (uint32_t)st->st_nlink;
	a->uid = st->st_uid;
	a->gid = st->st_gid;
	a->rdev = (uint32_t)st->st_rdev;
	a->blksize = (uint32_t)st->st_blksize;
}

static void fill_entry(struct fuse_entry_out *o, const struct fw_entry *e)
{
	memset(o, 0, sizeof(*o));
	o->nodeid = e->nodeid;
	o->generation = e->generation;
	split_timeout(e->entry_timeout, &o->entry_valid, &o->entry_valid_nsec);
	split_timeout(e->attr_timeout, &o->attr_valid, &o->attr_valid_nsec);
	if (e->nodeid)
		fill_attr(&o->attr, &e->attr);
}

static void reply_entry(struct fw_worker *w, uint64_t unique, int err, const struct fw_entry *e)
{
	struct fuse_entry_out o;

	if (err) {
		fw_reply_err(w, unique, err);
		return;
	}
	fill_entry(&o, e);
	fw_reply(w, unique, 0, &o, sizeof(o));
}

static void reply_attr(struct fw_worker *w, uint64_t unique, int err, const struct stat *st,
		       double timeout)
{
	struct fuse_attr_out o;
	uint64_t sec;

	if (err) {
		fw_reply_err(w, unique, err);
		return;
	}
	memset(&o, 0, sizeof(o));
	split_timeout(timeout, &sec, &o.attr_valid_nsec);
	o.attr_valid = sec;
	fill_attr(&o.attr, st);
	fw_reply(w, unique, 0, &o, sizeof(o));
}

static void reply_open(struct fw_worker *w, uint64_t unique, int err, const struct fw_open *op)
{
	struct fw_open_out o;

	if (err) {
		fw_reply_err(w, unique, err);
		return;
	}
	memset(&o, 0, sizeof(o));
	o.fh = op->fh;
	o.open_flags = op->open_flags;
	o.backing_id = (op->open_flags & FW_FOPEN_PASSTHROUGH) ? op->backing_id : 0;
	fw_reply(w, unique, 0, &o, sizeof(o));
}

#define ENTRY_INIT                                                                                 \
	{                                                                                          \
		.nodeid = 0                                                                        \
	}
#define CTX(c)                                                                                     \
	struct fw_ctx c;                                                                           \
	ctx_from(&c, w, h)
#define OPS (w->se->ops)
#define UD  (w->se->ud)
#define NEED(op)                                                                                   \
	do {                                                                                       \
		if (!OPS->op) {                                                                    \
			fw_reply_err(w, h->unique, -ENOSYS);                                       \
			return;                                                                    \
		}                                                                                  \
	} while (0)

/* a request argument must hold at least n bytes */
#define ARGSIZE(n)                                                                                 \
	do {                                                                                       \
		if (arglen < (n)) {                                                                \
			fw_reply_err(w, h->unique, -EINVAL);                                       \
			return;                                                                    \
		}                                                                                  \
	} while (0)

/* the NUL-terminated string at p within the argument, or NULL */
static const char *arg_str(const void *arg, size_t arglen, size_t off)
{
	const char *s = (const char *)arg + off;

	if (off >= arglen || !memchr(s, 0, arglen - off))
		return NULL;
	return s;
}

static void do_lookup(struct fw_worker *w, const struct fuse_in_header *h, const void *arg,
		      size_t arglen)
{
	const char *name = arg_str(arg, arglen, 0);
	struct fw_entry e = ENTRY_INIT;
	CTX(c);

	NEED(lookup);
	if (!name) {
		fw_reply_err(w, h->unique, -EINVAL);
		return;
	}
	reply_entry(w, h->unique, OPS->lookup(UD, &c, h->nodeid, name, &e), &e);
}

static void do_forget(struct fw_worker *w, const struct fuse_in_header *h, const void *arg,
		      size_t arglen)
{
	const struct fuse_forget_in *in = arg;

	if (arglen >= sizeof(*in) && OPS->forget)
		OPS->forget(UD, h->nodeid, in->nlookup);
}

static void do_batch_forget(struct fw_worker *w, const struct fuse_in_header *h, const void *arg,
			    size_t arglen)
{
	const struct fuse_batch_forget_in *in = arg;
	const struct fuse_forget_one *one = (const void *)(in + 1);
	uint32_t i;

	(void)h;
	if (arglen < sizeof(*in) || !OPS->forget)
		return;
	if ((arglen - sizeof(*in)) / sizeof(*one) < in->count)
		return;
	for (i = 0; i < in->count; i++)
		OPS->forget(UD, one[i].nodeid, one[i].nlookup);
}

static void do_getattr(struct fw_worker *w, const struct fuse_in_header *h, const void *arg,
		       size_t arglen)
{
	struct stat st;
	double t = 0;
	int err;
	CTX(c);

	const struct fuse_getattr_in *in = arg;
	uint64_t fh = 0;

	NEED(getattr);
	if (arglen >= sizeof(*in) && (in->getattr_flags & FUSE_GETATTR_FH))
		fh = in->fh;
	memset(&st, 0, sizeof(st));
	err = OPS->getattr(UD, &c, h->nodeid, fh, &st, &t);
	reply_attr(w, h->unique, err, &st, t);
}

static void do_setattr(struct fw_worker *w, const struct fuse_in_header *h, const void *arg,
		       size_t arglen)
{
	const struct fuse_setattr_in *in = arg;
	struct fw_setattr sa;
	struct stat st;
	double t = 0;
	int err;
	CTX(c);

	NEED(setattr);
	ARGSIZE(sizeof(*in));
	memset(&sa, 0, sizeof(sa));
	sa.valid = in->valid & (FW_SET_MODE | FW_SET_UID | FW_SET_GID | FW_SET_SIZE | FW_SET_ATIME |
				FW_SET_MTIME | FW_SET_FH | FW_SET_CTIME | FW_SET_KILL_SUIDGID);
	sa.fh = in->fh;
	sa.mode = in->mode;
	sa.uid = in->uid;
	sa.gid = in->gid;
	sa.size = (off_t)in->size;
	sa.atime.tv_sec = (time_t)in->atime;
	sa.atime.tv_nsec = in->atimensec;
	if (in->valid & FATTR_ATIME_NOW) {
		sa.valid |= FW_SET_ATIME;
		sa.atime.tv_nsec = UTIME_NOW;
	}
	sa.mtime.tv_sec = (time_t)in->mtime;
	sa.mtime.tv_nsec = in->mtimensec;
	if (in->valid & FATTR_MTIME_NOW) {
		sa.valid |= FW_SET_MTIME;
		sa.mtime.tv_nsec = UTIME_NOW;
	}
	sa.ctime.tv_sec = (time_t)in->ctime;
	sa.ctime.tv_nsec = in->ctimensec;
	memset(&st, 0, sizeof(st));
	err = OPS->setattr(UD, &c, h->nodeid, &sa, &st, &t);
	reply_attr(w, h->unique, err, &st, t);
}

static void do_readlink(struct fw_worker *w, const struct fuse_in_header *h, const void *arg,
			size_t arglen)
{
	int n;
	CTX(c);

	(void)arg;
	(void)arglen;
	NEED(readlink);
	n = OPS->readlink(UD, &c, h->nodeid, w->outbuf, PATH_MAX);
	if (n < 0) {
		fw_reply_err(w, h->unique, n);
		return;
	}
	fw_reply(w, h->unique, 0, w->outbuf, (size_t)n);
}

static void do_mknod(struct fw_worker *w, const struct fuse_in_header *h, const void *arg,
		     size_t arglen)
{
	const struct fuse_mknod_in *in = arg;
	const char *name = arg_str(arg, arglen, sizeof(*in));
	struct fw_entry e = ENTRY_INIT;
	CTX(c);

	NEED(mknod);
	if (!name) {
		fw_reply_err(w, h->unique, -EINVAL);
		return;
	}
	reply_entry(w, h->unique,
		    OPS->mknod(UD, &c, h->nodeid, name, in->mode, in->rdev, in->umask, &e), &e);
}

static void do_mkdir(struct fw_worker *w, const struct fuse_in_header *h, const void *arg,
		     size_t arglen)
{
	const struct fuse_mkdir_in *in = arg;
	const char *name = arg_str(arg, arglen, sizeof(*in));
	struct fw_entry e = ENTRY_INIT;
	CTX(c);

	NEED(mkdir);
	if (!name) {
		fw_reply_err(w, h->unique, -EINVAL);
		return;
	}
	reply_entry(w, h->unique, OPS->mkdir(UD, &c, h->nodeid, name, in->mode, in->umask, &e), &e);
}

static void do_symlink(struct fw_worker *w, const struct fuse_in_header *h, const void *arg,
		       size_t arglen)
{
	const char *name = arg_str(arg, arglen, 0);
	const char *target = name ? arg_str(arg, arglen, strlen(name) + 1) : NULL;
	struct fw_entry e = ENTRY_INIT;
	CTX(c);

	NEED(symlink);
	if (!target) {
		fw_reply_err(w, h->unique, -EINVAL);
		return;
	}
	reply_entry(w, h->unique, OPS->symlink(UD, &c, h->nodeid, name, target, &e), &e);
}

static void do_unlink(struct fw_worker *w, const struct fuse_in_header *h, const void *arg,
		      size_t arglen)
{
	const char *name = arg_str(arg, arglen, 0);
	CTX(c);

	NEED(unlink);
	if (!name) {
		fw_reply_err(w, h->unique, -EINVAL);
		return;
	}
	fw_reply_err(w, h->unique, OPS->unlink(UD, &c, h->nodeid, name));
}

static void do_rmdir(struct fw_worker *w, const struct fuse_in_header *h, const void *arg,
		     size_t arglen)
{
	const char *name = arg_str(arg, arglen, 0);
	CTX(c);

	NEED(rmdir);
	if (!name) {
		fw_reply_err(w, h->unique, -EINVAL);
		return;
	}
	fw_reply_err(w, h->unique, OPS->rmdir(UD, &c, h->nodeid, name));
}

static void rename_common(struct fw_worker *w, const struct fuse_in_header *h, const void *arg,
			  size_t arglen, size_t off, uint64_t newdir, unsigned int flags)
{
	const char *name = arg_str(arg, arglen, off);
	const char *newname = name ? arg_str(arg, arglen, off + strlen(name) + 1) : NULL;
	CTX(c);

	NEED(rename);
	if (!newname) {
		fw_reply_err(w, h->unique, -EINVAL);
		return;
	}
	fw_reply_err(w, h->unique, OPS->rename(UD, &c, h->nodeid, name, newdir, newname, flags));
}

static void do_rename(struct fw_worker *w, const struct fuse_in_header *h, const void *arg,
		      size_t arglen)
{
	const struct fuse_rename_in *in = arg;

	ARGSIZE(sizeof(*in));
	rename_common(w, h, arg, arglen, sizeof(*in), in->newdir, 0);
}

static void do_rename2(struct fw_worker *w, const struct fuse_in_header *h, const void *arg,
		       size_t arglen)
{
	const struct fuse_rename2_in *in = arg;

	ARGSIZE(sizeof(*in));
	rename_common(w, h, arg, arglen, sizeof(*in), in->newdir, in->flags);
}

static void do_link(struct fw_worker *w, const struct fuse_in_header *h, const void *arg,
		    size_t arglen)
{
	const struct fuse_link_in *in = arg;
	const char *name = arg_str(arg, arglen, sizeof(*in));
	struct fw_entry e = ENTRY_INIT;
	CTX(c);

	NEED(link);
	if (!name) {
		fw_reply_err(w, h->unique, -EINVAL);
		return;
	}
	reply_entry(w, h->unique, OPS->link(UD, &c, in->oldnodeid, h->nodeid, name, &e), &e);
}

static void do_open(struct fw_worker *w, const struct fuse_in_header *h, const void *arg,
		    size_t arglen)
{
	const struct fuse_open_in *in = arg;
	struct fw_open o = {0};
	CTX(c);

	NEED(open);
	ARGSIZE(sizeof(*in));
	reply_open(w, h->unique, OPS->open(UD, &c, h->nodeid, (int)in->flags, &o), &o);
}

static void do_create(struct fw_worker *w, const struct fuse_in_header *h, const void *arg,
		      size_t arglen)
{
	const struct fuse_create_in *in = arg;
	const char *name = arg_str(arg, arglen, sizeof(*in));
	struct fw_entry e = ENTRY_INIT;
	struct fw_open o = {0};
	struct {
		struct fuse_entry_out e;
		struct fw_open_out o;
	} out;
	int err;
	CTX(c);

	NEED(create);
	if (!name) {
		fw_reply_err(w, h->unique, -EINVAL);
		return;
	}
	err = OPS->create(UD, &c, h->nodeid, name, in->mode, in->umask, (int)in->flags, &e, &o);
	if (err) {
		fw_reply_err(w, h->unique, err);
		return;
	}
	fill_entry(&out.e, &e);
	memset(&out.o, 0, sizeof(out.o));
	out.o.fh = o.fh;
	out.o.open_flags = o.open_flags;
	out.o.backing_id = (o.open_flags & FW_FOPEN_PASSTHROUGH) ? o.backing_id : 0;
	fw_reply(w, h->unique, 0, &out, sizeof(out));
}

static void do_read(struct fw_worker *w, const struct fuse_in_header *h, const void *arg,
		    size_t arglen)
{
	const struct fuse_read_in *in = arg;
	size_t size;
	ssize_t n;
	CTX(c);

	NEED(read);
	ARGSIZE(sizeof(*in));
	size = in->size < w->se->bufsize ? in->size : w->se->bufsize;
	if (fw_splice_read(w, &c, h->unique, h->nodeid, in->fh, size, (off_t)in->offset))
		return;
	/* a READ's input lies before a ring entry's payload: readbuf may be it */
	n = OPS->read(UD, &c, h->nodeid, in->fh, w->readbuf, size, (off_t)in->offset);
	if (n < 0) {
		fw_reply_err(w, h->unique, (int)n);
		return;
	}
	fw_reply(w, h->unique, 0, w->readbuf, (size_t)n);
}

static void do_write(struct fw_worker *w, const struct fuse_in_header *h, const void *arg,
		     size_t arglen)
{
	const struct fuse_write_in *in = arg;
	struct fuse_write_out out = {0};
	ssize_t n;
	CTX(c);

	NEED(write);
	ARGSIZE(sizeof(*in));
	if (arglen - sizeof(*in) < in->size) {
		fw_reply_err(w, h->unique, -EINVAL);
		return;
	}
	n = OPS->write(UD, &c, h->nodeid, in->fh, (const char *)(in + 1), in->size,
		       (off_t)in->offset, (in->write_flags & FUSE_WRITE_KILL_SUIDGID) != 0);
	if (n < 0) {
		fw_reply_err(w, h->unique, (int)n);
		return;
	}
	out.size = (uint32_t)n;
	fw_reply(w, h->unique, 0, &out, sizeof(out));
}

static void do_statfs(struct fw_worker *w, const struct fuse_in_header *h, const void *arg,
		      size_t arglen)
{
	struct fuse_statfs_out out;
	struct statvfs sv;
	int err;
	CTX(c);

	(void)arg;
	(void)arglen;
	NEED(statfs);
	memset(&sv, 0, sizeof(sv));
	err = OPS->statfs(UD, &c, h->nodeid, &sv);
	if (err) {
		fw_reply_err(w, h->unique, err);
		return;
	}
	memset(&out, 0, sizeof(out));
	out.st.blocks = sv.f_blocks;
	out.st.bfree = sv.f_bfree;
	out.st.bavail = sv.f_bavail;
	out.st.files = sv.f_files;
	out.st.ffree = sv.f_ffree;
	out.st.bsize = (uint32_t)sv.f_bsize;
	out.st.namelen = (uint32_t)sv.f_namemax;
	out.st.frsize = (uint32_t)sv.f_frsize;
	fw_reply(w, h->unique, 0, &out, sizeof(out));
}

static void do_release(struct fw_worker *w, const struct fuse_in_header *h, const void *arg,
		       size_t arglen)
{
	const struct fuse_release_in *in = arg;
	int err = 0;
	CTX(c);

	ARGSIZE(sizeof(*in));
	if (OPS->release)
		err = OPS->release(UD, &c, h->nodeid, in->fh, (int)in->flags, in->lock_owner,
				   (in->release_flags & FUSE_RELEASE_FLOCK_UNLOCK) != 0);
	fw_reply_err(w, h->unique, err);
}

static void do_releasedir(struct fw_worker *w, const struct fuse_in_header *h, const void *arg,
			  size_t arglen)
{
	const struct fuse_release_in *in = arg;
	int err = 0;
	CTX(c);

	ARGSIZE(sizeof(*in));
	if (OPS->releasedir)
		err = OPS->releasedir(UD, &c, h->nodeid, in->fh);
	fw_reply_err(w, h->unique, err);
}

static void do_fsync(struct fw_worker *w, const struct fuse_in_header *h, const void *arg,
		     size_t arglen)
{
	const struct fuse_fsync_in *in = arg;
	bool ds;
	CTX(c);

	ARGSIZE(sizeof(*in));
	ds = (in->fsync_flags & FUSE_FSYNC_FDATASYNC) != 0;
	if (h->opcode == FUSE_FSYNCDIR) {
		NEED(fsyncdir);
		{
			fw_reply_err(w, h->unique, OPS->fsyncdir(UD, &c, h->nodeid, in->fh, ds));
			return;
		}
	}
	NEED(fsync);
	fw_reply_err(w, h->unique, OPS->fsync(UD, &c, h->nodeid, in->fh, ds));
}

static void do_flush(struct fw_worker *w, const struct fuse_in_header *h, const void *arg,
		     size_t arglen)
{
	const struct fuse_flush_in *in = arg;
	int err = 0;
	CTX(c);

	ARGSIZE(sizeof(*in));
	if (OPS->flush)
		err = OPS->flush(UD, &c, h->nodeid, in->fh, in->lock_owner);
	fw_reply_err(w, h->unique, err);
}

static void do_setxattr(struct fw_worker *w, const struct fuse_in_header *h, const void *arg,
			size_t arglen)
{
	const struct fuse_setxattr_in *in = arg;
	size_t off = FUSE_COMPAT_SETXATTR_IN_SIZE;
	const char *name = arg_str(arg, arglen, off);
	const char *value;
	CTX(c);

	NEED(setxattr);
	if (!name) {
		fw_reply_err(w, h->unique, -EINVAL);
		return;
	}
	value = name + strlen(name) + 1;
	if ((size_t)(value - (const char *)arg) + in->size > arglen) {
		fw_reply_err(w, h->unique, -EINVAL);
		return;
	}
	fw_reply_err(w, h->unique,
		     OPS->setxattr(UD, &c, h->nodeid, name, value, in->size, (int)in->flags));
}

static void reply_xattr(struct fw_worker *w, const struct fuse_in_header *h, ssize_t n,
			uint32_t size)
{
	struct fuse_getxattr_out out = {0};

	if (n < 0) {
		fw_reply_err(w, h->unique, (int)n);
		return;
	}
	if (size == 0) {
		out.size = (uint32_t)n;
		{
			fw_reply(w, h->unique, 0, &out, sizeof(out));
			return;
		}
	}
	fw_reply(w, h->unique, 0, w->outbuf, (size_t)n);
}

static void do_getxattr(struct fw_worker *w, const struct fuse_in_header *h, const void *arg,
			size_t arglen)
{
	const struct fuse_getxattr_in *in = arg;
	const char *name = arg_str(arg, arglen, sizeof(*in));
	size_t size;
	CTX(c);

	NEED(getxattr);
	if (!name) {
		fw_reply_err(w, h->unique, -EINVAL);
		return;
	}
	size = in->size < w->se->bufsize ? in->size : w->se->bufsize;
	reply_xattr(w, h, OPS->getxattr(UD, &c, h->nodeid, name, size ? w->outbuf : NULL, size),
		    in->size);
}

static void do_listxattr(struct fw_worker *w, const struct fuse_in_header *h, const void *arg,
			 size_t arglen)
{
	const struct fuse_getxattr_in *in = arg;
	size_t size;
	CTX(c);

	NEED(listxattr);
	ARGSIZE(sizeof(*in));
	size = in->size < w->se->bufsize ? in->size : w->se->bufsize;
	reply_xattr(w, h, OPS->listxattr(UD, &c, h->nodeid, size ? w->outbuf : NULL, size),
		    in->size);
}

static void do_removexattr(struct fw_worker *w, const struct fuse_in_header *h, const void *arg,
			   size_t arglen)
{
	const char *name = arg_str(arg, arglen, 0);
	CTX(c);

	NEED(removexattr);
	if (!name) {
		fw_reply_err(w, h->unique, -EINVAL);
		return;
	}
	fw_reply_err(w, h->unique, OPS->removexattr(UD, &c, h->nodeid, name));
}

static void do_opendir(struct fw_worker *w, const struct fuse_in_header *h, const void *arg,
		       size_t arglen)
{
	const struct fuse_open_in *in = arg;
	struct fw_open o = {0};
	CTX(c);

	NEED(opendir);
	ARGSIZE(sizeof(*in));
	reply_open(w, h->unique, OPS->opendir(UD, &c, h->nodeid, (int)in->flags, &o), &o);
}

static void do_readdir(struct fw_worker *w, const struct fuse_in_header *h, const void *arg,
		       size_t arglen)
{
	const struct fuse_read_in *in = arg;
	struct fw_dirbuf b;
	int err;
	CTX(c);

	NEED(readdir);
	ARGSIZE(sizeof(*in));
	b.buf = w->outbuf;
	b.size = in->size < w->se->bufsize ? in->size : w->se->bufsize;
	b.len = 0;
	b.plus = h->opcode == FUSE_READDIRPLUS;
	err = OPS->readdir(UD, &c, h->nodeid, in->fh, (off_t)in->offset, &b);
	if (err && b.len == 0) {
		fw_reply_err(w, h->unique, err);
		return;
	}
	fw_reply(w, h->unique, 0, b.buf, b.len);
}

bool fw_dirbuf_is_plus(const struct fw_dirbuf *b)
{
	return b->plus;
}

static size_t dirent_size(const struct fw_dirbuf *b, size_t namelen)
{
	size_t base = b->plus ? FUSE_NAME_OFFSET_DIRENTPLUS : FUSE_NAME_OFFSET;

	return FUSE_DIRENT_ALIGN(base + namelen);
}

bool fw_dirbuf_room(const struct fw_dirbuf *b, size_t namelen)
{
	return b->len + dirent_size(b, namelen) <= b->size;
}

static int dirbuf_put(struct fw_dirbuf *b, const char *name, uint64_t ino, unsigned int dtype,
		      off_t next_off, const struct fw_entry *e)
{
	size_t namelen = strlen(name);
	size_t sz = dirent_size(b, namelen);
	struct fuse_dirent *d;

	if (b->len + sz > b->size)
		return 0;
	memset(b->buf + b->len, 0, sz);
	if (b->plus) {
		struct fuse_direntplus *dp = (void *)(b->buf + b->len);

		if (e)
			fill_entry(&dp->entry_out, e);
		d = &dp->dirent;
	} else {
		d = (void *)(b->buf + b->len);
	}
	d->ino = ino;
	d->off = (uint64_t)next_off;
	d->namelen = (uint32_t)namelen;
	d->type = dtype;
	memcpy(d->name, name, namelen);
	b->len += sz;
	return 1;
}

int fw_dirbuf_add(struct fw_dirbuf *b, const char *name, uint64_t ino, unsigned int dtype,
		  off_t next_off)
{
	return dirbuf_put(b, name, ino, dtype, next_off, NULL);
}

int fw_dirbuf_add_plus(struct fw_dirbuf *b, const char *name, uint64_t ino, unsigned int dtype,
		       off_t next_off, const struct fw_entry *e)
{
	return dirbuf_put(b, name, ino, dtype, next_off, e);
}

static void do_access(struct fw_worker *w, const struct fuse_in_header *h, const void *arg,
		      size_t arglen)
{
	const struct fuse_access_in *in = arg;
	CTX(c);

	NEED(access);
	ARGSIZE(sizeof(*in));
	fw_reply_err(w, h->unique, OPS->access(UD, &c, h->nodeid, (int)in->mask));
}

static void lk_to_flock(const struct fuse_file_lock *l, struct flock *f)
{
	memset(f, 0, sizeof(*f));
	f->l_type = (short)l->type;
	f->l_whence = SEEK_SET;
	f->l_start = (off_t)l->start;
	f->l_len = l->end == INT64_MAX || l->end == UINT64_MAX ? 0 : (off_t)(l->end - l->start + 1);
	f->l_pid = (pid_t)l->pid;
}

static void do_getlk(struct fw_worker *w, const struct fuse_in_header *h, const void *arg,
		     size_t arglen)
{
	const struct fuse_lk_in *in = arg;
	struct fuse_lk_out out;
	struct flock f;
	int err;
	CTX(c);

	NEED(getlk);
	ARGSIZE(sizeof(*in));
	lk_to_flock(&in->lk, &f);
	err = OPS->getlk(UD, &c, h->nodeid, in->fh, in->owner, &f);
	if (err) {
		fw_reply_err(w, h->unique, err);
		return;
	}
	memset(&out, 0, sizeof(out));
	out.lk.type = (uint32_t)f.l_type;
	if (f.l_type != F_UNLCK) {
		out.lk.start = (uint64_t)f.l_start;
		out.lk.end = f.l_len == 0 ? INT64_MAX : (uint64_t)(f.l_start + f.l_len - 1);
		out.lk.pid = (uint32_t)f.l_pid;
	}
	fw_reply(w, h->unique, 0, &out, sizeof(out));
}

static void do_setlk(struct fw_worker *w, const struct fuse_in_header *h, const void *arg,
		     size_t arglen)
{
	const struct fuse_lk_in *in = arg;
	bool sleep = h->opcode == FUSE_SETLKW;
	struct flock f;
	int op;
	CTX(c);

	ARGSIZE(sizeof(*in));
	if (in->lk_flags & FUSE_LK_FLOCK) {
		NEED(flock);
		op = in->lk.type == F_RDLCK ? LOCK_SH : in->lk.type == F_WRLCK ? LOCK_EX : LOCK_UN;
		if (!sleep)
			op |= LOCK_NB;
		{
			fw_reply_err(w, h->unique,
				     OPS->flock(UD, &c, h->nodeid, in->fh, in->owner, op));
			return;
		}
	}
	NEED(setlk);
	lk_to_flock(&in->lk, &f);
	fw_reply_err(w, h->unique, OPS->setlk(UD, &c, h->nodeid, in->fh, in->owner, &f, sleep));
}

static void do_interrupt(struct fw_worker *w, const struct fuse_in_header *h, const void *arg,
			 size_t arglen)
{
	const struct fuse_interrupt_in *in = arg;

	ARGSIZE(sizeof(*in));
	fw_interrupt(w, h, in->unique);
}

static void do_destroy(struct fw_worker *w, const struct fuse_in_header *h, const void *arg,
		       size_t arglen)
{
	(void)arg;
	(void)arglen;
	if (OPS->destroy && !w->se->destroyed) {
		w->se->destroyed = true;
		OPS->destroy(UD);
	}
	fw_reply_err(w, h->unique, 0);
}

static void do_fallocate(struct fw_worker *w, const struct fuse_in_header *h, const void *arg,
			 size_t arglen)
{
	const struct fuse_fallocate_in *in = arg;
	CTX(c);

	NEED(fallocate);
	ARGSIZE(sizeof(*in));
	fw_reply_err(w, h->unique,
		     OPS->fallocate(UD, &c, h->nodeid, in->fh, (int)in->mode, (off_t)in->offset,
				    (off_t)in->length));
}

static void do_lseek(struct fw_worker *w, const struct fuse_in_header *h, const void *arg,
		     size_t arglen)
{
	const struct fuse_lseek_in *in = arg;
	struct fuse_lseek_out out;
	off_t r;
	CTX(c);

	NEED(lseek);
	ARGSIZE(sizeof(*in));
	r = OPS->lseek(UD, &c, h->nodeid, in->fh, (off_t)in->offset, (int)in->whence);
	if (r < 0) {
		fw_reply_err(w, h->unique, (int)r);
		return;
	}
	out.offset = (uint64_t)r;
	fw_reply(w, h->unique, 0, &out, sizeof(out));
}

static void do_copy_file_range(struct fw_worker *w, const struct fuse_in_header *h, const void *arg,
			       size_t arglen)
{
	const struct fuse_copy_file_range_in *in = arg;
	struct fuse_write_out out = {0};
	ssize_t n;
	CTX(c);

	NEED(copy_file_range);
	ARGSIZE(sizeof(*in));
	n = OPS->copy_file_range(UD, &c, h->nodeid, in->fh_in, (off_t)in->off_in, in->nodeid_out,
				 in->fh_out, (off_t)in->off_out, (size_t)in->len,
				 (unsigned int)in->flags);
	if (n < 0) {
		fw_reply_err(w, h->unique, (int)n);
		return;
	}
	out.size = (uint32_t)n;
	fw_reply(w, h->unique, 0, &out, sizeof(out));
}

static void do_syncfs(struct fw_worker *w, const struct fuse_in_header *h, const void *arg,
		      size_t arglen)
{
	CTX(c);

	(void)arg;
	(void)arglen;
	NEED(syncfs);
	fw_reply_err(w, h->unique, OPS->syncfs(UD, &c, h->nodeid));
}

static void do_init_again(struct fw_worker *w, const struct fuse_in_header *h, const void *arg,
			  size_t arglen)
{
	(void)arg;
	(void)arglen;
	fw_reply_err(w, h->unique, -EPROTO);
}

static const struct {
	fw_handler fn;
	const char *name;
} optable[FW_OP_MAX] = {
    [FUSE_LOOKUP] = {do_lookup, "LOOKUP"},
    [FUSE_FORGET] = {do_forget, "FORGET"},
    [FUSE_GETATTR] = {do_getattr, "GETATTR"},
    [FUSE_SETATTR] = {do_setattr, "SETATTR"},
    [FUSE_READLINK] = {do_readlink, "READLINK"},
    [FUSE_SYMLINK] = {do_symlink, "SYMLINK"},
    [FUSE_MKNOD] = {do_mknod, "MKNOD"},
    [FUSE_MKDIR] = {do_mkdir, "MKDIR"},
    [FUSE_UNLINK] = {do_unlink, "UNLINK"},
    [FUSE_RMDIR] = {do_rmdir, "RMDIR"},
    [FUSE_RENAME] = {do_rename, "RENAME"},
    [FUSE_LINK] = {do_link, "LINK"},
    [FUSE_OPEN] = {do_open, "OPEN"},
    [FUSE_READ] = {do_read, "READ"},
    [FUSE_WRITE] = {do_write, "WRITE"},
    [FUSE_STATFS] = {do_statfs, "STATFS"},
    [FUSE_RELEASE] = {do_release, "RELEASE"},
    [FUSE_FSYNC] = {do_fsync, "FSYNC"},
    [FUSE_SETXATTR] = {do_setxattr, "SETXATTR"},
    [FUSE_GETXATTR] = {do_getxattr, "GETXATTR"},
    [FUSE_LISTXATTR] = {do_listxattr, "LISTXATTR"},
    [FUSE_REMOVEXATTR] = {do_removexattr, "REMOVEXATTR"},
    [FUSE_FLUSH] = {do_flush, "FLUSH"},
    [FUSE_INIT] = {do_init_again, "INIT"},
    [FUSE_OPENDIR] = {do_opendir, "OPENDIR"},
    [FUSE_READDIR] = {do_readdir, "READDIR"},
    [FUSE_RELEASEDIR] = {do_releasedir, "RELEASEDIR"},
    [FUSE_FSYNCDIR] = {do_fsync, "FSYNCDIR"},
    [FUSE_GETLK] = {do_getlk, "GETLK"},
    [FUSE_SETLK] = {do_setlk, "SETLK"},
    [FUSE_SETLKW] = {do_setlk, "SETLKW"},
    [FUSE_ACCESS] = {do_access, "ACCESS"},
    [FUSE_CREATE] = {do_create, "CREATE"},
    [FUSE_INTERRUPT] = {do_interrupt, "INTERRUPT"},
    [FUSE_DESTROY] = {do_destroy, "DESTROY"},
    [FUSE_BATCH_FORGET] = {do_batch_forget, "BATCH_FORGET"},
    [FUSE_FALLOCATE] = {do_fallocate, "FALLOCATE"},
    [FUSE_READDIRPLUS] = {do_readdir, "READDIRPLUS"},
    [FUSE_RENAME2] = {do_rename2, "RENAME2"},
    [FUSE_LSEEK] = {do_lseek, "LSEEK"},
    [FUSE_COPY_FILE_RANGE] = {do_copy_file_range, "COPY_FILE_RANGE"},
    [FUSE_SYNCFS] = {do_syncfs, "SYNCFS"},
};

void fw_dispatch(struct fw_worker *w, const struct fuse_in_header *h, size_t len)
{
	const void *arg = h + 1;
	size_t arglen = len - sizeof(*h);
	fw_handler fn = NULL;

	if (h->opcode < FW_OP_MAX)
		fn = optable[h->opcode].fn;
	if (w->se->debug)
		fprintf(stderr, "stratafs: %llu %s(%u) node %llu len %zu%s\n",
			(unsigned long long)h->unique, fn ? optable[h->opcode].name : "UNKNOWN",
			h->opcode, (unsigned long long)h->nodeid, len,
			w->ring ? " (io_uring)" : "");
	if (!fn) {
		fw_reply_err(w, h->unique, -ENOSYS);
		return;
	}
	fn(w, h, arg, arglen);
}
