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
	char name[NAME_MAX + 1];  /* name to look for in the parent's layers */
	char abspath[PATH_MAX];	  /* with an absolute redirect: path from the root */
	bool absolute;		  /* follow abspath from layer roots */
	int next_layer;		  /* absolute mode: next layer to search */
	int pidx;		  /* parent mode: next index in dstack */
	struct ovl_stack *dstack; /* the parent's stack, loaded once */
	bool found;
	bool stop;
	struct stat top; /* the top real object */
	int top_layer;
	int top_dirfd;		     /* the real dir holding the top object */
	char top_name[NAME_MAX + 1]; /* its name there (d->name may follow a redirect) */
	char top_redirect[OVL_REDIRECT_MAX + 2]; /* overlay.redirect of a top dir */
	bool top_has_redirect;
	char ohex[600]; /* hex of overlay.origin: the index entry name */
	nlink_t onlink; /* st_nlink of the origin */
	bool have_origin;
	bool metacopy;	/* the top object is an upper metacopy file */
	int data_dirfd; /* ... its data file: dir fd (owned) and name */
	char data_name[NAME_MAX + 1];
	int data_layer;
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

/*
 * An xwhiteout: a zero-size regular file with overlay.whiteout in a lower
 * layer.  Lookup honours it in any directory (readdir only in opaque=x ones).
 */
static bool is_xwhiteout(struct lookup_data *d, int dirfd, const char *fname, uint8_t pflags,
			 int layer, const struct stat *st)
{
	char v;

	(void)pflags;
	if (d->fs->layers[layer].is_upper)
		return false;
	if (!S_ISREG(st->st_mode) || st->st_size != 0)
		return false;
	return ovl_get_ovl_xattr(d->fs, dirfd, fname, "whiteout", &v, 0) >= 0;
}

/* Read overlay.opaque / overlay.redirect of a just-opened real directory. */
static int check_dir_xattrs(struct lookup_data *d, struct ovl_path *p, char *redirect, size_t rsize,
			    bool *has_redirect)
{
	struct ovl_fs *fs = d->fs;
	char list[1024], val[8];
	ssize_t n;

	*has_redirect = false;
	/* aufs markers come with image layers, never in an upper layer */
	if (!fs->layers[p->layer].is_upper &&
	    faccessat(p->fd, ".wh..wh..opq", F_OK, AT_SYMLINK_NOFOLLOW) == 0)
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
	if (fs->layers[p->layer].is_upper) {
		char key[64];

		snprintf(key, sizeof(key), "%simpure", fs->xprefix);
		if (memmem(list, (size_t)(n < 0 ? 0 : n), key, strlen(key) + 1))
			p->flags |= OVL_PATH_IMPURE;
		snprintf(key, sizeof(key), "%sorigin", fs->xprefix);
		if (memmem(list, (size_t)(n < 0 ? 0 : n), key, strlen(key) + 1))
			p->flags |= OVL_PATH_ORIGIN;
		if (n < 0) /* list too long to read: ask directly */
			p->flags |= OVL_PATH_IMPURE | OVL_PATH_ORIGIN;
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
		p->flags |= OVL_PATH_REDIRECT;
	}
	return 0;
}

