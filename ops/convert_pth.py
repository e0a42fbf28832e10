#!/usr/bin/env python3
"""Convert an official R2GenCMN / ITHN `.pth` checkpoint to safetensors for `ithn-dist import`.

The official trainers save `{'epoch', 'state_dict', 'optimizer', 'monitor_best'}`; only
`state_dict` is kept. The file is opened with `weights_only=True` (no pickle code execution).
Keys keep their reference names (a `module.` prefix from DataParallel is removed); tensors that
share storage (the tied `encoder_decoder.model.cmn.*` keys) are written as separate copies,
which `ithn-dist import` checks are identical.

Usage (project venv):  .venv/bin/python ops/convert_pth.py model_best.pth model_best.safetensors
"""
import argparse
import sys

import torch
from safetensors.torch import save_file


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pth", help="official checkpoint (.pth)")
    ap.add_argument("out", help="output .safetensors")
    args = ap.parse_args()
    ckpt = torch.load(args.pth, map_location="cpu", weights_only=True)
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        print(f"{args.pth}: no state_dict of tensors found", file=sys.stderr)
        return 1
    tensors = {}
    for key, value in state.items():
        name = key[len("module."):] if key.startswith("module.") else key
        tensors[name] = value.detach().clone().contiguous()
    save_file(tensors, args.out)
    print(f"wrote {len(tensors)} tensors to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
