/*
 * dir.c - changes to the namespace (the kernel's dir.c): create, link,
 * unlink/rmdir with whiteouts, rename with redirects.
 *
 * Rules as the kernel's: a name that still exists below gets a char 0/0
 * whiteout when removed; a new object that replaces a whiteout is built in
 * workdir/work and exchanged with it (a new directory there is opaque);
 * renaming a directory that has lower parts sets overlay.redirect (or
 * fails with EXDEV unless redirect_dir=on); a pure upper directory moved
 * into a merged one becomes opaque.  The kernel's VFS holds the parent
 * directories locked around each of these, so names do not change under us.
 */
#define _GNU_SOURCE
#include "ovl.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#define REDIRECT_MAX 256

/* Remove name (a whole tree if it is a directory) inside dirfd. */
int ovl_cleanup_tree(int dirfd, const char *name)
{
	struct ovl_dirent64 *de;
	char *buf;
	long n, pos;
	int fd, ret = 0;

	if (unlinkat(dirfd, name, 0) == 0 || errno == ENOENT)
		return 0;
	if (errno != EISDIR && errno != EPERM)
		return -errno;
	if (unlinkat(dirfd, name, AT_REMOVEDIR) == 0)
		return 0;
	if (errno != ENOTEMPTY && errno != EEXIST)
		return -errno;
	fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	buf = malloc(8192);
	if (!buf) {
		close(fd);
		return -ENOMEM;
	}
	while (!ret && (n = syscall(SYS_getdents64, fd, buf, 8192)) > 0) {
		for (pos = 0; pos < n && !ret; pos += de->d_reclen) {
			de = (struct ovl_dirent64 *)(buf + pos);
			if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
				ret = ovl_cleanup_tree(fd, de->d_name);
		}
	}
	free(buf);
	close(fd);
	if (!ret && unlinkat(dirfd, name, AT_REMOVEDIR) < 0)
		ret = -errno;
	return ret;
}

