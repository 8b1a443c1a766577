/*
 * session.c - the FUSE session: INIT negotiation, worker threads on cloned
 * /dev/fuse fds, the main loop, INTERRUPT bookkeeping and notifications.
 *
 * Lock order: none on the request path.  Each worker owns its buffers; the
 * only shared mutable state is per-worker atomics read by INTERRUPT.
 */
#define _GNU_SOURCE
#include "fw_internal.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

#define FW_DEFAULT_MAX_PAGES 256
#define FW_PAGE_SIZE	     4096

static void intr_signal_handler(int sig)
{
	(void)sig; /* only here to break a blocking syscall with EINTR */
}

struct fw_session *fw_session_new(int fd, const struct fw_ops *ops, void *ud,
				  const struct fw_session_opts *so)
{
	struct fw_session *se = calloc(1, sizeof(*se));
	long ncpu;

	if (!se)
		return NULL;
	se->fd = fd;
	se->ops = ops;
	se->ud = ud;
	se->debug = so && so->debug;
	se->want_uring = so && so->io_uring;
	se->uring_quiet = so && so->io_uring_quiet;
	se->max_pages = (so && so->max_pages) ? so->max_pages : FW_DEFAULT_MAX_PAGES;
	se->bufsize = (size_t)se->max_pages * FW_PAGE_SIZE + FW_PAGE_SIZE;
	se->nworkers = so ? so->threads : 0;
	if (se->nworkers <= 0) {
		ncpu = sysconf(_SC_NPROCESSORS_ONLN);
		se->nworkers = ncpu < 2 ? 2 : (ncpu > 16 ? 16 : (int)ncpu);
	}
	return se;
}

const struct fw_conn *fw_session_conn(const struct fw_session *se)
{
	return &se->conn;
}

int fw_session_fd(const struct fw_session *se)
{
	return se->fd;
}

struct fw_worker *fw_worker_new(struct fw_session *se, int fd)
{
	struct fw_worker *w = calloc(1, sizeof(*w));

	if (!w)
		return NULL;
	w->se = se;
	w->fd = fd;
	w->data_pipe[0] = w->data_pipe[1] = w->reply_pipe[0] = w->reply_pipe[1] = -1;
	w->inbuf = malloc(se->bufsize);
	w->outbuf = malloc(se->bufsize);
	w->readbuf = w->outbuf;
	if (!w->inbuf || !w->outbuf) {
		free(w->inbuf);
		free(w->outbuf);
		free(w);
		return NULL;
	}
	return w;
}

void fw_worker_free(struct fw_worker *w)
{
	if (!w)
		return;
	fw_uring_free(w);
	fw_splice_close(w);
	if (w->fd >= 0 && w->fd != w->se->fd)
		close(w->fd);
	free(w->inbuf);
	free(w->outbuf);
	free(w);
}

/* Read one request; returns its length, 0 to retry, -errno to stop. */
static ssize_t read_request(struct fw_worker *w)
{
	ssize_t n = read(w->fd, w->inbuf, w->se->bufsize);

	if (n < 0) {
		if (errno == EINTR || errno == EAGAIN || errno == ENOENT)
			return 0;
		return -errno;
	}
	if ((size_t)n < sizeof(struct fuse_in_header))
		return 0;
	return n;
}

/* io_uring: granted only if the kernel offers it and the rings are ready */
static void want_uring(struct fw_session *se, struct fw_conn *cn)
{
	int err;

	if (!(cn->capable & FUSE_OVER_IO_URING)) {
		if (se->uring_quiet)
			return;
		fprintf(stderr, "stratafs: io_uring not offered by the kernel (fuse module "
				"parameter enable_uring=1 needed); using /dev/fuse\n");
		return;
	}
	err = fw_uring_prepare(se);
	if (err) {
		fprintf(stderr, "stratafs: io_uring unavailable (%s); using /dev/fuse\n",
			strerror(-err));
		return;
	}
	cn->want |= FUSE_OVER_IO_URING;
}

