#!/usr/bin/env python3
"""test_options.py -- command-line, option and mount-path tests for stratafs.

Negative tests: every bad option set must make stratafs print exactly one
line on stderr, exit non-zero and leave the mountpoint unmounted
(checked in /proc/self/mountinfo).  Positive tests: escapes, relative paths,
the mount.fuse3 path (`mount -t fuse.stratafs`), unmount/SIGTERM ending the
daemon, fsname=, accepted generic options, the 500-layer limit.

Prints `ok - NAME` / `not ok - NAME: REASON` per test and ends with
`N passed, N failed`; exit status 1 if any test failed.

  test_options.py [--stratafs build/stratafs]      (root; Python 3.11 stdlib)
STRATAFS_EXTRA_OPTS is appended to every -o.
"""

import argparse
import ctypes
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rig import mountinfo, is_mounted  # noqa: E402
from tap import wait_for  # noqa: E402

EXTRA = os.environ.get("STRATAFS_EXTRA_OPTS", "")
BIN = None       # absolute path of stratafs
WORK = None      # temp dir of this run
results = []


class Fail(Exception):
    pass


def opts(o):
    return o + ("," + EXTRA if EXTRA else "") if o is not None else None


def run_strata(o, mnt, cwd=None, extra_args=()):
    """Run stratafs SOURCE MNT -o O; returns CompletedProcess."""
    cmd = [BIN, "stratafs", mnt]
    if o is not None:
        cmd += ["-o", opts(o)]
    cmd += list(extra_args)
    return run_files(cmd, cwd=cwd or WORK)


