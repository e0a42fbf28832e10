#!/usr/bin/env python3
"""Reference side of `ithn-dist bench metrics`: score the same pairs with pycocoevalcap 1.2.

Usage: .venv/bin/python ops/bench/metrics_pycoco.py PAIRS.json OUT.json [--meteor]

PAIRS.json = {"refs": [str], "hyps": [str]}. The inputs are built as the reference trainer
builds them (gts = {i: [ref_i]}, res = {i: [hyp_i]}, integer keys in pair order, no PTB
tokenizer). OUT.json = {"times": {metric: wall seconds}, "cpu_times": {metric: process CPU seconds}, "scores": {key: corpus},
"per_item": {key: [per pair]}, "bits": {key: [corpus, per pair...]}}, where "bits" holds the
IEEE-754 bit patterns as integers so the Rust side can compare values exactly (JSON float
parsers are not all correctly rounded). Only the compute_score calls are timed.
"""
import json
import struct
import sys
import time

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge


def call(scorer, gts, res):
    # The reference passes verbose=0 where the scorer accepts it.
    try:
        return scorer.compute_score(gts, res, verbose=0)
    except TypeError:
        return scorer.compute_score(gts, res)


def to_bits(x):
    return struct.unpack("<Q", struct.pack("<d", float(x)))[0]


def main():
    pairs_path, out_path = sys.argv[1], sys.argv[2]
    with_meteor = "--meteor" in sys.argv[3:]
    with open(pairs_path) as f:
        pairs = json.load(f)
    gts = {i: [r] for i, r in enumerate(pairs["refs"])}
    res = {i: [h] for i, h in enumerate(pairs["hyps"])}
    times, cpu_times, scores, per_item = {}, {}, {}, {}

    def timed(key, fn):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        times[key] = time.perf_counter() - t
        cpu_times[key] = time.process_time() - c
        return out

    corpus, items = timed("BLEU", lambda: call(Bleu(4), gts, res))
    for k in range(4):
        scores[f"BLEU_{k + 1}"] = corpus[k]
        per_item[f"BLEU_{k + 1}"] = [float(x) for x in items[k]]

    if with_meteor:
        from pycocoevalcap.meteor.meteor import Meteor
        corpus, items = timed("METEOR", lambda: call(Meteor(), gts, res))
        scores["METEOR"] = corpus
        per_item["METEOR"] = [float(x) for x in items]

    for key, scorer in (("ROUGE_L", Rouge()), ("CIDEr", Cider())):
        corpus, items = timed(key, lambda: call(scorer, gts, res))
        scores[key] = float(corpus)
        per_item[key] = [float(x) for x in items]

    bits = {k: [to_bits(scores[k])] + [to_bits(x) for x in per_item[k]] for k in scores}
    with open(out_path, "w") as f:
        json.dump({"times": times, "cpu_times": cpu_times, "scores": scores, "per_item": per_item, "bits": bits}, f)


if __name__ == "__main__":
    main()
