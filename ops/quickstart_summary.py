"""Summary table of the quickstart (ops/quickstart.sh) and of the ablation (ops/ablation.sh).

For every model on the test split: BLEU-4, CIDEr, the number of distinct generated reports,
and clinical efficacy (CE, docs/clinical-efficacy.md) of its reports
  * against the phantom labels (`synth`'s findings.jsonl: what each image truly shows), and
  * against the reference reports (both labelled by the same rule-based labeler),
as micro-F1 over the 13 findings ("No Finding" left out: a constant normal report scores 0)
and micro-F1 over all 14 observations (R2Gen's convention).

Models: every `NAME=RUN_DIR` given (their `predictions-test.jsonl`, written by the trainer's
test pass), plus the most-frequent-report baseline (the most frequent cleaned train report,
predicted for every test study). References are the ones the trainer scores against (the
decoded report ids of the first run's predictions, as R2Gen's trainer does), for every row. Scores come from `ithn-dist score --ce --ce-labels`, so they
are exactly what `score` and `evaluate` report; each model's score JSON is written to
OUT/scores-NAME.json (inputs of `plot --ce`). With `--probe FILE` (ops/probe.py cnn --out),
the direct classifier's figures are printed beside the models'.
"""
import argparse, collections, glob, json, os, subprocess, sys

import pyarrow.parquet as pq


def rows(prepared, split):
    out = []
    for f in sorted(glob.glob(os.path.join(prepared, f"{split}-*.parquet"))):
        t = pq.read_table(f, columns=["id", "report"])
        out += list(zip(t.column("id").to_pylist(), t.column("report").to_pylist()))
    if not out:
        sys.exit(f"no {split} shards in {prepared}")
    return out


def predictions(run_dir):
    path = os.path.join(run_dir, "predictions-test.jsonl")
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except OSError as e:
        sys.exit(f"{path}: {e} (did the run finish its test pass?)")


def write_jsonl(path, items):
    with open(path, "w") as f:
        for i, r in items:
            f.write(json.dumps({"id": i, "report": r}) + "\n")


def score(binary, refs, hyps, labels, out):
    res = subprocess.run([binary, "score", "--refs", refs, "--hyps", hyps, "--json", "--no-meteor",
                          "--ce", "--ce-labels", labels], check=True, capture_output=True, text=True)
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        f.write(res.stdout)
    os.replace(tmp, out)
    return json.loads(res.stdout)


def figures(s, hyps):
    return {
        "BLEU_4": s["BLEU_4"], "CIDEr": s["CIDEr"], "distinct_reports": len(set(hyps)),
        "CE_F1_findings_vs_phantom": s["ce_vs_labels"]["micro_findings"]["f1"],
        "CE_F1_micro14_vs_phantom": s["ce_vs_labels"]["micro"]["f1"],
        "CE_F1_findings_vs_reports": s["ce"]["micro_findings"]["f1"],
        "CE_F1_micro14_vs_reports": s["ce"]["micro"]["f1"],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--prepared", required=True)
    ap.add_argument("--labels", required=True, help="synth's findings.jsonl (phantom labels)")
    ap.add_argument("--out", required=True, help="directory for scores-*.json and summary.json")
    ap.add_argument("--probe", help="ops/probe.py cnn --out JSON (the direct classifier)")
    ap.add_argument("runs", nargs="+", metavar="NAME=RUN_DIR")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    train, test = rows(a.prepared, "train"), rows(a.prepared, "test")
    frequent, n = collections.Counter(r for _, r in train).most_common(1)[0]
    runs = []
    for spec in a.runs:
        name, _, run_dir = spec.partition("=")
        if not run_dir:
            sys.exit(f"`{spec}`: expected NAME=RUN_DIR")
        runs.append((name, predictions(run_dir)))
    refs = os.path.join(a.out, "refs-test.jsonl")
    write_jsonl(refs, [(p["id"], p["reference"]) for p in runs[0][1]])
    table = {}
    models = [("most-frequent", [(i, frequent) for i, _ in test])]
    models += [(name, [(p["id"], p["prediction"]) for p in preds]) for name, preds in runs]
    for name, hyps in models:
        path = os.path.join(a.out, f"hyps-{name}.jsonl")
        write_jsonl(path, hyps)
        s = score(a.bin, refs, path, a.labels, os.path.join(a.out, f"scores-{name}.json"))
        table[name] = figures(s, [h for _, h in hyps])
    print(f"test split: {len(test)} studies; most frequent train report ({n}/{len(train)}): {frequent!r}")
    print("CE = clinical efficacy, micro-F1 of the labeler's positive findings; 'findings' leaves"
          " out No Finding (a constant normal report scores 0 there)")
    cols = [("BLEU_4", "BLEU-4"), ("CIDEr", "CIDEr"), ("distinct_reports", "distinct"),
            ("CE_F1_findings_vs_phantom", "CE-find/img"), ("CE_F1_micro14_vs_phantom", "CE-14/img"),
            ("CE_F1_findings_vs_reports", "CE-find/ref"), ("CE_F1_micro14_vs_reports", "CE-14/ref")]
    print(f"{'model':24s}" + "".join(f"{h:>13s}" for _, h in cols))
    for name, f in table.items():
        print(f"{name:24s}" + "".join(f"{f[k]:13d}" if isinstance(f[k], int) else f"{f[k]:13.4f}" for k, _ in cols))
    probe = None
    if a.probe:
        with open(a.probe) as f:
            probe = json.load(f)
        print(f"{'CNN probe (classifier)':24s}{'':39s}{probe['micro_f1_findings']:13.4f}{probe['micro_f1_14']:13.4f}"
              "   (direct classifier of the phantom labels, same images and epochs)")
    summary = {"most_frequent_report": frequent, "test_studies": len(test), "models": table, "probe": probe}
    tmp = os.path.join(a.out, "summary.json.tmp")
    with open(tmp, "w") as f:
        json.dump(summary, f, indent=1)
    os.replace(tmp, os.path.join(a.out, "summary.json"))


if __name__ == "__main__":
    main()
