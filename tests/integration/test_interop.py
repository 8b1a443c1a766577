#!/usr/bin/env python3
"""test_interop.py -- the upper dir written by one implementation must be
read identically by the other (kernel overlayfs <-> stratafs).

  a  stratafs runs the rig_write workload on U1/W1; after umount the kernel
     mounts U1/W1 and must show the tree stratafs showed before umount
  b  the reverse: the kernel writes, stratafs mounts and shows the same tree
  c  the upper dir alone (a copy, with a fresh empty workdir), for the upper
     of a and of b: the kernel and stratafs are each given their own copy;
     if the kernel refuses the mount stratafs must refuse too, else both
     must show the same tree
  d  stratafs writes, the kernel changes more on top, stratafs reads it back
     and shows what the kernel showed

Merged trees are compared with rig.py's walker (type, mode, owner, size,
nlink, content, exact mtimes of non-directories, xattrs, readdir, st_ino
classes).  Kernel log lines mentioning overlayfs while the kernel mounts a
stratafs-written upper are reported as a failure of their own.

Prints `ok - NAME` / `not ok - NAME: REASON`, ends with `N passed, N failed`;
exit 1 if anything failed.  Root; Python 3.11 stdlib.

  test_interop.py [--stratafs build/stratafs] [--keep]
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tap import report, results, summary  # noqa: E402,F401
from rig import is_mounted  # noqa: E402
from rig_write import (Mnt, build_lower, lowerdirs, workload, merged_walk, upper_walk,  # noqa: E402
                       compare_merged, compare_recs, watchdog)

NEVER_RECENT = 2**63          # compare exact mtimes: both sides read one upper
mounted = []                  # Mnt objects possibly mounted (for cleanup)


class Collect:
    """A diff sink for rig.compare / compare_recs that keeps the lines."""

    def __init__(self):
        self.lines = []
        self.area = ""

    def __call__(self, line):
        self.lines.append(line)

    def diff(self, line):
        self.lines.append((self.area + " " + line).strip())




def dmesg_lines():
    p = subprocess.run(["dmesg"], capture_output=True, text=True)
    return p.stdout.splitlines() if p.returncode == 0 else []


def overlay_msgs(before):
    """Kernel log lines about overlayfs added since `before` (a line list)."""
    now = dmesg_lines()
    new = now[len(before):] if now[:len(before)] == before else now[-50:]
    return [ln.split("] ", 1)[-1] for ln in new if "overlay" in ln]


class Env:
    def __init__(self, root, binary, extra):
        self.root, self.binary, self.extra = root, binary, extra
        self.lower = os.path.join(root, "lower")
        build_lower(self.lower)
        self.n = 0

    def dirs(self, name):
        d = os.path.join(self.root, name)
        os.makedirs(os.path.join(d, "upper"))
        os.makedirs(os.path.join(d, "work"))
        return os.path.join(d, "upper"), os.path.join(d, "work")

    def mnt(self, kind, upper, work):
        self.n += 1
        m = Mnt(kind, lowerdirs(self.lower), upper, work, os.path.join(self.root, "mnt%d" % self.n),
                self.binary, self.extra if kind == "stratafs" else "")
        mounted.append(m)
        return m


def view(m):
    """Mount, walk, umount; returns (walk or None, error text)."""
    ok, msg = m.try_mount()
    if not ok:
        return None, msg
    try:
        return merged_walk(m.mnt, NEVER_RECENT), ""
    finally:
        m.umount()


def diff_views(wa, wb, la, lb):
    c = Collect()
    compare_merged(wa, wb, la, lb, c, "")
    return c.lines


def copy_tree(src, dst):
    subprocess.run(["cp", "-a", "--preserve=all", src, dst], check=True)
    c = Collect()
    a, b = upper_walk(src), upper_walk(dst)
    for recs in (a, b):            # index entries are links outside the upper
        for r in recs.values():
            r.pop("nlink", None)
    compare_recs(a, b, "orig", "copy", c, "cp")
    if c.lines:
        raise RuntimeError("cp -a did not copy %s faithfully: %s" % (src, c.lines[:3]))


def write_then_read(env, name, writer, reader, snap):
    """writer runs the workload on a fresh upper, reader mounts it after."""
    upper, work = env.dirs(name)
    mw = env.mnt(writer, upper, work)
    mw.mount()
    try:
        steps = workload(mw.mnt, keep_open=False)
        before = merged_walk(mw.mnt, NEVER_RECENT)
    finally:
        mw.umount()
    failed = [s for s in steps.log if s[1].startswith("exc")]
    copy_tree(upper, snap)
    log0 = dmesg_lines()
    after, err = view(env.mnt(reader, upper, work))
    msgs = overlay_msgs(log0) if reader == "kernel" else []
    if after is None:
        return ["%s refused to mount the upper %s wrote: %s" % (reader, writer, err)], msgs
    probs = diff_views(before, after, writer + "-before-umount", reader)
    probs += ["workload step %s raised %s" % s for s in failed[:3]]
    return probs, msgs


def upper_alone(env, name, snap):
    """A copy of snap with a fresh workdir for each implementation."""
    res = {}
    log0 = dmesg_lines()
    for kind in ("kernel", "stratafs"):
        d = os.path.join(env.root, "%s-%s" % (name, kind))
        os.makedirs(d)
        upper, work = os.path.join(d, "upper"), os.path.join(d, "work")
        copy_tree(snap, upper)
        os.mkdir(work)
        res[kind] = view(env.mnt(kind, upper, work))
        if kind == "kernel":
            kmsgs = overlay_msgs(log0)
    (wk, ek), (ws, es) = res["kernel"], res["stratafs"]
    if wk is None and ws is None:
        return [], kmsgs, "both refuse (kernel: %s)" % ek
    if wk is None:
        return ["the kernel refuses (%s) but stratafs mounts" % ek], kmsgs, ""
    if ws is None:
        return ["the kernel mounts but stratafs refuses: %s" % es], kmsgs, ""
    return diff_views(wk, ws, "kernel", "stratafs"), kmsgs, "both mount"


def workload2(mnt):
    """More changes on top of the workload's result (for case d)."""
    p = lambda rel: os.path.join(mnt, rel)  # noqa: E731
    with open(p("hl/p2"), "ab") as fh:             # the other name of the indexed pair
        fh.write(b" + via p2")
    os.rename(p("dest/twice2"), p("merged/twice3"))  # a third rename of a redirected dir
    os.rename(p("ren/dir_lower3"), p("dest/dl4"))
    os.unlink(p("hl/r3"))
    os.link(p("hl2/q2"), p("dest/q3"))
    os.chmod(p("files/small"), 0o600)
    os.setxattr(p("files/xa"), "user.k", b"kernel")
    os.rmdir(p("emptydir"))
    with open(p("merged/sub/deep/file"), "r+b") as fh:
        fh.write(b"KERNEL")
    shutil.rmtree(p("tarx/d3"))
    os.mkdir(p("tarx/d3"))
    os.utime(p("files/small"), ns=(1_234_000_000 * 10**9, 1_234_000_000 * 10**9))


