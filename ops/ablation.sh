#!/usr/bin/env bash
# ITHN vs no-ITHN over several seeds on the phantom data (issue 15, build item 4). Not part of
# the quickstart: it trains 2 × SEEDS runs of configs/quickstart.toml (frozen pretrained
# extractor: the quickstart's CNN probe weights, trained once here when the quickstart's are
# missing, and shared by every run; the seed varies the report generator's init, order and draws).
#   bash ops/ablation.sh            # seeds 1 2 3, NP=2 ranks, into runs/ablation/
#   SEEDS="1 2 3 4 5" NP=1 AB_DIR=runs/ab bash ops/ablation.sh
# Prints mean ± sd over seeds of BLEU-4, CIDEr, distinct reports and CE F1 (findings micro-F1
# against the phantom labels and against the reference reports) for each variant, beside the
# most-frequent-report baseline; writes AB_DIR/ablation.json. Data: the quickstart's prepared
# phantoms when QS_DIR (default runs/quickstart) has them, else synthesised here. A finished
# run is not trained again (its predictions-test.jsonl is reused), so an interrupted ablation
# resumes where it stopped.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
start=$(date +%s)
bash ops/setup.sh
source ops/env.sh
AB="${AB_DIR:-runs/ablation}"
QS="${QS_DIR:-runs/quickstart}"
NP="${NP:-2}"
# Extra config overrides for every training run, e.g. QS_SET="train.epochs=10 train.lr_ed=1e-3"
# (space-separated KEY=VALUE, each passed as --set; default none: configs/quickstart.toml as is).
user_set=()
for kv in ${QS_SET:-}; do user_set+=(--set "$kv"); done
SEEDS="${SEEDS:-1 2 3}"
CFG=configs/quickstart.toml
step() { printf '\n==== %s (%ss)\n' "$*" "$(( $(date +%s) - start ))"; }

step "build"
cargo build --quiet --bin ithn-dist
B="$ITHN_BIN"
mkdir -p "$AB"
if [ -f "$QS/prepared/manifest.json" ] && [ -f "$QS/images/findings.jsonl" ]; then
  DATA="$QS"
else
  DATA="$AB"
  SIZE=$(sed -n 's/^resize *= *\([0-9]*\).*/\1/p' "$CFG" | head -1)
  step "synthesize and prepare phantoms"
  "$B" synth --ann data/iu_xray/annotation.json --out "$AB/images" --size "$SIZE"
  "$B" prepare --source r2gen --dataset iu_xray --ann data/iu_xray/annotation.json \
    --images "$AB/images" --out "$AB/prepared" --resize "$SIZE"
fi

# The extractor every run shares: one made here before, else the quickstart's, else train it.
VE="$AB/visual_extractor.safetensors"
if [ ! -f "$VE" ] && [ -f "$DATA/visual_extractor.safetensors" ]; then
  VE="$DATA/visual_extractor.safetensors"
elif [ ! -f "$VE" ]; then
  step "pretrain the extractor (CNN probe on the train split's labels)"
  .venv/bin/python ops/probe.py cnn --images "$DATA/images" --config "$CFG" --epochs 4 --lr 1e-3 \
    --out "$AB/probe.json" --save "$VE" --threads "$NP" | tail -4
fi
# A finished run is reused only when it was trained with this config, extractor and overrides.
KEY="$CFG $(sha256sum "$CFG" "$VE" | cut -c1-16 | tr '\n' ' ')${QS_SET:-}"

runs=()
for seed in $SEEDS; do
  for variant in ithn no_ithn; do
    dir="$AB/$variant-seed$seed"
    runs+=("$variant-seed$seed=$dir")
    if [ -f "$dir/predictions-test.jsonl" ] && [ "$(cat "$dir/ablation-key" 2>/dev/null)" = "$KEY" ]; then
      step "$variant seed $seed: done before, reusing $dir"
      continue
    fi
    extra=()
    [[ $variant == no_ithn ]] && extra=(--set ithn.w_cp=0 --set ithn.w_cs=0)
    step "train $variant, seed $seed, on $NP ranks"
    bash launch/mpirun.sh "$NP" train --config "$CFG" --set "data.prepared=$DATA/prepared" \
      --set "train.seed=$seed" --set "model.visual_weights=$VE" "${extra[@]}" "${user_set[@]}" \
      --run-dir "$dir" --resume never
    echo "$KEY" > "$dir/ablation-key"
  done
done

step "score every run (test split)"
.venv/bin/python ops/quickstart_summary.py --bin "$B" --prepared "$DATA/prepared" \
  --labels "$DATA/images/findings.jsonl" --out "$AB/scores" "${runs[@]}" > "$AB/runs.txt"
cat "$AB/runs.txt"

step "mean ± sd over seeds ($SEEDS)"
.venv/bin/python - "$AB" <<'PY'
import json, os, statistics, sys
ab = sys.argv[1]
models = json.load(open(os.path.join(ab, "scores", "summary.json")))["models"]
keys = [("BLEU_4", "BLEU-4"), ("CIDEr", "CIDEr"), ("distinct_reports", "distinct"),
        ("CE_F1_findings_vs_phantom", "CE-F1 findings vs image"),
        ("CE_F1_findings_vs_reports", "CE-F1 findings vs report")]
groups = {}
for name, f in models.items():
    groups.setdefault(name.split("-seed")[0], []).append(f)
table = {}
for g, fs in groups.items():
    table[g] = {k: (statistics.mean(f[k] for f in fs), statistics.stdev(f[k] for f in fs) if len(fs) > 1 else 0.0, len(fs))
                for k, _ in keys}
print(f"{'variant':16s}" + "".join(f"{h:>26s}" for _, h in keys))
for g, row in table.items():
    print(f"{g:16s}" + "".join(f"{row[k][0]:>17.4f} ± {row[k][1]:<6.4f}" for k, _ in keys) + f"  (n={row[keys[0][0]][2]})")
tmp = os.path.join(ab, "ablation.json.tmp")
json.dump(table, open(tmp, "w"), indent=1)
os.replace(tmp, os.path.join(ab, "ablation.json"))
PY
step "done in $(( $(date +%s) - start ))s"
