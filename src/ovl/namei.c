/*
 * namei.c - lookup of a name across the layers (the kernel's ovl_lookup).
 *
 * Rules, top layer first: a whiteout (char 0/0, an aufs ".wh.NAME" marker,
 * or an xwhiteout in a lower dir marked opaque=x) ends the search; a
 * non-directory hides everything below it; directories merge until one is
 * opaque (overlay.opaque=y or ".wh..wh..opq"); overlay.redirect on a
 * directory makes the layers below look under another name (relative) or
 * path from the root (absolute).
 */
#define _GNU_SOURCE
#include "ovl.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>
#include <unistd.h>

#define OVL_REDIRECT_MAX 256

struct lookup_data {
	struct ovl_fs *fs;
	struct ovl_node *dir;
	char name[NAME_MAX + 1]; /* name to look for in the parent's layers */
	char abspath[PATH_MAX];	 /* with an absolute redirect: path from the root */
	bool absolute;		 /* follow abspath from layer roots */
	int next_layer;		 /* absolute mode: next layer to search */
	int pidx;		 /* parent mode: next index in dir->stack */
	bool found;
	bool stop;
	struct stat top; /* the top real object */
	int top_layer;
	int nstack;
	struct ovl_path stack[OVL_MAX_STACK + 1];
};

/* Is there an aufs whiteout ".wh.NAME" for name in dirfd? */
static bool has_wh_marker(int dirfd, const char *name)
{
	char wh[NAME_MAX + 8];
	struct stat st;

	if (snprintf(wh, sizeof(wh), ".wh.%s", name) >= (int)sizeof(wh))
		return false;
	return fstatat(dirfd, wh, &st, AT_SYMLINK_NOFOLLOW) == 0;
}

/* A zero-size regular file with overlay.whiteout in an opaque=x lower dir. */
static bool is_xwhiteout(struct lookup_data *d, int dirfd, uint8_t pflags, int layer,
			 const struct stat *st)
{
	char v;

	if (!(pflags & OVL_PATH_XWHITEOUTS) || d->fs->layers[layer].is_upper)
		return false;
	if (!S_ISREG(st->st_mode) || st->st_size != 0)
		return false;
	return ovl_get_ovl_xattr(d->fs, dirfd, d->name, "whiteout", &v, 0) >= 0;
}

/* Walk rel (no leading '/') from a layer root without following symlinks. */
static int open_path_parent(int rootfd, const char *rel, const char **last)
{
	char comp[NAME_MAX + 1];
	const char *s = rel, *slash;
	int fd = dup(rootfd), nfd;
	size_t len;

	if (fd < 0)
		return -errno;
	while ((slash = strchr(s, '/'))) {
		len = (size_t)(slash - s);
		if (len > NAME_MAX) {
			close(fd);
			return -ENAMETOOLONG;
		}
		memcpy(comp, s, len);
		comp[len] = '\0';
		nfd =
		    len ? openat(fd, comp, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) : dup(fd);
		close(fd);
		if (nfd < 0)
			return -errno;
		fd = nfd;
		s = slash + 1;
	}
	*last = s;
	return fd;
}

