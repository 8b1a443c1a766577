/*
 * fw_internal.h - data shared by the wire layer's files (session, dispatch,
 * mount).  Not for use outside src/fuse/.
 */
#ifndef STRATA_FW_INTERNAL_H
#define STRATA_FW_INTERNAL_H

#include "fuse_proto.h"
#include "fw.h"

#include <pthread.h>
#include <stdatomic.h>

struct fw_worker {
	struct fw_session *se;
	int fd; /* a clone of the session fd, or the session fd itself */
	pthread_t tid;
	bool started;
	char *inbuf;		     /* one request */
	char *outbuf;		     /* one reply payload */
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
	int nworkers;
	struct fw_worker **workers;
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

/* dispatch.c */
void fw_dispatch(struct fw_worker *w, const struct fuse_in_header *h, size_t len);
void fw_reply(struct fw_worker *w, uint64_t unique, int err, const void *data, size_t len);
void fw_reply_err(struct fw_worker *w, uint64_t unique, int err);

/* session.c */
void fw_interrupt(struct fw_worker *self, const struct fuse_in_header *h, uint64_t target);

#endif
