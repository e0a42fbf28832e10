"""Summary table of the quickstart (ops/quickstart.sh): test-split scores of the trained ITHN
model beside two baselines on the same test set —
  * most-frequent: the most frequent (cleaned) train report, predicted for every test study;
  * no-ITHN: the same run with the contrastive and cosine weights set to 0.
Scores of the baseline come from `ithn-dist score` (the project's pycocoevalcap-identical scorer);
the trained runs' test scores come from their `metrics.jsonl` ("kind": "test").
"""
import argparse, collections, glob, json, os, subprocess, sys, tempfile

import pyarrow.parquet as pq

KEYS = ["BLEU_1", "BLEU_2", "BLEU_3", "BLEU_4", "METEOR", "ROUGE_L", "CIDEr"]


def rows(prepared, split):
    out = []
    for f in sorted(glob.glob(os.path.join(prepared, f"{split}-*.parquet"))):
        t = pq.read_table(f, columns=["id", "report"])
        out += list(zip(t.column("id").to_pylist(), t.column("report").to_pylist()))
    if not out:
        sys.exit(f"no {split} shards in {prepared}")
    return out


def test_scores(run_dir):
    path = os.path.join(run_dir, "metrics.jsonl")
    last = None
    with open(path) as f:
        for n, line in enumerate(f, 1):
            rec = json.loads(line)
            if rec.get("kind") == "test":
                last = rec
    if last is None:
        sys.exit(f"{path}: no test scores")
    return last


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--qs", required=True)
    a = ap.parse_args()
    prepared = os.path.join(a.qs, "prepared")
    train = rows(prepared, "train")
    test = rows(prepared, "test")
    counts = collections.Counter(r for _, r in train)
    frequent, n = counts.most_common(1)[0]
    with tempfile.TemporaryDirectory() as d:
        refs, hyps = os.path.join(d, "refs.jsonl"), os.path.join(d, "hyps.jsonl")
        with open(refs, "w") as fr, open(hyps, "w") as fh:
            for i, r in test:
                fr.write(json.dumps({"id": i, "report": r}) + "\n")
                fh.write(json.dumps({"id": i, "report": frequent}) + "\n")
        out = subprocess.run([a.bin, "score", "--refs", refs, "--hyps", hyps, "--json", "--no-meteor"],
                             check=True, capture_output=True, text=True).stdout
        base = json.loads(out)
    table = {
        "most-frequent train report": base,
        "R2GenCMN without ITHN terms": test_scores(os.path.join(a.qs, "no_ithn")),
        "R2GenCMN + ITHN (2 ranks)": test_scores(os.path.join(a.qs, "ithn")),
    }
    keys = [k for k in KEYS if all(k in v for v in table.values())]
    print(f"test split: {len(test)} studies; most frequent train report ({n}/{len(train)} studies): {frequent!r}")
    print(f"{'model':32s}" + "".join(f"{k:>9s}" for k in keys))
    for name, s in table.items():
        print(f"{name:32s}" + "".join(f"{s[k]:9.4f}" for k in keys))
    ours, b = table["R2GenCMN + ITHN (2 ranks)"], table["most-frequent train report"]
    verdict = all(ours[k] > b[k] for k in ("BLEU_4", "CIDEr"))
    print("ITHN model beats the most-frequent baseline on BLEU-4 and CIDEr:", "yes" if verdict else "NO")
    with open(os.path.join(a.qs, "summary.json"), "w") as f:
        json.dump({"most_frequent_report": frequent, "scores": table, "beats_baseline": verdict}, f, indent=1)


if __name__ == "__main__":
    main()
