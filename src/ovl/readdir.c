/*
 * readdir.c - the merged directory listing (the kernel's ovl_dir_cache).
 *
 * Built when a dir is read from offset 0: the real directories
 * are read top first with getdents64; a name is taken from the first layer
 * that has it; whiteouts (char 0/0, xwhiteouts, aufs ".wh.NAME") hide the
 * name from the layers below and are never listed, nor is any ".wh."
 * marker.  "." and ".." come first, then the names in the order of their
 * offset cookies (a hash of the name, see name_cookie()), so seekdir and
 * telldir are stable, and a request that continues at a cookie in another
 * open dir, or after the dir changed, resumes after that very name.
 */
#define _GNU_SOURCE
#include "ovl.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define GETDENTS_BUF   (64 * 1024)
#define NAME_CHUNK_MIN 1024	   /* a small dir's names: listings are kept per dir */
#define NAME_CHUNK_MAX (64 * 1024) /* chunks double up to this */

/* Names live in chunks that never move, so entries can point into them. */
struct name_chunk {
	struct name_chunk *next;
	size_t used;
	size_t size;
	char data[];
};

/* Open-addressing set of names seen so far; whiteouts are kept as seen. */
struct name_set {
	const char **slots;
	size_t cap;
	size_t count;
};

struct ovl_listing {
	uint64_t built; /* when: a later listing of the dir replaces an earlier one */
	size_t n;
	size_t cap;
	struct ovl_dirent *ents;
	struct name_chunk *chunks;
};

struct dir_build {
	struct ovl_fs *fs;
	struct ovl_listing *dir;
	struct ovl_node *node;
	bool count_only; /* emptiness check: stop at the first entry */
	bool merged;	 /* more than one real dir: whiteouts are filtered */
	bool in_xw;	 /* a layer so far was an xwhiteouts dir: check regular files */
	bool lowest;	 /* reading the bottom layer (the kernel lists its xwhiteouts) */
	bool fixed_ino;	 /* an entry's d_ino is its origin's, not the real one */
	bool names_only; /* for the engine itself: real d_ino, no side effects */
	struct name_set seen;
	struct name_chunk *chunks;
};

static size_t name_hash(const char *s)
{
	size_t h = 1469598103934665603ULL;

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return h;
}

static int set_grow(struct name_set *set)
{
	size_t ncap = set->cap ? set->cap * 2 : 1024, i, j;
	const char **ns = calloc(ncap, sizeof(*ns));

	if (!ns)
		return -ENOMEM;
	for (i = 0; i < set->cap; i++) {
		if (!set->slots[i])
			continue;
		for (j = name_hash(set->slots[i]) & (ncap - 1); ns[j]; j = (j + 1) & (ncap - 1))
			;
		ns[j] = set->slots[i];
	}
	free(set->slots);
	set->slots = ns;
	set->cap = ncap;
	return 0;
}

/* Return the slot for name: *slot NULL means not present. */
static const char **set_slot(struct name_set *set, const char *name)
{
	size_t j;

	for (j = name_hash(name) & (set->cap - 1); set->slots[j]; j = (j + 1) & (set->cap - 1)) {
		if (!strcmp(set->slots[j], name))
			break;
	}
	return &set->slots[j];
}

static const char *chunk_strdup(struct dir_build *b, const char *name)
{
	size_t len = strlen(name) + 1;
	struct name_chunk *c = b->chunks;
	size_t size;
	char *p;

	if (!c || c->used + len > c->size) {
		size = c ? c->size * 2 : NAME_CHUNK_MIN;
		if (size > NAME_CHUNK_MAX)
			size = NAME_CHUNK_MAX;
		if (size < len)
			size = len;
		c = malloc(sizeof(*c) + size);
		if (!c)
			return NULL;
		c->next = b->chunks;
		c->used = 0;
		c->size = size;
		b->chunks = c;
	}
	p = c->data + c->used;
	memcpy(p, name, len);
	c->used += len;
	return p;
}

/* Mark name as seen; returns 1 if it was new, 0 if already seen, -errno. */
static int see(struct dir_build *b, const char *name, const char **stored)
{
	const char **slot;

	if (b->seen.count * 2 >= b->seen.cap && set_grow(&b->seen))
		return -ENOMEM;
	slot = set_slot(&b->seen, name);
	if (*slot)
		return 0;
	*slot = chunk_strdup(b, name);
	if (!*slot)
		return -ENOMEM;
	b->seen.count++;
	if (stored)
		*stored = *slot;
	return 1;
}

static bool seen(struct dir_build *b, const char *name)
{
	return b->seen.cap && *set_slot(&b->seen, name) != NULL;
}

