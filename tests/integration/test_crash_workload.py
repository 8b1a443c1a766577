#!/usr/bin/env python3
"""test_crash_workload.py -- kill -9 stratafs in the middle of a write-heavy workload.

A two-layer lower stack (built once; files from empty to 8 MiB, merged,
opaque and whited-out directories, a lower hard link pair, a symlink) has
one subtree per workload process (w0/, w1/, ...) and a subtree nobody
touches (static/).  Each round mounts stratafs in the foreground (-f, so its
pid is known) on a fresh upper/work with lowerdir=top:bottom,
redirect_dir=on, index=on|off and fsync=auto|strict|volatile, and starts one
workload process per subtree.  A workload process is this script with
--worker: a seeded generator picks operations from the state it believes its
subtree is in -- appends (copy-ups of big lower files), overwrites in place,
O_TRUNC rewrites, the atomic-replace pattern (write a temp name, maybe fsync,
rename it over the target), new files, renames of files (also over other
files) and of directories (lower, merged and upper ones: redirects, opaque),
unlinks, mkdir, rmdir, removal of whole trees, chmod, truncate, hard links,
symlinks -- and journals each one before ("B i op") and after ("E i", or
"F i errno" when it fails, after which it stops) in a file outside the mount.
The daemon gets SIGKILL after a random delay, or when a random operation
has started (plus up to 20 ms), or as soon as (or up to 5 ms after) a
temporary of a copy-up or whiteout exchange shows up in work/work (watched
from a random moment on), or -- when strace is installed -- right after its
N-th call of one syscall that changes the upper layer (renameat2, unlinkat,
linkat, mkdirat, fsync, ...) returned: strace stalls the daemon's thread
there and the test kills it, which reaches the narrow windows between two
syscalls of one operation that a timer rarely hits.  In half the rounds
the workload processes are first frozen with SIGSTOP (then killed), in the
others they run on and die on their own with ENOTCONN/EIO.  The dead mount is lazily
unmounted and stratafs is mounted again on the same upper/work.  Checked per
round:

  - the workload saw no error before the kill and the daemon lived until it
  - the whole merged tree, replayed from the journals by the same generator
    (with contents): every operation journaled as done shows its new state;
    the one operation per process that was in flight shows its old or its
    new state as a whole (a rename moves the name or not, a directory tree
    is not half moved), except that a write in flight may have written any
    prefix of its data (what POSIX allows for a write(2) cut short), so the
    file must be old content with a prefix of the new bytes at the right
    offset -- never a partial copy-up (truncated or zero-filled lower data),
    never a mix of anything else; static/ is untouched
  - the upper dir holds no temporary ('#...') names, and each of its entries
    is either a whiteout of a name not in the merged view or the merged
    view's entry itself (same type; files with the same content)
  - work/work is empty after the remount (stratafs cleans it when mounting);
    with fsync=volatile only the incompat/volatile/dirty marker of the new
    mount is there
  - fsync=volatile: stratafs refuses the remount while the first mount's
    work/work/incompat/volatile marker exists (as the kernel does); the test
    then removes it -- what overlayfs.rst allows when the system did not
    crash and the upper is intact -- and remounts
  - the remounted daemon exits 0 on umount with no sanitizer report in its
    log (this matters with the ASan build)
  - the kernel overlay mounts the same lower/upper/work with the same
    options and shows the same merged tree (names, types, modes, sizes,
    content hashes, symlink targets, link counts of non-directories); no
    alarming kernel messages (WARNING/BUG during the round, overlayfs
    errors while it mounts the upper); orphan index entries (the kernel's
    "failed to get index nlink" / "orphan index entry", after which it
    removes them) are expected after a kill -- the kernel leaves them too
    when it crashes between creating an index entry and linking it, or
    between unlinking the last name and removing the entry -- but are a
    failure in the round without a kill

Why completed operations must survive in every fsync mode: killing the
daemon is not a power loss.  Everything the daemon did to the upper layer
before it died -- write(2)s of copy-up data, renames, whiteouts, xattrs --
went into the host kernel's page cache and dentry cache of the upper
filesystem and stays there; fsync only decides whether that state also
survives a machine crash, which this test does not simulate.  stratafs uses
no FUSE writeback cache (writes are sent to the daemon, or with passthrough
go straight to the upper file, before write(2) returns), so an operation
whose syscalls all returned success has reached the upper layer.  Hence
fsync=volatile gets exactly the same content checks as auto and strict;
it differs only in the volatile marker that blocks the remount.  The journal
is written with one write(2) per record, which survives the death of the
writer without fsync (--journal-fsync adds one anyway).

Rounds 0 and 1 run the workload on the kernel overlay (index=on, index=off)
to check that the journal model predicts what the kernel shows; round 2
runs it on stratafs to the end without a kill (with the same checks; its
duration scales the kill delays); then come the kill rounds.

Prints `ok - NAME` / `not ok - NAME: REASON`, ends with `N passed, N failed`;
exit 1 if anything failed.  Root; Python 3.11 stdlib.

  test_crash_workload.py [--stratafs build/stratafs] [--seed 1] [--rounds 24]
                         [--workers 2] [--ops 150] [--extra-opts O] [--no-strace] [--keep]

Rounds cycle through fsync=auto/strict/volatile x index=on/off, with and
without frozen workload processes; a failing round is replayed with the same
--seed (the kill point of a timed round can move a little).  About 35 s on
2 cores, with the normal or the ASan build.
"""

import argparse
import errno
import hashlib
import json
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tap import report, results, summary  # noqa: E402,F401
from rig import is_mounted  # noqa: E402
from rig_write import esc, fuse_abort, run_quiet, watchdog  # noqa: E402

KiB = 1024
MiB = 1024 * 1024
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FSYNC_MODES = ("auto", "strict", "volatile")
# syscalls that change the upper layer, to stop the daemon after (strace 6.1 has no name for *xattrat)
STRACE_CALLS = (("renameat2", 5), ("unlinkat", 2), ("linkat", 1), ("mkdirat", 1), ("mknodat", 1),
                ("fchmodat", 1), ("fchownat", 1), ("utimensat", 1), ("copy_file_range", 1), ("fsync", 1),
                ("ftruncate", 1), ("symlinkat", 1))
DATA_OPS = ("append", "pwrite", "truncw", "create")
SANITIZER = re.compile(r"ERROR: (Address|Leak|Thread|Memory)Sanitizer|runtime error:|SUMMARY: \w+Sanitizer")
KMSG_KERNEL = re.compile(r"WARNING:|BUG:|Oops|general protection|Call Trace|hung_task|blocked for more than")
KMSG_OVL = re.compile(r"overlay.*(error|failed|invalid|corrupt|inconsistent|stale|orphan|refusing)", re.I)
KMSG_ORPHAN = re.compile(r"overlayfs: (failed to get index nlink|orphan index entry) \((index/[0-9a-f]+)")




def det(key, n):
    """n deterministic pseudo-random bytes named by key."""
    return random.Random(key).randbytes(n) if n > 0 else b""


