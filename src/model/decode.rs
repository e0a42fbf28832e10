//! Report decoding with the reference sampler's exact semantics (SPEC §4, fixture README §4):
//! greedy with the reference trigram blocking, and beam search (double log-softmax after the
//! first step, −1000 for finished beams that keep expanding, no length penalty, no trigram
//! blocking). Both are batched over images and use the decoder's incremental key/value cache;
//! both run in eval mode under libtorch's inference mode (no autograd dispatch per op; the
//! returned tensors are inference tensors, read-only outside).

use std::collections::HashMap;

use tch::{Kind, Tensor};

use super::inference::InferenceModeGuard;
use super::r2gencmn::R2GenCmn;
use super::transformer::DecoderCache;

/// Penalty per earlier occurrence of a trigram in greedy decoding: the reference's
/// `mask · −0.693 · 2.0` (ln ½ rounded, times alpha 2).
const TRIGRAM_PENALTY: f64 = -0.693;
const TRIGRAM_ALPHA: f64 = 2.0;

/// How each decoding step runs the decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepMode {
    /// Incremental: only the newest position runs through the layers (the reference's path).
    Cached,
    /// The whole history runs through the layers at every step (reference for benchmarks/tests).
    Recompute,
}

fn step(model: &R2GenCmn, mode: StepMode, history: &Tensor, cache: &mut DecoderCache) -> Tensor {
    let lp = match mode {
        StepMode::Cached => model.decode_step(history, cache),
        StepMode::Recompute => model.decode_step_full(history, cache),
    };
    lp.to_kind(Kind::Float)
}

/// The tokens fed to the decoder, `[rows, t + 1]`: BOS (0), then each row's `t` tokens so far.
fn fed_tokens<'a>(
    rows: impl ExactSizeIterator<Item = &'a [i64]>,
    t: usize,
    dev: tch::Device,
) -> Tensor {
    let n = rows.len() as i64;
    let fed: Vec<i64> = rows
        .flat_map(|s| std::iter::once(0).chain(s.iter().copied()))
        .collect();
    Tensor::from_slice(&fed)
        .view([n, t as i64 + 1])
        .to_device(dev)
}

/// A step's log-prob rows `[rows, V+1]` copied to the host, row-major, for the bookkeeping.
fn host_rows(lp: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(lp.to_device(tch::Device::Cpu).contiguous().view([-1]))
        .expect("decoder log-probs are f32 [rows, V+1]")
}

/// Decoded sequences of a batch.
#[derive(Debug)]
pub struct Decoded {
    /// `[B, L]` token ids, 0-padded (L = max length).
    pub seq: Tensor,
    /// `[B, L, V+1]` the log-prob row each token was chosen from, 0-padded.
    pub logprobs: Tensor,
    /// Per image: the beam score (summed log-probs) or, for greedy, the sum of chosen log-probs.
    pub scores: Vec<f64>,
}

impl Decoded {
    /// Token ids of row `i` up to (excluding) the first 0.
    pub fn tokens(&self, i: usize) -> Vec<i64> {
        let row: Vec<i64> = Vec::<i64>::try_from(self.seq.get(i as i64)).unwrap_or_default();
        row.into_iter().take_while(|&t| t != 0).collect()
    }
}

/// Greedy decoding of up to `max_len` tokens for patch features `att_feats` `[B, S, 2048]`.
pub fn greedy(
    model: &R2GenCmn,
    att_feats: &Tensor,
    max_len: usize,
    block_trigrams: bool,
) -> Decoded {
    greedy_with(model, att_feats, max_len, block_trigrams, StepMode::Cached)
}

/// [`greedy`] with an explicit [`StepMode`].
pub fn greedy_with(
    model: &R2GenCmn,
    att_feats: &Tensor,
    max_len: usize,
    block_trigrams: bool,
    mode: StepMode,
) -> Decoded {
    let _g = tch::no_grad_guard();
    let _inference = InferenceModeGuard::new();
    model.with_precision(|| greedy_inner(model, att_feats, max_len as i64, block_trigrams, mode))
}