static void do_init(struct fw_worker *w, const struct fuse_in_header *h, const void *arg)
{
	const struct fuse_init_in *in = arg;
	struct fw_session *se = w->se;
	struct fw_conn *cn = &se->conn;
	struct fw_init_out out;
	size_t outlen = sizeof(out);

	memset(&out, 0, sizeof(out));
	out.major = FW_KERNEL_VERSION;
	out.minor = FW_KERNEL_MINOR_VERSION;
	if (in->major > FW_KERNEL_VERSION) {
		/* the kernel retries INIT with our major */
		fw_reply(w, h->unique, 0, &out, 8);
		return;
	}
	if (in->major < FW_KERNEL_VERSION || in->minor < 31) {
		fprintf(stderr, "stratafs: kernel FUSE protocol %u.%u is too old\n", in->major,
			in->minor);
		fw_reply_err(w, h->unique, -EPROTO);
		se->init_err = -EPROTO;
		return;
	}
	cn->proto_major = in->major;
	cn->proto_minor = in->minor < FW_KERNEL_MINOR_VERSION ? in->minor : FW_KERNEL_MINOR_VERSION;
	cn->capable = in->flags;
	if (in->flags & FUSE_INIT_EXT)
		cn->capable |= (uint64_t)in->flags2 << 32;
	cn->want = FUSE_ASYNC_READ | FUSE_BIG_WRITES | FUSE_PARALLEL_DIROPS | FUSE_MAX_PAGES |
		   FUSE_ATOMIC_O_TRUNC | FUSE_INIT_EXT;
	cn->max_write = se->bufsize - FW_PAGE_SIZE;
	cn->max_readahead = in->max_readahead;
	cn->max_pages = se->max_pages;
	cn->max_background = 64;
	cn->congestion_threshold = 48;
	cn->time_gran = 1;
	cn->max_stack_depth = 0;
	if (se->ops->init)
		se->ops->init(se->ud, cn);
	if (se->want_uring)
		want_uring(se, cn);
	cn->want &= cn->capable;
	if (!(cn->want & FUSE_PASSTHROUGH))
		cn->max_stack_depth = 0;

	out.max_readahead = cn->max_readahead;
	out.flags = (uint32_t)cn->want;
	out.flags2 = (uint32_t)(cn->want >> 32);
	if (out.flags2)
		out.flags |= FUSE_INIT_EXT;
	out.max_background = (uint16_t)cn->max_background;
	out.congestion_threshold = (uint16_t)cn->congestion_threshold;
	out.max_write = cn->max_write;
	out.time_gran = cn->time_gran;
	out.max_pages = (uint16_t)cn->max_pages;
	out.max_stack_depth = cn->max_stack_depth;
	if (in->minor < 23)
		outlen = 24;
	se->init_done = true;
	if (se->debug)
		fprintf(stderr, "stratafs: INIT kernel %u.%u capable %#llx granted %#llx\n",
			in->major, in->minor, (unsigned long long)cn->capable,
			(unsigned long long)cn->want);
	fw_reply(w, h->unique, 0, &out, outlen);
}

/* Serve requests until INIT has been answered. */
int fw_session_init(struct fw_session *se)
{
	struct fw_worker *w = fw_worker_new(se, se->fd);
	const struct fuse_in_header *h;
	ssize_t n;
	int err = 0;

	if (!w)
		return -ENOMEM;
	se->init_worker = w;
	while (!se->init_done && !se->init_err) {
		n = read_request(w);
		if (n < 0) {
			err = (int)n;
			goto out;
		}
		if (n == 0)
			continue;
		h = (const struct fuse_in_header *)w->inbuf;
		if (h->opcode != FUSE_INIT) {
			fw_reply_err(w, h->unique, -EIO);
			continue;
		}
		do_init(w, h, h + 1);
	}
	err = se->init_err;
out:
	return err;
}

static void *worker_main(void *arg)
{
	struct fw_worker *w = arg;
	struct fw_session *se = w->se;
	const struct fuse_in_header *h;
	sigset_t ss;
	ssize_t n;

	sigemptyset(&ss);
	sigaddset(&ss, SIGUSR2);
	pthread_sigmask(SIG_UNBLOCK, &ss, NULL);
	for (;;) {
		n = read_request(w);
		if (n < 0 || atomic_load(&se->stop))
			break;
		if (n == 0)
			continue;
		kernel_order_acquire(se);
		h = (const struct fuse_in_header *)w->inbuf;
		if (h->len != (uint32_t)n) {
			fw_reply_err(w, h->unique, -EIO);
			continue;
		}
		atomic_store(&w->interrupted, false);
		atomic_store(&w->cur_unique, h->unique);
		fw_dispatch(w, h, (size_t)n);
		atomic_store(&w->intr_ok, false);
		atomic_store(&w->cur_unique, 0);
	}
	/* the connection is gone: wake the main thread */
	if (!atomic_exchange(&se->exited, true))
		pthread_kill(se->main_thread, SIGUSR1);
	return NULL;
}

