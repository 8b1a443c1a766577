#!/usr/bin/env python3
"""rig.py -- differential integration rig: kernel overlayfs vs stratafs.

Builds a stack of read-only layers (l0 on top) that contains every overlay
case we care about (whiteouts, hard-linked whiteouts, opaque dirs,
xwhiteouts, redirects, aufs-style .wh. markers, links, devices, xattrs,
255-byte names, a ~4000-byte deep path, optionally a 100,000-entry dir and a
deterministic many-layer random stack), mounts the kernel overlay and stratafs
on it, walks both merged trees with fd-relative syscalls and compares them
entry by entry.  Prints one line per difference and a final
`rig: N entries compared, D differences`; exit status 1 on any difference or
failure.  Mounts are always undone in a finally block.

Two copies of the layers are built by the same code: the stratafs copy "s"
carries aufs markers (.wh.NAME, .wh..wh..opq); the kernel copy "k" carries
their native equivalents (char 0/0 whiteout, trusted.overlay.opaque=y), since
the kernel does not know aufs markers.  Everything else is identical, and all
mtimes are stamped deterministically after building.

  rig.py --layers 3 --big --stratafs build/stratafs --workdir /tmp/rig3
  rig.py --layers 50 --stratafs build/stratafs
  rig.py --layers 3 --kernel-vs-kernel        # validates the rig itself
  rig.py --layers 3 --images squashfs         # layers as image files

With --images, each layer of the kernel copy is made into a squashfs or
erofs image; the kernel overlay gets the images loop-mounted (mount -o
loop,ro), stratafs gets the image files themselves as its lowerdirs.

Python 3.11 stdlib only; must run as root.
"""

import argparse
import ctypes
import errno
import fcntl
import hashlib
import json
import os
import random
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
import uuid

RIG_VERSION = "1"
DT_NAMES = {0: "UNKNOWN", 1: "FIFO", 2: "CHR", 4: "DIR", 6: "BLK", 8: "REG", 10: "LNK", 12: "SOCK", 14: "WHT"}
IFMT_TO_DT = {stat.S_IFIFO: 1, stat.S_IFCHR: 2, stat.S_IFDIR: 4, stat.S_IFBLK: 6,
              stat.S_IFREG: 8, stat.S_IFLNK: 10, stat.S_IFSOCK: 12}
TYPE_NAMES = {stat.S_IFIFO: "fifo", stat.S_IFCHR: "chr", stat.S_IFDIR: "dir", stat.S_IFBLK: "blk",
              stat.S_IFREG: "reg", stat.S_IFLNK: "lnk", stat.S_IFSOCK: "sock"}
O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
WH_XATTR = "trusted.overlay.whiteout"
OPQ_XATTR = "trusted.overlay.opaque"
REDIR_XATTR = "trusted.overlay.redirect"