# --------------------------------------------------------------------------
# the lower stack: layer 0 is the top one (lowerdir=l0:l1)
# --------------------------------------------------------------------------
def lower_spec(nworkers):
    """[(layer, path, kind, arg, mode)]: kind d (arg "opq" for an opaque dir),
    f (arg: size), l (arg: target), wh, hl (arg: the path it links to).
    Parents come before children."""
    T, B = 0, 1
    s = [(B, "static", "d", None, 0o755), (B, "static/s0", "f", MiB + 11, 0o644),
         (B, "static/s1", "f", 10, 0o644), (T, "static", "d", None, 0o755),
         (T, "static/t", "f", 5, 0o640)]
    for k in range(nworkers):
        w = "w%d" % k
        s += [(B, w, "d", None, 0o755),
              (B, w + "/big0", "f", 8 * MiB, 0o644),
              (B, w + "/big1", "f", 5 * MiB + 3, 0o644),
              (B, w + "/big2", "f", 2 * MiB + 77, 0o600),
              (B, w + "/med0", "f", 300_000, 0o644),
              (B, w + "/med1", "f", MiB, 0o644),
              (B, w + "/med2", "f", 65536, 0o755)]
        s += [(B, w + "/s%d" % i, "f", n, 0o644) for i, n in enumerate((0, 1, 100, 4096, 4097, 3000))]
        s += [(B, w + "/d1", "d", None, 0o755),
              (B, w + "/d1/a", "f", 5000, 0o644),
              (B, w + "/d1/b", "f", 70000, 0o644),
              (B, w + "/d1/sub", "d", None, 0o755),
              (B, w + "/d1/sub/c", "f", 1234, 0o644),
              (B, w + "/d1/sub/big", "f", 3 * MiB, 0o644),
              (B, w + "/d2", "d", None, 0o755),
              (B, w + "/d2/b0", "f", 2000, 0o644),
              (B, w + "/d2/shadow", "f", 999, 0o644),
              (B, w + "/gone", "f", 100, 0o644),
              (B, w + "/gonedir", "d", None, 0o755),
              (B, w + "/gonedir/x", "f", 10, 0o644),
              (B, w + "/opq", "d", None, 0o755),
              (B, w + "/opq/x", "f", 10, 0o644),
              (B, w + "/opq/y", "f", 20, 0o644),
              (B, w + "/hl_a", "f", 200_000, 0o644),
              (B, w + "/d1/hl_b", "hl", w + "/hl_a", None),
              (B, w + "/sym", "l", "s1", None),
              (B, w + "/e0", "d", None, 0o755),
              (B, w + "/d3", "d", None, 0o750),
              (B, w + "/d3/m", "f", 10, 0o644),
              (T, w, "d", None, 0o755),
              (T, w + "/d2", "d", None, 0o755),
              (T, w + "/d2/t0", "f", 3000, 0o644),
              (T, w + "/d2/shadow", "f", 1500, 0o644),
              (T, w + "/gone", "wh", None, None),
              (T, w + "/gonedir", "wh", None, None),
              (T, w + "/opq", "d", "opq", 0o755),
              (T, w + "/opq/z", "f", 10, 0o644),
              (T, w + "/top1", "f", 40000, 0o644),
              (T, w + "/tdir", "d", None, 0o755),
              (T, w + "/tdir/q", "f", 10, 0o644)]
    return s


def lower_data(layer, path, size):
    return det("lower/%d/%s" % (layer, path), size)


def build_lower(root, spec):
    """root/l0 (top) and root/l1 (bottom); returns [l0, l1]."""
    old = os.umask(0)
    try:
        dirs = [os.path.join(root, "l0"), os.path.join(root, "l1")]
        for d in dirs:
            os.makedirs(d, 0o755)
        for layer, path, kind, arg, mode in spec:
            p = os.path.join(dirs[layer], path)
            if kind == "d":
                os.mkdir(p, mode)
                if arg == "opq":
                    os.setxattr(p, "trusted.overlay.opaque", b"y")
            elif kind == "f":
                with open(p, "xb") as fh:
                    fh.write(lower_data(layer, path, arg))
                os.chmod(p, mode)
            elif kind == "l":
                os.symlink(arg, p)
            elif kind == "wh":
                os.mknod(p, stat.S_IFCHR | 0o600, os.makedev(0, 0))
            elif kind == "hl":
                os.link(os.path.join(dirs[layer], arg), p)
        return dirs
    finally:
        os.umask(old)


# --------------------------------------------------------------------------
# the model of the merged tree
# --------------------------------------------------------------------------
class Ino:
    """One object; hard links share it.  data is None in models without content."""
    __slots__ = ("kind", "mode", "data", "size", "target", "group", "lower", "h")

    def __init__(self, kind, mode=0, data=None, size=0, target=None, group=None, lower=False):
        self.kind, self.mode, self.data, self.size = kind, mode, data, size
        self.target, self.group, self.lower, self.h = target, group, lower, None

    def set_data(self, data, size):
        self.data, self.size, self.h = data, size, None
        self.lower = False

    def sha(self):
        if self.h is None:
            self.h = hashlib.sha256(self.data).hexdigest()
        return self.h


def under(p, top):
    return p == top or p.startswith(top + "/")