fn greedy_inner(
    model: &R2GenCmn,
    att_feats: &Tensor,
    max_len: i64,
    block: bool,
    mode: StepMode,
) -> Decoded {
    let dev = att_feats.device();
    let b = att_feats.size()[0] as usize;
    let v1 = model.logit_dim() as usize;
    let len = max_len as usize;
    let mut cache = model.start_decoding(att_feats);
    // The bookkeeping of a step (trigram penalty, argmax, finished rows, the chosen log-probs)
    // runs on the host over the step's `[B, V+1]` log-prob rows, with the reference's float
    // arithmetic: at batch 1 it replaced ~15 tensor ops per step, each costing more in
    // dispatch than the work it did. Only the newest tokens go back to the model.
    let mut seq = vec![vec![0i64; len]; b];
    let mut seq_lp = vec![0f32; b * len * v1];
    let mut trigrams: Vec<HashMap<(i64, i64), Vec<i64>>> = vec![HashMap::new(); b];
    let mut unfinished = vec![true; b];
    let mut scores = vec![0f64; b];
    let penalty = TRIGRAM_PENALTY as f32;
    let alpha = TRIGRAM_ALPHA as f32;
    for t in 0..=len {
        // The tokens fed so far, `[B, t + 1]`: BOS, then each row's chosen tokens.
        let ids = fed_tokens(seq.iter().map(|s| &s[..t]), t, dev);
        let lp = step(model, mode, &ids, &mut cache);
        if t == len {
            break;
        }
        let mut rows = host_rows(&lp);
        if block && t >= 3 {
            let mask = trigram_counts(&seq, &mut trigrams, t, v1);
            for (x, &m) in rows.iter_mut().zip(&mask) {
                *x += m * penalty * alpha;
            }
        }
        for i in 0..b {
            let row = &mut rows[i * v1..(i + 1) * v1];
            let mut id = argmax(row) as i64;
            if t > 0 && !unfinished[i] {
                id = 0;
                row.iter_mut().for_each(|x| *x *= 0.0);
            }
            unfinished[i] = unfinished[i] && id != 0;
            seq_lp[(i * len + t) * v1..(i * len + t + 1) * v1].copy_from_slice(row);
            seq[i][t] = id;
            scores[i] += row[id as usize] as f64;
        }
        if !unfinished.iter().any(|&u| u) {
            break;
        }
    }
    let flat: Vec<i64> = seq.concat();
    let (b, v1) = (b as i64, v1 as i64);
    Decoded {
        seq: Tensor::from_slice(&flat)
            .reshape([b, max_len])
            .to_device(dev),
        logprobs: Tensor::from_slice(&seq_lp)
            .reshape([b, max_len, v1])
            .to_device(dev),
        scores,
    }
}

/// `torch.argmax` of one row: the first index of the maximum, a NaN counting as the maximum.
fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x.is_nan() {
            return i;
        }
        if x > row[best] {
            best = i;
        }
    }
    best
}

/// Records the trigram ending at step t−1 and returns the counts `[B·(V+1)]` of blocked
/// continuations of the last two tokens (the reference's bookkeeping, on the host).
fn trigram_counts(
    seq: &[Vec<i64>],
    trigrams: &mut [HashMap<(i64, i64), Vec<i64>>],
    t: usize,
    v1: usize,
) -> Vec<f32> {
    let mut mask = vec![0f32; seq.len() * v1];
    for (i, s) in seq.iter().enumerate() {
        trigrams[i]
            .entry((s[t - 3], s[t - 2]))
            .or_default()
            .push(s[t - 1]);
        if let Some(next) = trigrams[i].get(&(s[t - 2], s[t - 1])) {
            for &c in next {
                mask[i * v1 + c as usize] += 1.0;
            }
        }
    }
    mask
}

/// A finished beam: its tokens, its score, and where its last log-prob row is (step, row of
/// that step's beams), from which [`BeamRows`] walks back to the first step.
#[derive(Debug)]
struct Done {
    seq: Vec<i64>,
    step: usize,
    row: usize,
    p: f64,
}