/* Is there a whiteout at name in the upper dir fd?  1 yes, 0 no entry, -EEXIST other. */
static int upper_whiteout(int updfd, const char *name)
{
	struct stat st;

	if (fstatat(updfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : -errno;
	return ovl_is_whiteout(&st) ? 1 : -EEXIST;
}

/* Owner, group and mode of a new object, as inode_init_owner() gives them. */
static void new_owner(struct ovl_fs *fs, struct ovl_node *dir, const struct ovl_cred *cr,
		      mode_t *mode, struct ovl_cred *owner)
{
	struct stat pst;

	*owner = *cr;
	if (ovl_getattr(fs, dir, &pst) == 0 && (pst.st_mode & S_ISGID)) {
		owner->gid = pst.st_gid;
		if (S_ISDIR(*mode))
			*mode |= S_ISGID;
	}
}

/* Apply the umask unless the upper parent has a default ACL (the fs applies that). */
static mode_t apply_umask(int updfd, mode_t mode, mode_t umask)
{
	if (fgetxattr(updfd, "system.posix_acl_default", NULL, 0) >= 0)
		return mode;
	return mode & ~umask;
}

static int make_object(int dfd, const char *name, mode_t mode, dev_t rdev, const char *target)
{
	int ret;

	switch (mode & S_IFMT) {
	case S_IFDIR:
		ret = mkdirat(dfd, name, mode & 07777);
		break;
	case S_IFLNK:
		ret = symlinkat(target, dfd, name);
		break;
	default:
		ret = mknodat(dfd, name, mode, rdev);
		break;
	}
	return ret < 0 ? -errno : 0;
}

/*
 * Put a new object at name in the upper dir: directly when the name is
 * free there, else built in workdir/work and exchanged with the whiteout
 * (a directory built there is opaque, so nothing below shows through).
 */
static int create_upper(struct ovl_fs *fs, int updfd, const char *name, bool over_whiteout,
			const struct ovl_cred *owner, mode_t mode, dev_t rdev, const char *target,
			int link_dfd, const char *link_name)
{
	char tmp[64];
	uid_t ou;
	gid_t og;
	int ret;

	if (!over_whiteout) {
		ovl_cred_enter(owner, &ou, &og);
		if (link_name)
			ret = linkat(link_dfd, link_name, updfd, name, 0) < 0 ? -errno : 0;
		else
			ret = make_object(updfd, name, mode, rdev, target);
		ovl_cred_leave(ou, og);
		return ret;
	}
	ovl_tmpname(fs, tmp, sizeof(tmp));
	ovl_cred_enter(owner, &ou, &og);
	if (link_name)
		ret = linkat(link_dfd, link_name, fs->work_fd, tmp, 0) < 0 ? -errno : 0;
	else
		ret = make_object(fs->work_fd, tmp, mode, rdev, target);
	ovl_cred_leave(ou, og);
	if (ret)
		return ret;
	/* mkdir drops S_ISGID that the real parent would have given: set it */
	if (S_ISDIR(mode) && (mode & S_ISGID) && fchmodat(fs->work_fd, tmp, mode & 07777, 0) < 0) {
		ret = -errno;
		goto out_cleanup;
	}
	if (S_ISDIR(mode)) {
		ret = ovl_set_ovl_xattr(fs, fs->work_fd, tmp, "opaque", "y", 1);
		if (ret)
			goto out_cleanup;
	}
	if (renameat2(fs->work_fd, tmp, updfd, name, RENAME_EXCHANGE) < 0) {
		ret = -errno;
		goto out_cleanup;
	}
	/* the whiteout is in the workdir now */
	unlinkat(fs->work_fd, tmp, 0);
	return 0;

out_cleanup:
	ovl_cleanup_tree(fs->work_fd, tmp);
	return ret;
}

/* The kernel's ovl_allow_offline_changes(). */
static bool offline_changes(const struct ovl_fs *fs)
{
	return fs->config.index != OVL_ON && fs->config.metacopy != OVL_ON &&
	       fs->config.redirect_dir != OVL_REDIRECT_ON && fs->config.xino != OVL_XINO_ON;
}

int ovl_create(struct ovl_fs *fs, const struct ovl_cred *cr, struct ovl_node *dir, const char *name,
	       mode_t mode, dev_t rdev, const char *link_target, struct ovl_node **out,
	       struct stat *st)
{
	struct ovl_cred owner;
	int updfd, wh, ret;

	if (strlen(name) > NAME_MAX)
		return -ENAMETOOLONG;
	if (ovl_is_wh_marker(name))
		return -EINVAL; /* such names are never shown, so never created */
	if (S_ISCHR(mode) && rdev == 0)
		return -EPERM; /* no whiteouts through the union, as the kernel */
	ret = ovl_copy_up(fs, dir);
	if (ret)
		return ret;
	updfd = ovl_upper_dirfd(fs, dir);
	wh = upper_whiteout(updfd, name);
	if (wh < 0)
		return wh;
	new_owner(fs, dir, cr, &mode, &owner);
	if (!S_ISLNK(mode))
		mode = (mode & S_IFMT) | apply_umask(updfd, mode & 07777, cr->umask);
	ret = create_upper(fs, updfd, name, wh == 1, &owner, mode, rdev, link_target, -1, NULL);
	if (ret)
		return ret;
	/*
	 * A new directory in a merged one is opaque (the kernel's optimization),
	 * unless the upper dir may be changed offline (no index, redirects,
	 * metacopy or xino=on), where the kernel leaves it out too.
	 */
	if (S_ISDIR(mode) && wh != 1 && ovl_stack_of(dir)->n > 1 && !offline_changes(fs)) {
		ret = ovl_set_ovl_xattr(fs, updfd, name, "opaque", "y", 1);
		if (ret)
			return ret;
	}
	return ovl_lookup(fs, dir, name, out, st);
}

/*
 * Make sure name in dir has an upper object for node: copy the node up and,
 * when its upper object lives under another name (a hard link), link it.
 */
static int copy_up_name(struct ovl_fs *fs, struct ovl_node *dir, const char *name,
			struct ovl_node *node)
{
	struct ovl_loc *loc;
	const char *rname;
	struct stat st;
	int updfd, rdfd, ret;

	ret = ovl_copy_up(fs, dir);
	if (!ret)
		ret = ovl_copy_up(fs, node);
	if (ret || S_ISDIR(node->type))
		return ret;
	updfd = ovl_upper_dirfd(fs, dir);
	if (fstatat(updfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && !ovl_is_whiteout(&st))
		return 0;
	loc = ovl_loc_of(node);
	if (loc->parent == dir && !strcmp(loc->name, name))
		return -EIO;
	ret = ovl_real_at(fs, node, &rdfd, &rname);
	if (ret)
		return ret;
	return linkat(rdfd, rname, updfd, name, 0) < 0 ? -errno : 0;
}

static int set_redirect(struct ovl_fs *fs, struct ovl_node *node, struct ovl_node *olddir,
			const char *oldname, bool samedir);

int ovl_link(struct ovl_fs *fs, struct ovl_node *node, struct ovl_node *newdir, const char *newname,
	     struct ovl_node **out, struct stat *st)
{
	struct ovl_cred owner = {0};
	const char *rname;
	struct stat cur;
	int updfd, rdfd, wh, ret;

	if (S_ISDIR(node->type))
		return -EPERM;
	ret = ovl_copy_up(fs, node);
	if (!ret)
		ret = ovl_copy_up(fs, newdir);
	if (ret)
		return ret;
	updfd = ovl_upper_dirfd(fs, newdir);
	wh = upper_whiteout(updfd, newname);
	if (wh < 0)
		return wh;
	ret = ovl_real_at(fs, node, &rdfd, &rname);
	if (ret)
		return ret;
	owner.uid = geteuid();
	owner.gid = getegid();
	if (ovl_nf(node, OVL_NF_INDEXED) && ((ret = ovl_getattr(fs, node, &cur)) ||
					     (ret = ovl_nlink_start(fs, node, cur.st_nlink))))
		return ret;
	if (atomic_load(&node->data)) {
		/* every name of a metacopy file must find the data: an absolute redirect */
		struct ovl_loc *loc = ovl_loc_of(node);

		ret = set_redirect(fs, node, loc->parent, loc->name, false);
		if (ret)
			return ret;
	}
	ret = create_upper(fs, updfd, newname, wh == 1, &owner, S_IFREG, 0, NULL, rdfd, rname);
	if (ret)
		return ret;
	if (ovl_nf(node, OVL_NF_LOWER)) {
		ret = ovl_set_impure(fs, newdir);
		if (ret)
			return ret;
	}
	ret = ovl_lookup(fs, newdir, newname, out, st);
	/*
	 * Another node for the new name (the copy-up origin cannot be
	 * followed: a lower fs without a usable uuid): the kernel keeps the
	 * old one's attributes (st_nlink) unless told.
	 */
	if (!ret && *out != node && fs->changed)
		fs->changed(fs->changed_ctx, node);
	return ret;
}

/* Replace the upper object at name with a whiteout and remove the old one. */
static int whiteout_upper(struct ovl_fs *fs, int updfd, const char *name, bool exists)
{
	char tmp[64];
	int ret;

	/* made in the work dir, as the kernel's ovl_whiteout(): no setgid inheritance */
	ovl_tmpname(fs, tmp, sizeof(tmp));
	ret = ovl_mkwhiteout(fs->work_fd, tmp);
	if (ret)
		return ret;
	if (renameat2(fs->work_fd, tmp, updfd, name, exists ? RENAME_EXCHANGE : RENAME_NOREPLACE) <
	    0) {
		ret = -errno;
		unlinkat(fs->work_fd, tmp, 0);
		return ret;
	}
	return exists ? ovl_cleanup_tree(fs->work_fd, tmp) : 0;
}

/* Remove the upper object at name (a directory may hold whiteouts only). */
static int remove_upper(struct ovl_fs *fs, int updfd, const char *name, bool isdir)
{
	char tmp[64];

	if (unlinkat(updfd, name, isdir ? AT_REMOVEDIR : 0) == 0)
		return 0;
	if (!isdir || (errno != ENOTEMPTY && errno != EEXIST))
		return -errno;
	ovl_tmpname(fs, tmp, sizeof(tmp));
	if (renameat2(updfd, name, fs->work_fd, tmp, RENAME_NOREPLACE) < 0)
		return -errno;
	return ovl_cleanup_tree(fs->work_fd, tmp);
}

/*
 * A name of a lower hard link (index=on) with no upper link yet?  Removing
 * it links it up first, into the index if need be, to keep the union's
 * link count (the kernel's ovl_nlink_start()).
 */
static bool needs_link_up(struct ovl_fs *fs, struct ovl_node *node)
{
	struct stat st;

	if (fs->index_fd < 0 || !S_ISREG(node->type) || ovl_has_upper(fs, node))
		return false;
	if (ovl_nf(node, OVL_NF_INDEXED))
		return true;
	return ovl_real_stat(fs, node, &st) == 0 && st.st_nlink > 1;
}

/*
 * Before removing the last name of a file: an O_PATH fd of its real object,
 * so that it can still be opened and fstat()ed (nlink 0) through the node.
 */
static int pin_object(struct ovl_fs *fs, struct ovl_node *node, const struct stat *st)
{
	const char *name;
	int dfd;

	/*
	 * A regular file only while it is open here: otherwise the space is
	 * freed at once, as in the kernel (an open racing with the unlink fails
	 * with ENOENT, as if it came after it).  A fifo, socket or device is
	 * opened by the kernel without telling us: always (it holds no data).
	 */
	if (S_ISDIR(node->type) || st->st_nlink > 1 ||
	    (S_ISREG(node->type) && !ovl_node_in_use(fs, node)) ||
	    ovl_real_at(fs, node, &dfd, &name))
		return -1;
	return openat(dfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
}

/*
 * The union's link count of an indexed file dropped with its upper inode's
 * (ovl_nlink_start() made overlay.nlink count from it): at zero, remove
 * the index entry as the kernel's ovl_cleanup_index() does (an index inode
 * still linked elsewhere keeps its entry with the count fixed).
 */
static void index_nlink_drop(struct ovl_fs *fs, struct ovl_node *node, nlink_t nlink)
{
	const char *iname = ovl_loc_of(node)->iname;
	struct stat ist;

	if (!ovl_nf(node, OVL_NF_INDEXED) || !iname || nlink > 0)
		return;
	if (fstatat(fs->index_fd, iname, &ist, AT_SYMLINK_NOFOLLOW) < 0)
		return;
	if (ist.st_nlink != 1) {
		ovl_set_nlink(fs, node, ist.st_nlink - 1, 'U');
		return;
	}
	ovl_nodes_pin_index(fs, iname);
	unlinkat(fs->index_fd, iname, 0);
}

/* Is this the last name of node?  Then it can no longer be found by identity. */
static void forget_name(struct ovl_fs *fs, struct ovl_node *node, const struct stat *st, int pinfd)
{
	if (!S_ISDIR(node->type) && st->st_nlink > 1)
		return;
	ovl_node_unhash(fs, node);
	if (pinfd < 0)
		return;
	ovl_lock(&node->cu_lock);
	/* (pinned already when its index entry went) */
	if (!ovl_nf(node, OVL_NF_DETACHED) && ovl_node_pin(node, pinfd) == 0)
		pinfd = -1;
	ovl_unlock(&node->cu_lock);
	if (pinfd >= 0)
		close(pinfd);
}

int ovl_unlink(struct ovl_fs *fs, struct ovl_node *dir, const char *name, bool isdir)
{
	struct ovl_node *n;
	struct stat st, ust;
	bool lower, has_up;
	int updfd, pinfd, ret;

	ret = ovl_lookup(fs, dir, name, &n, &st);
	if (ret)
		return ret;
	if (isdir != S_ISDIR(n->type)) {
		ret = isdir ? -ENOTDIR : -EISDIR;
		goto out;
	}
	if (isdir) {
		ret = ovl_dir_is_empty(fs, n);
		if (ret)
			goto out;
	}
	/* a lower hard link goes to the index first, to keep its link count */
	ret = needs_link_up(fs, n) ? copy_up_name(fs, dir, name, n) : ovl_copy_up(fs, dir);
	if (ret)
		goto out;
	if (ovl_nf(n, OVL_NF_INDEXED) &&
	    ((ret = ovl_getattr(fs, n, &st)) || (ret = ovl_nlink_start(fs, n, st.st_nlink))))
		goto out;
	updfd = ovl_upper_dirfd(fs, dir);
	lower = ovl_lower_positive(fs, dir, name);
	has_up = fstatat(updfd, name, &ust, AT_SYMLINK_NOFOLLOW) == 0 && !ovl_is_whiteout(&ust);
	pinfd = pin_object(fs, n, &st);
	if (lower)
		ret = whiteout_upper(fs, updfd, name, has_up);
	else if (has_up)
		ret = remove_upper(fs, updfd, name, isdir);
	if (ret) {
		if (pinfd >= 0)
			close(pinfd);
		goto out;
	}
	if (!isdir)
		index_nlink_drop(fs, n, st.st_nlink - 1);
	if (!isdir)
		ovl_node_drop_name(fs, n, dir, name);
	forget_name(fs, n, &st, pinfd);
out:
	ovl_node_forget(fs, n, 1);
	return ret;
}

/*
 * The absolute path under which the lower dirs of an entry `last` of dir
 * are found: dir's own lower path (its absolute redirect, or its parents'
 * names, each replaced by a relative redirect where there is one) + last.
 */
static int lower_path(struct ovl_node *dir, const char *last, char *buf, size_t size)
{
	const char *comps[REDIRECT_MAX], *prefix = "";
	struct ovl_node *d;
	size_t len;
	int n = 0;

	comps[n++] = last;
	for (d = dir; d && ovl_loc_of(d)->parent; d = ovl_loc_of(d)->parent) {
		if (d->redirect && d->redirect[0] == '/') {
			prefix = d->redirect;
			break;
		}
		if (n == REDIRECT_MAX)
			return -EXDEV;
		comps[n++] = d->redirect ? d->redirect : ovl_loc_of(d)->name;
	}
	len = (size_t)snprintf(buf, size, "%s", prefix);
	while (n-- > 0) {
		if (len + strlen(comps[n]) + 2 > size)
			return -EXDEV;
		len += (size_t)snprintf(buf + len, size - len, "/%s", comps[n]);
	}
	/* too long for overlay.redirect: EXDEV, like the kernel */
	return len > REDIRECT_MAX ? -EXDEV : 0;
}

/*
 * Set overlay.redirect on a directory (or metacopy file) that moves away
 * from its lower name.
 */
/* overlay.redirect of a file's real object, into node->redirect (if any) */
static void load_redirect(struct ovl_fs *fs, struct ovl_node *node)
{
	char buf[PATH_MAX];
	const char *rname;
	ssize_t n;
	int rdfd;

	if (ovl_real_at(fs, node, &rdfd, &rname))
		return;
	n = ovl_get_ovl_xattr(fs, rdfd, rname, "redirect", buf, sizeof(buf) - 1);
	if (n <= 0)
		return;
	buf[n] = '\0';
	node->redirect = strdup(buf);
}

static int set_redirect(struct ovl_fs *fs, struct ovl_node *node, struct ovl_node *olddir,
			const char *oldname, bool samedir)
{
	char buf[PATH_MAX];
	const char *value;
	char *copy;
	int ret;

	/*
	 * The names of a lower hard link may end up in different dirs: an
	 * absolute redirect (the kernel's ovl_need_absolute_redirect()).
	 */
	if (!S_ISDIR(node->type) && node->lower_nlink > 1)
		samedir = false;
	/* the names of an indexed hard link share one inode, and its redirect */
	if (!S_ISDIR(node->type) && !node->redirect && ovl_nf(node, OVL_NF_INDEXED))
		load_redirect(fs, node);
	if (node->redirect && (samedir || node->redirect[0] == '/'))
		return 0; /* the redirect it has still finds its lower dirs */
	if (samedir) {
		value = node->redirect ? node->redirect : oldname;
	} else {
		/* the name under which the lower dirs are found, from the root */
		ret =
		    lower_path(olddir, node->redirect ? node->redirect : oldname, buf, sizeof(buf));
		if (ret)
			return ret;
		value = buf;
	}
	if (S_ISDIR(node->type)) {
		ret = ovl_set_ovl_xattr(fs, ovl_upper_dirfd(fs, node), NULL, "redirect", value,
					strlen(value));
	} else {
		const char *rname;
		int rdfd;

		ret = ovl_real_at(fs, node, &rdfd, &rname);
		if (!ret)
			ret = ovl_set_ovl_xattr(fs, rdfd, rname, "redirect", value, strlen(value));
	}
	if (ret)
		return ret == -ENOSPC || ret == -E2BIG ? -EXDEV : ret;
	copy = strdup(value);
	if (!copy)
		return -ENOMEM;
	free(node->redirect);
	node->redirect = copy;
	return 0;
}

/* A directory moving to newdir: redirect or opaque it, as the kernel does. */
static int prepare_dir_move(struct ovl_fs *fs, struct ovl_node *node, struct ovl_node *olddir,
			    const char *oldname, struct ovl_node *newdir)
{
	struct ovl_stack *nst = ovl_stack_of(newdir);
	int ret;

	if (ovl_nf(node, OVL_NF_LOWER)) {
		return set_redirect(fs, node, olddir, oldname, olddir == newdir);
	}
	if (!ovl_nf(node, OVL_NF_OPAQUE) && nst->n > 1) {
		ret = ovl_set_ovl_xattr(fs, ovl_upper_dirfd(fs, node), NULL, "opaque", "y", 1);
		if (ret)
			return ret;
		ovl_nf_set(node, OVL_NF_OPAQUE, true);
	}
	return 0;
}

/* Replace a merged target directory by an empty opaque one (ovl_clear_empty). */
static int clear_target_dir(struct ovl_fs *fs, int updfd, const char *name)
{
	char tmp[64];
	struct stat st;
	int ret;

	if (fstatat(updfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(st.st_mode))
		return 0;
	ovl_tmpname(fs, tmp, sizeof(tmp));
	if (mkdirat(fs->work_fd, tmp, 0700) < 0)
		return -errno;
	/*
	 * A copy of the target's attributes, as the kernel's ovl_clear_empty():
	 * if we die between this swap and the rename that follows, the name
	 * shows the old dir's mode, owner, times and xattrs, not a stranger's.
	 */
	ret = ovl_copy_xattrs(fs, updfd, name, fs->work_fd, tmp);
	if (!ret)
		ret = ovl_set_ovl_xattr(fs, fs->work_fd, tmp, "opaque", "y", 1);
	if (!ret && fchownat(fs->work_fd, tmp, st.st_uid, st.st_gid, AT_SYMLINK_NOFOLLOW) < 0)
		ret = -errno;
	if (!ret && fchmodat(fs->work_fd, tmp, st.st_mode & 07777, 0) < 0)
		ret = -errno;
	if (!ret && utimensat(fs->work_fd, tmp, (struct timespec[2]){st.st_atim, st.st_mtim},
			      AT_SYMLINK_NOFOLLOW) < 0)
		ret = -errno;
	if (!ret && renameat2(fs->work_fd, tmp, updfd, name, RENAME_EXCHANGE) < 0)
		ret = -errno;
	ovl_cleanup_tree(fs->work_fd, tmp);
	return ret;
}

static bool can_move_dir(struct ovl_fs *fs, struct ovl_node *node)
{
	return !S_ISDIR(node->type) || !ovl_nf(node, OVL_NF_LOWER) ||
	       fs->config.redirect_dir == OVL_REDIRECT_ON;
}

struct rename_ctx {
	struct ovl_fs *fs;
	struct ovl_node *olddir, *newdir;
	const char *oldname, *newname;
	unsigned int flags;
	struct ovl_node *on, *nn; /* the source, and the target if it exists */
	struct stat ost, nst;
	int pinfd; /* the overwritten target, pinned for its open files */
};

/*
 * A directory with no lower dir and nothing that ever was below it: the
 * upper filesystem's rename decides whether it is empty (the kernel's
 * ovl_pure_upper(), after the copy-ups and redirects have been written).
 */
static bool pure_upper_dir(struct ovl_fs *fs, struct ovl_node *node)
{
	struct ovl_stack *st = ovl_stack_of(node);

	return fs->has_upper && !ovl_nf(node, OVL_NF_LOWER) && st->n == 1 && st->p[0].layer == 0;
}

/*
 * Something with a lower origin moves to another dir: that dir is marked
 * impure (the kernel's ovl_rename()).  Done before the move and again after
 * it, as a readdir in between may have dropped the mark.
 */
static int rename_mark_impure(struct rename_ctx *r)
{
	int ret = 0;

	if (r->olddir == r->newdir)
		return 0;
	if (ovl_nf(r->on, OVL_NF_LOWER))
		ret = ovl_set_impure(r->fs, r->newdir);
	if (!ret && r->nn && (r->flags & RENAME_EXCHANGE) && ovl_nf(r->nn, OVL_NF_LOWER))
		ret = ovl_set_impure(r->fs, r->olddir);
	return ret;
}

static int rename_prepare(struct rename_ctx *r)
{
	struct ovl_fs *fs = r->fs;
	int ret;

	if (!can_move_dir(fs, r->on) ||
	    (r->nn && (r->flags & RENAME_EXCHANGE) && !can_move_dir(fs, r->nn)))
		return -EXDEV;
	if (r->nn && !(r->flags & RENAME_EXCHANGE) && S_ISDIR(r->nn->type) &&
	    !pure_upper_dir(fs, r->nn)) {
		ret = ovl_dir_is_empty(fs, r->nn);
		if (ret)
			return ret;
	}
	ret = copy_up_name(fs, r->olddir, r->oldname, r->on);
	if (!ret)
		ret = ovl_copy_up(fs, r->newdir);
	if (!ret && r->nn && (r->flags & RENAME_EXCHANGE))
		ret = copy_up_name(fs, r->newdir, r->newname, r->nn);
	else if (!ret && r->nn && needs_link_up(fs, r->nn))
		ret = copy_up_name(fs, r->newdir, r->newname, r->nn);
	if (!ret && r->nn && ovl_nf(r->nn, OVL_NF_INDEXED))
		ret = ovl_getattr(fs, r->nn, &r->nst);
	if (!ret && r->nn && !(r->flags & RENAME_EXCHANGE) && ovl_nf(r->nn, OVL_NF_INDEXED))
		ret = ovl_nlink_start(fs, r->nn, r->nst.st_nlink);
	if (ret)
		return ret;
	if (S_ISDIR(r->on->type)) {
		ret = prepare_dir_move(fs, r->on, r->olddir, r->oldname, r->newdir);
		if (ret)
			return ret;
	} else if (atomic_load(&r->on->data)) {
		/* a metacopy file must still find its data below */
		ret = set_redirect(fs, r->on, r->olddir, r->oldname, r->olddir == r->newdir);
		if (ret)
			return ret;
	}
	if (r->nn && (r->flags & RENAME_EXCHANGE)) {
		if (S_ISDIR(r->nn->type))
			ret = prepare_dir_move(fs, r->nn, r->newdir, r->newname, r->olddir);
		else if (atomic_load(&r->nn->data))
			ret =
			    set_redirect(fs, r->nn, r->newdir, r->newname, r->olddir == r->newdir);
		if (ret)
			return ret;
	}
	return rename_mark_impure(r);
}

static int rename_upper(struct rename_ctx *r)
{
	struct ovl_fs *fs = r->fs;
	int oup = ovl_upper_dirfd(fs, r->olddir), nup = ovl_upper_dirfd(fs, r->newdir);
	bool old_lower;
	int wh, ret;

	if (r->flags & RENAME_EXCHANGE)
		return renameat2(oup, r->oldname, nup, r->newname, RENAME_EXCHANGE) < 0 ? -errno
											: 0;
	old_lower = ovl_lower_positive(fs, r->olddir, r->oldname);
	wh = upper_whiteout(nup, r->newname);
	if (wh < 0 && wh != -EEXIST)
		return wh;
	if (wh == -EEXIST && r->nn && S_ISDIR(r->nn->type) && !pure_upper_dir(fs, r->nn)) {
		ret = clear_target_dir(fs, nup, r->newname);
		if (ret)
			return ret;
	}
	if (wh == 1 && (S_ISDIR(r->on->type) || old_lower)) {
		/*
		 * A directory cannot replace the whiteout, and a lower name needs
		 * one left behind: swap them (the kernel's "switch whiteouts").
		 */
		if (renameat2(oup, r->oldname, nup, r->newname, RENAME_EXCHANGE) < 0)
			return -errno;
		return old_lower ? 0 : (unlinkat(oup, r->oldname, 0) < 0 ? -errno : 0);
	}
	if (renameat2(oup, r->oldname, nup, r->newname, old_lower ? RENAME_WHITEOUT : 0) < 0)
		return -errno;
	return 0;
}

static int rename_nodes(struct rename_ctx *r)
{
	struct ovl_fs *fs = r->fs;
	int ret;

	ret = ovl_node_move_name(fs, r->on, r->olddir, r->oldname, r->newdir, r->newname);
	if (ret)
		return ret;
	ovl_node_resalt(fs, r->on, ovl_name_salt(r->newdir, r->newname));
	if (!r->nn)
		return 0;
	if (r->flags & RENAME_EXCHANGE) {
		ret = ovl_node_move_name(fs, r->nn, r->newdir, r->newname, r->olddir, r->oldname);
		if (!ret)
			ovl_node_resalt(fs, r->nn, ovl_name_salt(r->olddir, r->oldname));
		return ret;
	}
	if (!S_ISDIR(r->nn->type))
		index_nlink_drop(fs, r->nn, r->nst.st_nlink - 1);
	ovl_node_drop_name(fs, r->nn, r->newdir, r->newname);
	forget_name(fs, r->nn, &r->nst, r->pinfd);
	r->pinfd = -1;
	return 0;
}

/* One inode of the union?  The names of an indexed hard link are nodes of their own. */
static bool same_inode(struct ovl_fs *fs, const struct ovl_node *a, const struct ovl_node *b)
{
	if (a == b)
		return true;
	return a && b && ovl_hl_group(fs, a) && ovl_hl_group(fs, b) && a->key_dev == b->key_dev &&
	       a->key_ino == b->key_ino;
}

int ovl_rename(struct ovl_fs *fs, struct ovl_node *olddir, const char *oldname,
	       struct ovl_node *newdir, const char *newname, unsigned int flags)
{
	struct rename_ctx r = {.fs = fs,
			       .olddir = olddir,
			       .newdir = newdir,
			       .oldname = oldname,
			       .newname = newname,
			       .flags = flags,
			       .pinfd = -1};
	int ret;

	if (flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE))
		return -EINVAL; /* RENAME_WHITEOUT included, as the kernel */
	if (strlen(newname) > NAME_MAX)
		return -ENAMETOOLONG;
	if (ovl_is_wh_marker(newname))
		return -EINVAL;
	ret = ovl_lookup(fs, olddir, oldname, &r.on, &r.ost);
	if (ret)
		return ret;
	ret = ovl_lookup(fs, newdir, newname, &r.nn, &r.nst);
	if (ret && ret != -ENOENT)
		goto out_old;
	if (ret == -ENOENT) {
		r.nn = NULL;
		ret = (flags & RENAME_EXCHANGE) ? -ENOENT : 0;
		if (ret)
			goto out_old;
	} else if (flags & RENAME_NOREPLACE) {
		ret = -EEXIST;
		goto out;
	}
	if (same_inode(fs, r.nn, r.on) && !(flags & RENAME_EXCHANGE)) {
		ret = 0; /* two names of one file: nothing to do, as rename(2) */
		goto out;
	}
	ret = rename_prepare(&r);
	if (!ret && r.nn && !(flags & RENAME_EXCHANGE))
		r.pinfd = pin_object(fs, r.nn, &r.nst);
	if (!ret) {
		ret = rename_upper(&r);
		/*
		 * Failed after the copy-ups and marks (as the kernel's does): the
		 * kernel's readdir cache must ask again, so that a listing can
		 * drop an overlay.impure nothing needs; and the upper filesystem
		 * may have touched the source dir all the same (ext4 makes the
		 * whiteout of RENAME_WHITEOUT before it finds the target not
		 * empty: the dir's mtime moves), so its attributes are asked again.
		 */
		if (ret && fs->changed && r.olddir != r.newdir)
			fs->changed(fs->changed_ctx, r.newdir);
		if (ret && fs->changed)
			fs->changed(fs->changed_ctx, r.olddir);
	}
	if (!ret)
		rename_mark_impure(&r); /* the move is done: best effort */
	if (!ret) {
		/* no copy-up may walk the parent chains while they change */
		pthread_rwlock_wrlock(&fs->rename_lock);
		ret = rename_nodes(&r);
		pthread_rwlock_unlock(&fs->rename_lock);
	}
out:
	if (r.pinfd >= 0)
		close(r.pinfd);
	if (r.nn)
		ovl_node_forget(fs, r.nn, 1);
out_old:
	ovl_node_forget(fs, r.on, 1);
	return ret;
}
