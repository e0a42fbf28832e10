# Diagnostic for issue 15, NOT product code (docs/tiny-model-diagnosis.md, "The decoder is the
# limit"): how many optimiser steps does a tiny pre-norm transformer encoder-decoder need before
# its reports depend on the image, on the quickstart's phantoms and real IU X-Ray reports?
# A proxy, fast because the visual features are computed once: a frozen random-init tiny
# bottleneck ResNet (the configs/tiny.toml extractor shape) gives the 2x2 patch features, or,
# with oracle=1, the phantom's own 14 labels replace the image (perfect visual information).
# Every eval_every steps: teacher-forced val LM loss with each study's own features and with
# another study's, greedy val reports (distinct count) scored by `ithn-dist score --ce` against
# synth's phantom labels (CE micro-F1 over the 13 findings).
# Usage (repo root, after the quickstart): .venv/bin/python ops/diag/decoder_proxy.py OUT [k=v ...]
#   keys: steps lr enc_layers dec_layers drop_vis drop d use_bn oracle eval_every bs seed warm
# Env: QS_DIR (default runs/quickstart), ITHN_BIN (the ithn-dist binary).
import io, json, math, os, subprocess, sys, time
import numpy as np, torch, torch.nn as nn, torch.nn.functional as F
import pyarrow.parquet as pq
from PIL import Image
from torchvision.models.resnet import ResNet, Bottleneck

QS = os.environ.get("QS_DIR", "runs/quickstart")
BIN = os.environ.get("ITHN_BIN", "ithn-dist")
out = sys.argv[1]
H = dict(steps=3000, lr=1e-3, enc_layers=2, dec_layers=2, drop_vis=0.5, drop=0.1, pe_vis=1,
         use_bn=1, d=64, oracle=0, eval_every=500, bs=16, seed=1, img=64, threads=1, warm=0, vis_scale=1.0, ve="")
for kv in sys.argv[2:]:
    k, v = kv.split("="); H[k] = type(H[k])(float(v)) if not isinstance(H[k], str) else v
torch.set_num_threads(int(H["threads"])); torch.manual_seed(int(H["seed"]))
os.makedirs(out, exist_ok=True)
vocab = json.load(open(f"{QS}/prepared/vocab.json"))["tokens"]
itos = {i + 1: t for i, t in enumerate(vocab)}
V = len(vocab) + 1
mean = np.array([0.485, 0.456, 0.406]); std = np.array([0.229, 0.224, 0.225])

def load(split):
    t = pq.read_table(f"{QS}/prepared/{split}-00000.parquet", columns=["id", "ids", "image_0", "report"]).to_pylist()
    imgs, ids = [], []
    for r in t:
        im = np.asarray(Image.open(io.BytesIO(r["image_0"])).convert("RGB"), dtype=np.float32) / 255
        o = (im.shape[0] - int(H["img"])) // 2
        im = im[o:o + int(H["img"]), o:o + int(H["img"])]
        imgs.append(((im - mean) / std).transpose(2, 0, 1))
        ids.append(r["ids"][:60])
    return t, torch.tensor(np.stack(imgs), dtype=torch.float32), ids

cache = f"{out}/feats-{int(H['img'])}{'-ve' if H['ve'] else ''}.pt"
if os.path.exists(cache):
    D = torch.load(cache)
else:
    cnn = ResNet(Bottleneck, [1, 1, 1, 1], width_per_group=16); cnn.fc = nn.Identity()
    body = nn.Sequential(*list(cnn.children())[:-2]); body.train()
    if H["ve"]:  # a pretrained extractor (ops/probe.py cnn --save), in eval mode (running stats)
        from safetensors.torch import load_file
        child = {"conv1": "0", "bn1": "1", "layer1": "4", "layer2": "5", "layer3": "6", "layer4": "7"}
        sd = {child[k.split(".", 1)[0]] + "." + k.split(".", 1)[1]: v for k, v in load_file(H["ve"]).items()}
        body.load_state_dict(sd); body.eval()
    D = {}
    for split in ["train", "val", "test"]:
        rows, x, ids = load(split)
        with torch.no_grad():
            f = torch.cat([body(x[i:i + 256]) for i in range(0, len(x), 256)])  # B,2048,h,w
        D[split] = dict(ids=ids, rid=[r["id"] for r in rows], ref=[r["report"] for r in rows],
                        feats=f.flatten(2).transpose(1, 2).contiguous())
    torch.save(D, cache)

if H["oracle"]:
    # The phantom labels themselves as the "image": the decoder's learning speed alone.
    lab = {}
    for l in open(f"{QS}/images/findings.jsonl"):
        r = json.loads(l); lab[r["id"]] = [1.0 if v == 1 else 0.0 for k, v in sorted(r["chexpert"].items())]
    for d in D.values():
        f = torch.zeros_like(d["feats"])
        f[:, :, :14] = torch.tensor([lab[i] for i in d["rid"]])[:, None, :]
        d["feats"] = f

def pe(n, d):
    p = torch.zeros(n, d); pos = torch.arange(n).unsqueeze(1)
    div = torch.exp(torch.arange(0, d, 2) * (-math.log(10000.0) / d))
    p[:, 0::2] = torch.sin(pos * div); p[:, 1::2] = torch.cos(pos * div); return p