/// The log-prob rows of every step (host copies, `[rows of that step, V+1]` row-major) with the
/// row of that step each beam was chosen from. Why not one `[B·k, t, V+1]` history reordered at
/// every step (what the reference keeps): that copies O(t·V) per row per step and re-allocates a
/// growing buffer; walking the parents back costs O(t) per *returned* beam, once at the end.
struct BeamRows {
    v1: usize,
    /// Per step: that step's log-prob rows (one per parent beam), flattened.
    rows: Vec<Vec<f32>>,
    /// Per step: for each new beam, the row of that step it extends (`state_ix`), which is also
    /// the index of the previous step's beam it continues.
    parents: Vec<Vec<usize>>,
}

impl BeamRows {
    /// The rows of the beam at (`step`, `row`), first step first, flattened `[step+1, V+1]`.
    fn path(&self, step: usize, row: usize) -> Vec<f32> {
        let v1 = self.v1;
        let mut picked = vec![0f32; (step + 1) * v1];
        let mut r = row;
        for s in (0..=step).rev() {
            let p = self.parents[s][r];
            picked[s * v1..(s + 1) * v1].copy_from_slice(&self.rows[s][p * v1..(p + 1) * v1]);
            r = p;
        }
        picked
    }
}

/// Beam search with `beam` beams per image, up to `max_len` tokens.
pub fn beam_search(model: &R2GenCmn, att_feats: &Tensor, max_len: usize, beam: usize) -> Decoded {
    beam_search_with(model, att_feats, max_len, beam, StepMode::Cached)
}

/// [`beam_search`] with an explicit [`StepMode`].
pub fn beam_search_with(
    model: &R2GenCmn,
    att_feats: &Tensor,
    max_len: usize,
    beam: usize,
    mode: StepMode,
) -> Decoded {
    let _g = tch::no_grad_guard();
    let _inference = InferenceModeGuard::new();
    model.with_precision(|| beam_inner(model, att_feats, max_len, beam, mode))
}

/// The flattened indices of the `k` best candidates of one image, best first: what the
/// reference's descending `sort` then `[:k]` picks. The k+1 best values found on the host give
/// the same indices whenever they are distinct (the order is then fixed by the values alone);
/// a tie among them, or a NaN, takes torch's full sort on `dev` (where the two algorithms could
/// order equal values differently). A full sort of k·(V+1) values per image per step was the
/// largest single cost of beam search.
fn best_k(cand: &[f32], k: usize, dev: tch::Device) -> Vec<usize> {
    if k < cand.len() && !cand.iter().any(|x| x.is_nan()) {
        // The k+1 largest (value, index), descending; insertion keeps it short and sorted.
        let mut top: Vec<(f32, usize)> = Vec::with_capacity(k + 2);
        for (i, &x) in cand.iter().enumerate() {
            if top.len() == k + 1 && x <= top[k].0 {
                continue;
            }
            let at = top.iter().position(|&(y, _)| x > y).unwrap_or(top.len());
            top.insert(at, (x, i));
            top.truncate(k + 1);
        }
        if top.windows(2).all(|w| w[0].0 > w[1].0) {
            return top[..k].iter().map(|&(_, i)| i).collect();
        }
    }
    let ix = Tensor::from_slice(cand).to_device(dev).sort(-1, true).1;
    let ix = Vec::<i64>::try_from(ix.narrow(0, 0, k as i64).to_device(tch::Device::Cpu))
        .expect("sort indices are i64");
    ix.into_iter().map(|i| i as usize).collect()
}

/// The beams a step keeps: per new beam (row-major over image, beam), the row of the step it
/// extends, the word it appends and its running sum.
struct Chosen {
    state_ix: Vec<usize>,
    words: Vec<i64>,
    sums: Vec<f32>,
}

impl Chosen {
    /// The new beams' token sequences: each parent's sequence and the chosen word.
    fn extend(&self, seqs: &[Vec<i64>]) -> Vec<Vec<i64>> {
        self.state_ix
            .iter()
            .zip(&self.words)
            .map(|(&s, &w)| {
                let mut q = Vec::with_capacity(seqs[s].len() + 1);
                q.extend_from_slice(&seqs[s]);
                q.push(w);
                q
            })
            .collect()
    }
}

