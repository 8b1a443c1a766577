/*
 * fuzz_fuse.c - libFuzzer target: the FUSE request decoder.  Each input is
 * one request as the kernel would write it to /dev/fuse; it is dispatched
 * to a fake filesystem and the replies go to /dev/null.  Any out-of-bounds
 * read of an argument is an ASan report.
 */
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../src/fuse/fw_internal.h"

#define BUFSIZE (1 << 20)

static int f_entry(struct fw_entry *e)
{
	memset(e, 0, sizeof(*e));
	e->nodeid = 2;
	e->attr.st_mode = S_IFREG | 0644;
	e->entry_timeout = 1;
	return 0;
}

static int f_lookup(void *ud, const struct fw_ctx *c, uint64_t p, const char *n, struct fw_entry *e)
{
	(void)ud, (void)c, (void)p;
	return strlen(n) > 255 ? -36 : f_entry(e);
}

static void f_forget(void *ud, uint64_t n, uint64_t l)
{
	(void)ud, (void)n, (void)l;
}

static int f_getattr(void *ud, const struct fw_ctx *c, uint64_t n, uint64_t fh, struct stat *st,
		     double *t)
{
	(void)ud, (void)c, (void)n, (void)fh;
	st->st_mode = S_IFDIR | 0755;
	*t = 1;
	return 0;
}

static int f_setattr(void *ud, const struct fw_ctx *c, uint64_t n, const struct fw_setattr *sa,
		     struct stat *st, double *t)
{
	(void)ud, (void)c, (void)n;
	st->st_mode = sa->mode;
	*t = 1;
	return 0;
}

static int f_readlink(void *ud, const struct fw_ctx *c, uint64_t n, char *buf, size_t size)
{
	(void)ud, (void)c, (void)n;
	if (size < 6)
		return -34;
	memcpy(buf, "target", 6);
	return 6;
}

static int f_mknod(void *ud, const struct fw_ctx *c, uint64_t p, const char *n, mode_t m, dev_t r,
		   mode_t u, struct fw_entry *e)
{
	(void)ud, (void)c, (void)p, (void)n, (void)m, (void)r, (void)u;
	return f_entry(e);
}

static int f_mkdir(void *ud, const struct fw_ctx *c, uint64_t p, const char *n, mode_t m, mode_t u,
		   struct fw_entry *e)
{
	(void)ud, (void)c, (void)p, (void)n, (void)m, (void)u;
	return f_entry(e);
}

static int f_symlink(void *ud, const struct fw_ctx *c, uint64_t p, const char *n, const char *t,
		     struct fw_entry *e)
{
	(void)ud, (void)c, (void)p, (void)n, (void)t;
	return f_entry(e);
}

static int f_name(void *ud, const struct fw_ctx *c, uint64_t p, const char *n)
{
	(void)ud, (void)c, (void)p;
	return n[0] ? 0 : -2;
}

static int f_rename(void *ud, const struct fw_ctx *c, uint64_t p, const char *n, uint64_t np,
		    const char *nn, unsigned int fl)
{
	(void)ud, (void)c, (void)p, (void)np, (void)fl;
	return strcmp(n, nn) ? 0 : -22;
}

static int f_link(void *ud, const struct fw_ctx *c, uint64_t n, uint64_t np, const char *nn,
		  struct fw_entry *e)
{
	(void)ud, (void)c, (void)n, (void)np, (void)nn;
	return f_entry(e);
}

static int f_open(void *ud, const struct fw_ctx *c, uint64_t n, int fl, struct fw_open *o)
{
	(void)ud, (void)c, (void)n, (void)fl;
	o->fh = 7;
	return 0;
}

static int f_create(void *ud, const struct fw_ctx *c, uint64_t p, const char *n, mode_t m, mode_t u,
		    int fl, struct fw_entry *e, struct fw_open *o)
{
	(void)ud, (void)c, (void)p, (void)n, (void)m, (void)u, (void)fl;
	o->fh = 7;
	return f_entry(e);
}

static ssize_t f_read(void *ud, const struct fw_ctx *c, uint64_t n, uint64_t fh, char *buf,
		      size_t size, off_t off)
{
	(void)ud, (void)c, (void)n, (void)fh, (void)off;
	memset(buf, 'x', size < 100 ? size : 100);
	return (ssize_t)(size < 100 ? size : 100);
}

static ssize_t f_write(void *ud, const struct fw_ctx *c, uint64_t n, uint64_t fh, const char *buf,
		       size_t size, off_t off, bool k)
{
	size_t i;
	unsigned sum = 0;

	(void)ud, (void)c, (void)n, (void)fh, (void)off, (void)k;
	for (i = 0; i < size; i++)
		sum += (unsigned char)buf[i]; /* touch every byte the decoder promises */
	return sum == 0xffffffff ? 0 : (ssize_t)size;
}

static int f_readdir(void *ud, const struct fw_ctx *c, uint64_t n, uint64_t fh, off_t off,
		     struct fw_dirbuf *b)
{
	struct fw_entry e;

	(void)ud, (void)c, (void)n, (void)fh;
	f_entry(&e);
	for (; off < 50; off++) {
		if (!fw_dirbuf_room(b, 5))
			break;
		if (fw_dirbuf_is_plus(b))
			fw_dirbuf_add_plus(b, "entry", 3, 8, off + 1, &e);
		else
			fw_dirbuf_add(b, "entry", 3, 8, off + 1);
	}
	return 0;
}

static int f_statfs(void *ud, const struct fw_ctx *c, uint64_t n, struct statvfs *sv)
{
	(void)ud, (void)c, (void)n;
	sv->f_bsize = 4096;
	return 0;
}

