"""Reference side of `ithn-dist bench decode`: the R2GenCMN sampling loop as the PyTorch
reference runs it (SPEC §4; fixture README §4 "Sampling"), in torch, on the same weights and
features as the Rust side.

What the reference does per step, and so what this script does (its costs are the point):
* the model is built from nn.Modules named like the reference's state dict (`encoder_decoder.*`),
  loaded with `load_state_dict`, in eval mode under `torch.no_grad()`;
* the encoder runs once; the memory matrix M is expanded to every row and projected through the
  memory module's key/value linears at every call (visual side once, text side at every step,
  for every beam row), as the reference's memory module does;
* at every step the whole token history is embedded again (embedding·√d, position, memory
  response) and only the newest row goes through the decoder layers, with the projected
  self-attention keys/values of earlier positions cached per layer and the source-attention
  keys/values of the encoder output projected at the first step;
* beam search (beam 3, one group, no length penalty, no trigram blocking): the first step
  expands beam 0 of each image; later steps apply log_softmax a second time; candidates =
  running sum + log-prob over (beam, word) sorted descending; a beam that emits 0 (or any beam at
  step L−1) is copied to the done list and its sum lowered by 1000; every one of the L steps runs;
  the answer is the done beam with the highest p (stable sort);
* greedy: argmax, the reference trigram blocking (−0.693·2 per earlier occurrence), rows that
  finished emit 0, stop when every row has finished.

Input: --weights (a safetensors state dict with the reference's names) and --feats (safetensors
with `att_feats.<B>` [B, S, 2048] per batch size). With --serve it waits for `<method> <batch>` lines on stdin and answers each with that row's
line (what `bench decode --rounds` uses, pairing each row's two sides in time). Output: one JSON
line per (method, batch):
{"method", "batch", "seconds" (median of --repeat timed runs after one warm-up), "cpu_seconds"
(this process, same run), "reports_per_s", "tokens" (per image, up to the first 0)}.
"""
import argparse
import copy
import json
import math
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

PREFIX = "encoder_decoder."


class LayerNorm(nn.Module):
    """a·(x − mean)/(std + eps) + b with the unbiased std (the reference's, not torch's)."""

    def __init__(self, d, eps=1e-6):
        super().__init__()
        self.a_2 = nn.Parameter(torch.ones(d))
        self.b_2 = nn.Parameter(torch.zeros(d))
        self.eps = eps

    def forward(self, x):
        mean = x.mean(-1, keepdim=True)
        std = x.std(-1, keepdim=True)
        return self.a_2 * (x - mean) / (std + self.eps) + self.b_2