/* Read overlay.opaque / overlay.redirect of a just-opened real directory. */
static int check_dir_xattrs(struct lookup_data *d, struct ovl_path *p, char *redirect, size_t rsize,
			    bool *has_redirect)
{
	struct ovl_fs *fs = d->fs;
	char list[1024], val[8];
	ssize_t n;

	*has_redirect = false;
	if (faccessat(p->fd, ".wh..wh..opq", F_OK, AT_SYMLINK_NOFOLLOW) == 0)
		p->flags |= OVL_PATH_OPAQUE;
	/* one listxattr answers "no overlay xattrs" for most directories */
	n = flistxattr(p->fd, list, sizeof(list) - 1);
	if (n < 0 && errno != ERANGE)
		return 0;
	if (n >= 0) {
		list[n] = '\0';
		if (!memmem(list, (size_t)n, fs->xprefix, fs->xprefix_len))
			return 0;
	}
	n = ovl_get_ovl_xattr(fs, p->fd, NULL, "opaque", val, sizeof(val));
	if (n == 1 && val[0] == 'y')
		p->flags |= OVL_PATH_OPAQUE;
	else if (n == 1 && val[0] == 'x' && !fs->layers[p->layer].is_upper)
		p->flags |= OVL_PATH_XWHITEOUTS;
	n = ovl_get_ovl_xattr(fs, p->fd, NULL, "redirect", redirect, rsize - 1);
	if (n == -ERANGE)
		return -EIO; /* longer than redirect_max */
	if (n > 0) {
		redirect[n] = '\0';
		if (strlen(redirect) != (size_t)n)
			return -EIO;
		*has_redirect = true;
	}
	return 0;
}

/* Switch the search of the layers below to a redirect's target. */
static int apply_redirect(struct lookup_data *d, const char *redirect, int layer)
{
	char *slash;

	if (d->fs->config.redirect_dir == OVL_REDIRECT_NOFOLLOW)
		return -EPERM; /* the kernel refuses to follow, too */
	if (redirect[0] == '/') {
		if (strlen(redirect + 1) >= sizeof(d->abspath))
			return -ENAMETOOLONG;
		snprintf(d->abspath, sizeof(d->abspath), "%s", redirect + 1);
		if (!d->absolute)
			d->next_layer = layer + 1;
		d->absolute = true;
		return 0;
	}
	if (strchr(redirect, '/') || strlen(redirect) > NAME_MAX || !strcmp(redirect, ".") ||
	    !strcmp(redirect, ".."))
		return -EIO; /* invalid redirect */
	if (d->absolute) {
		slash = strrchr(d->abspath, '/');
		if (slash)
			slash[1] = '\0';
		else
			d->abspath[0] = '\0';
		if (strlen(d->abspath) + strlen(redirect) >= sizeof(d->abspath))
			return -ENAMETOOLONG;
		strcat(d->abspath, redirect);
	} else {
		memcpy(d->name, redirect, strlen(redirect) + 1);
	}
	return 0;
}

