/*
 * passthrough.c - FUSE passthrough for open files: reads, writes and mmap
 * go from the kernel straight to the real file (FUSE 7.40, Linux 6.9+).
 *
 * The kernel allows one backing file per inode at a time, and no mixing of
 * passthrough and cached opens on one inode.  So each node has an entry
 * here counting its passthrough opens (one refcounted backing id, for the
 * real file they share) and its cached opens.  An open that would conflict
 * cannot be passthrough, and the kernel refuses anything but passthrough on an
 * inode that has a backing file.  So a file that a copy-up may still move
 * (a lower file, or a metacopy file's lower data, in a writable union) is
 * served through the daemon with the page cache, and passthrough is used
 * for upper files and for read-only unions.  An open of an inode that has a
 * backing file always gets that backing file.
 * Entries live in shards keyed by node; one shard lock at a time.
 */
#define _GNU_SOURCE
#include "stratafs.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>

#define PT_SHARDS 64

struct pt_entry {
	struct pt_entry *next;
	const struct ovl_node *node;
	int backing_id; /* valid while npt > 0 */
	dev_t dev;	/* the backing file */
	ino_t ino;
	unsigned int npt; /* passthrough opens */
	unsigned int ncached;
};

struct pt_shard {
	pthread_mutex_t lock;
	struct pt_entry *head;
};

struct pt_table {
	struct pt_shard shards[PT_SHARDS];
};

struct pt_table *pt_table_new(void)
{
	struct pt_table *t = calloc(1, sizeof(*t));
	int i;

	for (i = 0; t && i < PT_SHARDS; i++)
		pthread_mutex_init(&t->shards[i].lock, NULL);
	return t;
}

void pt_table_free(struct pt_table *t)
{
	struct pt_entry *e, *next;
	int i;

	for (i = 0; t && i < PT_SHARDS; i++) {
		for (e = t->shards[i].head; e; e = next) {
			next = e->next;
			free(e);
		}
		pthread_mutex_destroy(&t->shards[i].lock);
	}
	free(t);
}

static struct pt_shard *shard_of(struct pt_table *t, const struct ovl_node *node)
{
	uintptr_t h = (uintptr_t)node;

	return &t->shards[((h >> 4) ^ (h >> 12)) % PT_SHARDS];
}

static struct pt_entry *find_or_add(struct pt_shard *sh, const struct ovl_node *node)
{
	struct pt_entry *e;

	for (e = sh->head; e; e = e->next) {
		if (e->node == node)
			return e;
	}
	e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	e->node = node;
	e->next = sh->head;
	sh->head = e;
	return e;
}

static void drop_if_unused(struct pt_shard *sh, struct pt_entry *e)
{
	struct pt_entry **pp;

	if (e->npt || e->ncached)
		return;
	for (pp = &sh->head; *pp; pp = &(*pp)->next) {
		if (*pp == e) {
			*pp = e->next;
			free(e);
			return;
		}
	}
}

/*
 * Decide how an open file is served and fill o->open_flags/backing_id.
 * Returns the io mode for pt_release().
 */
enum pt_mode pt_open(struct sfs *s, const struct ovl_node *node, int fd, bool allow,
		     struct fw_open *o)
{
	struct pt_shard *sh = shard_of(s->pt, node);
	enum pt_mode mode = PT_NONE;
	struct pt_entry *e;
	struct stat st;
	int id;

	if (!s->passthrough || fstat(fd, &st) < 0)
		return PT_NONE;
	pthread_mutex_lock(&sh->lock);
	e = find_or_add(sh, node);
	if (!e) {
		mode = PT_NONE;
		goto out;
	}
	if (e->npt) {
		/*
		 * The kernel takes nothing but passthrough to the inode's backing
		 * file now.  A different real file here means the name was reused
		 * under a stale node: the backing file is the node's own object.
		 */
		e->npt++;
		mode = PT_PASSTHROUGH;
	} else if (!e->npt && !e->ncached && allow) {
		id = fw_backing_open(s->se, fd);
		if (id > 0) {
			e->backing_id = id;
			e->dev = st.st_dev;
			e->ino = st.st_ino;
			e->npt = 1;
			mode = PT_PASSTHROUGH;
		} else {
			/* the kernel refused this backing file: cached from now on */
			e->ncached++;
			mode = PT_CACHED;
		}
	} else if (!e->npt) {
		e->ncached++;
		mode = PT_CACHED;
	}
	if (mode == PT_PASSTHROUGH) {
		o->open_flags |= FW_FOPEN_PASSTHROUGH;
		o->open_flags &= ~FW_FOPEN_KEEP_CACHE;
		o->backing_id = e->backing_id;
	}
	drop_if_unused(sh, e);
out:
	pthread_mutex_unlock(&sh->lock);
	return mode;
}

void pt_release(struct sfs *s, const struct ovl_node *node, enum pt_mode mode)
{
	struct pt_shard *sh = shard_of(s->pt, node);
	struct pt_entry *e;
	int id = -1;

	if (mode != PT_PASSTHROUGH && mode != PT_CACHED)
		return;
	pthread_mutex_lock(&sh->lock);
	for (e = sh->head; e && e->node != node; e = e->next)
		;
	if (!e)
		abort(); /* a release without its open: an accounting bug */
	if (mode == PT_PASSTHROUGH && --e->npt == 0)
		id = e->backing_id;
	if (mode == PT_CACHED)
		e->ncached--;
	drop_if_unused(sh, e);
	pthread_mutex_unlock(&sh->lock);
	if (id > 0)
		fw_backing_close(s->se, id);
}
