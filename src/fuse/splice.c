/*
 * splice.c - READ replies moved by splice(2) instead of copied.
 *
 * A READ reply read into a buffer and written to /dev/fuse costs two
 * copies of the data and keeps up to max_write bytes of the worker's
 * buffer resident.  Here the file system puts the data into a pipe of the
 * worker (read_pipe op: splice from the real file, page references, no
 * copy); once the length is known the header is written into a second
 * pipe, the data moved behind it (pipe to pipe, again references), and
 * the whole reply spliced into /dev/fuse in one call, as the device wants
 * a reply in one write.  Pipes are made at a worker's first READ; after
 * any failure they are dropped (they may hold half a reply) and made
 * again at the next READ.  READs under 32 KiB, requests larger than the
 * pipes hold, and io_uring workers, whose replies live in the ring's
 * buffer, use the buffer path.
 */
#define _GNU_SOURCE
#include "fw_internal.h"
#include "../common/sysio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define PIPE_WANT  (2u << 20)  /* 1 MiB of data at any page offset, plus the header */
#define SPLICE_MIN (32u << 10) /* smaller READs go through the buffer */

void fw_splice_close(struct fw_worker *w)
{
	int i;

	for (i = 0; i < 2; i++) {
		if (w->data_pipe[i] >= 0)
			close(w->data_pipe[i]);
		if (w->reply_pipe[i] >= 0)
			close(w->reply_pipe[i]);
		w->data_pipe[i] = w->reply_pipe[i] = -1;
	}
	w->splice_max = 0;
}

/* A pipe as large as allowed; returns its size in bytes, 0 on failure. */
static size_t make_pipe(int p[2])
{
	int size;

	if (pipe2(p, O_CLOEXEC) < 0)
		return 0;
	/* above /proc/sys/fs/pipe-max-size only with CAP_SYS_RESOURCE */
	if (fcntl(p[1], F_SETPIPE_SZ, PIPE_WANT) < 0)
		fcntl(p[1], F_SETPIPE_SZ, PIPE_WANT / 2);
	size = fcntl(p[1], F_GETPIPE_SZ);
	return size > 0 ? (size_t)size : 0;
}

static bool open_pipes(struct fw_worker *w)
{
	size_t a, b, page = (size_t)sysconf(_SC_PAGESIZE), slots;

	a = make_pipe(w->data_pipe);
	b = a ? make_pipe(w->reply_pipe) : 0;
	if (!b) {
		fw_splice_close(w);
		return false;
	}
	/* one buffer per page the data touches, one more for the header */
	slots = (a < b ? a : b) / page;
	w->splice_max = slots > 3 ? (slots - 2) * page : 0;
	return w->splice_max > 0;
}

/*
 * Serve a READ by splicing; false when the caller should read into the
 * buffer instead (no read_pipe op, an io_uring worker, a request larger
 * than the pipes, a file that cannot splice).  True when a reply (or an
 * error reply) was sent.
 */
bool fw_splice_read(struct fw_worker *w, const struct fw_ctx *c, uint64_t unique, uint64_t nodeid,
		    uint64_t fh, size_t size, off_t off)
{
	const struct fw_ops *ops = w->se->ops;
	struct fuse_out_header oh;
	ssize_t n, sent;
	int err;

	/* a small reply is cheaper copied: two syscalls instead of four */
	if (!ops->read_pipe || w->ring || size < SPLICE_MIN)
		return false;
	if (w->data_pipe[0] < 0 && !open_pipes(w))
		return false;
	if (size > w->splice_max)
		return false;
	n = ops->read_pipe(w->se->ud, c, nodeid, fh, w->data_pipe[1], size, off);
	if (n == -EOPNOTSUPP)
		return false;
	if (n == -EAGAIN)
		goto fall_back; /* a pipe filled up: nothing was sent yet */
	if (n < 0) {
		err = (int)n;
		goto out_reset;
	}
	oh.unique = unique;
	oh.error = 0;
	oh.len = (uint32_t)(sizeof(oh) + (size_t)n);
	if (write(w->reply_pipe[1], &oh, sizeof(oh)) != (ssize_t)sizeof(oh)) {
		err = -EIO;
		goto out_reset;
	}
	err = splice_exact(w->data_pipe[0], NULL, w->reply_pipe[1], NULL, (size_t)n,
			   SPLICE_F_NONBLOCK);
	if (err == -EAGAIN)
		goto fall_back;
	if (err)
		goto out_reset;
	/* the device takes a reply in one call, or not at all */
	kernel_order_release(w->se);
	sent = splice(w->reply_pipe[0], NULL, w->fd, NULL, oh.len, 0);
	if (sent != (ssize_t)oh.len) {
		/* ENOENT: interrupted, the request is gone; the pipes hold leftovers */
		if (sent < 0 && errno != ENOENT && w->se->debug)
			fprintf(stderr, "stratafs: reply %llu: %s\n", (unsigned long long)unique,
				strerror(errno));
		fw_splice_close(w);
	}
	return true;

out_reset:
	fw_splice_close(w);
	fw_reply_err(w, unique, err);
	return true;

fall_back:
	fw_splice_close(w); /* they hold part of a reply */
	return false;
}
