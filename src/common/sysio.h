/*
 * sysio.h - system-call helpers that both the wire layer and the union
 * engine use (header only; neither layer depends on the other).
 */
#ifndef STRATA_SYSIO_H
#define STRATA_SYSIO_H

#include <errno.h>
#include <fcntl.h>
#include <sys/types.h>

/*
 * Move exactly len bytes with splice(2) (one side a pipe); offsets and
 * flags as splice takes them.  0, -errno, or -EIO if the source ran dry.
 */
static inline int splice_exact(int from, loff_t *offin, int to, loff_t *offout, size_t len,
			       unsigned int flags)
{
	ssize_t n;

	while (len) {
		n = splice(from, offin, to, offout, len, flags);
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO;
		len -= (size_t)n;
	}
	return 0;
}

#endif
