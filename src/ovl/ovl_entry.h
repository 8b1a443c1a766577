/*
 * ovl_entry.h - the union engine's data: configuration, layers, the
 * per-mount context (struct ovl_fs) and nodes.  Data only; the functions
 * that work on it are declared in ovl.h.
 */
#ifndef STRATA_OVL_ENTRY_H
#define STRATA_OVL_ENTRY_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#define OVL_MAX_STACK 500 /* the kernel's limit on lower layers */

enum ovl_redirect_mode {
	OVL_REDIRECT_OFF,      /* don't create; follow (redirect_always_follow) */
	OVL_REDIRECT_FOLLOW,   /* don't create; follow */
	OVL_REDIRECT_NOFOLLOW, /* don't create; refuse to follow (EPERM) */
	OVL_REDIRECT_ON,       /* create and follow */
};

enum ovl_tristate { OVL_UNSET = -1, OVL_OFF = 0, OVL_ON = 1 };

enum ovl_xino_mode { OVL_XINO_OFF, OVL_XINO_AUTO, OVL_XINO_ON };

/* Parsed mount options, before any layer is opened. */
struct ovl_config {
	char **lowerdirs; /* unescaped, leftmost (top) first */
	int nlower;	  /* regular lower layers */
	int ndata;	  /* data-only lower layers (after "::"), at the end */
	char *upperdir;
	char *workdir;
	enum ovl_redirect_mode redirect_dir;
	bool redirect_set;
	int index;	/* enum ovl_tristate */
	int metacopy;	/* enum ovl_tristate */
	int nfs_export; /* enum ovl_tristate */
	enum ovl_xino_mode xino;
	bool userxattr;
	bool ovl_volatile;
	bool ro;
};

/* One layer of the stack. */
struct ovl_layer {
	int fd;	    /* O_RDONLY|O_DIRECTORY fd of the layer's root */
	char *path; /* as given, for messages */
	int idx;    /* position: 0 is the top (upper when there is one) */
	int fsid;   /* which distinct filesystem the layer is on (xino) */
	dev_t dev;
	bool is_upper;
	bool data_only;
};

/* One real directory of a merged directory, top first. */
struct ovl_path {
	int layer; /* index into ovl_fs.layers */
	int fd;	   /* O_RDONLY|O_DIRECTORY; owned by the node */
	uint8_t flags;
};

#define OVL_PATH_OPAQUE	    (1u << 0) /* stops the merge below */
#define OVL_PATH_XWHITEOUTS (1u << 1) /* may hold xwhiteouts (opaque=x) */

/*
 * A node: one object of the union as the kernel sees it (one FUSE node id).
 *
 * Directories hold a stack of real directory fds.  Non-directories hold no
 * fd: their real entry is `name` inside the parent's real directory of
 * `layer`.  Fields marked (shard) are protected by the node table shard lock
 * of the node; the rest are immutable after the node is published.
 */
struct ovl_node {
	uint64_t nlookup;	/* (shard) kernel references */
	uint64_t refs;		/* (shard) engine references: children, open files */
	struct ovl_node *hnext; /* (shard) hash chain */
	dev_t key_dev;		/* identity: the top real object */
	ino_t key_ino;
	uint64_t ino;		 /* st_ino reported for this node */
	mode_t type;		 /* S_IFMT bits */
	struct ovl_node *parent; /* holds a reference; NULL for the root */
	char *name;
	int layer;  /* layer of the top real object */
	int nstack; /* directories: merged real dirs */
	struct ovl_path *stack;
};

#define OVL_NODE_SHARDS 64

struct ovl_node_shard {
	pthread_mutex_t lock;
	struct ovl_node **buckets;
	size_t nbuckets;
	size_t count;
};

/* The per-mount context: everything the engine knows lives here. */
struct ovl_fs {
	struct ovl_config config;
	struct ovl_layer *layers; /* [0] is the upper layer when has_upper */
	int nlayers;		  /* all layers, data-only ones included */
	int nmerge;		  /* layers that take part in name merging */
	bool has_upper;
	bool samefs;	  /* every layer on one filesystem */
	int nfs;	  /* distinct filesystems */
	int xino_bits;	  /* high st_ino bits that carry the fsid */
	char xprefix[24]; /* "trusted.overlay." or "user.overlay." */
	size_t xprefix_len;
	struct ovl_node *root;
	struct ovl_node_shard shards[OVL_NODE_SHARDS];
};

/* An open directory: the merged listing, built once per open. */
struct ovl_dirent {
	char *name;
	uint64_t ino;
	uint8_t type; /* DT_* */
};

struct ovl_dir {
	struct ovl_node *node;
	bool built;
	size_t n;
	size_t cap;
	struct ovl_dirent *ents;
	pthread_mutex_t lock;
};

/* An open file. */
struct ovl_file {
	struct ovl_node *node;
	int fd;
};

#endif
