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

struct ovl_node *ovl_node_alloc(void)
{
	return calloc(1, sizeof(struct ovl_node));
}

/*
 * A location with its name (and index name) in the same block: one
 * allocation per node rather than three.  Freed with free().
 */
struct ovl_loc *ovl_loc_new(const char *name, const char *iname)
{
	size_t nlen = strlen(name) + 1, ilen = iname ? strlen(iname) + 1 : 0;
	struct ovl_loc *l = calloc(1, sizeof(*l) + nlen + ilen);

	if (!l)
		return NULL;
	memcpy(l->name, name, nlen);
	if (iname) {
		l->iname = l->name + nlen;
		memcpy(l->iname, iname, ilen);
	}
	l->dirfd = -1;
	return l;
}

static void free_stacks(struct ovl_stack *st)
{
	struct ovl_stack *next;
	int i;

	/* the current stack owns the fds; older ones only their memory */
	for (i = 0; st && i < st->n; i++) {
		if (st->p[i].fd >= 0)
			close(st->p[i].fd);
	}
	for (; st; st = next) {
		next = st->retired;
		free(st);
	}
}

static void free_data_locs(struct ovl_loc *l)
{
	struct ovl_loc *next;

	for (; l; l = next) {
		next = l->retired;
		if (l->dirfd >= 0)
			close(l->dirfd);
		free(l);
	}
}

/* Free a node; its parents (current and former) are returned unreferenced in *parents. */
static void node_free_collect(struct ovl_node *node, struct ovl_node **first,
			      struct ovl_loc **extra)
{
	struct ovl_loc *loc = atomic_load(&node->loc), *next;

	*first = NULL;
	*extra = NULL;
	free_stacks(atomic_load(&node->stack));
	if (node->aliases) {
		struct ovl_loc *a = node->aliases;

		while (a->retired)
			a = a->retired;
		a->retired = loc ? loc->retired : NULL;
		if (loc)
			loc->retired = node->aliases;
		else
			*extra = node->aliases;
		node->aliases = NULL;
	}
	if (loc) {
		*first = loc->parent;
		*extra = loc->retired;
		if (loc->dirfd >= 0)
			close(loc->dirfd); /* a pinned object with no name left */
		free(loc);
	}
	free_data_locs(atomic_load(&node->data));
	free_data_locs(node->old_data);
	free(node->redirect);
	free(node->ihex);
	free(node);
	(void)next;
}

void ovl_node_free(struct ovl_node *node)
{
	struct ovl_node *parent;
	struct ovl_loc *extra, *next;

	if (!node)
		return;
	node_free_collect(node, &parent, &extra);
	for (; extra; extra = next) {
		next = extra->retired;
		free(extra);
	}
}

int ovl_node_set_loc(struct ovl_node *node, struct ovl_node *parent, const char *name, int layer,
		     const char *iname)
{
	struct ovl_loc *loc = ovl_loc_new(name, iname);

	if (!loc)
		return -ENOMEM;
	loc->parent = parent;
	loc->layer = layer;
	loc->retired = atomic_load(&node->loc);
	atomic_store_explicit(&node->loc, loc, memory_order_release);
	return 0;
}

/*
 * A metacopy file's data is read from lname in the dir ldfd (a lower
 * layer's; duplicated, the node owns the copy).  Under cu_lock, or before
 * the node is published.
 */
int ovl_node_set_data(struct ovl_node *node, int ldfd, const char *lname, int layer)
{
	struct ovl_loc *data = ovl_loc_new(lname, NULL);

	if (!data)
		return -ENOMEM;
	data->dirfd = fcntl(ldfd, F_DUPFD_CLOEXEC, 0);
	if (data->dirfd < 0) {
		free(data);
		return -errno;
	}
	data->layer = layer;
	atomic_store(&node->data, data);
	return 0;
}

/* The data is in the node's own object now: retire the data location (cu_lock). */
void ovl_node_drop_data(struct ovl_node *node)
{
	struct ovl_loc *data = atomic_load(&node->data);

	if (!data)
		return;
	data->retired = node->old_data;
	node->old_data = data;
	atomic_store(&node->data, NULL);
}

