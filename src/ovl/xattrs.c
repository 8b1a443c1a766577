/*
 * xattrs.c - extended attributes seen through the union.
 *
 * The overlay's private xattrs (trusted.overlay.*, or user.overlay.* with
 * userxattr) are hidden.  A private-looking name set by a user is stored
 * escaped as overlay.overlay.X and reads back as overlay.X, as the kernel
 * does since 6.7.  Other trusted.* names are listed for the superuser only.
 */
#define _GNU_SOURCE
#include "ovl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>

#define ESCAPE "overlay."

bool ovl_is_private_xattr(const struct ovl_fs *fs, const char *name)
{
	return strncmp(name, fs->xprefix, fs->xprefix_len) == 0;
}

static bool is_escaped(const struct ovl_fs *fs, const char *name)
{
	return ovl_is_private_xattr(fs, name) &&
	       strncmp(name + fs->xprefix_len, ESCAPE, strlen(ESCAPE)) == 0;
}

static ssize_t real_getxattr(struct ovl_fs *fs, struct ovl_node *node, const char *name, void *buf,
			     size_t size)
{
	const char *rname;
	ssize_t n;
	int dfd, ret;

	if (S_ISDIR(node->type)) {
		n = ovl_getxattr_fd(ovl_stack_of(node)->p[0].fd, name, buf, size);
	} else {
		ret = ovl_real_at(fs, node, &dfd, &rname);
		if (ret)
			return ret;
		n = ovl_getxattr_at(dfd, rname, name, buf, size);
	}
	/*
	 * A layer without POSIX ACLs (squashfs, vfat) has no ACL: not an
	 * error, or the kernel's permission check of the FUSE inode fails.
	 */
	if (n == -EOPNOTSUPP && !strncmp(name, "system.posix_acl_", 17))
		n = -ENODATA;
	return n;
}

static ssize_t real_listxattr(struct ovl_fs *fs, struct ovl_node *node, char *buf, size_t size)
{
	const char *rname;
	ssize_t n;
	int dfd, ret;

	if (S_ISDIR(node->type)) {
		n = flistxattr(ovl_stack_of(node)->p[0].fd, buf, size);
		return n < 0 ? -errno : n;
	}
	ret = ovl_real_at(fs, node, &dfd, &rname);
	if (ret)
		return ret;
	return ovl_listxattr_at(dfd, rname, buf, size);
}

ssize_t ovl_getxattr(struct ovl_fs *fs, struct ovl_node *node, const char *name, void *buf,
		     size_t size)
{
	char *real;
	ssize_t n;

	if (!ovl_is_private_xattr(fs, name))
		return real_getxattr(fs, node, name, buf, size);
	/* overlay.X on the union is overlay.overlay.X on the layer */
	if (asprintf(&real, "%s%s%s", fs->xprefix, ESCAPE, name + fs->xprefix_len) < 0)
		return -ENOMEM;
	n = real_getxattr(fs, node, real, buf, size);
	free(real);
	return n;
}

/* Filter a real name list into out (NULL: count only); returns the length. */
static size_t filter_list(struct ovl_fs *fs, const char *list, size_t len, char *out, bool admin)
{
	size_t total = 0, nl;
	const char *s, *shown;

	for (s = list; s < list + len; s += strlen(s) + 1) {
		shown = s;
		if (ovl_is_private_xattr(fs, s)) {
			if (!is_escaped(fs, s))
				continue;
			/* show prefix + rest, skipping the escape */
			nl = fs->xprefix_len + strlen(s + fs->xprefix_len + strlen(ESCAPE)) + 1;
			if (out) {
				memcpy(out + total, fs->xprefix, fs->xprefix_len);
				strcpy(out + total + fs->xprefix_len,
				       s + fs->xprefix_len + strlen(ESCAPE));
			}
			total += nl;
			continue;
		}
		if (!admin && !strncmp(s, "trusted.", 8))
			continue;
		nl = strlen(shown) + 1;
		if (out)
			memcpy(out + total, shown, nl);
		total += nl;
	}
	return total;
}

ssize_t ovl_listxattr(struct ovl_fs *fs, struct ovl_node *node, char *buf, size_t size, bool admin)
{
	char *list = NULL;
	ssize_t n, need;
	size_t len;

	for (;;) {
		need = real_listxattr(fs, node, NULL, 0);
		if (need <= 0)
			return need;
		free(list);
		list = malloc((size_t)need);
		if (!list)
			return -ENOMEM;
		n = real_listxattr(fs, node, list, (size_t)need);
		if (n != -ERANGE)
			break; /* grew meanwhile: ask again */
	}
	if (n < 0)
		goto out;
	len = filter_list(fs, list, (size_t)n, NULL, admin);
	if (size == 0) {
		n = (ssize_t)len;
		goto out;
	}
	if (len > size) {
		n = -ERANGE;
		goto out;
	}
	n = (ssize_t)filter_list(fs, list, (size_t)n, buf, admin);
out:
	free(list);
	return n;
}