def log(msg):
    print("rig: " + msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# libc directory streams (glibc x86_64 struct dirent)
# --------------------------------------------------------------------------
class Dirent(ctypes.Structure):
    _fields_ = [("d_ino", ctypes.c_uint64), ("d_off", ctypes.c_int64),
                ("d_reclen", ctypes.c_uint16), ("d_type", ctypes.c_uint8),
                ("d_name", ctypes.c_char * 256)]


libc = ctypes.CDLL(None, use_errno=True)
libc.fdopendir.restype = ctypes.c_void_p
libc.fdopendir.argtypes = [ctypes.c_int]
libc.readdir.restype = ctypes.POINTER(Dirent)
libc.readdir.argtypes = [ctypes.c_void_p]
libc.closedir.restype = ctypes.c_int
libc.closedir.argtypes = [ctypes.c_void_p]
libc.telldir.restype = ctypes.c_long
libc.telldir.argtypes = [ctypes.c_void_p]
libc.seekdir.restype = None
libc.seekdir.argtypes = [ctypes.c_void_p, ctypes.c_long]
libc.rewinddir.restype = None
libc.rewinddir.argtypes = [ctypes.c_void_p]


class DirStream:
    """A libc DIR* on a directory fd (the fd is owned by the stream)."""

    def __init__(self, fd):
        self.d = libc.fdopendir(fd)
        if not self.d:
            e = ctypes.get_errno()
            os.close(fd)
            raise OSError(e, os.strerror(e))

    def next(self):
        """Return (name, d_type, d_ino) or None at end of directory."""
        ctypes.set_errno(0)
        p = libc.readdir(self.d)
        if not p:
            e = ctypes.get_errno()
            if e:
                raise OSError(e, "readdir: " + os.strerror(e))
            return None
        ent = p.contents
        return (ent.d_name, ent.d_type, ent.d_ino)

    def read(self, n=None, skip_dots=True):
        out = []
        while n is None or len(out) < n:
            ent = self.next()
            if ent is None:
                break
            if skip_dots and ent[0] in (b".", b".."):
                continue
            out.append(ent)
        return out

    def tell(self):
        return libc.telldir(self.d)

    def seek(self, pos):
        libc.seekdir(self.d, pos)

    def rewind(self):
        libc.rewinddir(self.d)

    def close(self):
        if self.d:
            libc.closedir(self.d)
            self.d = None

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


# --------------------------------------------------------------------------
# layer builder
# --------------------------------------------------------------------------
def det_bytes(key, size):
    return random.Random(key).randbytes(size)


class Layers:
    """Creates objects in layer dirs l0..l{n-1} below root, fd-relative.

    aufs=True writes aufs markers, aufs=False their native equivalents."""

    def __init__(self, root, n, aufs):
        self.root, self.n, self.aufs = root, n, aufs
        os.makedirs(root)
        self.fds = []
        for i in range(n):
            os.mkdir(os.path.join(root, "l%d" % i), 0o755)
            self.fds.append(os.open(os.path.join(root, "l%d" % i), O_DIR))
        self.probes = set()       # paths that must be hidden / checked by lookup
        self.aufs_whiteouts = set()  # paths whited out by an aufs .wh. marker
        self.wh_nodes = {}        # layer -> (layer, path) of a whiteout node to hard link

    def close(self):
        for fd in self.fds:
            os.close(fd)
        os.chdir("/")

    def at(self, L, path):
        """chdir into the parent of path in layer L; return the basename."""
        parts = path.split("/")
        fd = os.dup(self.fds[L])
        try:
            for comp in parts[:-1]:
                nfd = os.open(comp, O_DIR, dir_fd=fd)
                os.close(fd)
                fd = nfd
            os.fchdir(fd)
        finally:
            os.close(fd)
        return parts[-1]

    def exists(self, L, path):
        try:
            name = self.at(L, path)
            os.lstat(name)
            return True
        except OSError:
            return False

    def mkdirs(self, L, path):
        """mkdir -p of path in layer L (missing components get 0755)."""
        parts = path.split("/")
        fd = os.dup(self.fds[L])
        try:
            for comp in parts:
                try:
                    os.mkdir(comp, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass
                nfd = os.open(comp, O_DIR, dir_fd=fd)
                os.close(fd)
                fd = nfd
        finally:
            os.close(fd)

    def _parent(self, L, path):
        if "/" in path:
            self.mkdirs(L, path.rsplit("/", 1)[0])
        return self.at(L, path)

    @staticmethod
    def _attrs(name, mode, uid, gid, xattrs, is_link=False):
        os.chown(name, uid, gid, follow_symlinks=False)
        if not is_link and mode is not None:
            os.chmod(name, mode)
        for k, v in (xattrs or {}).items():
            os.setxattr(name, k, v if isinstance(v, bytes) else v.encode(), follow_symlinks=False)

    def d(self, L, path, mode=0o755, uid=0, gid=0, xattrs=None):
        name = self._parent(L, path)
        os.mkdir(name, 0o700)
        self._attrs(name, mode, uid, gid, xattrs)

    def f(self, L, path, data=b"", mode=0o644, uid=0, gid=0, xattrs=None):
        name = self._parent(L, path)
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        self._attrs(name, mode, uid, gid, xattrs)

    def sym(self, L, path, target, uid=0, gid=0, xattrs=None):
        name = self._parent(L, path)
        os.symlink(target, name)
        self._attrs(name, None, uid, gid, xattrs, is_link=True)

    def node(self, L, path, kind, mode, dev=0, uid=0, gid=0, xattrs=None):
        name = self._parent(L, path)
        os.mknod(name, kind | 0o600, dev)
        self._attrs(name, mode, uid, gid, xattrs)

    def link(self, Ls, src, Ld, dst):
        """hard link layer Ls/src to layer Ld/dst (layers share one fs)."""
        name = self._parent(Ld, dst)
        dfd = os.open(".", O_DIR)
        try:
            sname = self.at(Ls, src)
            os.link(sname, name, dst_dir_fd=dfd, follow_symlinks=False)
        finally:
            os.close(dfd)

    # -- overlay markers ---------------------------------------------------
    def wh(self, L, path, mode=0o000, uid=0, gid=0, link_from=None):
        """native char 0/0 whiteout; link_from=(layer, path) hard-links an
        existing whiteout node instead of creating a new one."""
        self.probes.add(path)
        if link_from:
            self.link(link_from[0], link_from[1], L, path)
        else:
            self.node(L, path, stat.S_IFCHR, mode, 0, uid, gid)

    def aufs_wh(self, L, path):
        """aufs whiteout: .wh.NAME (s copy) / char 0/0 whiteout (k copy)."""
        parent, _, base = path.rpartition("/")
        marker = (parent + "/" if parent else "") + ".wh." + base
        self.probes.update([path, marker])
        self.aufs_whiteouts.add(path)
        if self.aufs:
            self.f(L, marker, b"", 0o444)
        else:
            self.wh(L, path)

    def opaque(self, L, path, value=b"y"):
        name = self.at(L, path)
        os.setxattr(name, OPQ_XATTR, value, follow_symlinks=False)

    def aufs_opq(self, L, path):
        """aufs opaque marker: DIR/.wh..wh..opq (s) / opaque=y xattr (k)."""
        self.probes.add(path + "/.wh..wh..opq")
        if self.aufs:
            self.f(L, path + "/.wh..wh..opq", b"", 0o444)
        else:
            self.opaque(L, path)

    def xwh(self, L, path):
        """xwhiteout: zero-size regular file with trusted.overlay.whiteout;
        the caller marks the parent with trusted.overlay.opaque=x."""
        self.probes.add(path)
        self.f(L, path, b"", 0o644, xattrs={WH_XATTR: b"y"})

    def redirect(self, L, path, target):
        name = self.at(L, path)
        os.setxattr(name, REDIR_XATTR, target.encode(), follow_symlinks=False)

    # -- finishing -----------------------------------------------------------
    def stamp(self):
        """Give every object a deterministic mtime (ns precision).  Non-dirs
        with several links get one shared value (link order independent)."""
        os.chdir("/")
        for L in range(self.n):
            top = os.path.join(self.root, "l%d" % L)
            for dirpath, dirnames, filenames, dfd in os.fwalk(top, topdown=False, follow_symlinks=False):
                rel = dirpath[len(top) + 1:]
                for name in dirnames + filenames:
                    st = os.lstat(name, dir_fd=dfd)
                    if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1:
                        t = 1_500_000_000_123_456_789
                    else:
                        t = mtime_for(L, (rel + "/" if rel else "") + name)
                    os.utime(name, ns=(t, t), dir_fd=dfd, follow_symlinks=False)
            t = mtime_for(L, "")
            os.utime(self.fds[L], ns=(t, t))


def mtime_for(L, rel):
    h = int.from_bytes(hashlib.sha256(("%d:%s" % (L, rel)).encode("utf-8", "surrogateescape")).digest()[:8], "big")
    return 1_400_000_000 * 10**9 + h % (400_000_000 * 10**9)


# --------------------------------------------------------------------------
# the tree: hand-written cases (layers 0..2) + generated stack + big dir
# --------------------------------------------------------------------------
T, M, B = 0, 1, 2          # top, middle, bottom of the hand-written cases


def build_cases(t):
    # -- regular files: modes, owners, sizes, overrides --------------------
    t.d(B, "files", 0o755)
    t.d(M, "files", 0o700, 1000, 1000)
    t.d(T, "files", 0o750, 12345, 54321, xattrs={"user.top": b"1"})
    t.f(B, "files/empty", b"")
    t.f(B, "files/small", b"hello\n")
    t.f(B, "files/big3m", det_bytes("big3m", 3 * 1024 * 1024 + 17))
    t.f(T, "files/top2m", det_bytes("top2m", 2 * 1024 * 1024 + 1), 0o640)
    t.f(M, "files/small", b"middle overrides\n", 0o600, 1000, 1000)
    for L, data in ((B, b"bottom"), (M, b"middle"), (T, b"top")):
        t.f(L, "files/over", data, 0o644 if L != T else 0o664)
    for name, mode in (("m0000", 0o000), ("m4755", 0o4755), ("m2755", 0o2755), ("m1644", 0o1644),
                       ("m0777", 0o777), ("m0400", 0o400), ("m6711", 0o6711)):
        t.f(B, "files/" + name, name.encode(), mode, 1000, 100)
    for name, uid, gid in (("own0", 0, 0), ("own1000", 1000, 1000), ("own_odd", 12345, 54321),
                           ("own_nobody", 65534, 65534), ("own_big", 4000000000, 3999999999)):
        t.f(M, "files/" + name, name.encode(), 0o644, uid, gid)

    # -- whiteouts --------------------------------------------------------
    t.d(B, "wh")
    t.f(B, "wh/gone_file", b"should be hidden")
    t.f(B, "wh/gone_dir/a", b"a")
    t.f(B, "wh/gone_dir/b/c", b"c")
    t.sym(B, "wh/gone_link", "target")
    t.f(B, "wh/back", b"bottom")
    t.node(B, "wh/gone_fifo", stat.S_IFIFO, 0o644)
    t.wh(B, "wh/wh_in_bottom")                       # nothing below it
    t.d(M, "wh")
    t.wh(M, "wh/back")
    t.wh(M, "wh/gone_fifo", 0o000, 1000, 1000)
    t.d(T, "wh")
    t.wh(T, "wh/gone_file")
    t.wh(T, "wh/gone_dir")
    t.wh(T, "wh/gone_link")
    t.f(T, "wh/back", b"top again")                  # re-created above a whiteout
    t.wh(T, "wh/nothing_below", 0o644)               # mode is irrelevant
    # several whiteouts that are hard links of one char 0/0 node (like the
    # kernel's shared whiteout), across dirs and across layers
    for p in ("wh/hl1", "wh/hl2", "wh/sub/hl3", "files/hl4", "wh/xl"):
        t.f(B, p, p.encode())
    t.d(T, "wh/sub")
    t.wh(T, "wh/hl1")
    t.wh(T, "wh/hl2", link_from=(T, "wh/hl1"))
    t.wh(T, "wh/sub/hl3", link_from=(T, "wh/hl1"))
    t.wh(T, "files/hl4", link_from=(T, "wh/hl1"))
    t.wh(M, "wh/xl", link_from=(T, "wh/hl1"))
    # whiteouts in non-merged dirs (kernel lists them but lookup fails)
    t.f(B, "solo/real", b"r")
    t.wh(B, "solo/wh")
    t.f(T, "only0/real", b"r")
    t.wh(T, "only0/wh")
    # char 0/1 is not a whiteout
    t.node(B, "wh/c01", stat.S_IFCHR, 0o644, os.makedev(0, 1))

    # -- opaque dirs --------------------------------------------------------
    t.f(B, "opq/b1", b"b1")
    t.f(B, "opq/shared", b"B")
    t.f(B, "opq/sub/x", b"x")
    t.f(M, "opq/m1", b"m1")
    t.f(M, "opq/shared", b"M")
    t.f(M, "opq/sub/y", b"y")
    t.d(T, "opq", 0o711)
    t.opaque(T, "opq")
    t.f(T, "opq/t1", b"t1")
    t.f(T, "opq/sub/z", b"z")
    t.f(B, "opq_mid/b1", b"b1")
    t.f(B, "opq_mid/sub/b", b"b")
    t.d(M, "opq_mid")
    t.opaque(M, "opq_mid")
    t.f(M, "opq_mid/m1", b"m1")
    t.f(M, "opq_mid/sub/m", b"m")
    t.f(T, "opq_mid/t1", b"t1")
    t.f(B, "opq_over_file", b"a file below an opaque dir")
    t.d(T, "opq_over_file")
    t.opaque(T, "opq_over_file")
    t.f(T, "opq_over_file/a", b"a")
    t.f(B, "opq_val_n/b", b"b")                      # opaque=n is not opaque
    t.d(T, "opq_val_n")
    t.opaque(T, "opq_val_n", b"n")
    t.f(T, "opq_val_n/t", b"t")
    t.f(B, "user_opq/b", b"b")                       # user.overlay.* is not special
    t.d(T, "user_opq", xattrs={"user.overlay.opaque": b"y"})
    t.f(T, "user_opq/t", b"t")
    t.f(B, "opq_only/b", b"b")                       # opaque dir in bottom layer
    t.opaque(B, "opq_only")

    # -- xwhiteouts (opaque=x marks a dir holding them; it still merges) ----
    t.f(B, "xw/gone", b"hidden by an xwhiteout")
    t.f(B, "xw/gone_dir/f", b"f")
    t.f(B, "xw/b_keep", b"b")
    t.f(B, "xw/not_wh", b"bottom")
    t.d(M, "xw")
    t.opaque(M, "xw", b"x")
    t.xwh(M, "xw/gone")
    t.xwh(M, "xw/gone_dir")
    t.f(M, "xw/m_keep", b"m")
    t.f(M, "xw/not_wh", b"abc", xattrs={WH_XATTR: b"y"})   # not zero-size: a file
    t.f(T, "xw/t_keep", b"t")
    t.f(B, "xw_noflag/gone", b"B")                   # parent lacks opaque=x
    t.d(M, "xw_noflag")
    t.f(M, "xw_noflag/gone", b"", xattrs={WH_XATTR: b"y"})
    t.f(B, "xw_top/gone", b"B")                      # xwhiteout in layer 0
    t.d(T, "xw_top")
    t.opaque(T, "xw_top", b"x")
    t.xwh(T, "xw_top/gone")
    t.f(T, "xw_top/t", b"t")

    # -- redirects ------------------------------------------------------------
    t.f(B, "src_rel/b_file", b"b")
    t.f(M, "src_rel/m_file", b"m")
    t.d(T, "dst_rel")
    t.redirect(T, "dst_rel", "src_rel")              # relative: same parent
    t.f(T, "dst_rel/t_file", b"t")
    t.f(M, "a/b/m", b"m")
    t.f(B, "a/b/b", b"b")
    t.f(B, "r/abs_dst/not_merged", b"x")             # hidden by the redirect
    t.d(T, "r/abs_dst")
    t.redirect(T, "r/abs_dst", "/a/b")               # absolute, from the root
    t.f(T, "r/abs_dst/t", b"t")
    t.f(B, "r/mid_src/b", b"b")
    t.f(B, "r/mid/not_merged", b"x")
    t.d(M, "r/mid")
    t.redirect(M, "r/mid", "mid_src")                # redirect in a middle layer
    t.f(M, "r/mid/m", b"m")
    t.f(T, "r/mid/t", b"t")
    t.f(B, "chain2/b", b"b")                         # redirect chain T -> M -> B
    t.f(M, "chain1/m", b"m")
    t.redirect(M, "chain1", "chain2")
    t.d(T, "chain")
    t.redirect(T, "chain", "/chain1")
    t.f(T, "chain/t", b"t")
    t.f(B, "r/nowhere/b", b"b")
    t.d(T, "r/nowhere")
    t.redirect(T, "r/nowhere", "/does/not/exist")
    t.f(T, "r/nowhere/t", b"t")

    # -- aufs-style markers ---------------------------------------------------
    t.f(B, "aufs/gone", b"gone")
    t.f(B, "aufs/gone_dir/x", b"x")
    t.f(B, "aufs/keep", b"keep")
    t.f(B, "aufs/opqdir/b", b"b")
    t.d(M, "aufs")
    t.aufs_wh(M, "aufs/gone")
    t.aufs_wh(M, "aufs/gone_dir")
    t.d(M, "aufs/opqdir")
    t.aufs_opq(M, "aufs/opqdir")
    t.f(M, "aufs/opqdir/m", b"m")
    t.f(T, "aufs/t", b"t")
    t.f(T, "aufs/opqdir/t", b"t")
    t.aufs_wh(T, "aufs/nothing")
    t.f(B, "aufs2/b", b"b")
    t.d(T, "aufs2")
    t.aufs_opq(T, "aufs2")
    t.f(T, "aufs2/t", b"t")

    # -- symlinks -------------------------------------------------------------
    t.sym(B, "links/rel", "../files/small", xattrs={"trusted.sym": b"1"})
    t.sym(B, "links/abs", "/etc/hostname", xattrs={"trusted.overlay.overlay.esc": b"e"})
    t.sym(B, "links/dangling", "no/such/target")
    t.sym(B, "links/dirlink", "../files")
    t.sym(B, "links/long", "x/" * 1999 + "y")       # 3999-byte target
    t.sym(B, "links/self", "self", 1000, 1000)
    t.sym(B, "links/hl_sym", "shared target")
    t.link(B, "links/hl_sym", B, "links/hl_sym2")    # hard-linked symlink
    t.sym(M, "links/rel2", "rel")
    t.sym(T, "links/abs", "/overridden/by/top")

    # -- hard links -------------------------------------------------------------
    t.f(B, "hl/a", b"hard linked")
    t.link(B, "hl/a", B, "hl/b")
    t.link(B, "hl/a", B, "hl/sub/c")
    t.link(B, "hl/a", B, "hl/d")
    t.link(B, "hl/a", M, "hl/xl")                    # across layers
    t.wh(T, "hl/d")                                  # one name whited out
    t.f(M, "hl/m", b"m")
    t.link(M, "hl/m", B, "hl/m_below")               # lower name of an upper inode
    t.link(M, "hl/m", B, "hl/m")                     # same name shadowed by itself

    # -- special files -------------------------------------------------------------
    t.node(B, "dev/fifo", stat.S_IFIFO, 0o644)
    t.node(B, "dev/null", stat.S_IFCHR, 0o666, os.makedev(1, 3))
    t.node(B, "dev/blk", stat.S_IFBLK, 0o660, os.makedev(7, 0), 0, 6)
    t.node(B, "dev/bigdev", stat.S_IFCHR, 0o600, os.makedev(4095, 1048575))
    t.node(M, "dev/fifo2", stat.S_IFIFO, 0o600, 0, 1000, 1000)
    t.node(T, "dev/blk", stat.S_IFCHR, 0o640, os.makedev(10, 200))

    # -- type changes ------------------------------------------------------------
    t.f(B, "tc/dir_below/x", b"x")
    t.f(B, "tc/dir_below/y/z", b"z")
    t.f(T, "tc/dir_below", b"file hides dir")
    t.f(B, "tc/file_below", b"file")
    t.f(T, "tc/file_below/a", b"dir above file")
    t.f(B, "tc/dir_below2/x", b"x")
    t.sym(M, "tc/dir_below2", "somewhere")
    t.f(B, "tc/dir3/x", b"x")
    t.node(M, "tc/dir3", stat.S_IFIFO, 0o644)
    t.f(T, "tc/dir3/t", b"t")                        # does not merge across the fifo
    t.f(B, "tc/sym_over_dir/x", b"x")
    t.sym(T, "tc/sym_over_dir", "../files")

    # -- xattrs --------------------------------------------------------------------
    t.f(B, "x/file", b"xattrs", xattrs={
        "user.a": b"1", "user.bin": b"\x00\x01\xff\x00", "user.empty": b"",
        "trusted.t": b"tv", "trusted.overlay.overlay.foo": b"bar",
        "trusted.overlay.foo": b"private", "trusted.overlay.origin": b"\x00\xfb\x21",
        "trusted.overlay.impure": b"y", "user.big": det_bytes("xattr", 3000)})
    t.d(B, "x/dir", xattrs={"user.d": b"bottom", "trusted.overlay.overlay.opaque": b"y"})
    t.f(B, "x/dir/b", b"b")
    t.d(T, "x/dir", xattrs={"user.top": b"1", "trusted.overlay.overlay.opaque": b"y",
                            "trusted.overlay.priv": b"p"})
    t.f(T, "x/dir/t", b"t")
    t.sym(B, "x/sym", "file", xattrs={"trusted.s": b"1", "trusted.overlay.s": b"hidden"})
    t.node(B, "x/fifo", stat.S_IFIFO, 0o644, xattrs={"trusted.f": b"fifo", "trusted.overlay.overlay.w": b"w"})
    t.f(B, "x/acl_file", b"acl")
    t.d(B, "x/acl_dir")
    os.chdir("/")
    for args in (["-m", "u:1000:rw,g:100:r", "x/acl_file"], ["-d", "-m", "u:1000:rwx", "x/acl_dir"]):
        subprocess.run(["setfacl"] + args[:-1] + [os.path.join(t.root, "l%d" % B, args[-1])], check=True)

    # -- long names, deep path ------------------------------------------------------
    t.f(B, "long/" + "n" * 255, b"255-byte name")
    t.f(M, "long/" + "m" * 255, b"255-byte name", xattrs={"user.l": b"1"})
    t.d(T, "long/" + "d" * 254)
    t.f(T, "long/" + "d" * 254 + "/" + "f" * 255, b"nested long")
    comps = ["%02d" % i + "x" * 248 for i in range(16)]    # 16 * 251 = 4016 bytes
    t.f(B, "/".join(["deep"] + comps + ["leaf"]), b"4000 bytes deep")
    t.f(T, "/".join(["deep"] + comps[:8] + ["t"]), b"top half")
    t.f(M, "/".join(["deep"] + comps[:4] + ["m"]), b"middle")
    t.wh(T, "/".join(["deep"] + comps[:12] + ["gone"]))
    t.f(B, "/".join(["deep"] + comps[:12] + ["gone"]), b"gone")


def build_big(t, n=100_000):
    """A 100,000-entry merged dir split over the top three layers, with
    overridden duplicates and hidden names (native and aufs whiteouts)."""
    for L in (T, M, B):
        t.d(L, "big")
    per = {T: [], M: [], B: []}
    for i in range(n):
        L = (T, M, B)[i % 3]
        per[L].append(i)
        if i % 10 == 0 and L != B:
            per[L + 1].append(i)                   # duplicate below: overridden
    for L in (B, M, T):
        t.at(L, "big/x")
        for i in per[L]:
            name = "e%06d" % i
            if i % 1000 == 0:
                os.mkdir(name, 0o755)
                os.close(os.open(name + "/in_%d" % L, os.O_CREAT | os.O_WRONLY, 0o644))
            elif i % 97 == 0:
                os.symlink("target%d" % L, name)
            else:
                os.close(os.open(name, os.O_CREAT | os.O_WRONLY, 0o644 if L == T else 0o600))
        if L == B:
            for j in range(1000):
                os.close(os.open("w%05d" % j, os.O_CREAT | os.O_WRONLY, 0o644))
    for j in range(1000):
        if j % 2:
            t.wh(T, "big/w%05d" % j, link_from=(T, "big/w00001") if j > 1 else None)
        else:
            t.aufs_wh(M, "big/w%05d" % j)


def build_generated(t, nlayers, seed, g="g"):
    """A deterministic random stack below dir g across all layers: each layer
    adds, overrides, whites out, opaques and redirects things."""
    dirs = [g + "/" + a for a in "abcd"]
    dirs += [d + "/" + b for d in dirs for b in "xyz"]
    dirs += [d + "/" + c for d in dirs if d.count("/") == 2 for c in "pq"]
    leaves = ["n%d" % i for i in range(16)]
    cands = dirs + ["%s/%s" % (d, n) for d in [g] + dirs for n in leaves]
    ops = ["file", "dir", "opaque", "wh", "aufs_wh", "aufs_opq", "xwh", "sym", "fifo", "dev", "link", "redirect"]
    weights = [28, 10, 7, 14, 5, 3, 6, 8, 2, 2, 6, 7]
    files = []                                     # (layer, path) of regular files
    for L in reversed(range(nlayers)):
        rng = random.Random("%s:%d" % (seed, L))
        st = {g: {"dir"}}
        t.d(L, g, rng.choice([0o755, 0o750]))

        def parents_ok(p):
            parts = p.split("/")
            for k in range(1, len(parts)):
                a = "/".join(parts[:k])
                if a in st:
                    if "dir" not in st[a]:
                        return False
                else:
                    t.d(L, a)
                    st[a] = {"dir"}
            return True

        t.f(L, "%s/layer%d" % (g, L), b"%d" % L)            # every layer adds something
        for _ in range(rng.randint(30, 70)):
            p = rng.choice(cands)
            op = rng.choices(ops, weights)[0]
            # draw all random values first so both copies consume the rng alike
            size = rng.choice([0, rng.randint(1, 100), rng.randint(1000, 20000)])
            mode = rng.choice([0o644, 0o600, 0o755, 0o400, 0o4755, 0o2711, 0o1644])
            dmode = rng.choice([0o755, 0o700, 0o1777, 0o2755, 0o555])
            uid, gid = rng.choice([(0, 0), (1000, 1000), (1, 2), (65534, 65534)])
            xa = {}
            for k in range(rng.choice([0, 0, 1, 3])):
                key = rng.choice(["user.g%d" % k, "trusted.g%d" % k, "trusted.overlay.overlay.e%d" % k,
                                  "trusted.overlay.h%d" % k])
                xa[key] = ("%s:%d:%d" % (key, L, rng.randint(0, 99))).encode()
            r1, r2 = rng.random(), rng.random()
            target = rng.choice(["n3", "../n5", "/%s/a/n1" % g, "/nonexistent", "x" * rng.randint(1, 200), p])
            redir = rng.choice(leaves) if r1 < 0.5 else "/" + rng.choice(cands)
            src = rng.choice(files) if files else None
            if p in st or not parents_ok(p):
                continue
            parent = p.rsplit("/", 1)[0]
            if op == "file":
                t.f(L, p, det_bytes(p + str(L), size), mode, uid, gid, xa)
                files.append((L, p))
                st[p] = {"file"}
            elif op == "dir":
                t.d(L, p, dmode, uid, gid, xa)
                st[p] = {"dir"}
            elif op == "opaque":
                t.d(L, p, dmode, uid, gid, xa)
                t.opaque(L, p)
                st[p] = {"dir", "opq"}
            elif op == "aufs_opq":
                t.d(L, p, dmode, uid, gid)
                t.aufs_opq(L, p)
                st[p] = {"dir", "opq"}
            elif op == "redirect":
                t.d(L, p, dmode, uid, gid, xa)
                t.redirect(L, p, redir)
                st[p] = {"dir", "redir"}
            elif op == "wh":
                base = t.wh_nodes.get(L)
                if base is None and r1 < 0.3:
                    base = t.wh_nodes.get(L + 1)   # link a whiteout of the layer below
                if base is not None and r2 < 0.6:
                    t.wh(L, p, link_from=base)
                else:
                    t.wh(L, p, rng.choice([0, 0o644]) if r2 < 0.5 else 0)
                    t.wh_nodes.setdefault(L, (L, p))
                st[p] = {"wh"}
            elif op == "aufs_wh":
                t.aufs_wh(L, p)
                st[p] = {"wh"}
            elif op == "xwh":
                if st[parent] & {"opq"}:
                    continue
                if "x" not in st[parent]:
                    t.opaque(L, parent, b"x")
                    st[parent].add("x")
                t.xwh(L, p)
                st[p] = {"wh"}
            elif op == "sym":
                t.sym(L, p, target, uid, gid)
                st[p] = {"lnk"}
            elif op == "fifo":
                t.node(L, p, stat.S_IFIFO, mode & 0o777, 0, uid, gid,
                       {k: v for k, v in xa.items() if k.startswith("trusted.")})
                st[p] = {"fifo"}
            elif op == "dev":
                kind = stat.S_IFCHR if r1 < 0.5 else stat.S_IFBLK
                t.node(L, p, kind, 0o660, os.makedev(rng.randint(1, 300), rng.randint(0, 70000)), uid, gid)
                st[p] = {"dev"}
            elif op == "link" and src is not None:
                t.link(src[0], src[1], L, p)
                files.append((L, p))
                st[p] = {"file"}


def tree_key(args, form):
    src = open(os.path.abspath(__file__), "rb").read()
    h = hashlib.sha256(src)
    h.update(repr((RIG_VERSION, form, args.layers, args.big, args.seed)).encode())
    return h.hexdigest()


def build_tree(args, root, form):
    """Build (or reuse) the layer stack at root; returns the probe list and
    the paths whited out by aufs markers."""
    key = tree_key(args, form)
    meta = root + ".json"
    if os.path.isdir(root) and os.path.exists(meta):
        with open(meta) as fh:
            m = json.load(fh)
        if m.get("key") == key:
            log("reusing layers in %s" % root)
            return m["probes"], m["aufs_whiteouts"]
    if os.path.exists(root):
        check_no_mounts_below(root)
        shutil.rmtree(root)
    if os.path.exists(meta):
        os.unlink(meta)
    t0 = time.time()
    old_umask = os.umask(0)
    t = Layers(root, args.layers, aufs=(form == "s"))
    try:
        build_cases(t)
        if args.big:
            build_big(t)
        for k in range(4):                      # four independent random stacks
            build_generated(t, args.layers, args.seed if k == 0 else "%s.%d" % (args.seed, k),
                            "g" if k == 0 else "g%d" % k)
        t.stamp()
    finally:
        t.close()
        os.umask(old_umask)
    os.sync()
    probes, aufs = sorted(t.probes), sorted(t.aufs_whiteouts)
    with open(meta, "w") as fh:
        json.dump({"key": key, "probes": probes, "aufs_whiteouts": aufs}, fh)
    log("built %s (%d layers) in %.1fs" % (root, args.layers, time.time() - t0))
    return probes, aufs


# --------------------------------------------------------------------------
# mounting
# --------------------------------------------------------------------------
def unescape_mountinfo(s):
    out, i = bytearray(), 0
    b = s.encode("utf-8", "surrogateescape")
    while i < len(b):
        if b[i:i + 1] == b"\\" and i + 3 < len(b) and b[i + 1:i + 4].isdigit():
            out.append(int(b[i + 1:i + 4], 8))
            i += 4
        else:
            out.append(b[i])
            i += 1
    return out.decode("utf-8", "surrogateescape")


def mountinfo():
    """List of (mountpoint, fstype, source) of this mount namespace."""
    res = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            left, _, right = line.partition(" - ")
            f = left.split()
            r = right.split()
            res.append((unescape_mountinfo(f[4]), r[0], unescape_mountinfo(r[1]) if len(r) > 1 else ""))
    return res


def is_mounted(mnt):
    mnt = os.path.realpath(mnt)
    return any(m[0] == mnt for m in mountinfo())


def check_no_mounts_below(path):
    path = os.path.realpath(path)
    for m in mountinfo():
        if m[0] == path or m[0].startswith(path + "/"):
            raise RuntimeError("refusing to delete %s: %s is mounted" % (path, m[0]))


def esc_layer(p):
    return p.replace("\\", "\\\\").replace(":", "\\:").replace(",", "\\,")


def lowerdir_opt(root, n, lowers=None):
    lowers = lowers or [os.path.join(root, "l%d" % i) for i in range(n)]
    return "lowerdir=" + ":".join(esc_layer(p) for p in lowers)


IMAGE_TOOLS = {"squashfs": lambda src, dst: ["mksquashfs", src, dst, "-quiet", "-noappend",
                                             "-no-progress"],
               # a uuid from the image's name: both sides' l0.img are alike
               "erofs": lambda src, dst: ["mkfs.erofs", "--quiet", "-U",
                                          str(uuid.uuid5(uuid.NAMESPACE_URL, os.path.basename(dst))),
                                          dst, src]}


def prune_long_names(top, limit=250):
    """mkfs.erofs 1.5 (Debian 12) fails on names of more than 250 bytes."""
    for dirpath, dirs, files in os.walk(top):
        for n in dirs + files:
            if len(os.fsencode(n)) > limit:
                p = os.path.join(dirpath, n)
                shutil.rmtree(p) if n in dirs and not os.path.islink(p) else os.unlink(p)
        dirs[:] = [d for d in dirs if len(os.fsencode(d)) <= limit]


def make_image(kind, src, dst):
    """An image of type kind of the dir src at dst (erofs: of a copy
    without the names mkfs.erofs cannot take)."""
    copy = None
    if kind == "erofs":
        copy = dst + ".src"
        subprocess.run(["cp", "-a", src, copy], check=True)
        prune_long_names(copy)
        src = copy
    p = subprocess.run(IMAGE_TOOLS[kind](src, dst), capture_output=True, text=True)
    if copy:
        shutil.rmtree(copy)
    if p.returncode != 0:
        raise RuntimeError("making %s: %s" % (dst, (p.stderr or p.stdout).strip()))


def build_images(root, n, kind, work):
    """An image of each layer under root (rebuilt when the layers were);
    returns the image paths."""
    imgdir = os.path.join(work, "img-" + kind)
    meta = root + ".json"
    stamp = os.path.join(imgdir, ".built")
    if not (os.path.exists(stamp) and os.path.getmtime(stamp) >= os.path.getmtime(meta)):
        if os.path.exists(imgdir):
            check_no_mounts_below(imgdir)
        shutil.rmtree(imgdir, ignore_errors=True)
        os.makedirs(imgdir)
        t0 = time.time()
        for i in range(n):
            make_image(kind, os.path.join(root, "l%d" % i), os.path.join(imgdir, "l%d.img" % i))
        open(stamp, "w").close()
        log("built %d %s images in %.1fs" % (n, kind, time.time() - t0))
    return [os.path.join(imgdir, "l%d.img" % i) for i in range(n)]


def loop_mount_images(images, kind, mnts):
    """Mount each image read-only on a loop device (the kernel side)."""
    for img, m in zip(images, mnts):
        os.makedirs(m, exist_ok=True)
        if is_mounted(m):
            subprocess.run(["umount", m], capture_output=True)
        p = subprocess.run(["mount"] + (["-t", kind] if kind else []) + ["-o", "loop,ro", img, m],
                           capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError("mount -o loop %s: %s" % (img, p.stderr.strip()))


class Mount:
    """One merged view: the kernel overlay or stratafs."""

    def __init__(self, kind, root, nlayers, mnt, binary=None, extra="", lowers=None):
        self.kind, self.root, self.n, self.mnt = kind, root, nlayers, mnt
        self.binary, self.extra, self.lowers = binary, extra, lowers
        self.fuse_conn = None

    def label(self):
        return "kernel" if self.kind == "kernel" else "stratafs"

    def mount(self):
        os.makedirs(self.mnt, exist_ok=True)
        opts = lowerdir_opt(self.root, self.n, self.lowers)
        if self.extra:
            opts += "," + self.extra
        if self.kind == "kernel":
            cmd = ["mount", "-t", "overlay", "overlay", "-o", opts, self.mnt]
        else:
            cmd = [self.binary, "stratafs", self.mnt, "-o", opts]
        if len(opts) > 4095:
            raise RuntimeError("option string too long (%d bytes)" % len(opts))
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
        if p.returncode != 0:
            raise RuntimeError("%s mount failed (rc %d): %s" % (self.label(), p.returncode,
                                                                (p.stderr or p.stdout).strip()))
        if not is_mounted(self.mnt):
            raise RuntimeError("%s: exit 0 but %s is not in mountinfo" % (self.label(), self.mnt))
        if self.kind != "kernel":
            st = os.stat(self.mnt)
            self.fuse_conn = os.minor(st.st_dev) if os.major(st.st_dev) == 0 else None

    def umount(self):
        if not is_mounted(self.mnt):
            return
        p = subprocess.run(["umount", self.mnt], capture_output=True, text=True)
        if p.returncode != 0 or is_mounted(self.mnt):
            log("umount %s failed (%s); using umount -l" % (self.mnt, p.stderr.strip()))
            subprocess.run(["umount", "-l", self.mnt], capture_output=True)

    def abort(self):
        """Watchdog: unblock a hung FUSE mount of ours by aborting its connection."""
        if self.fuse_conn is not None:
            try:
                with open("/sys/fs/fuse/connections/%d/abort" % self.fuse_conn, "w") as fh:
                    fh.write("1")
            except OSError:
                pass


# --------------------------------------------------------------------------
# walking a merged tree
# --------------------------------------------------------------------------
def err(e):
    return ("ERR", errno.errorcode.get(e.errno, str(e.errno)))


def inspect(name):
    """Observations of one entry, relative to the cwd (no symlink follow)."""
    rec = {}
    try:
        st = os.lstat(name)
    except OSError as e:
        rec["lstat"] = err(e)
        return rec, None
    fmt = stat.S_IFMT(st.st_mode)
    rec["type"] = TYPE_NAMES.get(fmt, oct(fmt))
    rec["mode"] = "%04o" % stat.S_IMODE(st.st_mode)
    rec["uid"] = st.st_uid
    rec["gid"] = st.st_gid
    rec["size"] = st.st_size
    rec["nlink"] = st.st_nlink
    rec["mtime_ns"] = st.st_mtime_ns
    if fmt in (stat.S_IFCHR, stat.S_IFBLK):
        rec["rdev"] = "%d:%d" % (os.major(st.st_rdev), os.minor(st.st_rdev))
    if fmt == stat.S_IFREG:
        try:
            h = hashlib.sha256()
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                while True:
                    chunk = os.read(fd, 1 << 20)
                    if not chunk:
                        break
                    h.update(chunk)
            finally:
                os.close(fd)
            rec["sha256"] = h.hexdigest()[:16]
        except OSError as e:
            rec["sha256"] = err(e)
    if fmt == stat.S_IFLNK:
        try:
            rec["target"] = os.readlink(name)
        except OSError as e:
            rec["target"] = err(e)
    try:
        xa = {}
        for k in sorted(os.listxattr(name, follow_symlinks=False)):
            try:
                v = os.getxattr(name, k, follow_symlinks=False)
                xa[k] = v.hex() if len(v) <= 32 else "sha:" + hashlib.sha256(v).hexdigest()[:16]
            except OSError as e:
                xa[k] = err(e)
        rec["xattrs"] = xa
    except OSError as e:
        rec["xattrs"] = err(e)
    return rec, st


class Walk:
    """Result of walking one mount: records, listings, inode numbers and
    internal-consistency problems (d_ino vs st_ino, d_type vs st_mode)."""

    def __init__(self):
        self.recs = {}       # relpath(bytes) -> dict of observations
        self.listing = {}    # relpath of dir -> {name: d_type name}
        self.ino = {}        # relpath -> st_ino
        self.problems = []   # (relpath, text)


def join(parent, name):
    return name if not parent else parent + b"/" + name


def walk_mount(mnt):
    w = Walk()
    cwd = os.open("/", O_DIR)
    rootfd = os.open(mnt, O_DIR)
    try:
        os.fchdir(rootfd)
        rec, st = inspect(".")
        w.recs[b""] = rec
        if st:
            w.ino[b""] = st.st_ino
        _walk_dir(w, b"", rootfd, st)
    finally:
        os.fchdir(cwd)
        os.close(cwd)
        os.close(rootfd)
    return w


def _walk_dir(w, rel, dfd, dst):
    os.fchdir(dfd)
    try:
        with DirStream(os.open(".", O_DIR)) as ds:
            ents = ds.read(skip_dots=False)
    except OSError as e:
        w.listing[rel] = err(e)
        return
    listing = {}
    subdirs = []
    for name, dtype, dino in ents:
        if name == b".":
            if dst is not None and dino != dst.st_ino:
                w.problems.append((rel, "d_ino of '.' is %d, st_ino is %d" % (dino, dst.st_ino)))
            continue
        if name == b"..":
            continue
        if name in listing:
            w.problems.append((join(rel, name), "name listed twice by readdir"))
            continue
        listing[name] = DT_NAMES.get(dtype, str(dtype))
        path = join(rel, name)
        rec, st = inspect(name)
        w.recs[path] = rec
        if st is None:
            continue
        w.ino[path] = st.st_ino
        if dino != st.st_ino:
            w.problems.append((path, "d_ino %d != st_ino %d" % (dino, st.st_ino)))
        want = IFMT_TO_DT.get(stat.S_IFMT(st.st_mode))
        if dtype != want:
            w.problems.append((path, "d_type %s but lstat says %s" % (DT_NAMES.get(dtype, dtype), rec["type"])))
        if stat.S_ISDIR(st.st_mode):
            subdirs.append((name, path, st))
    w.listing[rel] = listing
    for name, path, st in subdirs:
        try:
            sfd = os.open(name, O_DIR)
        except OSError as e:
            w.recs[path]["open"] = err(e)
            continue
        try:
            _walk_dir(w, path, sfd, st)
        finally:
            os.close(sfd)
            os.fchdir(dfd)


def lookup_inos(mnt, paths):
    """st_ino of every path by pure lookups (no readdir), in the given order."""
    res = {}
    rootfd = os.open(mnt, O_DIR)
    try:
        for p in paths:
            if p == b"":
                res[p] = os.fstat(rootfd).st_ino
                continue
            parts = p.split(b"/")
            opened = []
            fd = rootfd
            try:
                for c in parts[:-1]:
                    fd = os.open(c, O_DIR, dir_fd=fd)
                    opened.append(fd)
                res[p] = os.lstat(parts[-1], dir_fd=fd).st_ino
            except OSError as e:
                res[p] = err(e)
            finally:
                for fd in opened:
                    os.close(fd)
    finally:
        os.close(rootfd)
    return res


def probe(mnt, paths):
    """lstat/open outcome of paths (hidden names, too-long names)."""
    res = {}
    rootfd = os.open(mnt, O_DIR)
    try:
        for p in paths:
            parts = p.split(b"/")
            opened = []
            fd = rootfd
            try:
                for c in parts[:-1]:
                    fd = os.open(c, O_DIR, dir_fd=fd)
                    opened.append(fd)
                try:
                    st = os.lstat(parts[-1], dir_fd=fd)
                    out = TYPE_NAMES.get(stat.S_IFMT(st.st_mode), "?")
                except OSError as e:
                    out = err(e)[1]
                try:
                    os.close(os.open(parts[-1], os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW, dir_fd=fd))
                    out += "/open-ok"
                except OSError as e:
                    out += "/open-" + err(e)[1]
                res[p] = out
            except OSError as e:
                res[p] = "parent-" + err(e)[1]
            finally:
                for fd in opened:
                    os.close(fd)
    finally:
        os.close(rootfd)
    return res


def seek_check(mnt, rel):
    """telldir/seekdir on one dir of one mount: continuing after seekdir
    must give the same entries as the first read from that point, in the
    same stream and in a freshly opened stream.  Returns problem strings."""
    problems = []

    def opendir():
        rootfd = os.open(mnt, O_DIR)
        try:
            return DirStream(os.open(rel or b".", O_DIR, dir_fd=rootfd))
        finally:
            os.close(rootfd)

    with opendir() as ds:
        full = [e[0] for e in ds.read(skip_dots=False)]
        n = len(full)
        if len(set(full)) != n:
            problems.append("duplicate names in one readdir pass")
        points = sorted({k for k in (1, 2, 37, 1000, 4096, n // 2, n - 2, n - 1) if 0 < k < n})
        saved = []
        for k in points:
            ds.rewind()
            head = [e[0] for e in ds.read(k, skip_dots=False)]
            pos = ds.tell()
            rest1 = [e[0] for e in ds.read(skip_dots=False)]
            if head + rest1 != full:
                problems.append("after rewinddir, reading differs from the first pass (split at %d)" % k)
            ds.seek(pos)
            rest2 = [e[0] for e in ds.read(skip_dots=False)]
            if rest2 != rest1:
                problems.append("seekdir(telldir()) after %d entries continues with %d entries (first: %r), "
                                "expected %d (first: %r)" % (k, len(rest2), rest2[:1], len(rest1), rest1[:1]))
            saved.append((k, pos, rest1))
        # seek back to an earlier position after reading to the end
        if saved:
            k, pos, rest1 = saved[0]
            ds.read()
            ds.seek(pos)
            again = [e[0] for e in ds.read(skip_dots=False)]
            if again != rest1:
                problems.append("seekdir back to the position after %d entries (from EOF) gives %d entries, "
                                "expected %d" % (k, len(again), len(rest1)))
    for k, pos, rest1 in saved[len(saved) // 2:len(saved) // 2 + 1]:
        with opendir() as ds2:
            ds2.seek(pos)
            rest3 = [e[0] for e in ds2.read(skip_dots=False)]
            if rest3 != rest1:
                problems.append("seekdir in a new stream to the position after %d entries gives %d entries, "
                                "expected %d" % (k, len(rest3), len(rest1)))
    return n, problems


# --------------------------------------------------------------------------
# comparison
# --------------------------------------------------------------------------
def show(p):
    if p == b"":
        return "/"
    parts = []
    for c in p.split(b"/"):
        s = c.decode("utf-8", "backslashreplace")
        parts.append(s if len(s) <= 40 else "%s...[%d]" % (s[:12], len(c)))
    return "/" + "/".join(parts)


def short(v):
    s = repr(v)
    return s if len(s) <= 200 else s[:200] + "..."


class Report:
    def __init__(self, max_print):
        self.n = 0
        self.max_print = max_print

    def diff(self, line):
        self.n += 1
        if self.max_print <= 0 or self.n <= self.max_print:
            print("DIFF " + line, flush=True)


def ino_classes(inos):
    by = {}
    for p, i in inos.items():
        if isinstance(i, int):
            by.setdefault(i, []).append(p)
    cls = {}
    for group in by.values():
        group.sort()
        for p in group:
            cls[p] = tuple(group)
    return cls


def compare(a, b, la, lb, rep, aufs_skip=frozenset()):
    """Compare walks a (reference) and b; returns number of entries compared.

    aufs_skip: paths whited out by an aufs .wh. marker in b's layers.  In
    the reference layers that is a char 0/0 whiteout, which the kernel lists
    (lstat ENOENT) in a non-merged dir; a .wh. marker is never listed, so
    such an entry missing from b is not a difference."""
    quirk = [p for p in aufs_skip if p in a.recs and p not in b.recs and a.recs[p].get("lstat") == ("ERR", "ENOENT")]
    for p in quirk:
        del a.recs[p]
        parent, _, name = p.rpartition(b"/")
        if isinstance(a.listing.get(parent), dict):
            a.listing[parent].pop(name, None)
    if quirk:
        log("%d whiteouts listed by the kernel in non-merged dirs stand for aufs markers: not compared" % len(quirk))
    paths = sorted(set(a.recs) | set(b.recs))
    for p in paths:
        ra, rb = a.recs.get(p), b.recs.get(p)
        if ra is None or rb is None:
            label, r = (lb, rb) if ra is None else (la, ra)
            rep.diff("%s: only in %s (%s)" % (show(p), label, r.get("type") or "lstat " + str(r.get("lstat", ("", "?"))[1])))
            continue
        if "lstat" in ra or "lstat" in rb:      # lstat failed on at least one side
            if ra.get("lstat") != rb.get("lstat"):
                rep.diff("%s: lstat: %s=%s %s=%s" % (show(p), la, short(ra.get("lstat") or ra.get("type")),
                                                    lb, short(rb.get("lstat") or rb.get("type"))))
            continue
        for k in sorted(set(ra) | set(rb)):
            va, vb = ra.get(k), rb.get(k)
            if va == vb:
                continue
            if k == "xattrs" and isinstance(va, dict) and isinstance(vb, dict):
                for x in sorted(set(va) | set(vb)):
                    if va.get(x) != vb.get(x):
                        rep.diff("%s: xattr %s: %s=%s %s=%s" % (show(p), x, la, short(va.get(x)), lb, short(vb.get(x))))
            else:
                rep.diff("%s: %s: %s=%s %s=%s" % (show(p), k, la, short(va), lb, short(vb)))
    for d in sorted(set(a.listing) | set(b.listing)):
        da, db = a.listing.get(d), b.listing.get(d)
        if da is None or db is None:
            continue   # already reported as only-in
        if not isinstance(da, dict) or not isinstance(db, dict):
            if da != db:
                rep.diff("%s: readdir: %s=%s %s=%s" % (show(d), la, short(da), lb, short(db)))
            continue
        for name in sorted(set(da) | set(db)):
            if da.get(name) != db.get(name):
                rep.diff("%s: readdir entry %s: %s=%s %s=%s" % (show(d), name.decode("utf-8", "backslashreplace")[:60],
                                                                 la, da.get(name, "absent"), lb, db.get(name, "absent")))
    ca, cb = ino_classes(a.ino), ino_classes(b.ino)
    for p in paths:
        if p in a.ino and p in b.ino and ca.get(p) != cb.get(p):
            rep.diff("%s: same-st_ino class: %s=%s %s=%s" % (
                show(p), la, [show(x) for x in ca.get(p, ())][:6], lb, [show(x) for x in cb.get(p, ())][:6]))
    return len(paths)


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, default=3, help="number of layers (>= 3)")
    ap.add_argument("--big", action="store_true", help="add a 100,000-entry merged directory")
    ap.add_argument("--seed", default="strata", help="seed of the generated stack")
    ap.add_argument("--stratafs", default="build/stratafs", help="stratafs binary")
    ap.add_argument("--workdir", help="work dir (layers are kept there and reused); default: a temp dir")
    ap.add_argument("--kernel-vs-kernel", action="store_true", help="compare the kernel overlay with itself")
    ap.add_argument("--extra-opts", default=os.environ.get("STRATAFS_EXTRA_OPTS", ""),
                    help="appended to stratafs -o (default: $STRATAFS_EXTRA_OPTS)")
    ap.add_argument("--max-print", type=int, default=2000, help="print at most this many differences (0: all)")
    ap.add_argument("--timeout", type=int, default=1800, help="abort the stratafs mount after this many seconds")
    ap.add_argument("--images", choices=sorted(IMAGE_TOOLS), help="layers as image files of this type")
    args = ap.parse_args()
    if args.layers < 3 or args.layers > 500:
        ap.error("--layers must be between 3 and 500")
    if os.geteuid() != 0:
        ap.error("must run as root")
    binary = None
    if not args.kernel_vs_kernel:
        binary = os.path.abspath(args.stratafs)
        if not os.access(binary, os.X_OK):
            print("rig: FAILED: stratafs binary %s not found" % binary)
            print("rig: 0 entries compared, 0 differences")
            return 1

    t_start = time.time()
    tmp = None
    if args.workdir:
        work = os.path.abspath(args.workdir)
        os.makedirs(work, exist_ok=True)
    else:
        tmp = work = tempfile.mkdtemp(prefix="rig-", dir="/tmp")
    lock = os.open(os.path.join(work, ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:                                    # one rig at a time per work dir
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log("waiting for another rig using %s" % work)
        fcntl.flock(lock, fcntl.LOCK_EX)
    la = "kernel"
    lb = "kernel2" if args.kernel_vs_kernel else "stratafs"
    rep = Report(args.max_print)
    failures = []
    compared = 0
    mounts = []
    image_mnts = []
    watchdog = None
    try:
        probes, aufs = build_tree(args, os.path.join(work, "k"), "k")
        if args.kernel_vs_kernel:
            aufs = []
        klowers = None
        if args.images:
            # both see the same images, made of the kernel form of the layers
            images = build_images(os.path.join(work, "k"), args.layers, args.images, work)
            image_mnts = [os.path.join(work, "img-%s" % args.images, "m%d" % i) for i in range(args.layers)]
            loop_mount_images(images, args.images, image_mnts)
            klowers = image_mnts
            aufs = []
        if args.kernel_vs_kernel:
            build_tree(args, os.path.join(work, "k2"), "k")
            mb = Mount("kernel", os.path.join(work, "k2"), args.layers, os.path.join(work, "mb"),
                       lowers=klowers)
        elif args.images:
            mb = Mount("stratafs", os.path.join(work, "k"), args.layers, os.path.join(work, "mb"),
                       binary, args.extra_opts, lowers=images)
        else:
            build_tree(args, os.path.join(work, "s"), "s")
            mb = Mount("stratafs", os.path.join(work, "s"), args.layers, os.path.join(work, "mb"),
                       binary, args.extra_opts)
        # the kernel turns xino off for layers on many filesystems unless told
        kextra = "xino=on" if args.images else ""
        ma = Mount("kernel", os.path.join(work, "k"), args.layers, os.path.join(work, "ma"),
                   extra=kextra, lowers=klowers)
        mounts = [ma, mb]
        for m in mounts:
            if is_mounted(m.mnt):
                m.umount()
        ma.mount()
        mb.mount()
        watchdog = threading.Timer(args.timeout, lambda: (failures.append("timeout after %ds" % args.timeout),
                                                           mb.abort()))
        watchdog.daemon = True
        watchdog.start()

        t0 = time.time()
        wa = walk_mount(ma.mnt)
        log("walked %s: %d entries in %.1fs" % (la, len(wa.recs), time.time() - t0))
        t0 = time.time()
        wb = walk_mount(mb.mnt)
        log("walked %s: %d entries in %.1fs" % (lb, len(wb.recs), time.time() - t0))
        skip = {p.encode("utf-8", "surrogateescape") for p in aufs}
        compared = compare(wa, wb, la, lb, rep, skip)
        for label, w in ((la, wa), (lb, wb)):
            for p, text in w.problems:
                rep.diff("%s: in %s: %s" % (show(p), label, text))

        # hidden names and too-long names must fail the same way
        pr = [x.encode("utf-8", "surrogateescape") for x in probes]
        too_long = [b"a" * 256, b"files/" + b"b" * 256]
        if args.images == "squashfs":
            # squashfs takes names of 256 bytes, so the kernel looks them up
            # (ENOENT); stratafs keeps to NAME_MAX (ENAMETOOLONG)
            too_long = []
        pr += too_long + [b"long/" + b"z" * 255, b"long/" + b"n" * 255]
        pa, pb = probe(ma.mnt, pr), probe(mb.mnt, pr)
        for p in pr:
            if pa[p] != pb[p]:
                rep.diff("%s: lookup: %s=%s %s=%s" % (show(p), la, pa[p], lb, pb[p]))
        for p in too_long:
            if not pa[p].startswith("ENAMETOOLONG"):
                failures.append("kernel gives %s for a 256-byte name" % pa[p])

        # telldir/seekdir on the biggest merged dir (and the root)
        biggest = max((d for d in wa.listing if isinstance(wa.listing[d], dict)),
                      key=lambda d: len(wa.listing[d]))
        for d in sorted({biggest, b""}):
            for label, m in ((la, ma), (lb, mb)):
                t0 = time.time()
                n, probs = seek_check(m.mnt, d)
                for text in probs:
                    rep.diff("%s: in %s: %s" % (show(d), label, text))
                log("seekdir check on %s (%d entries) in %s: %.1fs" % (show(d), n, label, time.time() - t0))

        # st_ino must survive an unmount/remount (looked up in another order)
        mb.umount()
        if is_mounted(mb.mnt):
            failures.append("%s still mounted after umount" % lb)
        else:
            time.sleep(0.2)
            mb.mount()
            t0 = time.time()
            order = sorted(wb.ino, reverse=True)
            again = lookup_inos(mb.mnt, order)
            for p in sorted(order):
                if again[p] != wb.ino[p]:
                    rep.diff("%s: st_ino after remount in %s: %s, before %s" % (show(p), lb, again[p], wb.ino[p]))
            log("remount st_ino check: %d paths in %.1fs" % (len(order), time.time() - t0))
    except Exception as e:  # report, then clean up
        failures.append("%s: %s" % (type(e).__name__, e))
    finally:
        if watchdog:
            watchdog.cancel()
        os.chdir("/")
        for m in mounts:
            try:
                m.umount()
            except Exception as e:
                failures.append("umount %s: %s" % (m.mnt, e))
        for m in mounts:
            if is_mounted(m.mnt):
                failures.append("%s is still mounted" % m.mnt)
        for m in image_mnts:
            if is_mounted(m):
                subprocess.run(["umount", m], capture_output=True)
        if tmp and not any(is_mounted(m) for m in [x.mnt for x in mounts] + image_mnts):
            shutil.rmtree(tmp, ignore_errors=True)
    if rep.max_print > 0 and rep.n > rep.max_print:
        print("rig: %d more differences not printed (--max-print 0 prints all)" % (rep.n - rep.max_print))
    for f in failures:
        print("rig: FAILED: " + f)
    log("finished in %.0fs" % (time.time() - t_start))
    print("rig: %d entries compared, %d differences" % (compared, rep.n), flush=True)
    return 1 if rep.n or failures else 0


if __name__ == "__main__":
    sys.exit(main())
