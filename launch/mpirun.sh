#!/usr/bin/env bash
# launch/mpirun.sh — start ithn-dist on N ranks of this machine (or of a host file) with Open MPI.
#
#   launch/mpirun.sh 4 train --config configs/iu_xray.toml --run-dir runs/iu --resume auto
#   NP=2 launch/mpirun.sh train --config configs/tiny.toml --run-dir runs/tiny
#
# The rank count is the first argument when it is a number, else $NP (default 1); every other
# argument goes to the ithn-dist binary unchanged. What this script adds to a plain mpirun:
#   * runs as root when needed (containers, these machines): OMPI_ALLOW_RUN_AS_ROOT{,_CONFIRM};
#   * --oversubscribe when there are fewer cores than ranks (CPU tests), else binding of each
#     rank to its share of cores (--map-by slot:PE=k --bind-to core);
#   * OMP_NUM_THREADS = cores per rank, so libtorch does not oversubscribe;
#   * SIGUSR1/SIGUSR2 are forwarded by mpirun to every rank (Open MPI's default), which is how
#     the SLURM batch script's signal reaches the training processes;
#   * Ctrl-C and SIGTERM: mpirun runs in its own process group (a Ctrl-C reaches only this
#     script) because Open MPI's mpirun answers SIGINT/SIGTERM by killing the ranks and exiting
#     1. This script forwards SIGINT as SIGUSR2 (the ranks: first one → checkpoint at the next
#     step and exit 3; second one → exit 130 at once) and SIGTERM as SIGUSR1 (checkpoint, exit
#     3), so exit codes mean what docs/resume.md says; the script exits with mpirun's code.
# Environment: ITHN_BIN (binary, default target/{release,debug}/ithn-dist), MPIRUN_ARGS (extra
# mpirun options, e.g. "--hostfile hosts"), NP.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

np="${NP:-1}"
if [[ $# -gt 0 && "$1" =~ ^[0-9]+$ ]]; then np="$1"; shift; fi
[[ "$np" -ge 1 ]] || { echo "launch/mpirun.sh: rank count must be ≥ 1, got $np" >&2; exit 2; }

if [[ -z "${ITHN_BIN:-}" ]]; then
  target="${CARGO_TARGET_DIR:-$HOME/.cache/ithn-dist/target}"
  for cand in "$target/release/ithn-dist" "$target/debug/ithn-dist" "$ROOT/target/release/ithn-dist" "$ROOT/target/debug/ithn-dist"; do
    [[ -x "$cand" ]] && { ITHN_BIN="$cand"; break; }
  done
fi
[[ -n "${ITHN_BIN:-}" && -x "$ITHN_BIN" ]] || { echo "launch/mpirun.sh: no ithn-dist binary (build it or set ITHN_BIN)" >&2; exit 2; }

if [[ "$(id -u)" == 0 ]]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi

cores="$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)"  # nproc honours OMP_NUM_THREADS
opts=()
if (( cores < np )); then
  opts+=(--oversubscribe --bind-to none)
  threads=1
else
  threads=$(( cores / np ))
  opts+=(--map-by "slot:PE=${threads}" --bind-to core)
fi
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$threads}"

# Ranks on other nodes get these variables too (local ranks inherit the whole environment).
opts+=(-x OMP_NUM_THREADS)
[[ -n "${RUST_LOG:-}" ]] && opts+=(-x RUST_LOG)
[[ -n "${ITHN_FAULT:-}" ]] && opts+=(-x ITHN_FAULT)

pid=""
interrupts=0
forward() {  # $1: the signal this script received
  [[ -n "$pid" ]] || exit 130
  case "$1" in
    INT)
      interrupts=$((interrupts + 1))
      echo "launch/mpirun.sh: SIGINT #$interrupts forwarded to the ranks as SIGUSR2 ($( ((interrupts == 1)) && echo 'checkpoint at the next step, then exit 3; Ctrl-C again to leave at once with 130' || echo 'leaving at once, exit 130'))" >&2
      kill -USR2 "$pid" 2>/dev/null || true ;;
    TERM)
      echo "launch/mpirun.sh: SIGTERM forwarded to the ranks as SIGUSR1 (checkpoint at the next step, then exit 3)" >&2
      kill -USR1 "$pid" 2>/dev/null || true ;;
    *) kill -"$1" "$pid" 2>/dev/null || true ;;
  esac
}
for sig in INT TERM USR1 USR2; do
  # shellcheck disable=SC2064  # the signal name is bound now on purpose
  trap "forward $sig" "$sig"
done
# shellcheck disable=SC2086  # MPIRUN_ARGS is a list of options on purpose
setsid mpirun -np "$np" "${opts[@]}" ${MPIRUN_ARGS:-} "$ITHN_BIN" "$@" &
pid=$!
# `wait` returns early (status > 128) when a trapped signal arrives; wait again while mpirun runs.
while :; do
  rc=0
  wait "$pid" || rc=$?
  if (( rc > 128 )) && kill -0 "$pid" 2>/dev/null; then continue; fi
  break
done
exit "$rc"