/* The name an xattr has on the layer: overlay.X is stored as overlay.overlay.X. */
static char *real_name(struct ovl_fs *fs, const char *name)
{
	char *real;

	if (!ovl_is_private_xattr(fs, name))
		return strdup(name);
	if (asprintf(&real, "%s%s%s", fs->xprefix, ESCAPE, name + fs->xprefix_len) < 0)
		return NULL;
	return real;
}

/*
 * Copy up before changing an attribute, unless the inode has an upper
 * object already: a name of an indexed hard link still below changes the
 * index entry without being linked up (the kernel's ovl_xattr_set()).
 */
static int xattr_copy_up(struct ovl_fs *fs, struct ovl_node *node)
{
	ovl_hl_refresh(fs, node);
	if (ovl_nf(node, OVL_NF_INDEXED) && ovl_loc_of(node)->iname)
		return 0;
	return ovl_copy_up(fs, node);
}

int ovl_setxattr(struct ovl_fs *fs, struct ovl_node *node, const char *name, const void *val,
		 size_t size, int flags)
{
	const char *rname;
	char *real;
	int dfd, ret;

	ret = xattr_copy_up(fs, node);
	if (ret)
		return ret;
	real = real_name(fs, name);
	if (!real)
		return -ENOMEM;
	if (S_ISDIR(node->type)) {
		ret = fsetxattr(ovl_upper_dirfd(fs, node), real, val, size, flags) < 0 ? -errno : 0;
	} else {
		ret = ovl_real_at(fs, node, &dfd, &rname);
		if (!ret)
			ret = ovl_setxattr_at(dfd, rname, real, val, size, flags);
	}
	free(real);
	return ret;
}

int ovl_removexattr(struct ovl_fs *fs, struct ovl_node *node, const char *name)
{
	const char *rname;
	char *real;
	int dfd, ret;

	/* nothing to copy up for an attribute that is not there */
	if (ovl_getxattr(fs, node, name, NULL, 0) < 0)
		return -ENODATA;
	ret = xattr_copy_up(fs, node);
	if (ret)
		return ret;
	real = real_name(fs, name);
	if (!real)
		return -ENOMEM;
	if (S_ISDIR(node->type)) {
		ret = fremovexattr(ovl_upper_dirfd(fs, node), real) < 0 ? -errno : 0;
	} else {
		ret = ovl_real_at(fs, node, &dfd, &rname);
		if (!ret)
			ret = ovl_removexattr_at(dfd, rname, real);
	}
	free(real);
	return ret;
}

/*
 * Copy-up of xattrs: all but the overlay's own private ones (escaped user
 * ones travel).  Attributes the upper fs refuses for the type are skipped.
 */
int ovl_copy_xattrs(struct ovl_fs *fs, int sdfd, const char *sname, int ddfd, const char *dname)
{
	char *list = NULL, *val = NULL, *s;
	ssize_t len, vlen;
	int ret = 0;

	len = ovl_listxattr_at(sdfd, sname, NULL, 0);
	if (len <= 0)
		return len == -EOPNOTSUPP ? 0 : (int)len;
	list = malloc((size_t)len);
	val = malloc(65536);
	if (!list || !val) {
		ret = -ENOMEM;
		goto out;
	}
	len = ovl_listxattr_at(sdfd, sname, list, (size_t)len);
	if (len < 0) {
		ret = (int)len;
		goto out;
	}
	for (s = list; s < list + len; s += strlen(s) + 1) {
		if (ovl_is_private_xattr(fs, s) && !is_escaped(fs, s))
			continue;
		vlen = ovl_getxattr_at(sdfd, sname, s, val, 65536);
		if (vlen == -ENODATA)
			continue;
		if (vlen < 0) {
			ret = (int)vlen;
			goto out;
		}
		ret = ovl_setxattr_at(ddfd, dname, s, val, (size_t)vlen, 0);
		if (ret == -EOPNOTSUPP || ret == -EPERM)
			ret = 0;
		if (ret)
			goto out;
	}
out:
	free(list);
	free(val);
	return ret;
}
