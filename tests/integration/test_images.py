#!/usr/bin/env python3
"""test_images.py -- lower layers given as squashfs or erofs image files.

What the rigs (rig.py / rig_write.py --images) do not: bad images are
refused with one clear line and leave no mount and no loop device; the
daemon's loop devices go with it, also when it is killed; files of two
images keep distinct st_ino, also with xino=off; several squashfs
lowers (null uuids) make stratafs turn the index off with a warning, as the
kernel does; an upper written over a squashfs image mounts under the kernel
over the same image, loop-mounted.

  test_images.py [--stratafs build/stratafs] [--extra-opts O]

Prints `ok - NAME` / `not ok - NAME: REASON`, then `N passed, N failed`.
"""

import os
import shutil
import signal
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rig import is_mounted  # noqa: E402
from tap import check, suite_main, wait_for  # noqa: E402

TESTS = []


def test(fn):
    TESTS.append(fn)
    return fn


def loops_of(path_prefix):
    """Loop devices backed by files under path_prefix."""
    p = subprocess.run(["losetup", "-l", "-n", "-O", "NAME,BACK-FILE"], capture_output=True, text=True)
    return [line.split()[0] for line in p.stdout.splitlines()
            if len(line.split()) > 1 and line.split()[1].startswith(path_prefix)]


def mksquashfs(src, dst):
    subprocess.run(["mksquashfs", src, dst, "-quiet", "-noappend", "-no-progress"], check=True,
                   capture_output=True)


def tree(root, files):
    for rel, data in files.items():
        p = os.path.join(root, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w") as f:
            f.write(data)


def stratafs(binary, mnt, opts, extra, fg=False):
    os.makedirs(mnt, exist_ok=True)
    if extra:
        opts += "," + extra
    cmd = [binary, "stratafs", mnt, "-o", opts] + (["-f"] if fg else [])
    if fg:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, capture_output=True, text=True)


@test
def bad_images(binary, tmp, extra):
    d = os.path.join(tmp, "bad")
    tree(d + "/src", {"etc/hostname": "box\n"})
    os.makedirs(d + "/empty")
    mksquashfs(d + "/src", d + "/good.sqfs")
    with open(d + "/garbage.img", "wb") as f:
        f.write(os.urandom(8192))
    data = open(d + "/good.sqfs", "rb").read()
    with open(d + "/badcomp.sqfs", "wb") as f:       # an unknown compressor id
        f.write(data[:20] + b"\x09\x00" + data[22:])
    with open(d + "/badblock.sqfs", "wb") as f:      # block size 0
        f.write(data[:12] + b"\0\0\0\0" + data[16:])
    erofs = subprocess.run(["mkfs.erofs", "--quiet", d + "/good.erofs", d + "/src"], capture_output=True)
    cases = [("garbage.img", "is not a directory, nor a squashfs or erofs image"),
             ("badcomp.sqfs", "cannot mount lower layer image"),
             ("badblock.sqfs", "cannot mount lower layer image")]
    if erofs.returncode == 0:
        e = open(d + "/good.erofs", "rb").read()
        with open(d + "/trunc.erofs", "wb") as f:     # the superblock cut off
            f.write(e[:1100])
        cases.append(("trunc.erofs", "cannot mount lower layer image"))
    for name, want in cases:
        mnt = os.path.join(d, "m-" + name)
        p = stratafs(binary, mnt, "lowerdir=%s/%s:%s/empty" % (d, name, d), extra)
        lines = p.stderr.strip().splitlines()
        check("bad image %s: refused with one line naming it" % name,
              p.returncode != 0 and len(lines) == 1 and name in lines[0] and want in lines[0],
              "rc %d, stderr %r" % (p.returncode, p.stderr))
        check("bad image %s: nothing mounted, no loop device left" % name,
              not is_mounted(mnt) and not loops_of(d), "loops %r" % loops_of(d))


@test
def loop_devices_go(binary, tmp, extra):
    d = os.path.join(tmp, "loops")
    tree(d + "/src", {"bin/sh": "#!", "etc/passwd": "root:x:0:0\n"})
    mksquashfs(d + "/src", d + "/root.sqfs")
    os.makedirs(d + "/empty")
    mnt = d + "/m"
    opts = "lowerdir=%s/root.sqfs:%s/empty" % (d, d)
    p = stratafs(binary, mnt, opts, extra)
    check("squashfs image mounts", p.returncode == 0, p.stderr.strip())
    ok = p.returncode == 0 and open(mnt + "/etc/passwd").read() == "root:x:0:0\n"
    check("its files read through the union", ok)
    check("one loop device, read-only, while mounted", len(loops_of(d)) == 1, repr(loops_of(d)))
    check("the image's mount is in no mount table", not any(
        "root.sqfs" in line or ("squashfs" in line and d in line) for line in open("/proc/self/mountinfo")))
    subprocess.run(["umount", mnt], capture_output=True)
    check("the loop device goes with the unmount", wait_for(lambda: not loops_of(d)), repr(loops_of(d)))

    daemon = stratafs(binary, mnt, opts, extra, fg=True)
    mounted = wait_for(lambda: is_mounted(mnt))
    check("mounted again in the foreground", mounted)
    daemon.send_signal(signal.SIGKILL)
    daemon.wait()
    subprocess.run(["umount", "-l", mnt], capture_output=True)
    check("the loop device goes when the daemon is killed", wait_for(lambda: not loops_of(d)),
          repr(loops_of(d)))


