#!/usr/bin/env python3
"""rig_write.py -- write-mode differential rig: kernel overlayfs vs stratafs.

Builds a 3-layer lower stack (files of various sizes up to a few MB, nested
and merged dirs, symlinks, lower hard links, fifos, a char device, user.*
xattrs, a whiteout, an opaque dir), makes two identical copies (k/ and s/),
each with a fresh upper and work dir, mounts the kernel overlay on k and
stratafs on s, and runs one scripted workload (the function `workload`,
called with the mountpoint) on both.  Every step records its result
(value or errno); the two step logs are compared, then the merged views
(rig.walk_mount: type, mode, owner, size, nlink, content, symlink target,
xattrs, readdir names, st_ino classes, non-directory mtimes: exact when
older than the run, else just "recent"; atime and directory mtimes are
ignored), the real upper dirs (type, mode, owner, size, content, target,
rdev, nlink except of whiteouts, all xattrs; overlay.uuid by presence only;
overlay.origin/upper and the index entry names are file handles whose bytes
differ per copy: they are decoded and compared by header and by the layer
path they name, or with --origin-presence-only by presence), the work/index
entries and what is left in work/work.  Both are then unmounted and
remounted, and everything is compared again (if the kernel refuses the
remount, stratafs must refuse too).

One line per difference (`DIFF ...`), then
`rig_write: N steps, M entries compared, D differences`; exit 1 if D > 0.

  rig_write.py [--stratafs build/stratafs] [--workdir DIR] [--extra-opts O]
  rig_write.py --kernel-vs-kernel          # validates the rig: 0 differences
  rig_write.py --extra-opts metacopy=on --kernel-opts metacopy=on
  rig_write.py --kernel-base-opts "" --kernel-opts userxattr,index=off,redirect_dir=nofollow \
               --extra-opts userxattr,index=off,redirect_dir=nofollow
  rig_write.py --images squashfs           # each lower layer an image file

With --images, each side's lower layers are made into squashfs or erofs
images: the kernel gets them loop-mounted, stratafs gets the image files
(its own side's images are loop-mounted too, only to decode file handles).

Other tests import build_lower, workload, merged_walk, upper_walk and the
Mnt class from here.  Python 3.11 stdlib only; must run as root.
"""

import argparse
import ctypes
import errno
import fcntl
import hashlib
import io
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rig  # noqa: E402
from rig import Layers, det_bytes, is_mounted, walk_mount, compare, show, short, unescape_mountinfo  # noqa: E402

MiB = 1024 * 1024
B, M, T = 2, 1, 0                 # bottom, middle, top layer (lowerdir=l0:l1:l2)
NLAYERS = 3
KERNEL_OPTS = "redirect_dir=on,index=on"
PRESENCE_ONLY = ("trusted.overlay.origin", "trusted.overlay.uuid")
T_FIXED = 1_300_000_000           # explicit timestamps set by the workload


def log(msg):
    print("rig_write: " + msg, file=sys.stderr, flush=True)


def ename(e):
    return errno.errorcode.get(e, str(e))


# --------------------------------------------------------------------------
# libc calls os does not have
# --------------------------------------------------------------------------
libc = ctypes.CDLL(None, use_errno=True)
libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
libc.renameat2.restype = ctypes.c_int
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
libc.fallocate.restype = ctypes.c_int
AT_FDCWD = -100
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 1, 2


def renameat2(old, new, flags):
    if libc.renameat2(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), flags) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def fallocate(fd, mode, off, length):
    if libc.fallocate(fd, mode, off, length) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


# --------------------------------------------------------------------------
# the lower stack
# --------------------------------------------------------------------------
def build_lower(root):
    """Build root/l0 (top) .. root/l2 (bottom); deterministic, mtimes stamped."""
    old = os.umask(0)
    t = Layers(root, NLAYERS, aufs=False)
    try:
        # regular files, merged "files" dir in all three layers
        t.d(B, "files", 0o755)
        t.d(M, "files", 0o755, 0, 0, xattrs={"user.layer": b"middle"})
        t.d(T, "files", 0o755)
        t.f(B, "files/small", b"hello\n")
        t.f(B, "files/empty", b"")
        t.f(B, "files/medium", det_bytes("medium", 100_000))
        t.f(B, "files/big", det_bytes("big", 3 * MiB + 5))
        t.f(B, "files/big2", det_bytes("big2", 4 * MiB + 1), 0o640)
        t.f(B, "files/trunc_ext", b"short")
        t.f(B, "files/mode600", b"m", 0o600, 1000, 1000)
        t.f(B, "files/owned", b"setuid file", 0o4755)
        t.f(B, "files/ut", b"u")
        t.f(B, "files/xa", b"x", xattrs={"user.a": b"1", "user.b": b"2"})
        t.f(B, "files/esc", b"e")
        t.f(B, "files/del", b"d")
        t.f(B, "files/tolink", b"to link")
        t.f(B, "files/over_me", b"overwritten")
        t.f(B, "files/openunl", det_bytes("openunl", 10_000))
        t.f(B, "files/falloc", det_bytes("falloc", 5000))
        t.f(B, "files/cfr_dst", det_bytes("cfr", 20_000))
        t.f(B, "files/excl", b"exclusive")
        t.f(B, "files/ro", b"read only", 0o444, 7, 8)
        t.f(M, "files/mid", b"mid", 0o640, 5, 6)
        t.f(M, "files/del_mid", b"dm")
        t.f(T, "files/top", b"top")
        t.f(T, "files/del_top", b"dt")
        # a merged dir (two layers) with nested content
        t.f(B, "merged/b_only", b"b")
        t.f(B, "merged/shared", b"bottom version")
        t.f(M, "merged/shared", b"middle version")
        t.f(M, "merged/m_only", b"m")
        t.f(B, "merged/sub/deep/file", det_bytes("deep", 3000))
        t.f(M, "merged/sub/m", b"sub m")
        t.d(B, "merged/emptysub", 0o711)
        # xattrs on dirs and files
        t.d(B, "xdir", 0o755, xattrs={"user.d": b"bottom", "user.keep": b"k"})
        t.d(M, "xdir", 0o755, xattrs={"user.d": b"middle"})
        t.f(B, "xdir/f", b"f", xattrs={"user.f": b"\x00\x01binary"})
        # lower hard links: a pair in one dir, one across dirs, one more pair
        t.f(B, "hl/p1", b"pair")
        t.link(B, "hl/p1", B, "hl/p2")
        t.f(B, "hl/q1", b"across dirs")
        t.link(B, "hl/q1", B, "hl2/q2")
        t.f(B, "hl/r1", b"r pair")
        t.link(B, "hl/r1", B, "hl/r2")
        # symlinks
        t.sym(B, "sym/rel", "../files/small")
        t.sym(B, "sym/abs", "/etc/hostname")
        t.sym(B, "sym/dangling", "no/such/thing", 1000, 1000)
        t.sym(M, "sym/mid", "files")
        # special files
        t.node(B, "dev/fifo", stat.S_IFIFO, 0o644)
        t.node(B, "dev/fifo2", stat.S_IFIFO, 0o600, 0, 1000, 1000)
        t.node(B, "dev/null", stat.S_IFCHR, 0o666, os.makedev(1, 3))
        # whiteouts (middle layer hides bottom file and dir)
        t.f(B, "wh/gone_file", b"hidden")
        t.f(B, "wh/gone_dir/x", b"hidden")
        t.f(B, "wh/keep", b"keep")
        t.d(M, "wh")
        t.wh(M, "wh/gone_file")
        t.wh(M, "wh/gone_dir")
        # opaque dir
        t.f(B, "opq/below", b"hidden by opaque")
        t.f(B, "opq/sub/below", b"hidden")
        t.d(M, "opq", 0o755)
        t.opaque(M, "opq")
        t.f(M, "opq/above", b"above")
        # a merged dir to empty, remove and re-create
        t.f(B, "rmd/a", b"a")
        t.f(B, "rmd/sub/b", b"b")
        t.f(M, "rmd/c", b"c")
        t.d(M, "rmd/sub")
        t.f(T, "rmd/t", b"t")
        t.d(B, "emptydir", 0o700)
        # rename material
        for n in ("f1", "f2", "src", "target", "nr_src", "nr_dst", "over_dir"):
            t.f(B, "ren/" + n, n.encode())
        t.f(B, "ren/ex_a", b"exchange A")
        t.f(M, "ren/ex_b", b"exchange B")
        t.f(B, "ren/dir_lower/x", b"x")
        t.f(B, "ren/dir_lower/sub/y", b"y")
        t.f(B, "ren/dir_merged/b", b"b")
        t.f(M, "ren/dir_merged/m", b"m")
        t.f(B, "ren/twice/t", b"t")
        t.f(M, "ren/twice/sub/u", b"u")
        t.f(B, "ren/exd1/e", b"e")
        t.f(B, "ren/full/z", b"z")
        t.d(B, "dest", 0o755)
        # things the tar archive collides with
        t.f(B, "tarx/d0/lower_a", b"lower a")
        t.f(M, "tarx/d1/s1/lower_b", b"lower b")
        t.f(B, "tarx/d2/s0/f0", b"lower version of f0")
        t.f(B, "tarx/d3/s1/f9", b"lower file replaced by a symlink")
        t.d(B, "tarx/d4/s4", 0o700, 1000, 1000)
    finally:
        t.close()
        os.umask(old)
    stamp(root)


