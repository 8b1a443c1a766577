#!/usr/bin/env python3
"""meta.py DIR N - create, stat and unlink N empty files in DIR (a metadata-heavy loop)."""
import os
import sys

d, n = sys.argv[1], int(sys.argv[2])
os.makedirs(d, exist_ok=True)
names = [os.path.join(d, "f%05d" % i) for i in range(n)]
for p in names:
    os.close(os.open(p, os.O_CREAT | os.O_WRONLY, 0o644))
for p in names:
    os.stat(p)
for p in names:
    os.unlink(p)