class Model:
    def __init__(self, spec, index_on, content):
        """The merged view of the lower stack (whiteouts, opaque dirs, lower
        hard links: one object with index=on, independent copies without)."""
        self.content = content
        self.ents = {}
        layers = [{}, {}]
        kids = [{}, {}]
        for layer, path, kind, arg, mode in spec:
            layers[layer][path] = (kind, arg, mode)
            parent = path.rpartition("/")[0]
            kids[layer].setdefault(parent, []).append(path.rpartition("/")[2])
        shared = {}

        def file_ino(layer, path):
            kind, arg, mode = layers[layer][path]
            src, group = path, None
            if kind == "hl":
                src, group = arg, (layer, arg)
                kind, arg, mode = layers[layer][arg]
            elif any(e[0] == "hl" and e[1] == path for e in layers[layer].values()):
                group = (layer, path)
            if group and index_on and group in shared:
                return shared[group]
            data = lower_data(layer, src, arg) if content else None
            ino = Ino("f", mode, data, arg, group=group, lower=True)
            if group:
                shared[group] = ino
            return ino

        def merge(path, active):
            names = sorted({n for L in active for n in kids[L].get(path, [])})
            for name in names:
                cp = path + "/" + name if path else name
                first, sub = None, []
                for L in active:
                    e = layers[L].get(cp)
                    if e is None:
                        continue
                    if first is None:
                        first = (L, e)
                        if e[0] != "d":
                            break
                    elif e[0] != "d":
                        break
                    sub.append(L)
                    if e[1] == "opq":
                        break
                if first is None or first[1][0] == "wh":
                    continue
                L, (kind, arg, mode) = first
                if kind == "d":
                    self.ents[cp] = Ino("d", mode)
                    merge(cp, sub)
                elif kind == "l":
                    self.ents[cp] = Ino("l", target=arg)
                else:
                    self.ents[cp] = file_ino(L, cp)

        merge("", [0, 1])

    def paths(self, top, kinds):
        return sorted(p for p, e in self.ents.items() if under(p, top) and e.kind in kinds)

    def is_empty_dir(self, p):
        return self.ents[p].kind == "d" and not any(q.startswith(p + "/") for q in self.ents)

    def view(self, top):
        """{path: entry tuple} of top and everything below it."""
        out = {}
        for p, e in self.ents.items():
            if under(p, top):
                if e.kind == "f":
                    out[p] = ("f", e.mode, e.size, e.sha())
                elif e.kind == "d":
                    out[p] = ("d", e.mode)
                else:
                    out[p] = ("l", e.target)
        return out

    def apply(self, op):
        kind = op[0]
        E = self.ents
        if kind == "append":
            _, p, n, key = op
            e = E[p]
            e.set_data(e.data + det(key, n) if self.content else None, e.size + n)
        elif kind == "pwrite":
            _, p, off, n, key = op
            e = E[p]
            if self.content:
                d = det(key, n)
                e.set_data(e.data[:off] + d + e.data[off + n:], max(e.size, off + n))
            else:
                e.set_data(None, max(e.size, off + n))
        elif kind == "truncw":
            _, p, n, key = op
            E[p].set_data(det(key, n) if self.content else None, n)
        elif kind == "create":
            _, p, n, key, _sync = op
            E[p] = Ino("f", 0o644, det(key, n) if self.content else None, n)
        elif kind == "trunc":
            _, p, size = op
            e = E[p]
            if self.content:
                e.set_data(e.data[:size] + b"\0" * (size - len(e.data)), size)
            else:
                e.set_data(None, size)
        elif kind == "rename":
            _, s, d = op
            if E[s].kind == "d":
                if d in E:
                    del E[d]          # an empty directory
                for p in [p for p in E if under(p, s)]:
                    E[d + p[len(s):]] = E.pop(p)
            else:
                E[s].lower = False
                E[d] = E.pop(s)
        elif kind in ("unlink", "rmdir"):
            del E[op[1]]
        elif kind == "mkdir":
            E[op[1]] = Ino("d", 0o755)
        elif kind == "chmod":
            E[op[1]].mode = op[2]
            E[op[1]].lower = False
        elif kind == "link":
            E[op[1]].lower = False
            E[op[2]] = E[op[1]]
        elif kind == "symlink":
            E[op[2]] = Ino("l", target=op[1])
        else:
            raise ValueError("unknown op %r" % (op,))


# --------------------------------------------------------------------------
# the workload generator (run identically by the workers and the checker)
# --------------------------------------------------------------------------
OP_WEIGHTS = (("append", 14), ("replace", 12), ("create", 8), ("pwrite", 6), ("truncw", 4),
              ("rename", 10), ("rendir", 4), ("unlink", 8), ("mkdir", 5), ("rmdir", 3),
              ("rmtree", 2), ("chmod", 5), ("trunc", 4), ("link", 3), ("symlink", 2))


class Gen:
    """Picks the next operation from the model's state (types, sizes, names:
    never contents, so that workers need not hold them)."""

    def __init__(self, key, wid, model):
        self.rng = random.Random(key)
        self.key, self.w, self.m = key, "w%d" % wid, model
        self.queue, self.n = [], 0
        self.names, self.weights = zip(*OP_WEIGHTS)

    def fresh(self, parent, stem="n"):
        self.n += 1
        return "%s/%s%d" % (parent, stem, self.n)

    def dkey(self):
        self.n += 1
        return "%s/data%d" % (self.key, self.n)

    def size(self, cap=2 * MiB):
        r = self.rng.random()
        if r < 0.2:
            n = self.rng.randrange(100)
        elif r < 0.6:
            n = self.rng.randrange(8 * KiB)
        elif r < 0.9:
            n = self.rng.randrange(256 * KiB)
        else:
            n = self.rng.randrange(2 * MiB)
        return min(n, cap)

    def next(self):
        if self.queue:
            return self.queue.pop(0)
        while True:
            op = self.pick(self.rng.choices(self.names, self.weights)[0])
            if op:
                return op

    def pick(self, what):
        rng, m, w = self.rng, self.m, self.w
        files = m.paths(w, "f")
        nondirs = m.paths(w, "fl")
        dirs = m.paths(w, "d")
        if what == "append" and files:
            low = [p for p in files if m.ents[p].lower and m.ents[p].size >= MiB]
            p = rng.choice(low) if low and rng.random() < 0.5 else rng.choice(files)
            return ["append", p, self.size(512 * KiB), self.dkey()]
        if what == "pwrite":
            nz = [p for p in files if m.ents[p].size > 0]
            if nz:
                p = rng.choice(nz)
                return ["pwrite", p, rng.randrange(m.ents[p].size), self.size(128 * KiB), self.dkey()]
        if what == "truncw" and files:
            return ["truncw", rng.choice(files), self.size(), self.dkey()]
        if what == "create":
            return ["create", self.fresh(rng.choice(dirs)), self.size(), self.dkey(), int(rng.random() < 0.3)]
        if what == "replace" and files:
            target = rng.choice(files)
            tmp = self.fresh(target.rpartition("/")[0], target.rpartition("/")[2] + ".tmp")
            self.queue.append(["rename", tmp, target])
            return ["create", tmp, self.size(), self.dkey(), int(rng.random() < 0.5)]
        if what == "rename" and nondirs:
            s = rng.choice(nondirs)
            e = m.ents[s]
            others = [p for p in nondirs if m.ents[p] is not e and (e.group is None or m.ents[p].group != e.group)]
            if others and rng.random() < 0.4:
                return ["rename", s, rng.choice(others)]
            return ["rename", s, self.fresh(rng.choice(dirs))]
        if what == "rendir":
            srcs = [d for d in dirs if d != w]
            if srcs:
                s = rng.choice(srcs)
                targets = [d for d in dirs if not under(d, s)]
                empties = [d for d in dirs if d != w and not under(d, s) and m.is_empty_dir(d)]
                if empties and rng.random() < 0.3:
                    return ["rename", s, rng.choice(empties)]
                return ["rename", s, self.fresh(rng.choice(targets), "dir")]
        if what == "unlink" and nondirs:
            return ["unlink", rng.choice(nondirs)]
        if what == "mkdir":
            return ["mkdir", self.fresh(rng.choice(dirs), "dir")]
        if what == "rmdir":
            empties = [d for d in dirs if d != w and m.is_empty_dir(d)]
            if empties:
                return ["rmdir", rng.choice(empties)]
        if what == "rmtree":
            cands = [d for d in dirs if d != w and sum(1 for p in m.ents if under(p, d)) <= 16]
            if cands:
                d = rng.choice(cands)
                below = sorted((p for p in m.ents if under(p, d)), key=lambda p: (-p.count("/"), p))
                self.queue = [["rmdir" if m.ents[p].kind == "d" else "unlink", p] for p in below]
                return self.queue.pop(0)
        if what == "chmod":
            cands = [p for p in m.paths(w, "fd") if p != w]
            if cands:
                p = rng.choice(cands)
                if m.ents[p].kind == "d":
                    modes = (0o700, 0o750, 0o755, 0o711)
                else:
                    modes = (0o600, 0o640, 0o644, 0o755, 0o444)
                return ["chmod", p, rng.choice(modes)]
        if what == "trunc" and files:
            p = rng.choice(files)
            size = m.ents[p].size
            r = rng.random()
            new = 0 if r < 0.2 else rng.randrange(size + 1) if r < 0.7 else size + rng.randrange(64 * KiB)
            return ["trunc", p, new]
        if what == "link" and files:
            return ["link", rng.choice(files), self.fresh(rng.choice(dirs), "ln")]
        if what == "symlink":
            return ["symlink", "../t%d" % rng.randrange(1000), self.fresh(rng.choice(dirs), "sl")]
        return None