static int clone_fd(struct fw_session *se)
{
	uint32_t master = (uint32_t)se->fd;
	int fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);

	if (fd < 0)
		return -1;
	if (ioctl(fd, FUSE_DEV_IOC_CLONE, &master) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static int start_workers(struct fw_session *se)
{
	int i, fd;

	/* (the ring workers, if any, are made at INIT) */
	if (!se->workers)
		se->workers = calloc((size_t)se->nworkers, sizeof(*se->workers));
	if (!se->workers)
		return -ENOMEM;
	for (i = 0; i < se->nworkers; i++) {
		if (i == 0) {
			se->workers[0] = se->init_worker;
			se->init_worker = NULL;
		} else {
			/* fall back to sharing the fd when cloning is refused */
			fd = clone_fd(se);
			se->workers[i] = fw_worker_new(se, fd < 0 ? se->fd : fd);
		}
		if (!se->workers[i])
			return -ENOMEM;
		if (pthread_create(&se->workers[i]->tid, NULL, worker_main, se->workers[i]))
			return -EAGAIN;
		se->workers[i]->started = true;
	}
	/* ring workers register their entries now that INIT is answered */
	for (; i < se->nworkers + se->nring; i++) {
		if (pthread_create(&se->workers[i]->tid, NULL, fw_uring_main, se->workers[i]))
			return -EAGAIN;
		se->workers[i]->started = true;
	}
	return 0;
}

int fw_session_loop(struct fw_session *se, const char *mountpoint)
{
	struct sigaction sa;
	sigset_t ss;
	int sig, i, err;
	bool unmounting = false;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = intr_signal_handler; /* no SA_RESTART: EINTR wanted */
	sigaction(SIGUSR2, &sa, NULL);
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);

	sigemptyset(&ss);
	sigaddset(&ss, SIGTERM);
	sigaddset(&ss, SIGINT);
	sigaddset(&ss, SIGHUP);
	sigaddset(&ss, SIGUSR1);
	sigaddset(&ss, SIGUSR2);
	pthread_sigmask(SIG_BLOCK, &ss, NULL);
	sigdelset(&ss, SIGUSR2);
	se->main_thread = pthread_self();

	err = start_workers(se);
	if (err)
		goto out_unmount;
	for (;;) {
		if (sigwait(&ss, &sig))
			continue;
		if (sig == SIGUSR1 && atomic_load(&se->exited))
			break;
		if ((sig == SIGTERM || sig == SIGINT || sig == SIGHUP) && !unmounting) {
			unmounting = true;
			if (fw_unmount(mountpoint) < 0)
				break;
		}
	}
	goto out_join;

out_unmount:
	fw_unmount(mountpoint);
out_join:
	/* wake workers still blocked in read() */
	atomic_store(&se->stop, true);
	for (i = 0; se->workers && i < se->nworkers + se->nring; i++) {
		if (se->workers[i] && se->workers[i]->started)
			pthread_kill(se->workers[i]->tid, SIGUSR2);
	}
	for (i = 0; se->workers && i < se->nworkers + se->nring; i++) {
		if (se->workers[i] && se->workers[i]->started)
			pthread_join(se->workers[i]->tid, NULL);
	}
	if (se->ops->destroy && !se->destroyed) {
		se->destroyed = true;
		se->ops->destroy(se->ud);
	}
	return err;
}

void fw_session_destroy(struct fw_session *se)
{
	int i;

	if (!se)
		return;
	for (i = 0; se->workers && i < se->nworkers + se->nring; i++)
		fw_worker_free(se->workers[i]);
	free(se->workers);
	fw_worker_free(se->init_worker);
	if (se->fd >= 0)
		close(se->fd);
	free(se);
}

