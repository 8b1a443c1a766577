/*
 * prefetch.c - read-ahead across files.
 *
 * A walk that reads every file (cat or grep -r after a find, cp -r, tar)
 * opens a directory's files one after another in listing order.  Once a
 * read-only open is of the first or second file listed, or two in a row
 * follow listing order, a thread of the mount reads the next files ahead
 * (readahead(2) on their real objects, the start of each as the kernel
 * would read it first), so their data is on its way while the one before
 * is read.  The kernel's overlay reads each file when it is opened; with a
 * round trip to the daemon per open, doing the same one file at a time
 * left the disk idle between files.  What is read ahead is only brought
 * into memory: no union state, no node changes.  The names of a dir being
 * read through are kept (a names-only listing, in one of OVL_PF_DIRS
 * slots) until it was read ahead to its end; dirs of more than PF_DIR_MAX
 * names are left alone.  A dir that is one squashfs dir is read ahead
 * whole, in its stored order, at the second open in listing order (see
 * read_ahead_stored()).
 */
#define _GNU_SOURCE
#include "ovl.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#define PF_FILES	16	    /* files read ahead of the last one opened */
#define PF_BYTES	(8 << 20)   /* ... and at most this much of them */
#define PF_FILE_MAX	(128 << 10) /* of each file: what a first read brings in */
#define PF_DIR_MAX	(1 << 15)   /* dirs with more names are not read ahead */
#define PF_SORTED_BYTES (64 << 20)  /* a squashfs dir: read ahead whole, up to this */

/*
 * Read the start of one file of dir ahead; returns how much was asked for.
 * The real file is found in the dir's real dirs, top first, without a
 * lookup: a lookup here would run outside the kernel's lock of the dir and
 * could meet a rename or unlink half done.  A name whose top object is not
 * a regular file (a whiteout, a dir) is skipped; a metacopy file reads
 * holes, which costs nothing.
 */