/* The node's last name is gone: its object is reached through fd from now on. */
int ovl_node_pin(struct ovl_node *node, int fd)
{
	struct ovl_loc *loc = ovl_loc_new("", NULL);

	if (!loc)
		return -ENOMEM;
	loc->layer = ovl_loc_of(node)->layer;
	loc->dirfd = fd;
	loc->retired = atomic_load(&node->loc);
	ovl_nf_set(node, OVL_NF_DETACHED, true);
	atomic_store_explicit(&node->loc, loc, memory_order_release);
	return 0;
}

int ovl_node_set_stack(struct ovl_node *node, struct ovl_stack *st)
{
	st->retired = atomic_load(&node->stack);
	atomic_store_explicit(&node->stack, st, memory_order_release);
	return 0;
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

static struct ovl_node *shard_find(struct ovl_node_shard *s, dev_t dev, ino_t ino, uint64_t salt)
{
	struct ovl_node *n;

	for (n = *bucket_of(s, dev, ino); n; n = n->hnext) {
		if (n->key_ino == ino && n->key_dev == dev && n->key_salt == salt &&
		    ovl_nf(n, OVL_NF_HASHED))
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

struct ovl_node *ovl_node_find_get(struct ovl_fs *fs, dev_t dev, ino_t ino, uint64_t salt)
{
	struct ovl_node_shard *s = shard_of(fs, dev, ino);
	struct ovl_node *n;

	pthread_mutex_lock(&s->lock);
	n = shard_find(s, dev, ino, salt);
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
	n = shard_find(s, node->key_dev, node->key_ino, node->key_salt);
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
	ovl_nf_set(node, OVL_NF_HASHED, true);
	if (node->nlookup == 0)
		node->nlookup = 1;
	s->count++;
	pthread_mutex_unlock(&s->lock);
	return node;
}

static void shard_unlink(struct ovl_node_shard *s, struct ovl_node *node)
{
	struct ovl_node **pp;

	for (pp = bucket_of(s, node->key_dev, node->key_ino); *pp; pp = &(*pp)->hnext) {
		if (*pp == node) {
			*pp = node->hnext;
			s->count--;
			return;
		}
	}
	abort(); /* a node in the table must be on its chain */
}

/* Unhash node if nothing references it; called with its shard locked. */
static bool shard_release(struct ovl_node_shard *s, struct ovl_node *node)
{
	if (node->nlookup || node->refs)
		return false;
	shard_unlink(s, node);
	return true;
}

/*
 * Lock the shard a published node lives in.  Its key may change under
 * ovl_node_rekey() (which holds both shards): retry until the shard locked
 * is the one of the key read under that lock.
 */
static struct ovl_node_shard *lock_node_shard(struct ovl_fs *fs, struct ovl_node *node)
{
	struct ovl_node_shard *s;

	for (;;) {
		s = shard_of(fs, __atomic_load_n(&node->key_dev, __ATOMIC_RELAXED),
			     __atomic_load_n(&node->key_ino, __ATOMIC_RELAXED));
		pthread_mutex_lock(&s->lock);
		if (s == shard_of(fs, node->key_dev, node->key_ino))
			return s;
		pthread_mutex_unlock(&s->lock);
	}
}

/*
 * A node's identity changed (a lower hard link broken by its copy-up is a
 * file of its own, found by its upper inode from now on): move it to the
 * chain of its new key.  A stale node known under that key is unhashed.
 */
void ovl_node_rekey(struct ovl_fs *fs, struct ovl_node *node, dev_t dev, ino_t ino, uint64_t salt)
{
	struct ovl_node_shard *a, *b, *first, *second;
	struct ovl_node *other, **slot;

	for (;;) {
		a = shard_of(fs, __atomic_load_n(&node->key_dev, __ATOMIC_RELAXED),
			     __atomic_load_n(&node->key_ino, __ATOMIC_RELAXED));
		b = shard_of(fs, dev, ino);
		first = a < b ? a : b;
		second = a < b ? b : a;
		pthread_mutex_lock(&first->lock);
		if (second != first)
			pthread_mutex_lock(&second->lock);
		if (a == shard_of(fs, node->key_dev, node->key_ino))
			break;
		if (second != first)
			pthread_mutex_unlock(&second->lock);
		pthread_mutex_unlock(&first->lock);
	}
	shard_unlink(a, node);
	other = shard_find(b, dev, ino, salt);
	if (other)
		ovl_nf_set(other, OVL_NF_HASHED, false);
	__atomic_store_n(&node->key_dev, dev, __ATOMIC_RELAXED);
	__atomic_store_n(&node->key_ino, ino, __ATOMIC_RELAXED);
	node->key_salt = salt;
	if (b->count >= b->nbuckets * 2)
		shard_grow(b);
	slot = bucket_of(b, dev, ino);
	node->hnext = *slot;
	*slot = node;
	b->count++;
	if (second != first)
		pthread_mutex_unlock(&second->lock);
	pthread_mutex_unlock(&first->lock);
}

/*
 * A node of one name (key_salt) got another name: findable under the new
 * one only.  The salt is not part of the hash, so the node stays on its
 * chain; a stale node already known under the new name is unhashed.
 */
void ovl_node_resalt(struct ovl_fs *fs, struct ovl_node *node, uint64_t salt)
{
	struct ovl_node_shard *s = lock_node_shard(fs, node);
	struct ovl_node *other;

	if (node->key_salt) {
		other = shard_find(s, node->key_dev, node->key_ino, salt);
		if (other && other != node)
			ovl_nf_set(other, OVL_NF_HASHED, false);
		node->key_salt = salt;
	}
	pthread_mutex_unlock(&s->lock);
}

/*
 * The index entry iname is about to go (its union link count is 0): every
 * open node that reaches its object through it keeps the object with an
 * O_PATH fd, as the kernel's shared inode would.  A walk over the whole
 * table, but only when the last name of an indexed hard link goes.
 */
void ovl_nodes_pin_index(struct ovl_fs *fs, const char *iname)
{
	struct ovl_node **found = NULL, **grown, *n;
	size_t nfound = 0, cap = 0, b, i;
	struct ovl_loc *loc;
	int k, fd;

	for (k = 0; k < OVL_NODE_SHARDS; k++) {
		struct ovl_node_shard *s = &fs->shards[k];

		pthread_mutex_lock(&s->lock);
		for (b = 0; b < s->nbuckets; b++) {
			for (n = s->buckets[b]; n; n = n->hnext) {
				loc = ovl_loc_of(n);
				if (!n->refs || !loc || !loc->iname || strcmp(loc->iname, iname))
					continue;
				if (nfound == cap) {
					cap = cap ? cap * 2 : 8;
					grown = realloc(found, cap * sizeof(*found));
					if (!grown)
						continue;
					found = grown;
				}
				n->refs++;
				found[nfound++] = n;
			}
		}
		pthread_mutex_unlock(&s->lock);
	}
	for (i = 0; i < nfound; i++) {
		n = found[i];
		fd = openat(fs->index_fd, iname, O_PATH | O_NOFOLLOW | O_CLOEXEC);
		ovl_lock(&n->cu_lock);
		loc = ovl_loc_of(n);
		if (fd >= 0 && !ovl_nf(n, OVL_NF_DETACHED) && loc->iname &&
		    !strcmp(loc->iname, iname) && ovl_node_pin(n, fd) == 0)
			fd = -1;
		ovl_unlock(&n->cu_lock);
		if (fd >= 0)
			close(fd);
		ovl_node_unref(fs, n);
	}
	free(found);
}

void ovl_node_unhash(struct ovl_fs *fs, struct ovl_node *node)
{
	struct ovl_node_shard *s = lock_node_shard(fs, node);

	ovl_nf_set(node, OVL_NF_HASHED, false);
	pthread_mutex_unlock(&s->lock);
}

static void node_drop(struct ovl_fs *fs, struct ovl_node *node, uint64_t nlookup, uint64_t refs)
{
	struct ovl_node_shard *s;
	struct ovl_node *parent;
	struct ovl_loc *extra, *next;
	bool dead;

	while (node) {
		s = lock_node_shard(fs, node);
		if (node->nlookup < nlookup || node->refs < refs)
			abort(); /* reference count underflow: a protocol or engine bug */
		node->nlookup -= nlookup;
		node->refs -= refs;
		dead = node != fs->root && shard_release(s, node);
		pthread_mutex_unlock(&s->lock);
		if (!dead)
			return;
		/* the parents lost a child reference: continue outside any lock */
		node_free_collect(node, &parent, &extra);
		for (; extra; extra = next) {
			next = extra->retired;
			if (extra->parent)
				ovl_node_unref(fs, extra->parent);
			free(extra);
		}
		node = parent;
		nlookup = 0;
		refs = 1;
	}
}

void ovl_node_forget(struct ovl_fs *fs, struct ovl_node *node, uint64_t nlookup)
{
	node_drop(fs, node, nlookup, 0);
}

bool ovl_node_in_use(struct ovl_fs *fs, struct ovl_node *node)
{
	struct ovl_node_shard *s = lock_node_shard(fs, node);
	bool used;

	used = node->refs > 0;
	pthread_mutex_unlock(&s->lock);
	return used;
}

void ovl_node_ref(struct ovl_fs *fs, struct ovl_node *node)
{
	struct ovl_node_shard *s = lock_node_shard(fs, node);

	node->refs++;
	pthread_mutex_unlock(&s->lock);
}

void ovl_node_unref(struct ovl_fs *fs, struct ovl_node *node)
{
	node_drop(fs, node, 0, 1);
}

static bool same_name(const struct ovl_loc *l, const struct ovl_node *dir, const char *name)
{
	return l->parent == dir && !strcmp(l->name, name);
}

void ovl_node_add_alias(struct ovl_fs *fs, struct ovl_node *node, struct ovl_node *dir,
			const char *name, int layer)
{
	struct ovl_loc *a;

	ovl_lock(&node->cu_lock);
	if (same_name(ovl_loc_of(node), dir, name))
		goto out;
	for (a = node->aliases; a; a = a->retired) {
		if (same_name(a, dir, name))
			goto out;
	}
	a = ovl_loc_new(name, NULL);
	if (!a)
		goto out;
	a->parent = dir;
	a->layer = layer;
	ovl_node_ref(fs, dir);
	a->retired = node->aliases;
	node->aliases = a;
out:
	ovl_unlock(&node->cu_lock);
}

/* Take the alias (dir, name) off the list; returns it (caller frees) or NULL. */
static struct ovl_loc *take_alias(struct ovl_node *node, const struct ovl_node *dir,
				  const char *name)
{
	struct ovl_loc **pp, *a;

	for (pp = &node->aliases; (a = *pp); pp = &a->retired) {
		if (same_name(a, dir, name)) {
			*pp = a->retired;
			a->retired = NULL;
			return a;
		}
	}
	return NULL;
}

static void free_alias(struct ovl_fs *fs, struct ovl_loc *a)
{
	if (!a)
		return;
	ovl_node_unref(fs, a->parent);
	free(a);
}

/* (dir, name) is gone: if it was the node's location, move to another name. */
void ovl_node_drop_name(struct ovl_fs *fs, struct ovl_node *node, struct ovl_node *dir,
			const char *name)
{
	struct ovl_loc *loc, *a, *gone;

	ovl_lock(&node->cu_lock);
	gone = take_alias(node, dir, name);
	loc = ovl_loc_of(node);
	a = node->aliases;
	if (!gone && a && same_name(loc, dir, name)) {
		node->aliases = a->retired;
		/* the alias's parent reference moves to the new location */
		if (ovl_node_set_loc(node, a->parent, a->name, fs->has_upper ? 0 : a->layer,
				     loc->iname) == 0) {
			free(a);
		} else {
			a->retired = node->aliases;
			node->aliases = a;
		}
	}
	ovl_unlock(&node->cu_lock);
	free_alias(fs, gone);
}

int ovl_node_move_name(struct ovl_fs *fs, struct ovl_node *node, struct ovl_node *olddir,
		       const char *oldname, struct ovl_node *newdir, const char *newname)
{
	struct ovl_loc *alias, *old = NULL;
	int ret = 0;

	ovl_lock(&node->cu_lock);
	alias = take_alias(node, olddir, oldname);
	if (alias) {
		/* another name of a hard link moved: the location stays, the alias follows */
		old = alias;
		alias = ovl_loc_new(newname, NULL);
		if (!alias) {
			old->retired = node->aliases;
			node->aliases = old;
			old = NULL;
			ret = -ENOMEM;
			goto out;
		}
		ovl_node_ref(fs, newdir);
		alias->parent = newdir;
		alias->layer = 0;
		alias->retired = node->aliases;
		node->aliases = alias;
		goto out;
	}
	ovl_node_ref(fs, newdir);
	ret = ovl_node_set_loc(node, newdir, newname, 0, ovl_loc_of(node)->iname);
	if (ret)
		ovl_node_unref(fs, newdir);
out:
	ovl_unlock(&node->cu_lock);
	free_alias(fs, old);
	return ret;
}

/*
 * overlay.nlink of an indexed hard link: the union's st_nlink as a
 * difference to the upper ("U+n") or lower ("L+n") inode's, as the kernel
 * keeps it across mounts.
 */
int ovl_set_nlink(struct ovl_fs *fs, struct ovl_node *node, nlink_t nlink, char base)
{
	const char *name;
	char buf[32];
	struct stat st;
	long diff;
	int dfd, ret;

	ret = ovl_real_at(fs, node, &dfd, &name);
	if (ret)
		return ret;
	if (base == 'U') {
		if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			return -errno;
		diff = (long)nlink - (long)st.st_nlink;
	} else {
		diff = (long)nlink - (long)node->lower_nlink;
	}
	snprintf(buf, sizeof(buf), "%c%+ld", base, diff);
	return ovl_set_ovl_xattr(fs, dfd, name, "nlink", buf, strlen(buf));
}

/*
 * Before a link, unlink or rename changes the names of an indexed file
 * whose union link count is nlink (the kernel's ovl_nlink_start()):
 * overlay.nlink counts from the upper inode, which gains or loses the name
 * in the same syscall as the union, so the count is right whether or not a
 * crash comes before it.
 */
int ovl_nlink_start(struct ovl_fs *fs, struct ovl_node *node, nlink_t nlink)
{
	return ovl_set_nlink(fs, node, nlink, 'U');
}

void ovl_union_nlink(struct ovl_fs *fs, struct ovl_node *node, struct stat *st)
{
	const char *name;
	char buf[32], base;
	ssize_t n;
	long diff;
	int dfd;

	if (ovl_real_at(fs, node, &dfd, &name))
		return;
	n = ovl_get_ovl_xattr(fs, dfd, name, "nlink", buf, sizeof(buf));
	if (n < 0 || ovl_nlink_parse(buf, (size_t)n, &base, &diff))
		return;
	if (base == 'U' && (long)st->st_nlink + diff > 0)
		st->st_nlink = (nlink_t)((long)st->st_nlink + diff);
	else if (base == 'L' && node->lower_nlink && (long)node->lower_nlink + diff > 0)
		st->st_nlink = (nlink_t)((long)node->lower_nlink + diff);
}

/* A merged directory reports st_nlink 1, as the kernel does. */
int ovl_getattr(struct ovl_fs *fs, struct ovl_node *node, struct stat *st)
{
	ovl_hl_refresh(fs, node);
	return ovl_getattr_locked(fs, node, st);
}

/* ovl_getattr() for a caller holding node->cu_lock (no refresh). */
int ovl_getattr_locked(struct ovl_fs *fs, struct ovl_node *node, struct stat *st)
{
	int ret;

	ret = ovl_real_stat(fs, node, st);

	if (ret)
		return ret;
	st->st_ino = node->ino;
	if (S_ISDIR(node->type) && ovl_stack_of(node)->n > 1)
		st->st_nlink = 1;
	else if (ovl_nf(node, OVL_NF_INDEXED))
		ovl_union_nlink(fs, node, st);
	if (atomic_load(&node->data)) {
		/* a metacopy file: its blocks are those of the data below */
		const char *dname;
		struct stat dst;
		int dfd;

		if (ovl_data_at(fs, node, &dfd, &dname) == 0 &&
		    fstatat(dfd, dname, &dst, AT_SYMLINK_NOFOLLOW) == 0)
			st->st_blocks = dst.st_blocks;
	}
	return 0;
}

int ovl_readlink(struct ovl_fs *fs, struct ovl_node *node, char *buf, size_t size)
{
	const char *name;
	ssize_t n;
	int dfd, ret;

	if (!S_ISLNK(node->type))
		return -EINVAL;
	ret = ovl_real_at(fs, node, &dfd, &name);
	if (ret)
		return ret;
	n = readlinkat(dfd, name, buf, size);
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

static int set_times(int dfd, const char *name, int flags, const struct ovl_setattr *sa)
{
	struct timespec ts[2] = {{.tv_nsec = UTIME_OMIT}, {.tv_nsec = UTIME_OMIT}};

	if (!(sa->valid & (OVL_SET_ATIME | OVL_SET_MTIME)))
		return 0;
	if (sa->valid & OVL_SET_ATIME)
		ts[0] = sa->atime;
	if (sa->valid & OVL_SET_MTIME)
		ts[1] = sa->mtime;
	return utimensat(dfd, name, ts, flags & AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
}

static int set_size(int dfd, const char *name, const struct ovl_setattr *sa)
{
	int fd, ret = 0;

	fd = openat(dfd, name,
		    O_WRONLY | O_CLOEXEC | O_NONBLOCK | (dfd == AT_FDCWD ? 0 : O_NOFOLLOW));
	if (fd < 0)
		return -errno;
	if (ftruncate(fd, sa->size) < 0)
		ret = -errno;
	close(fd);
	return ret;
}

/* chmod/chown/truncate/utimes: copy up (data only for a size change), then apply. */
int ovl_setattr(struct ovl_fs *fs, struct ovl_node *node, const struct ovl_setattr *sa,
		struct stat *st)
{
	const char *name = "";
	char ppath[64];
	int dfd, ret, flags = AT_SYMLINK_NOFOLLOW;

	ret = (sa->valid & OVL_SET_SIZE) ? ovl_copy_up_data(fs, node) : ovl_copy_up(fs, node);
	if (ret)
		return ret;
	if (S_ISDIR(node->type)) {
		dfd = ovl_upper_dirfd(fs, node);
		flags |= AT_EMPTY_PATH;
	} else {
		ret = ovl_real_at(fs, node, &dfd, &name);
		if (ret)
			return ret;
		if (!name[0]) {
			/* unlinked while open: reach the object through its pinned fd */
			snprintf(ppath, sizeof(ppath), "/proc/self/fd/%d", dfd);
			dfd = AT_FDCWD;
			name = ppath;
			flags = 0;
		}
	}
	if ((sa->valid & (OVL_SET_UID | OVL_SET_GID)) &&
	    fchownat(dfd, name, (sa->valid & OVL_SET_UID) ? sa->uid : (uid_t)-1,
		     (sa->valid & OVL_SET_GID) ? sa->gid : (gid_t)-1, flags) < 0)
		return -errno;
	if ((sa->valid & OVL_SET_MODE) && !S_ISLNK(node->type)) {
		if (S_ISDIR(node->type))
			ret = fchmod(dfd, sa->mode & 07777);
		else
			ret = fchmodat(dfd, name, sa->mode & 07777, 0);
		if (ret < 0)
			return -errno;
	}
	if (sa->valid & OVL_SET_SIZE) {
		if (S_ISDIR(node->type))
			return -EISDIR;
		ret = set_size(dfd, name, sa);
		if (ret)
			return ret;
	}
	ret = S_ISDIR(node->type) ? 0 : set_times(dfd, name, flags, sa);
	if (S_ISDIR(node->type) && (sa->valid & (OVL_SET_ATIME | OVL_SET_MTIME))) {
		struct timespec ts[2] = {{.tv_nsec = UTIME_OMIT}, {.tv_nsec = UTIME_OMIT}};

		if (sa->valid & OVL_SET_ATIME)
			ts[0] = sa->atime;
		if (sa->valid & OVL_SET_MTIME)
			ts[1] = sa->mtime;
		ret = futimens(dfd, ts) < 0 ? -errno : 0;
	}
	if (ret)
		return ret;
	return ovl_getattr(fs, node, st);
}
