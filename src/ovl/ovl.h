/*
 * ovl.h - the union engine's internal API, grouped by the file that
 * implements it (the kernel's fs/overlayfs split).  Every function returns
 * 0 or a length on success and a negative errno on failure, unless noted.
 * The engine knows nothing of FUSE.
 */
#ifndef STRATA_OVL_H
#define STRATA_OVL_H

#include "ovl_entry.h"

#include <stddef.h>
#include <sys/statvfs.h>

/* An entry as getdents64(2) returns it. */
struct ovl_dirent64 {
	uint64_t d_ino;
	int64_t d_off;
	unsigned short d_reclen;
	unsigned char d_type;
	char d_name[];
};

/* Who asks: the caller's identity, for new objects and permission rules. */
struct ovl_cred {
	uid_t uid;
	gid_t gid;
	mode_t umask;
};

/* params.c */
void ovl_config_init(struct ovl_config *cfg);
void ovl_config_free(struct ovl_config *cfg);
/*
 * Split a mount option string at unescaped commas and feed each option to
 * the overlay parser; options it does not know go to other(), which
 * returns 0 if it took the option, -EINVAL if nobody knows it.
 * On error a one-line message is left in err.
 */
typedef int (*ovl_other_opt_fn)(void *ctx, const char *key, const char *val, char *err,
				size_t errlen);
int ovl_params_parse(struct ovl_config *cfg, const char *opts, ovl_other_opt_fn other, void *ctx,
		     char *err, size_t errlen);
/* parse one overlay option; -ENOENT if the key is not an overlay option */
int ovl_parse_param(struct ovl_config *cfg, const char *key, const char *val, char *err,
		    size_t errlen);
/* split a lowerdir value into layers (kernel rules: \ escapes, "::" data-only) */
int ovl_parse_lowerdirs(struct ovl_config *cfg, const char *val, char *err, size_t errlen);
/* the kernel's cross-option rules (metacopy/redirect/userxattr/index...) */
int ovl_params_verify(struct ovl_config *cfg, char *err, size_t errlen);
void ovl_unescape(char *s);

/* super.c */
int ovl_fs_new(const struct ovl_config *cfg, struct ovl_fs **out, char *err, size_t errlen);
void ovl_fs_free(struct ovl_fs *fs);
int ovl_statfs(struct ovl_fs *fs, struct ovl_node *node, struct statvfs *sv);
int ovl_syncfs(struct ovl_fs *fs);

/* util.c */
/* the 4-byte lock of many objects (a futex): no init, no destroy */
void ovl_lock(struct ovl_lock *l);
void ovl_unlock(struct ovl_lock *l);
/* a node's OVL_NF_* flag */
static inline bool ovl_nf(const struct ovl_node *n, unsigned flag)
{
	return (atomic_load(&n->flags) & flag) != 0;
}
static inline void ovl_nf_set(struct ovl_node *n, unsigned flag, bool on)
{
	if (on)
		atomic_fetch_or(&n->flags, (uint8_t)flag);
	else
		atomic_fetch_and(&n->flags, (uint8_t)~flag);
}
bool ovl_is_whiteout(const struct stat *st);
bool ovl_is_wh_marker(const char *name);
ssize_t ovl_getxattr_at(int dirfd, const char *name, const char *xname, void *buf, size_t size);
ssize_t ovl_listxattr_at(int dirfd, const char *name, char *buf, size_t size);
int ovl_setxattr_at(int dirfd, const char *name, const char *xname, const void *val, size_t size,
		    int flags);
int ovl_removexattr_at(int dirfd, const char *name, const char *xname);
ssize_t ovl_getxattr_fd(int fd, const char *xname, void *buf, size_t size);
/* overlay.<xname> of a real object (of dirfd itself when name is NULL) */
ssize_t ovl_get_ovl_xattr(struct ovl_fs *fs, int dirfd, const char *name, const char *xname,
			  char *buf, size_t size);
int ovl_set_ovl_xattr(struct ovl_fs *fs, int dirfd, const char *name, const char *xname,
		      const void *val, size_t size);
