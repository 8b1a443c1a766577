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
	char **lowerdirs;  /* unescaped, leftmost (top) first */
	int nlower;	   /* regular lower layers */
	int ndata;	   /* data-only lower layers (after "::"), at the end */
	bool lowerdir_all; /* given as one lowerdir= (not lowerdir+=/datadir+=) */
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
	enum ovl_fsync_mode { OVL_FSYNC_AUTO, OVL_FSYNC_STRICT, OVL_FSYNC_VOLATILE } fsync;
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
	uint8_t uuid[16]; /* its filesystem's uuid (FS_IOC_GETFSUUID), zeros if none */
	bool bad_uuid;	  /* uuid shared with another lower fs (or null): handles not followed */
	bool sorted_dirs; /* lookups cheap only in listing order (squashfs): readdir.c */
	/* copy_up.c: what moving data from here to the upper layer has taught */
	_Atomic bool no_clone;	     /* FICLONE refused */
	_Atomic uint8_t copy_method; /* the first method not refused (enum copy_method) */
};

/* A 4-byte lock (futex), for objects there are many of (util.c). */
struct ovl_lock {
	_Atomic uint32_t v; /* 0 free, 1 held, 2 held and waited for */
};

/* One real directory of a merged directory, top first. */
struct ovl_path {
	int layer;	       /* index into ovl_fs.layers */
	int fd;		       /* O_RDONLY|O_DIRECTORY; owned by the node */
	_Atomic uint8_t flags; /* OVL_PATH_*; impure may be added while published */
};

#define OVL_PATH_OPAQUE	    (1u << 0) /* stops the merge below */
#define OVL_PATH_XWHITEOUTS (1u << 1) /* may hold xwhiteouts (opaque=x) */
#define OVL_PATH_IMPURE	    (1u << 2) /* upper: holds copied-up/redirected entries */
#define OVL_PATH_ORIGIN	    (1u << 3) /* upper: has overlay.origin (copied up) */
#define OVL_PATH_REDIRECT   (1u << 4) /* has overlay.redirect */

/* The merged real directories of a directory node, top first. */
struct ovl_stack {
	struct ovl_stack *retired; /* the stack this one replaced */
	int n;
	struct ovl_path p[];
};

/*
 * Where a node's real object is: `name` inside the real directory of
 * `parent` in `layer` (for an indexed hard link: `iname` in workdir/index).
 * Replaced as a whole (copy-up, rename); the old one stays valid until the
 * node is freed, so readers need no lock.
 */
struct ovl_loc {
	struct ovl_node *parent; /* holds a reference; NULL for the root */
	char *iname;		 /* indexed hard link: the real object is workdir/index/<iname> */
	struct ovl_loc *retired; /* older locations, freed with the node */
	int layer;
	int dirfd;   /* metacopy data: the real dir itself (owned), else -1 */
	char name[]; /* the name in the union (iname follows it) */
};

/*
 * A node: one object of the union as the kernel sees it (one FUSE node id).
 *
 * Fields marked (shard) are protected by the node table shard lock of the
 * node; (cu) by cu_lock, which serializes copy-up and renames of the node;
 * loc and stack are read without a lock (see struct ovl_loc).
 */
struct ovl_node {
	uint64_t nlookup;	/* (shard) kernel references */
	struct ovl_node *hnext; /* (shard) hash chain */
	dev_t key_dev;		/* identity: the origin (lowest) real object */
	ino_t key_ino;
	uint64_t key_salt; /* (shard) nonzero: one node per name (lower hard links) */
	uint64_t ino;	   /* st_ino reported for this node */
	_Atomic(struct ovl_loc *) loc;
	_Atomic(struct ovl_stack *) stack; /* directories only */
	char *redirect;			   /* (cu) overlay.redirect of the real object, or NULL */
	struct ovl_loc *aliases;	/* (cu) files: other names the kernel knows (hard links) */
	_Atomic(struct ovl_loc *) data; /* metacopy: where the data is (a lower file), or NULL */
	struct ovl_loc *old_data;	/* (cu) data locations no longer used */
	char *ihex;    /* a lower hard link's name (index=on): its index entry name, or NULL */
	uint32_t refs; /* (shard) engine references: children, open files */
	uint32_t lower_nlink; /* (cu) files: st_nlink of the lower object at lookup */
	struct ovl_lock cu_lock;
	uint16_t type;	       /* S_IFMT bits */
	_Atomic uint8_t flags; /* OVL_NF_*, read and changed with ovl_nf(), ovl_nf_set() */
};

/*
 * A node's flags.  Each is changed under the lock its comment names, but
 * they share one atomic byte, so a change never tears a neighbour.
 */