@test
def null_uuids(binary, tmp, extra):
    d = os.path.join(tmp, "uuid")
    tree(d + "/a", {"f": "a\n"})
    tree(d + "/b", {"g": "b\n"})
    mksquashfs(d + "/a", d + "/a.sqfs")
    mksquashfs(d + "/b", d + "/b.sqfs")
    for x in ("u", "w"):
        os.makedirs(os.path.join(d, x))
    mnt = d + "/m"
    p = stratafs(binary, mnt, "lowerdir=%s/a.sqfs:%s/b.sqfs,upperdir=%s/u,workdir=%s/w" % (d, d, d, d),
                 extra)
    check("two squashfs lowers: mounted, with a warning about their null uuids",
          p.returncode == 0 and "null uuid" in p.stderr and "index=off" in p.stderr, p.stderr.strip())
    if p.returncode == 0:
        os.link(mnt + "/f", mnt + "/f2")
        nl = [os.stat(mnt + "/f").st_nlink, os.stat(mnt + "/f2").st_nlink]
        check("a link of a copied-up file counts 2 through both names", nl == [2, 2], repr(nl))
        subprocess.run(["umount", mnt], capture_output=True)
    check("no index made", not os.path.exists(d + "/w/index") or not os.listdir(d + "/w/index"))


@test
def xino_off_unique(binary, tmp, extra):
    """Two squashfs images number their inodes alike; one st_dev in FUSE."""
    d = os.path.join(tmp, "xino")
    tree(d + "/a", {"x/one": "1\n", "x/two": "2\n"})
    tree(d + "/b", {"y/one": "1\n", "y/two": "2\n"})
    mksquashfs(d + "/a", d + "/a.sqfs")
    mksquashfs(d + "/b", d + "/b.sqfs")
    for opt in ("", ",xino=off"):
        mnt = d + "/m"
        p = stratafs(binary, mnt, "lowerdir=%s/a.sqfs:%s/b.sqfs%s" % (d, d, opt), extra)
        if p.returncode != 0:
            check("xino%s: mounted" % opt, False, p.stderr.strip())
            continue
        names = ["x/one", "x/two", "y/one", "y/two"]
        inos = [os.lstat(os.path.join(mnt, n)).st_ino for n in names]
        subprocess.run(["umount", mnt], capture_output=True)
        check("layers on two filesystems%s: every file its own st_ino" % opt,
              len(set(inos)) == len(inos), repr(dict(zip(names, inos))))


@test
def kernel_reads_upper(binary, tmp, extra):
    d = os.path.join(tmp, "interop")
    tree(d + "/src", {"etc/config/network": "lan\n", "etc/banner": "hi\n", "www/index.html": "<p>\n"})
    os.link(d + "/src/etc/banner", d + "/src/etc/motd")
    mksquashfs(d + "/src", d + "/rom.sqfs")
    for x in ("u", "w", "rom", "k"):
        os.makedirs(os.path.join(d, x))
    mnt = d + "/m"
    p = stratafs(binary, mnt, "lowerdir=%s/rom.sqfs,upperdir=%s/u,workdir=%s/w" % (d, d, d), extra)
    check("OpenWrt-style root: squashfs image + upper", p.returncode == 0, p.stderr.strip())
    if p.returncode != 0:
        return
    with open(mnt + "/etc/config/network", "a") as f:
        f.write("wan\n")
    with open(mnt + "/etc/banner", "a") as f:
        f.write("there\n")
    os.unlink(mnt + "/www/index.html")
    os.rename(mnt + "/etc/config", mnt + "/etc/config.old")
    subprocess.run(["umount", mnt], capture_output=True)
    subprocess.run(["mount", "-o", "loop,ro", d + "/rom.sqfs", d + "/rom"], check=True)
    try:
        k = subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                            "lowerdir=%s/rom,upperdir=%s/u,workdir=%s/w,index=on,redirect_dir=on"
                            % (d, d, d), d + "/k"], capture_output=True, text=True)
        check("the kernel mounts the upper over the loop-mounted image", k.returncode == 0, k.stderr.strip())
        if k.returncode == 0:
            got = {
                "network": open(d + "/k/etc/config.old/network").read(),
                "motd": open(d + "/k/etc/motd").read(),
                "nlink": os.stat(d + "/k/etc/motd").st_nlink,
                "index.html": os.path.exists(d + "/k/www/index.html"),
                "config": os.path.exists(d + "/k/etc/config"),
            }
            want = {"network": "lan\nwan\n", "motd": "hi\nthere\n", "nlink": 2, "index.html": False,
                    "config": False}
            check("the kernel sees the changes (redirect, whiteout, indexed hard link)", got == want,
                  "got %r" % got)
            subprocess.run(["umount", d + "/k"], capture_output=True)
    finally:
        subprocess.run(["umount", d + "/rom"], capture_output=True)


if __name__ == "__main__":
    if not shutil.which("mksquashfs"):
        print("# no mksquashfs here: image tests skipped")
        print("0 passed, 0 failed, 1 skipped")
        sys.exit(0)
    sys.exit(suite_main(TESTS, "strata-img-"))
