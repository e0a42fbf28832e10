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
# The C libraries built from source (libjpeg-turbo above all) use BMI2's shifts when the CPU
# building them has BMI2 (every x86-64 server CPU since 2013–2017): libjpeg-turbo's Huffman
# decoder, ~70 % of the loader's CPU on JPEG shards, ran 6–24 % faster in alternating runs
# (docs/performance.md). Pixels are identical (integer code). A binary built so refuses to
# start on a CPU without BMI2 (src/cpu.rs); ITHN_PORTABLE=1 builds without it.
if [[ -z "${ITHN_PORTABLE:-}" && "$(uname -m)" == x86_64 ]] && grep -qw bmi2 /proc/cpuinfo 2>/dev/null; then
  case " ${CFLAGS:-} " in *" -mbmi2 "*) ;; *) export CFLAGS="${CFLAGS:+$CFLAGS }-mbmi2" ;; esac
fi