# --------------------------------------------------------------------------
# the worker process
# --------------------------------------------------------------------------
def write_all(fd, data, off=None):
    mv = memoryview(data)
    done = 0
    while done < len(mv):
        chunk = mv[done:done + MiB]
        n = os.write(fd, chunk) if off is None else os.pwrite(fd, chunk, off + done)
        if n <= 0:
            raise OSError(errno.EIO, "short write")
        done += n


def write_file(path, flags, data, off=None, sync=False, mode=0o644):
    fd = os.open(path, flags, mode)
    err = None
    try:
        write_all(fd, data, off)
        if sync:
            os.fsync(fd)
    except OSError as e:
        err = e
    try:
        os.close(fd)
    except OSError as e:
        err = err or e
    if err:
        raise err


def do_op(mnt, op):
    P = lambda p: os.path.join(mnt, p)  # noqa: E731
    kind = op[0]
    if kind == "append":
        write_file(P(op[1]), os.O_WRONLY | os.O_APPEND, det(op[3], op[2]))
    elif kind == "pwrite":
        write_file(P(op[1]), os.O_WRONLY, det(op[4], op[3]), off=op[2])
    elif kind == "truncw":
        write_file(P(op[1]), os.O_WRONLY | os.O_TRUNC, det(op[3], op[2]))
    elif kind == "create":
        write_file(P(op[1]), os.O_WRONLY | os.O_CREAT | os.O_EXCL, det(op[3], op[2]), sync=bool(op[4]))
    elif kind == "trunc":
        os.truncate(P(op[1]), op[2])
    elif kind == "rename":
        os.rename(P(op[1]), P(op[2]))
    elif kind == "unlink":
        os.unlink(P(op[1]))
    elif kind == "rmdir":
        os.rmdir(P(op[1]))
    elif kind == "mkdir":
        os.mkdir(P(op[1]), 0o755)
    elif kind == "chmod":
        os.chmod(P(op[1]), op[2])
    elif kind == "link":
        os.link(P(op[1]), P(op[2]))
    elif kind == "symlink":
        os.symlink(op[1], P(op[2]))