def case_d(env):
    upper, work = env.dirs("d")
    ms = env.mnt("stratafs", upper, work)
    ms.mount()
    try:
        workload(ms.mnt, keep_open=False)
    finally:
        ms.umount()
    mk = env.mnt("kernel", upper, work)
    mk.mount()
    try:
        workload2(mk.mnt)
        wk = merged_walk(mk.mnt, NEVER_RECENT)
    finally:
        mk.umount()
    ws, err = view(env.mnt("stratafs", upper, work))
    if ws is None:
        return ["stratafs refused to mount: %s" % err]
    return diff_views(wk, ws, "kernel", "stratafs")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stratafs", default="build/stratafs")
    ap.add_argument("--extra-opts", default=os.environ.get("STRATAFS_EXTRA_OPTS", ""),
                    help="appended to the stratafs -o")
    ap.add_argument("--keep", action="store_true", help="keep the scratch dir")
    ap.add_argument("--timeout", type=int, default=170, help="abort our FUSE mounts after this many seconds")
    args = ap.parse_args()
    if os.geteuid() != 0:
        ap.error("must run as root")
    binary = os.path.abspath(args.stratafs)
    t0 = time.time()
    wd = None
    root = tempfile.mkdtemp(prefix="strata-wt-interop-", dir="/tmp")
    try:
        if not os.access(binary, os.X_OK):
            raise RuntimeError("stratafs binary %s not found" % binary)
        env = Env(root, binary, args.extra_opts)
        wd = watchdog(root, args.timeout, lambda: report("watchdog", ["timeout after %ds" % args.timeout]))
        snaps = {w: os.path.join(root, "snap-" + w) for w in ("kernel", "stratafs")}
        km = {}
        for name, writer, reader in (("a: stratafs writes, kernel reads", "stratafs", "kernel"),
                                     ("b: kernel writes, stratafs reads", "kernel", "stratafs")):
            try:
                probs, km[writer] = write_then_read(env, name[0], writer, reader, snaps[writer])
            except Exception as e:  # noqa: BLE001
                probs = ["%s: %s" % (type(e).__name__, e)]
            report(name, probs)
        for writer in ("stratafs", "kernel"):
            name = "c: upper written by %s alone, fresh workdir" % writer
            try:
                if not os.path.isdir(snaps[writer]):
                    raise RuntimeError("no upper from case a/b")
                probs, msgs, how = upper_alone(env, "c-" + writer, snaps[writer])
                if how:
                    print("# %s: %s" % (name, how))
                km["c-" + writer] = msgs
            except Exception as e:  # noqa: BLE001
                probs = ["%s: %s" % (type(e).__name__, e)]
            report(name, probs)
        try:
            probs = case_d(env)
        except Exception as e:  # noqa: BLE001
            probs = ["%s: %s" % (type(e).__name__, e)]
        report("d: stratafs writes, kernel modifies, stratafs reads", probs)
        # kernel messages: only those a kernel-written upper does not cause
        for own, ref in (("stratafs", "kernel"), ("c-stratafs", "c-kernel")):
            if own not in km:
                continue
            extra = [m for m in km[own] if m not in km.get(ref, [])]
            report("kernel logs no overlayfs complaints mounting a stratafs upper (%s)" %
                   ("case a" if own == "stratafs" else "case c"), ["dmesg: " + m for m in extra])
    except Exception as e:  # noqa: BLE001
        report("setup", ["%s: %s" % (type(e).__name__, e)])
    finally:
        if wd:
            wd.cancel()
        os.chdir("/")
        for m in mounted:
            try:
                m.umount()
            except Exception as e:  # noqa: BLE001
                print("# umount %s: %s" % (m.mnt, e))
        still = [m.mnt for m in mounted if is_mounted(m.mnt)]
        if still:
            report("cleanup", ["still mounted: %s" % still])
        elif args.keep:
            print("# kept %s" % root)
        else:
            shutil.rmtree(root, ignore_errors=True)
    return summary(t0)


if __name__ == "__main__":
    sys.exit(main())
