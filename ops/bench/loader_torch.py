"""Reference side of `ithn-dist bench loader`: the PyTorch pipeline the R2Gen/ITHN code uses
(a map-style Dataset, PIL decode + convert('RGB'), torchvision Resize(256) / RandomCrop(224) /
RandomHorizontalFlip / ToTensor / Normalize, a DataLoader with worker processes and a collate
that pads report ids) reading the same prepared Parquet shards through pyarrow.

Per sample it loads `--views` views of the sample and of its hard negative (neg_index), like
the ITHN dataset does. Prints one JSON line: {"images", "seconds", "images_per_s", "cpu_seconds",
"images_per_cpu_s"}. Timing starts when the first batch arrives (worker start-up excluded, as on
the Rust side); CPU time is the user+system time of the main process and of every worker over
the timed window (from /proc), which stays meaningful on a loaded machine.
"""
import argparse
import glob
import io
import json
import os
import time

import pyarrow.parquet as pq
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, RandomSampler
from torchvision import transforms


class Shards(Dataset):
    def __init__(self, data, split, views, resize, size):
        files = sorted(glob.glob(os.path.join(data, f"{split}-*.parquet")))
        self.table = pq.read_table(files).to_pydict()
        self.views = views
        self.tf = transforms.Compose([
            transforms.Resize(resize),
            transforms.RandomCrop(size),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ])

    def __len__(self):
        return len(self.table["index"])

    def image(self, i, v):
        t = self.table
        data, fmt = t[f"image_{v}"][i], t["pixel_format"][i]
        w, h = t[f"width_{v}"][i], t[f"height_{v}"][i]
        if fmt == "raw_gray8":
            img = Image.frombytes("L", (w, h), data)
        elif fmt == "raw_rgb8":
            img = Image.frombytes("RGB", (w, h), data)
        else:
            img = Image.open(io.BytesIO(data))
        return self.tf(img.convert("RGB"))

    def sample(self, i):
        return torch.stack([self.image(i, v) for v in range(self.views)]), self.table["ids"][i]

    def __getitem__(self, i):
        img, ids = self.sample(i)
        neg_img, neg_ids = self.sample(self.table["neg_index"][i])
        return img, ids, neg_img, neg_ids


def pad(seqs):
    t = max(len(s) for s in seqs)
    ids = torch.zeros(len(seqs), t, dtype=torch.long)
    mask = torch.zeros(len(seqs), t, dtype=torch.long)
    for k, s in enumerate(seqs):
        ids[k, : len(s)] = torch.tensor(s)
        mask[k, : len(s)] = 1
    return ids, mask


def collate(batch):
    img, ids, neg_img, neg_ids = zip(*batch)
    return torch.stack(img), pad(ids), torch.stack(neg_img), pad(neg_ids)


def cpu_seconds(pids):
    """user + system CPU seconds of the given processes, from /proc/<pid>/stat."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / os.sysconf("SC_CLK_TCK")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="train")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--views", type=int, default=1)
    ap.add_argument("--resize", type=int, default=256)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    ds = Shards(args.data, args.split, args.views, args.resize, args.size)
    # Sampling with replacement makes one "epoch" as long as the run, so the workers timed
    # are the workers that started (no re-spawn at an epoch boundary).
    sampler = RandomSampler(ds, replacement=True, num_samples=args.batch_size * (args.batches + 1))
    dl = DataLoader(ds, batch_size=args.batch_size, sampler=sampler, num_workers=args.threads,
                    collate_fn=collate, drop_last=True)
    it = iter(dl)
    next(it)  # warm-up: worker start-up is not timed
    pids = [os.getpid()] + [w.pid for w in getattr(it, "_workers", [])]
    cpu0 = cpu_seconds(pids)
    start = time.perf_counter()
    n = 0
    for _ in range(args.batches):
        img, _, neg, _ = next(it)
        n += img.shape[0] * img.shape[1] + neg.shape[0] * neg.shape[1]
    secs = time.perf_counter() - start
    cpu = cpu_seconds(pids) - cpu0
    print(json.dumps({"images": n, "seconds": secs, "images_per_s": n / secs,
                      "cpu_seconds": cpu, "images_per_cpu_s": n / max(cpu, 1e-9)}))


if __name__ == "__main__":
    main()
