# Sourced by ops/*.sh: the build environment every script shares.
# LIBTORCH is the resolved path inside the cached venv (stable across clones, so cargo's cache
# stays valid); the cargo target directory lives outside the clone for the same reason.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ITHN_HOME="${ITHN_HOME:-$HOME/.cache/ithn-dist}"
export LIBTORCH="$(readlink -f "$ROOT/.venv/libtorch")"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ITHN_HOME/target}"
export ITHN_BIN="$CARGO_TARGET_DIR/debug/ithn-dist"
# mpirun as root (CI and these machines run as root) and with more ranks than cores.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1
# Keep libtorch from oversubscribing 2 cores when 2 ranks run side by side.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
