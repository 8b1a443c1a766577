/*
 * fw.h - strata's FUSE wire layer: the public API.
 *
 * The wire layer owns /dev/fuse: mounting, INIT negotiation, worker threads
 * on cloned device fds, request decoding, replies, FORGET, INTERRUPT and
 * notifications.  It knows nothing of unions: a filesystem plugs in through
 * struct fw_ops, whose handlers are synchronous and return 0 (or a length)
 * on success and a negative errno on failure.  Node ids are opaque 64-bit
 * numbers chosen by the filesystem; FW_ROOT_ID is the root.
 */
#ifndef STRATA_FW_H
#define STRATA_FW_H

#include <fcntl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>

#define FW_ROOT_ID 1

struct fw_session;
struct fw_dirbuf;

/* Who sent a request. */
struct fw_ctx {
	uid_t uid;
	gid_t gid;
	pid_t pid;
	uint64_t unique;
	struct fw_session *se;
	void *worker; /* opaque: the worker thread serving this request */
};

/* A positive LOOKUP-style reply: the kernel takes one lookup reference. */
struct fw_entry {
	uint64_t nodeid;
	uint64_t generation;
	struct stat attr;
	double entry_timeout;
	double attr_timeout;
};

/* What OPEN/CREATE/OPENDIR reply with. */
struct fw_open {
	uint64_t fh;
	uint32_t open_flags; /* FW_FOPEN_* */
	int32_t backing_id;  /* with FW_FOPEN_PASSTHROUGH */
};

#define FW_FOPEN_DIRECT_IO   (1u << 0)
#define FW_FOPEN_KEEP_CACHE  (1u << 1)
#define FW_FOPEN_NONSEEKABLE (1u << 2)
#define FW_FOPEN_CACHE_DIR   (1u << 3)
#define FW_FOPEN_NOFLUSH     (1u << 5)
#define FW_FOPEN_PASSTHROUGH (1u << 7)

/* SETATTR: which fields are valid (FW_SET_*) and their values. */
struct fw_setattr {
	uint32_t valid;
	uint64_t fh; /* with FW_SET_FH */
	mode_t mode;
	uid_t uid;
	gid_t gid;
	off_t size;
	struct timespec atime; /* tv_nsec UTIME_NOW for *_NOW */
	struct timespec mtime;
	struct timespec ctime;
};

#define FW_SET_MODE	    (1u << 0)
#define FW_SET_UID	    (1u << 1)
#define FW_SET_GID	    (1u << 2)
#define FW_SET_SIZE	    (1u << 3)
#define FW_SET_ATIME	    (1u << 4)
#define FW_SET_MTIME	    (1u << 5)
#define FW_SET_FH	    (1u << 6)
#define FW_SET_CTIME	    (1u << 10)
#define FW_SET_KILL_SUIDGID (1u << 11)

/* What the kernel offered and what the session took (after INIT). */
struct fw_conn {
	uint32_t proto_major;
	uint32_t proto_minor;
	uint64_t capable; /* FUSE_* init flags offered by the kernel */
	uint64_t want;	  /* flags the filesystem wants; masked by capable */
	uint32_t max_write;
	uint32_t max_readahead;
	uint32_t max_pages;
	uint32_t max_background;
	uint32_t congestion_threshold;
	uint32_t time_gran;
	uint32_t max_stack_depth;
};

struct fw_ops {
	/* called once INIT arrives: adjust conn->want and limits */
	void (*init)(void *ud, struct fw_conn *conn);
	void (*destroy)(void *ud);

