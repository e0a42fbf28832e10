"""Probes of what the phantom images carry and what a trained extractor keeps (issue 15).

Two probes, both scored against the phantom labels `synth` writes (findings.jsonl, "chexpert"):

  cnn     the *direct classifier* (ceiling of what the pictures carry at this size and budget):
          the tiny config's visual extractor (torchvision ResNet, Bottleneck blocks, the
          config's visual_layers / width_per_group), randomly initialised, plus a linear layer
          to the 14 observations, trained with binary cross-entropy on the train images with
          the trainer's augmentation (resize, random crop, horizontal flip), Adam, the config's
          batch size, lr_ve and epochs.
          `--save PATH` keeps the trained extractor as a pretrained start for the report
          generator (`--set model.visual_weights=PATH`): trained on the train split only.
  linear  a linear probe (logistic regression) on the pooled features of a checkpoint's
          extractor (eval mode, as `evaluate` runs it; `--random` for the untrained
          extractor): does the extractor keep the findings, and how alike are the features of
          different images (mean pairwise cosine, per-channel spread)?

Scores: per observation AUC and F1 (threshold 0.5), and the positive-only micro-F1 over the
13 findings (No Finding left out) and over all 14 (R2Gen's convention), as `score --ce` counts.
Images are the frontal views (view 0), resized like the loader does (shorter side to
data.resize, crop data.image_size; eval: exact resize to image_size), ImageNet-normalised.

  .venv/bin/python ops/probe.py cnn --images runs/qs/images --config configs/tiny.toml
  .venv/bin/python ops/probe.py linear --images runs/qs/images --checkpoint runs/qs/ithn/best
"""
import argparse, json, os, sys, time, tomllib

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

OBS = ["No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Lesion",
       "Lung Opacity", "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax",
       "Pleural Effusion", "Pleural Other", "Fracture", "Support Devices"]
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def load(images, split):
    """(ids, uint8 frontal images [N, H, W], labels [N, 14]) of one split."""
    ids, pix, lab = [], [], []
    with open(os.path.join(images, "findings.jsonl")) as f:
        for n, line in enumerate(f, 1):
            r = json.loads(line)
            if r["split"] != split:
                continue
            if "chexpert" not in r:
                sys.exit(f"{images}/findings.jsonl:{n}: no `chexpert` labels (re-run synth)")
            ids.append(r["id"])
            pix.append(np.asarray(Image.open(os.path.join(images, r["images"][0])).convert("L")))
            lab.append([1.0 if r["chexpert"][o] == 1 else 0.0 for o in OBS])
    return ids, np.stack(pix), torch.tensor(lab)


def to_tensor(pix, size):
    """uint8 [N, H, W] → normalised float [N, 3, size, size] (bilinear exact resize)."""
    x = torch.from_numpy(pix).float().div(255).unsqueeze(1)
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    x = x.repeat(1, 3, 1, 1)
    m = torch.tensor(MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(STD, dtype=torch.float32).view(1, 3, 1, 1)
    return (x - m) / s


def augment(x, crop):
    """Random crop to `crop` and horizontal flip, per sample (the trainer's augmentation)."""
    n, _, h, w = x.shape
    out = torch.empty(n, 3, crop, crop)
    for i in range(n):
        t, l = np.random.randint(0, h - crop + 1), np.random.randint(0, w - crop + 1)
        img = x[i, :, t:t + crop, l:l + crop]
        out[i] = img.flip(-1) if np.random.rand() < 0.5 else img
    return out


def extractor(cfg):
    from torchvision.models.resnet import ResNet, Bottleneck
    m = cfg["model"]
    net = ResNet(Bottleneck, m.get("visual_layers", [3, 4, 23, 3]),
                 width_per_group=m.get("visual_width_per_group", 64))
    return nn.Sequential(*list(net.children())[:-2])


def auc(score, y):
    pos, neg = score[y == 1], score[y == 0]
    if len(pos) == 0 or len(neg) == 0:
        return None  # undefined without both classes; null in the JSON (NaN is not JSON)
    ranks = torch.cat([pos, neg]).argsort().argsort().float() + 1
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def report(name, prob, y, extra=None):
    pred = (prob >= 0.5).float()
    tp, fp, fn = (pred * y).sum(0), (pred * (1 - y)).sum(0), ((1 - pred) * y).sum(0)
    f1 = torch.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), torch.zeros_like(tp))
    micro = lambda k: float(2 * tp[k:].sum() / max(1.0, float(2 * tp[k:].sum() + fp[k:].sum() + fn[k:].sum())))
    out = {"probe": name, "micro_f1_findings": micro(1), "micro_f1_14": micro(0),
           "per_observation": {o: {"auc": auc(prob[:, k], y[:, k]), "f1": float(f1[k]),
                                   "support": int(y[:, k].sum())} for k, o in enumerate(OBS)}}
    # The same shape as `score --ce-labels` JSON's object, so `plot --ce NAME=probe.json` draws it.
    out["ce_vs_labels"] = {
        "micro_findings": {"f1": out["micro_f1_findings"]},
        "micro": {"f1": out["micro_f1_14"]},
        "per_observation": {o: {"f1": v["f1"], "support": v["support"]}
                            for o, v in out["per_observation"].items()},
    }
    out.update(extra or {})
    print(f"{name}: micro-F1 findings {out['micro_f1_findings']:.3f}, all 14 {out['micro_f1_14']:.3f}")
    for o, v in out["per_observation"].items():
        if v["support"]:
            print(f"  {o:27s} AUC {float('nan') if v['auc'] is None else v['auc']:.3f}  F1 {v['f1']:.3f}  (support {v['support']})")
    return out


