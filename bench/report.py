#!/usr/bin/env python3
"""report.py RESULTS RUN_ID RSS - the table of medians for one bench run, with
ratios to the kernel overlay and to fuse-overlayfs, and the daemons' peak RSS."""
import collections
import statistics
import sys

results, run_id, rss_file = sys.argv[1:4]
vals = collections.defaultdict(list)
impls, rows = [], []
for line in open(results):
    rid, impl, _rep, wl, v = line.rstrip("\n").split("\t")
    if rid != run_id:
        continue
    vals[(impl, wl)].append(float(v))
    if impl not in impls:
        impls.append(impl)
    if wl not in rows:
        rows.append(wl)
med = {k: statistics.median(v) for k, v in vals.items()}
higher_better = {"randread_iops"}


def ratio(wl, impl, ref):
    a, b = med.get((impl, wl)), med.get((ref, wl))
    if a is None or b is None or b == 0:
        return "-"
    return "%.2fx" % (a / b)


print("workload".ljust(20) + "".join(i.rjust(16) for i in impls)
      + "  strata/kernel  strata/fuse-ovl")
for wl in rows:
    cells = "".join(("%.3f" % med[(i, wl)] if (i, wl) in med else "-").rjust(16) for i in impls)
    unit = " (IOPS)" if wl in higher_better else ""
    print((wl + unit).ljust(20) + cells + ratio(wl, "stratafs", "kernel").rjust(15)
          + ratio(wl, "stratafs", "fuse-overlayfs").rjust(17))
peak = collections.defaultdict(list)
for line in open(rss_file):
    impl, _rep, mib = line.rstrip("\n").split("\t")
    if mib != "-":
        peak[impl].append(float(mib))
if peak:
    print("daemon peak RSS (MiB): " + ", ".join(
        "%s %.1f" % (i, max(v)) for i, v in peak.items()))
print("seconds, medians; lower is better except IOPS")