/// Reorders the decoder cache to the new beams' parents. The first step repeats each image's
/// one row k times; later steps stay within each image's beams, and when every beam extends
/// its own row (the same order) nothing moves.
fn reorder_cache(
    cache: &mut DecoderCache,
    state_ix: &[usize],
    first: bool,
    square: bool,
    dev: tch::Device,
) {
    if square && state_ix.iter().enumerate().all(|(j, &s)| j == s) {
        return;
    }
    let index =
        Tensor::from_slice(&state_ix.iter().map(|&s| s as i64).collect::<Vec<_>>()).to_device(dev);
    if first {
        cache.select(&index);
    } else {
        cache.select_within_images(&index);
    }
}

/// Per image: the candidates `sums[parent] + rows[parent]` over its `parents` rows (f32, the
/// reference's addition) and their `k` best ([`best_k`]).
fn choose_beams(
    rows: &[f32],
    sums: &[f32],
    parents: usize,
    k: usize,
    v1: usize,
    dev: tch::Device,
) -> Chosen {
    let b = sums.len() / parents;
    let mut cand = vec![0f32; parents * v1];
    let mut out = Chosen {
        state_ix: Vec::with_capacity(b * k),
        words: Vec::with_capacity(b * k),
        sums: Vec::with_capacity(b * k),
    };
    for i in 0..b {
        for p in 0..parents {
            let s = sums[i * parents + p];
            let src = &rows[(i * parents + p) * v1..(i * parents + p + 1) * v1];
            for (c, &x) in cand[p * v1..(p + 1) * v1].iter_mut().zip(src) {
                *c = s + x;
            }
        }
        for ix in best_k(&cand, k, dev) {
            out.state_ix.push(i * parents + ix / v1);
            out.words.push((ix % v1) as i64);
            out.sums.push(cand[ix]);
        }
    }
    out
}

fn beam_inner(
    model: &R2GenCmn,
    att_feats: &Tensor,
    max_len: usize,
    k: usize,
    mode: StepMode,
) -> Decoded {
    let dev = att_feats.device();
    let b = att_feats.size()[0] as usize;
    let v1 = model.logit_dim() as usize;
    let mut cache: DecoderCache = model.start_decoding(att_feats);
    // The candidate bookkeeping of a step (running sums plus log-probs, the k best per image,
    // the parents, the −1000 of ended beams) runs on the host over the step's log-prob rows with
    // the reference's float arithmetic; at batch 1 it replaced ~35 tensor ops per step.
    // First step: one (single log-softmax) row per image; only "beam 0" exists.
    let mut lp = step(
        model,
        mode,
        &Tensor::zeros([b as i64, 1], (Kind::Int64, dev)),
        &mut cache,
    );
    let mut parents = 1usize;
    let mut sums = vec![0f32; b];
    let mut seqs: Vec<Vec<i64>> = vec![Vec::new(); b];
    let mut history = BeamRows {
        v1,
        rows: Vec::new(),
        parents: Vec::new(),
    };
    let mut done: Vec<Vec<Done>> = (0..b).map(|_| Vec::new()).collect();
    for t in 0..max_len {
        let rows = host_rows(&lp);
        let chosen = choose_beams(&rows, &sums, parents, k, v1, dev);
        seqs = chosen.extend(&seqs);
        let Chosen {
            state_ix,
            words,
            sums: new_sums,
        } = chosen;
        sums = new_sums;
        reorder_cache(&mut cache, &state_ix, t == 0, parents == k, dev);
        history.rows.push(rows);
        history.parents.push(state_ix);
        parents = k;
        let last = t == max_len - 1;
        let ended = record_done(&mut done, &words, &sums, &seqs, t, k, last);
        if last {
            break;
        }
        for (s, &e) in sums.iter_mut().zip(&ended) {
            if e {
                *s -= 1000.0;
            }
        }
        if settled(&done, &sums, k) {
            break;
        }
        let input = fed_tokens(seqs.iter().map(Vec::as_slice), t + 1, dev);
        // The reference applies log_softmax a second time to the step's log-probs.
        lp = step(model, mode, &input, &mut cache).log_softmax(-1, Kind::Float);
    }
    collect_best(done, &history, max_len, v1, dev)
}