/* Switch the search of the layers below to a redirect's target. */
static int apply_redirect(struct lookup_data *d, const char *redirect, int layer)
{
	char *slash;

	if (d->fs->config.redirect_dir == OVL_REDIRECT_NOFOLLOW)
		return -EPERM; /* the kernel refuses to follow, too */
	if (!ovl_redirect_valid(redirect, strlen(redirect)))
		return -EIO; /* invalid redirect */
	if (redirect[0] == '/') {
		if (strlen(redirect + 1) >= sizeof(d->abspath))
			return -ENAMETOOLONG;
		snprintf(d->abspath, sizeof(d->abspath), "%s", redirect + 1);
		if (!d->absolute)
			d->next_layer = layer + 1;
		d->absolute = true;
		return 0;
	}
	if (!ovl_redirect_valid(redirect, strlen(redirect)))
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
/* An upper regular file with overlay.metacopy: its data is below it. */
static bool is_metacopy(struct lookup_data *d, int dirfd, const char *fname, int layer,
			uint8_t pflags, const struct stat *st)
{
	if (d->fs->config.metacopy != OVL_ON || !S_ISREG(st->st_mode) ||
	    !d->fs->layers[layer].is_upper || !(pflags & OVL_PATH_IMPURE))
		return false;
	return ovl_get_ovl_xattr(d->fs, dirfd, fname, "metacopy", NULL, 0) >= 0;
}

/* The data of a metacopy file was found: keep where it is. */
static int take_data(struct lookup_data *d, int dirfd, const char *fname, int layer,
		     const struct stat *st)
{
	d->stop = true;
	if (!S_ISREG(st->st_mode))
		return 0;
	d->data_dirfd = fcntl(dirfd, F_DUPFD_CLOEXEC, 0);
	if (d->data_dirfd < 0)
		return -errno;
	snprintf(d->data_name, sizeof(d->data_name), "%s", fname);
	d->data_layer = layer;
	return 0;
}

/* Take in one real object found in layer; sets d->stop when the search ends. */
static int take_found(struct lookup_data *d, int dirfd, const char *fname, int layer,
		      uint8_t pflags, const struct stat *st)
{
	char redirect[OVL_REDIRECT_MAX + 2];
	struct ovl_path *p;
	bool has_redirect;
	ssize_t n;
	int fd, ret;

	if (d->metacopy)
		return take_data(d, dirfd, fname, layer, st);
	if (!d->found) {
		d->found = true;
		d->top = *st;
		d->top_layer = layer;
		d->top_dirfd = dirfd;
		snprintf(d->top_name, sizeof(d->top_name), "%s", fname);
		if (!S_ISDIR(st->st_mode)) {
			if (!is_metacopy(d, dirfd, fname, layer, pflags, st)) {
				d->stop = true;
				return 0;
			}
			/* look on below for the data, under a redirect if it has one */
			d->metacopy = true;
			n = ovl_get_ovl_xattr(d->fs, dirfd, fname, "redirect", redirect,
					      sizeof(redirect) - 1);
			if (n <= 0)
				return 0;
			redirect[n] = '\0';
			memcpy(d->top_redirect, redirect, (size_t)n + 1);
			d->top_has_redirect = true;
			return apply_redirect(d, redirect, layer);
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
	if (has_redirect && d->nstack == 1) {
		memcpy(d->top_redirect, redirect, sizeof(redirect));
		d->top_has_redirect = true;
	}
	/* a redirect of the upper layer only matters with lower layers below */
	if (has_redirect && layer + 1 < d->fs->nmerge)
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
		/* aufs markers come with image layers, never in an upper layer */
		if (!d->fs->layers[layer].is_upper && has_wh_marker(dirfd, fname))
			d->stop = true;
		return 0;
	}
	if (ovl_is_whiteout(&st) || is_xwhiteout(d, dirfd, fname, pflags, layer, &st)) {
		d->stop = true;
		return 0;
	}
	return take_found(d, dirfd, fname, layer, pflags, &st);
}

/*
 * One intermediate directory of an absolute redirect path in a layer, as the
 * kernel's ovl_lookup_layer() walks it: 1 to go on with its fd in *next, 0
 * when the layer does not have it, and d->stop set when a whiteout or a
 * non-directory ends the search (an opaque directory ends it after this layer).
 */
static int walk_component(struct lookup_data *d, int fd, const char *comp, int layer, int *next)
{
	char v[2];
	struct stat st;
	int nfd;

	if (fstatat(fd, comp, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return (errno == ENOENT || errno == ENOTDIR) ? 0 : -errno;
	if (ovl_is_whiteout(&st) || !S_ISDIR(st.st_mode)) {
		d->stop = true;
		return 0;
	}
	nfd = openat(fd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (nfd < 0)
		return -errno;
	if (ovl_get_ovl_xattr(d->fs, nfd, NULL, "opaque", v, sizeof(v)) == 1 && v[0] == 'y')
		d->stop = true;
	(void)layer;
	*next = nfd;
	return 1;
}

static int lookup_absolute(struct lookup_data *d)
{
	char comp[NAME_MAX + 1];
	const char *s = d->abspath, *slash;
	int layer = d->next_layer++, fd, nfd = -1, ret;
	size_t len;

	fd = dup(d->fs->layers[layer].fd);
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
		s = slash + 1;
		if (!len)
			continue;
		ret = walk_component(d, fd, comp, layer, &nfd);
		close(fd);
		if (ret <= 0)
			return ret;
		fd = nfd;
	}
	ret = lookup_layer(d, fd, s, layer, 0);
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

			if (d->pidx >= d->dstack->n)
				break;
			pp = &d->dstack->p[d->pidx++];
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

struct identity {
	dev_t dev;
	ino_t ino;
	uint64_t salt;
	uint64_t ino_shown;
};

/* Decode overlay.origin of an upper non-directory; 0 and the lower stat on success. */
static int decode_origin(struct lookup_data *d, struct stat *lst, int *layer)
{
	struct {
		struct file_handle fh;
		unsigned char data[MAX_HANDLE_SZ];
	} h;
	unsigned char fb[256];
	ssize_t n;
	int i, fd;

	n = ovl_get_ovl_xattr(d->fs, d->top_dirfd, d->top_name, "origin", (char *)fb, sizeof(fb));
	if (n < 0 || ovl_fb_check(fb, (size_t)n) < 0)
		return -ENODATA;
	ovl_hex(fb, (size_t)n, d->ohex);
	h.fh.handle_bytes = (unsigned int)(n - 21);
	h.fh.handle_type = fb[4];
	memcpy(h.fh.f_handle, fb + 21, h.fh.handle_bytes);
	for (i = 1; i < d->fs->nlayers; i++) {
		/* a handle is of the filesystem its uuid names (unknown: any) */
		if (d->fs->layers[i].bad_uuid || (!ovl_uuid_null(d->fs->layers[i].uuid) &&
						  memcmp(d->fs->layers[i].uuid, fb + 5, 16)))
			continue;
		fd = open_by_handle_at(d->fs->layers[i].fd, &h.fh, O_PATH | O_CLOEXEC);
		if (fd < 0)
			continue;
		if (fstat(fd, lst) == 0 && lst->st_dev == d->fs->layers[i].dev) {
			close(fd);
			*layer = i;
			return 0;
		}
		close(fd);
	}
	return -ESTALE;
}

uint64_t ovl_name_salt(const struct ovl_node *dir, const char *name)
{
	uint64_t h = (uint64_t)(uintptr_t)dir * 0x9e3779b97f4a7c15ULL;

	for (; *name; name++)
		h = (h ^ (unsigned char)*name) * 0x100000001b3ULL;
	return h | 1;
}

/*
 * The identity of the object found: the origin (lower) object for a copied-up
 * directory or a copied-up file that was not a hard link (or is indexed),
 * as the kernel reports st_ino; the top object otherwise.
 */
static void find_identity(struct lookup_data *d, struct ovl_node *dir, struct identity *id)
{
	struct ovl_stack *pst = ovl_stack_of(dir);
	struct stat lst;
	int layer;

	id->dev = d->top.st_dev;
	id->ino = d->top.st_ino;
	id->salt = 0;
	id->ino_shown = ovl_map_ino(d->fs, d->top_layer, d->top.st_ino);
	if (d->fs->has_upper && d->top_layer != 0 && S_ISREG(d->top.st_mode) &&
	    d->top.st_nlink > 1) {
		/*
		 * A name of a lower hard link that has no upper link is a node of
		 * its own (same st_ino): a copy-up for an open or a chmod, which
		 * FUSE sends without a name, must link up exactly this name, as
		 * the kernel does.  Without the index the copy-up breaks the link;
		 * with it, the names share the index entry (ovl_hl_refresh) and
		 * keep their nodes when copied up (below).
		 */
		id->salt = ovl_name_salt(dir, d->top_name);
		return;
	}
	if (!d->fs->has_upper || d->top_layer != 0)
		return;
	if (S_ISDIR(d->top.st_mode)) {
		if (!(d->stack[0].flags & OVL_PATH_ORIGIN) || d->nstack < 2 ||
		    fstat(d->stack[1].fd, &lst) < 0)
			return;
		layer = d->stack[1].layer;
	} else {
		/* only entries of an impure upper dir can have been copied up */
		if (pst->n == 0 || !(pst->p[0].flags & OVL_PATH_IMPURE))
			return;
		if (decode_origin(d, &lst, &layer))
			return;
		d->have_origin = true;
		d->onlink = lst.st_nlink;
		if (lst.st_nlink > 1) {
			struct stat ist;

			/* only the index says a copied-up hard link is still whole */
			if (d->fs->index_fd < 0 ||
			    fstatat(d->fs->index_fd, d->ohex, &ist, AT_SYMLINK_NOFOLLOW) < 0)
				return; /* a broken hard link: its own file now */
			/* an upper name of an indexed lower hard link: a node per name */
			id->salt = ovl_name_salt(dir, d->top_name);
		}
	}
	id->dev = lst.st_dev;
	id->ino = lst.st_ino;
	id->ino_shown = ovl_map_ino(d->fs, layer, lst.st_ino);
}

static void hl_sync_data(struct ovl_fs *fs, struct ovl_node *n, const char *iname, int ldfd,
			 const char *lname, int layer);

static bool set_data(struct ovl_node *n, struct lookup_data *d)
{
	struct ovl_loc *data = ovl_loc_new(d->data_name, NULL);

	if (!data)
		return false;
	data->dirfd = d->data_dirfd;
	data->layer = d->data_layer;
	d->data_dirfd = -1;
	atomic_store(&n->data, data);
	return true;
}

static struct ovl_node *new_node(struct lookup_data *d, struct ovl_node *dir, const char *name,
				 const struct identity *id)
{
	struct ovl_node *n = ovl_node_alloc();
	struct ovl_stack *st;
	char hex[600];
	bool indexed = false, lower_name = false;

	if (!n)
		return NULL;
	if (d->nstack) {
		st = malloc(sizeof(*st) + sizeof(st->p[0]) * (size_t)d->nstack);
		if (!st)
			goto out_free;
		st->retired = NULL;
		st->n = d->nstack;
		memcpy(st->p, d->stack, sizeof(st->p[0]) * (size_t)d->nstack);
		atomic_store(&n->stack, st);
		d->nstack = 0; /* the node owns the fds now */
		ovl_nf_set(n, OVL_NF_LOWER, st->n > 1 || st->p[0].layer != 0 || !d->fs->has_upper);
		ovl_nf_set(n, OVL_NF_OPAQUE,
			   (st->p[0].flags & OVL_PATH_OPAQUE) && st->p[0].layer == 0 &&
			       d->fs->has_upper);
		ovl_nf_set(n, OVL_NF_IMPURE, (st->p[0].flags & OVL_PATH_IMPURE) != 0);

	} else if (d->fs->index_fd >= 0 && d->top_layer > 0 && S_ISREG(d->top.st_mode) &&
		   d->top.st_nlink > 1 &&
		   !ovl_index_name(d->fs, d->top_dirfd, name, d->top_layer, hex, sizeof(hex))) {
		struct stat ist;

		/* a lower hard link copied up through another name lives in the index */
		indexed = fstatat(d->fs->index_fd, hex, &ist, AT_SYMLINK_NOFOLLOW) == 0;
		n->lower_nlink = (uint32_t)d->top.st_nlink;
		lower_name = true;
		if (!indexed && !(n->ihex = strdup(hex)))
			goto out_free;
	} else if (d->fs->index_fd >= 0 && d->have_origin && d->onlink > 1) {
		struct stat ist;

		/* a copied-up hard link: its upper inode is in the index */
		indexed = fstatat(d->fs->index_fd, d->ohex, &ist, AT_SYMLINK_NOFOLLOW) == 0;
		if (indexed)
			snprintf(hex, sizeof(hex), "%s", d->ohex);
		n->lower_nlink = (uint32_t)d->onlink;
	}
	ovl_nf_set(n, OVL_NF_INDEXED, indexed);
	if (d->top_has_redirect && !(n->redirect = strdup(d->top_redirect)))
		goto out_free;
	if (d->metacopy && !set_data(n, d))
		goto out_free;
	if (indexed && lower_name)
		hl_sync_data(d->fs, n, hex, d->top_dirfd, d->top_name, d->top_layer);
	n->type = d->top.st_mode & S_IFMT;
	n->key_dev = id->dev;
	n->key_ino = id->ino;
	n->key_salt = id->salt;
	n->ino = id->ino_shown;
	if (!S_ISDIR(n->type))
		ovl_nf_set(n, OVL_NF_LOWER,
			   d->top_layer != 0 || !d->fs->has_upper || id->dev != d->top.st_dev ||
			       id->ino != d->top.st_ino);
	if (ovl_node_set_loc(n, dir, name, d->top_layer, indexed ? hex : NULL))
		goto out_free;
	return n;

out_free:
	ovl_node_free(n);
	return NULL;
}

/*
 * A name of a lower hard link, seen before any of its names was copied up:
 * once another name's copy-up has put the file in the index, this name
 * reads and stats the index entry too (the kernel's inode is shared).
 */
/*
 * With metacopy=on the index entry may hold no data yet: then a name still
 * below reads its own lower file; once another name has copied the data
 * up, every name reads the index entry (under cu_lock or unpublished).
 */
static void hl_sync_data(struct ovl_fs *fs, struct ovl_node *n, const char *iname, int ldfd,
			 const char *lname, int layer)
{
	struct ovl_loc *data = atomic_load(&n->data);
	bool meta = ovl_get_ovl_xattr(fs, fs->index_fd, iname, "metacopy", NULL, 0) >= 0;

	if (!meta && data)
		ovl_node_drop_data(n);
	else if (meta && !data && ldfd >= 0)
		ovl_node_set_data(n, ldfd, lname, layer);
}

void ovl_hl_refresh(struct ovl_fs *fs, struct ovl_node *n)
{
	struct ovl_loc *loc;
	struct stat ist;

	if (!ovl_hl_group(fs, n) || ovl_nf(n, OVL_NF_DETACHED))
		return;
	if (ovl_nf(n, OVL_NF_INDEXED) && !atomic_load(&n->data))
		return; /* the common case: nothing can change any more */
	if (!ovl_nf(n, OVL_NF_INDEXED) &&
	    (!n->ihex || fstatat(fs->index_fd, n->ihex, &ist, AT_SYMLINK_NOFOLLOW) < 0))
		return;
	ovl_lock(&n->cu_lock);
	loc = ovl_loc_of(n);
	if (!ovl_nf(n, OVL_NF_INDEXED) && n->ihex && loc->parent && loc->layer != 0) {
		ovl_node_ref(fs, loc->parent);
		if (ovl_node_set_loc(n, loc->parent, loc->name, loc->layer, n->ihex) == 0)
			ovl_nf_set(n, OVL_NF_INDEXED, true);
		else
			ovl_node_unref(fs, loc->parent);
		hl_sync_data(fs, n, n->ihex, ovl_layer_dirfd(loc->parent, loc->layer), loc->name,
			     loc->layer);
	} else if (ovl_nf(n, OVL_NF_INDEXED) && loc->iname) {
		hl_sync_data(fs, n, loc->iname, -1, NULL, 0);
	}
	ovl_unlock(&n->cu_lock);
}

/* The attributes of a node as the union shows them. */
static int node_stat(struct ovl_fs *fs, struct ovl_node *n, struct lookup_data *d, struct stat *st)
{
	if (S_ISDIR(n->type) || (!ovl_nf(n, OVL_NF_INDEXED) && !atomic_load(&n->data))) {
		*st = d->top;
		st->st_ino = n->ino;
		if (S_ISDIR(n->type) && ovl_stack_of(n)->n > 1)
			st->st_nlink = 1;
		return 0;
	}
	return ovl_getattr(fs, n, st);
}

/*
 * An upper file with one link found under a name its node never had: the
 * inode number was freed and reused by a new file while the old node lived
 * on (the kernel may forget it later); sharing it would mix the two files.
 */
static bool reused_ino(struct lookup_data *d, struct ovl_node *n, struct ovl_node *dir,
		       const char *name)
{
	struct ovl_loc *l;
	bool known = false;

	if (S_ISDIR(n->type) || n->key_salt || d->top_layer != 0 || d->top.st_nlink != 1 ||
	    !d->fs->has_upper)
		return false;
	/* the common case without a lock: locations are published whole */
	l = ovl_loc_of(n);
	if (l->parent == dir && !strcmp(l->name, name))
		return false;
	ovl_lock(&n->cu_lock);
	for (l = n->aliases; l && !known; l = l->retired)
		known = l->parent == dir && !strcmp(l->name, name);
	ovl_unlock(&n->cu_lock);
	return !known;
}

int ovl_lookup(struct ovl_fs *fs, struct ovl_node *dir, const char *name, struct ovl_node **out,
	       struct stat *st)
{
	struct lookup_data *d;
	struct identity id;
	struct ovl_node *n, *got, *got_new = NULL;
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
	d->dstack = ovl_stack_of(dir);
	d->data_dirfd = -1;
	snprintf(d->name, sizeof(d->name), "%s", name);
	ret = lookup_stack(d);
	if (ret)
		goto out;
	ret = -ENOENT;
	if (!d->found)
		goto out;
	ret = -EIO;
	if (d->metacopy && d->data_dirfd < 0)
		goto out; /* a metacopy file whose data is gone */
	find_identity(d, dir, &id);
	/* already known (another name of a hard link, or a repeat lookup)? */
	n = ovl_node_find_get(fs, id.dev, id.ino, id.salt);
	if (n && (n->type != (d->top.st_mode & S_IFMT) || reused_ino(d, n, dir, name))) {
		/* the identity was reused by another object: forget the old node */
		ovl_node_unhash(fs, n);
		ovl_node_forget(fs, n, 1);
		n = NULL;
	}
	if (!n) {
		ret = -ENOMEM;
		n = new_node(d, dir, name, &id);
		if (!n)
			goto out;
		ovl_node_ref(fs, dir);
		got = ovl_node_insert(fs, n);
		if (got != n) {
			ovl_node_unref(fs, dir);
			ovl_node_free(n);
			n = got;
		} else {
			got_new = n;
		}
	}
	if (!S_ISDIR(n->type) && n != got_new)
		ovl_node_add_alias(fs, n, dir, name, d->top_layer);
	ovl_hl_refresh(fs, n);
	ret = node_stat(fs, n, d, st);
	if (ret) {
		ovl_node_forget(fs, n, 1);
		goto out;
	}
	*out = n;
out:
	close_stack(d);
	if (d->data_dirfd >= 0)
		close(d->data_dirfd);
	free(d);
	return ret;
}

/*
 * Does name exist in a lower layer of dir (the kernel's ovl_lower_positive)?
 * Decides whether removing or renaming away name needs a whiteout.
 */
bool ovl_lower_positive(struct ovl_fs *fs, struct ovl_node *dir, const char *name)
{
	struct ovl_stack *st = ovl_stack_of(dir);
	struct stat sb;
	int i;

	for (i = 0; i < st->n; i++) {
		if (fs->has_upper && st->p[i].layer == 0)
			continue;
		if (fstatat(st->p[i].fd, name, &sb, AT_SYMLINK_NOFOLLOW) < 0) {
			if (has_wh_marker(st->p[i].fd, name))
				return false;
			continue;
		}
		return !ovl_is_whiteout(&sb);
	}
	return false;
}
