#!/usr/bin/env bash
# The main job (README): the whole system on bundled data, on a 2-core machine without a GPU.
#   set up → synthesize phantom radiographs for the bundled IU X-Ray reports (with the labels of
#   what each one shows) → prepare Parquet shards → the CNN probe: the tiny ResNet trained as a
#   classifier of the train split's finding labels (the ceiling of what the pictures carry, and
#   the pretrained extractor of the report generator, as ImageNet weights are for the published
#   model) → train configs/quickstart.toml on 2 ranks (ITHN; frozen pretrained extractor,
#   features cached) → the same run without the ITHN terms → evaluate on test (BLEU & co. and
#   clinical efficacy against the phantom labels) → summary table beside the most-frequent-report
#   baseline and the probe → plot → generate a report for a bundled real radiograph.
# Everything lands in runs/quickstart/ (override with QS_DIR). Images are SYNTHETIC phantoms:
# IU X-Ray's radiographs cannot be downloaded here (see data/README.md).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
start=$(date +%s)
bash ops/setup.sh
source ops/env.sh
QS="${QS_DIR:-runs/quickstart}"
NP="${NP:-2}"
# Extra config overrides for every training run, e.g. QS_SET="train.epochs=10 train.lr_ed=1e-3"
# (space-separated KEY=VALUE, each passed as --set; default none: configs/quickstart.toml as is).
user_set=()
for kv in ${QS_SET:-}; do user_set+=(--set "$kv"); done
step() { printf '\n==== %s (%ss)\n' "$*" "$(( $(date +%s) - start ))"; }

step "build"
cargo build --quiet --bin ithn-dist
B="$ITHN_BIN"
mkdir -p "$QS"
CFG=configs/quickstart.toml
SIZE=$(sed -n 's/^resize *= *\([0-9]*\).*/\1/p' "$CFG" | head -1)

step "synthesize phantom radiographs (labelled synthetic) for data/iu_xray/annotation.json"
"$B" synth --ann data/iu_xray/annotation.json --out "$QS/images" --size "$SIZE"

step "prepare Parquet shards (vocabulary, hard negatives)"
"$B" prepare --source r2gen --dataset iu_xray --ann data/iu_xray/annotation.json \
  --images "$QS/images" --out "$QS/prepared" --resize "$SIZE"
"$B" inspect "$QS/prepared" | head -20

# The probe trains the config's extractor (its image sizes, batch 16) for 4 epochs at lr 1e-3
# with random crops and flips, on the train split's labels only (QS_SET does not reach it); its test figures are the ceiling the
# summary prints (a ceiling in ranking, AUC 0.85–1.0; its F1 at a 0.5 threshold under-calls,
# see docs/tiny-model-diagnosis.md), and its weights the report generators' frozen extractor.
step "CNN probe: the visual extractor trained on the train split's finding labels"
.venv/bin/python ops/probe.py cnn --images "$QS/images" --config "$CFG" --epochs 4 --lr 1e-3 \
  --out "$QS/probe.json" --save "$QS/visual_extractor.safetensors" --threads "$NP" | tail -4
probe=(--probe "$QS/probe.json") probe_ce=(--ce "CNN probe=$QS/probe.json")

for variant in ithn no_ithn; do
  extra=()
  [[ $variant == no_ithn ]] && extra=(--set ithn.w_cp=0 --set ithn.w_cs=0)
  step "train $variant on $NP ranks (mpirun)"
  bash launch/mpirun.sh "$NP" train --config "$CFG" --set "data.prepared=$QS/prepared" \
    --set "model.visual_weights=$QS/visual_extractor.safetensors" \
    "${extra[@]}" "${user_set[@]}" --run-dir "$QS/$variant" --resume never
done

step "evaluate the ITHN model on test ($NP ranks), CE also against the phantom labels"
bash launch/mpirun.sh "$NP" evaluate --checkpoint "$QS/ithn/best" --data "$QS/prepared" \
  --split test --out "$QS/ithn/eval-test" --ce-labels "$QS/images/findings.jsonl" > /dev/null
echo "wrote $QS/ithn/eval-test/scores.json and predictions.jsonl"

step "summary (test split)"
.venv/bin/python ops/quickstart_summary.py --bin "$B" --prepared "$QS/prepared" \
  --labels "$QS/images/findings.jsonl" --out "$QS/summary" "${probe[@]}" \
  "R2GenCMN+ITHN=$QS/ithn" "no-ITHN=$QS/no_ithn"

step "plot the run, CE per observation, test phantoms"
"$B" plot "$QS/ithn" --out "$QS/ithn/plots" --ce "ITHN=$QS/summary/scores-R2GenCMN+ITHN.json" \
  --ce "no ITHN=$QS/summary/scores-no-ITHN.json" \
  --ce "most frequent=$QS/summary/scores-most-frequent.json" \
  "${probe_ce[@]}" \
  --panel "$QS/ithn/eval-test/predictions.jsonl" --images "$QS/images"

step "generate a report for a bundled real radiograph"
"$B" generate --checkpoint "$QS/ithn/best" --image data/images/nih_cxr14/00000001_000.png
step "done in $(( $(date +%s) - start ))s"