static int f_setxattr(void *ud, const struct fw_ctx *c, uint64_t n, const char *name, const char *v,
		      size_t size, int fl)
{
	size_t i;

	(void)ud, (void)c, (void)n, (void)fl;
	for (i = 0; i < size; i++)
		if (v[i] == 0x7f && name[0] == 0x7f)
			return -1;
	return 0;
}

static ssize_t f_getxattr(void *ud, const struct fw_ctx *c, uint64_t n, const char *name, char *buf,
			  size_t size)
{
	(void)ud, (void)c, (void)n, (void)name;
	if (size == 0)
		return 3;
	if (size < 3)
		return -34;
	memcpy(buf, "val", 3);
	return 3;
}

static ssize_t f_listxattr(void *ud, const struct fw_ctx *c, uint64_t n, char *buf, size_t size)
{
	(void)ud, (void)c, (void)n;
	if (size == 0)
		return 6;
	if (size < 6)
		return -34;
	memcpy(buf, "user.a", 6);
	return 6;
}

static int f_mask(void *ud, const struct fw_ctx *c, uint64_t n, int mask)
{
	(void)ud, (void)c, (void)n;
	return mask > 7 ? -22 : 0;
}

static int f_fh(void *ud, const struct fw_ctx *c, uint64_t n, uint64_t fh)
{
	(void)ud, (void)c, (void)n, (void)fh;
	return 0;
}

static int f_release(void *ud, const struct fw_ctx *c, uint64_t n, uint64_t fh, int fl, uint64_t o,
		     bool u)
{
	(void)ud, (void)c, (void)n, (void)fh, (void)fl, (void)o, (void)u;
	return 0;
}

static int f_fsync(void *ud, const struct fw_ctx *c, uint64_t n, uint64_t fh, bool d)
{
	(void)ud, (void)c, (void)n, (void)fh, (void)d;
	return 0;
}

static int f_getlk(void *ud, const struct fw_ctx *c, uint64_t n, uint64_t fh, uint64_t o,
		   struct flock *lk)
{
	(void)ud, (void)c, (void)n, (void)fh, (void)o;
	lk->l_type = F_UNLCK;
	return 0;
}

static int f_setlk(void *ud, const struct fw_ctx *c, uint64_t n, uint64_t fh, uint64_t o,
		   const struct flock *lk, bool s)
{
	(void)ud, (void)c, (void)n, (void)fh, (void)o, (void)s;
	return lk->l_type == F_WRLCK ? -11 : 0;
}

static int f_flock(void *ud, const struct fw_ctx *c, uint64_t n, uint64_t fh, uint64_t o, int op)
{
	(void)ud, (void)c, (void)n, (void)fh, (void)o, (void)op;
	return 0;
}

static int f_fallocate(void *ud, const struct fw_ctx *c, uint64_t n, uint64_t fh, int m, off_t off,
		       off_t len)
{
	(void)ud, (void)c, (void)n, (void)fh, (void)m, (void)off, (void)len;
	return 0;
}

static off_t f_lseek(void *ud, const struct fw_ctx *c, uint64_t n, uint64_t fh, off_t off, int w)
{
	(void)ud, (void)c, (void)n, (void)fh, (void)w;
	return off < 0 ? -22 : off;
}

static ssize_t f_cfr(void *ud, const struct fw_ctx *c, uint64_t ni, uint64_t fi, off_t oi,
		     uint64_t no, uint64_t fo, off_t oo, size_t len, unsigned int fl)
{
	(void)ud, (void)c, (void)ni, (void)fi, (void)oi, (void)no, (void)fo, (void)oo, (void)fl;
	return (ssize_t)(len & 0xffff);
}

static int f_syncfs(void *ud, const struct fw_ctx *c, uint64_t n)
{
	(void)ud, (void)c, (void)n;
	return 0;
}

static const struct fw_ops fake_ops = {
    .lookup = f_lookup,
    .forget = f_forget,
    .getattr = f_getattr,
    .setattr = f_setattr,
    .readlink = f_readlink,
    .mknod = f_mknod,
    .mkdir = f_mkdir,
    .symlink = f_symlink,
    .unlink = f_name,
    .rmdir = f_name,
    .rename = f_rename,
    .link = f_link,
    .open = f_open,
    .create = f_create,
    .read = f_read,
    .write = f_write,
    .release = f_release,
    .fsync = f_fsync,
    .opendir = f_open,
    .readdir = f_readdir,
    .releasedir = f_fh,
    .fsyncdir = f_fsync,
    .statfs = f_statfs,
    .setxattr = f_setxattr,
    .getxattr = f_getxattr,
    .listxattr = f_listxattr,
    .removexattr = f_name,
    .access = f_mask,
    .getlk = f_getlk,
    .setlk = f_setlk,
    .flock = f_flock,
    .fallocate = f_fallocate,
    .lseek = f_lseek,
    .copy_file_range = f_cfr,
    .syncfs = f_syncfs,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct fw_session se;
	static struct fw_worker w;
	struct fuse_in_header *h;

	if (!w.inbuf) {
		se.ops = &fake_ops;
		se.bufsize = BUFSIZE + 4096;
		se.init_done = true;
		se.conn.proto_minor = 41;
		w.se = &se;
		w.fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
		w.inbuf = malloc(se.bufsize);
		w.outbuf = malloc(se.bufsize);
		w.readbuf = w.outbuf;
	}
	if (size < sizeof(*h) || size > BUFSIZE)
		return 0;
	/* an exact-size copy, so reading past the request is an ASan report */
	h = malloc(size);
	if (!h)
		return 0;
	memcpy(h, data, size);
	h->len = (uint32_t)size;
	fw_dispatch(&w, h, size);
	free(h);
	return 0;
}
