/*
 * stratafs.h - the daemon: glue between the FUSE wire layer (src/fuse) and
 * the union engine (src/ovl).  Neither of those knows the other; this is
 * the only place that maps FUSE node ids to engine nodes.
 */
#ifndef STRATA_STRATAFS_H
#define STRATA_STRATAFS_H

#include "../fuse/fw.h"
#include "../ovl/ovl.h"

/* The daemon's one context: the mounted union and how it is served. */
struct sfs {
	struct ovl_fs *fs;
	struct fw_session *se;
	bool readonly;	      /* no upper layer, or -o ro */
	double entry_timeout; /* seconds the kernel may cache a name */
	double attr_timeout;  /* ... and attributes */
	double neg_timeout;   /* ... and the absence of a name */
};

/* ops.c */
extern const struct fw_ops sfs_ops;

#endif
