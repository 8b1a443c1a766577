/*
 * mount.c - attach a /dev/fuse connection to a mountpoint and detach it.
 *
 * As root: mount(2) with the fd= data string.  As any other user: run
 * fusermount3 with _FUSE_COMMFD and receive the device fd over a socket.
 */
#define _GNU_SOURCE
#include "fw_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static int mount_root(const struct fw_mount_opts *mo, char *err, size_t errlen)
{
	char data[256], type[64];
	int fd, ret;

	fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		ret = -errno;
		snprintf(err, errlen, "cannot open '/dev/fuse': %s", strerror(errno));
		return ret;
	}
	snprintf(data, sizeof(data), "fd=%d,rootmode=%o,user_id=%u,group_id=%u%s%s", fd,
		 (unsigned int)(mo->rootmode & S_IFMT), (unsigned int)getuid(),
		 (unsigned int)getgid(), mo->allow_other ? ",allow_other" : "",
		 mo->default_permissions ? ",default_permissions" : "");
	snprintf(type, sizeof(type), "fuse%s%s", mo->subtype ? "." : "",
		 mo->subtype ? mo->subtype : "");
	if (mount(mo->fsname, mo->mountpoint, type, mo->flags, data) < 0) {
		ret = -errno;
		snprintf(err, errlen, "cannot mount on '%s': %s", mo->mountpoint, strerror(errno));
		close(fd);
		return ret;
	}
	return fd;
}

/* receive one fd sent with SCM_RIGHTS */
static int recv_fd(int sock)
{
	char cbuf[CMSG_SPACE(sizeof(int))], byte;
	struct iovec iov = {.iov_base = &byte, .iov_len = 1};
	struct msghdr msg = {0};
	struct cmsghdr *cm;
	int fd;

	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	msg.msg_control = cbuf;
	msg.msg_controllen = sizeof(cbuf);
	while (recvmsg(sock, &msg, 0) < 0) {
		if (errno != EINTR)
			return -1;
	}
	cm = CMSG_FIRSTHDR(&msg);
	if (!cm || cm->cmsg_type != SCM_RIGHTS)
		return -1;
	memcpy(&fd, CMSG_DATA(cm), sizeof(fd));
	return fd;
}

static int mount_user(const struct fw_mount_opts *mo, char *err, size_t errlen)
{
	char opts[512], commfd[16];
	int sv[2], fd, status;
	pid_t pid;

	snprintf(opts, sizeof(opts), "fsname=%s%s%s%s%s%s%s%s", mo->fsname,
		 mo->subtype ? ",subtype=" : "", mo->subtype ? mo->subtype : "",
		 mo->allow_other ? ",allow_other" : "",
		 mo->default_permissions ? ",default_permissions" : "",
		 (mo->flags & MS_RDONLY) ? ",ro" : "", (mo->flags & MS_NOEXEC) ? ",noexec" : "",
		 (mo->flags & MS_NOATIME) ? ",noatime" : "");
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) {
		snprintf(err, errlen, "socketpair: %s", strerror(errno));
		return -errno;
	}
	pid = fork();
	if (pid < 0) {
		snprintf(err, errlen, "fork: %s", strerror(errno));
		close(sv[0]);
		close(sv[1]);
		return -EAGAIN;
	}
	if (pid == 0) {
		close(sv[0]);
		snprintf(commfd, sizeof(commfd), "%d", sv[1]);
		setenv("_FUSE_COMMFD", commfd, 1);
		execlp("fusermount3", "fusermount3", "-o", opts, "--", mo->mountpoint,
		       (char *)NULL);
		_exit(127);
	}
	close(sv[1]);
	fd = recv_fd(sv[0]);
	close(sv[0]);
	waitpid(pid, &status, 0);
	if (fd < 0) {
		snprintf(err, errlen, "fusermount3 failed to mount '%s'", mo->mountpoint);
		return -EPERM;
	}
	fcntl(fd, F_SETFD, FD_CLOEXEC);
	return fd;
}

int fw_mount(const struct fw_mount_opts *mo, char *err, size_t errlen)
{
	if (geteuid() == 0)
		return mount_root(mo, err, errlen);
	return mount_user(mo, err, errlen);
}

int fw_unmount(const char *mountpoint)
{
	int status;
	pid_t pid;

	if (geteuid() == 0) {
		if (umount2(mountpoint, UMOUNT_NOFOLLOW) == 0)
			return 0;
		if (errno == EINVAL || errno == ENOENT)
			return -errno; /* not mounted (any more) */
		if (umount2(mountpoint, MNT_DETACH | UMOUNT_NOFOLLOW) == 0)
			return 0;
		return -errno;
	}
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		execlp("fusermount3", "fusermount3", "-u", "-z", "-q", "--", mountpoint,
		       (char *)NULL);
		_exit(127);
	}
	if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status))
		return -EIO;
	return 0;
}