int ovl_remove_ovl_xattr(struct ovl_fs *fs, int dirfd, const char *name, const char *xname);
uint64_t ovl_map_ino(const struct ovl_fs *fs, int layer, ino_t real);
struct ovl_stack *ovl_stack_of(const struct ovl_node *dir);
struct ovl_loc *ovl_loc_of(const struct ovl_node *node);
int ovl_layer_dirfd(const struct ovl_node *dir, int layer);
/* the directory fd and name of a node's real object (the top one) */
int ovl_real_at(struct ovl_fs *fs, struct ovl_node *node, int *dfd, const char **name);
int ovl_real_stat(struct ovl_fs *fs, struct ovl_node *node, struct stat *st);
/* where a node's data is read from: a metacopy's lower data file, or the object */
int ovl_data_at(struct ovl_fs *fs, struct ovl_node *node, int *dfd, const char **name);
/* is the node's top real object in the upper layer? */
bool ovl_has_upper(const struct ovl_fs *fs, const struct ovl_node *node);
/* the fd of a directory node's upper directory, or -1 */
int ovl_upper_dirfd(const struct ovl_fs *fs, const struct ovl_node *dir);
/* a unique temporary name for workdir/work */
void ovl_tmpname(struct ovl_fs *fs, char *buf, size_t size);
/* make a whiteout (char 0/0, mode 0) */
int ovl_mkwhiteout(int dirfd, const char *name);
/* the uuid of the filesystem fd is on (zeros if it has none) */
void ovl_fs_uuid(int fd, uint8_t uuid[16]);
bool ovl_uuid_null(const uint8_t uuid[16]);
/* image.c: mount a squashfs or erofs image file, detached; *out: its root dir */
int ovl_image_mount(int imgfd, const char *path, int *out, char *err, size_t errlen);
/* the overlay.origin value (struct ovl_fb) of a real object */
ssize_t ovl_encode_origin(struct ovl_fs *fs, int dirfd, const char *name, int layer,
			  unsigned char *buf, size_t size);
void ovl_hex(const unsigned char *buf, size_t n, char *out);
/* the workdir/index entry name of a lower object (hex of its origin) */
int ovl_index_name(struct ovl_fs *fs, int dirfd, const char *name, int layer, char *hex,
		   size_t size);
/* parsers of the on-disk format (pure; fuzzed) */
int ovl_fb_check(const unsigned char *fb, size_t n);
bool ovl_redirect_valid(const char *r, size_t n);
int ovl_nlink_parse(const char *buf, size_t n, char *base, long *diff);
/* run fn as the caller (fsuid/fsgid) so new objects get their owner */
void ovl_cred_enter(const struct ovl_cred *cr, uid_t *olduid, gid_t *oldgid);
void ovl_cred_leave(uid_t olduid, gid_t oldgid);

/* inode.c: the node table */
int ovl_nodes_init(struct ovl_fs *fs);
void ovl_nodes_free(struct ovl_fs *fs);
/* find by identity and take a lookup reference, or NULL */
struct ovl_node *ovl_node_find_get(struct ovl_fs *fs, dev_t dev, ino_t ino, uint64_t salt);
/* a one-name node (lower hard link) moved: findable under its new name */
void ovl_node_resalt(struct ovl_fs *fs, struct ovl_node *node, uint64_t salt);
/* a node's identity changed (a broken lower hard link): findable by the new one */
void ovl_node_rekey(struct ovl_fs *fs, struct ovl_node *node, dev_t dev, ino_t ino, uint64_t salt);
/* the index entry iname goes: open nodes reaching their object through it pin it */
void ovl_nodes_pin_index(struct ovl_fs *fs, const char *iname);
/* the salt of a one-name node's identity: (dir, name), never 0 */
uint64_t ovl_name_salt(const struct ovl_node *dir, const char *name);
/* insert a new node with one lookup reference, or return the existing one */
struct ovl_node *ovl_node_insert(struct ovl_fs *fs, struct ovl_node *node);
/* make a node unfindable (its last name is gone); it lives on while referenced */
void ovl_node_unhash(struct ovl_fs *fs, struct ovl_node *node);
void ovl_node_forget(struct ovl_fs *fs, struct ovl_node *node, uint64_t nlookup);
/* a location with copies of name and iname (may be NULL) in one block; free() frees it */
struct ovl_loc *ovl_loc_new(const char *name, const char *iname);
void ovl_node_ref(struct ovl_fs *fs, struct ovl_node *node);
/* does the engine hold the node (open files, children)? */
bool ovl_node_in_use(struct ovl_fs *fs, struct ovl_node *node);
void ovl_node_unref(struct ovl_fs *fs, struct ovl_node *node);
struct ovl_node *ovl_node_alloc(void);
void ovl_node_free(struct ovl_node *node);
size_t ovl_node_count(struct ovl_fs *fs);
/* replace a node's location (rename, copy-up); takes over the parent ref */
int ovl_node_set_loc(struct ovl_node *node, struct ovl_node *parent, const char *name, int layer,
		     const char *iname);