static int add_entry(struct ovl_listing *dir, const char *name, uint64_t ino, uint8_t type)
{
	struct ovl_dirent *e;

	if (dir->n == dir->cap) {
		size_t ncap = dir->cap ? dir->cap * 2 : 64;

		e = realloc(dir->ents, ncap * sizeof(*e));
		if (!e)
			return -ENOMEM;
		dir->ents = e;
		dir->cap = ncap;
	}
	e = &dir->ents[dir->n++];
	e->name = (char *)name;
	e->ino = ino;
	e->type = type;
	return 0;
}

/*
 * d_ino of an entry: the real number, except in an impure upper directory,
 * where copied-up entries show their origin's number (as stat does), so
 * the entry is looked up like the kernel's ovl_cache_update_ino().
 */
static uint64_t entry_ino(struct dir_build *b, const struct ovl_path *p, const char *name,
			  uint64_t d_ino)
{
	uint64_t real = ovl_map_ino(b->fs, p->layer, d_ino);
	struct ovl_node *n;
	struct stat st;

	if (!(p->flags & OVL_PATH_IMPURE) || p->layer != 0 || !b->fs->has_upper)
		return real;
	if (ovl_lookup(b->fs, b->node, name, &n, &st))
		return real;
	ovl_node_forget(b->fs, n, 1);
	if (st.st_ino != real)
		b->fixed_ino = true;
	return st.st_ino;
}

