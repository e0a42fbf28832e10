#!/usr/bin/env bash
# ops/gpu/check.sh OUTDIR [--dry-run] — the GPU readiness check (issue 16; docs/gpu.md).
#
# Runs on the GPU machine (one H200, torch 2.11.0+cu130 in /opt/torch/.venv, no Rust, maybe no
# MPI) from a copy of this repository that carries dist-gpu/ (made here by ops/gpu/build.sh).
# Every part has its own time budget and the script goes on past a failing part; the whole run
# stays under ITHN_CHECK_BUDGET_S (default 360 s, inside the device's 8-minute slot with room for
# a second try). Everything lands in OUTDIR, in few files (the device tool returns at most 8):
#   summary.md      one table of results (what docs/gpu.md's results table is filled from)
#   summary.json    the same figures, machine-readable
#   logs.tar.gz     every part's full log and JSON (updated after each part)
#
# Parts: preflight (stops the run at once, saying what is missing, when the binary cannot start
# there), nvidia-smi, world (NCCL all-reduce on 1 rank, no launcher; then the carried mpirun),
# parity (CUDA fp32 vs the fixture and the CPU, bf16 vs fp32), data (phantom images + shards),
# bench step (ResNet-101 / d_model 512 at global batch 16, 32, 64 in fp32 and bf16: samples/s,
# peak GPU memory, MFU), bench loader (16 threads vs the step's demand), bench decode (beam-3 at
# batch 16 and 64), a 1-epoch tiny train + evaluate through the mpirun launcher.
#
# --dry-run runs the CPU side of the same parts on a machine without a GPU (the ABI proof of
# ops/gpu/prove_abi.sh uses it): parity on the CPU against the fixture, small bench sizes.
# Environment: ITHN_GPU_PYTHON (python with torch; default /opt/torch/.venv/bin/python3, else
# python3), ITHN_GPU_WORK (scratch folder, default /tmp/ithn-gpu), ITHN_CHECK_BUDGET_S.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUTDIR="${1:?usage: ops/gpu/check.sh OUTDIR [--dry-run]}"
DRY=0; [[ "${2:-}" == "--dry-run" ]] && DRY=1
DIST="${ITHN_GPU_DIST:-$ROOT/dist-gpu}"
WORK="${ITHN_GPU_WORK:-/tmp/ithn-gpu}"
LOGS="$WORK/logs"
BUDGET="${ITHN_CHECK_BUDGET_S:-360}"
START=$(date +%s)
mkdir -p "$OUTDIR" "$LOGS"
OUTDIR="$(cd "$OUTDIR" && pwd)"
RESULTS="$LOGS/results.tsv"; : > "$RESULTS"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 PYTHONUNBUFFERED=1

say() { printf '[check %4ss] %s\n' "$(( $(date +%s) - START ))" "$*"; }
# result PART KEY VALUE — one figure for summary.md / summary.json.
result() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >> "$RESULTS"; }
publish() {
  "$PY" "$ROOT/ops/gpu/summarize.py" "$RESULTS" "$OUTDIR" "$DRY" >/dev/null 2>&1 \
    || cp "$RESULTS" "$OUTDIR/summary.tsv"
  tar -czf "$OUTDIR/logs.tar.gz.tmp" -C "$WORK" logs 2>/dev/null && mv "$OUTDIR/logs.tar.gz.tmp" "$OUTDIR/logs.tar.gz"
}
# part NAME BUDGET_S FUNCTION — runs FUNCTION under its own time limit (never past the whole
# run's budget), logs to $LOGS/NAME.log, records status and seconds, and carries on.
part() {
  local name="$1" budget="$2" fn="$3" left t0 rc
  left=$(( BUDGET - ($(date +%s) - START) ))
  (( budget > left )) && budget=$left
  if (( budget < 5 )); then
    say "$name: skipped (the run's ${BUDGET}s budget is spent)"; result "$name" status skipped; publish; return
  fi
  say "$name: start (budget ${budget}s)"
  t0=$(date +%s)
  export -f "$fn"
  timeout --kill-after=5 "$budget" bash -o pipefail -c "$fn" > "$LOGS/$name.log" 2>&1
  rc=$?
  local status=ok
  (( rc == 124 || rc == 137 )) && status="timeout(${budget}s)"
  (( rc != 0 && rc != 124 && rc != 137 )) && status="failed(rc=$rc)"
  result "$name" status "$status"; result "$name" seconds "$(( $(date +%s) - t0 ))"
  say "$name: $status in $(( $(date +%s) - t0 ))s"; tail -n 4 "$LOGS/$name.log" | sed 's/^/    /'
  publish
}

