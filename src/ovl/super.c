/*
 * super.c - build the per-mount context from a parsed configuration: open
 * and check every layer, work out the filesystems they live on (for xino),
 * and create the root node.  Also statfs.
 */
#define _GNU_SOURCE
#include "ovl.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int fail(char *err, size_t errlen, int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return code;
}

static int config_copy(struct ovl_config *dst, const struct ovl_config *src)
{
	int i, n = src->nlower + src->ndata;

	*dst = *src;
	dst->lowerdirs = calloc((size_t)n, sizeof(char *));
	dst->upperdir = src->upperdir ? strdup(src->upperdir) : NULL;
	dst->workdir = src->workdir ? strdup(src->workdir) : NULL;
	if (!dst->lowerdirs)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		dst->lowerdirs[i] = strdup(src->lowerdirs[i]);
		if (!dst->lowerdirs[i])
			return -ENOMEM;
	}
	return 0;
}

static int open_layer(struct ovl_fs *fs, int idx, const char *path, const char *what, char *err,
		      size_t errlen)
{
	struct ovl_layer *l = &fs->layers[idx];
	struct stat st;
	int fd;

	l->fd = -1;
	l->idx = idx;
	l->path = strdup(path);
	if (!l->path)
		return -ENOMEM;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return fail(err, errlen, -errno, "cannot open %s '%s': %s", what, path,
			    strerror(errno));
	if (fstat(fd, &st) < 0 || !S_ISDIR(st.st_mode)) {
		close(fd);
		return fail(err, errlen, -ENOTDIR, "%s '%s' is not a directory", what, path);
	}
	l->fd = fd;
	l->dev = st.st_dev;
	return 0;
}

/* Give each distinct filesystem an fsid; the upper (or top) layer's is 0. */
static void assign_fsids(struct ovl_fs *fs)
{
	int i, j;

	fs->nfs = 0;
	for (i = 0; i < fs->nlayers; i++) {
		fs->layers[i].fsid = -1;
		for (j = 0; j < i; j++) {
			if (fs->layers[j].dev == fs->layers[i].dev) {
				fs->layers[i].fsid = fs->layers[j].fsid;
				break;
			}
		}
		if (fs->layers[i].fsid < 0)
			fs->layers[i].fsid = fs->nfs++;
	}
	fs->samefs = fs->nfs == 1;
	fs->xino_bits = 0;
	if (!fs->samefs && fs->config.xino != OVL_XINO_OFF) {
		/* enough bits for every fsid, plus one as the kernel keeps */
		while ((1 << fs->xino_bits) < fs->nfs)
			fs->xino_bits++;
		fs->xino_bits++;
	}
}

static int make_root(struct ovl_fs *fs)
{
	struct ovl_node *root = calloc(1, sizeof(*root));
	struct stat st;
	int i, n = 0;

	if (!root)
		return -ENOMEM;
	root->stack = calloc((size_t)fs->nmerge, sizeof(*root->stack));
	root->name = strdup("");
	if (!root->stack || !root->name) {
		ovl_node_free(root);
		return -ENOMEM;
	}
	for (i = 0; i < fs->nmerge; i++) {
		root->stack[n].layer = i;
		root->stack[n].fd = dup(fs->layers[i].fd);
		if (root->stack[n].fd < 0) {
			root->nstack = n;
			ovl_node_free(root);
			return -errno;
		}
		n++;
	}
	root->nstack = n;
	if (fstat(root->stack[0].fd, &st) < 0) {
		ovl_node_free(root);
		return -errno;
	}
	root->type = S_IFDIR;
	root->layer = 0;
	root->key_dev = st.st_dev;
	root->key_ino = st.st_ino;
	root->ino = ovl_map_ino(fs, 0, st.st_ino);
	root->nlookup = 1; /* the kernel's implicit reference, never dropped */
	fs->root = ovl_node_insert(fs, root);
	return 0;
}

int ovl_fs_new(const struct ovl_config *cfg, struct ovl_fs **out, char *err, size_t errlen)
{
	struct ovl_fs *fs = calloc(1, sizeof(*fs));
	int i, ret, nlower, base;

	*err = '\0';
	if (!fs)
		return -ENOMEM;
	ret = config_copy(&fs->config, cfg);
	if (ret)
		goto out_free;
	ret = ovl_nodes_init(fs);
	if (ret)
		goto out_free;
	nlower = cfg->nlower + cfg->ndata;
	fs->has_upper = cfg->upperdir != NULL;
	base = fs->has_upper ? 1 : 0;
	fs->nlayers = nlower + base;
	fs->nmerge = cfg->nlower + base;
	fs->layers = calloc((size_t)fs->nlayers, sizeof(*fs->layers));
	if (!fs->layers) {
		ret = -ENOMEM;
		goto out_free;
	}
	for (i = 0; i < fs->nlayers; i++)
		fs->layers[i].fd = -1;
	strcpy(fs->xprefix, cfg->userxattr ? "user.overlay." : "trusted.overlay.");
	fs->xprefix_len = strlen(fs->xprefix);
	if (fs->has_upper) {
		ret = open_layer(fs, 0, cfg->upperdir, "upper layer", err, errlen);
		if (ret)
			goto out_free;
		fs->layers[0].is_upper = true;
	}
	for (i = 0; i < nlower; i++) {
		ret = open_layer(fs, base + i, cfg->lowerdirs[i], "lower layer", err, errlen);
		if (ret)
			goto out_free;
		fs->layers[base + i].data_only = i >= cfg->nlower;
	}
	assign_fsids(fs);
	ret = make_root(fs);
	if (ret)
		goto out_free;
	*out = fs;
	return 0;

out_free:
	if (!*err)
		snprintf(err, errlen, "cannot set up the union: %s", strerror(-ret));
	ovl_fs_free(fs);
	return ret;
}

void ovl_fs_free(struct ovl_fs *fs)
{
	int i;

	if (!fs)
		return;
	ovl_nodes_free(fs);
	for (i = 0; fs->layers && i < fs->nlayers; i++) {
		if (fs->layers[i].fd >= 0)
			close(fs->layers[i].fd);
		free(fs->layers[i].path);
	}
	free(fs->layers);
	ovl_config_free(&fs->config);
	free(fs);
}

/* statfs of the upper layer, or of the top lower layer when read-only. */
int ovl_statfs(struct ovl_fs *fs, struct ovl_node *node, struct statvfs *sv)
{
	(void)node;
	if (fstatvfs(fs->layers[0].fd, sv) < 0)
		return -errno;
	return 0;
}
