# Sourced by ops/*.sh: the build environment every script shares.
# LIBTORCH is the resolved path inside the cached venv (stable across clones, so cargo's cache
# stays valid); the cargo target directory lives outside the clone for the same reason.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ITHN_HOME="${ITHN_HOME:-$HOME/.cache/ithn-dist}"
export LIBTORCH="$(readlink -f "$ROOT/.venv/libtorch")"
# The C libraries built from source (libjpeg-turbo above all) use BMI2's shifts when the CPU
# building them has BMI2 (every x86-64 server CPU since 2013–2017): the loader decoded 6 % more
# JPEG images per CPU-second, libjpeg-turbo alone ~16 % (docs/performance.md). Pixels are
# identical (integer code). A binary built so refuses to start on a CPU without BMI2
# (src/cpu.rs). ITHN_PORTABLE=1 builds for any x86-64 CPU, in a target directory of its own:
# turbojpeg-sys does not rebuild when C flags change, so one cache must never hold both kinds.
# The flags go in the target-specific variable the cc and cmake crates read, not in CFLAGS, so
# that other C builds in a shell that sourced this file are left alone.
ITHN_PORTABLE="${ITHN_PORTABLE:-0}"
if [[ "$ITHN_PORTABLE" != 1 && "$(uname -m)" == x86_64 ]] && grep -qw bmi2 /proc/cpuinfo 2>/dev/null; then
  export CFLAGS_x86_64_unknown_linux_gnu=-mbmi2  # added to CFLAGS by the cc crate
  ITHN_TARGET="$ITHN_HOME/target"
else
  unset CFLAGS_x86_64_unknown_linux_gnu
  ITHN_TARGET="$ITHN_HOME/target-portable"
fi
# A target directory of the user's own is kept; one of ours follows the flavour.
case "${CARGO_TARGET_DIR:-}" in
  "" | "$ITHN_HOME/target" | "$ITHN_HOME/target-portable") export CARGO_TARGET_DIR="$ITHN_TARGET" ;;
esac
export ITHN_BIN="$CARGO_TARGET_DIR/debug/ithn-dist"
# mpirun as root (CI and these machines run as root) and with more ranks than cores.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1
# Keep libtorch from oversubscribing 2 cores when 2 ranks run side by side.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