# ---------------------------------------------------------------- preflight (no time wasted)
PY="${ITHN_GPU_PYTHON:-/opt/torch/.venv/bin/python3}"
[[ -x "$PY" ]] || PY="$(command -v python3 || true)"
missing=()
miss() { missing+=("$*"); say "MISSING: $*"; }
[[ -n "$PY" ]] || { echo "MISSING: python3 (needed to find torch)"; exit 3; }
[[ -f "$DIST/MANIFEST.json" ]] || { echo "MISSING: $DIST/MANIFEST.json — build with ops/gpu/build.sh and carry dist-gpu"; exit 3; }
say "preflight: python $PY, dist $DIST, work $WORK, dry-run $DRY"
"$PY" "$ROOT/ops/gpu/unpack.py" "$DIST" "$WORK" > "$LOGS/unpack.log" 2>&1 || miss "dist-gpu unpack/sha256: $(tail -1 "$LOGS/unpack.log")"
BIN="$WORK/bin/ithn-dist"; MPIRUN="$WORK/bin/ompi/bin/mpirun"; FIXTURE="$DIST/fixture"
# One interpreter start (importing torch takes seconds): torch's version and site folder.
read -r TORCH_VERSION TORCH_SITE TORCH_CUDA WANT_TORCH GLIBC_NEED < <("$PY" - "$DIST/MANIFEST.json" <<'PY' 2>/dev/null
import json, os, sys
m = json.load(open(sys.argv[1]))
try:
    import torch
    v, site = torch.__version__, os.path.dirname(os.path.dirname(torch.__file__))
    cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
except Exception:
    v, site, cuda = "none", "", 0
print(v, site or "-", cuda, m["torch_version"], m["glibc_needed"])
PY
)
[[ "$TORCH_SITE" == "-" ]] && TORCH_SITE=""
[[ -n "$TORCH_SITE" ]] || miss "torch importable from $PY"
[[ "${TORCH_VERSION%%+*}" == "$WANT_TORCH" ]] || miss "torch $WANT_TORCH (the binary's libtorch ABI) at $PY: found ${TORCH_VERSION:-none}"
GLIBC_HAVE="$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}')"
[[ "$(printf '%s\n%s\n' "$GLIBC_NEED" "$GLIBC_HAVE" | sort -V | head -1)" == "$GLIBC_NEED" ]] \
  || miss "glibc >= $GLIBC_NEED (the binary's newest GLIBC_ symbol), found ${GLIBC_HAVE:-unknown}"
mkdir -p "$WORK/lib"
# cudarc opens NCCL as libnccl.so; the wheel ships libnccl.so.2 only.
NCCL="$TORCH_SITE/nvidia/nccl/lib/libnccl.so.2"
if [[ -f "$NCCL" ]]; then ln -sfn "$NCCL" "$WORK/lib/libnccl.so"; else (( DRY )) || miss "NCCL at $NCCL"; fi
export LD_LIBRARY_PATH="$WORK/lib:$TORCH_SITE/torch/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PATH="$WORK/bin/ompi/bin:$PATH" ITHN_BIN="$BIN"
if [[ -x "$BIN" ]]; then
  ldd "$BIN" > "$LOGS/ldd.log" 2>&1
  # Libraries the device lacks that travelled in fallback-lib/ (fontconfig, freetype, …).
  if grep -q "not found" "$LOGS/ldd.log" && [[ -d "$DIST/fallback-lib" ]]; then
    used="$(awk '/not found/ {print $1}' "$LOGS/ldd.log" | while read -r l; do [[ -f "$DIST/fallback-lib/$l" ]] && echo "$l"; done | tr '\n' ' ')"
    if [[ -n "$used" ]]; then
      export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$DIST/fallback-lib"
      say "device lacks $used: using the carried copies"; result preflight fallback_libs "$used"
      ldd "$BIN" > "$LOGS/ldd.log" 2>&1
    fi
  fi
  grep -E "not found" "$LOGS/ldd.log" | while read -r l; do echo "$l"; done > "$LOGS/ldd-missing.log"
  [[ -s "$LOGS/ldd-missing.log" ]] && miss "shared libraries: $(tr '\n' ';' < "$LOGS/ldd-missing.log")"
  grep -q "libmpi.so.40 => $WORK/bin/ompi/lib/" "$LOGS/ldd.log" || miss "libmpi.so.40 from the carried Open MPI ($(grep libmpi "$LOGS/ldd.log"))"
  "$BIN" --version > "$LOGS/version.log" 2>&1 || miss "the binary starts: $(tail -2 "$LOGS/version.log" | tr '\n' ' ')"