	int (*lookup)(void *ud, const struct fw_ctx *c, uint64_t parent, const char *name,
		      struct fw_entry *e);
	void (*forget)(void *ud, uint64_t nodeid, uint64_t nlookup);
	/* fh: the open file the kernel asks through (fstat), or 0 */
	int (*getattr)(void *ud, const struct fw_ctx *c, uint64_t nodeid, uint64_t fh,
		       struct stat *st, double *timeout);
	int (*setattr)(void *ud, const struct fw_ctx *c, uint64_t nodeid,
		       const struct fw_setattr *sa, struct stat *st, double *timeout);
	/* returns the target length; buf is size bytes */
	int (*readlink)(void *ud, const struct fw_ctx *c, uint64_t nodeid, char *buf, size_t size);
	int (*mknod)(void *ud, const struct fw_ctx *c, uint64_t parent, const char *name,
		     mode_t mode, dev_t rdev, mode_t umask, struct fw_entry *e);
	int (*mkdir)(void *ud, const struct fw_ctx *c, uint64_t parent, const char *name,
		     mode_t mode, mode_t umask, struct fw_entry *e);
	int (*symlink)(void *ud, const struct fw_ctx *c, uint64_t parent, const char *name,
		       const char *target, struct fw_entry *e);
	int (*unlink)(void *ud, const struct fw_ctx *c, uint64_t parent, const char *name);
	int (*rmdir)(void *ud, const struct fw_ctx *c, uint64_t parent, const char *name);
	int (*rename)(void *ud, const struct fw_ctx *c, uint64_t parent, const char *name,
		      uint64_t newparent, const char *newname, unsigned int flags);
	int (*link)(void *ud, const struct fw_ctx *c, uint64_t nodeid, uint64_t newparent,
		    const char *newname, struct fw_entry *e);
	int (*open)(void *ud, const struct fw_ctx *c, uint64_t nodeid, int flags,
		    struct fw_open *o);
	int (*create)(void *ud, const struct fw_ctx *c, uint64_t parent, const char *name,
		      mode_t mode, mode_t umask, int flags, struct fw_entry *e, struct fw_open *o);
	/* returns bytes read into buf */
	ssize_t (*read)(void *ud, const struct fw_ctx *c, uint64_t nodeid, uint64_t fh, char *buf,
			size_t size, off_t off);
	/*
	 * optional: put up to size bytes into the pipe pipefd (splice), fewer
	 * only at end of file; -EOPNOTSUPP before moving anything: use read
	 */
	ssize_t (*read_pipe)(void *ud, const struct fw_ctx *c, uint64_t nodeid, uint64_t fh,
			     int pipefd, size_t size, off_t off);
	ssize_t (*write)(void *ud, const struct fw_ctx *c, uint64_t nodeid, uint64_t fh,
			 const char *buf, size_t size, off_t off, bool kill_priv);
	int (*flush)(void *ud, const struct fw_ctx *c, uint64_t nodeid, uint64_t fh,
		     uint64_t lock_owner);
	int (*release)(void *ud, const struct fw_ctx *c, uint64_t nodeid, uint64_t fh, int flags,
		       uint64_t lock_owner, bool flock_unlock);
	int (*fsync)(void *ud, const struct fw_ctx *c, uint64_t nodeid, uint64_t fh, bool datasync);
	int (*opendir)(void *ud, const struct fw_ctx *c, uint64_t nodeid, int flags,
		       struct fw_open *o);
	/* fill b from offset off with fw_dirbuf_add / fw_dirbuf_add_plus */
	int (*readdir)(void *ud, const struct fw_ctx *c, uint64_t nodeid, uint64_t fh, off_t off,
		       struct fw_dirbuf *b);
	int (*releasedir)(void *ud, const struct fw_ctx *c, uint64_t nodeid, uint64_t fh);
	int (*fsyncdir)(void *ud, const struct fw_ctx *c, uint64_t nodeid, uint64_t fh,
			bool datasync);
	int (*statfs)(void *ud, const struct fw_ctx *c, uint64_t nodeid, struct statvfs *sv);
	int (*setxattr)(void *ud, const struct fw_ctx *c, uint64_t nodeid, const char *name,
			const char *value, size_t size, int flags);
	/* size 0: return the length needed; else copy and return the length */
	ssize_t (*getxattr)(void *ud, const struct fw_ctx *c, uint64_t nodeid, const char *name,
			    char *buf, size_t size);
	ssize_t (*listxattr)(void *ud, const struct fw_ctx *c, uint64_t nodeid, char *buf,
			     size_t size);
	int (*removexattr)(void *ud, const struct fw_ctx *c, uint64_t nodeid, const char *name);
	int (*access)(void *ud, const struct fw_ctx *c, uint64_t nodeid, int mask);
	int (*getlk)(void *ud, const struct fw_ctx *c, uint64_t nodeid, uint64_t fh, uint64_t owner,
		     struct flock *lk);
	int (*setlk)(void *ud, const struct fw_ctx *c, uint64_t nodeid, uint64_t fh, uint64_t owner,
		     const struct flock *lk, bool sleep);
	int (*flock)(void *ud, const struct fw_ctx *c, uint64_t nodeid, uint64_t fh, uint64_t owner,
		     int op);
	int (*fallocate)(void *ud, const struct fw_ctx *c, uint64_t nodeid, uint64_t fh, int mode,
			 off_t off, off_t len);
	/* returns the new offset */
	off_t (*lseek)(void *ud, const struct fw_ctx *c, uint64_t nodeid, uint64_t fh, off_t off,
		       int whence);
	ssize_t (*copy_file_range)(void *ud, const struct fw_ctx *c, uint64_t nodein, uint64_t fhin,
				   off_t offin, uint64_t nodeout, uint64_t fhout, off_t offout,
				   size_t len, unsigned int flags);
	int (*syncfs)(void *ud, const struct fw_ctx *c, uint64_t nodeid);
};