class Sublayer(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.norm = LayerNorm(d)

    def forward(self, x, f):
        return x + f(self.norm(x))


def split_heads(x, h):
    n, t, d = x.shape
    return x.view(n, t, h, d // h).transpose(1, 2)


def merge_heads(x):
    n, h, t, dk = x.shape
    return x.transpose(1, 2).contiguous().view(n, t, h * dk)


class MultiHeadedAttention(nn.Module):
    def __init__(self, d, h):
        super().__init__()
        self.h = h
        self.linears = nn.ModuleList([nn.Linear(d, d) for _ in range(4)])

    def attend(self, q, k, v, mask=None):
        q, k, v = (split_heads(x, self.h) for x in (q, k, v))
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
        if mask is not None:
            scores = scores.masked_fill(mask.unsqueeze(1) == 0, float("-inf"))
        return self.linears[3](merge_heads(F.softmax(scores, dim=-1) @ v))

    def forward(self, query, key, value, mask=None):
        return self.attend(self.linears[0](query), self.linears[1](key), self.linears[2](value), mask)


class MemoryModule(nn.Module):
    """Memory querying and responding: top-k of the scores over the memory slots, softmax over
    those k, weighted sum of the selected value rows. Keys and values are M projected per row."""

    def __init__(self, d, h, topk):
        super().__init__()
        self.h, self.topk = h, topk
        self.linears = nn.ModuleList([nn.Linear(d, d) for _ in range(4)])

    def forward(self, query, memory):
        q = split_heads(self.linears[0](query), self.h)  # [N, h, T, dk]
        k = split_heads(self.linears[1](memory), self.h)  # [N, h, S, dk]
        v = split_heads(self.linears[2](memory), self.h)
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
        top, idx = scores.topk(min(self.topk, scores.size(-1)))  # [N, h, T, k]
        n, h, t, kk = idx.shape
        rows = v.unsqueeze(2).expand(n, h, t, v.size(2), v.size(3))
        picked = torch.gather(rows, 3, idx.unsqueeze(-1).expand(n, h, t, kk, v.size(3)))
        out = (F.softmax(top, dim=-1).unsqueeze(3) @ picked).squeeze(3)  # [N, h, T, dk]
        return self.linears[3](merge_heads(out))


class FeedForward(nn.Module):
    def __init__(self, d, d_ff):
        super().__init__()
        self.w_1, self.w_2 = nn.Linear(d, d_ff), nn.Linear(d_ff, d)

    def forward(self, x):
        return self.w_2(F.relu(self.w_1(x)))


class EncoderLayer(nn.Module):
    def __init__(self, d, h, d_ff):
        super().__init__()
        self.self_attn = MultiHeadedAttention(d, h)
        self.feed_forward = FeedForward(d, d_ff)
        self.sublayer = nn.ModuleList([Sublayer(d) for _ in range(2)])

    def forward(self, x):
        x = self.sublayer[0](x, lambda y: self.self_attn(y, y, y))
        return self.sublayer[1](x, self.feed_forward)


class DecoderLayer(nn.Module):
    def __init__(self, d, h, d_ff):
        super().__init__()
        self.self_attn = MultiHeadedAttention(d, h)
        self.src_attn = MultiHeadedAttention(d, h)
        self.feed_forward = FeedForward(d, d_ff)
        self.sublayer = nn.ModuleList([Sublayer(d) for _ in range(3)])

    def step(self, x, past):
        """x [N, 1, d]; past = [self k, self v, src k, src v] (projected); returns x and past."""

        def self_attn(y):
            a = self.self_attn
            k = torch.cat([past[0], a.linears[1](y)], 1)
            v = torch.cat([past[1], a.linears[2](y)], 1)
            past[0], past[1] = k, v
            return a.attend(a.linears[0](y), k, v)

        x = self.sublayer[0](x, self_attn)
        x = self.sublayer[1](x, lambda y: self.src_attn.attend(self.src_attn.linears[0](y), past[2], past[3]))
        return self.sublayer[2](x, self.feed_forward), past


class Stack(nn.Module):
    def __init__(self, layer, n, d):
        super().__init__()
        self.layers = nn.ModuleList([copy.deepcopy(layer) for _ in range(n)])
        self.norm = LayerNorm(d)


class PositionalEncoding(nn.Module):
    def __init__(self, d, max_len=5000):
        super().__init__()
        self.register_buffer("pe", torch.zeros(1, max_len, d))

    def forward(self, x):
        return x + self.pe[:, : x.size(1)]


class Embeddings(nn.Module):
    def __init__(self, vocab, d):
        super().__init__()
        self.lut = nn.Embedding(vocab, d)
        self.d = d

    def forward(self, x):
        return self.lut(x) * math.sqrt(self.d)


class Transformer(nn.Module):
    def __init__(self, d, d_ff, h, layers, vocab, cmn):
        super().__init__()
        self.encoder = Stack(EncoderLayer(d, h, d_ff), layers, d)
        self.decoder = Stack(DecoderLayer(d, h, d_ff), layers, d)
        self.src_embed = nn.Sequential(PositionalEncoding(d))
        self.tgt_embed = nn.Sequential(Embeddings(vocab, d), PositionalEncoding(d))
        self.cmn = cmn


class EncoderDecoder(nn.Module):
    def __init__(self, d, d_ff, h, layers, vocab, cmm_size, topk, d_vf):
        super().__init__()
        self.cmn = MemoryModule(d, h, topk)
        self.model = Transformer(d, d_ff, h, layers, vocab, self.cmn)  # one shared memory module
        self.att_embed = nn.Sequential(nn.Linear(d_vf, d), nn.ReLU(), nn.Dropout(0.5))
        self.logit = nn.Linear(d, vocab)
        self.memory_matrix = nn.Parameter(torch.zeros(cmm_size, d))

    def rows_memory(self, n):
        return self.memory_matrix.unsqueeze(0).expand(n, *self.memory_matrix.shape)

    def encode(self, att_feats):
        x = self.att_embed(att_feats)
        x = x + self.cmn(x, self.rows_memory(x.size(0)))
        x = self.model.src_embed(x)
        for layer in self.model.encoder.layers:
            x = layer(x)
        return self.model.encoder.norm(x)

    def start(self, memory):
        """Per layer: empty self-attention past and the projected encoder keys/values."""
        n, d = memory.size(0), memory.size(2)
        empty = memory.new_zeros(n, 0, d)
        return [
            [empty, empty, l.src_attn.linears[1](memory), l.src_attn.linears[2](memory)]
            for l in self.model.decoder.layers
        ]

    def step(self, ys, past):
        """ys [N, t] history (BOS first) → log-probs [N, V+1] of the next token."""
        e = self.model.tgt_embed(ys)
        e = e + self.cmn(e, self.rows_memory(ys.size(0)))
        x = e[:, -1:]
        for i, layer in enumerate(self.model.decoder.layers):
            x, past[i] = layer.step(x, past[i])
        return F.log_softmax(self.logit(self.model.decoder.norm(x))[:, -1], dim=-1)


def reorder(past, ix):
    return [[t.index_select(0, ix) for t in p] for p in past]


def beam_search(m, att_feats, max_len, k):
    b = att_feats.size(0)
    memory = m.encode(att_feats)
    past = m.start(memory)
    ys = att_feats.new_zeros(b, 1, dtype=torch.long)
    lp = m.step(ys, past)
    v1 = lp.size(1)
    parents = 1
    sums = lp.new_zeros(b, 1)
    seqs = ys.new_zeros(b, 0)
    offsets = torch.arange(b).unsqueeze(1)
    done = [[] for _ in range(b)]
    for t in range(max_len):
        lp3 = lp.view(b, parents, v1)
        cand = (sums.unsqueeze(-1) + lp3).view(b, parents * v1)
        _, order = torch.sort(cand, -1, True)
        ix = order[:, :k]
        beam_ix, word = ix // v1, ix % v1
        state_ix = (beam_ix + offsets * parents).view(-1)
        seqs = torch.cat([seqs.index_select(0, state_ix), word.view(-1, 1)], 1)
        sums = cand.gather(1, ix)
        past = reorder(past, state_ix)
        parents = k
        for i in range(b):
            for j in range(k):
                if word[i, j].item() == 0 or t == max_len - 1:
                    done[i].append({"seq": seqs[i * k + j].clone(), "p": sums[i, j].item()})
                    sums[i, j] -= 1000
        if t == max_len - 1:
            break
        ys = torch.cat([ys.new_zeros(b * k, 1), seqs], 1)
        lp = F.log_softmax(m.step(ys, past), dim=-1)  # the reference's second log_softmax
    tokens = []
    for d in done:
        best = sorted(d, key=lambda x: -x["p"])[0]["seq"].tolist()
        tokens.append(best[: best.index(0)] if 0 in best else best)
    return tokens


def greedy(m, att_feats, max_len):
    b = att_feats.size(0)
    past = m.start(m.encode(att_feats))
    ys = att_feats.new_zeros(b, 1, dtype=torch.long)
    seq = [[] for _ in range(b)]
    trigrams = [{} for _ in range(b)]
    unfinished = torch.ones(b, dtype=torch.bool)
    for t in range(max_len + 1):
        lp = m.step(ys, past)
        if t >= 3:
            mask = torch.zeros_like(lp)
            for i, s in enumerate(seq):
                trigrams[i].setdefault((s[t - 3], s[t - 2]), []).append(s[t - 1])
                for c in trigrams[i].get((s[t - 2], s[t - 1]), []):
                    mask[i, c] += 1
            lp = lp + mask * -0.693 * 2.0
        if t == max_len:
            break
        it = lp.argmax(1)
        if t > 0:
            it = torch.where(unfinished, it, torch.zeros_like(it))
        unfinished = unfinished & (it != 0)
        for i, w in enumerate(it.tolist()):
            seq[i].append(w)
        if not unfinished.any():
            break
        ys = torch.cat([ys, it.unsqueeze(1)], 1)
    return [s[: s.index(0)] if 0 in s else s for s in seq]


def build(weights, heads, topk):
    sd = {k[len(PREFIX):]: v.float() for k, v in load_file(weights).items() if k.startswith(PREFIX)}
    d = sd["logit.weight"].shape[1]
    layers = len({k.split(".")[3] for k in sd if k.startswith("model.decoder.layers.")})
    m = EncoderDecoder(
        d=d,
        d_ff=sd["model.decoder.layers.0.feed_forward.w_1.weight"].shape[0],
        h=heads,
        layers=layers,
        vocab=sd["logit.weight"].shape[0],
        cmm_size=sd["memory_matrix"].shape[0],
        topk=topk,
        d_vf=sd["att_embed.0.weight"].shape[1],
    )
    m.load_state_dict(sd, strict=True)
    return m.eval()


def measure(m, feats, method, b, max_len, repeat):
    """One (method, batch) row: a warm-up run, then `repeat` timed runs; its JSON line."""
    att = feats[f"att_feats.{b}"].float()
    if method == "greedy":
        run = lambda: greedy(m, att, max_len)
    elif method.startswith("beam"):
        run = lambda: beam_search(m, att, max_len, int(method[4:]))
    else:
        raise SystemExit(f"unknown method {method!r} (greedy, beamK)")
    with torch.no_grad():
        tokens = run()  # warm-up
        times, cpu0 = [], time.process_time()
        for _ in range(repeat):
            t0 = time.perf_counter()
            tokens = run()
            times.append(time.perf_counter() - t0)
        cpu = (time.process_time() - cpu0) / repeat
    sec = statistics.median(times)
    return json.dumps({"method": method, "batch": b, "seconds": sec, "cpu_seconds": cpu,
                       "reports_per_s": b / sec, "tokens": tokens})


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", required=True)
    ap.add_argument("--feats", required=True)
    ap.add_argument("--heads", type=int, required=True)
    ap.add_argument("--topk", type=int, required=True)
    ap.add_argument("--max-len", type=int, required=True)
    ap.add_argument("--batch", default="1,16")
    ap.add_argument("--methods", default="greedy,beam3")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--serve", action="store_true",
                    help="measure on request: read `<method> <batch>` lines from stdin and answer "
                         "each with its JSON line, so the caller can time its own side right "
                         "after (rows paired in time)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    m = build(a.weights, a.heads, a.topk)
    feats = load_file(a.feats)
    if a.serve:
        for line in sys.stdin:
            if line.strip():
                method, b = line.split()
                print(measure(m, feats, method, int(b), a.max_len, a.repeat), flush=True)
        return
    for b in (int(x) for x in a.batch.split(",")):
        for method in a.methods.split(","):
            print(measure(m, feats, method, b, a.max_len, a.repeat), flush=True)


if __name__ == "__main__":
    main()
