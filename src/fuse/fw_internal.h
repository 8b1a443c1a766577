/*
 * fw_internal.h - data shared by the wire layer's files (session, dispatch,
 * mount).  Not for use outside src/fuse/.
 */
#ifndef STRATA_FW_INTERNAL_H
#define STRATA_FW_INTERNAL_H

#include "fuse_proto.h"
#include "fw.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>

struct fw_ring;

/*
 * The kernel orders a reply before the requests that follow from it (a
 * node id handed out in one reply is used in a later request, perhaps on
 * another worker).  ThreadSanitizer cannot see that order through
 * io_uring or splice(2): tell it, at every reply and notification sent
 * (release) and every request received (acquire), or it reports every node
 * handed from one worker to another as a race.
 */
#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#define kernel_order_release(se) __tsan_release(se)
#define kernel_order_acquire(se) __tsan_acquire(se)
#else
#define kernel_order_release(se) ((void)(se))
#define kernel_order_acquire(se) ((void)(se))
#endif

struct fw_worker {
	struct fw_session *se;
	struct fw_ring *ring; /* io_uring transport: this worker serves one ring entry */
	int fd;		      /* a clone of the session fd, or the session fd itself */
	pthread_t tid;
	bool started;
	char *inbuf;		     /* one request */
	char *outbuf;		     /* one reply payload */
	char *readbuf;		     /* READ data: outbuf, or the ring entry's payload */
	int data_pipe[2];	     /* READ replies by splice: the data, */
	int reply_pipe[2];	     /* ... then header and data for /dev/fuse; -1: none yet */
	size_t splice_max;	     /* the largest READ the pipes hold (0: no splicing) */
	_Atomic uint64_t cur_unique; /* request being served, 0 when idle */
	_Atomic bool interrupted;    /* INTERRUPT arrived for cur_unique */
	_Atomic bool intr_ok;	     /* handler blocks: signal it on INTERRUPT */
};

struct fw_session {
	int fd; /* the /dev/fuse fd given to mount(2) */
	const struct fw_ops *ops;
	void *ud;
	bool debug;
	uint32_t max_pages;
	size_t bufsize;	     /* request buffer: max_write + one page */
	struct fw_conn conn; /* written once by INIT, read-only afterwards */
	bool init_done;
	int init_err;
	bool destroyed;
	struct fw_worker *init_worker;
	int nworkers;		    /* /dev/fuse readers */
	struct fw_worker **workers; /* the readers, then the ring workers */
	bool want_uring;	    /* io_uring when offered */
	bool uring_quiet;	    /* no warning when not offered (not asked for) */
	int nring;		    /* ring workers (0: no io_uring) */
	int nqueues;		    /* the kernel's ring queues: one per possible CPU */
	pthread_t main_thread;
	_Atomic bool exited; /* the kernel closed the connection */
	_Atomic bool stop;   /* workers must return */
};

struct fw_dirbuf {
	char *buf;
	size_t size;
	size_t len;
	bool plus;
};

/* splice.c: READ replies moved by splice(2) */
bool fw_splice_read(struct fw_worker *w, const struct fw_ctx *c, uint64_t unique, uint64_t nodeid,
		    uint64_t fh, size_t size, off_t off);
void fw_splice_close(struct fw_worker *w);

/* dispatch.c */
void fw_dispatch(struct fw_worker *w, const struct fuse_in_header *h, size_t len);
void fw_reply(struct fw_worker *w, uint64_t unique, int err, const void *data, size_t len);
void fw_reply_err(struct fw_worker *w, uint64_t unique, int err);

/* uring.c: FUSE over io_uring */
#ifdef HAVE_LIBURING
/* before INIT is answered: create the rings; 0 if the flag may be granted */
int fw_uring_prepare(struct fw_session *se);
void *fw_uring_main(void *arg);
void fw_uring_reply(struct fw_worker *w, uint64_t unique, int err, const void *data, size_t len);
void fw_uring_free(struct fw_worker *w);
#else
static inline int fw_uring_prepare(struct fw_session *se)
{
	(void)se;
	return -EOPNOTSUPP;
}
static inline void *fw_uring_main(void *arg)
{
	return arg;
}
static inline void fw_uring_reply(struct fw_worker *w, uint64_t unique, int err, const void *data,
				  size_t len)
{
	(void)w, (void)unique, (void)err, (void)data, (void)len;
}
static inline void fw_uring_free(struct fw_worker *w)
{
	(void)w;
}
#endif

/* session.c */
struct fw_worker *fw_worker_new(struct fw_session *se, int fd);
void fw_worker_free(struct fw_worker *w);
void fw_interrupt(struct fw_worker *self, const struct fuse_in_header *h, uint64_t target);

#endif
