#!/usr/bin/env python3
"""fuzz_ops.py -- differential operation fuzzer: kernel overlayfs vs stratafs.

For every sequence, a seeded random stack of 2-3 lower layers is generated
(a few dirs 2-3 deep, small regular files, symlinks, a lower hard-link pair,
char 0/0 whiteouts and an opaque dir in the middle layer, user.* xattrs, all
on a name space of 6 names per dir so that operations collide often), built
twice (k/ and s/, each with a fresh upper and work dir), the kernel overlay
is mounted on one copy and stratafs on the other, and one seeded random
sequence of operations runs on both: create/open/write/append/truncate/read,
mkdir/rmdir/rm -rf, unlink, rename (plain, RENAME_NOREPLACE, RENAME_EXCHANGE;
files and dirs), link, symlink, mkfifo, chmod/chown/utime, user.* xattrs,
file descriptors kept open across operations, open-then-unlink-then-use,
readdir while mutating (getdents64 in small chunks; every name returned must
have existed at open time or been created meanwhile, none twice), and a
remount (umount, mount again on the same upper/work) in the middle.

Every step's result (value or errno) is compared; every K steps
(--check-every) and at the end of a sequence the merged trees are walked
and compared (rig.py's walker: type, mode, owner, size, nlink, content,
symlink target, xattrs, readdir names and d_types, st_ino classes, mtimes
when set explicitly or preserved from a lower layer); at the
end the upper dirs and the work/index are compared as rig_write.py does,
while mounted and after umount.

On a mismatch the sequence is shrunk (delta debugging over the operations,
then over the lower-layer entries, each candidate replayed on fresh copies)
and the minimal reproducer is printed as a standalone shell script (layers
built with mkdir/mknod/setfattr..., the two mount commands, one python line
per operation, a dump and diff of both sides) and saved in the scratch dir.

The operation sequence is generated from the seed and the kernel side's
tree (which is deterministic), so `--seed S --ops N --seqs M --only-seq K`
replays one sequence exactly.  Not compared: atime, ctime,
st_ino values (only which names share one), and readdir d_ino that differs
from st_ino on the kernel side only (a kernel quirk after some renames and
links; --strict-dino compares it too).  With --kernel-vs-kernel the fuzzer
must report 0 mismatches; no kernel nondeterminism was seen with these ops.

Prints `ok N - ...` / `not ok N - ...` per sequence, then
`fuzz_ops: N sequences, M operations, D mismatches` and `N passed, N failed`;
exit 1 on any mismatch.  By default it stops at the first mismatch (after
shrinking it); --keep-going goes on and shrinks each new kind once.

  fuzz_ops.py [--stratafs build/stratafs] [--seed S|random] [--ops 10000]
              [--seqs N] [--check-every K] [--extra-opts O] [--kernel-opts O]
              [--workdir DIR] [--keep] [--keep-going] [--only-seq K]
              [--ignore REGEX] [--no-shrink] [--shrink-time S] [--verbose]
  fuzz_ops.py --kernel-vs-kernel          # validates the fuzzer itself
  fuzz_ops.py --ops 1000000 --seed random --keep-going   # a long run
  fuzz_ops.py --ignore 'overlay.impure'   # look past a known difference

Python 3.11 stdlib only; must run as root.
"""

import argparse
import errno
import math
import os
import random
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rig import compare, mountinfo  # noqa: E402
from rig_write import KERNEL_OPTS, Mnt, compare_on_disk, merged_walk, watchdog, abort_fuse_under  # noqa: E402

NAMES = ["a", "b", "c", "d", "e", "f"]
T_OLD = 1_200_000_000 * 10**9       # explicit timestamps (utime ops, lower stamps) are after this
T_OLD_END = 1_650_000_000 * 10**9   # ... and before this
SEQ_TIMEOUT = 600                   # watchdog: abort our FUSE mounts after this many seconds
STRICT_DINO = [False]               # --strict-dino
IGNORE = []                         # --ignore: compiled regexes
OP_TIMEOUT = 60                     # SIGALRM: one operation taking longer is a failure


class OpTimeout(Exception):
    pass


def on_alarm(signum, frame):
    raise OpTimeout("operation took more than %ds" % OP_TIMEOUT)


def log(msg):
    print("# " + msg, flush=True)


# --------------------------------------------------------------------------
# the operations: helper functions run in one namespace per side.  The same
# text is the head of every reproducer script, so what the fuzzer does and
# what the script does cannot drift apart.  Paths are relative to M.
# --------------------------------------------------------------------------
PRELUDE = r'''
import ctypes, errno, hashlib, os, shutil, stat
_libc = ctypes.CDLL(None, use_errno=True)
_libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
_libc.syscall.restype = ctypes.c_long
NOREPLACE, EXCHANGE = 1, 2
FD = {}                                   # fd slots kept open across operations
NB = os.O_NONBLOCK | os.O_CLOEXEC         # O_NONBLOCK: never block on a fifo

def P(p):
    return M + "/" + p if p else M

def F(v):
    if isinstance(v, bytes):
        return repr(v) if len(v) <= 40 else "sha:%s/%d" % (hashlib.sha256(v).hexdigest()[:12], len(v))
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(F(x) for x in v) + "]"
    return str(v)

def R(fn, *a, **k):
    """Run one call: "ok [VALUE]" or "err ERRNO"."""
    try:
        v = fn(*a, **k)
    except OSError as e:
        return "err " + errno.errorcode.get(e.errno, str(e.errno))
    return "ok" if v is None else "ok " + F(v)

def D(n, s):
    """n deterministic bytes, pattern s."""
    base = bytes(97 + (s * 7 + i * 5) % 26 for i in range(251))
    return (base * (n // 251 + 1))[:n]

def rename2(a, b, flags):
    if _libc.renameat2(-100, os.fsencode(P(a)), -100, os.fsencode(P(b)), flags) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))

def _st(s):
    return "%s %04o nlink=%d uid=%d gid=%d size=%s" % (
        stat.filemode(s.st_mode)[0], stat.S_IMODE(s.st_mode), s.st_nlink, s.st_uid, s.st_gid,
        "-" if stat.S_ISDIR(s.st_mode) else s.st_size)

def st(p):
    return _st(os.lstat(P(p)))

def ls(p):
    return sorted(os.listdir(P(p)))

def xl(p):
    return sorted(os.listxattr(P(p), follow_symlinks=False))

def wr(p, flags, off, data, mode=0o644):
    """open, write (or pwrite at off), close: bytes written."""
    fd = os.open(P(p), flags | NB, mode)
    try:
        return os.write(fd, data) if off is None else os.pwrite(fd, data, off)
    finally:
        os.close(fd)

def rd(p):
    fd = os.open(P(p), os.O_RDONLY | NB)
    try:
        out = b""
        while True:
            b = os.read(fd, 1 << 20)
            if not b:
                return out
            out += b
    finally:
        os.close(fd)

def rmtree(p):
    if not stat.S_ISDIR(os.lstat(P(p)).st_mode):
        raise OSError(errno.ENOTDIR, "not a directory")      # (rmtree would open a fifo)
    errs = []
    shutil.rmtree(P(p), onerror=lambda fn, path, exc: errs.append(
        (fn.__name__, path[len(M):], errno.errorcode.get(getattr(exc[1], "errno", None), type(exc[1]).__name__))))
    return errs or None

def fd(k):
    if k not in FD:
        raise OSError(errno.EBADF, "slot %d is not open" % k)
    return FD[k]

def sopen(k, p, flags, mode=0o644):
    sclose(k)
    FD[k] = os.open(P(p), flags | NB, mode)

def sclose(k):
    f = FD.pop(k, None)
    if f is not None:
        os.close(f)

def swr(k, off, data):
    return os.write(fd(k), data) if off is None else os.pwrite(fd(k), data, off)

def srd(k, off, n):
    return os.pread(fd(k), n, off)

def sst(k):
    return _st(os.fstat(fd(k)))

def strunc(k, n):
    os.ftruncate(fd(k), n)

def sls(k):
    return sorted(os.listdir(fd(k)))

def openunl(p, flags, how, other, off, data):
    """open p, remove it (unlink, rmdir, rename OTHER over it, rename it to
    OTHER), then use the fd."""
    try:
        f = os.open(P(p), flags | NB, 0o644)
    except OSError as e:
        return "open err " + errno.errorcode.get(e.errno, str(e.errno))
    try:
        if how == "unlink":
            out = ["unlink " + R(os.unlink, P(p))]
        elif how == "rmdir":
            out = ["rmdir " + R(os.rmdir, P(p))]
        elif how == "over":
            out = ["rename over " + R(os.rename, P(other), P(p))]
        else:
            out = ["rename away " + R(os.rename, P(p), P(other))]
        out.append("pwrite " + R(os.pwrite, f, data, off))
        out.append("pread " + R(os.pread, f, 64, max(0, off - 10)))
        out.append("fstat " + R(lambda: _st(os.fstat(f))))
        out.append("fsync " + R(os.fsync, f))
        out.append("ls " + R(lambda: sorted(os.listdir(f))))
        return "; ".join(out)
    finally:
        os.close(f)

def _getdents(f, size):
    buf = ctypes.create_string_buffer(size)
    n = _libc.syscall(ctypes.c_long(217), ctypes.c_long(f), buf, ctypes.c_long(size))   # getdents64
    if n < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    names, pos, raw = [], 0, buf.raw
    while pos < n:
        reclen = int.from_bytes(raw[pos + 16:pos + 18], "little")
        name = raw[pos + 19:pos + reclen].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        if name not in (".", ".."):
            names.append(name)
        pos += reclen
    return names, n

def rdmut(d, k, size, mutate):
    """Read at least k names of dir d with getdents64(size), run mutate(),
    read the rest.  Every name must have existed before or after, none may
    come twice (what else shows up is unspecified)."""
    before = set(os.listdir(P(d)))
    f = os.open(P(d), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    seen, res = [], "not run"
    try:
        while len(seen) < k:
            names, n = _getdents(f, size)
            if n == 0:
                break
            seen += names
        res = mutate()
        while True:
            names, n = _getdents(f, size)
            if n == 0:
                break
            seen += names
    except OSError as e:
        seen.append("<getdents: %s>" % errno.errorcode.get(e.errno, e.errno))
    finally:
        os.close(f)
    try:
        after = set(os.listdir(P(d)))
    except OSError:
        after = set()
    bad = sorted(set(seen) - before - after)
    dup = sorted(x for x in set(seen) if seen.count(x) > 1)
    return "mutation %s; %s" % (res, "names ok" if not bad and not dup else "BAD names %s twice %s" % (bad, dup))

def remount():
    for k in list(FD):
        sclose(k)
    REMOUNT()
'''