/* INTERRUPT: find the worker serving the request and flag it. */
void fw_interrupt(struct fw_worker *self, const struct fuse_in_header *h, uint64_t target)
{
	struct fw_session *se = self->se;
	int i;

	for (i = 0; se->workers && i < se->nworkers + se->nring; i++) {
		struct fw_worker *w = se->workers[i];

		if (!w || atomic_load(&w->cur_unique) != target)
			continue;
		atomic_store(&w->interrupted, true);
		if (atomic_load(&w->intr_ok))
			pthread_kill(w->tid, SIGUSR2);
		return;
	}
	/* not (yet) seen by any worker: ask the kernel to send it again */
	fw_reply_err(self, h->unique, -EAGAIN);
}

bool fw_interrupted(const struct fw_ctx *c)
{
	const struct fw_worker *w = c->worker;

	return w && atomic_load(&w->interrupted);
}

void fw_set_interruptible(const struct fw_ctx *c, bool on)
{
	struct fw_worker *w = c->worker;

	if (w)
		atomic_store(&w->intr_ok, on);
}

static int notify(struct fw_session *se, int code, struct iovec *iov, int n)
{
	struct fuse_out_header oh;
	size_t len = sizeof(oh);
	int i;

	if (!se->init_done || se->conn.proto_minor < 12)
		return -ENOSYS;
	for (i = 1; i < n; i++)
		len += iov[i].iov_len;
	oh.len = (uint32_t)len;
	oh.error = code;
	oh.unique = 0;
	iov[0].iov_base = &oh;
	iov[0].iov_len = sizeof(oh);
	kernel_order_release(se);
	if (writev(se->fd, iov, n) < 0)
		return -errno;
	return 0;
}

int fw_notify_inval_entry(struct fw_session *se, uint64_t parent, const char *name)
{
	struct fuse_notify_inval_entry_out o = {.parent = parent};
	struct iovec iov[3];

	o.namelen = (uint32_t)strlen(name);
	iov[1].iov_base = &o;
	iov[1].iov_len = sizeof(o);
	iov[2].iov_base = (void *)name;
	iov[2].iov_len = o.namelen + 1;
	return notify(se, FUSE_NOTIFY_INVAL_ENTRY, iov, 3);
}

int fw_notify_inval_inode(struct fw_session *se, uint64_t nodeid, off_t off, off_t len)
{
	struct fuse_notify_inval_inode_out o = {.ino = nodeid, .off = off, .len = len};
	struct iovec iov[2];

	iov[1].iov_base = &o;
	iov[1].iov_len = sizeof(o);
	return notify(se, FUSE_NOTIFY_INVAL_INODE, iov, 2);
}

int fw_notify_store(struct fw_session *se, uint64_t nodeid, off_t off, const void *data, size_t len)
{
	struct fuse_notify_store_out o = {.nodeid = nodeid, .offset = (uint64_t)off};
	struct iovec iov[3];

	if (len > UINT32_MAX)
		return -EINVAL;
	o.size = (uint32_t)len;
	iov[1].iov_base = &o;
	iov[1].iov_len = sizeof(o);
	iov[2].iov_base = (void *)data;
	iov[2].iov_len = len;
	return notify(se, FUSE_NOTIFY_STORE, iov, 3);
}

int fw_notify_delete(struct fw_session *se, uint64_t parent, uint64_t child, const char *name)
{
	struct fuse_notify_delete_out o = {.parent = parent, .child = child};
	struct iovec iov[3];

	o.namelen = (uint32_t)strlen(name);
	iov[1].iov_base = &o;
	iov[1].iov_len = sizeof(o);
	iov[2].iov_base = (void *)name;
	iov[2].iov_len = o.namelen + 1;
	return notify(se, FUSE_NOTIFY_DELETE, iov, 3);
}

int fw_backing_open(struct fw_session *se, int fd)
{
	struct fw_backing_map map = {.fd = fd};
	int id = ioctl(se->fd, FUSE_DEV_IOC_BACKING_OPEN, &map);

	return id < 0 ? -errno : id;
}

int fw_backing_close(struct fw_session *se, int backing_id)
{
	uint32_t id = (uint32_t)backing_id;

	return ioctl(se->fd, FUSE_DEV_IOC_BACKING_CLOSE, &id) < 0 ? -errno : 0;
}