/* Take in one real object found in layer; sets d->stop when the search ends. */
static int take_found(struct lookup_data *d, int dirfd, const char *fname, int layer,
		      const struct stat *st)
{
	char redirect[OVL_REDIRECT_MAX + 2];
	struct ovl_path *p;
	bool has_redirect;
	int fd, ret;

	if (!d->found) {
		d->found = true;
		d->top = *st;
		d->top_layer = layer;
		if (!S_ISDIR(st->st_mode)) {
			d->stop = true;
			return 0;
		}
	} else if (!S_ISDIR(st->st_mode)) {
		d->stop = true; /* a non-directory below a directory ends the merge */
		return 0;
	}
	fd = openat(dirfd, fname, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	p = &d->stack[d->nstack++];
	p->layer = layer;
	p->fd = fd;
	p->flags = 0;
	ret = check_dir_xattrs(d, p, redirect, sizeof(redirect), &has_redirect);
	if (ret)
		return ret;
	if (p->flags & OVL_PATH_OPAQUE) {
		d->stop = true;
		return 0;
	}
	if (has_redirect)
		return apply_redirect(d, redirect, layer);
	return 0;
}

/* Look at one layer; 0 to go on (d->stop set when done), -errno on error. */
static int lookup_layer(struct lookup_data *d, int dirfd, const char *fname, int layer,
			uint8_t pflags)
{
	struct stat st;

	if (fstatat(dirfd, fname, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		if (errno != ENOENT && errno != ENOTDIR)
			return -errno;
		if (has_wh_marker(dirfd, fname))
			d->stop = true;
		return 0;
	}
	if (ovl_is_whiteout(&st) || is_xwhiteout(d, dirfd, pflags, layer, &st)) {
		d->stop = true;
		return 0;
	}
	return take_found(d, dirfd, fname, layer, &st);
}

static int lookup_absolute(struct lookup_data *d)
{
	const char *last;
	int fd, ret, layer = d->next_layer++;

	fd = open_path_parent(d->fs->layers[layer].fd, d->abspath, &last);
	if (fd == -ENOENT || fd == -ENOTDIR)
		return 0;
	if (fd < 0)
		return fd;
	ret = lookup_layer(d, fd, last, layer, 0);
	close(fd);
	return ret;
}

static int lookup_stack(struct lookup_data *d)
{
	int ret = 0;

	while (!d->stop) {
		if (d->absolute) {
			if (d->next_layer >= d->fs->nmerge)
				break;
			ret = lookup_absolute(d);
		} else {
			struct ovl_path *pp;

			if (d->pidx >= d->dir->nstack)
				break;
			pp = &d->dir->stack[d->pidx++];
			ret = lookup_layer(d, pp->fd, d->name, pp->layer, pp->flags);
		}
		if (ret)
			break;
	}
	return ret;
}

static void close_stack(struct lookup_data *d)
{
	int i;

	for (i = 0; i < d->nstack; i++)
		close(d->stack[i].fd);
	d->nstack = 0;
}

static struct ovl_node *new_node(struct lookup_data *d, const char *name)
{
	struct ovl_node *n = calloc(1, sizeof(*n));

	if (!n)
		return NULL;
	n->name = strdup(name);
	if (!n->name)
		goto out_free;
	if (d->nstack) {
		n->stack = malloc(sizeof(*n->stack) * (size_t)d->nstack);
		if (!n->stack)
			goto out_free;
		memcpy(n->stack, d->stack, sizeof(*n->stack) * (size_t)d->nstack);
		n->nstack = d->nstack;
		d->nstack = 0; /* the node owns the fds now */
	}
	n->type = d->top.st_mode & S_IFMT;
	n->layer = d->top_layer;
	n->key_dev = d->top.st_dev;
	n->key_ino = d->top.st_ino;
	n->ino = ovl_map_ino(d->fs, d->top_layer, d->top.st_ino);
	n->parent = d->dir;
	return n;

out_free:
	free(n->name);
	free(n);
	return NULL;
}

int ovl_lookup(struct ovl_fs *fs, struct ovl_node *dir, const char *name, struct ovl_node **out,
	       struct stat *st)
{
	struct lookup_data *d;
	struct ovl_node *n, *got;
	int ret;

	if (strlen(name) > NAME_MAX)
		return -ENAMETOOLONG;
	if (!S_ISDIR(dir->type))
		return -ENOTDIR;
	if (ovl_is_wh_marker(name) || !strcmp(name, ".") || !strcmp(name, ".."))
		return -ENOENT;
	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->fs = fs;
	d->dir = dir;
	snprintf(d->name, sizeof(d->name), "%s", name);
	ret = lookup_stack(d);
	if (ret)
		goto out;
	ret = -ENOENT;
	if (!d->found)
		goto out;
	/* already known (another name of a hard link, or a repeat lookup)? */
	n = ovl_node_find_get(fs, d->top.st_dev, d->top.st_ino);
	if (!n) {
		ret = -ENOMEM;
		n = new_node(d, name);
		if (!n)
			goto out;
		ovl_node_ref(fs, dir);
		got = ovl_node_insert(fs, n);
		if (got != n) {
			ovl_node_unref(fs, dir);
			ovl_node_free(n);
			n = got;
		}
	}
	*st = d->top;
	st->st_ino = n->ino;
	if (S_ISDIR(n->type) && n->nstack > 1)
		st->st_nlink = 1;
	*out = n;
	ret = 0;
out:
	close_stack(d);
	free(d);
	return ret;
}