class M(nn.Module):
    def __init__(s, d=int(H["d"])):
        super().__init__()
        s.bn = nn.BatchNorm1d(2048) if H["use_bn"] else nn.Identity()
        s.emb_v = nn.Linear(2048, d); s.drop_v = nn.Dropout(H["drop_vis"])
        el = nn.TransformerEncoderLayer(d, 4, 2 * d, H["drop"], batch_first=True, norm_first=True)
        s.enc = nn.TransformerEncoder(el, int(H["enc_layers"])) if H["enc_layers"] > 0 else None
        s.enc_norm = nn.LayerNorm(d)
        dl = nn.TransformerDecoderLayer(d, 4, 2 * d, H["drop"], batch_first=True, norm_first=True)
        s.dec = nn.TransformerDecoder(dl, int(H["dec_layers"])); s.dec_norm = nn.LayerNorm(d)
        s.emb_t = nn.Embedding(V, d); s.out = nn.Linear(d, V); s.d = d
        s.register_buffer("pe", pe(100, d)); s.drop = nn.Dropout(H["drop"])
    def encode(s, f):
        B, P, C = f.shape
        x = s.bn(f.reshape(B * P, C)).reshape(B, P, C)
        x = s.drop_v(F.relu(s.emb_v(x))) * H["vis_scale"]
        if H["pe_vis"]: x = x + s.pe[:P]
        x = s.drop(x)
        if s.enc is not None: x = s.enc(x)
        return s.enc_norm(x)
    def decode(s, mem, y):
        T = y.shape[1]
        x = s.drop(s.emb_t(y) * math.sqrt(s.d) + s.pe[:T])
        mask = torch.triu(torch.full((T, T), float("-inf")), 1)
        return F.log_softmax(s.out(s.dec_norm(s.dec(x, mem, tgt_mask=mask))), -1)

m = M(); opt = torch.optim.Adam(m.parameters(), lr=H["lr"], betas=(0.9, 0.98), eps=1e-9, amsgrad=True, weight_decay=5e-5)
tr = D["train"]; N = len(tr["ids"])
def batch(idx, d):
    L = max(len(d["ids"][i]) for i in idx)
    y = torch.zeros(len(idx), L, dtype=torch.long)
    for j, i in enumerate(idx): y[j, :len(d["ids"][i])] = torch.tensor(d["ids"][i])
    return d["feats"][idx], y

def greedy(d, split):
    m.eval(); hyps = []
    with torch.no_grad():
        for a in range(0, len(d["ids"]), 64):
            idx = list(range(a, min(a + 64, len(d["ids"]))))
            mem = m.encode(d["feats"][idx]); y = torch.zeros(len(idx), 1, dtype=torch.long)
            done = torch.zeros(len(idx), dtype=torch.bool)
            for t in range(40):
                nxt = m.decode(mem, y)[:, -1].argmax(-1); nxt[done] = 0
                y = torch.cat([y, nxt[:, None]], 1); done |= nxt == 0
                if done.all(): break
            for r in y[:, 1:].tolist():
                hyps.append(" ".join(itos[t] for t in r if t != 0) if 0 not in r else " ".join(itos[t] for t in r[:r.index(0)]))
    m.train()
    path = f"{out}/hyps-{split}.jsonl"
    with open(path, "w") as f:
        for i, h in zip(d["rid"], hyps): f.write(json.dumps({"id": i, "report": h}) + "\n")
    with open(f"{out}/refs-{split}.jsonl", "w") as f:
        for i, r in zip(d["rid"], d["ref"]): f.write(json.dumps({"id": i, "report": r}) + "\n")
    s = subprocess.run([BIN, "score", "--hyps", path, "--refs", f"{out}/refs-{split}.jsonl", "--no-meteor", "--json", "--ce",
                        "--ce-labels", f"{QS}/images/findings.jsonl"], capture_output=True, text=True)
    try:
        j = json.loads(s.stdout); ce = j.get("ce_vs_labels", {}).get("micro_findings", {}).get("f1")
        return len(set(hyps)), j.get("BLEU_4"), ce
    except Exception:
        return len(set(hyps)), None, s.stderr[-300:]

def own_other(d):
    m.eval(); tot = [0.0, 0.0]; n = 0
    with torch.no_grad():
        idx = list(range(len(d["ids"])))
        f, y = batch(idx, d)
        for k, ff in enumerate([f, f.roll(1, 0)]):
            lp = m.decode(m.encode(ff), y[:, :-1]); tgt = y[:, 1:]; mask = (tgt > 0).float()
            tot[k] = float(-(lp.gather(2, tgt[..., None])[..., 0] * mask).sum() / mask.sum())
    m.train(); return tot

t0 = time.time(); g = torch.Generator().manual_seed(int(H["seed"]))
perm = torch.randperm(N, generator=g); p = 0
for step in range(1, int(H["steps"]) + 1):
    if p + int(H["bs"]) > N: perm = torch.randperm(N, generator=g); p = 0
    idx = perm[p:p + int(H["bs"])].tolist(); p += int(H["bs"])
    f, y = batch(idx, tr)
    if H["warm"]:
        for gr in opt.param_groups: gr["lr"] = H["lr"] * min(1.0, step / H["warm"])
    lp = m.decode(m.encode(f), y[:, :-1]); tgt = y[:, 1:]; mask = (tgt > 0).float()
    loss = -(lp.gather(2, tgt[..., None])[..., 0] * mask).sum() / mask.sum()
    opt.zero_grad(); loss.backward(); opt.step()
    if step % int(H["eval_every"]) == 0:
        oo = own_other(D["val"]); dv, b4, ce = greedy(D["val"], "val")
        print(f"step {step} {time.time()-t0:.0f}s loss {loss.item():.3f} val own/other {oo[0]:.4f}/{oo[1]:.4f} distinct {dv} B4 {b4} CEf {ce}", flush=True)
