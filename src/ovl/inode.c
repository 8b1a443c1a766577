/*
 * inode.c - the node table and per-node attributes.
 *
 * Nodes are found by identity (st_dev, st_ino of their top real object), so
 * every name of a hard-linked file is one node with one st_ino.  The table
 * is split into shards, each with its own lock; a node's nlookup, refs and
 * hash chain belong to its shard's lock.  Lock order: one shard lock at a
 * time, never a shard lock while calling into another node's shard.
 * A node lives while the kernel references it (nlookup) or the engine does
 * (refs: children hold their parent, open files hold their node).
 */
#define _GNU_SOURCE
#include "ovl.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static size_t key_hash(dev_t dev, ino_t ino)
{
	uint64_t h = (uint64_t)ino * 0x9e3779b97f4a7c15ULL ^ (uint64_t)dev * 0xc2b2ae3d27d4eb4fULL;

	return (size_t)(h ^ (h >> 29));
}

static struct ovl_node_shard *shard_of(struct ovl_fs *fs, dev_t dev, ino_t ino)
{
	return &fs->shards[key_hash(dev, ino) % OVL_NODE_SHARDS];
}

int ovl_nodes_init(struct ovl_fs *fs)
{
	int i;

	for (i = 0; i < OVL_NODE_SHARDS; i++) {
		struct ovl_node_shard *s = &fs->shards[i];

		pthread_mutex_init(&s->lock, NULL);
		s->nbuckets = 256;
		s->buckets = calloc(s->nbuckets, sizeof(*s->buckets));
		if (!s->buckets)
			return -ENOMEM;
	}
	return 0;
}

void ovl_node_free(struct ovl_node *node)
{
	int i;

	if (!node)
		return;
	for (i = 0; i < node->nstack; i++) {
		if (node->stack[i].fd >= 0)
			close(node->stack[i].fd);
	}
	free(node->stack);
	free(node->name);
	free(node);
}

void ovl_nodes_free(struct ovl_fs *fs)
{
	struct ovl_node *n, *next;
	size_t b;
	int i;

	for (i = 0; i < OVL_NODE_SHARDS; i++) {
		struct ovl_node_shard *s = &fs->shards[i];

		for (b = 0; s->buckets && b < s->nbuckets; b++) {
			for (n = s->buckets[b]; n; n = next) {
				next = n->hnext;
				ovl_node_free(n);
			}
		}
		free(s->buckets);
		s->buckets = NULL;
		pthread_mutex_destroy(&s->lock);
	}
}

size_t ovl_node_count(struct ovl_fs *fs)
{
	size_t total = 0;
	int i;

	for (i = 0; i < OVL_NODE_SHARDS; i++) {
		pthread_mutex_lock(&fs->shards[i].lock);
		total += fs->shards[i].count;
		pthread_mutex_unlock(&fs->shards[i].lock);
	}
	return total;
}

static struct ovl_node **bucket_of(struct ovl_node_shard *s, dev_t dev, ino_t ino)
{
	return &s->buckets[(key_hash(dev, ino) / OVL_NODE_SHARDS) % s->nbuckets];
}

static struct ovl_node *shard_find(struct ovl_node_shard *s, dev_t dev, ino_t ino)
{
	struct ovl_node *n;

	for (n = *bucket_of(s, dev, ino); n; n = n->hnext) {
		if (n->key_ino == ino && n->key_dev == dev)
			return n;
	}
	return NULL;
}

/* Double the buckets when chains grow long; failure just keeps them long. */
static void shard_grow(struct ovl_node_shard *s)
{
	size_t oldn = s->nbuckets, b;
	struct ovl_node **old = s->buckets, *n, *next, **slot;

	s->buckets = calloc(oldn * 2, sizeof(*s->buckets));
	if (!s->buckets) {
		s->buckets = old;
		return;
	}
	s->nbuckets = oldn * 2;
	for (b = 0; b < oldn; b++) {
		for (n = old[b]; n; n = next) {
			next = n->hnext;
			slot = bucket_of(s, n->key_dev, n->key_ino);
			n->hnext = *slot;
			*slot = n;
		}
	}
	free(old);
}

struct ovl_node *ovl_node_find_get(struct ovl_fs *fs, dev_t dev, ino_t ino)
{
	struct ovl_node_shard *s = shard_of(fs, dev, ino);
	struct ovl_node *n;

	pthread_mutex_lock(&s->lock);
	n = shard_find(s, dev, ino);
	if (n)
		n->nlookup++;
	pthread_mutex_unlock(&s->lock);
	return n;
}