/* How to mount. */
struct fw_mount_opts {
	const char *mountpoint;
	const char *fsname;  /* source shown in mountinfo */
	const char *subtype; /* fuse.<subtype> */
	unsigned long flags; /* MS_RDONLY, MS_NODEV, MS_NOSUID, MS_NOEXEC, ... */
	bool allow_other;
	bool default_permissions;
	mode_t rootmode;
};

struct fw_session_opts {
	int threads;	     /* workers; 0 = one per core */
	bool debug;	     /* trace every request on stderr */
	uint32_t max_pages;  /* 0 = 256 (1 MiB requests) */
	bool io_uring;	     /* serve requests over io_uring when the kernel offers it */
	bool io_uring_quiet; /* ... and say nothing when it does not (the default) */
};

/* Mount and return the /dev/fuse fd, or -errno (message in err). */
int fw_mount(const struct fw_mount_opts *mo, char *err, size_t errlen);
/* Unmount (lazily if busy); as non-root through fusermount3. */
int fw_unmount(const char *mountpoint);

struct fw_session *fw_session_new(int fd, const struct fw_ops *ops, void *ud,
				  const struct fw_session_opts *so);
/* Serve the INIT handshake; returns 0 once INIT is answered. */
int fw_session_init(struct fw_session *se);
/*
 * Start the workers and serve until the filesystem is unmounted or a
 * SIGTERM/SIGINT/SIGHUP arrives (then unmount and drain).  Returns 0.
 */
int fw_session_loop(struct fw_session *se, const char *mountpoint);
void fw_session_destroy(struct fw_session *se);
const struct fw_conn *fw_session_conn(const struct fw_session *se);
int fw_session_fd(const struct fw_session *se);

/* Directory buffers: return 1 if added, 0 if full. */
bool fw_dirbuf_is_plus(const struct fw_dirbuf *b);
bool fw_dirbuf_room(const struct fw_dirbuf *b, size_t namelen);
int fw_dirbuf_add(struct fw_dirbuf *b, const char *name, uint64_t ino, unsigned int dtype,
		  off_t next_off);
/* e may be NULL (no entry: the kernel takes no reference) */
int fw_dirbuf_add_plus(struct fw_dirbuf *b, const char *name, uint64_t ino, unsigned int dtype,
		       off_t next_off, const struct fw_entry *e);

/* Was the request being served interrupted by the caller? */
bool fw_interrupted(const struct fw_ctx *c);
/* Mark the current request as blocking: an INTERRUPT signals the worker. */
void fw_set_interruptible(const struct fw_ctx *c, bool on);

/* Notifications (never call from a handler holding the affected dir). */
int fw_notify_inval_entry(struct fw_session *se, uint64_t parent, const char *name);
int fw_notify_inval_inode(struct fw_session *se, uint64_t nodeid, off_t off, off_t len);
int fw_notify_delete(struct fw_session *se, uint64_t parent, uint64_t child, const char *name);
/* put data into the kernel's cache of nodeid's file (it must know the node) */
int fw_notify_store(struct fw_session *se, uint64_t nodeid, off_t off, const void *data,
		    size_t len);

/* Passthrough backing files (FUSE 7.40): returns a backing id or -errno. */
int fw_backing_open(struct fw_session *se, int fd);
int fw_backing_close(struct fw_session *se, int backing_id);

#endif