#define OVL_NF_HASHED	(1u << 0) /* (shard) findable by identity */
#define OVL_NF_LOWER	(1u << 1) /* (cu) a lower object is (or was) behind the name */
#define OVL_NF_OPAQUE	(1u << 2) /* (cu) directories: the upper dir is opaque */
#define OVL_NF_IMPURE	(1u << 3) /* directories: upper dir marked impure (impure_lock) */
#define OVL_NF_INDEXED	(1u << 4) /* (cu) files: the upper inode lives in workdir/index */
#define OVL_NF_DETACHED (1u << 5) /* (cu) files: no name left; open files keep it alive */
#define OVL_NF_OFFERED	(1u << 6) /* (cu) files: ovl_offer_lower() was tried */

/*
 * A union of tens of thousands of files holds a node for each name the
 * kernel caches: keep the node in a 128-byte malloc chunk.
 */
_Static_assert(sizeof(struct ovl_node) <= 120, "struct ovl_node outgrew its malloc chunk");

#define OVL_NODE_SHARDS 64

struct ovl_node_shard {
	pthread_mutex_t lock;
	struct ovl_node **buckets;
	size_t nbuckets;
	size_t count;
};

/* The per-mount context: everything the engine knows lives here. */
/* Listings kept between the requests that read one dir (readdir.c). */
#define OVL_LISTING_SLOTS 16
struct ovl_listing;
struct ovl_listing_slot {
	struct ovl_node *node; /* referenced; NULL: free */
	struct ovl_listing *list;
	uint64_t stamp; /* least recently kept goes first */
};
struct ovl_listings {
	pthread_mutex_t lock;
	uint64_t clock;		/* (lock) */
	_Atomic uint64_t built; /* listings built so far */
	struct ovl_listing_slot slot[OVL_LISTING_SLOTS];
};

/* Read-ahead across files (prefetch.c): the dirs whose files are being opened. */
#define OVL_PF_DIRS 4
struct ovl_listing;
struct ovl_pf_dir {
	struct ovl_node *dir;	  /* referenced; NULL: free */
	struct ovl_listing *list; /* its names, once a reader went in order */
	uint64_t last;		  /* the name cookie of the file opened last in it */
	uint64_t want;		  /* read ahead what follows this cookie (0: nothing) */
	uint64_t upto;		  /* read ahead up to this cookie */
	uint64_t refill;	  /* ask for more once a reader opens past this */
	uint64_t stamp;		  /* last use; 0: free */
	bool probe;		  /* want is a first open: read ahead only if it is at the start */
	bool busy;		  /* the thread works on it: list, upto, refill are its */
	bool shunned;		  /* its names could not be had (too many): no read-ahead */
};
struct ovl_prefetch {
	pthread_mutex_t lock;
	pthread_cond_t wake;
	pthread_t thread; /* started at the first read-ahead */
	bool started, stop;
	uint64_t clock;
	struct ovl_pf_dir dirs[OVL_PF_DIRS];
};

/* Empty pipes kept between copy-ups (copy_up.c). */
#define OVL_PIPES 4
struct ovl_pipes {
	pthread_mutex_t lock;
	int n;
	int fds[OVL_PIPES][2];
};

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
	int workdir_fd;		      /* workdir= (flock()ed: in use) */
	int work_fd;		      /* workdir/work: temporaries, atomic copy-up */
	int index_fd;		      /* workdir/index, or -1 */
	_Atomic uint64_t tmp_seq;     /* names of temporaries */
	bool fsync_copy;	      /* fsync copied-up data before it is renamed in */
	pthread_rwlock_t rename_lock; /* write: renames move nodes; read: copy-up walks */
	/* overlay.impure: set (every call counts) and cleared at readdir under this lock */
	pthread_mutex_t impure_lock;
	uint64_t impure_gen; /* (impure_lock) */
	/* told when a node's attributes change behind the caller's back (copy-up) */
	void (*changed)(void *ctx, struct ovl_node *node);
	void *changed_ctx;
	struct ovl_node *root;
	struct ovl_node_shard shards[OVL_NODE_SHARDS];
	struct ovl_listings listings; /* listings read in parts (readdir.c) */
	struct ovl_pipes pipes;	      /* empty pipes for copy-up by splice (copy_up.c) */
	struct ovl_prefetch prefetch; /* read-ahead across files (prefetch.c) */
	char note[256];		      /* a warning from the setup for the daemon to print */
};

/* An entry of a merged directory listing. */
struct ovl_dirent {
	char *name;
	uint64_t ino;
	uint64_t hash; /* the offset cookie after this entry (readdir.c) */
	uint8_t type;  /* DT_* */
};

/* An open file. */
struct ovl_file {
	struct ovl_node *node;
	_Atomic int fd; /* replaced when a read-only open follows a copy-up */
	int flags;	/* open flags */
	pthread_mutex_t lock;
	_Atomic(struct ovl_loc *) loc;	/* (lock for writes) the location fd was opened at */
	_Atomic(struct ovl_loc *) data; /* (lock for writes) ... and the metacopy data then */
	int *old_fds;			/* (lock) replaced fds: a request may still use one */
	int nold;			/* (lock) */
};

#endif