# the dump half of a reproducer (not used by the fuzzer itself)
REPRO_DUMP = r'''
def _x(path, prefixes):
    out = []
    for k in sorted(os.listxattr(path, follow_symlinks=False)):
        if k.startswith(prefixes):
            v = os.getxattr(path, k, follow_symlinks=False)
            out.append("%s=%s" % (k, "present" if k.endswith((".origin", ".uuid", ".upper")) else v))
    return " ".join(out)

def _line(path, rel, upper):
    try:
        s = os.lstat(path)
    except OSError as e:
        return "%s lstat %s" % (rel, errno.errorcode.get(e.errno, e.errno)), False
    line = "%s %s %04o %d:%d nlink=%d" % (rel or "/", stat.filemode(s.st_mode)[0], stat.S_IMODE(s.st_mode),
                                       s.st_uid, s.st_gid, s.st_nlink)
    if upper and stat.S_ISCHR(s.st_mode) and s.st_rdev == 0:
        line = line.rsplit(" nlink=", 1)[0] + " whiteout"
    if not stat.S_ISDIR(s.st_mode):
        line += " size=%d" % s.st_size
    if not upper:
        line += " mtime=%s" % (s.st_mtime_ns if s.st_mtime_ns < %(T_OLD_END)d else "recent")
    try:
        if stat.S_ISREG(s.st_mode):
            with open(path, "rb") as fh:
                line += " sha=" + hashlib.sha256(fh.read()).hexdigest()[:12]
        if stat.S_ISLNK(s.st_mode):
            line += " -> " + os.readlink(path)
    except OSError as e:
        line += " " + errno.errorcode.get(e.errno, str(e.errno))
    try:
        x = _x(path, ("trusted.overlay.",) if upper else ("user.", "trusted."))
    except OSError as e:
        x = "xattrs " + errno.errorcode.get(e.errno, str(e.errno))
    return line + (" " + x if x else ""), stat.S_ISDIR(s.st_mode)

def dump(root, upper):
    """One line per object below root (in the order of fuzz_ops' walker:
    a dir's entries are all looked at before its subdirs are entered)."""
    print(_line(root, "", upper)[0])
    def visit(path, rel):
        subdirs = []
        try:
            names = sorted(os.listdir(path))
        except OSError as e:
            print("%s readdir %s" % (rel, errno.errorcode.get(e.errno, e.errno)))
            return
        for n in names:
            line, isdir = _line(path + "/" + n, rel + "/" + n, upper)
            print(line)
            if isdir:
                subdirs.append(n)
        for n in subdirs:
            visit(path + "/" + n, rel + "/" + n)
    visit(root, "")
'''.replace("%(T_OLD_END)d", str(T_OLD_END))

PRELUDE_CODE = compile(PRELUDE, "<fuzz_ops prelude>", "exec")


class Op:
    """One operation: its kind (for signatures) and its python expression."""
    __slots__ = ("kind", "src", "ro", "code")

    def __init__(self, kind, src, ro=False):
        self.kind, self.src, self.ro = kind, src, ro
        self.code = compile(src, "<op>", "eval")

    def __repr__(self):
        return self.src


# --------------------------------------------------------------------------
# the lower layers: a list of entries, built by python or rendered as shell
#   ("dir", L, path, mode, uid, gid)      ("file", L, path, content, mode, uid, gid)
#   ("sym", L, path, target, uid, gid)    ("wh", L, path)       ("opaque", L, path)
#   ("link", L, src, dst)                 ("xattr", L, path, name, value)
#   ("touch", L, path, ns)
# content is a str of [a-z0-9 -] or ("yes", word, size): `yes WORD | head -c SIZE`
# --------------------------------------------------------------------------
class Spec:
    def __init__(self, nlayers, entries):
        self.nlayers, self.entries = nlayers, list(entries)