def run_files(cmd, **kw):
    """subprocess.run with stdout/stderr in temp files, so that a daemon that
    inherits them cannot block us; returns CompletedProcess with str output."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as errf:
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=errf, timeout=60, **kw)
        out.seek(0)
        errf.seek(0)
        p.stdout = out.read().decode(errors="replace")
        p.stderr = errf.read().decode(errors="replace")
    return p


def mountpoint(name):
    m = os.path.join(WORK, "m_" + name)
    os.makedirs(m, exist_ok=True)
    return m


def daemons(mnt):
    """pids of stratafs processes whose command line names mnt."""
    p = subprocess.run(["pgrep", "-f", re.escape(mnt)], capture_output=True, text=True)
    pids = []
    for tok in p.stdout.split():
        pid = int(tok)
        if pid == os.getpid():
            continue
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as fh:
                argv = fh.read().split(b"\0")
        except OSError:
            continue
        if any(b"stratafs" in a for a in argv[:2]) and mnt.encode() in argv:
            pids.append(pid)
    return pids


def gone(pid):
    try:
        with open("/proc/%d/stat" % pid) as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def umount(mnt):
    if is_mounted(mnt):
        if subprocess.run(["umount", mnt], capture_output=True).returncode != 0 or is_mounted(mnt):
            subprocess.run(["umount", "-l", mnt], capture_output=True)


def expect_refused(o, name, cwd=None):
    mnt = mountpoint(name)
    p = run_strata(o, mnt, cwd)
    try:
        lines = p.stderr.splitlines()
        if p.returncode == 0:
            raise Fail("exit status 0 (stderr: %r)" % p.stderr[:200])
        if len(lines) != 1 or not lines[0].strip():
            raise Fail("expected exactly one line on stderr, got %d: %r" % (len(lines), p.stderr[:300]))
        if is_mounted(mnt):
            raise Fail("mountpoint is mounted after the error")
    finally:
        umount(mnt)


def mount_ok(o, name, cwd=None, extra_args=()):
    mnt = mountpoint(name)
    p = run_strata(o, mnt, cwd, extra_args)
    if p.returncode != 0:
        raise Fail("exit status %d: %s" % (p.returncode, p.stderr.strip()[:300]))
    if not is_mounted(mnt):
        raise Fail("exit 0 but %s is not in mountinfo" % mnt)
    return mnt


def names(path):
    return sorted(os.listdir(path))


def test(name):
    def deco(fn):
        results.append((name, fn))
        return fn
    return deco


# -- fixtures -------------------------------------------------------------
def make_layers():
    """a (top), b, c: a whites out c/gone; plus odd names and a regular file."""
    for d in ("a", "b", "c", "c:olon", "co,mma", "many"):
        os.makedirs(os.path.join(WORK, d))
    for layer, fname, data in (("a", "fa", "a"), ("b", "fb", "b"), ("c", "fc", "c"), ("c", "gone", "c"),
                               ("b", "shared", "b"), ("c", "shared", "c"), ("c:olon", "fcolon", "x"),
                               ("co,mma", "fcomma", "y")):
        with open(os.path.join(WORK, layer, fname), "w") as fh:
            fh.write(data)
    os.mknod(os.path.join(WORK, "a", "gone"), 0o020000, os.makedev(0, 0))
    with open(os.path.join(WORK, "regular_file"), "w") as fh:
        fh.write("not a dir")
    for i in range(501):
        os.mkdir(os.path.join(WORK, "many", str(i)))
        with open(os.path.join(WORK, "many", str(i), "f%d" % i), "w") as fh:
            fh.write(str(i))


ABC = ["fa", "fb", "fc", "shared"]


def L(*names_):
    return ":".join(os.path.join(WORK, n) for n in names_)


# -- negative -------------------------------------------------------------
@test("empty lowerdir= is refused")
def _():
    expect_refused("lowerdir=", "empty")


@test("lowerdir=:a (empty first layer) is refused")
def _():
    expect_refused("lowerdir=:" + L("a"), "lead")


@test("lowerdir=a: (empty last layer) is refused")
def _():
    expect_refused("lowerdir=" + L("a") + ":", "trail")


@test("lowerdir=a::b:c (regular layer below a data-only layer) is refused")
def _():
    expect_refused("lowerdir=%s::%s:%s" % (L("a"), L("b"), L("c")), "mid")


@test("missing layer dir is refused")
def _():
    expect_refused("lowerdir=" + L("a", "does_not_exist"), "missing")


@test("regular file as a layer is refused")
def _():
    expect_refused("lowerdir=" + L("a", "regular_file"), "regfile")


@test("501 layers are refused")
def _():
    expect_refused("lowerdir=" + ":".join(str(i) for i in range(501)), "l501", cwd=os.path.join(WORK, "many"))


@test("unknown option bogus=1 is refused")
def _():
    expect_refused("lowerdir=%s,bogus=1" % L("a", "b"), "bogus")


@test("no lowerdir at all is refused")
def _():
    expect_refused("ro", "nolower")


@test("no -o at all is refused")
def _():
    expect_refused(None, "noopt")


@test("a single lowerdir without upperdir is refused")
def _():
    expect_refused("lowerdir=" + L("a"), "single")


# -- positive ---------------------------------------------------------------
@test("mounts and is live when stratafs returns; umount ends the daemon")
def _():
    mnt = mount_ok("lowerdir=" + L("a", "b", "c"), "basic")
    try:
        got = names(mnt)
        if got != ABC:
            raise Fail("merged dir lists %r, expected %r" % (got, ABC))
        with open(os.path.join(mnt, "shared")) as fh:
            if fh.read() != "b":
                raise Fail("shared does not come from the upper layer b")
        pids = daemons(mnt)
        if not pids:
            raise Fail("no stratafs daemon found with pgrep -f")
    finally:
        umount(mnt)
    if not wait_for(lambda: all(gone(p) for p in pids), 5):
        raise Fail("daemon %r still running 5s after umount" % pids)


@test("escaped colon \\: in a layer name")
def _():
    mnt = mount_ok("lowerdir=%s:%s" % (L("a"), os.path.join(WORK, "c\\:olon")), "colon")
    try:
        if names(mnt) != ["fa", "fcolon"]:
            raise Fail("lists %r" % names(mnt))
    finally:
        umount(mnt)


@test("escaped comma \\, in a layer name")
def _():
    mnt = mount_ok("lowerdir=%s:%s" % (os.path.join(WORK, "co\\,mma"), L("a")), "comma")
    try:
        if names(mnt) != ["fa", "fcomma"]:
            raise Fail("lists %r" % names(mnt))
    finally:
        umount(mnt)


@test("relative layer paths")
def _():
    mnt = mount_ok("lowerdir=a:b:c", "relative", cwd=WORK)
    try:
        if names(mnt) != ABC:
            raise Fail("lists %r" % names(mnt))
    finally:
        umount(mnt)


@test("lowerdir=a:b::c (data-only layer c) is accepted; c is not listed")
def _():
    mnt = mount_ok("lowerdir=%s:%s::%s" % (L("a"), L("b"), L("c")), "dataonly")
    try:
        if names(mnt) != ["fa", "fb", "shared"]:
            raise Fail("lists %r" % names(mnt))
    finally:
        umount(mnt)


@test("500 layers are accepted")
def _():
    mnt = mount_ok("lowerdir=" + ":".join(str(i) for i in range(500)), "l500", cwd=os.path.join(WORK, "many"))
    try:
        got = len(os.listdir(mnt))
        if got != 500:
            raise Fail("merged root has %d entries, expected 500" % got)
    finally:
        umount(mnt)


def kernel_accepts(o):
    """Does the kernel overlay mount with these options (read-only)?"""
    mnt = mountpoint("kernel")
    p = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", o, mnt], capture_output=True, text=True)
    umount(mnt)
    return p.returncode == 0


def plus_layers(*pairs):
    return ",".join("%s=%s" % (k, os.path.join(WORK, d)) for k, d in pairs)


@test("lowerdir+=a,lowerdir+=b,lowerdir+=c,datadir+=... is accepted, as the kernel's; a colon needs no escape")
def _():
    o = plus_layers(("lowerdir+", "a"), ("lowerdir+", "c:olon"), ("lowerdir+", "b"), ("datadir+", "c"))
    if not kernel_accepts(o):
        raise Fail("the kernel refuses %s" % o)
    mnt = mount_ok(o, "plus")
    try:
        if names(mnt) != ["fa", "fb", "fcolon", "shared"]:
            raise Fail("lists %r" % names(mnt))
    finally:
        umount(mnt)


@test("lowerdir+ after lowerdir=, a regular layer after datadir+, datadir+ alone: refused, as by the kernel")
def _():
    for tag, o in (("after", "lowerdir=%s,%s" % (L("a"), plus_layers(("lowerdir+", "b")))),
                   ("order", plus_layers(("lowerdir+", "a"), ("datadir+", "c"), ("lowerdir+", "b"))),
                   ("dataonly", plus_layers(("datadir+", "c"), ("datadir+", "b")))):
        if kernel_accepts(o):
            raise Fail("the kernel accepts %s" % o)
        expect_refused(o, "plus-" + tag)


def in_private_mount_ns(fn):
    """Run fn() in a forked child inside a private mount namespace; a Fail
    (or any error) in the child is re-raised here as Fail."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        msg = "ok"
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.unshare(0x00020000) != 0:          # CLONE_NEWNS
                raise Fail("unshare(CLONE_NEWNS): %s" % os.strerror(ctypes.get_errno()))
            subprocess.run(["mount", "--make-rprivate", "/"], check=True)
            fn()
        except Fail as e:
            msg = str(e)
        except BaseException as e:
            msg = "%s: %s" % (type(e).__name__, e)
        os.write(w, msg.encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as fh:
        msg = fh.read().decode(errors="replace")
    os.waitpid(pid, 0)
    if msg != "ok":
        raise Fail(msg or "child died")


@test("mount -t fuse.stratafs via mount.fuse3, umount ends the daemon")
def _():
    # mount(8) drops PATH from the environment of its helpers, so mount.fuse3
    # finds `stratafs` only on the default PATH: in a private mount namespace
    # a dir holding a stratafs symlink is bind-mounted over /usr/local/sbin.
    mnt = mountpoint("helper")
    bindir = os.path.join(WORK, "pathbin")
    os.makedirs(bindir, exist_ok=True)
    if not os.path.lexists(os.path.join(bindir, "stratafs")):
        os.symlink(BIN, os.path.join(bindir, "stratafs"))

    def body():
        subprocess.run(["mount", "--bind", bindir, "/usr/local/sbin"], check=True)
        env = dict(os.environ, PATH=os.path.dirname(BIN) + ":" + os.environ.get("PATH", "/usr/bin:/bin"))
        p = run_files(["mount", "-t", "fuse.stratafs", "stratafs", mnt, "-o", opts("lowerdir=" + L("a", "b", "c"))],
                      env=env, cwd=WORK)
        try:
            if p.returncode != 0:
                raise Fail("mount exit %d: %s" % (p.returncode, p.stderr.strip()[:300]))
            ent = [m for m in mountinfo() if m[0] == mnt]
            if not ent:
                raise Fail("not in mountinfo")
            if ent[-1][1] != "fuse.stratafs":
                raise Fail("fstype is %r, expected fuse.stratafs" % ent[-1][1])
            if names(mnt) != ABC:
                raise Fail("lists %r" % names(mnt))
            pids = daemons(mnt)
            if not pids:
                raise Fail("no stratafs daemon found with pgrep -f")
            u = subprocess.run(["umount", mnt], capture_output=True, text=True)
            if u.returncode != 0:
                raise Fail("umount failed: %s" % u.stderr.strip())
            if not wait_for(lambda: all(gone(x) for x in pids), 5):
                raise Fail("daemon %r still running 5s after umount" % pids)
        finally:
            umount(mnt)

    in_private_mount_ns(body)


@test("SIGTERM to the daemon unmounts and ends it")
def _():
    mnt = mount_ok("lowerdir=" + L("a", "b"), "sigterm")
    try:
        pids = daemons(mnt)
        if len(pids) != 1:
            raise Fail("expected one daemon, found %r" % pids)
        os.kill(pids[0], signal.SIGTERM)
        if not wait_for(lambda: not is_mounted(mnt), 5):
            raise Fail("still in mountinfo 5s after SIGTERM")
        if not wait_for(lambda: gone(pids[0]), 5):
            raise Fail("daemon still running 5s after SIGTERM")
    finally:
        umount(mnt)


@test("-f runs in the foreground and exits 0 after umount")
def _():
    mnt = mountpoint("foreground")
    cmd = [BIN, "stratafs", mnt, "-o", opts("lowerdir=" + L("a", "b")), "-f"]
    proc = subprocess.Popen(cmd, cwd=WORK, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        if not wait_for(lambda: is_mounted(mnt) or proc.poll() is not None, 10):
            raise Fail("not mounted after 10s")
        if proc.poll() is not None:
            raise Fail("exited with %d: %s" % (proc.returncode, proc.stderr.read().decode()[:300]))
        if names(mnt) != ["fa", "fb", "shared"]:
            raise Fail("lists %r" % names(mnt))
        subprocess.run(["umount", mnt], capture_output=True)
        try:
            rc = proc.wait(10)
        except subprocess.TimeoutExpired:
            raise Fail("still running 10s after umount")
        if rc != 0:
            raise Fail("exit status %d after umount" % rc)
    finally:
        umount(mnt)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


@test("io_uring=maybe is refused")
def _():
    expect_refused("lowerdir=%s,io_uring=maybe" % L("a", "b"), "uring_bad")


URING_PARAM = "/sys/module/fuse/parameters/enable_uring"


def with_uring_param(value, fn):
    """Run fn with the fuse module parameter enable_uring set to value."""
    with open(URING_PARAM) as f:
        saved = f.read().strip()
    with open(URING_PARAM, "w") as f:
        f.write(value)
    try:
        fn()
    finally:
        with open(URING_PARAM, "w") as f:
            f.write(saved)


def mount_without_offer(extra, tag):
    """Mount lowerdir=a:b plus extra while the kernel offers no io_uring: (listing, stderr)."""
    got = []

    def body():
        mnt = mountpoint(tag)
        p = run_strata("lowerdir=%s%s" % (L("a", "b"), extra), mnt)
        try:
            if p.returncode != 0 or not is_mounted(mnt):
                raise Fail("exit %d: %s" % (p.returncode, p.stderr.strip()[:200]))
            got.extend([names(mnt), p.stderr])
        finally:
            umount(mnt)
    with_uring_param("0", body)
    return got


@test("io_uring without the kernel's offer: a warning, the mount works over /dev/fuse")
def _():
    if not os.access(URING_PARAM, os.W_OK):
        return  # no FUSE over io_uring in this kernel: nothing to check
    listing, stderr = mount_without_offer(",io_uring", "uring_off")
    if "io_uring not offered" not in stderr:
        raise Fail("no warning on stderr: %r" % stderr[:200])
    if listing != ["fa", "fb", "shared"]:
        raise Fail("lists %r" % listing)


def ring_requests(extra, tag):
    """Mount with lowerdir=a:b plus extra and debug; the number of requests served on rings."""
    mnt = mountpoint(tag)
    with tempfile.TemporaryFile() as errf:
        proc = subprocess.Popen([BIN, "stratafs", mnt, "-o", opts("lowerdir=%s%s,debug" % (L("a", "b"), extra))],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errf)
        try:
            if not wait_for(lambda: is_mounted(mnt)):
                raise Fail("not mounted")
            if names(mnt) != ["fa", "fb", "shared"]:
                raise Fail("lists %r" % names(mnt))
            with open(os.path.join(mnt, "fa"), "rb") as fh:
                fh.read()
        finally:
            umount(mnt)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        errf.seek(0)
        log = errf.read().decode(errors="replace")
    if proc.returncode != 0:
        raise Fail("daemon exit status %d" % proc.returncode)
    return len([l for l in log.splitlines() if l.endswith("(io_uring)")])


@test("io_uring where the kernel offers it: requests arrive on the rings, by default too; io_uring=off stays on /dev/fuse")
def _():
    if not os.access(URING_PARAM, os.W_OK):
        return

    def body():
        for extra, want in ((",io_uring", True), ("", True), (",io_uring=off", False)):
            n = ring_requests(extra, "uring_on")
            if (n >= 3) != want:
                raise Fail("-o ...%s: %d requests over io_uring" % (extra, n))
    with_uring_param("1", body)


@test("without the kernel's offer and no io_uring option: no warning")
def _():
    if not os.access(URING_PARAM, os.W_OK):
        return
    stderr = mount_without_offer("", "uring_quiet")[1]
    if "io_uring" in stderr:
        raise Fail("a warning nobody asked for: %r" % stderr[:200])


@test("fsname=foo is the source in mountinfo")
def _():
    mnt = mount_ok("lowerdir=%s,fsname=foo" % L("a", "b"), "fsname")
    try:
        src = [m[2] for m in mountinfo() if m[0] == mnt]
        if src[-1:] != ["foo"]:
            raise Fail("source is %r" % src)
    finally:
        umount(mnt)


for _opt in ("rw", "ro", "dev", "suid", "exec", "lazytime", "noatime"):
    def _gen(o=_opt):
        def fn():
            mnt = mount_ok("lowerdir=%s,%s" % (L("a", "b"), o), "opt_" + o)
            try:
                if names(mnt) != ["fa", "fb", "shared"]:
                    raise Fail("lists %r" % names(mnt))
            finally:
                umount(mnt)
        return fn
    results.append(("option %s is accepted" % _opt, _gen()))


@test("rw,dev,suid,exec,lazytime,noatime together are accepted")
def _():
    mnt = mount_ok("rw,dev,suid,exec,lazytime,noatime,lowerdir=" + L("a", "b"), "allopts")
    umount(mnt)


@test("whiteout from the top layer hides the lower name")
def _():
    mnt = mount_ok("lowerdir=" + L("a", "c"), "whiteout")
    try:
        if "gone" in os.listdir(mnt) or os.path.lexists(os.path.join(mnt, "gone")):
            raise Fail("gone is visible")
    finally:
        umount(mnt)


# -- main -----------------------------------------------------------------
def main():
    global BIN, WORK
    ap = argparse.ArgumentParser(description="stratafs option and mount-path tests")
    ap.add_argument("--stratafs", default="build/stratafs")
    args = ap.parse_args()
    BIN = os.path.abspath(args.stratafs)
    if not os.access(BIN, os.X_OK):
        print("not ok - stratafs binary: %s not found" % BIN)
        print("0 passed, 1 failed")
        return 1
    WORK = tempfile.mkdtemp(prefix="opts-", dir="/tmp")
    passed = failed = 0
    try:
        make_layers()
        for name, fn in results:
            t0 = time.time()
            try:
                fn()
                print("ok - %s" % name, flush=True)
                passed += 1
            except Fail as e:
                print("not ok - %s: %s" % (name, e), flush=True)
                failed += 1
            except Exception as e:  # a crash of the test is a failure too
                print("not ok - %s: %s: %s" % (name, type(e).__name__, e), flush=True)
                failed += 1
            if time.time() - t0 > 20:
                print("# %s took %.0fs" % (name, time.time() - t0))
    finally:
        os.chdir("/")
        leftovers = [m[0] for m in mountinfo() if m[0].startswith(WORK + "/")]
        for m in leftovers:
            umount(m)
        for m in leftovers:
            for pid in daemons(m):          # only daemons this run started
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        if not any(m[0].startswith(WORK + "/") for m in mountinfo()):
            shutil.rmtree(WORK, ignore_errors=True)
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
