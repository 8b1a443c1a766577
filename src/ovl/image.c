/*
 * image.c - lower layers that are filesystem images (squashfs, erofs).
 *
 * A lower layer given as a regular file is mounted by the kernel, read-only
 * and detached (fsopen/fsmount: the mount is in no tree, nobody else sees
 * it), and the layer is the root directory of that mount.  erofs reads the
 * file itself where the kernel can (CONFIG_EROFS_FS_BACKED_BY_FILE);
 * squashfs, and erofs elsewhere, get a read-only loop device that detaches
 * itself once the mount is gone (LO_FLAGS_AUTOCLEAR).  The mount is gone
 * when the last fd in it closes: when the union is freed, or the daemon
 * exits, killed or not.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/loop.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <unistd.h>

#include "ovl.h"

#define EROFS_MAGIC 0xE0F5E1E2u

/* The filesystem type of an image, by its magic number; NULL if none known. */
static const char *image_type(int fd)
{
	unsigned char b[4];

	if (pread(fd, b, sizeof(b), 0) == 4 && !memcmp(b, "hsqs", 4))
		return "squashfs";
	if (pread(fd, b, sizeof(b), 1024) == 4 &&
	    ((uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24) ==
		EROFS_MAGIC)
		return "erofs";
	return NULL;
}

/*
 * The kernel's last error message about a filesystem context ("e squashfs:
 * ..."), without its "e " prefix, into msg; "" if it left none.
 */
static void kernel_message(int fsfd, char *msg, size_t len)
{
	char buf[256];
	ssize_t n;

	msg[0] = '\0';
	while ((n = read(fsfd, buf, sizeof(buf) - 1)) > 0) {
		buf[n] = '\0';
		if (n > 2 && buf[0] == 'e' && buf[1] == ' ') {
			n = (ssize_t)strnlen(buf + 2, len - 1);
			while (n > 0 && (buf[n + 1] == '\n' || buf[n + 1] == ' '))
				n--; /* some end in a newline */
			memcpy(msg, buf + 2, (size_t)n);
			msg[n] = '\0';
		}
	}
}

/* Mount source as type, read-only and detached; *out: its root dir. */
static int mount_detached(const char *type, const char *source, int *out, char *msg, size_t len)
{
	int fsfd, mfd, ret = 0;

	msg[0] = '\0';
	fsfd = fsopen(type, FSOPEN_CLOEXEC);
	if (fsfd < 0)
		return -errno;
	if (fsconfig(fsfd, FSCONFIG_SET_STRING, "source", source, 0) < 0 ||
	    fsconfig(fsfd, FSCONFIG_SET_FLAG, "ro", NULL, 0) < 0 ||
	    fsconfig(fsfd, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0) {
		ret = -errno;
		kernel_message(fsfd, msg, len);
		goto out;
	}
	mfd = fsmount(fsfd, FSMOUNT_CLOEXEC, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NODEV);
	if (mfd < 0) {
		ret = -errno;
		goto out;
	}
	/* fsmount() gives an O_PATH fd: the layer needs one it can list */
	*out = openat(mfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (*out < 0)
		ret = -errno;
	close(mfd);
out:
	close(fsfd);
	return ret;
}

/*
 * A free loop device backed read-only by imgfd, open in *loopfd, its path
 * in dev.  Another process may take the free device first: try again.
 */
static int loop_attach(int imgfd, const char *path, int *loopfd, char *dev, size_t len)
{
	struct loop_config cfg;
	int ctl, n, fd, tries, ret = -EBUSY;

	ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
	if (ctl < 0)
		return -errno;
	for (tries = 0; tries < 32 && ret == -EBUSY; tries++) {
		n = ioctl(ctl, LOOP_CTL_GET_FREE);
		if (n < 0) {
			ret = -errno;
			break;
		}
		snprintf(dev, len, "/dev/loop%d", n);
		fd = open(dev, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			ret = -errno;
			break;
		}
		memset(&cfg, 0, sizeof(cfg));
		cfg.fd = (uint32_t)imgfd;
		cfg.info.lo_flags = LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR;
		snprintf((char *)cfg.info.lo_file_name, sizeof(cfg.info.lo_file_name), "%s", path);
		if (ioctl(fd, LOOP_CONFIGURE, &cfg) == 0) {
			*loopfd = fd;
			ret = 0;
			break;
		}
		ret = -errno;
		close(fd);
	}
	close(ctl);
	return ret;
}

/* Mount an image through a loop device; the device goes with the mount. */
static int mount_looped(const char *type, int imgfd, const char *path, int *out, char *msg,
			size_t len)
{
	char dev[32];
	int loopfd = -1, ret;

	msg[0] = '\0';
	ret = loop_attach(imgfd, path, &loopfd, dev, sizeof(dev));
	if (ret) {
		snprintf(msg, len, "no loop device: %s", strerror(-ret));
		return ret;
	}
	ret = mount_detached(type, dev, out, msg, len);
	/* the mount holds the device now; on failure this last close frees it */
	close(loopfd);
	return ret;
}

int ovl_image_mount(int imgfd, const char *path, int *out, char *err, size_t errlen)
{
	char src[32], msg[200];
	const char *type;
	int ret;

	type = image_type(imgfd);
	if (!type) {
		snprintf(err, errlen,
			 "lower layer '%s' is not a directory, nor a squashfs or erofs image",
			 path);
		return -ENOTDIR;
	}
	ret = -ENOTBLK;
	if (!strcmp(type, "erofs")) {
		snprintf(src, sizeof(src), "/proc/self/fd/%d", imgfd);
		ret = mount_detached(type, src, out, msg, sizeof(msg));
	}
	if (ret == -ENOTBLK || ret == -EINVAL)
		ret = mount_looped(type, imgfd, path, out, msg, sizeof(msg));
	if (ret)
		snprintf(err, errlen, "cannot mount lower layer image '%s' (%s): %s", path, type,
			 msg[0] ? msg : strerror(-ret));
	return ret;
}