def content_bytes(c):
    if isinstance(c, tuple):
        _, word, size = c
        line = (word + "\n").encode()
        return (line * (size // len(line) + 1))[:size]
    return c.encode()


def parent(p):
    return p.rpartition("/")[0]


def depth(p):
    return 0 if not p else p.count("/") + 1


def gen_layers(rng):
    """A random lower stack; l0 is the top layer."""
    n = rng.choice([2, 3, 3])
    bottom, mid = n - 1, (1 if n == 3 else 0)
    top = 0
    ents = []
    kinds = [dict() for _ in range(n)]      # per layer: path -> "d" "f" "l" "w"
    words = ["alpha", "beta", "gamma", "delta", "omega"]

    def mode_f():
        return rng.choice([0o644] * 6 + [0o600, 0o755, 0o640, 0o444, 0o4755, 0o2750, 0o000])

    def mode_d():
        return rng.choice([0o755] * 6 + [0o700, 0o750, 0o711, 0o1777, 0o2755])

    def owner():
        return rng.choice([(0, 0)] * 5 + [(1000, 1000), (1234, 100)])

    def content(L, p):
        r = rng.random()
        if r < 0.12:
            return ("yes", rng.choice(words), rng.choice([4095, 4097, 9000, 70001]))
        if r < 0.2:
            return ""
        s = "l%d %s %s" % (L, p, rng.choice(words))
        if r < 0.35:
            s += " " + "x" * rng.choice([5, 50, 200])
        return s

    def can_dir(L, d):
        """d and its ancestors are dirs or absent in layer L"""
        return all(kinds[L].get(x) in (None, "d") for x in [d] + _ancestors(d))

    def ensure_dir(L, d):
        if not d or kinds[L].get(d) == "d":
            return
        ensure_dir(L, parent(d))
        u, g = owner()
        ents.append(("dir", L, d, mode_d(), u, g))
        kinds[L][d] = "d"

    def add(L, kind, p, *rest):
        ensure_dir(L, parent(p))
        ents.append((kind, L, p) + rest)
        kinds[L][p] = {"dir": "d", "file": "f", "sym": "l", "wh": "w"}[kind]

    def add_file(L, p):
        u, g = owner()
        add(L, "file", p, content(L, p), mode_f(), u, g)

    def add_sym(L, p):
        tgt = "/".join(rng.choice(NAMES) for _ in range(rng.choice([1, 1, 2])))
        u, g = owner()
        add(L, "sym", p, tgt, u, g)

    def fill(L, d, dep, busy):
        names = rng.sample(NAMES, rng.randint(1, busy))
        for nm in names:
            p = (d + "/" if d else "") + nm
            if p in kinds[L]:
                continue
            r = rng.random()
            if dep < 4 and r < (0.4 if dep < 3 else 0.25):
                u, g = owner()
                add(L, "dir", p, mode_d(), u, g)
                fill(L, p, dep + 1, max(1, busy - 1))
            elif r < 0.85:
                add_file(L, p)
            else:
                add_sym(L, p)

    fill(bottom, "", 1, 5)
    below = dict(kinds[bottom])
    bdirs = [p for p, k in below.items() if k == "d"]
    bfiles = [p for p, k in below.items() if k == "f"]
    # the lower hard-link pair, in the bottom layer
    if bfiles:
        src = rng.choice(bfiles)
        free = [(d + "/" if d else "") + nm for d in [""] + bdirs for nm in NAMES
                if (d + "/" if d else "") + nm not in below]
        if free:
            dst = rng.choice(free)
            ents.append(("link", bottom, src, dst))
            kinds[bottom][dst] = "f"
            below[dst] = "f"

    # layers above the bottom: merged dirs, overrides, new entries; the
    # middle layer also gets whiteouts and an opaque dir
    for L in range(bottom - 1, -1, -1):
        merged = rng.sample(bdirs, min(len(bdirs), rng.randint(1, 3))) if bdirs else []
        for d in [""] + merged:
            if not can_dir(L, d):
                continue
            ensure_dir(L, d)
            for nm in rng.sample(NAMES, rng.randint(1, 3)):
                p = (d + "/" if d else "") + nm
                if p in kinds[L]:
                    continue
                r = rng.random()
                lower = below.get(p)
                if L == mid and lower and r < 0.35:
                    add(L, "wh", p)
                elif lower == "d" and r < 0.5:
                    ensure_dir(L, p)                          # merged one level deeper
                    fill(L, p, depth(p) + 1, 2)
                elif r < 0.8:
                    add_file(L, p)
                elif depth(p) <= 3 and r < 0.9:
                    u, g = owner()
                    add(L, "dir", p, mode_d(), u, g)
                    fill(L, p, depth(p) + 1, 2)
                else:
                    add_sym(L, p)
        if L == mid:
            cands = [d for d in bdirs if can_dir(L, d)]
            if cands:
                d = rng.choice(cands)
                ensure_dir(L, d)
                ents.append(("opaque", L, d))
                fill(L, d, depth(d) + 1, 2)
        for p, k in kinds[L].items():
            if k == "w":
                below.pop(p, None)
            elif k != "d" or below.get(p) != "d":
                below[p] = k
    # user.* xattrs
    cands = [(L, p) for L in range(n) for p, k in kinds[L].items() if k in ("d", "f")]
    for L, p in rng.sample(cands, min(len(cands), rng.randint(2, 5))):
        ents.append(("xattr", L, p, rng.choice(["user.a", "user.b", "user.c"]),
                     rng.choice(["v", "blue", "green", "x" * 30, "layer%d" % L])))
    # deterministic old mtimes for non-directories
    stamps = []
    for e in ents:
        if e[0] in ("file", "sym"):
            stamps.append(("touch", e[1], e[2], T_OLD + rng.randrange(400_000_000) * 10**9 + rng.randrange(10**9)))
        elif e[0] == "link":
            stamps.append(("touch", e[1], e[3], T_OLD + 123_456_789_123_456_789 // 1000))
        elif e[0] == "dir":
            # old dir mtimes too (after everything is in), so that a dir a
            # copy-up linked into must keep its old mtime; from the path,
            # not the rng, so that the recorded seeds replay as before
            stamps.append(("touch", e[1], e[2], T_OLD + zlib.crc32(e[2].encode()) * 10**8))
    return Spec(n, ents + stamps)


def _ancestors(p):
    out = []
    while "/" in p:
        p = parent(p)
        out.append(p)
    return out


def normalize(spec_entries):
    """Drop entries whose prerequisites are missing (after shrinking)."""
    have = set()
    out = []
    for e in spec_entries:
        kind, L, p = e[0], e[1], e[2]
        if kind in ("dir", "file", "sym", "wh"):
            if parent(p) and (L, parent(p)) not in have:
                continue
            if (L, p) in have:
                continue
            have.add((L, p))
        elif kind == "link":
            if (L, p) not in have or (parent(e[3]) and (L, parent(e[3])) not in have) or (L, e[3]) in have:
                continue
            have.add((L, e[3]))
        elif (L, p) not in have:
            continue
        out.append(e)
    return out


def build_layers(root, spec):
    """Build root/l0..l{n-1} plus empty upper, work and mnt."""
    for i in range(spec.nlayers):
        os.makedirs(os.path.join(root, "l%d" % i))
    for d in ("upper", "work", "mnt"):
        os.mkdir(os.path.join(root, d))
    for e in spec.entries:
        kind, L = e[0], e[1]
        p = os.path.join(root, "l%d" % L, e[2])
        if kind == "dir":
            os.mkdir(p)
            os.chown(p, e[4], e[5])
            os.chmod(p, e[3])
        elif kind == "file":
            with open(p, "wb") as fh:
                fh.write(content_bytes(e[3]))
            os.chown(p, e[5], e[6])
            os.chmod(p, e[4])
        elif kind == "sym":
            os.symlink(e[3], p)
            os.chown(p, e[4], e[5], follow_symlinks=False)
        elif kind == "wh":
            os.mknod(p, stat.S_IFCHR | 0o644, 0)
        elif kind == "opaque":
            os.setxattr(p, "trusted.overlay.opaque", b"y")
        elif kind == "link":
            os.link(p, os.path.join(root, "l%d" % L, e[3]))
        elif kind == "xattr":
            os.setxattr(p, e[3], e[4].encode(), follow_symlinks=False)
        elif kind == "touch":
            os.utime(p, ns=(e[3], e[3]), follow_symlinks=False)


def q(s):
    return "'" + s.replace("'", "'\\''") + "'"


def shell_layers(spec):
    """The same stack as shell commands, run in the side's root."""
    out = []
    for e in spec.entries:
        kind, L = e[0], e[1]
        p = "l%d/%s" % (L, e[2])
        if kind == "dir":
            out.append("mkdir %s" % p)
            if e[4] or e[5]:
                out.append("chown %d:%d %s" % (e[4], e[5], p))
            if e[3] != 0o755:
                out.append("chmod %04o %s" % (e[3], p))
        elif kind == "file":
            c = e[3]
            if isinstance(c, tuple):
                out.append("yes %s | head -c %d > %s" % (c[1], c[2], p))
            else:
                out.append("printf '%%s' %s > %s" % (q(c), p))
            if e[5] or e[6]:
                out.append("chown %d:%d %s" % (e[5], e[6], p))
            if e[4] != 0o644:
                out.append("chmod %04o %s" % (e[4], p))
        elif kind == "sym":
            out.append("ln -s %s %s" % (q(e[3]), p))
            if e[4] or e[5]:
                out.append("chown -h %d:%d %s" % (e[4], e[5], p))
        elif kind == "wh":
            out.append("mknod %s c 0 0" % p)
        elif kind == "opaque":
            out.append("setfattr -n trusted.overlay.opaque -v y %s" % p)
        elif kind == "link":
            out.append("ln %s l%d/%s" % (p, L, e[3]))
        elif kind == "xattr":
            out.append("setfattr -h -n %s -v %s %s" % (e[3], q(e[4]), p))
        elif kind == "touch":
            out.append("touch -h -d @%d.%09d %s" % (e[3] // 10**9, e[3] % 10**9, p))
    return out


# --------------------------------------------------------------------------
# operation generator: random, guided by the reference side's current tree
# (the reference is deterministic, so the seed fixes the sequence)
# --------------------------------------------------------------------------
def scan(mnt):
    """path -> "d" "f" "l" "o" of the merged tree (no symlinks followed)."""
    out = {"": "d"}

    def rec(rel, path):
        try:
            it = os.scandir(path)
        except OSError:
            return
        with it:
            for e in it:
                r = rel + "/" + e.name if rel else e.name
                try:
                    if e.is_symlink():
                        t = "l"
                    elif e.is_dir(follow_symlinks=False):
                        t = "d"
                    elif e.is_file(follow_symlinks=False):
                        t = "f"
                    else:
                        t = "o"
                except OSError:
                    continue
                out[r] = t
                if t == "d" and depth(r) < 8:
                    rec(r, e.path)
    rec("", mnt)
    return out


FLAG_NAMES = [(os.O_WRONLY, "os.O_WRONLY"), (os.O_RDWR, "os.O_RDWR"), (os.O_CREAT, "os.O_CREAT"),
              (os.O_EXCL, "os.O_EXCL"), (os.O_TRUNC, "os.O_TRUNC"), (os.O_APPEND, "os.O_APPEND"),
              (os.O_DIRECTORY, "os.O_DIRECTORY")]


def fl(flags):
    parts = [n for v, n in FLAG_NAMES if flags & v]
    return "|".join(parts) if parts else "os.O_RDONLY"


class Gen:
    def __init__(self, rng):
        self.rng = rng
        self.model = {"": "d"}
        self.slots = set()

    # -- paths ---------------------------------------------------------------
    def paths(self, types=None):
        return [p for p, t in self.model.items() if p and (types is None or t in types)]

    def rnd(self):
        return "/".join(self.rng.choice(NAMES) for _ in range(self.rng.choice([1, 1, 2, 2, 3, 3])))

    def ex(self, types=None):
        ps = self.paths(types)
        return self.rng.choice(sorted(ps)) if ps else self.rnd()

    def new(self, maxdepth=4):
        dirs = sorted(p for p, t in self.model.items() if t == "d" and depth(p) < maxdepth)
        d = self.rng.choice(dirs) if dirs else ""
        return (d + "/" if d else "") + self.rng.choice(NAMES)

    def tgt(self, types=None, p_ex=0.6, maxdepth=4):
        r = self.rng.random()
        if r < p_ex:
            return self.ex(types)
        if r < 0.92:
            return self.new(maxdepth)
        return self.rnd()

    def symtarget(self):
        return "/".join(self.rng.choice(NAMES) for _ in range(self.rng.choice([1, 1, 2])))

    # -- values ----------------------------------------------------------------
    def data(self):
        r = self.rng.random()
        if r < 0.6:
            n = self.rng.choice([1, 3, 8, 20, 33])
            return repr(bytes(self.rng.choice(b"abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(n)))
        return "D(%d, %d)" % (self.rng.choice([0, 100, 4095, 4097, 9000, 70000]), self.rng.randrange(26))

    def off(self):
        return self.rng.choice([0, 0, 1, 3, 100, 4095, 4096, 10000, 70000])

    def size(self):
        return self.rng.choice([0, 0, 1, 3, 100, 4096, 5000, 70000])

    def fmode(self):
        return self.rng.choice(["0o644", "0o600", "0o755", "0o640", "0o4755", "0o2755", "0o000", "0o444"])

    def dmode(self):
        return self.rng.choice(["0o755", "0o700", "0o750", "0o711", "0o1777", "0o2755"])

    # -- operations --------------------------------------------------------------
    def op(self):
        g = self.rng
        table = [
            (8, self.o_create), (6, self.o_write), (3, self.o_append), (2, self.o_trunc_open),
            (4, self.o_truncate), (4, self.o_read), (6, self.o_mkdir), (4, self.o_rmdir),
            (7, self.o_unlink), (1, self.o_rmtree), (10, self.o_rename), (3, self.o_noreplace),
            (4, self.o_exchange), (4, self.o_link), (3, self.o_symlink), (1, self.o_mkfifo),
            (3, self.o_chmod), (2, self.o_chown), (2, self.o_utime), (4, self.o_setxattr),
            (3, self.o_removexattr), (2, self.o_getxattr), (4, self.o_readdir_mut), (3, self.o_openunl),
            (3, self.o_sopen), (2, self.o_stat), (1, self.o_ls), (1, self.o_readlink),
            (0.3, self.o_remount),
        ]
        if self.slots:
            table += [(4, self.o_swrite), (3, self.o_sread), (2, self.o_sstat), (1, self.o_strunc),
                      (2, self.o_sclose), (0.5, self.o_sls)]
        total = sum(w for w, _ in table)
        x = g.random() * total
        for w, fn in table:
            x -= w
            if x < 0:
                return fn()
        return table[-1][1]()

    def o_create(self):
        flags = self.rng.choice([os.O_WRONLY | os.O_CREAT | os.O_EXCL, os.O_WRONLY | os.O_CREAT,
                                 os.O_WRONLY | os.O_CREAT | os.O_TRUNC, os.O_RDWR | os.O_CREAT | os.O_APPEND])
        return Op("create", "R(wr, %r, %s, None, %s, %s)" % (self.tgt(("f",), 0.3), fl(flags), self.data(),
                                                             self.fmode()))

    def o_write(self):
        return Op("pwrite", "R(wr, %r, %s, %d, %s)" % (self.tgt(("f", "l"), 0.9), fl(self.rng.choice(
            [os.O_WRONLY, os.O_RDWR])), self.off(), self.data()))

    def o_append(self):
        return Op("append", "R(wr, %r, os.O_WRONLY|os.O_APPEND, None, %s)" % (self.tgt(("f",), 0.9), self.data()))

    def o_trunc_open(self):
        return Op("open-trunc", "R(wr, %r, os.O_WRONLY|os.O_TRUNC, None, %s)" % (self.tgt(("f",), 0.9), self.data()))

    def o_truncate(self):
        return Op("truncate", "R(os.truncate, P(%r), %d)" % (self.tgt(("f", "l"), 0.9), self.size()))

    def o_read(self):
        return Op("read", "R(rd, %r)" % self.tgt(("f", "l"), 0.9), ro=True)

    def o_mkdir(self):
        return Op("mkdir", "R(os.mkdir, P(%r), %s)" % (self.tgt(("d",), 0.2, maxdepth=3), self.dmode()))

    def o_rmdir(self):
        return Op("rmdir", "R(os.rmdir, P(%r))" % self.tgt(("d",), 0.9))

    def o_unlink(self):
        return Op("unlink", "R(os.unlink, P(%r))" % self.tgt(("f", "l", "o") if self.rng.random() < 0.9 else None, 0.9))

    def o_rmtree(self):
        return Op("rmtree", "R(rmtree, %r)" % self.tgt(("d",), 0.9))

    def _pair(self):
        src = self.ex()
        t = self.model.get(src)
        r = self.rng.random()
        if r < 0.35:
            dst = self.ex(("d",) if t == "d" else ("f", "l", "o"))
        elif r < 0.45:
            dst = self.ex()
        else:
            dst = self.new(4 if t != "d" else 3)
        return src, dst

    def o_rename(self):
        src, dst = self._pair()
        return Op("rename", "R(os.rename, P(%r), P(%r))" % (src, dst))

    def o_noreplace(self):
        src, dst = self._pair()
        return Op("rename-noreplace", "R(rename2, %r, %r, NOREPLACE)" % (src, dst))

    def o_exchange(self):
        return Op("rename-exchange", "R(rename2, %r, %r, EXCHANGE)" % (self.ex(), self.ex()))

    def o_link(self):
        return Op("link", "R(os.link, P(%r), P(%r), follow_symlinks=False)" % (
            self.tgt(("f", "l", "o"), 0.95), self.tgt(None, 0.1)))

    def o_symlink(self):
        return Op("symlink", "R(os.symlink, %r, P(%r))" % (self.symtarget(), self.tgt(None, 0.1)))

    def o_mkfifo(self):
        return Op("mkfifo", "R(os.mkfifo, P(%r), 0o640)" % self.tgt(None, 0.1))

    def _any(self):
        return "" if self.rng.random() < 0.04 else self.tgt(None, 0.9)

    def o_chmod(self):
        p = self._any()
        m = self.dmode() if self.model.get(p) == "d" else self.fmode()
        return Op("chmod", "R(os.chmod, P(%r), %s)" % (p, m))

    def o_chown(self):
        u, g = self.rng.choice([(0, 0), (1000, 1000), (1234, 100), (1000, 0)])
        return Op("chown", "R(os.chown, P(%r), %d, %d, follow_symlinks=False)" % (self._any(), u, g))

    def o_utime(self):
        t = T_OLD + self.rng.randrange(10**6) * 10**9 + self.rng.randrange(10**9)
        return Op("utime", "R(os.utime, P(%r), ns=(%d, %d), follow_symlinks=False)" % (self._any(), t, t + 7))

    def o_setxattr(self):
        flags = self.rng.choice([0, 0, 0, 1, 2])
        val = self.rng.choice(["b'v'", "b'new'", "b''", "D(100, 3)", "b'\\x00\\x01'"])
        return Op("setxattr", "R(os.setxattr, P(%r), %r, %s, %d, follow_symlinks=False)" % (
            self._any(), self.rng.choice(["user.a", "user.b", "user.c"]), val, flags))

    def o_removexattr(self):
        return Op("removexattr", "R(os.removexattr, P(%r), %r, follow_symlinks=False)" % (
            self._any(), self.rng.choice(["user.a", "user.b", "user.c"])))

    def o_getxattr(self):
        if self.rng.random() < 0.5:
            return Op("listxattr", "R(xl, %r)" % self._any(), ro=True)
        return Op("getxattr", "R(os.getxattr, P(%r), %r, follow_symlinks=False)" % (
            self._any(), self.rng.choice(["user.a", "user.b", "user.c"])), ro=True)

    def o_stat(self):
        return Op("stat", "R(st, %r)" % self._any(), ro=True)

    def o_ls(self):
        return Op("ls", "R(ls, %r)" % ("" if self.rng.random() < 0.2 else self.tgt(("d",), 0.9)), ro=True)

    def o_readlink(self):
        return Op("readlink", "R(os.readlink, P(%r))" % self.tgt(("l",), 0.9), ro=True)

    def o_readdir_mut(self):
        g = self.rng
        d = "" if g.random() < 0.25 else self.ex(("d",))
        kids = sorted(p for p in self.model if p and parent(p) == d)
        child = lambda: (d + "/" if d else "") + g.choice(NAMES)   # noqa: E731
        ex_kid = lambda: g.choice(kids) if kids else child()       # noqa: E731
        r = g.random()
        if r < 0.2:
            m = "R(wr, %r, os.O_WRONLY|os.O_CREAT, None, b'new')" % child()
        elif r < 0.4:
            m = "R(os.unlink, P(%r))" % ex_kid()
        elif r < 0.55:
            m = "R(os.rename, P(%r), P(%r))" % (ex_kid(), child())
        elif r < 0.65:
            m = "R(os.mkdir, P(%r))" % child()
        elif r < 0.72:
            m = "R(os.rmdir, P(%r))" % ex_kid()
        elif r < 0.8:
            m = "R(os.rename, P(%r), P(%r))" % (self.ex(), child())
        elif r < 0.87:
            m = "R(os.rename, P(%r), P(%r))" % (ex_kid(), self.new())
        elif r < 0.94:
            m = "R(rename2, %r, %r, EXCHANGE)" % (ex_kid(), self.ex())
        else:
            m = "R(rmtree, %r)" % (d if d else ex_kid())
        return Op("readdir-mutate", "R(rdmut, %r, %d, %d, lambda: %s)" % (
            d, g.choice([0, 1, 1, 2, 3]), g.choice([32, 48, 72, 100]), m))

    def o_openunl(self):
        g = self.rng
        r = g.random()
        if r < 0.12:
            p, flags, how = self.ex(("d",)), os.O_RDONLY | os.O_DIRECTORY, "rmdir"
        else:
            p = self.tgt(("f",), 0.95)
            flags = g.choice([os.O_RDWR, os.O_RDWR, os.O_RDONLY, os.O_WRONLY | os.O_APPEND, os.O_RDWR | os.O_CREAT])
            how = g.choice(["unlink", "unlink", "unlink", "over", "away"])
        other = self.ex(("f",)) if how == "over" else self.new()
        return Op("open-unlink-use", "R(openunl, %r, %s, %r, %r, %d, %s)" % (
            p, fl(flags), how, other, self.off(), self.data()))

    def o_sopen(self):
        k = self.rng.randrange(3)
        self.slots.add(k)
        flags = self.rng.choice([os.O_RDONLY, os.O_RDWR, os.O_RDWR, os.O_WRONLY | os.O_APPEND,
                                 os.O_RDWR | os.O_CREAT, os.O_RDONLY | os.O_DIRECTORY])
        p = self.ex(("d",)) if flags & os.O_DIRECTORY else self.tgt(("f",), 0.9)
        return Op("fd-open", "R(sopen, %d, %r, %s)" % (k, p, fl(flags)))

    def _slot(self):
        return self.rng.choice(sorted(self.slots)) if self.slots and self.rng.random() < 0.9 else self.rng.randrange(3)

    def o_swrite(self):
        off = None if self.rng.random() < 0.3 else self.off()
        return Op("fd-write", "R(swr, %d, %r, %s)" % (self._slot(), off, self.data()))

    def o_sread(self):
        return Op("fd-read", "R(srd, %d, %d, %d)" % (self._slot(), self.off(), self.rng.choice([10, 100, 5000])),
                  ro=True)

    def o_sstat(self):
        return Op("fd-stat", "R(sst, %d)" % self._slot(), ro=True)

    def o_strunc(self):
        return Op("fd-truncate", "R(strunc, %d, %d)" % (self._slot(), self.size()))

    def o_sls(self):
        return Op("fd-readdir", "R(sls, %d)" % self._slot(), ro=True)

    def o_sclose(self):
        k = self._slot()
        self.slots.discard(k)
        return Op("fd-close", "R(sclose, %d)" % k)

    def o_remount(self):
        self.slots.clear()
        return Op("remount", "R(remount)")


# --------------------------------------------------------------------------
# running a sequence on both sides
# --------------------------------------------------------------------------
class Side:
    def __init__(self, label, kind, root, spec, binary, extra):
        self.label, self.root = label, root
        self.mnt = os.path.join(root, "mnt")
        lowers = [os.path.join(root, "l%d" % i) for i in range(spec.nlayers)]
        self.m = Mnt(kind, lowers, os.path.join(root, "upper"), os.path.join(root, "work"), self.mnt,
                     binary, extra)
        self.ns = {"__name__": "fuzz_ops_side"}
        exec(PRELUDE_CODE, self.ns)
        self.ns["M"] = self.mnt
        self.ns["REMOUNT"] = self.remount
        self.mounted = False

    # the Mnt attributes rig_write.compare_on_disk reads
    @property
    def lowers(self):
        return self.m.lowers

    @property
    def upper(self):
        return self.m.upper

    @property
    def work(self):
        return self.m.work

    def mount(self):
        self.m.mount()
        self.mounted = True

    def remount(self):
        self.umount()
        ok, msg = self.m.try_mount()
        if not ok:
            raise OSError(errno.EIO, "mount again failed: " + msg)
        self.mounted = True

    def run(self, op):
        signal.alarm(OP_TIMEOUT)
        try:
            return eval(op.code, self.ns)
        except Exception as e:  # noqa: BLE001 -- a result like any other
            return "exc %s: %s" % (type(e).__name__, str(e).replace(self.root, "ROOT"))
        finally:
            signal.alarm(0)

    def close_fds(self):
        for k in list(self.ns["FD"]):
            try:
                os.close(self.ns["FD"].pop(k))
            except OSError:
                pass

    def umount(self):
        self.close_fds()
        self.mounted = False
        self.m.umount()


class Diffs:
    """Collects (signature, text) of differences; a rig.compare sink."""

    def __init__(self):
        self.items = []
        self.area = ""

    def __call__(self, line):
        if any(rx.search(line) for rx in IGNORE):
            return
        self.items.append((signature(line), line))

    def diff(self, line):
        self(("%s %s" % (self.area, line)).strip())


SIG_RES = [
    (re.compile(r"^step \d+ (\S+?):"), lambda m: "step:" + m.group(1)),
    (re.compile(r"^(\S+) .*?: only in (\S+)"), lambda m: "%s:only-in-%s" % (m.group(1), m.group(2))),
    (re.compile(r"^(\S+) .*?: (xattr \S+):"), lambda m: "%s:%s" % (m.group(1), m.group(2))),
    (re.compile(r"^(\S+) .*?: (readdir entry) "), lambda m: "%s:%s" % (m.group(1), m.group(2))),
    (re.compile(r"^(\S+) .*?: in (\S+): (\S+)"), lambda m: "%s:%s:%s" % (m.group(1), m.group(2), m.group(3))),
    (re.compile(r"^(\S+) [^:]*: ([a-zA-Z0-9_ -]+?)[:=]"), lambda m: "%s:%s" % (m.group(1), m.group(2))),
]


def signature(line):
    """The kind of a difference, without paths and values."""
    for rx, fn in SIG_RES:
        m = rx.match(line)
        if m:
            return re.sub(r"-after-umount|-end", "", fn(m))
    return line.split(":")[0]


def result_diff(ra, rb, la, lb):
    """The differing part of two step results (composite ones are "; "-joined)."""
    pa, pb = ra.split("; "), rb.split("; ")
    if len(pa) == len(pb) > 1:
        return "; ".join("%s=%s %s=%s" % (la, x, lb, y) for x, y in zip(pa, pb) if x != y)
    return "%s=%s %s=%s" % (la, ra, lb, rb)


def on_disk(a, b, la, lb, rep, when):
    """rig_write's comparison of the upper dirs and work/index."""
    try:
        compare_on_disk(a, b, la, lb, rep, when, True)
    except OSError as e:
        rep("upper%s: comparing failed: %s" % (when, e))


def compare_walks(a, b, la, lb, rep, area):
    walks = []
    for s in (a, b):
        try:
            walks.append(merged_walk(s.mnt, T_OLD_END))
        except OSError as e:
            walks.append(None)
            rep("%s: walking %s failed: %s" % (area, s.label, errno.errorcode.get(e.errno, e.errno)))
    if None in walks:
        return
    wa, wb = walks
    rep.area = area
    compare(wa, wb, la, lb, rep)
    # the walker's consistency problems (d_ino != st_ino...), compared
    # without the numbers: the kernel has some of its own
    pa, pb = [{(p, re.sub(r"\d+", "N", t)): t for p, t in w.problems} for w in (wa, wb)]
    for label, mine, other in ((la, pa, pb), (lb, pb, pa)):
        for k in sorted(set(mine) - set(other)):
            if mine is pa and k[1].startswith("d_ino") and not STRICT_DINO[0]:
                continue        # a kernel quirk: see --strict-dino
            rep.diff("/%s: in %s: %s" % (k[0].decode(errors="replace"), label, mine[k]))


class Result:
    def __init__(self):
        self.ops = []          # the operations run
        self.diffs = []        # (signature, text) at the first failing check
        self.step = None       # 1-based step of the first failure, "end" for the final checks
        self.results = []      # (kernel result, other result) per step
        self.error = None      # an error of the fuzzer itself (mount failure...)


def run_sequence(cfg, root, spec, ops=None, rng=None, nops=0, check_every=1, remount_at=None):
    """Run ops (or generate nops operations with rng) on fresh copies of spec
    below root.  Stops at the first difference."""
    res = Result()
    sides = []
    wd = None
    try:
        cleanup_mounts(root)
        if any(m[0].startswith(os.path.realpath(root) + "/") for m in mountinfo()):
            raise RuntimeError("%s: still mounted below" % root)
        shutil.rmtree(root, ignore_errors=True)
        os.makedirs(root)
        a = Side(cfg.la, "kernel", os.path.join(root, "k"), spec, None, cfg.kopts)
        b = Side(cfg.lb, "kernel" if cfg.kvk else "stratafs", os.path.join(root, "s"), spec, cfg.binary,
                 cfg.kopts if cfg.kvk else cfg.extra)
        sides = [a, b]
        for s in sides:
            build_layers(s.root, spec)
        for s in sides:
            s.mount()
        wd = watchdog(root, SEQ_TIMEOUT)
        gen = None
        if ops is None:
            gen = Gen(rng)
            gen.model = scan(a.mnt)
            n = nops
        else:
            n = len(ops)
        rep = Diffs()
        for i in range(n):
            if gen is not None:
                op = Op("remount", "R(remount)") if i == remount_at else gen.op()
                if op.kind == "remount":
                    gen.slots.clear()
            else:
                op = ops[i]
            res.ops.append(op)
            ra, rb = a.run(op), b.run(op)
            res.results.append((ra, rb))
            if cfg.verbose:
                print("#  %d %s -> %s%s" % (i + 1, op.src, ra, "" if ra == rb else " / " + rb), flush=True)
            if ra != rb:
                rep("step %d %s: %s: %s" % (i + 1, op.kind, op.src, result_diff(ra, rb, cfg.la, cfg.lb)))
            if gen is not None and not op.ro:
                gen.model = scan(a.mnt)
            if (i + 1) % check_every == 0 or i == n - 1:
                compare_walks(a, b, cfg.la, cfg.lb, rep, "merged")
            if rep.items:
                res.diffs, res.step = rep.items, i + 1
                return res
        # the end: the merged trees once more, the upper dirs mounted and unmounted
        for s in sides:
            s.close_fds()
        compare_walks(a, b, cfg.la, cfg.lb, rep, "merged-end")
        on_disk(a, b, cfg.la, cfg.lb, rep, "")
        for s in sides:
            try:
                s.umount()
            except Exception as e:  # noqa: BLE001 -- e.g. a daemon that does not exit
                rep("umount %s: %s" % (s.label, e))
        on_disk(a, b, cfg.la, cfg.lb, rep, "-after-umount")
        if rep.items:
            res.diffs, res.step = rep.items, "end"
        return res
    except Exception as e:  # noqa: BLE001 -- reported as a failure of the sequence
        res.error = "%s: %s" % (type(e).__name__, e)
        res.diffs = [("error", "fuzzer error: " + res.error)]
        res.step = "error"
        return res
    finally:
        if wd:
            wd.cancel()
        os.chdir("/")
        for s in sides:
            try:
                s.umount()
            except Exception as e:  # noqa: BLE001
                log("umount %s: %s" % (s.mnt, e))
        cleanup_mounts(root)
        if not cfg.keep:
            if any(m[0].startswith(os.path.realpath(root) + "/") for m in mountinfo()):
                log("not removing %s: still mounted" % root)
            else:
                shutil.rmtree(root, ignore_errors=True)


def cleanup_mounts(root):
    """Unmount whatever is still mounted below root (force, then lazily)."""
    root = os.path.realpath(root)
    for _ in range(3):
        left = [m for m in mountinfo() if m[0].startswith(root + "/")]
        if not left:
            return
        for mnt, fstype, _src in left:
            if fstype.startswith("fuse"):
                abort_fuse_under(mnt)
            p = subprocess.run(["umount", "-f", mnt], capture_output=True)
            if p.returncode != 0:
                subprocess.run(["umount", "-l", mnt], capture_output=True)


# --------------------------------------------------------------------------
# shrinking
# --------------------------------------------------------------------------
def ddmin(items, test, budget):
    """Delta debugging: a small sublist of items for which test() holds."""
    n = 2
    while len(items) >= 2 and budget():
        chunk = math.ceil(len(items) / n)
        reduced = False
        for start in range(0, len(items), chunk):
            if not budget():
                break
            cand = items[:start] + items[start + chunk:]
            if cand and test(cand):
                items = cand
                n = max(n - 1, 2)
                reduced = True
                break
        if not reduced:
            if n >= len(items):
                break
            n = min(n * 2, len(items))
    # single elements, last first
    i = len(items) - 1
    while i >= 0 and len(items) > 1 and budget():
        cand = items[:i] + items[i + 1:]
        if test(cand):
            items = cand
        i -= 1
    return items


def shrink(cfg, root, spec, ops, target):
    """Smallest (spec, ops, result) still showing a difference of kind target."""
    t_end = time.time() + cfg.shrink_time
    tries = [0]
    best = {"spec": spec, "ops": ops, "res": None}

    def budget():
        return time.time() < t_end

    def test(spec_, ops_):
        tries[0] += 1
        r = run_sequence(cfg, root, spec_, ops=ops_, check_every=1)
        if r.error is None and any(s == target for s, _ in r.diffs):
            ops_ = r.ops                  # a prefix: ops after the failing step are not needed
            if len(ops_) + len(spec_.entries) <= len(best["ops"]) + len(best["spec"].entries) or best["res"] is None:
                best.update(spec=spec_, ops=ops_, res=r)
            return True
        return False

    if not test(spec, ops):
        return None, tries[0]
    for _ in range(2):
        before = (len(best["ops"]), len(best["spec"].entries))
        best_ops = ddmin(best["ops"], lambda c: test(best["spec"], c), budget)
        test(best["spec"], best_ops)
        ents = ddmin(best["spec"].entries, lambda c: test(Spec(spec.nlayers, normalize(c)), best["ops"]), budget)
        test(Spec(spec.nlayers, normalize(ents)), best["ops"])
        if (len(best["ops"]), len(best["spec"].entries)) == before or not budget():
            break
    # fewer layers if the top ones are empty is not tried: layer numbers stay as generated
    return best, tries[0]


# --------------------------------------------------------------------------
# the reproducer script
# --------------------------------------------------------------------------
def repro_script(cfg, spec, ops, diffs, title, check_every=1, rerun=""):
    n = spec.nlayers
    lines = ["#!/bin/sh",
             "# fuzz_ops reproducer: %s" % title]
    if rerun:
        lines.append("# found by: %s" % rerun)
    lines.append("# %s differs from %s (as seen by fuzz_ops):" % (cfg.lb, cfg.la))
    for _, text in diffs[:8]:
        lines.append("#   " + text.replace("\n", " ")[:500])
    lines += ["# Run as root: sh THIS_SCRIPT [STRATAFS_BINARY]; prints the diff of the two sides' results",
              "# and trees; exit 1 when they differ.",
              "set -u",
              "STRATAFS=${1:-%s}" % (cfg.binary or "build/stratafs"),
              "D=$(mktemp -d /tmp/fuzz-repro.XXXXXX)",
              "umask 022",
              "layers() {",
              '    mkdir -p %s "$1/upper" "$1/work" "$1/mnt" && cd "$1" || exit 1' % " ".join(
                  '"$1/l%d"' % i for i in range(n))]
    lines += ["    " + c for c in shell_layers(spec)]
    lines += ["    cd /", "}",
              'layers "$D/k"', 'layers "$D/s"']
    low = lambda side: ":".join("$D/%s/l%d" % (side, i) for i in range(n))   # noqa: E731
    kbase = KERNEL_OPTS + ("," + cfg.kopts if cfg.kopts else "")
    kopts = "lowerdir=%s,upperdir=$D/k/upper,workdir=$D/k/work,%s" % (low("k"), kbase)
    if cfg.kvk:
        sm = "mount -t overlay overlay -o lowerdir=%s,upperdir=$D/s/upper,workdir=$D/s/work,%s $D/s/mnt" % (
            low("s"), kbase)
    else:
        sm = '$STRATAFS stratafs $D/s/mnt -o lowerdir=%s,upperdir=$D/s/upper,workdir=$D/s/work%s' % (
            low("s"), "," + cfg.extra if cfg.extra else "")
    lines += ['KMOUNT="mount -t overlay overlay -o %s $D/k/mnt"' % kopts,
              'SMOUNT="%s"' % sm,
              "trap 'umount $D/k/mnt 2>/dev/null; umount $D/s/mnt 2>/dev/null' EXIT",
              "$KMOUNT || exit 1",
              "$SMOUNT || exit 1",
              "cat > $D/ops.py <<'EOF'"]
    lines += PRELUDE.strip("\n").split("\n")
    lines += REPRO_DUMP.strip("\n").split("\n")
    lines += ["import subprocess, sys",
              "if sys.argv[1] == 'upper':",
              "    dump(sys.argv[2], True)",
              "    idx = [n for n in (os.listdir(sys.argv[3] + '/index') if os.path.isdir(sys.argv[3] + '/index') else []) if not n.startswith('#')]",
              "    print('work/index: %d entries' % len(idx))",
              "    print('work/work:', sorted(n for n in os.listdir(sys.argv[3] + '/work') if not n.startswith('#')))",
              "    sys.exit(0)",
              "M = sys.argv[2]",
              "def REMOUNT():",
              "    if subprocess.run(['sh', '-c', sys.argv[3]]).returncode:",
              "        raise OSError(errno.EIO, 'remount failed')",
              ]
    for i, op in enumerate(ops):
        lines.append("print('== step %d', %r, %s)" % (i + 1, op.kind, op.src))
        if check_every == 1 or i == len(ops) - 1:
            lines.append("dump(M, False)        # fuzz_ops looks at the whole tree after every step")
    lines += ["for k in list(FD):",
              "    sclose(k)",
              "EOF",
              'python3 $D/ops.py run $D/k/mnt "umount $D/k/mnt && $KMOUNT" > $D/k.txt 2>&1',
              'python3 $D/ops.py run $D/s/mnt "umount $D/s/mnt && $SMOUNT" > $D/s.txt 2>&1',
              "umount $D/k/mnt; umount $D/s/mnt",
              "(echo '-- upper dir'; python3 $D/ops.py upper $D/k/upper $D/k/work) >> $D/k.txt 2>&1",
              "(echo '-- upper dir'; python3 $D/ops.py upper $D/s/upper $D/s/work) >> $D/s.txt 2>&1",
              "trap - EXIT",
              'echo "kernel: $D/k.txt   %s: $D/s.txt"' % cfg.lb,
              "if diff -u $D/k.txt $D/s.txt; then echo 'no difference'; exit 0; fi",
              "exit 1"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------
class Cfg:
    pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stratafs", default="build/stratafs", help="stratafs binary")
    ap.add_argument("--seed", default="1", help="seed (a string or number), or 'random'")
    ap.add_argument("--ops", type=int, default=10000, help="total operations (default: %(default)s)")
    ap.add_argument("--seqs", type=int, default=0, help="sequences (default: one per 100 operations)")
    ap.add_argument("--check-every", type=int, default=1,
                    help="compare the merged trees every K steps (always at sequence ends; default: %(default)s)")
    ap.add_argument("--extra-opts", default=os.environ.get("STRATAFS_EXTRA_OPTS", ""),
                    help="appended to the stratafs -o (default: $STRATAFS_EXTRA_OPTS)")
    ap.add_argument("--kernel-opts", default="",
                    help="appended to the kernel overlay's -o (after %s), e.g. metacopy=on" % KERNEL_OPTS)
    ap.add_argument("--kernel-vs-kernel", action="store_true", help="run the kernel overlay on both sides")
    ap.add_argument("--workdir", help="scratch dir (default: a new /tmp/strata-fuzz-*)")
    ap.add_argument("--keep", action="store_true", help="keep the layers, uppers and the scratch dir")
    ap.add_argument("--keep-going", action="store_true", help="go on after a mismatch (each kind is shrunk once)")
    ap.add_argument("--only-seq", type=int, help="run only sequence N (1-based) of this seed and --ops/--seqs")
    ap.add_argument("--shrink-time", type=int, default=120, help="seconds to spend shrinking one mismatch (default: %(default)s)")
    ap.add_argument("--no-shrink", action="store_true", help="report mismatches unshrunk")
    ap.add_argument("--verbose", action="store_true", help="print every operation and its result")
    ap.add_argument("--ignore", action="append", default=[], metavar="REGEX",
                    help="drop differences whose text matches REGEX (to look past a known bug; repeatable)")
    ap.add_argument("--strict-dino", action="store_true",
                    help="also report readdir d_ino != st_ino seen on the kernel side only (by default not "
                         "a mismatch: a kernel quirk, seen for hard links made into upper dirs after some "
                         "renames and copy-ups)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        ap.error("must run as root")
    os.umask(0o022)

    def on_term(signum, frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGALRM, on_alarm)

    cfg = Cfg()
    cfg.kvk = args.kernel_vs_kernel
    cfg.la, cfg.lb = "kernel", ("kernel2" if cfg.kvk else "stratafs")
    cfg.extra = args.extra_opts
    cfg.kopts = args.kernel_opts
    cfg.keep = args.keep
    cfg.shrink_time = args.shrink_time
    cfg.verbose = args.verbose
    STRICT_DINO[0] = args.strict_dino
    IGNORE.extend(re.compile(x) for x in args.ignore)
    cfg.binary = None
    if not cfg.kvk:
        cfg.binary = os.path.abspath(args.stratafs)
        if not os.access(cfg.binary, os.X_OK):
            print("fuzz_ops: stratafs binary %s not found" % cfg.binary)
            print("0 passed, 1 failed")
            return 1
    os.chdir("/")
    seed = args.seed
    if seed == "random":
        seed = str(random.SystemRandom().randrange(10**9))
    seqs = args.seqs or max(1, math.ceil(args.ops / 100))
    per = [args.ops // seqs + (1 if i < args.ops % seqs else 0) for i in range(seqs)]

    if args.workdir:
        work = os.path.abspath(args.workdir)
        os.makedirs(work, exist_ok=True)
    else:
        work = tempfile.mkdtemp(prefix="strata-fuzz-", dir="/tmp")
    print("# fuzz_ops: seed %s, %d operations in %d sequences, check every %d, %s vs %s, scratch %s%s%s%s" % (
        seed, args.ops, seqs, args.check_every, cfg.la, cfg.lb, work,
        ", stratafs opts " + cfg.extra if cfg.extra else "",
        ", kernel opts " + cfg.kopts if cfg.kopts else "",
        "".join(", ignoring /%s/" % x for x in args.ignore)), flush=True)

    t0 = time.time()
    nseq = nops = 0
    passed = failed = 0
    mismatches = 0
    shrunk_kinds = set()
    repros = []
    try:
        for i in range(seqs):
            if args.only_seq and i + 1 != args.only_seq:
                continue
            sseed = "%s.%d" % (seed, i + 1)
            rng = random.Random(sseed)
            spec = gen_layers(rng)
            n = per[i]
            remount_at = rng.randrange(n // 3, max(n // 3 + 1, 2 * n // 3)) if n >= 6 else None
            root = os.path.join(work, "seq%d" % (i + 1) if args.keep else "seq")
            t1 = time.time()
            r = run_sequence(cfg, root, spec, rng=rng, nops=n, check_every=args.check_every,
                             remount_at=remount_at)
            nseq += 1
            nops += len(r.ops)
            name = "sequence %d (seed %s, %d layers, %d lower entries, %d ops)" % (
                i + 1, sseed, spec.nlayers, len(spec.entries), len(r.ops))
            if not r.diffs:
                passed += 1
                print("ok %d - %s %.1fs" % (i + 1, name, time.time() - t1), flush=True)
                continue
            failed += 1
            if r.error is None:
                mismatches += 1
            print("not ok %d - %s: %s at step %s" % (i + 1, name, "error" if r.error else "mismatch", r.step),
                  flush=True)
            if r.step not in ("end", "error"):
                print("#   step %s: %s" % (r.step, r.ops[-1].src))
            for _, text in r.diffs[:20]:
                print("#   " + text)
            if len(r.diffs) > 20:
                print("#   ... %d more" % (len(r.diffs) - 20))
            if r.error:
                if not args.keep_going:
                    break
                continue
            target = r.diffs[0][0]
            kind = (target, r.ops[-1].kind if r.step != "end" else "end")
            if kind in shrunk_kinds:
                print("#   (a mismatch of kind %r after a %r step was shrunk already)" % kind)
                continue
            shrunk_kinds.add(kind)
            ops, sp, diffs, title = r.ops, spec, r.diffs, "seed %s, sequence %d" % (seed, i + 1)
            every = args.check_every
            if not args.no_shrink:
                print("# shrinking (kind %r, %d ops, %d lower entries)..." % (target, len(r.ops), len(spec.entries)),
                      flush=True)
                t2 = time.time()
                best, tries = shrink(cfg, os.path.join(work, "shrink"), spec, r.ops, target)
                if best is None or best["res"] is None:
                    print("# the mismatch does not reproduce on fresh copies (%d tries); reporting it unshrunk" % tries)
                else:
                    ops, sp, diffs, every = best["ops"], best["spec"], best["res"].diffs, 1
                    print("# shrunk to %d ops, %d lower entries in %d tries, %.0fs" % (
                        len(ops), len(sp.entries), tries, time.time() - t2), flush=True)
                    title += ", shrunk from %d ops to %d" % (len(r.ops), len(ops))
            rerun = "tests/integration/fuzz_ops.py --seed %s --ops %d --seqs %d --only-seq %d%s%s%s" % (
                seed, args.ops, seqs, i + 1, " --kernel-vs-kernel" if cfg.kvk else "",
                " --extra-opts " + cfg.extra if cfg.extra else "",
                " --kernel-opts " + cfg.kopts if cfg.kopts else "")
            script = repro_script(cfg, sp, ops, diffs, title, every, rerun)
            path = os.path.join(work, "repro-%s-seq%d.sh" % (re.sub(r"[^A-Za-z0-9_.-]", "_", seed), i + 1))
            with open(path, "w") as fh:
                fh.write(script)
            os.chmod(path, 0o755)
            repros.append(path)
            print("# reproducer (saved as %s):" % path)
            print(script, end="", flush=True)
            if not args.keep_going:
                break
    except KeyboardInterrupt:
        print("# interrupted", flush=True)
        failed += 1
    finally:
        cleanup_mounts(work)
        left = [m[0] for m in mountinfo() if m[0].startswith(os.path.realpath(work) + "/")]
        if left:
            print("# still mounted: %s" % left)
        elif not args.keep:
            for d in ("seq", "shrink"):
                shutil.rmtree(os.path.join(work, d), ignore_errors=True)
            if not repros and not args.workdir:
                shutil.rmtree(work, ignore_errors=True)
        else:
            print("# kept %s" % work)
    print("# %.1fs; reproducers: %s" % (time.time() - t0, " ".join(repros) if repros else "none"))
    print("fuzz_ops: %d sequences, %d operations, %d mismatches" % (nseq, nops, mismatches))
    print("%d passed, %d failed" % (passed, failed), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
