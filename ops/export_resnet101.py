#!/usr/bin/env python3
"""Export torchvision's ImageNet ResNet-101 weights for `model.visual_weights`.

Run it where downloads work (torchvision fetches the weights once). The output holds only the
trunk (no fc), renamed to the model's names: conv1 → visual_extractor.model.0, bn1 → .1,
layer1..layer4 → .4 .. .7 (children 2 and 3 are ReLU and max-pool and have no weights).

Usage (project venv):
  .venv/bin/python ops/export_resnet101.py resnet101_imagenet.safetensors [--weights IMAGENET1K_V1]
Then set `model.visual_weights = "resnet101_imagenet.safetensors"` in the run config.
"""
import argparse
import sys

import torchvision
from safetensors.torch import save_file

CHILD_INDEX = {"conv1": 0, "bn1": 1, "layer1": 4, "layer2": 5, "layer3": 6, "layer4": 7}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="output .safetensors")
    ap.add_argument("--weights", default="IMAGENET1K_V1", help="torchvision weights enum name")
    args = ap.parse_args()
    weights = getattr(torchvision.models.ResNet101_Weights, args.weights)
    model = torchvision.models.resnet101(weights=weights)
    tensors = {}
    for key, value in model.state_dict().items():
        child, _, rest = key.partition(".")
        if child == "fc":
            continue
        tensors[f"visual_extractor.model.{CHILD_INDEX[child]}.{rest}"] = value.detach().clone().contiguous()
    save_file(tensors, args.out)
    print(f"wrote {len(tensors)} tensors to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