def worker_main(cfg):
    os.umask(0o022)
    m = Model(lower_spec(cfg["nworkers"]), cfg["index"] == "on", content=False)
    g = Gen(cfg["key"], cfg["wid"], m)
    jfd = os.open(cfg["journal"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def rec(line):
        os.write(jfd, (line + "\n").encode())
        if cfg["journal_fsync"]:
            os.fsync(jfd)

    rec("S %.6f" % time.monotonic())
    for i in range(cfg["ops"]):
        op = g.next()
        rec("B %d %.6f %s" % (i, time.monotonic(), json.dumps(op)))
        try:
            do_op(cfg["mnt"], op)
        except OSError as e:
            rec("F %d %.6f %d" % (i, time.monotonic(), e.errno or 0))
            return 0
        rec("E %d %.6f" % (i, time.monotonic()))
        m.apply(op)
    rec("D")
    return 0


# --------------------------------------------------------------------------
# the checker
# --------------------------------------------------------------------------
class Journal:
    """One worker's journal: done = number of completed ops (0..done-1),
    inflight = (index, op, how) or None, errors = problems found."""

    def __init__(self, path, t_kill):
        self.done, self.inflight, self.finished, self.errors, self.ops = 0, None, False, [], []
        try:
            with open(path, "rb") as fh:
                raw = fh.read().decode()
        except FileNotFoundError:
            raw = ""
        lines = raw.split("\n")
        if lines and lines[-1] != "":
            lines = lines[:-1]          # a record cut short: as if not written
        state = "idle"
        for ln in lines:
            if not ln:
                continue
            f = ln.split(" ", 3)
            if f[0] == "D":
                self.finished = True
                continue
            if f[0] == "S":
                continue
            i = int(f[1])
            if f[0] == "B":
                if state != "idle" or i != len(self.ops):
                    self.errors.append("journal out of order at %r" % ln[:80])
                    return
                self.ops.append(json.loads(f[3]))
                state = "begun"
            elif f[0] == "E":
                self.done = i + 1
                state = "idle"
            elif f[0] == "F":
                err = int(f[3])
                op = self.ops[i]
                if t_kill is None or float(f[2]) < t_kill:
                    self.errors.append("op %d %s failed with %s before the kill" %
                                       (i, json.dumps(op), errno.errorcode.get(err, err)))
                self.inflight = (i, op, "failed with %s" % errno.errorcode.get(err, err))
                state = "failed"
        if state == "begun":
            self.inflight = (len(self.ops) - 1, self.ops[-1], "no reply")


def common_prefix(a, b):
    """Length of the common prefix of two bytes objects."""
    n = min(len(a), len(b))
    lo, step = 0, 64 * KiB
    while lo < n and a[lo:lo + step] == b[lo:lo + step]:
        lo += step
    hi = min(lo + step, n)
    while lo < hi and a[lo] == b[lo]:
        lo += 1
    return lo


def partial_ok(op, old, x):
    """Is x what op leaves when cut short after writing a prefix of its data
    (old: the content before op; None if the file did not exist)?"""
    kind = op[0]
    if kind == "append":
        base, off, d = old, len(old), det(op[3], op[2])
    elif kind == "pwrite":
        base, off, d = old, op[2], det(op[4], op[3])
    elif kind == "truncw":
        base, off, d = b"", 0, det(op[3], op[2])
    else:
        base, off, d = b"", 0, det(op[3], op[2])
    if len(x) < off or x[:off] != base[:off]:
        return False
    p = common_prefix(x[off:], d)
    return x == base[:off] + d[:p] + base[off + p:]


def file_sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            b = fh.read(MiB)
            if not b:
                return h.hexdigest()
            h.update(b)


def walk(root):
    """({relpath: entry tuple}, {relpath: st_nlink of non-directories}).
    Entries: ("d", mode), ("f", mode, size, sha256), ("l", target), ("wh",),
    ("other", type)."""
    out, nl = {}, {}

    def visit(d, rel):
        for name in sorted(os.listdir(d)):
            p, r = os.path.join(d, name), rel + name
            st = os.lstat(p)
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISDIR(st.st_mode):
                out[r] = ("d", mode)
                visit(p, r + "/")
                continue
            nl[r] = st.st_nlink
            if stat.S_ISREG(st.st_mode):
                out[r] = ("f", mode, st.st_size, file_sha(p))
            elif stat.S_ISLNK(st.st_mode):
                out[r] = ("l", os.readlink(p))
            elif stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                out[r] = ("wh",)
            else:
                out[r] = ("other", stat.S_IFMT(st.st_mode))

    visit(root, "")
    return out, nl


def fmt(e):
    if e is None:
        return "absent"
    if e[0] == "f":
        return "file %o %dB %s" % (e[1], e[2], e[3][:10])
    if e[0] == "d":
        return "dir %o" % e[1]
    if e[0] == "l":
        return "symlink->%s" % e[1]
    return str(e)


def diffs(obs, exp, limit=8):
    out = []
    for p in sorted(set(obs) | set(exp)):
        if obs.get(p) != exp.get(p):
            out.append("%s: %s, expected %s" % (p, fmt(obs.get(p)), fmt(exp.get(p))))
            if len(out) >= limit:
                break
    return out


def check_worker(spec, index_on, key, wid, jr, obs, mnt):
    """(problems of worker wid's subtree in obs (the merged walk), what the
    in-flight op left: "old", "new", "partial" or "")."""
    w = "w%d" % wid
    probs = []
    m = Model(spec, index_on, content=True)
    g = Gen(key, wid, m)
    for i in range(jr.done):
        op = g.next()
        if op != jr.ops[i]:
            return probs + ["generator diverged at op %d: %s vs journal %s" % (i, op, jr.ops[i])], ""
        m.apply(op)
    got = {p: e for p, e in obs.items() if under(p, w)}
    v_old = m.view(w)
    if jr.inflight is None:
        if got != v_old:
            probs.append("%s after op %d of %d: %s" % (w, jr.done, len(jr.ops), "; ".join(diffs(got, v_old))))
        return probs, ""
    i, op, how = jr.inflight
    gop = g.next()
    if gop != op:
        return probs + ["generator diverged at op %d: %s vs journal %s" % (i, gop, op)], ""
    before = {p: (e.data if e.kind == "f" else None) for p, e in m.ents.items() if under(p, w)}
    m.apply(op)
    v_new = m.view(w)
    if got == v_new:
        return probs, "new"
    if got == v_old:
        return probs, "old"
    if op[0] in DATA_OPS:
        # a write cut short: every name of the written file shows one partial content
        changed = sorted(p for p in set(v_old) | set(v_new) if v_old.get(p) != v_new.get(p))
        rest_ok = all(got.get(p) == v_new.get(p) for p in set(got) | set(v_new) if p not in changed)
        cur = [got.get(p) for p in changed]
        if rest_ok and cur and all(c is not None and c[0] == "f" and c == cur[0] for c in cur) \
                and all(v_new[p][1] == cur[0][1] for p in changed):
            with open(os.path.join(mnt, changed[0]), "rb") as fh:
                x = fh.read()
            if partial_ok(op, before.get(op[1]) if op[0] != "create" else None, x):
                return probs, "partial"
            probs.append("%s: op %d %s in flight (%s): content is neither old, new, nor old with a "
                         "prefix of the new data (%s)" % (w, i, json.dumps(op)[:120], how, fmt(cur[0])))
            return probs, "bad"
    probs.append("%s: op %d %s in flight (%s): tree is neither the old nor the new state: vs old: %s || vs new: %s"
                 % (w, i, json.dumps(op)[:160], how, "; ".join(diffs(got, v_old, 4)),
                    "; ".join(diffs(got, v_new, 4))))
    return probs, "bad"


def check_upper(upper, merged):
    probs = []
    up, _ = walk(upper)
    for r, e in sorted(up.items()):
        base = r.rpartition("/")[2]
        m = merged.get(r)
        if base.startswith("#"):
            probs.append("upper/%s: a temporary name (%s)" % (r, fmt(e)))
        elif e[0] == "wh":
            if m is not None:
                probs.append("upper/%s: a whiteout, but the merged view shows %s" % (r, fmt(m)))
        elif m is None:
            probs.append("upper/%s: %s not in the merged view" % (r, fmt(e)))
        elif m[0] != e[0] or (e[0] == "l" and e != m) or \
                (e[0] == "f" and e[2:] != m[2:] and not (e[2] == m[2] and is_metacopy(os.path.join(upper, r)))):
            probs.append("upper/%s: %s, but the merged view shows %s" % (r, fmt(e), fmt(m)))
    return probs


def is_metacopy(path):
    """A metacopy=on upper file: its data is still below."""
    for x in ("trusted.overlay.metacopy", "user.overlay.metacopy"):
        try:
            os.getxattr(path, x, follow_symlinks=False)
            return True
        except OSError:
            pass
    return False


def dmesg_lines():
    p = subprocess.run(["dmesg"], capture_output=True, text=True)
    return p.stdout.splitlines() if p.returncode == 0 else []


def new_kmsgs(before):
    now = dmesg_lines()
    new = now[len(before):] if now[:len(before)] == before else [ln for ln in now if ln not in set(before)]
    return [ln.split("] ", 1)[-1] for ln in new]


def kmsg_problems(round_msgs, mount_msgs, index_names, crashed):
    """Alarming kernel messages: kernel warnings during the round; overlayfs
    complaints while the kernel mounted our upper.  Orphan index entries
    (the kernel's "failed to get index nlink" + "orphan index entry", then it
    removes them) are what the kernel itself leaves when it crashes between
    creating an index entry and linking it, or between unlinking the last name
    and removing the entry: expected after a kill, a stratafs bug without one.
    Messages naming index entries that are not ours (another test running at
    the same time) are ignored."""
    probs, notes = [], []
    for ln in round_msgs:
        if KMSG_KERNEL.search(ln):
            probs.append("dmesg: " + ln)
    for ln in mount_msgs:
        m = KMSG_ORPHAN.search(ln)
        if m:
            if m.group(2).split("/")[1] not in index_names:
                continue
            (notes if crashed else probs).append("dmesg: " + ln)
        elif KMSG_OVL.search(ln) and "is read-only" not in ln:
            probs.append("dmesg: " + ln)
    return probs, notes


# --------------------------------------------------------------------------
# mounts
# --------------------------------------------------------------------------
class Daemon:
    """stratafs in the foreground, its output in a log file; with strace (a
    command prefix) it runs under strace, and proc is the strace process."""

    def __init__(self, binary, mnt, opts, log, strace=None):
        self.mnt, self.log, self.traced = mnt, log, bool(strace)
        with open(log, "ab") as fh:
            self.proc = subprocess.Popen((strace or []) + [binary, "stratafs", mnt, "-o", opts, "-f"],
                                         stdin=subprocess.DEVNULL, stdout=fh, stderr=fh)

    def pid(self):
        """The stratafs process (under strace: strace's child)."""
        if not self.traced:
            return self.proc.pid
        try:
            with open("/proc/%d/task/%d/children" % (self.proc.pid, self.proc.pid)) as fh:
                kids = fh.read().split()
            return int(kids[0]) if kids else None
        except OSError:
            return None

    def wait_mounted(self, secs=20, stalled=None):
        end = time.time() + secs
        while time.time() < end:
            if self.proc.poll() is not None or (stalled and stalled()):
                return False
            if is_mounted(self.mnt):
                try:
                    os.stat(self.mnt)
                    return True
                except OSError:
                    pass
            time.sleep(0.01)
        return False

    def log_text(self):
        try:
            with open(self.log, "rb") as fh:
                return fh.read().decode(errors="replace")
        except OSError:
            return ""

    def log_tail(self, n=3):
        lines = [ln for ln in self.log_text().splitlines() if ln.strip()]
        return " | ".join(lines[-n:]) if lines else "(no output)"

    def umount(self):
        """Clean unmount; problems (exit status, sanitizer reports)."""
        probs = []
        if is_mounted(self.mnt):
            p = subprocess.run(["umount", self.mnt], capture_output=True, text=True)
            if p.returncode != 0:
                probs.append("umount: %s" % p.stderr.strip())
                fuse_abort(self.mnt)
                subprocess.run(["umount", "-l", self.mnt], capture_output=True)
        try:
            rc = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
            probs.append("daemon still running 30s after umount")
        if rc != 0:
            probs.append("daemon exit status %s (%s)" % (rc, self.log_tail()))
        if SANITIZER.search(self.log_text()):
            probs.append("sanitizer report in %s: %s" % (self.log, self.log_tail(6)))
        return probs

    def kill(self):
        pid = self.pid() if self.proc.poll() is None else None
        if self.traced and pid:
            # the daemon first (strace holds a stalled thread of it, which SIGKILL still ends), then
            # strace, which would otherwise sit out its delay
            os.kill(pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        # strace's tracee is reaped by init, maybe late; it has closed its files (and dropped the
        # flock on upper/work) once all its threads are gone: a zombie leader with other threads
        # still exiting is not enough
        end = time.monotonic() + 20
        while self.traced and pid and not fully_dead(pid) and time.monotonic() < end:
            time.sleep(0.005)


def wait_ready(journals, workers, secs):
    """Wait until every workload process has written its S record."""
    end = time.monotonic() + secs
    while time.monotonic() < end:
        waiting = []
        for j, wp in zip(journals, workers):
            try:
                with open(j, "rb") as fh:
                    if fh.read(2) == b"S ":
                        continue
            except FileNotFoundError:
                pass
            waiting.append(wp)
        if not waiting:
            return True
        if any(wp.poll() is not None for wp in waiting):
            return False                       # died before it started
        time.sleep(0.005)
    return False


def fully_dead(pid):
    """No thread of pid is left (gone, or a zombie leader alone)."""
    try:
        with open("/proc/%d/stat" % pid) as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
        return state in ("Z", "X") and len(os.listdir("/proc/%d/task" % pid)) <= 1
    except (OSError, IndexError):
        return True


def stalled_lines(slog):
    """strace's lines of the calls it stalled (delay_exit)."""
    try:
        with open(slog, "rb") as fh:
            return [ln for ln in fh.read().decode(errors="replace").splitlines() if "(DELAYED)" in ln]
    except FileNotFoundError:
        return []


def lazy_umount(mnt):
    if is_mounted(mnt):
        subprocess.run(["umount", "-l", mnt], capture_output=True)


def kernel_mount(opts, mnt):
    p = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, mnt], capture_output=True, text=True,
                       timeout=60)
    if p.returncode != 0 or not is_mounted(mnt):
        return (p.stderr or p.stdout).strip() or "not mounted"
    return None


def remove_incompat(work):
    shutil.rmtree(os.path.join(work, "work", "incompat"), ignore_errors=True)


def work_left(work):
    ww = os.path.join(work, "work")
    if not os.path.isdir(ww):
        return ["(work/work missing)"]
    left = []
    for dp, dns, fns in os.walk(ww):
        for n in sorted(dns + fns):
            left.append(os.path.relpath(os.path.join(dp, n), ww))
    return sorted(left)


# --------------------------------------------------------------------------
# rounds
# --------------------------------------------------------------------------
class Env:
    def __init__(self, args, root):
        self.args, self.root = args, root
        self.binary = os.path.abspath(args.stratafs)
        self.spec = lower_spec(args.workers)
        self.lowers = build_lower(os.path.join(root, "lower"), self.spec)
        self.static = {}
        for ix in ("on", "off"):
            m = Model(self.spec, ix == "on", content=True)
            self.static[ix] = {p: e for p, e in m.view("static").items()}
            self.static[ix].update({p: ("d", e.mode) for p, e in m.ents.items() if "/" not in p and p != "static"})


def run_round(env, k, cfg):
    """cfg: fsync, index, kill (None: run to the end), freeze, kernel (run
    the workload on the kernel overlay: the model check).  Returns the
    workload's duration when it ran to the end."""
    a = env.args
    d = os.path.join(env.root, "r%d" % k)
    upper, work, mnt = (os.path.join(d, x) for x in ("upper", "work", "mnt"))
    for x in (upper, work, mnt):
        os.makedirs(x)
    opts = "lowerdir=%s,upperdir=%s,workdir=%s,redirect_dir=on,index=%s,fsync=%s" % (
        ":".join(esc(x) for x in env.lowers), esc(upper), esc(work), cfg["index"], cfg["fsync"])
    if a.extra_opts:
        opts += "," + a.extra_opts
    tag = "round %d (%s)" % (k, cfg["desc"])
    kmsg0 = dmesg_lines()
    wd = watchdog(d, a.round_timeout, lambda: report(tag + ": watchdog", ["timeout after %ds" % a.round_timeout]))
    daemons, workers = [], []
    took, mount_stall = None, False
    try:
        if cfg["kernel"]:
            err = kernel_mount(opts, mnt)
            if err:
                report(tag + ": kernel mount", [err])
                return None
        else:
            strace, slog = None, os.path.join(d, "strace.log")
            if cfg["kill"] and cfg["kill"][0] == "sys":
                _, sc, nth = cfg["kill"]
                strace = ["strace", "-f", "-qq", "--seccomp-bpf", "-o", slog, "-e", "trace=" + sc,
                          "-e", "inject=%s:delay_exit=20000000:when=%d" % (sc, nth)]
            dm = Daemon(env.binary, mnt, opts, os.path.join(d, "daemon1.log"), strace)
            daemons.append(dm)
            if not dm.wait_mounted(stalled=lambda: bool(strace and stalled_lines(slog))):
                if strace and stalled_lines(slog) and dm.proc.poll() is None:
                    # stopped in its own mount setup: a kill there must leave a mountable upper/work
                    print("# %s: daemon stalled while mounting, after: %s" % (tag, stalled_lines(slog)[0][:160]))
                    mount_stall = True
                    dm.kill()
                    lazy_umount(mnt)
                else:
                    report(tag + ": foreground mount", ["stratafs -f did not mount (exit %s): %s" %
                                                        (dm.proc.poll(), dm.log_tail())])
                    return None
        keys = ["%d/%d/%d" % (a.seed, k, wid) for wid in range(a.workers)]
        journals = [os.path.join(d, "journal%d" % wid) for wid in range(a.workers)]
        t_kill = None
        pre = []
        if mount_stall:
            t_kill = time.monotonic()
        else:
            for wid in range(a.workers):
                wcfg = {"mnt": mnt, "journal": journals[wid], "key": keys[wid], "wid": wid, "nworkers": a.workers,
                        "index": cfg["index"], "ops": a.ops, "journal_fsync": a.journal_fsync}
                cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(wcfg)]
                workers.append(subprocess.Popen(cmd, cwd=d, stdin=subprocess.DEVNULL))
            if not wait_ready(journals, workers, 60):
                pre.append("a workload process did not start (within 60s)")
            t0 = time.monotonic()
            if cfg["kill"] is None:
                codes = [wp.wait(timeout=a.round_timeout) for wp in workers]
                took = time.monotonic() - t0
                if any(codes):
                    pre.append("workload exit codes %s" % codes)
                if cfg["kernel"]:
                    subprocess.run(["umount", mnt], capture_output=True)
                else:
                    pre += ["first unmount: " + x for x in daemons[0].umount()]
            else:
                trig = cfg["kill"]
                def running():
                    return daemons[0].proc.poll() is None and any(wp.poll() is None for wp in workers)
                if trig[0] in ("time", "temp"):
                    end = t0 + trig[1]
                    while time.monotonic() < end and running():
                        time.sleep(min(0.005, max(0.0, end - time.monotonic())))
                if trig[0] == "temp":                  # ("temp", start, extra delay, give up after)
                    ww = os.path.join(work, "work")
                    end, seen = time.monotonic() + trig[3], []
                    while time.monotonic() < end and running() and not seen:
                        try:
                            seen = [n for n in os.listdir(ww) if n.startswith("#")]
                        except OSError:
                            pass
                        if not seen:
                            time.sleep(0.0005)
                    time.sleep(trig[2])
                    print("# %s: %s" % (tag, "saw work/work/%s" % seen[0] if seen else "no temporary seen"))
                elif trig[0] == "sys":                 # ("sys", syscall, n): strace stalls it, then the kill
                    end, hit = time.monotonic() + a.round_timeout / 2, None
                    while time.monotonic() < end and running() and not hit:
                        hit = stalled_lines(slog)
                        if not hit:
                            time.sleep(0.001)
                    print("# %s: %s" % (tag, "daemon stalled after: %s" % hit[0][:160] if hit else
                                        "the workload made fewer calls: killed at its end"), flush=True)
                elif trig[0] == "op":                                  # ("op", worker, index, extra delay)
                    _, wid, idx, extra = trig
                    end = time.monotonic() + a.round_timeout / 2
                    while time.monotonic() < end and daemons[0].proc.poll() is None and workers[wid].poll() is None:
                        try:
                            with open(journals[wid], "rb") as fh:
                                raw = fh.read()
                            if raw.startswith(b"B ") + raw.count(b"\nB ") > idx:
                                break
                        except FileNotFoundError:
                            pass
                        time.sleep(0.002)
                    time.sleep(extra)
                if daemons[0].proc.poll() is not None:
                    pre.append("the daemon died before the kill (exit %s): %s" %
                               (daemons[0].proc.returncode, daemons[0].log_tail()))
                if cfg["freeze"]:
                    for wp in workers:
                        if wp.poll() is None:
                            wp.send_signal(signal.SIGSTOP)
                t_kill = time.monotonic()
                daemons[0].kill()
                if cfg["freeze"]:
                    for wp in workers:
                        if wp.poll() is None:
                            wp.kill()
                        wp.wait()
                else:
                    for wp in workers:
                        try:
                            wp.wait(timeout=30)
                        except subprocess.TimeoutExpired:
                            wp.kill()
                            wp.wait()
                            pre.append("a workload process hung after the daemon died")
                pre += ["workload process w%d exited with %s" % (i, wp.returncode) for i, wp in enumerate(workers)
                        if wp.returncode not in (0, -signal.SIGKILL)]
                lazy_umount(mnt)
                if is_mounted(mnt):
                    pre.append("still mounted after umount -l")
        jrs = [Journal(j, t_kill) for j in journals]
        state = ", ".join("w%d: %d done%s" % (i, jr.done, "" if jr.inflight is None else
                                                 ", op %d %s in flight (%s)" % (jr.inflight[0], jr.inflight[1][0],
                                                                              jr.inflight[2]))
                          for i, jr in enumerate(jrs))
        print("# %s: %s" % (tag, state), flush=True)
        report(tag + ": workload ran without errors until the kill" if cfg["kill"] else
               tag + ": workload ran to the end", pre + [e for jr in jrs for e in jr.errors])
        if cfg["kill"] is None and not all(jr.finished for jr in jrs):
            report(tag + ": every workload process finished", ["not all journals end with D"])

        # remount on the same upper/work
        if cfg["kernel"]:
            err = kernel_mount(opts, mnt)
            if err:
                report(tag + ": kernel remount", [err])
                return took
        else:
            if cfg["fsync"] == "volatile" and not os.path.isdir(os.path.join(work, "work", "incompat", "volatile")):
                print("# %s: killed before the volatile mark was made: remounting as is" % tag)
            elif cfg["fsync"] == "volatile":
                p = run_quiet([env.binary, "stratafs", mnt, "-o", opts])
                probs = []
                if p.returncode == 0 or is_mounted(mnt):
                    probs.append("stratafs mounted a workdir marked volatile (exit %d)" % p.returncode)
                    subprocess.run(["umount", mnt], capture_output=True)
                    time.sleep(0.2)
                    lazy_umount(mnt)
                elif "volatile" not in p.stderr:
                    probs.append("refused, but not for the volatile mark: %s" % p.stderr.strip())
                report(tag + ": remount refused while work/work/incompat/volatile exists", probs)
                remove_incompat(work)
            dm = Daemon(env.binary, mnt, opts, os.path.join(d, "daemon2.log"))
            daemons.append(dm)
            if not dm.wait_mounted():
                report(tag + ": remount after the crash", ["stratafs did not mount (exit %s): %s" %
                                                           (dm.proc.poll(), dm.log_tail())])
                return took
            left = work_left(work)
            allowed = ["incompat", "incompat/volatile", "incompat/volatile/dirty"] \
                if cfg["fsync"] == "volatile" else []
            report(tag + ": work/work clean after the remount",
                   ["left in work/work: %s" % [x for x in left if x not in allowed][:8]]
                   if [x for x in left if x not in allowed] else [])
        obs, nl = walk(mnt)
        index_on = cfg["index"] == "on"
        probs = []
        fixed = {p: e for p, e in obs.items() if not any(under(p, "w%d" % i) for i in range(a.workers))
                 or p in ("w%d" % i for i in range(a.workers))}
        exp_fixed = dict(env.static[cfg["index"]])
        if fixed != exp_fixed:
            probs.append("outside the workload subtrees: " + "; ".join(diffs(fixed, exp_fixed)))
        left = []
        for wid in range(a.workers):
            p, how = check_worker(env.spec, index_on, keys[wid], wid, jrs[wid], obs, mnt)
            probs += p
            if how:
                left.append("w%d's in-flight %s: %s state" % (wid, jrs[wid].inflight[1][0], how))
        if left:
            print("# %s: %s" % (tag, ", ".join(left)), flush=True)
        report(tag + ": merged tree: done ops new, in-flight op old or new" if cfg["kill"] else
               tag + ": merged tree is what the journal model predicts", probs)
        if cfg["kernel"]:
            subprocess.run(["umount", mnt], capture_output=True)
            return took
        report(tag + ": upper has no temporaries, no hidden or stale entries", check_upper(upper, obs))
        report(tag + ": remounted daemon unmounts cleanly", daemons[-1].umount())

        # the kernel overlay on the same upper/work
        if cfg["fsync"] == "volatile":
            remove_incompat(work)
        idir = os.path.join(work, "index")
        index_names = set(os.listdir(idir)) if os.path.isdir(idir) else set()
        kmsg1 = dmesg_lines()
        err = kernel_mount(opts, mnt)
        if err:
            report(tag + ": kernel mounts the upper", [err])
            return took
        try:
            kobs, knl = walk(mnt)
        finally:
            subprocess.run(["umount", mnt], capture_output=True)
        mount_msgs = new_kmsgs(kmsg1)
        probs = diffs(kobs, obs, 8)
        probs += ["%s: st_nlink kernel %d, stratafs %d" % (p, knl[p], nl[p]) for p in sorted(knl)
                  if p in nl and knl[p] != nl[p]][:8]
        report(tag + ": kernel mounts the upper and shows the same tree", probs)
        probs, notes = kmsg_problems(new_kmsgs(kmsg0), mount_msgs, index_names, cfg["kill"] is not None)
        for n in notes[:4]:
            print("# %s: after the crash (benign): %s" % (tag, n))
        report(tag + ": no alarming kernel messages (no orphan index entries without a kill)", probs)
        return took
    except Exception as e:  # noqa: BLE001
        report(tag, ["%s: %s" % (type(e).__name__, e)])
        return took
    finally:
        wd.cancel()
        for wp in workers:
            if wp.poll() is None:
                try:
                    wp.send_signal(signal.SIGCONT)
                except OSError:
                    pass
                wp.kill()
            wp.wait()
        for dm in daemons:
            if dm.proc.poll() is None:
                fuse_abort(mnt)
                dm.kill()
        lazy_umount(mnt)
        if not a.keep and not is_mounted(mnt):
            shutil.rmtree(d, ignore_errors=True)


