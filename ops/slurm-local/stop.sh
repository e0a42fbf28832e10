#!/usr/bin/env bash
# ops/slurm-local/stop.sh — stop the cluster started by start.sh: cancel its jobs, stop slurmd and
# slurmctld by their pid files (munged is left running: other tools may use it), keep the logs.
set -euo pipefail
DIR="${ITHN_SLURM_DIR:-/tmp/ithn-slurm}"
export SLURM_CONF="$DIR/slurm.conf"
[[ -f "$SLURM_CONF" ]] || exit 0
timeout 10 scancel --full --quiet --partition=debug 2>/dev/null || true
for d in slurmd slurmctld; do
  pidfile="$DIR/run/$d.pid"
  [[ -s "$pidfile" ]] || continue
  pid="$(cat "$pidfile")"
  kill "$pid" 2>/dev/null || continue
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$pidfile"
done
echo "[slurm-local] stopped (logs kept in $DIR/log)" >&2
