"""Writes a small R2Gen annotation (the first N train records, N/8 val and N/8 test) for the GPU
check's phantom data: enough for a loader benchmark and a 1-epoch tiny training in seconds.

usage: small_ann.py ANNOTATION OUT N
"""
import json
import sys

src, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
ann = json.load(open(src))
keep = {"train": n, "val": max(n // 8, 4), "test": max(n // 8, 4)}
small = {split: ann[split][: keep[split]] for split in ("train", "val", "test")}
with open(out, "w") as f:
    json.dump(small, f)
print({k: len(v) for k, v in small.items()})
