#!/usr/bin/env bash
# ops/setup.sh — install everything ithn-dist needs on a fresh Debian machine.
# Idempotent and quick when already done (each stage checks before it acts).
#   * Debian packages: Open MPI, libclang (bindgen for rsmpi), pkg-config, a headless JRE (METEOR),
#     SLURM + munge (the local cluster used by the launcher tests), cmake + nasm (libjpeg-turbo,
#     built by the turbojpeg crate: Debian's libturbojpeg is 2.1, the binding needs the 3.x API).
#   * A project-local virtualenv .venv (git-ignored) with torch==2.13.0 (libtorch for tch),
#     torchvision, pycocoevalcap (METEOR 1.5 jar), Pillow, pyarrow, safetensors — created with uv,
#     whose cache lives outside the clone so a fresh clone re-links it in seconds.
#   * .cargo/config.toml is committed: LIBTORCH_USE_PYTORCH + an rpath, so plain cargo works.
#   * `bash ops/setup.sh --link-bin` also builds ithn-dist (release) and copies it to
#     ~/.local/bin/ithn-dist, so the README's bare `ithn-dist …` commands work.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
log() { printf '[setup] %s\n' "$*" >&2; }

APT_PKGS=(openmpi-bin libopenmpi-dev libclang-dev clang pkg-config default-jre-headless slurm-wlm munge
          libfontconfig1-dev fonts-dejavu-core   # plotters (`ithn-dist plot`): fontconfig + a sans font
          cmake nasm)  # the turbojpeg crate builds its vendored libjpeg-turbo 3 (SIMD needs nasm)
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The virtualenv lives in a cache outside the clone, keyed by the requirements' hash, and the
# project-local .venv is a link to it: a fresh clone (CI) gets a ready venv in a second, and a
# stable libtorch path keeps cargo's build cache valid across clones.
PY_REQ="$ROOT/ops/requirements.txt"
ITHN_HOME="${ITHN_HOME:-$HOME/.cache/ithn-dist}"
VENV="$ITHN_HOME/venv-$(sha256sum "$PY_REQ" | cut -c1-12)"
STAMP="$VENV/.ithn-setup-done"
mkdir -p "$ITHN_HOME"
if [ ! -f "$STAMP" ]; then
  if ! command -v uv >/dev/null 2>&1 && [ ! -x "$HOME/.local/bin/uv" ]; then
    log "installing uv (pip --user)"
    python3 -m pip install -q --user uv
  fi
  UV="$(command -v uv || echo "$HOME/.local/bin/uv")"
  export UV_CACHE_DIR="${UV_CACHE_DIR:-$HOME/.cache/ithn-dist/uv}"
  export UV_LINK_MODE=hardlink
  [ -x "$VENV/bin/python" ] || "$UV" venv -q --python python3 "$VENV"
  log "installing Python requirements into $VENV (torch==2.13.0 is large the first time)"
  "$UV" pip install -q --python "$VENV/bin/python" -r "$PY_REQ"
  site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  ln -sfn "$site/torch" "$VENV/libtorch"
  # cudarc's dynamic loader looks for libnccl.so; the wheel ships libnccl.so.2.
  if [ -d "$site/nvidia/nccl/lib" ] && [ ! -e "$site/nvidia/nccl/lib/libnccl.so" ]; then
    ln -s libnccl.so.2 "$site/nvidia/nccl/lib/libnccl.so"
  fi
  touch "$STAMP"
fi
# The Open-i IU X-Ray reports with their human MeSH labels (tests/it/ce_mesh_agreement.rs, the
# labeler's validation): NLMCXR_reports.tgz from the pinned torchxrayvision wheel, fetched once
# into the cache and checked by hash. CC BY-NC-ND 4.0 data, so it is fetched, never committed.
# A failed fetch (offline) only warns: that one test then says what is missing.
IU_REPORTS="$ITHN_HOME/data/NLMCXR_reports.tgz"
IU_SHA=8fb6de7eec73d8c3665067ad4bb003ccd57f971ae316d2642e1627ac7268667a
if [ ! -f "$IU_REPORTS" ]; then
  log "fetching the Open-i report archive (torchxrayvision==1.5.7 wheel, 29 MB, once)"
  UV="$(command -v uv || echo "$HOME/.local/bin/uv")"
  tmp="$(mktemp -d)"
  if UV_CACHE_DIR="${UV_CACHE_DIR:-$ITHN_HOME/uv}" "$UV" pip install -q --no-deps \
       --python "$VENV/bin/python" --target "$tmp" torchxrayvision==1.5.7 \
     && echo "$IU_SHA  $tmp/torchxrayvision/data/NLMCXR_reports.tgz" | sha256sum -c --quiet; then
    mkdir -p "$ITHN_HOME/data"
    cp "$tmp/torchxrayvision/data/NLMCXR_reports.tgz" "$IU_REPORTS.partial"
    mv "$IU_REPORTS.partial" "$IU_REPORTS"
  else
    log "warning: could not fetch NLMCXR_reports.tgz; tests/it/ce_mesh_agreement.rs will fail"
  fi
  rm -rf "$tmp"
fi
if [ "$(readlink .venv 2>/dev/null)" != "$VENV" ]; then
  [ -L .venv ] || [ ! -e .venv ] || { log ".venv exists and is not a link; moving it aside to .venv.old"; mv .venv .venv.old; }
  ln -sfn "$VENV" .venv
fi
log "ready: .venv -> $VENV"

# Putting `ithn-dist` on PATH (the README calls it bare): offered, done only when asked.
LINK="$HOME/.local/bin/ithn-dist"
if [ "${1:-}" = "--link-bin" ]; then
  log "building ithn-dist (release) and installing it as $LINK"
  # The build environment of the other ops/ scripts (C flags for this CPU; ITHN_PORTABLE=1 for
  # a binary that runs on any x86-64 CPU). Its target directory is shared by every clone, so
  # the binary is copied (atomically), not linked: a later build elsewhere does not replace it.
  source "$ROOT/ops/env.sh"
  cargo build --release --quiet --bin ithn-dist
  BIN="$CARGO_TARGET_DIR/release/ithn-dist"
  mkdir -p "$(dirname "$LINK")"
  cp -f "$BIN" "$LINK.tmp.$$" && mv -f "$LINK.tmp.$$" "$LINK"
  case ":$PATH:" in
    *":$HOME/.local/bin:"*) log "ithn-dist is on PATH: $LINK (a copy of $BIN)" ;;
    *) log "installed $LINK (a copy of $BIN); add ~/.local/bin to PATH: export PATH=\"\$HOME/.local/bin:\$PATH\"" ;;
  esac
elif ! command -v ithn-dist >/dev/null 2>&1; then
  log "ithn-dist is not on PATH: run 'bash ops/setup.sh --link-bin' (release build copied into ~/.local/bin), or 'cargo install --path .'"
fi