def round_configs(args, took):
    rng = random.Random("%d/configs" % args.seed)
    out = []
    for r in range(args.rounds):
        fs = FSYNC_MODES[r % 3]
        ix = "on" if (r // 3) % 2 == 0 else "off"
        freeze = (r // 6) % 2 == 1
        r2 = rng.random()
        if r2 < 0.25:
            delay = rng.uniform(0.0, 1.1) * took
            kill = ("time", delay)
            how = "kill after %.0f ms" % (delay * 1000)
        elif r2 < 0.5:
            start, extra = rng.uniform(0.0, 0.8) * took, rng.choice((0.0, rng.uniform(0, 0.005)))
            kill = ("temp", start, extra, max(1.0, 2 * took))
            how = "kill %.1f ms after a temporary shows in work/work (watched from %.0f ms)" % (
                extra * 1000, start * 1000)
        elif r2 < 0.65 or not args.strace:
            wid, idx, extra = rng.randrange(args.workers), rng.randrange(args.ops), rng.uniform(0, 0.02)
            kill = ("op", wid, idx, extra)
            how = "kill at op %d of w%d +%.0f ms" % (idx, wid, extra * 1000)
        else:
            names, weights = zip(*STRACE_CALLS)
            sc, nth = rng.choices(names, weights)[0], rng.randint(1, 25)
            kill = ("sys", sc, nth)
            how = "kill after the daemon's %s #%d returns (strace)" % (sc, nth)
        desc = "fsync=%s index=%s, %s%s" % (fs, ix, how, ", workers frozen first" if freeze else "")
        out.append({"fsync": fs, "index": ix, "kill": kill, "freeze": freeze, "kernel": False, "desc": desc})
    return out


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        return worker_main(json.loads(sys.argv[2]))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stratafs", default=os.path.join(REPO, "build", "stratafs"))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=24, help="kill rounds (after the model and no-kill rounds)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--ops", type=int, default=150, help="operations per workload process")
    ap.add_argument("--extra-opts", default=os.environ.get("STRATAFS_EXTRA_OPTS", ""),
                    help="more mount options, for stratafs and the kernel")
    ap.add_argument("--journal-fsync", action="store_true", help="fsync the journals after each record")
    ap.add_argument("--no-model-rounds", action="store_true", help="skip the kernel model rounds")
    ap.add_argument("--no-strace", action="store_true", help="no rounds that stop the daemon after a "
                    "given syscall with strace (also left out when strace is not installed)")
    ap.add_argument("--keep", action="store_true", help="keep the round directories")
    ap.add_argument("--round-timeout", type=int, default=120,
                    help="abort a round's FUSE mounts after this many seconds")
    args = ap.parse_args()
    if os.geteuid() != 0:
        ap.error("must run as root")
    args.strace = shutil.which("strace") is not None and not args.no_strace
    t0 = time.time()
    root = tempfile.mkdtemp(prefix="strata-crashwl-", dir="/tmp")
    print("# seed %d, %d rounds, %d workers x %d ops, %s" % (args.seed, args.rounds, args.workers, args.ops,
                                                           args.stratafs), flush=True)
    try:
        if not os.access(os.path.abspath(args.stratafs), os.X_OK):
            raise RuntimeError("stratafs binary %s not found" % args.stratafs)
        env = Env(args, root)
        k = 0
        if not args.no_model_rounds:
            for ix in ("on", "off"):
                run_round(env, k, {"fsync": "auto", "index": ix, "kill": None, "freeze": False, "kernel": True,
                                   "desc": "model: kernel overlay, index=%s, no kill" % ix})
                k += 1
        took = run_round(env, k, {"fsync": "auto", "index": "on", "kill": None, "freeze": False, "kernel": False,
                                  "desc": "fsync=auto index=on, no kill"})
        k += 1
        if took is None:
            raise RuntimeError("the no-kill round did not finish")
        print("# the workload takes %.2fs on stratafs without a kill" % took, flush=True)
        for cfg in round_configs(args, took):
            run_round(env, k, cfg)
            k += 1
    except Exception as e:  # noqa: BLE001
        report("setup", ["%s: %s" % (type(e).__name__, e)])
    finally:
        os.chdir("/")
        still = [os.path.join(root, x, "mnt") for x in os.listdir(root)]
        for m in still:
            if is_mounted(m):
                fuse_abort(m)
                lazy_umount(m)
        if args.keep:
            print("# kept %s" % root)
        elif not any(is_mounted(m) for m in still):
            shutil.rmtree(root, ignore_errors=True)
    return summary(t0)


if __name__ == "__main__":
    sys.exit(main())