/* the node's last name is gone: reach its object through an O_PATH fd */
int ovl_node_pin(struct ovl_node *node, int fd);
/* replace a directory node's stack; the fds of the old one move over */
int ovl_node_set_stack(struct ovl_node *node, struct ovl_stack *st);
/* metacopy: where the data is read from, set or retired (cu_lock) */
int ovl_node_set_data(struct ovl_node *node, int ldfd, const char *lname, int layer);
void ovl_node_drop_data(struct ovl_node *node);
/* names of hard-linked nodes: the kernel knows each, any may become loc */
void ovl_node_add_alias(struct ovl_fs *fs, struct ovl_node *node, struct ovl_node *dir,
			const char *name, int layer);
void ovl_node_drop_name(struct ovl_fs *fs, struct ovl_node *node, struct ovl_node *dir,
			const char *name);
int ovl_node_move_name(struct ovl_fs *fs, struct ovl_node *node, struct ovl_node *olddir,
		       const char *oldname, struct ovl_node *newdir, const char *newname);
/* the union st_nlink of an indexed hard link, and storing it (overlay.nlink) */
int ovl_set_nlink(struct ovl_fs *fs, struct ovl_node *node, nlink_t nlink, char base);
/* before a link, unlink or rename of an indexed file: count from the upper inode */
int ovl_nlink_start(struct ovl_fs *fs, struct ovl_node *node, nlink_t nlink);
/* st_nlink of an indexed file: the union count kept in overlay.nlink */
void ovl_union_nlink(struct ovl_fs *fs, struct ovl_node *node, struct stat *st);
int ovl_getattr(struct ovl_fs *fs, struct ovl_node *node, struct stat *st);
int ovl_getattr_locked(struct ovl_fs *fs, struct ovl_node *node, struct stat *st);
int ovl_readlink(struct ovl_fs *fs, struct ovl_node *node, char *buf, size_t size);
int ovl_access(struct ovl_fs *fs, struct ovl_node *node, uid_t uid, gid_t gid, int mask);

/* What SETATTR changes (OVL_SET_* flags, as struct fw_setattr). */
struct ovl_setattr {
	unsigned int valid;
	mode_t mode;
	uid_t uid;
	gid_t gid;
	off_t size;
	struct timespec atime;
	struct timespec mtime;
	struct ovl_file *file; /* the open file, with OVL_SET_FILE */
};
#define OVL_SET_MODE  (1u << 0)
#define OVL_SET_UID   (1u << 1)
#define OVL_SET_GID   (1u << 2)
#define OVL_SET_SIZE  (1u << 3)
#define OVL_SET_ATIME (1u << 4)
#define OVL_SET_MTIME (1u << 5)
#define OVL_SET_FILE  (1u << 6)
int ovl_setattr(struct ovl_fs *fs, struct ovl_node *node, const struct ovl_setattr *sa,
		struct stat *st);

/* namei.c */
/*
 * Look name up in dir across the layers.  On success *out holds a node
 * with one more lookup reference and st its attributes; -ENOENT when the
 * name does not exist or is whited out.
 */
int ovl_lookup(struct ovl_fs *fs, struct ovl_node *dir, const char *name, struct ovl_node **out,
	       struct stat *st);
/* does name exist (not whited out) in a lower layer of dir? */
bool ovl_lower_positive(struct ovl_fs *fs, struct ovl_node *dir, const char *name);
/* a name of a lower hard link follows another name's copy-up into the index */
void ovl_hl_refresh(struct ovl_fs *fs, struct ovl_node *n);
/* one of the names of a lower hard link kept in the index (index=on)? */
static inline bool ovl_hl_group(const struct ovl_fs *fs, const struct ovl_node *n)
{
	return fs->index_fd >= 0 && S_ISREG(n->type) && n->lower_nlink > 1;
}

/* copy_up.c */
/* give node (and its parents) an upper object; data too unless metacopy allows */
int ovl_copy_up(struct ovl_fs *fs, struct ovl_node *node);
int ovl_copy_up_data(struct ovl_fs *fs, struct ovl_node *node);
/* close the pipes kept for copy-ups (at unmount) */
void ovl_pipes_free(struct ovl_fs *fs);
/* mark an upper directory impure (it holds copied-up or redirected entries) */
int ovl_set_impure(struct ovl_fs *fs, struct ovl_node *dir);
/* readdir found nothing that needs overlay.impure: drop it unless gen moved */
uint64_t ovl_impure_gen(struct ovl_fs *fs);
void ovl_clear_impure(struct ovl_fs *fs, struct ovl_node *dir, uint64_t gen);

/* dir.c */
int ovl_create(struct ovl_fs *fs, const struct ovl_cred *cr, struct ovl_node *dir, const char *name,
	       mode_t mode, dev_t rdev, const char *link_target, struct ovl_node **out,
	       struct stat *st);
int ovl_link(struct ovl_fs *fs, struct ovl_node *node, struct ovl_node *newdir, const char *newname,
	     struct ovl_node **out, struct stat *st);