/*
 * Publish a new node with one lookup reference.  If another thread
 * published the same identity first, that node gets the reference and the
 * caller must free its own copy (the return value differs from node).
 */
struct ovl_node *ovl_node_insert(struct ovl_fs *fs, struct ovl_node *node)
{
	struct ovl_node_shard *s = shard_of(fs, node->key_dev, node->key_ino);
	struct ovl_node *n, **slot;

	pthread_mutex_lock(&s->lock);
	n = shard_find(s, node->key_dev, node->key_ino);
	if (n) {
		n->nlookup++;
		pthread_mutex_unlock(&s->lock);
		return n;
	}
	if (s->count >= s->nbuckets * 2)
		shard_grow(s);
	slot = bucket_of(s, node->key_dev, node->key_ino);
	node->hnext = *slot;
	*slot = node;
	if (node->nlookup == 0)
		node->nlookup = 1;
	s->count++;
	pthread_mutex_unlock(&s->lock);
	return node;
}

/* Unhash and free node if nothing references it; called with its shard locked. */
static bool shard_release(struct ovl_node_shard *s, struct ovl_node *node)
{
	struct ovl_node **pp;

	if (node->nlookup || node->refs)
		return false;
	for (pp = bucket_of(s, node->key_dev, node->key_ino); *pp; pp = &(*pp)->hnext) {
		if (*pp == node) {
			*pp = node->hnext;
			s->count--;
			return true;
		}
	}
	abort(); /* a live node must be hashed */
}

static void node_drop(struct ovl_fs *fs, struct ovl_node *node, uint64_t nlookup, uint64_t refs)
{
	struct ovl_node_shard *s;
	struct ovl_node *parent;
	bool dead;

	while (node) {
		s = shard_of(fs, node->key_dev, node->key_ino);
		pthread_mutex_lock(&s->lock);
		if (node->nlookup < nlookup || node->refs < refs)
			abort(); /* reference count underflow: a protocol or engine bug */
		node->nlookup -= nlookup;
		node->refs -= refs;
		dead = node != fs->root && shard_release(s, node);
		pthread_mutex_unlock(&s->lock);
		if (!dead)
			return;
		/* the parent lost a child reference: continue outside any lock */
		parent = node->parent;
		ovl_node_free(node);
		node = parent;
		nlookup = 0;
		refs = 1;
	}
}

void ovl_node_forget(struct ovl_fs *fs, struct ovl_node *node, uint64_t nlookup)
{
	node_drop(fs, node, nlookup, 0);
}

void ovl_node_ref(struct ovl_fs *fs, struct ovl_node *node)
{
	struct ovl_node_shard *s = shard_of(fs, node->key_dev, node->key_ino);

	pthread_mutex_lock(&s->lock);
	node->refs++;
	pthread_mutex_unlock(&s->lock);
}

void ovl_node_unref(struct ovl_fs *fs, struct ovl_node *node)
{
	node_drop(fs, node, 0, 1);
}

/* A merged directory reports st_nlink 1, as the kernel does. */
int ovl_getattr(struct ovl_fs *fs, struct ovl_node *node, struct stat *st)
{
	int ret = ovl_real_stat(fs, node, st);

	if (ret)
		return ret;
	st->st_ino = node->ino;
	if (S_ISDIR(node->type) && node->nstack > 1)
		st->st_nlink = 1;
	return 0;
}

int ovl_readlink(struct ovl_fs *fs, struct ovl_node *node, char *buf, size_t size)
{
	ssize_t n;
	int dfd;

	(void)fs;
	if (!S_ISLNK(node->type))
		return -EINVAL;
	dfd = ovl_layer_dirfd(node->parent, node->layer);
	if (dfd < 0)
		return -ESTALE;
	n = readlinkat(dfd, node->name, buf, size);
	if (n < 0)
		return -errno;
	return (int)n;
}

/* access(2) against the union's attributes (root passes all but exec). */
int ovl_access(struct ovl_fs *fs, struct ovl_node *node, uid_t uid, gid_t gid, int mask)
{
	struct stat st;
	int ret = ovl_getattr(fs, node, &st);
	mode_t bits;

	if (ret || mask == F_OK)
		return ret;
	if (uid == 0) {
		if ((mask & X_OK) && !S_ISDIR(st.st_mode) && !(st.st_mode & 0111))
			return -EACCES;
		return 0;
	}
	if (st.st_uid == uid)
		bits = (st.st_mode >> 6) & 7;
	else if (st.st_gid == gid)
		bits = (st.st_mode >> 3) & 7;
	else
		bits = st.st_mode & 7;
	return ((mode_t)mask & ~bits) ? -EACCES : 0;
}
