/*
 * file.c - open files: the real file behind a node, opened at OPEN time.
 * Reads go to the real file of the top layer that has the name.
 */
#define _GNU_SOURCE
#include "ovl.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

/* flags that make sense when re-opening the real file */
#define OVL_OPEN_KEEP (O_ACCMODE | O_APPEND | O_NONBLOCK | O_DIRECT | O_SYNC | O_DSYNC | O_NOATIME)

int ovl_open(struct ovl_fs *fs, struct ovl_node *node, int flags, struct ovl_file **out)
{
	struct ovl_file *f;
	int dfd, fd;

	if (S_ISDIR(node->type))
		return -EISDIR;
	if (!fs->has_upper && ((flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC)))
		return -EROFS;
	dfd = ovl_layer_dirfd(node->parent, node->layer);
	if (dfd < 0)
		return -ESTALE;
	fd = openat(dfd, node->name, (flags & OVL_OPEN_KEEP) | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
	if (fd < 0 && errno == EPERM && (flags & O_NOATIME))
		fd = openat(dfd, node->name,
			    (flags & OVL_OPEN_KEEP & ~O_NOATIME) | O_NOFOLLOW | O_CLOEXEC |
				O_NOCTTY);
	if (fd < 0)
		return -errno;
	f = calloc(1, sizeof(*f));
	if (!f) {
		close(fd);
		return -ENOMEM;
	}
	f->fd = fd;
	f->node = node;
	ovl_node_ref(fs, node);
	*out = f;
	return 0;
}

ssize_t ovl_read(struct ovl_fs *fs, struct ovl_file *f, char *buf, size_t size, off_t off)
{
	ssize_t n;

	(void)fs;
	n = pread(f->fd, buf, size, off);
	return n < 0 ? -errno : n;
}

void ovl_release(struct ovl_fs *fs, struct ovl_file *f)
{
	close(f->fd);
	ovl_node_unref(fs, f->node);
	free(f);
}
