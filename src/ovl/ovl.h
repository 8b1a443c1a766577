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

/* util.c */
bool ovl_is_whiteout(const struct stat *st);
bool ovl_is_wh_marker(const char *name);
ssize_t ovl_getxattr_at(int dirfd, const char *name, const char *xname, void *buf, size_t size);
ssize_t ovl_listxattr_at(int dirfd, const char *name, char *buf, size_t size);
ssize_t ovl_getxattr_fd(int fd, const char *xname, void *buf, size_t size);
/* read overlay.<name> ("opaque", "redirect"...) of a real object */
ssize_t ovl_get_ovl_xattr(struct ovl_fs *fs, int dirfd, const char *name, const char *xname,
			  char *buf, size_t size);
uint64_t ovl_map_ino(const struct ovl_fs *fs, int layer, ino_t real);
int ovl_layer_dirfd(const struct ovl_node *dir, int layer);
/* fstatat the real object of a node */
int ovl_real_stat(struct ovl_fs *fs, struct ovl_node *node, struct stat *st);

/* inode.c: the node table */
int ovl_nodes_init(struct ovl_fs *fs);
void ovl_nodes_free(struct ovl_fs *fs);
/* find by identity and take a lookup reference, or NULL */
struct ovl_node *ovl_node_find_get(struct ovl_fs *fs, dev_t dev, ino_t ino);
/* insert a new node with one lookup reference, or return the existing one */
struct ovl_node *ovl_node_insert(struct ovl_fs *fs, struct ovl_node *node);
void ovl_node_forget(struct ovl_fs *fs, struct ovl_node *node, uint64_t nlookup);
void ovl_node_ref(struct ovl_fs *fs, struct ovl_node *node);
void ovl_node_unref(struct ovl_fs *fs, struct ovl_node *node);
void ovl_node_free(struct ovl_node *node);
size_t ovl_node_count(struct ovl_fs *fs);
int ovl_getattr(struct ovl_fs *fs, struct ovl_node *node, struct stat *st);
int ovl_readlink(struct ovl_fs *fs, struct ovl_node *node, char *buf, size_t size);
int ovl_access(struct ovl_fs *fs, struct ovl_node *node, uid_t uid, gid_t gid, int mask);

/* namei.c */
/*
 * Look name up in dir across the layers.  On success *out holds a node
 * with one more lookup reference and st its attributes; -ENOENT when the
 * name does not exist or is whited out.
 */
int ovl_lookup(struct ovl_fs *fs, struct ovl_node *dir, const char *name, struct ovl_node **out,
	       struct stat *st);

/* readdir.c */
int ovl_opendir(struct ovl_fs *fs, struct ovl_node *node, struct ovl_dir **out);
/*
 * Call fill for every entry from offset off on; fill returns nonzero to stop
 * (buffer full).  next is the offset of the entry after this one.
 */
typedef int (*ovl_fill_fn)(void *ctx, const struct ovl_dirent *de, off_t next);
int ovl_readdir(struct ovl_fs *fs, struct ovl_dir *dir, off_t off, ovl_fill_fn fill, void *ctx);
void ovl_releasedir(struct ovl_fs *fs, struct ovl_dir *dir);

/* file.c */
int ovl_open(struct ovl_fs *fs, struct ovl_node *node, int flags, struct ovl_file **out);
ssize_t ovl_read(struct ovl_fs *fs, struct ovl_file *f, char *buf, size_t size, off_t off);
void ovl_release(struct ovl_fs *fs, struct ovl_file *f);

/* xattrs.c */
ssize_t ovl_getxattr(struct ovl_fs *fs, struct ovl_node *node, const char *name, void *buf,
		     size_t size);
ssize_t ovl_listxattr(struct ovl_fs *fs, struct ovl_node *node, char *buf, size_t size, bool admin);
bool ovl_is_private_xattr(const struct ovl_fs *fs, const char *name);

#endif