/// Copies every beam that just emitted 0 (or every beam, at the last step) to `done` with its
/// running sum as p. Returns the ended flags, row-major over (image, beam).
fn record_done(
    done: &mut [Vec<Done>],
    words: &[i64],
    sums: &[f32],
    seqs: &[Vec<i64>],
    step: usize,
    k: usize,
    last: bool,
) -> Vec<bool> {
    let mut ended = vec![false; words.len()];
    for (j, end) in ended.iter_mut().enumerate() {
        if words[j] == 0 || last {
            *end = true;
            done[j / k].push(Done {
                seq: seqs[j].clone(),
                step,
                row: j,
                p: sums[j] as f64,
            });
        }
    }
    ended
}

/// True when no image's answer can change any more: log-probs are ≤ 0, so a running sum only
/// decreases, and a future done beam (p ≤ its current sum) cannot beat an existing one whose
/// p is already ≥ every current sum (ties keep the earlier beam, as the stable sort does).
/// Stopping then returns exactly what running to `max_len` would.
fn settled(done: &[Vec<Done>], sums: &[f32], k: usize) -> bool {
    done.iter().zip(sums.chunks(k)).all(|(d, s)| {
        let best = d.iter().map(|x| x.p).fold(f64::NEG_INFINITY, f64::max);
        s.iter().all(|&x| (x as f64) <= best)
    })
}

/// Per image: the done beam with the highest p (stable sort, as Python's `sorted`), padded.
fn collect_best(
    done: Vec<Vec<Done>>,
    history: &BeamRows,
    max_len: usize,
    v1: usize,
    dev: tch::Device,
) -> Decoded {
    let b = done.len();
    let mut seq = vec![0i64; b * max_len];
    let mut logprobs = vec![0f32; b * max_len * v1];
    let mut scores = Vec::new();
    for (i, mut beams) in done.into_iter().enumerate() {
        beams.sort_by(|a, c| c.p.partial_cmp(&a.p).unwrap_or(std::cmp::Ordering::Equal));
        let best = &beams[0];
        let n = best.seq.len();
        seq[i * max_len..i * max_len + n].copy_from_slice(&best.seq);
        let path = history.path(best.step, best.row);
        logprobs[i * max_len * v1..i * max_len * v1 + path.len()].copy_from_slice(&path);
        scores.push(best.p);
    }
    let (b, l, v1) = (b as i64, max_len as i64, v1 as i64);
    Decoded {
        seq: Tensor::from_slice(&seq).reshape([b, l]).to_device(dev),
        logprobs: Tensor::from_slice(&logprobs)
            .reshape([b, l, v1])
            .to_device(dev),
        scores,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// torch's descending sort, first k indices: what the reference picks.
    fn torch_best(cand: &[f32], k: usize) -> Vec<usize> {
        let ix = Tensor::from_slice(cand)
            .sort(-1, true)
            .1
            .narrow(0, 0, k as i64);
        Vec::<i64>::try_from(ix)
            .unwrap()
            .into_iter()
            .map(|i| i as usize)
            .collect()
    }

    #[test]
    fn best_k_matches_torch_sort() {
        let dev = tch::Device::Cpu;
        let mut rng = crate::rng::SplitMix64::new(5);
        for trial in 0..200 {
            let n = 2 + trial % 40;
            // Few distinct values in some trials so that ties inside the top k+1 occur.
            let levels = if trial % 3 == 0 { 4 } else { 1 << 20 };
            let mut cand: Vec<f32> = (0..n)
                .map(|_| -((rng.next_u64() % levels) as f32) / 7.0)
                .collect();
            if trial % 17 == 0 {
                cand[trial % n] = f32::NAN;
            }
            if trial % 11 == 0 {
                cand[(trial + 1) % n] = f32::NEG_INFINITY;
            }
            for k in 1..n.min(5) {
                let got = best_k(&cand, k, dev);
                let want = torch_best(&cand, k);
                // Ties and NaNs take torch's sort itself, so the indices always agree.
                assert_eq!(got, want, "trial {trial} k {k}: {cand:?}");
            }
        }
    }
}
