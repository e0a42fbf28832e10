"""Renders the GPU check's figures (ops/gpu/check.sh) as OUTDIR/summary.md and summary.json.

usage: summarize.py RESULTS_TSV OUTDIR DRY

RESULTS_TSV has one `part<TAB>key<TAB>value` line per figure; the part logs beside it
(parity.json, world.json) add the parity and NCCL details. Standard library only.
"""
import datetime
import json
import os
import platform
import sys


def load(path):
    rows = []
    for line in open(path):
        parts = line.rstrip("\n").split("\t", 2)
        if len(parts) == 3:
            rows.append(parts)
    return rows


def step_rows(rows):
    out = []
    for part, key, value in rows:
        if part != "bench-step" or "/" not in key:
            continue
        prec, batch = key.split("/")
        fields = dict(kv.split("=", 1) for kv in value.split(" ", 2)[:2] if "=" in kv)
        flops = {}
        brace = value.find("{")
        if brace >= 0:
            try:
                flops = json.loads(value[brace:])
            except ValueError:
                pass
        out.append({
            "precision": prec,
            "batch": int(batch),
            "samples_per_s": _num(fields.get("rate")),
            "peak_mib": _num(fields.get("peak_mib")),
            "train_gflop_per_sample": flops.get("train", 0) / 1e9 or None,
            "achieved_tflops": flops.get("achieved_tflops"),
            "mfu": flops.get("mfu"),
        })
    return out


def _num(s):
    try:
        return float(s)
    except (TypeError, ValueError):
        return None


def fmt(x, spec):
    return "–" if x is None else format(x, spec)


def parity_summary(logs):
    path = os.path.join(logs, "parity.json")
    if not os.path.exists(path):
        return None
    report = json.load(open(path))
    groups = {}
    for c in report["checks"]:
        g = groups.setdefault(c["against"], {"checks": 0, "failed": 0, "worst_rel_l2": 0.0})
        g["checks"] += 1
        g["failed"] += 0 if c["ok"] else 1
        if c["rel_l2"] is not None:
            g["worst_rel_l2"] = max(g["worst_rel_l2"], c["rel_l2"])
    return {"device": report["device"], "failed": report["failed"], "groups": groups,
            "failures": [f'{c["against"]}:{c["name"]}' for c in report["checks"] if not c["ok"]][:20]}


def main(results, outdir, dry):
    rows = load(results)
    logs = os.path.dirname(results)
    status = {}
    for part, key, value in rows:
        status.setdefault(part, {})[key] = value
    steps = step_rows(rows)
    best = max((s["samples_per_s"] or 0 for s in steps), default=0)
    loader = _num(status.get("bench-loader", {}).get("images_per_s"))
    summary = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "host": platform.node(),
        "dry_run": dry == "1",
        "parts": status,
        "bench_step": steps,
        # Each training sample reads a positive and a negative image (one view each here).
        "step_demand_images_per_s": 2 * best if best else None,
        "loader_images_per_s": loader,
        "parity": parity_summary(logs),
    }
    world = os.path.join(logs, "world.json")
    if os.path.exists(world):
        summary["world"] = json.load(open(world))
    md = [f"# GPU check {summary['date_utc']} UTC on {summary['host']}"
          + (" (DRY RUN: CPU side only)" if summary["dry_run"] else ""), "",
          "| part | status | seconds | figures |", "|---|---|---|---|"]
    for part, kv in status.items():
        figs = "; ".join(f"{k}={v}" for k, v in kv.items()
                         if k not in ("status", "seconds") and part != "bench-step")
        md.append(f"| {part} | {kv.get('status', '')} | {kv.get('seconds', '')} | {figs} |")
    if summary["parity"]:
        p = summary["parity"]
        md += ["", f"Parity on {p['device']}: {p['failed']} failed; "
               + "; ".join(f"vs {k}: {g['checks']} checks, {g['failed']} failed, worst rel-L2 {g['worst_rel_l2']:.2e}"
                           for k, g in p["groups"].items())]
        if p["failures"]:
            md.append("Failures: " + ", ".join(p["failures"]))
    if steps:
        md += ["", "| precision | global batch | samples/s | peak GPU MiB | GFLOP/sample (train) | TFLOP/s | MFU vs 790 |",
               "|---|---|---|---|---|---|---|"]
        for s in steps:
            md.append(f"| {s['precision']} | {s['batch']} | {fmt(s['samples_per_s'], '.1f')} | {fmt(s['peak_mib'], '.0f')} | "
                      f"{fmt(s['train_gflop_per_sample'], '.1f')} | {fmt(s['achieved_tflops'], '.1f')} | {fmt(s['mfu'], '.1%')} |")
    if loader is not None and best:
        md += ["", f"Loader: {loader:.0f} images/s vs the fastest step's demand {2 * best:.0f} images/s "
               f"({loader / (2 * best):.2f}×)"]
    with open(os.path.join(outdir, "summary.json.tmp"), "w") as f:
        json.dump(summary, f, indent=1)
    os.replace(os.path.join(outdir, "summary.json.tmp"), os.path.join(outdir, "summary.json"))
    with open(os.path.join(outdir, "summary.md.tmp"), "w") as f:
        f.write("\n".join(md) + "\n")
    os.replace(os.path.join(outdir, "summary.md.tmp"), os.path.join(outdir, "summary.md"))


if __name__ == "__main__":
    main(*sys.argv[1:4])
