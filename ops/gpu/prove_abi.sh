#!/usr/bin/env bash
# ops/gpu/prove_abi.sh [TORCH_PYTHON] — the ABI proof of issue 16, run here (no GPU), on the
# dist-gpu/ folder that ops/gpu/build.sh made (it calls this script at its end).
#
# Plays the GPU machine with what this machine has: in a private mount namespace the system's
# Open MPI (libmpi and its plugins, PMIx, hwloc, libevent, UCX, libfabric, mpirun/orted) is
# covered by empty files, the environment is emptied (no LIBTORCH, no LD_LIBRARY_PATH, no
# launcher variables), and the torch 2.11.0 venv that build.sh made stands for /opt/torch/.venv.
# Then `ops/gpu/check.sh OUT --dry-run` runs every CPU-side part with the dist-gpu/ binary:
# preflight (sha256, unpack, ldd, glibc), world with no launcher and through the carried mpirun,
# the public parity checks on the CPU against the fixture (forward, losses, gradients, greedy
# and beam tokens, one Adam step), phantom data, small benches, a 1-epoch tiny train + evaluate
# through launch/mpirun.sh with the carried mpirun; then the whole fixture's parity (gradients
# and the optimizer step included) with the same binary. Output: runs/gpu-dry-run/ (ignored).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
ITHN_HOME="${ITHN_HOME:-$HOME/.cache/ithn-dist}"
TORCH_PY="${1:-${ITHN_GPU_CACHE:-$ITHN_HOME/gpu-build}/venv-torch-2.11.0/bin/python}"
OUT="$ROOT/runs/gpu-dry-run"
[[ "$(id -u)" == 0 ]] || { echo "prove_abi.sh: needs root (a mount namespace hides the system's Open MPI)" >&2; exit 2; }
[[ -x "$TORCH_PY" ]] || { echo "prove_abi.sh: no torch 2.11 python at $TORCH_PY (run ops/gpu/build.sh)" >&2; exit 2; }
rm -rf "$OUT" /tmp/ithn-gpu-dry; mkdir -p "$OUT"
HIDE_GLOBS='/usr/lib/x86_64-linux-gnu/libmpi* /usr/lib/x86_64-linux-gnu/libopen-pal* /usr/lib/x86_64-linux-gnu/libopen-rte*
  /usr/lib/x86_64-linux-gnu/liboshmem* /usr/lib/x86_64-linux-gnu/libmca_common* /usr/lib/x86_64-linux-gnu/libpmix*
  /usr/lib/x86_64-linux-gnu/libhwloc* /usr/lib/x86_64-linux-gnu/libevent* /usr/lib/x86_64-linux-gnu/libfabric*
  /usr/lib/x86_64-linux-gnu/libuc[pstm]* /usr/bin/mpirun* /usr/bin/mpiexec* /usr/bin/orte* /usr/bin/orted /usr/bin/ompi_info'
HIDE_GLOBS="$(echo $HIDE_GLOBS)"  # one line: it is spliced into the bash -c program below
HIDE_DIRS='/usr/lib/x86_64-linux-gnu/openmpi /usr/lib/x86_64-linux-gnu/pmix2 /usr/lib/x86_64-linux-gnu/libfabric /usr/lib/x86_64-linux-gnu/ucx'
unshare -m --propagation private bash -c '
  set -eo pipefail
  for f in '"$HIDE_GLOBS"'; do [ -e "$f" ] && mount --bind /dev/null "$f"; done
  for d in '"$HIDE_DIRS"'; do [ -d "$d" ] && mount -t tmpfs none "$d"; done
  if [ -s /usr/lib/x86_64-linux-gnu/libmpi.so.40 ] || command -v orterun >/dev/null && [ -s "$(command -v orterun)" ]; then
    echo "prove_abi.sh: the system Open MPI is still visible" >&2; exit 2
  fi
  echo "[prove-abi] system Open MPI hidden: $(ls -la /usr/lib/x86_64-linux-gnu/libmpi.so.40.* | head -1)"
  env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$HOME" LANG=C.UTF-8 \
    ITHN_GPU_PYTHON="'"$TORCH_PY"'" ITHN_GPU_WORK=/tmp/ithn-gpu-dry ITHN_CHECK_BUDGET_S=900 \
    bash "'"$ROOT"'/ops/gpu/check.sh" "'"$OUT"'" --dry-run || status=$?
  # The whole public fixture (gradients and the Adam step too, which stay here when the folder
  # travels) with the same unpacked binary, on the torch 2.11 libraries, MPI still hidden.
  site="$("'"$TORCH_PY"'" -c "import torch, os; print(os.path.dirname(torch.__file__))")"
  echo "[prove-abi] full fixture parity: dist-gpu binary on $site/lib"
  env -i PATH=/usr/bin:/bin LD_LIBRARY_PATH="$site/lib" OMP_NUM_THREADS=2 /tmp/ithn-gpu-dry/bin/ithn-dist gpu parity \
    --fixture "'"$ROOT"'/../shared/reference/public/model" --device cpu --json "'"$OUT"'/parity-full.json" | tail -n 3
  exit "${status:-0}"
' 2>&1 | tee "$OUT/check.log"