static size_t read_ahead_one(struct ovl_node *dir, const char *name)
{
	struct ovl_stack *stack = ovl_stack_of(dir);
	struct stat st;
	size_t len = 0;
	int i, fd = -1;

	for (i = 0; stack && i < stack->n; i++) {
		if (fstatat(stack->p[i].fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		if (S_ISREG(st.st_mode) && st.st_size > 0)
			fd = openat(stack->p[i].fd, name,
				    O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOATIME);
		break;
	}
	if (fd < 0)
		return 0;
	len = st.st_size < PF_FILE_MAX ? (size_t)st.st_size : PF_FILE_MAX;
	if (readahead(fd, 0, len) < 0)
		len = 0;
	close(fd);
	return len;
}

/*
 * Read ahead the regular files listed after cookie want, from where the
 * last round stopped (*upto); *refill is where the next round should be
 * asked for (half way through this one).
 */
static void read_ahead(struct ovl_node *dir, const struct ovl_listing *l, uint64_t want,
		       uint64_t *upto, uint64_t *refill)
{
	const struct ovl_dirent *e;
	size_t i, files = 0, bytes = 0;

	i = ovl_names_after(l, want > *upto ? want : *upto);
	for (; (e = ovl_names_at(l, i)) && files < PF_FILES && bytes < PF_BYTES; i++) {
		if (e->type != DT_REG)
			continue;
		bytes += read_ahead_one(dir, e->name);
		files++;
		*upto = e->hash;
		if (files == PF_FILES / 2)
			*refill = e->hash;
	}
	if (files < PF_FILES / 2)
		*refill = UINT64_MAX; /* the end of the dir: nothing more to ask for */
}

/*
 * A directory that is one squashfs dir (sorted_dirs): read its files ahead
 * in the order it stores them, all at once.  squashfs packs small files
 * into shared compressed fragment blocks in that order and keeps only a few
 * of them decompressed; read in the listing's (hash) order, each small file
 * cost the decompression of a whole block.
 */
static bool is_stored_dir(struct ovl_fs *fs, struct ovl_node *dir)
{
	struct ovl_stack *stack = ovl_stack_of(dir);

	return stack && stack->n == 1 && fs->layers[stack->p[0].layer].sorted_dirs;
}

static void read_ahead_stored(struct ovl_node *dir)
{
	struct dirent *de;
	size_t bytes = 0;
	DIR *d;
	int fd;

	fd = openat(ovl_stack_of(dir)->p[0].fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return;
	}
	while (bytes < PF_SORTED_BYTES && (de = readdir(d)))
		if (de->d_type == DT_REG)
			bytes += read_ahead_one(dir, de->d_name);
	closedir(d);
}

/* Take the dir most recently asked for; NULL if none.  (pf->lock) */
static struct ovl_pf_dir *next_job(struct ovl_prefetch *pf)
{
	struct ovl_pf_dir *best = NULL;
	int i;

	for (i = 0; i < OVL_PF_DIRS; i++) {
		struct ovl_pf_dir *d = &pf->dirs[i];

		if (d->dir && d->want && !d->busy && (!best || d->stamp > best->stamp))
			best = d;
	}
	return best;
}

/* Is the file with this cookie the first or second regular file listed? */
static bool at_start(const struct ovl_listing *l, uint64_t cookie)
{
	const struct ovl_dirent *e;
	size_t i;
	int before = 0;

	for (i = 2; (e = ovl_names_at(l, i)) && e->hash < cookie; i++)
		if (e->type == DT_REG && ++before > 1)
			return false;
	return true;
}

static void run_job(struct ovl_fs *fs, struct ovl_pf_dir *d)
{
	struct ovl_prefetch *pf = &fs->prefetch;
	struct ovl_node *dir = d->dir; /* stays: a busy slot is never reused */
	struct ovl_listing *l = d->list;
	uint64_t want = d->want, upto = d->upto, refill = d->refill;
	bool probe = d->probe, shunned = false;

	d->want = 0;
	d->probe = false;
	d->busy = true;
	pthread_mutex_unlock(&pf->lock);
	if (!l && is_stored_dir(fs, dir)) {
		/* a second open in listing order: a walk; all of it, once */
		if (!probe) {
			read_ahead_stored(dir);
			refill = UINT64_MAX;
		}
	} else if (!l && (ovl_names_build(fs, dir, &l) || ovl_names_count(l) > PF_DIR_MAX)) {
		ovl_names_free(l);
		l = NULL;
		shunned = true; /* not listed again for every open in it */
	}
	/* a first open: a walker starts at the start (else wait for a second one) */
	if (l && (!probe || at_start(l, want)))
		read_ahead(dir, l, want, &upto, &refill);
	if (l && refill == UINT64_MAX) {
		ovl_names_free(l); /* read ahead to the end: the names are not needed */
		l = NULL;
	}
	pthread_mutex_lock(&pf->lock);
	d->shunned = shunned;
	d->list = l;
	d->upto = upto;
	d->refill = refill;
	d->busy = false;
}

static void *pf_main(void *arg)
{
	struct ovl_fs *fs = arg;
	struct ovl_prefetch *pf = &fs->prefetch;
	struct ovl_pf_dir *d;

	pthread_mutex_lock(&pf->lock);
	while (!pf->stop) {
		d = next_job(pf);
		if (d)
			run_job(fs, d);
		else
			pthread_cond_wait(&pf->wake, &pf->lock);
	}
	pthread_mutex_unlock(&pf->lock);
	return NULL;
}

/* Empty a slot; what it held is returned to be let go outside the lock. */
static void slot_clear(struct ovl_pf_dir *d, struct ovl_node **dir, struct ovl_listing **l)
{
	*dir = d->dir;
	*l = d->list;
	d->dir = NULL;
	d->list = NULL;
	d->stamp = 0; /* free slots go first */
}

/* The slot of dir, or a new one for it; NULL when all are busy.  (pf->lock) */
static struct ovl_pf_dir *slot_for(struct ovl_prefetch *pf, struct ovl_node *dir, bool *fresh)
{
	struct ovl_pf_dir *victim = NULL;
	int i;

	*fresh = false;
	for (i = 0; i < OVL_PF_DIRS; i++) {
		struct ovl_pf_dir *d = &pf->dirs[i];

		if (d->dir == dir)
			return d;
		if (!d->busy && (!victim || d->stamp < victim->stamp))
			victim = d; /* free slots have stamp 0 */
	}
	*fresh = victim != NULL;
	return victim;
}

void ovl_prefetch_opened(struct ovl_fs *fs, struct ovl_node *node)
{
	struct ovl_prefetch *pf = &fs->prefetch;
	struct ovl_node *dir, *old_dir = NULL;
	struct ovl_listing *old_list = NULL;
	struct ovl_pf_dir *d;
	struct ovl_loc *loc;
	uint64_t cookie;
	bool fresh, wake = false;

	/*
	 * No lock: a location is replaced whole, never changed, and a replaced
	 * one keeps its parent referenced while the node lives (the open file
	 * holds the node).
	 */
	loc = ovl_loc_of(node);
	dir = loc->parent;
	if (!dir || !loc->name[0])
		return;
	cookie = ovl_name_cookie(loc->name);
	pthread_mutex_lock(&pf->lock);
	d = slot_for(pf, dir, &fresh);
	if (!d || pf->stop)
		goto out;
	if (fresh) {
		slot_clear(d, &old_dir, &old_list);
		ovl_node_ref(fs, dir);
		d->dir = dir;
		d->shunned = false;
	}
	if (d->shunned) {
		/* its names could not be had: no read-ahead */
	} else if (fresh || (cookie < d->last && !d->busy)) {
		/* a dir new here, or read again from further up: start over */
		d->upto = 0;
		d->refill = 0;
		d->want = cookie; /* read ahead at once if it is the dir's first file */
		d->probe = true;
		wake = true;
	} else if (cookie > d->last && cookie >= d->refill) {
		/* a second open in listing order, or near the end of what was read ahead */
		d->want = cookie;
		wake = true;
	}
	d->last = cookie;
	d->stamp = ++pf->clock;
	if (wake && !pf->started) {
		pf->started = pthread_create(&pf->thread, NULL, pf_main, fs) == 0;
		if (!pf->started)
			d->want = 0;
	}
	if (wake && pf->started)
		pthread_cond_signal(&pf->wake);
out:
	pthread_mutex_unlock(&pf->lock);
	ovl_names_free(old_list);
	if (old_dir)
		ovl_node_unref(fs, old_dir);
}

void ovl_prefetch_stop(struct ovl_fs *fs)
{
	struct ovl_prefetch *pf = &fs->prefetch;
	struct ovl_node *dir;
	struct ovl_listing *l;
	bool started;
	int i;

	pthread_mutex_lock(&pf->lock);
	pf->stop = true;
	started = pf->started;
	pf->started = false;
	pthread_cond_signal(&pf->wake);
	pthread_mutex_unlock(&pf->lock);
	if (started)
		pthread_join(pf->thread, NULL);
	for (i = 0; i < OVL_PF_DIRS; i++) {
		slot_clear(&pf->dirs[i], &dir, &l);
		ovl_names_free(l);
		if (dir)
			ovl_node_unref(fs, dir);
	}
}