else
  miss "binary $BIN"
fi
"$MPIRUN" --version > "$LOGS/mpirun-version.log" 2>&1 || miss "the carried mpirun runs: $(tail -1 "$LOGS/mpirun-version.log")"
if (( ! DRY )); then
  command -v nvidia-smi >/dev/null || miss "nvidia-smi"
  [[ "${TORCH_CUDA:-0}" -ge 1 ]] || miss "a CUDA device visible to torch ($PY)"
fi
result preflight torch "${TORCH_VERSION:-none}"; result preflight glibc "${GLIBC_HAVE:-?} (needs ${GLIBC_NEED:-?})"
if (( ${#missing[@]} )); then
  result preflight status "failed: ${missing[*]}"; publish
  say "preflight failed: stopping before any GPU work (see above)"; exit 3
fi
result preflight status ok; publish
say "preflight ok: $(head -1 "$LOGS/version.log"), torch $TORCH_VERSION, glibc $GLIBC_HAVE"
export BIN MPIRUN FIXTURE WORK LOGS ROOT DRY PY RESULTS START
export -f result say

# ---------------------------------------------------------------- the parts
p_smi() { nvidia-smi && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv; }
p_world() {
  "$BIN" world --json | tee "$LOGS/world.json" || return 1
  "$PY" -c 'import json,sys; r=json.load(open(sys.argv[1])); n=r.get("nccl"); print("nccl:", n); sys.exit(0 if (n and n["ok"]) or sys.argv[2]=="1" else 1)' "$LOGS/world.json" "$DRY" || return 1
  "$MPIRUN" -np 1 "$BIN" world --json | tee "$LOGS/world-mpirun.json" || return 1
  # Informative: MPI initialised without any launcher (Open MPI singleton) through the carried
  # libmpi; the one-rank path above does not need it (no launcher, no MPI calls).
  if ITHN_FORCE_MPI=1 timeout 20 "$BIN" world --json > "$LOGS/world-singleton.json" 2>&1; then
    result world singleton ok
  else
    result world singleton "failed (see world-singleton.json)"
  fi
  result world nccl "$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1])).get("nccl", "no CUDA"))' "$LOGS/world.json")"
}
p_parity() {
  local dev=cuda extra=(--bf16); (( DRY )) && { dev=cpu; extra=(); }
  # Strict fp32: no TF32 in cuBLAS/cuDNN (NVIDIA's switch; libtorch lets cuDNN use TF32 by default).
  NVIDIA_TF32_OVERRIDE=0 "$BIN" gpu parity --fixture "$FIXTURE" --device "$dev" "${extra[@]}" --json "$LOGS/parity.json"
}
p_data() {
  local n=256; (( DRY )) && n=48
  "$PY" "$ROOT/ops/gpu/small_ann.py" "$ROOT/data/iu_xray/annotation.json" "$WORK/ann.json" "$n" &&
  "$BIN" synth --ann "$WORK/ann.json" --out "$WORK/images" --size 256 &&
  "$BIN" prepare --source r2gen --dataset iu_xray --ann "$WORK/ann.json" --images "$WORK/images" \
    --out "$WORK/prepared" --resize 72
}
p_step() {
  local cfg=configs/mimic_cxr.toml batches="16 32 64" precs="fp32 bf16" steps=5
  (( DRY )) && { cfg=configs/tiny.toml; batches="4"; precs="fp32"; steps=1; }
  local failed=0
  for prec in $precs; do for b in $batches; do
    local mem="$LOGS/step-$prec-$b.mem"; : > "$mem"
    if command -v nvidia-smi >/dev/null && (( ! DRY )); then
      nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > "$mem" & local smi=$!
    fi
    "$BIN" bench step --config "$ROOT/$cfg" --set "train.batch_size=$b" --set "model.precision=\"$prec\"" \
      --steps "$steps" --warmup 2 --no-reference | tee "$LOGS/step-$prec-$b.log"
    local rc=${PIPESTATUS[0]}; [[ -n "${smi:-}" ]] && kill "$smi" 2>/dev/null; unset smi
    local rate; rate=$(sed -n 's/^distributed.*: \([0-9.]*\) samples\/s.*/\1/p' "$LOGS/step-$prec-$b.log")
    local peak; peak=$(sort -n "$mem" | tail -1)
    local flops; flops=$("$BIN" gpu flops --config "$ROOT/$cfg" --set "train.batch_size=$b" ${rate:+--samples-per-s "$rate"})
    result bench-step "$prec/$b" "rate=${rate:-?} peak_mib=${peak:-?} $flops"
    (( rc == 0 )) || failed=1
  done; done
  return $failed
}
p_loader() {
  local threads=16 rows=512 batch=64; (( DRY )) && { threads=2; rows=32; batch=8; }
  # The loader bench reads one flat folder; synth wrote one folder per study.
  rm -rf "$WORK/flat" "$WORK/loader"; mkdir -p "$WORK/flat"
  find "$WORK/images" -name '*.png' | head -n "$rows" | while read -r f; do
    ln -s "$f" "$WORK/flat/$(basename "$(dirname "$f")")_$(basename "$f")"
  done
  "$BIN" bench loader --data "$WORK/loader" --make-from "$WORK/flat" --rows "$rows" --threads "$threads" \
    --batch-size "$batch" --batches 10 --no-python | tee "$LOGS/loader.out" || return 1
  result bench-loader images_per_s "$(sed -n 's/^rust loader: \([0-9.]*\) images\/s.*/\1/p' "$LOGS/loader.out")"
}
p_decode() {
  local cfg=configs/mimic_cxr.toml batch=16,64 threads=16 len=()
  (( DRY )) && { cfg=configs/tiny.toml; batch=2; threads=2; len=(--max-len 8); }
  "$BIN" bench decode --config "$ROOT/$cfg" --batch "$batch" --repeat 2 --threads "$threads" "${len[@]}" \
    | tee "$LOGS/decode.out" || return 1
  grep '^beam3' "$LOGS/decode.out" | while read -r _ b cached _; do result bench-decode "beam3/$b reports/s" "$cached"; done
}
p_train() {
  local np=1 run="$WORK/run"; rm -rf "$run"
  bash "$ROOT/launch/mpirun.sh" "$np" train --config "$ROOT/configs/tiny.toml" --set "data.prepared=\"$WORK/prepared\"" \
    --set train.epochs=1 --run-dir "$run" --resume never &&
  bash "$ROOT/launch/mpirun.sh" "$np" evaluate --checkpoint "$run/best" --data "$WORK/prepared" --split test \
    --out "$run/eval-test" &&
  cat "$run/eval-test/scores.json" && result train-evaluate scores "$(tr -d '\n ' < "$run/eval-test/scores.json")"
}

(( DRY )) || part nvidia-smi 10 p_smi
part world 45 p_world
part parity 90 p_parity
part data 40 p_data
part bench-step 180 p_step
part bench-loader 40 p_loader
part bench-decode 45 p_decode
part train-evaluate 90 p_train
say "done in $(( $(date +%s) - START ))s: $OUTDIR/summary.md"
cat "$OUTDIR/summary.md" 2>/dev/null
grep -q $'\tstatus\t\(failed\|timeout\)' "$RESULTS" && exit 1
exit 0