def cnn(a, cfg):
    d, t = cfg["data"], cfg["train"]
    torch.manual_seed(a.seed)
    np.random.seed(a.seed)
    _, tr_pix, tr_y = load(a.images, "train")
    _, te_pix, te_y = load(a.images, "test")
    xtr, xte = to_tensor(tr_pix, d["resize"]), to_tensor(te_pix, d["image_size"])
    body = extractor(cfg)
    head = nn.Linear(2048, len(OBS))
    params = list(body.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=a.lr or t["lr_ve"])
    bs, epochs = t["batch_size"], a.epochs or t["epochs"]
    t0 = time.time()
    for ep in range(epochs):
        body.train()
        perm = torch.randperm(len(xtr))
        for i in range(0, len(perm), bs):
            idx = perm[i:i + bs]
            if len(idx) < 2:
                continue
            f = body(augment(xtr[idx], d["image_size"])).mean((2, 3))
            loss = F.binary_cross_entropy_with_logits(head(f), tr_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        print(f"epoch {ep + 1}: loss {loss.item():.4f} ({time.time() - t0:.0f} s)", flush=True)
    train_seconds = time.time() - t0
    if a.save:
        save_extractor(body, a.save)
    body.eval()
    with torch.no_grad():
        prob = torch.sigmoid(head(body(xte).mean((2, 3))))
    return report(f"cnn probe ({epochs} epochs)", prob, te_y, {"train_seconds": train_seconds})


# nn.Sequential index of `extractor` → torchvision's child name (children 2, 3 are ReLU and
# max-pool, without tensors).
TORCHVISION_CHILD = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}


def save_extractor(body, path):
    """The trained extractor's state_dict in torchvision's names (conv1.weight,
    layer1.0.bn1.running_mean, ...) as safetensors, atomically: `model.visual_weights`."""
    from safetensors.torch import save_file
    tensors = {}
    for key, value in body.state_dict().items():
        index, _, rest = key.partition(".")
        tensors[f"{TORCHVISION_CHILD[index]}.{rest}"] = value.detach().clone().contiguous()
    tmp = path + ".tmp"
    save_file(tensors, tmp)
    os.replace(tmp, path)
    print(f"wrote {len(tensors)} extractor tensors (torchvision names) to {path}")


def features(body, x, bs=64):
    with torch.no_grad():
        return torch.cat([body(x[i:i + bs]).mean((2, 3)) for i in range(0, len(x), bs)])


def linear(a, cfg):
    from safetensors.torch import load_file
    torch.manual_seed(a.seed)
    d = cfg["data"]
    body = extractor(cfg)
    if not a.random:
        sd = load_file(os.path.join(a.checkpoint, "model.safetensors"))
        pre = "visual_extractor.model."
        body.load_state_dict({k[len(pre):]: v.float() for k, v in sd.items() if k.startswith(pre)})
    body.eval()
    _, tr_pix, tr_y = load(a.images, "train")
    _, te_pix, te_y = load(a.images, "test")
    ftr, fte = features(body, to_tensor(tr_pix, d["image_size"])), features(body, to_tensor(te_pix, d["image_size"]))
    n = F.normalize(fte, dim=1)
    cos = (n @ n.T)[~torch.eye(len(n), dtype=torch.bool)].mean().item()
    spread = (fte.std(0) / (fte.mean(0).abs() + 1e-8)).median().item()
    mu, sd_ = ftr.mean(0), ftr.std(0) + 1e-6
    ztr, zte = (ftr - mu) / sd_, (fte - mu) / sd_
    w = torch.zeros(ztr.shape[1], len(OBS), requires_grad=True)
    b = torch.zeros(len(OBS), requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=1e-2)
    for _ in range(300):
        loss = F.binary_cross_entropy_with_logits(ztr @ w + b, tr_y) + a.l2 * (w ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        prob = torch.sigmoid(zte @ w + b)
    name = "linear probe, random extractor" if a.random else f"linear probe, {a.checkpoint}"
    print(f"test features: mean pairwise cosine {cos:.4f}; median channel std/|mean| {spread:.3f}")
    return report(name, prob, te_y, {"mean_pairwise_cosine": cos, "median_channel_cv": spread})


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("probe", choices=["cnn", "linear"])
    ap.add_argument("--images", required=True, help="synth output (findings.jsonl + PNGs)")
    ap.add_argument("--config", default="configs/tiny.toml")
    ap.add_argument("--checkpoint", help="linear: checkpoint dir (model.safetensors, config.toml)")
    ap.add_argument("--random", action="store_true", help="linear: untrained extractor")
    ap.add_argument("--epochs", type=int, help="cnn: default the config's train.epochs")
    ap.add_argument("--lr", type=float, help="cnn: default the config's train.lr_ve")
    ap.add_argument("--l2", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=7580)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="write the scores as JSON here")
    ap.add_argument("--save", help="cnn: write the trained extractor (torchvision names, "
                    "safetensors) here, for model.visual_weights")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cfg_path = os.path.join(a.checkpoint, "config.toml") if a.checkpoint else a.config
    with open(cfg_path, "rb") as f:
        cfg = tomllib.load(f)
    if a.probe == "linear" and not (a.checkpoint or a.random):
        sys.exit("linear: pass --checkpoint DIR or --random")
    out = cnn(a, cfg) if a.probe == "cnn" else linear(a, cfg)
    if a.out:
        tmp = a.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(out, f, indent=1, allow_nan=False)
        os.replace(tmp, a.out)


if __name__ == "__main__":
    main()