int ovl_unlink(struct ovl_fs *fs, struct ovl_node *dir, const char *name, bool isdir);
int ovl_rename(struct ovl_fs *fs, struct ovl_node *olddir, const char *oldname,
	       struct ovl_node *newdir, const char *newname, unsigned int flags);
/* remove everything below an upper directory moved to the workdir, and it */
int ovl_cleanup_tree(int dirfd, const char *name);

/* readdir.c */
/*
 * Call fill for every entry of the merged dir from offset off on; fill
 * returns nonzero to stop (buffer full).  next is the offset of the entry
 * after this one.  Offset 0 reads the dir afresh.
 */
typedef int (*ovl_fill_fn)(void *ctx, const struct ovl_dirent *de, off_t next);
int ovl_readdir(struct ovl_fs *fs, struct ovl_node *dir, off_t off, ovl_fill_fn fill, void *ctx);
void ovl_listings_flush(struct ovl_fs *fs);
/* a dir's names in listing order, for the engine's own use (no side effects) */
int ovl_names_build(struct ovl_fs *fs, struct ovl_node *dir, struct ovl_listing **out);
void ovl_names_free(struct ovl_listing *l);
const struct ovl_dirent *ovl_names_at(const struct ovl_listing *l, size_t i);
size_t ovl_names_count(const struct ovl_listing *l);
size_t ovl_names_after(const struct ovl_listing *l, uint64_t cookie);
uint64_t ovl_name_cookie(const char *name);

/* prefetch.c */
/* a read-only open of a regular file: read ahead the next ones if in listing order */
void ovl_prefetch_opened(struct ovl_fs *fs, struct ovl_node *node);
/* stop the read-ahead thread (at unmount; ovl_fs_free does it too) */
void ovl_prefetch_stop(struct ovl_fs *fs);
/* the merged names of a directory, for the emptiness check of rmdir */
int ovl_dir_is_empty(struct ovl_fs *fs, struct ovl_node *dir);

/* file.c */
int ovl_open(struct ovl_fs *fs, struct ovl_node *node, int flags, struct ovl_file **out);
/* open a new object's real file (after ovl_create) */
int ovl_open_new(struct ovl_fs *fs, struct ovl_node *node, int flags, struct ovl_file **out);
ssize_t ovl_read(struct ovl_fs *fs, struct ovl_file *f, char *buf, size_t size, off_t off);
ssize_t ovl_read_pipe(struct ovl_fs *fs, struct ovl_file *f, int pipefd, size_t size, off_t off);
/*
 * The whole data of a read-only open file that is only below (never copied
 * up), for a cache of it: fn(ctx, data, len) runs under the node's copy-up
 * lock, so no copy-up can slip in between and leave old data behind, and
 * tried once per node.  1 when handed over, 0 when not (upper, a name of a
 * lower hard link, O_DIRECT, empty, larger than max, tried before), or -errno.
 */
typedef int (*ovl_offer_fn)(void *ctx, const void *data, size_t len);
int ovl_offer_lower(struct ovl_fs *fs, struct ovl_file *f, size_t max, ovl_offer_fn fn, void *ctx);
ssize_t ovl_write(struct ovl_fs *fs, struct ovl_file *f, const char *buf, size_t size, off_t off);
int ovl_fsync(struct ovl_fs *fs, struct ovl_file *f, bool datasync);
int ovl_fallocate(struct ovl_fs *fs, struct ovl_file *f, int mode, off_t off, off_t len);
off_t ovl_lseek(struct ovl_fs *fs, struct ovl_file *f, off_t off, int whence);
ssize_t ovl_copy_file_range(struct ovl_fs *fs, struct ovl_file *in, off_t offin,
			    struct ovl_file *out, off_t offout, size_t len, unsigned int flags);
int ovl_fstat(struct ovl_fs *fs, struct ovl_file *f, struct stat *st);
void ovl_release(struct ovl_fs *fs, struct ovl_file *f);

/* xattrs.c */
ssize_t ovl_getxattr(struct ovl_fs *fs, struct ovl_node *node, const char *name, void *buf,
		     size_t size);
ssize_t ovl_listxattr(struct ovl_fs *fs, struct ovl_node *node, char *buf, size_t size, bool admin);
int ovl_setxattr(struct ovl_fs *fs, struct ovl_node *node, const char *name, const void *val,
		 size_t size, int flags);
int ovl_removexattr(struct ovl_fs *fs, struct ovl_node *node, const char *name);
bool ovl_is_private_xattr(const struct ovl_fs *fs, const char *name);
/* copy the xattrs of a real object to another (private ones excepted) */
int ovl_copy_xattrs(struct ovl_fs *fs, int sdfd, const char *sname, int ddfd, const char *dname);

#endif
