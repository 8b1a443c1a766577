#!/usr/bin/env python3
"""test_crash_points.py -- stratafs killed at exact points between two syscalls.

strace stalls the daemon right at one syscall of an operation (delay
injection), the test kills it there with SIGKILL, lazily unmounts, mounts
stratafs again on the same upper/work and checks the state against what
the operation may leave (old or new state, never a third), then mounts the
kernel overlay on the same upper and compares.  Each case is a crash point
found by test_crash_workload.py and fixed:

  rename-over-empty-dir  killed after the first RENAME_EXCHANGE of a dir
                         renamed over an empty merged dir: the target must
                         keep its mode and xattrs (the swap copies them)
  index-before-link      index=on: killed after a lower hard link was copied
                         into workdir/index, before its name was linked: the
                         unused entry (overlay.nlink "L+0") stays, both names
                         keep st_nlink 2, as under the kernel
  index-after-link       index=on: killed after the first name of a lower
                         hard link was linked to its index entry: the entry
                         has its overlay.nlink already (the kernel warns
                         "failed to get index nlink" at mount otherwise)
  index-unlink           index=on: killed after the whiteout took the place of
                         one name of a lower hard link: the other name counts
                         1 (or both 2, if the removal did not happen)

Skipped (counted as passed, with a note) without strace.  Prints
`ok - NAME` / `not ok - NAME: REASON`, then `N passed, N failed`.

  test_crash_points.py [--stratafs build/stratafs]
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rig import is_mounted  # noqa: E402
from tap import report, results, summary  # noqa: E402


def wait_mounted(mnt, secs=5.0):
    end = time.time() + secs
    while time.time() < end:
        if is_mounted(mnt):
            return True
        time.sleep(0.05)
    return False


def umount(mnt, lazy=False):
    if is_mounted(mnt):
        subprocess.run(["umount"] + (["-l"] if lazy else []) + [mnt], capture_output=True)


def killed_at(binary, root, opts, syscall, when, action, inject="delay_exit"):
    """Mount in the foreground, stall the daemon at its when-th `syscall`,
    run action() in a child, kill the daemon, lazily unmount."""
    mnt = os.path.join(root, "m")
    daemon = subprocess.Popen([binary, "stratafs", mnt, "-o", opts, "-f"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not wait_mounted(mnt):
            raise RuntimeError("stratafs did not mount")
        tracer = subprocess.Popen(["strace", "-f", "-qq", "-o", os.path.join(root, "strace.log"),
                                   "-p", str(daemon.pid), "-e", "trace=" + syscall, "-e",
                                   "inject=%s:%s=3000000:when=%d" % (syscall, inject, when)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        pid = os.fork()
        if pid == 0:
            try:
                action(mnt)
            except OSError:
                pass
            os._exit(0)
        time.sleep(1.0)
        daemon.send_signal(signal.SIGKILL)
        daemon.wait()
        os.waitpid(pid, 0)
        tracer.terminate()
        tracer.wait()
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        umount(mnt, lazy=True)


def mount_stratafs(binary, mnt, opts):
    p = subprocess.run([binary, "stratafs", mnt, "-o", opts], capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError("remount failed: " + p.stderr.strip())


def make_stack(root, lower_dir, lower_file, text, extra=""):
    """l/ (with lower_dir and lower_file holding text), u/, w/, m/ under root; the -o string."""
    for d in ("l/" + lower_dir, "u", "w", "m"):
        os.makedirs(os.path.join(root, d))
    with open(os.path.join(root, "l", lower_file), "w") as f:
        f.write(text)
    return "lowerdir=%s/l,upperdir=%s/u,workdir=%s/w%s" % (root, root, root, extra)


def case_rename_over_empty_dir(binary, root):
    probs = []
    opts = make_stack(root, "target", "target/x", "low\n")
    m = os.path.join(root, "m")
    mount_stratafs(binary, m, opts)
    os.unlink(m + "/target/x")               # target: a merged dir that looks empty
    os.mkdir(m + "/src")
    os.chmod(m + "/target", 0o751)
    os.setxattr(m + "/target", "user.tag", b"hello")
    umount(m)
    killed_at(binary, root, opts, "renameat2", 1, lambda mnt: os.rename(mnt + "/src", mnt + "/target"))
    mount_stratafs(binary, m, opts)
    try:
        st = os.stat(m + "/target")
        moved = not os.path.exists(m + "/src")
        tag = os.getxattr(m + "/target", "user.tag") if not moved else None
        if not moved and (st.st_mode & 0o7777 != 0o751 or tag != b"hello"):
            probs.append("old target shows mode %o, user.tag %r (want 751, b'hello')"
                         % (st.st_mode & 0o7777, tag))
        if os.listdir(root + "/w/work"):
            probs.append("work/work not empty after remount: %r" % os.listdir(root + "/w/work"))
    finally:
        umount(m)
    return probs


def kernel_messages():
    p = subprocess.run(["dmesg"], capture_output=True, text=True)
    return p.stdout.splitlines() if p.returncode == 0 else None


def index_case(binary, root, syscall, inject, when=1, remove=False):
    """Append to (or remove) a lower hard link, index=on, killed at syscall."""
    probs = []
    opts = make_stack(root, "d1", "a", "hello\n", ",index=on")
    os.link(os.path.join(root, "l/a"), os.path.join(root, "l/d1/b"))
    m = os.path.join(root, "m")

    def append(mnt):
        with open(mnt + "/a", "a") as f:
            f.write("x\n")

    def links(mnt):
        names = [mnt + "/a", mnt + "/d1/b"]
        return [os.stat(n).st_nlink for n in names if os.path.exists(n)]
    action = (lambda mnt: os.unlink(mnt + "/a")) if remove else append
    killed_at(binary, root, opts, syscall, when, action, inject=inject)
    mount_stratafs(binary, m, opts)
    try:
        got = links(m)
        with open(m + "/d1/b") as f:
            content = f.read()
    finally:
        umount(m)
    if got not in ([2, 2], [1]) if remove else got != [2, 2]:
        probs.append("st_nlink of the names left: %r" % got)
    if content not in ("hello\n", "hello\nx\n"):
        probs.append("content of d1/b: %r" % content)
    before = kernel_messages()
    if subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, m], capture_output=True).returncode:
        probs.append("the kernel overlay does not mount the upper")
    else:
        try:
            kgot = links(m)
            if kgot != got:
                probs.append("kernel st_nlink %r, stratafs %r" % (kgot, got))
        finally:
            umount(m)
    after = kernel_messages()
    if before is not None and after is not None:
        probs += ["dmesg: " + line for line in after[len(before):] if "overlayfs" in line]
    return probs


def case_index_before_link(binary, root):
    return index_case(binary, root, "linkat", "delay_enter")


def case_index_after_link(binary, root):
    return index_case(binary, root, "linkat", "delay_exit")


def case_index_unlink(binary, root):
    return index_case(binary, root, "renameat2", "delay_exit", when=2, remove=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stratafs", default="build/stratafs")
    args = ap.parse_args()
    binary = os.path.abspath(args.stratafs)
    cases = [("rename-over-empty-dir", case_rename_over_empty_dir),
             ("index-before-link", case_index_before_link),
             ("index-after-link", case_index_after_link),
             ("index-unlink", case_index_unlink)]
    for name, fn in cases:
        if not shutil.which("strace"):
            print("# %s: no strace here, skipped" % name)
            results.append(True)
            continue
        root = tempfile.mkdtemp(prefix="strata-crashpt-")
        try:
            report(name, fn(binary, root))
        except (OSError, RuntimeError) as e:
            report(name, ["%s: %s" % (type(e).__name__, e)])
        finally:
            umount(os.path.join(root, "m"), lazy=True)
            shutil.rmtree(root, ignore_errors=True)
    sys.exit(summary())


if __name__ == "__main__":
    main()
