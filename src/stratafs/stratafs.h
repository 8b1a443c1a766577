/*
 * stratafs.h - the daemon: glue between the FUSE wire layer (src/fuse) and
 * the union engine (src/ovl).  Neither of those knows the other; this is
 * the only place that maps FUSE node ids to engine nodes.
 */
#ifndef STRATA_STRATAFS_H
#define STRATA_STRATAFS_H

#include "../fuse/fw.h"
#include "../ovl/ovl.h"

struct pt_table;

/* How an open file's data is served (passthrough.c). */
enum pt_mode {
	PT_NONE,	/* passthrough is off: cached io through the daemon */
	PT_PASSTHROUGH, /* the kernel reads/writes the backing file itself */
	PT_CACHED,	/* through the daemon, page cache (this inode has no passthrough) */
};

/* An open file as the daemon keeps it (the FUSE fh points here). */
struct sfs_file {
	struct ovl_file *f;
	enum pt_mode mode;
	struct sfs_file *prev, *next; /* (files shard lock) every open file, for shutdown */
	unsigned int shard;
};

#define SFS_FILE_SHARDS 16

/* lower files up to this size go into the kernel's page cache at open (ops.c) */
#define SFS_STORE_MAX (128 * 1024)

/* The open files, so that those the kernel never releases can be freed at exit. */
struct sfs_files {
	pthread_mutex_t lock;
	struct sfs_file *head;
};

/* The daemon's one context: the mounted union and how it is served. */
struct sfs {
	struct ovl_fs *fs;
	struct fw_session *se;
	bool readonly;	       /* no upper layer, or -o ro */
	double entry_timeout;  /* seconds the kernel may cache a name */
	double attr_timeout;   /* ... and attributes */
	double neg_timeout;    /* ... and the absence of a name */
	bool want_passthrough; /* -o passthrough (default on) */
	bool passthrough;      /* granted by the kernel at INIT */
	struct pt_table *pt;   /* passthrough state per node */
	struct sfs_files files[SFS_FILE_SHARDS];
};

/* passthrough.c */
struct pt_table *pt_table_new(void);
void pt_table_free(struct pt_table *t);
/* allow: the node's real file cannot change under this open (no copy-up ahead) */
enum pt_mode pt_open(struct sfs *s, const struct ovl_node *node, int fd, bool allow,
		     struct fw_open *o);
void pt_release(struct sfs *s, const struct ovl_node *node, enum pt_mode mode);

/* ops.c */
extern const struct fw_ops sfs_ops;
void sfs_files_init(struct sfs *s);
void sfs_changed(void *ctx, struct ovl_node *node);
/* release what the kernel left open when the connection ended */
void sfs_files_release_all(struct sfs *s);

#endif