def stamp(root):
    """Deterministic mtimes, all well before any run (2014..2020); the names
    of a hard link share one value."""
    for L in range(NLAYERS):
        top = os.path.join(root, "l%d" % L)
        for dirpath, dirnames, filenames, dfd in os.fwalk(top, topdown=False, follow_symlinks=False):
            rel = os.path.relpath(dirpath, top)
            for name in dirnames + filenames + ["."]:
                st = os.lstat(name, dir_fd=dfd)
                h = int.from_bytes(hashlib.sha256(("%d:%s/%s" % (L, rel, name)).encode()).digest()[:8], "big")
                t = 1_400_000_000 * 10**9 + h % (200_000_000 * 10**9)
                if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1:
                    t = 1_500_000_000_123_456_789
                os.utime(name, ns=(t, t), dir_fd=dfd, follow_symlinks=False)


def lowerdirs(root):
    return [os.path.join(root, "l%d" % i) for i in range(NLAYERS)]


# --------------------------------------------------------------------------
# the workload
# --------------------------------------------------------------------------
def digest(b):
    return "sha:%s/%d" % (hashlib.sha256(b).hexdigest()[:16], len(b))


def fmt(v):
    if isinstance(v, bytes):
        return repr(v) if len(v) <= 48 else digest(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(fmt(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join("%s: %s" % (k, fmt(v[k])) for k in sorted(v)) + "}"
    return repr(v)


class Steps:
    """Runs workload steps and records ("name", "ok VALUE" / "err ERRNO")."""

    def __init__(self, mnt, t_recent):
        self.mnt = mnt
        self.t_recent = t_recent
        self.log = []
        self.fds = {}

    def p(self, rel):
        return os.path.join(self.mnt, rel)

    def __call__(self, name, fn, *args):
        try:
            v = fn(*args)
            res = "ok" if v is None else "ok " + fmt(v)
        except OSError as e:
            res = "err " + ename(e.errno)
        except Exception as e:   # noqa: BLE001 -- recorded, compared
            res = "exc %s: %s" % (type(e).__name__, str(e).replace(self.mnt, "MNT"))
        self.log.append((name, res))

    # -- helpers used by steps --------------------------------------------------
    def mtime_class(self, ns):
        return "recent" if ns >= self.t_recent else ns

    def st(self, rel):
        s = os.lstat(self.p(rel))
        out = "%s %04o nlink=%d uid=%d gid=%d" % (
            stat.filemode(s.st_mode)[0], stat.S_IMODE(s.st_mode), s.st_nlink, s.st_uid, s.st_gid)
        if not stat.S_ISDIR(s.st_mode):
            out += " size=%d mtime=%s" % (s.st_size, self.mtime_class(s.st_mtime_ns))
        return out

    def fst(self, key):
        s = os.fstat(self.fds[key])
        return "nlink=%d size=%d" % (s.st_nlink, s.st_size)

    def read(self, rel):
        with open(self.p(rel), "rb") as fh:
            return fh.read()

    def write(self, rel, data, flags, off=None, mode=0o644):
        fd = os.open(self.p(rel), flags | os.O_CLOEXEC, mode)
        try:
            return os.pwrite(fd, data, off) if off is not None else os.write(fd, data)
        finally:
            os.close(fd)

    def ls(self, rel):
        return sorted(os.listdir(self.p(rel)))

    def xattrs(self, rel):
        path = self.p(rel)
        return {k: os.getxattr(path, k, follow_symlinks=False)
                for k in sorted(os.listxattr(path, follow_symlinks=False))}

    def open(self, key, rel, flags, mode=0o644):
        self.fds[key] = os.open(self.p(rel), flags | os.O_CLOEXEC, mode)

    def close(self, key):
        os.close(self.fds.pop(key))

    def close_all(self):
        for k in list(self.fds):
            try:
                os.close(self.fds.pop(k))
            except OSError:
                pass

    def rmtree(self, rel):
        errs = []
        shutil.rmtree(self.p(rel), onerror=lambda fn, path, exc: errs.append(
            (fn.__name__, os.path.relpath(path, self.mnt),
             ename(exc[1].errno) if isinstance(exc[1], OSError) else type(exc[1]).__name__)))
        return errs or None


def make_tar():
    """A deterministic archive: tarx/d0..d5/s0..s4/f0..f9 (files, a symlink
    and a hard link per subdir), some paths colliding with lower objects."""
    buf = io.BytesIO()
    n = [0]

    def add(tf, name, kind, data=b"", mode=0o644, uid=0, gid=0, link=""):
        ti = tarfile.TarInfo(name)
        ti.type = kind
        ti.mode, ti.uid, ti.gid = mode, uid, gid
        ti.uname = ti.gname = ""
        ti.mtime = 1_600_000_000 + n[0]
        n[0] += 1
        ti.linkname = link
        if kind == tarfile.REGTYPE:
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
        else:
            tf.addfile(ti)

    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        add(tf, "tarx", tarfile.DIRTYPE, mode=0o755)
        for d in range(6):
            add(tf, "tarx/d%d" % d, tarfile.DIRTYPE, mode=0o755 if d % 2 == 0 else 0o750,
                uid=1000 if d == 3 else 0, gid=1000 if d == 3 else 0)
            for s in range(5):
                sd = "tarx/d%d/s%d" % (d, s)
                add(tf, sd, tarfile.DIRTYPE, mode=0o755 if s != 4 else 0o775)
                for f in range(10):
                    name = "%s/f%d" % (sd, f)
                    if f == 9:
                        add(tf, name, tarfile.SYMTYPE, link="f0")
                    elif f == 8 and s in (0, 1):
                        add(tf, name, tarfile.LNKTYPE, link=sd + "/f1")
                    else:
                        size = (d * 977 + s * 131 + f * 37) % 6000
                        own = 1000 if (d + s + f) % 3 == 0 else 0
                        add(tf, name, tarfile.REGTYPE, det_bytes(name, size),
                            (0o644, 0o600, 0o755, 0o640)[(d + f) % 4], own, own)
    return buf.getvalue()


TAR = None


def workload(mnt, t_recent=None, keep_open=True):
    """The scripted workload.  Returns the Steps object (log, open fds)."""
    global TAR
    if TAR is None:
        TAR = make_tar()
    S = Steps(mnt, t_recent if t_recent is not None else time.time_ns() - 5 * 10**9)
    p = S.p
    W, A, RW = os.O_WRONLY, os.O_WRONLY | os.O_APPEND, os.O_RDWR

    # -- data copy-up -------------------------------------------------------
    S("append lower small", S.write, "files/small", b"appended\n", A)
    S("read small", S.read, "files/small")
    S("pwrite lower medium", S.write, "files/medium", b"PWRITE", RW, 5000)
    S("read medium", S.read, "files/medium")
    S("truncate lower big to 1M", os.truncate, p("files/big"), MiB)
    S("stat big", S.st, "files/big")
    S("O_TRUNC open+write lower big2", S.write, "files/big2", b"new content", W | os.O_TRUNC)
    S("read big2", S.read, "files/big2")
    S("truncate-extend lower trunc_ext", os.truncate, p("files/trunc_ext"), 2 * MiB + 3)
    S("read trunc_ext", S.read, "files/trunc_ext")
    S("open O_CREAT existing lower", S.write, "files/excl", b"E", W | os.O_CREAT)
    S("open O_CREAT|O_EXCL existing lower", S.write, "files/excl", b"E", W | os.O_CREAT | os.O_EXCL)
    S("open rdonly lower (no copy-up)", S.read, "files/empty")
    S("write to lower 0444 file as root", S.write, "files/ro", b"root writes", A)
    S("stat ro", S.st, "files/ro")

    # -- metadata copy-up ---------------------------------------------------
    S("chmod lower file", os.chmod, p("files/mode600"), 0o640)
    S("stat mode600", S.st, "files/mode600")
    S("chown lower setuid file", os.chown, p("files/owned"), 1234, 5678)
    S("stat owned", S.st, "files/owned")
    S("utime lower file", lambda: os.utime(p("files/ut"), ns=(T_FIXED * 10**9 + 1, T_FIXED * 10**9 + 2)))
    S("stat ut", lambda: os.lstat(p("files/ut")).st_mtime_ns)
    S("chmod middle-layer file", os.chmod, p("files/mid"), 0o600)
    S("chmod lower dir", os.chmod, p("merged/sub"), 0o700)
    S("chown merged dir", os.chown, p("merged"), 1000, 1000)
    S("stat merged", S.st, "merged")
    S("utime lower dir", lambda: os.utime(p("merged/emptysub"), ns=(T_FIXED * 10**9, T_FIXED * 10**9)))
    S("lchown lower symlink", lambda: os.chown(p("sym/rel"), 1000, 1000, follow_symlinks=False))
    S("utime lower symlink", lambda: os.utime(p("sym/abs"), ns=(T_FIXED * 10**9 + 5,) * 2, follow_symlinks=False))
    S("chmod lower fifo", os.chmod, p("dev/fifo"), 0o600)
    S("chown lower char dev", os.chown, p("dev/null"), 3, 3)

    # -- xattrs ---------------------------------------------------------------
    S("setxattr user on lower file", os.setxattr, p("files/xa"), "user.new", b"new value")
    S("removexattr user on lower file", os.removexattr, p("files/xa"), "user.a")
    S("xattrs xa", S.xattrs, "files/xa")
    S("removexattr missing", os.removexattr, p("files/xa"), "user.nope")
    S("setxattr user on merged dir", os.setxattr, p("xdir"), "user.dnew", b"dir value")
    S("removexattr user on merged dir", os.removexattr, p("xdir"), "user.d")
    S("xattrs xdir", S.xattrs, "xdir")
    S("setxattr trusted.overlay.foo on lower file", os.setxattr, p("files/esc"), "trusted.overlay.foo", b"bar")
    S("getxattr trusted.overlay.foo", os.getxattr, p("files/esc"), "trusted.overlay.foo")
    S("setxattr trusted.overlay.opaque on dir", os.setxattr, p("merged/emptysub"), "trusted.overlay.opaque", b"y")
    S("xattrs emptysub", S.xattrs, "merged/emptysub")
    S("setxattr trusted.overlay.foo on dir", os.setxattr, p("xdir"), "trusted.overlay.foo", b"dirbar")
    S("getxattr missing", os.getxattr, p("files/small"), "user.missing")
    S("setxattr XATTR_CREATE existing", os.setxattr, p("files/xa"), "user.b", b"x", os.XATTR_CREATE)
    S("setxattr XATTR_REPLACE missing", os.setxattr, p("files/xa"), "user.zz", b"x", os.XATTR_REPLACE)
    S("lsetxattr trusted on lower symlink", lambda: os.setxattr(p("sym/dangling"), "trusted.s", b"s",
                                                                   follow_symlinks=False))

    # -- creation -------------------------------------------------------------
    S("mkdir new", os.mkdir, p("new"), 0o750)
    S("mkdir nested", os.mkdir, p("new/nested"), 0o700)
    S("create new file", S.write, "new/file", det_bytes("newfile", 70_000), W | os.O_CREAT | os.O_EXCL, 0o640)
    S("mknod fifo", os.mknod, p("new/fifo"), stat.S_IFIFO | 0o640)
    S("mknod char 1:3", os.mknod, p("new/null"), stat.S_IFCHR | 0o600, os.makedev(1, 3))
    S("mknod char 0:0 (whiteout)", os.mknod, p("new/wh"), stat.S_IFCHR | 0o600, 0)
    S("mkfifo in lower dir", os.mkfifo, p("dev/fifo3"), 0o600)
    S("symlink", os.symlink, "some/target", p("new/sym"))
    S("symlink in lower dir", os.symlink, "../files/top", p("sym/new"))
    S("link upper file", os.link, p("new/file"), p("new/file_link"))
    S("stat new/file", S.st, "new/file")
    S("link lower file (copy-up)", os.link, p("files/tolink"), p("files/linked"))
    S("stat tolink", S.st, "files/tolink")
    S("stat linked", S.st, "files/linked")
    S("link lower file across dirs", os.link, p("files/linked"), p("new/linked2"))
    S("link to existing name", os.link, p("files/small"), p("files/medium"))
    S("link a dir", os.link, p("merged"), p("new/dirlink"))
    S("create in merged dir", S.write, "merged/newfile", b"nf", W | os.O_CREAT | os.O_EXCL)
    S("create in opaque dir", S.write, "opq/new", b"opq new", W | os.O_CREAT | os.O_EXCL)
    S("ls opq", S.ls, "opq")
    S("create over whiteout", S.write, "wh/gone_file", b"back again", W | os.O_CREAT | os.O_EXCL)
    S("mkdir over whiteout", os.mkdir, p("wh/gone_dir"), 0o755)
    S("ls wh/gone_dir", S.ls, "wh/gone_dir")
    S("mkdir existing lower dir", os.mkdir, p("merged"))
    S("mkdir in lower-only deep dir", os.mkdir, p("merged/sub/deep/newdir"))

    # -- unlink (whiteouts) ---------------------------------------------------
    S("unlink lower file", os.unlink, p("files/del"))
    S("stat unlinked", S.st, "files/del")
    S("unlink middle file", os.unlink, p("files/del_mid"))
    S("unlink top file", os.unlink, p("files/del_top"))
    S("unlink lower file in merged dir", os.unlink, p("merged/b_only"))
    S("unlink lower symlink", os.unlink, p("sym/dangling"))
    S("unlink lower fifo", os.unlink, p("dev/fifo2"))
    S("unlink upper-only file", os.unlink, p("new/file_link"))
    S("unlink missing", os.unlink, p("files/nope"))
    S("unlink a dir", os.unlink, p("merged/sub"))
    S("recreate unlinked lower name", S.write, "files/del", b"reborn", W | os.O_CREAT | os.O_EXCL)
    S("ls files", S.ls, "files")
    S("ls merged", S.ls, "merged")

    # -- rmdir of a merged dir, then mkdir (opaque) ------------------------------
    S("rmdir non-empty merged dir", os.rmdir, p("rmd"))
    S("rmdir lower-only empty dir", os.rmdir, p("emptydir"))
    S("unlink rmd/a", os.unlink, p("rmd/a"))
    S("unlink rmd/c", os.unlink, p("rmd/c"))
    S("unlink rmd/t", os.unlink, p("rmd/t"))
    S("rmdir rmd (sub left)", os.rmdir, p("rmd"))
    S("unlink rmd/sub/b", os.unlink, p("rmd/sub/b"))
    S("rmdir merged rmd/sub", os.rmdir, p("rmd/sub"))
    S("rmdir merged rmd", os.rmdir, p("rmd"))
    S("stat rmd", S.st, "rmd")
    S("mkdir rmd again", os.mkdir, p("rmd"), 0o711)
    S("ls rmd", S.ls, "rmd")
    S("create in new rmd", S.write, "rmd/fresh", b"fresh", W | os.O_CREAT | os.O_EXCL)
    S("mkdir emptydir again", os.mkdir, p("emptydir"))

    # -- rename of files ----------------------------------------------------------
    S("rename lower file same dir", os.rename, p("ren/f1"), p("ren/f1_new"))
    S("rename upper file", os.rename, p("new/file"), p("new/file_renamed"))
    S("rename lower file across dirs", os.rename, p("ren/f2"), p("merged/f2_moved"))
    S("rename lower over lower", os.rename, p("ren/src"), p("ren/target"))
    S("read ren/target", S.read, "ren/target")
    S("rename upper over lower", os.rename, p("merged/newfile"), p("files/over_me"))
    S("read over_me", S.read, "files/over_me")
    S("rename noreplace onto lower", renameat2, p("ren/nr_src"), p("ren/nr_dst"), RENAME_NOREPLACE)
    S("rename noreplace to free name", renameat2, p("ren/nr_src"), p("ren/nr_new"), RENAME_NOREPLACE)
    S("rename noreplace onto whiteout", renameat2, p("ren/nr_new"), p("files/del_mid"), RENAME_NOREPLACE)
    S("rename exchange lower/lower", renameat2, p("ren/ex_a"), p("ren/ex_b"), RENAME_EXCHANGE)
    S("read ex_a", S.read, "ren/ex_a")
    S("read ex_b", S.read, "ren/ex_b")
    S("rename exchange lower/upper", renameat2, p("ren/ex_a"), p("new/sym"), RENAME_EXCHANGE)
    S("rename exchange with missing", renameat2, p("ren/ex_b"), p("ren/none"), RENAME_EXCHANGE)
    S("mkdir ren/exd2", os.mkdir, p("ren/exd2"))
    S("create ren/exd2/n", S.write, "ren/exd2/n", b"n", W | os.O_CREAT)
    S("rename exchange lower dir/upper dir", renameat2, p("ren/exd1"), p("ren/exd2"), RENAME_EXCHANGE)
    S("ls ren/exd1", S.ls, "ren/exd1")
    S("ls ren/exd2", S.ls, "ren/exd2")
    S("rename to itself", os.rename, p("ren/target"), p("ren/target"))
    S("rename file over dir", os.rename, p("ren/over_dir"), p("ren/full"))
    S("rename dir over file", os.rename, p("ren/full"), p("ren/over_dir"))
    S("rename missing", os.rename, p("ren/none"), p("ren/none2"))
    S("ls ren", S.ls, "ren")

    # -- rename of directories (redirects) --------------------------------------------
    S("rename lower dir (relative redirect)", os.rename, p("ren/dir_lower"), p("ren/dir_lower2"))
    S("ls ren/dir_lower2/sub", S.ls, "ren/dir_lower2/sub")
    S("mkdir at the old name", os.mkdir, p("ren/dir_lower"))
    S("ls ren/dir_lower", S.ls, "ren/dir_lower")
    S("rename merged dir across dirs (absolute)", os.rename, p("ren/dir_merged"), p("dest/dm"))
    S("ls dest/dm", S.ls, "dest/dm")
    S("rename twice: 1 (relative)", os.rename, p("ren/twice"), p("ren/twice1"))
    S("rename twice: 2 (absolute)", os.rename, p("ren/twice1"), p("dest/twice2"))
    S("ls dest/twice2/sub", S.ls, "dest/twice2/sub")
    S("read dest/twice2/t", S.read, "dest/twice2/t")
    S("rename upper-only dir", os.rename, p("new/nested"), p("dest/nested_moved"))
    S("rename dir into itself", os.rename, p("dest"), p("dest/dm/inner"))
    S("rename dir over non-empty dir", os.rename, p("dest/dm"), p("merged/sub"))
    S("rename dir over empty lower dir", os.rename, p("ren/full"), p("merged/emptysub"))
    S("ls merged/emptysub", S.ls, "merged/emptysub")
    S("rename a renamed dir back", os.rename, p("ren/dir_lower2"), p("ren/dir_lower3"))
    S("ls dest", S.ls, "dest")

    # -- hard links ---------------------------------------------------------------------
    S("append to hl/p1", S.write, "hl/p1", b" + written via p1", A)
    S("read hl/p2", S.read, "hl/p2")
    S("stat hl/p1", S.st, "hl/p1")
    S("stat hl/p2", S.st, "hl/p2")
    S("chmod hl/q1", os.chmod, p("hl/q1"), 0o600)
    S("stat hl2/q2", S.st, "hl2/q2")
    S("link lower hard link r2", os.link, p("hl/r2"), p("hl/r3"))
    S("stat hl/r1", S.st, "hl/r1")
    S("unlink hl/r1", os.unlink, p("hl/r1"))
    S("stat hl/r2", S.st, "hl/r2")
    S("append via r3", S.write, "hl/r3", b"+r3", A)
    S("read hl/r2", S.read, "hl/r2")

    # -- open files that get unlinked ---------------------------------------------------
    S("open lower O_RDWR", S.open, "ou_lower", "files/openunl", RW)
    S("unlink it", os.unlink, p("files/openunl"))
    S("pwrite after unlink", lambda: os.pwrite(S.fds["ou_lower"], b"after unlink", 100))
    S("pread after unlink", lambda: os.pread(S.fds["ou_lower"], 40, 90))
    S("fstat after unlink", S.fst, "ou_lower")
    S("create tmp", S.open, "ou_new", "new/tmpf", RW | os.O_CREAT | os.O_EXCL, 0o600)
    S("write tmp", lambda: os.write(S.fds["ou_new"], b"temporary data"))
    S("unlink tmp", os.unlink, p("new/tmpf"))
    S("write tmp after unlink", lambda: os.write(S.fds["ou_new"], b" more"))
    S("pread tmp", lambda: os.pread(S.fds["ou_new"], 100, 0))
    S("fstat tmp", S.fst, "ou_new")
    S("fsync tmp", lambda: os.fsync(S.fds["ou_new"]))
    S("open lower rdonly", S.open, "ou_ro", "files/medium", os.O_RDONLY)
    S("unlink lower while open rdonly", os.unlink, p("files/medium"))
    S("read unlinked rdonly", lambda: os.pread(S.fds["ou_ro"], 5000, 2000))
    S("fstat unlinked rdonly", S.fst, "ou_ro")

    # -- fallocate, copy_file_range ----------------------------------------------------
    def falloc(rel, mode, off, length):
        fd = os.open(p(rel), os.O_RDWR | os.O_CLOEXEC)
        try:
            fallocate(fd, mode, off, length)
            return "size=%d" % os.fstat(fd).st_size
        finally:
            os.close(fd)

    S("fallocate extend lower file", falloc, "files/falloc", 0, 4096, MiB)
    S("read falloc", S.read, "files/falloc")
    S("fallocate punch hole upper file", falloc, "new/file_renamed", FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE,
      4096, 8192)
    S("read file_renamed", S.read, "new/file_renamed")

    def cfr(src, dst, count, osrc, odst, dflags):
        fi = os.open(p(src), os.O_RDONLY | os.O_CLOEXEC)
        fo = os.open(p(dst), dflags | os.O_CLOEXEC, 0o644)
        try:
            done = 0
            while done < count:
                n = os.copy_file_range(fi, fo, count - done, osrc + done, odst + done)
                if n == 0:
                    break
                done += n
            return done
        finally:
            os.close(fi)
            os.close(fo)

    S("copy_file_range lower -> new", cfr, "files/big", "new/cfr", MiB // 2, 1000, 0, os.O_WRONLY | os.O_CREAT)
    S("read new/cfr", S.read, "new/cfr")
    S("copy_file_range upper -> lower", cfr, "new/cfr", "files/cfr_dst", 30_000, 0, 5000, os.O_WRONLY)
    S("read cfr_dst", S.read, "files/cfr_dst")

    # -- tar extraction, then delete half -------------------------------------------------
    tf = tarfile.open(fileobj=io.BytesIO(TAR), mode="r")
    tf.errorlevel = 2
    for m in tf.getmembers():
        S("tar x " + m.name, lambda m=m: tf.extract(m, mnt, numeric_owner=True, filter="fully_trusted"))
    tf.close()
    S("ls tarx", S.ls, "tarx")
    S("read tarx/d2/s0/f0", S.read, "tarx/d2/s0/f0")
    S("ls tarx/d1/s1", S.ls, "tarx/d1/s1")
    for sub in ("tarx/d0", "tarx/d2", "tarx/d4", "tarx/d1/s0", "tarx/d1/s1", "tarx/d5/s3"):
        S("rm -rf " + sub, S.rmtree, sub)
    for s in range(5):
        for f in range(0, 10, 2):
            S("unlink tarx/d3/s%d/f%d" % (s, f), os.unlink, p("tarx/d3/s%d/f%d" % (s, f)))
    S("ls tarx after", S.ls, "tarx")
    S("ls tarx/d1", S.ls, "tarx/d1")
    S("ls tarx/d3/s1", S.ls, "tarx/d3/s1")
    S("stat tarx/d3/s4/f1", S.st, "tarx/d3/s4/f1")
    S("stat tarx/d5/s1/f8", S.st, "tarx/d5/s1/f8")
    if not keep_open:
        S.close_all()
    return S


# --------------------------------------------------------------------------
# mounts
# --------------------------------------------------------------------------
def esc(p):
    return p.replace("\\", "\\\\").replace(":", "\\:").replace(",", "\\,")


def run_quiet(cmd, timeout=60):
    """subprocess.run with output in temp files (a daemon may inherit them)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as errf:
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=errf, timeout=timeout)
        out.seek(0)
        errf.seek(0)
        p.stdout = out.read().decode(errors="replace")
        p.stderr = errf.read().decode(errors="replace")
    return p


def daemon_pids(mnt):
    """pids of stratafs processes with mnt on their command line."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % d, "rb") as fh:
                argv = fh.read().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"stratafs") and os.fsencode(mnt) in argv:
            pids.append(int(d))
    return pids


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Mnt:
    """A writable overlay: kind "kernel" or "stratafs"."""

    def __init__(self, kind, lowers, upper, work, mnt, binary=None, extra="", base=KERNEL_OPTS):
        self.kind, self.lowers, self.upper, self.work, self.mnt = kind, lowers, upper, work, mnt
        self.binary, self.extra, self.base = binary, extra, base
        self.views = lowers     # the lower dirs, where lowers are image files
        self.conn = None
        self.pids = []

    def opts(self):
        o = "lowerdir=%s" % ":".join(esc(x) for x in self.lowers)
        if self.upper:
            o += ",upperdir=%s,workdir=%s" % (esc(self.upper), esc(self.work))
        if self.kind == "kernel" and self.base:
            o += "," + self.base
        if self.extra:
            o += "," + self.extra
        return o

    def cmd(self):
        if self.kind == "kernel":
            return ["mount", "-t", "overlay", "overlay", "-o", self.opts(), self.mnt]
        return [self.binary, "stratafs", self.mnt, "-o", self.opts()]

    def try_mount(self):
        """Mount; returns (ok, one-line error text)."""
        os.makedirs(self.mnt, exist_ok=True)
        p = run_quiet(self.cmd())
        if p.returncode != 0:
            return False, (p.stderr or p.stdout).strip()
        if not is_mounted(self.mnt):
            return False, "exit 0 but %s is not mounted" % self.mnt
        if self.kind != "kernel":
            st = os.stat(self.mnt)
            self.conn = os.minor(st.st_dev) if os.major(st.st_dev) == 0 else None
            self.pids = daemon_pids(self.mnt)
        return True, ""

    def mount(self):
        ok, msg = self.try_mount()
        if not ok:
            raise RuntimeError("%s mount failed: %s" % (self.kind, msg))

    def umount(self):
        if is_mounted(self.mnt):
            p = subprocess.run(["umount", self.mnt], capture_output=True, text=True)
            if p.returncode != 0 or is_mounted(self.mnt):
                log("umount %s failed (%s); using umount -l" % (self.mnt, p.stderr.strip()))
                self.abort()
                subprocess.run(["umount", "-l", self.mnt], capture_output=True)
        end = time.time() + 10
        while any(alive(x) for x in self.pids) and time.time() < end:
            time.sleep(0.05)
        left = [x for x in self.pids if alive(x)]
        self.pids = []
        if left:
            raise RuntimeError("stratafs daemon %s still running 10s after umount" % left)

    def abort(self):
        if self.kind != "kernel":
            fuse_abort(self.mnt, self.conn)


def fuse_abort(mnt, conn=None):
    """Abort a FUSE connection without touching the (maybe hung) mount:
    fusectl if it is mounted, else umount -f (FUSE aborts on MNT_FORCE;
    -c: no path canonicalization, which would stat the mount)."""
    if conn is not None and os.path.exists("/sys/fs/fuse/connections/%d/abort" % conn):
        try:
            with open("/sys/fs/fuse/connections/%d/abort" % conn, "w") as fh:
                fh.write("1")
            return
        except OSError:
            pass
    subprocess.run(["umount", "-f", "-c", mnt], capture_output=True, timeout=30)


def abort_fuse_under(root):
    """Abort every fuse mount below root (found in mountinfo)."""
    root = os.path.realpath(root)
    with open("/proc/self/mountinfo") as fh:
        lines = fh.read().splitlines()
    for line in lines:
        left, _, right = line.partition(" - ")
        f = left.split()
        if not right.startswith("fuse"):
            continue
        mnt = unescape_mountinfo(f[4])
        if mnt == root or mnt.startswith(root + "/"):
            fuse_abort(mnt, int(f[2].split(":")[1]))


def watchdog(root, secs, note=None):
    """A started daemon timer that aborts our FUSE mounts below root after
    secs seconds, so that a hung stratafs cannot hang the test."""
    def fire():
        print("# watchdog: %ds passed, aborting the FUSE mounts below %s" % (secs, root), flush=True)
        if note:
            note()
        abort_fuse_under(root)
    t = threading.Timer(secs, fire)
    t.daemon = True
    t.start()
    return t


# --------------------------------------------------------------------------
# observation
# --------------------------------------------------------------------------
def merged_walk(mnt, t_recent):
    """rig.walk_mount, with mtimes reduced to their value if older than the
    run, else "recent" (a directory a copy-up linked a name into keeps its
    old mtime, as the kernel puts the parent's times back)."""
    w = walk_mount(mnt)
    for rec in w.recs.values():
        ns = rec.pop("mtime_ns", None)
        if ns is not None:
            rec["mtime"] = "recent" if ns >= t_recent else ns
    return w


FH_XATTRS = ("trusted.overlay.origin", "trusted.overlay.upper")
FILEID_INO32_GEN = 1
FS_IOC_GETVERSION = 0x80087601


class InodeMap:
    """Resolves overlay file handles (struct ovl_fb: version, magic 0xfb,
    len, flags, type, uuid[16], fid) of one side to the path they name, so
    that handles can be compared between two copies of a tree on one
    filesystem.  Decodes FILEID_INO32_GEN (ext4, tmpfs...): ino + generation."""

    def __init__(self, roots):
        self.paths = {}                      # st_ino -> "label:relpath" (smallest)
        self.dev = None
        for label, top in roots:
            for dirpath, dirnames, filenames in os.walk(top):
                rel = os.path.relpath(dirpath, top)
                for name in ["."] + dirnames + filenames:
                    path = os.path.normpath(os.path.join(dirpath, name))
                    st = os.lstat(path)
                    key = "%s:/%s" % (label, os.path.normpath(os.path.join(rel, name)).lstrip("."))
                    if st.st_ino not in self.paths or key < self.paths[st.st_ino][0]:
                        self.paths[st.st_ino] = (key, path)

    def resolve(self, v):
        if len(v) < 21 or v[1] != 0xfb or v[2] != len(v):
            return "not an overlay fh: %s" % v.hex()
        head = "v%d flags=%d type=%d uuid=%s" % (v[0], v[3], v[4], v[5:21].hex())
        fid = v[21:]
        if v[4] != FILEID_INO32_GEN or len(fid) != 8:
            return head + " (fid of %d bytes not decoded)" % len(fid)
        ino, gen = int.from_bytes(fid[:4], "little"), int.from_bytes(fid[4:], "little")
        if ino not in self.paths:
            return head + " -> unknown inode"
        key, path = self.paths[ino]
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                buf = ctypes.create_string_buffer(8)
                fcntl.ioctl(fd, FS_IOC_GETVERSION, buf)
                real = int.from_bytes(buf.raw[:4], "little")
                g = "gen ok" if real == gen else "gen MISMATCH"
            finally:
                os.close(fd)
        except OSError:
            g = "gen unchecked"
        return "%s -> %s (%s)" % (head, key, g)


def xattr_val(k, v, imap=None):
    if k.startswith("user.overlay."):           # userxattr: the same xattrs in user.
        k = "trusted." + k[5:]
    if imap is not None and k in FH_XATTRS:
        return imap.resolve(v)
    if k in PRESENCE_ONLY:
        return "present"
    return v.hex() if len(v) <= 40 else "sha:" + hashlib.sha256(v).hexdigest()[:16]


def side_imap(lowers, upper, work):
    """An InodeMap over one side's layers, upper and work dirs."""
    return InodeMap([("l%d" % i, d) for i, d in enumerate(lowers)] + [("upper", upper), ("work", work)])


def upper_walk(root, imap=None):
    """The real upper dir: {relpath: record}.  With an InodeMap, overlay
    file handles are shown as what they point to; else origin is compared
    by presence only."""
    recs = {}

    def visit(path, rel):
        st = os.lstat(path)
        fmt_ = stat.S_IFMT(st.st_mode)
        r = {"type": stat.filemode(st.st_mode)[0], "mode": "%04o" % stat.S_IMODE(st.st_mode),
             "uid": st.st_uid, "gid": st.st_gid}
        whiteout = fmt_ == stat.S_IFCHR and st.st_rdev == 0
        if not whiteout:
            r["nlink"] = st.st_nlink
        if fmt_ != stat.S_IFDIR:
            r["size"] = st.st_size
        if fmt_ in (stat.S_IFCHR, stat.S_IFBLK):
            r["rdev"] = "%d:%d" % (os.major(st.st_rdev), os.minor(st.st_rdev))
        if fmt_ == stat.S_IFREG:
            h = hashlib.sha256()
            with open(path, "rb") as fh:
                for chunk in iter(lambda: fh.read(MiB), b""):
                    h.update(chunk)
            r["sha256"] = h.hexdigest()[:16]
        if fmt_ == stat.S_IFLNK:
            r["target"] = os.readlink(path)
        r["xattrs"] = {k: xattr_val(k, os.getxattr(path, k, follow_symlinks=False), imap)
                       for k in sorted(os.listxattr(path, follow_symlinks=False))}
        recs[rel] = r
        if fmt_ == stat.S_IFDIR:
            for name in sorted(os.listdir(path)):
                visit(os.path.join(path, name), (rel + "/" if rel else "") + name)

    visit(root, "")
    return recs


def is_whiteout(path):
    st = os.lstat(path)
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def work_state(work, imap=None):
    """What we compare of the work dir: the index entries (not counting the
    kernel's shared "#N" whiteout) -- their number, and with an InodeMap
    what their names (hex file handles) and xattrs point to -- and the index
    dir's overlay.upper xattr."""
    idx = os.path.join(work, "index")
    out = {}
    try:
        names = sorted(os.listdir(idx))
        # the kernel keeps its one shared whiteout inode as a "#N" temp there
        names = [n for n in names if not (n.startswith("#") and is_whiteout(os.path.join(idx, n)))]
        out["index entries"] = len(names)
        if imap is not None:
            for n in names:
                try:
                    what = imap.resolve(bytes.fromhex(n))
                except ValueError:
                    what = "name is not hex: " + n
                st = os.lstat(os.path.join(idx, n))
                out["index entry " + what] = "%s nlink=%d %s" % (
                    stat.filemode(st.st_mode)[0], st.st_nlink if not is_whiteout(os.path.join(idx, n)) else 0,
                    {k: xattr_val(k, os.getxattr(os.path.join(idx, n), k, follow_symlinks=False), imap)
                     for k in sorted(os.listxattr(os.path.join(idx, n), follow_symlinks=False))})
    except OSError as e:
        out["index entries"] = "ERR " + ename(e.errno)
    ww = os.path.join(work, "work")
    left = []
    for dirpath, dirnames, filenames in os.walk(ww):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            if not (n.startswith("#") and is_whiteout(p)):   # the kernel's shared whiteout (index=off)
                left.append(os.path.relpath(p, ww))
    out["work/work entries"] = sorted(left) if os.path.isdir(ww) else "missing"
    for ns in ("trusted", "user"):
        k = ns + ".overlay.upper"
        try:
            v = os.getxattr(idx, k)
            out["index xattr " + k] = imap.resolve(v) if imap is not None else "present"
        except OSError as e:
            if e.errno not in (errno.ENODATA, errno.ENOENT):
                out["index xattr " + k] = ename(e.errno)
    return out


def compare_recs(a, b, la, lb, diff, area):
    """Compare two {path: record} maps; returns the number of paths."""
    paths = sorted(set(a) | set(b))
    for p in paths:
        ra, rb = a.get(p), b.get(p)
        sp = "/" + p
        if ra is None or rb is None:
            label, r = (lb, rb) if ra is None else (la, ra)
            diff("%s %s: only in %s (type %s)" % (area, sp, label, r.get("type")))
            continue
        for k in sorted(set(ra) | set(rb)):
            va, vb = ra.get(k), rb.get(k)
            if va == vb:
                continue
            if k == "xattrs":
                for x in sorted(set(va) | set(vb)):
                    if va.get(x) != vb.get(x):
                        diff("%s %s: xattr %s: %s=%s %s=%s" % (area, sp, x, la, va.get(x, "absent"),
                                                               lb, vb.get(x, "absent")))
            else:
                diff("%s %s: %s: %s=%s %s=%s" % (area, sp, k, la, short(va), lb, short(vb)))
    return len(paths)


class Diffs:
    def __init__(self, max_print):
        self.n = 0
        self.max_print = max_print
        self.area = ""

    def __call__(self, line):
        self.n += 1
        if self.max_print <= 0 or self.n <= self.max_print:
            print("DIFF " + line, flush=True)

    def diff(self, line):            # the rig.compare interface
        self(self.area + " " + line)


def compare_merged(wa, wb, la, lb, rep, area):
    rep.area = area
    n = compare(wa, wb, la, lb, rep)
    for label, w in ((la, wa), (lb, wb)):
        for p, text in w.problems:
            rep.diff("%s: in %s: %s" % (show(p), label, text))
    return n


class Done(Exception):
    """Nothing more to compare."""


def compare_on_disk(ma, mb, la, lb, rep, when, decode=True):
    """Compare the upper dirs and the index of two sides."""
    # views: the lower dirs where the lowers are image files (Mnt only)
    ia = side_imap(getattr(ma, "views", ma.lowers), ma.upper, ma.work) if decode else None
    ib = side_imap(getattr(mb, "views", mb.lowers), mb.upper, mb.work) if decode else None
    n = compare_recs(upper_walk(ma.upper, ia), upper_walk(mb.upper, ib), la, lb, rep, "upper" + when)
    compare_recs({"index": work_state(ma.work, ia)}, {"index": work_state(mb.work, ib)}, la, lb, rep,
                 "workdir" + when)
    return n


def image_layers(lowers, kind, root):
    """An image file of each lower dir, in root/img: with squashfs, the
    bottom one only (the OpenWrt case), the others erofs.  Several squashfs
    share the null uuid, and the kernel then turns the index off and stops
    following their handles (st_ino changes across a remount)."""
    os.makedirs(os.path.join(root, "img"), exist_ok=True)
    out = []
    for i, d in enumerate(lowers):
        dst = os.path.join(root, "img", "l%d.img" % i)
        rig.make_image(kind if kind != "squashfs" or i == len(lowers) - 1 else "erofs", d, dst)
        out.append(dst)
    return out


def compare_steps(sa, sb, la, lb, diff):
    for i in range(max(len(sa), len(sb))):
        a = sa[i] if i < len(sa) else ("<none>", "<missing>")
        b = sb[i] if i < len(sb) else ("<none>", "<missing>")
        if a != b:
            name = a[0] if a[0] == b[0] else "%s / %s" % (a[0], b[0])
            diff("step %d %s: %s=%s %s=%s" % (i + 1, name, la, short(a[1]), lb, short(b[1])))


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stratafs", default="build/stratafs", help="stratafs binary")
    ap.add_argument("--workdir", help="scratch dir (its k/ and s/ are replaced); default: /tmp/strata-wt-rig-*")
    ap.add_argument("--extra-opts", default=os.environ.get("STRATAFS_EXTRA_OPTS", ""),
                    help="appended to the stratafs -o (default: $STRATAFS_EXTRA_OPTS)")
    ap.add_argument("--kernel-opts", default="", help="appended to the kernel overlay's -o (e.g. metacopy=on)")
    ap.add_argument("--kernel-base-opts", default=KERNEL_OPTS,
                    help="the kernel overlay's options besides lower/upper/workdir (default: %(default)s; "
                         "stratafs has these defaults built in)")
    ap.add_argument("--kernel-vs-kernel", action="store_true", help="compare the kernel overlay with itself")
    ap.add_argument("--origin-presence-only", action="store_true",
                    help="compare overlay.origin/upper xattrs and index names by presence/count only, "
                         "instead of decoding the file handles to the paths they name")
    ap.add_argument("--keep", action="store_true", help="keep the scratch dir")
    ap.add_argument("--show-steps", action="store_true", help="print the step log of the kernel side")
    ap.add_argument("--max-print", type=int, default=500, help="print at most this many differences (0: all)")
    ap.add_argument("--timeout", type=int, default=150, help="abort the stratafs connection after this many seconds")
    ap.add_argument("--images", choices=sorted(rig.IMAGE_TOOLS), help="lower layers as image files of this type")
    args = ap.parse_args()
    if os.geteuid() != 0:
        ap.error("must run as root")
    binary = None
    if not args.kernel_vs_kernel:
        binary = os.path.abspath(args.stratafs)
        if not os.access(binary, os.X_OK):
            print("rig_write: FAILED: stratafs binary %s not found" % binary)
            print("rig_write: 0 steps, 0 entries compared, 1 differences")
            return 1

    t_start = time.time()
    t_recent = time.time_ns() - 5 * 10**9
    if args.workdir:
        work = os.path.abspath(args.workdir)
        os.makedirs(work, exist_ok=True)
        for side in ("k", "s"):                 # only our own subdirs are replaced
            if is_mounted(os.path.join(work, side, "mnt")):
                print("rig_write: FAILED: %s is mounted" % os.path.join(work, side, "mnt"))
                return 1
            shutil.rmtree(os.path.join(work, side), ignore_errors=True)
    else:
        work = tempfile.mkdtemp(prefix="strata-wt-rig-", dir="/tmp")
    la = "kernel"
    lb = "kernel2" if args.kernel_vs_kernel else "stratafs"
    rep = Diffs(args.max_print)
    nsteps = 0
    compared = 0
    mounts = []
    steps = []
    image_mnts = []
    wd = None
    try:
        sides = []
        for side, kind in (("k", "kernel"), ("s", "kernel" if args.kernel_vs_kernel else "stratafs")):
            root = os.path.join(work, side)
            build_lower(root)
            for d in ("upper", "work"):
                os.mkdir(os.path.join(root, d), 0o755)
            lowers = lowerdirs(root)
            views = lowers
            kopts = args.kernel_opts
            if args.images:
                images = image_layers(lowers, args.images, root)
                views = [os.path.join(root, "img", "m%d" % i) for i in range(len(images))]
                image_mnts += views
                rig.loop_mount_images(images, None, views)
                # with each layer its own filesystem the kernel wants xino told
                kopts = ",".join(x for x in (kopts, "xino=on") if x)
                if kind == "kernel":
                    lowers = views
                else:
                    lowers = images
            m = Mnt(kind, lowers, os.path.join(root, "upper"), os.path.join(root, "work"),
                    os.path.join(root, "mnt"), binary, kopts if kind == "kernel" else args.extra_opts,
                    args.kernel_base_opts)
            m.views = views
            sides.append(m)
        ma, mb = sides
        log("built the lower stacks in %.1fs" % (time.time() - t_start))
        for m in sides:
            m.mount()
            mounts.append(m)
        wd = watchdog(work, args.timeout, lambda: rep("FAILED: timeout after %ds" % args.timeout))

        # -- the workload ------------------------------------------------------------
        for m in sides:
            t0 = time.time()
            steps.append(workload(m.mnt, t_recent))
            log("workload on %s: %d steps in %.1fs" % (m.kind, len(steps[-1].log), time.time() - t0))
        nsteps = len(steps[0].log)
        if args.show_steps:
            for i, (name, res) in enumerate(steps[0].log):
                print("step %d %s: %s" % (i + 1, name, short(res)))
        compare_steps(steps[0].log, steps[1].log, la, lb, rep)

        # -- views while mounted (unlinked files still open) ----------------------------
        wa, wb = merged_walk(ma.mnt, t_recent), merged_walk(mb.mnt, t_recent)
        compared += compare_merged(wa, wb, la, lb, rep, "merged")
        compared += compare_on_disk(ma, mb, la, lb, rep, "", not args.origin_presence_only)
        for s in steps:
            s.close_all()

        # -- unmount, remount: persistence -------------------------------------------------
        for m in sides:
            m.umount()
            mounts.remove(m)
        compared += compare_on_disk(ma, mb, la, lb, rep, "-after-umount", not args.origin_presence_only)
        outcome = []
        for m in sides:
            ok, msg = m.try_mount()
            outcome.append((ok, msg))
            if ok:
                mounts.append(m)
        if not outcome[0][0] or not outcome[1][0]:
            if outcome[0][0] != outcome[1][0]:
                rep("remount: %s=%s %s=%s" % (la, "mounts" if outcome[0][0] else "refuses: " + outcome[0][1],
                                              lb, "mounts" if outcome[1][0] else "refuses: " + outcome[1][1]))
            else:
                log("both refuse the remount (%s)" % outcome[0][1].splitlines()[0])
            raise Done()
        wa2, wb2 = merged_walk(ma.mnt, t_recent), merged_walk(mb.mnt, t_recent)
        compared += compare_merged(wa2, wb2, la, lb, rep, "remount")
        for p in sorted(set(wa.ino) & set(wa2.ino) & set(wb.ino) & set(wb2.ino)):
            ka, kb = wa.ino[p] != wa2.ino[p], wb.ino[p] != wb2.ino[p]
            if ka != kb:
                rep("remount %s: st_ino changed across remount: %s=%s %s=%s" % (show(p), la, ka, lb, kb))
        compared += compare_on_disk(ma, mb, la, lb, rep, "-after-remount", not args.origin_presence_only)
    except Done:
        pass
    except Exception as e:  # noqa: BLE001 -- reported, then cleaned up
        rep("FAILED: %s: %s" % (type(e).__name__, e))
    finally:
        if wd:
            wd.cancel()
        os.chdir("/")
        for s in steps:
            s.close_all()
        for m in mounts:
            try:
                m.umount()
            except Exception as e:  # noqa: BLE001
                rep("FAILED: umount %s: %s" % (m.mnt, e))
        for v in image_mnts:
            if is_mounted(v):
                subprocess.run(["umount", v], capture_output=True)
        still = [m.mnt for m in mounts if is_mounted(m.mnt)] + [v for v in image_mnts if is_mounted(v)]
        for mnt in still:
            rep("FAILED: %s is still mounted" % mnt)
        if not args.keep and not still:
            if args.workdir:
                for side in ("k", "s"):
                    shutil.rmtree(os.path.join(work, side), ignore_errors=True)
            else:
                shutil.rmtree(work, ignore_errors=True)
        elif args.keep:
            log("kept %s" % work)
    if rep.max_print > 0 and rep.n > rep.max_print:
        print("rig_write: %d more differences not printed (--max-print 0 prints all)" % (rep.n - rep.max_print))
    log("finished in %.1fs" % (time.time() - t_start))
    print("rig_write: %d steps, %d entries compared, %d differences" % (nsteps, compared, rep.n), flush=True)
    return 1 if rep.n else 0


if __name__ == "__main__":
    sys.exit(main())