/* Decide about one real entry of layer p; adds it to the listing if shown. */
static int take_entry(struct dir_build *b, const struct ovl_path *p, const struct ovl_dirent64 *de)
{
	const char *name = de->d_name, *stored = NULL;
	unsigned char type = de->d_type;
	/*
	 * Regular files that may be xwhiteouts: below an opaque=x dir but not
	 * in the bottom layer, as the kernel's readdir checks them; with xino
	 * (layers on several filesystems) any lower one, as the kernel then
	 * looks up every entry of a merged dir for its d_ino and drops those
	 * the lookup does not find (ovl_cache_update()).
	 */
	bool xw = !b->fs->layers[p->layer].is_upper &&
		  ((b->in_xw && !b->lowest) ||
		   (b->fs->xino_bits > 0 && b->fs->config.xino != OVL_XINO_OFF));
	struct stat st;
	char v;
	int ret;

	if (!strcmp(name, ".") || !strcmp(name, ".."))
		return 0;
	if (ovl_is_wh_marker(name)) {
		/* ".wh.NAME" hides NAME below; ".wh..wh.*" are aufs metadata */
		if (strncmp(name + 4, ".wh.", 4) != 0 && name[4])
			return see(b, name + 4, NULL) < 0 ? -ENOMEM : 0;
		return 0;
	}
	if (seen(b, name))
		return 0;
	/*
	 * A directory with one real dir is listed as it is, whiteouts too, as
	 * the kernel iterates such a dir directly.
	 */
	if (type == DT_UNKNOWN || (b->merged && type == DT_CHR) ||
	    (b->merged && type == DT_REG && xw)) {
		if (fstatat(p->fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			return errno == ENOENT ? 0 : -errno;
		type = (unsigned char)IFTODT(st.st_mode);
		if (b->merged && ovl_is_whiteout(&st))
			return see(b, name, NULL) < 0 ? -ENOMEM : 0;
		if (b->merged && xw && S_ISREG(st.st_mode) && st.st_size == 0 &&
		    ovl_get_ovl_xattr(b->fs, p->fd, name, "whiteout", &v, 0) >= 0)
			return see(b, name, NULL) < 0 ? -ENOMEM : 0;
	}
	ret = see(b, name, &stored);
	if (ret <= 0)
		return ret;
	if (b->count_only)
		return -ENOTEMPTY;
	return add_entry(b->dir, stored,
			 b->names_only ? de->d_ino : entry_ino(b, p, stored, de->d_ino), type);
}

/*
 * squashfs finds a name by scanning its directory from the nearest index
 * point, decompressing as it goes: looked up in the listing's (hash) order,
 * as READDIRPLUS does, every entry of a big directory costs a decompression
 * (0.3 ms each in an 18,000-entry dir, 6 s for it).  Looked up here, in
 * the order the directory is stored, they cost almost nothing, and the
 * later lookups find them in the dcache.
 */
static void warm_entry(int dirfd, const char *name)
{
	struct stat st;

	if (strcmp(name, ".") && strcmp(name, ".."))
		(void)!fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW);
}

static int read_layer(struct dir_build *b, const struct ovl_path *p, char *buf)
{
	bool warm = b->fs->layers[p->layer].sorted_dirs && !b->count_only && !b->names_only;
	struct ovl_dirent64 *de;
	long n, pos;
	int fd, ret = 0;

	fd = openat(p->fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	for (;;) {
		n = syscall(SYS_getdents64, fd, buf, GETDENTS_BUF);
		if (n < 0) {
			ret = -errno;
			break;
		}
		if (n == 0)
			break;
		for (pos = 0; pos < n; pos += de->d_reclen) {
			de = (struct ovl_dirent64 *)(buf + pos);
			ret = take_entry(b, p, de);
			if (ret)
				goto out;
			if (warm)
				warm_entry(p->fd, de->d_name);
		}
	}
out:
	close(fd);
	return ret;
}

static void free_chunks(struct name_chunk *c)
{
	struct name_chunk *next;

	for (; c; c = next) {
		next = c->next;
		free(c);
	}
}

static int read_stack(struct dir_build *b)
{
	struct ovl_stack *st = ovl_stack_of(b->node);
	char *buf = malloc(GETDENTS_BUF);
	int i, ret = 0;

	if (!buf)
		return -ENOMEM;
	/* rmdir's emptiness check filters whiteouts even in unmerged dirs, as the kernel */
	b->merged = st->n > 1 || b->count_only;
	for (i = 0; i < st->n && !ret; i++) {
		/* from an opaque=x dir down, regular files may be xwhiteouts */
		if (st->p[i].flags & OVL_PATH_XWHITEOUTS)
			b->in_xw = true;
		b->lowest = st->p[i].layer == b->fs->nmerge - 1;
		ret = read_layer(b, &st->p[i], buf);
	}
	free(buf);
	free(b->seen.slots);
	return ret;
}

static void listing_free(struct ovl_listing *l)
{
	if (!l)
		return;
	free(l->ents);
	free_chunks(l->chunks);
	free(l);
}

/*
 * The offset cookie of a name: 63 bits of its hash, above 2 (the cookies
 * of "." and "..").  Entries are sorted by cookie, so a request that
 * continues at a cookie resumes after that name in any listing of the
 * dir, also one built after the dir changed (the kernel's readdir cache is
 * filled through one open dir and continued through another): names
 * present in both are returned exactly once.
 */
static uint64_t name_cookie(const char *name)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (; *name; name++)
		h = (h ^ (unsigned char)*name) * 0x100000001b3ULL;
	h ^= h >> 29;
	h &= 0x7fffffffffffffffULL;
	return h < 3 ? h + 3 : h;
}

static int cookie_cmp(const void *a, const void *b)
{
	const struct ovl_dirent *x = a, *y = b;

	if (x->hash != y->hash)
		return x->hash < y->hash ? -1 : 1;
	return strcmp(x->name, y->name);
}

static void sort_by_cookie(struct ovl_listing *l)
{
	size_t i;

	for (i = 2; i < l->n; i++)
		l->ents[i].hash = name_cookie(l->ents[i].name);
	if (l->n > 3)
		qsort(l->ents + 2, l->n - 2, sizeof(l->ents[0]), cookie_cmp);
}

static int build(struct ovl_fs *fs, struct ovl_node *node, bool names_only,
		 struct ovl_listing **out)
{
	struct ovl_node *parent = ovl_loc_of(node)->parent;
	struct ovl_listing *l = calloc(1, sizeof(*l));
	struct dir_build b = {.fs = fs, .dir = l, .node = node, .names_only = names_only};
	struct ovl_stack *st = ovl_stack_of(node);
	uint64_t gen = ovl_impure_gen(fs);
	int ret;

	if (!l)
		return -ENOMEM;
	l->built = atomic_fetch_add(&fs->listings.built, 1) + 1;
	ret = -ENOMEM;
	if (add_entry(l, ".", node->ino, DT_DIR) ||
	    add_entry(l, "..", parent ? parent->ino : node->ino, DT_DIR))
		goto out;
	ret = read_stack(&b);
	l->chunks = b.chunks;
	if (ret)
		goto out;
	sort_by_cookie(l);
	/* an impure upper dir with nothing to fix loses the flag, as in the kernel */
	if (!names_only && !b.fixed_ino && ovl_nf(node, OVL_NF_IMPURE) && st->n == 1 &&
	    st->p[0].layer == 0)
		ovl_clear_impure(fs, node, gen);
	*out = l;
	return 0;
out:
	listing_free(l);
	return ret;
}

/* 0 if the merged directory shows no entry, -ENOTEMPTY if it does. */
int ovl_dir_is_empty(struct ovl_fs *fs, struct ovl_node *node)
{
	struct ovl_listing l;
	struct dir_build b = {.fs = fs, .dir = &l, .node = node, .count_only = true};
	int ret;

	memset(&l, 0, sizeof(l));
	ret = read_stack(&b);
	free_chunks(b.chunks);
	return ret;
}

/* The offset after entry i: 1 and 2 after "." and "..", then the name's hash. */
static off_t next_off(const struct ovl_listing *l, size_t i)
{
	return i < 2 ? (off_t)(i + 1) : (off_t)l->ents[i].hash;
}

/* The first entry to return for a request at off (a cookie of next_off()). */
static size_t first_at(const struct ovl_listing *l, off_t off)
{
	size_t lo = 2, hi = l->n, mid;

	if (off <= 2)
		return off < 0 ? 0 : (size_t)off;
	/* the first name whose hash is above off: also in a listing built later */
	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		if (l->ents[mid].hash <= (uint64_t)off)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/*
 * Listings being read.  The kernel opens no directory here (stratafs
 * answers OPENDIR with ENOSYS, so it caches every dir's entries itself) and
 * reads a dir in several requests: the listing built at offset 0 waits in
 * one of a few slots for the requests that continue it, until the request
 * past its end.  A continuation that finds none builds the listing again,
 * which the cookies make exact.  A slot holds a reference on its node.
 */
static struct ovl_listing *listing_take(struct ovl_fs *fs, struct ovl_node *node)
{
	struct ovl_listings *c = &fs->listings;
	struct ovl_listing *l = NULL;
	int i;

	pthread_mutex_lock(&c->lock);
	for (i = 0; i < OVL_LISTING_SLOTS; i++) {
		if (c->slot[i].node == node) {
			l = c->slot[i].list;
			c->slot[i].node = NULL;
			c->slot[i].list = NULL;
			c->slot[i].stamp = 0; /* free slots go first */
			break;
		}
	}
	pthread_mutex_unlock(&c->lock);
	if (l)
		ovl_node_unref(fs, node); /* the caller's request holds the node */
	return l;
}

static void listing_keep(struct ovl_fs *fs, struct ovl_node *node, struct ovl_listing *l)
{
	struct ovl_listings *c = &fs->listings;
	struct ovl_listing_slot old = {0};
	int i, victim = 0;

	ovl_node_ref(fs, node);
	pthread_mutex_lock(&c->lock);
	for (i = 0; i < OVL_LISTING_SLOTS; i++) {
		if (c->slot[i].node == node) {
			victim = i;
			break;
		}
		if (c->slot[i].stamp < c->slot[victim].stamp)
			victim = i; /* empty slots have the oldest stamps */
	}
	if (c->slot[victim].node == node && c->slot[victim].list->built > l->built) {
		/* read on while another reader rebuilt the dir: keep the newer one */
		old.node = node;
		old.list = l;
	} else {
		old = c->slot[victim];
		c->slot[victim].node = node;
		c->slot[victim].list = l;
		c->slot[victim].stamp = ++c->clock;
	}
	pthread_mutex_unlock(&c->lock);
	listing_free(old.list);
	if (old.node)
		ovl_node_unref(fs, old.node);
}

/* Drop every kept listing (unmount). */
void ovl_listings_flush(struct ovl_fs *fs)
{
	int i;

	for (i = 0; i < OVL_LISTING_SLOTS; i++) {
		struct ovl_listing_slot *sl = &fs->listings.slot[i];

		listing_free(sl->list);
		if (sl->node)
			ovl_node_unref(fs, sl->node);
		sl->list = NULL;
		sl->node = NULL;
	}
}

int ovl_readdir(struct ovl_fs *fs, struct ovl_node *node, off_t off, ovl_fill_fn fill, void *ctx)
{
	struct ovl_listing *l = NULL;
	size_t i, first;
	int ret;

	if (!S_ISDIR(node->type))
		return -ENOTDIR;
	/* offset 0 re-reads the dir, as the kernel refreshes its cache there */
	if (off != 0)
		l = listing_take(fs, node);
	if (!l) {
		ret = build(fs, node, false, &l);
		if (ret)
			return ret;
	}
	first = first_at(l, off);
	for (i = first; i < l->n; i++) {
		if (fill(ctx, &l->ents[i], next_off(l, i)))
			break;
	}
	if (i == first && i == l->n)
		listing_free(l); /* the request past the end */
	else
		listing_keep(fs, node, l);
	return 0;
}

/*
 * The names of a dir in listing order, for the engine's own use
 * (prefetch.c): d_ino as the real dirs have it, and no side effects.
 */
int ovl_names_build(struct ovl_fs *fs, struct ovl_node *dir, struct ovl_listing **out)
{
	return build(fs, dir, true, out);
}

void ovl_names_free(struct ovl_listing *l)
{
	listing_free(l);
}

size_t ovl_names_count(const struct ovl_listing *l)
{
	return l->n;
}

/* Entry i of l, or NULL past the end. */
const struct ovl_dirent *ovl_names_at(const struct ovl_listing *l, size_t i)
{
	return i < l->n ? &l->ents[i] : NULL;
}

/* The index of the first name listed after the name whose cookie this is. */
size_t ovl_names_after(const struct ovl_listing *l, uint64_t cookie)
{
	return first_at(l, (off_t)cookie);
}

uint64_t ovl_name_cookie(const char *name)
{
	return name_cookie(name);
}
