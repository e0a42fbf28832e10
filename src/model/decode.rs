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
        let fed: Vec<i64> = seq
            .iter()
            .flat_map(|s| std::iter::once(0).chain(s[..t].iter().copied()))
            .collect();
        let ids = Tensor::from_slice(&fed)
            .view([b as i64, t as i64 + 1])
            .to_device(dev);
        let lp = step(model, mode, &ids, &mut cache);
        if t == len {
            break;
        }
        let mut rows = Vec::<f32>::try_from(lp.to_device(tch::Device::Cpu).contiguous().view([-1]))
            .expect("decoder log-probs are f32 [B, V+1]");
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

/// The log-prob row each beam's newest token was chosen from, per step, with the parent beam of
/// every row. Why not one `[B·k, t, V+1]` history reordered at every step (what the reference
/// keeps): that copies O(t·V) per row per step and re-allocates a growing buffer (page faults
/// for every step); walking the parents back costs O(t) per *returned* beam, once at the end.
struct BeamRows {
    /// Per step: `[B·k, V+1]` the chosen rows of that step's beams.
    rows: Vec<Tensor>,
    /// Per step: the row of the previous step each beam extends (`state_ix`).
    parents: Vec<Vec<i64>>,
}

impl BeamRows {
    /// `[step+1, V+1]` the rows of the beam at (`step`, `row`), first step first.
    fn path(&self, step: usize, row: usize) -> Tensor {
        let mut picked = Vec::with_capacity(step + 1);
        let mut r = row as i64;
        for s in (0..=step).rev() {
            picked.push(self.rows[s].get(r));
            r = self.parents[s][r as usize];
        }
        picked.reverse();
        Tensor::stack(&picked, 0)
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
    model.with_precision(|| beam_inner(model, att_feats, max_len as i64, beam as i64, mode))
}

/// The flattened indices of the `k` best candidates per row, best first: what the reference's
/// descending `sort` then `[:, :k]` picks. `topk` of k+1 gives the same indices whenever the
/// k+1 best values are distinct (the order is then fixed by the values alone); a tie among
/// them — where the two algorithms may order equal values differently — takes the full sort.
/// A full sort of B × k·(V+1) values per step was the largest single cost of beam search.
fn best_k(cand: &Tensor, k: i64) -> Tensor {
    let n = cand.size()[1];
    if k < n {
        let (vals, ix) = cand.topk(k + 1, -1, true, true);
        let distinct = vals
            .narrow(1, 0, k)
            .gt_tensor(&vals.narrow(1, 1, k))
            .all()
            .int64_value(&[])
            != 0;
        if distinct {
            return ix.narrow(1, 0, k);
        }
    }
    cand.sort(-1, true).1.narrow(1, 0, k)
}

fn beam_inner(
    model: &R2GenCmn,
    att_feats: &Tensor,
    max_len: i64,
    k: i64,
    mode: StepMode,
) -> Decoded {
    let dev = att_feats.device();
    let b = att_feats.size()[0];
    let v1 = model.logit_dim();
    let mut cache: DecoderCache = model.start_decoding(att_feats);
    // First step: one (single log-softmax) row per image; only "beam 0" exists.
    let mut lp = step(
        model,
        mode,
        &Tensor::zeros([b, 1], (Kind::Int64, dev)),
        &mut cache,
    );
    let mut parents = 1i64;
    let mut sums = Tensor::zeros([b, 1], (Kind::Float, dev));
    let mut seqs = Tensor::zeros([b, 0], (Kind::Int64, dev));
    let mut history = BeamRows {
        rows: Vec::new(),
        parents: Vec::new(),
    };
    let mut done: Vec<Vec<Done>> = (0..b).map(|_| Vec::new()).collect();
    let offsets = Tensor::arange(b, (Kind::Int64, dev)).unsqueeze(1);
    for t in 0..max_len {
        let lp3 = lp.view([b, parents, v1]);
        let cand = (sums.unsqueeze(-1) + &lp3).view([b, parents * v1]);
        let ix = best_k(&cand, k);
        let beam_ix = ix.divide_scalar_mode(v1, "floor");
        let word = ix.remainder(v1);
        let state_ix = (&beam_ix + &offsets * parents).view([-1]);
        seqs = Tensor::cat(&[seqs.index_select(0, &state_ix), word.view([-1, 1])], 1);
        history.rows.push(
            lp3.gather(1, &beam_ix.unsqueeze(-1).expand([b, k, v1], true), false)
                .view([b * k, v1]),
        );
        history
            .parents
            .push(Vec::<i64>::try_from(&state_ix).unwrap_or_default());
        sums = sums.gather(1, &beam_ix, false) + lp3.view([b, parents * v1]).gather(1, &ix, false);
        if t == 0 {
            cache.select(&state_ix); // one row per image → k rows per image
        } else {
            cache.select_within_images(&state_ix); // state_ix stays within each image's beams
        }
        parents = k;
        let last = t == max_len - 1;
        let ended = record_done(&mut done, &word, &sums, &seqs, t as usize, last);
        if last {
            break;
        }
        let ended = Tensor::from_slice(&ended).to_device(dev).view([b, k]);
        sums = sums.where_self(&ended.logical_not(), &(&sums - 1000.0));
        if settled(&done, &sums) {
            break;
        }
        let input = Tensor::cat(
            &[
                Tensor::zeros([b * k, 1], (Kind::Int64, dev)),
                seqs.shallow_clone(),
            ],
            1,
        );
        // The reference applies log_softmax a second time to the step's log-probs.
        lp = step(model, mode, &input, &mut cache).log_softmax(-1, Kind::Float);
    }
    collect_best(done, &history, max_len, v1, dev)
}

/// Copies every beam that just emitted 0 (or every beam, at the last step) to `done` with its
/// running sum as p. Returns the ended flags, row-major over (image, beam).
fn record_done(
    done: &mut [Vec<Done>],
    word: &Tensor,
    sums: &Tensor,
    seqs: &Tensor,
    step: usize,
    last: bool,
) -> Vec<bool> {
    let k = word.size()[1] as usize;
    let words = Vec::<i64>::try_from(word.reshape([-1])).unwrap_or_default();
    let sums = Vec::<f32>::try_from(sums.reshape([-1])).unwrap_or_default();
    let mut ended = vec![false; words.len()];
    for (j, end) in ended.iter_mut().enumerate() {
        if words[j] == 0 || last {
            *end = true;
            done[j / k].push(Done {
                seq: Vec::<i64>::try_from(seqs.get(j as i64)).unwrap_or_default(),
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
fn settled(done: &[Vec<Done>], sums: &Tensor) -> bool {
    let k = sums.size()[1] as usize;
    let sums = Vec::<f32>::try_from(sums.reshape([-1])).unwrap_or_default();
    done.iter().zip(sums.chunks(k)).all(|(d, s)| {
        let best = d.iter().map(|x| x.p).fold(f64::NEG_INFINITY, f64::max);
        s.iter().all(|&x| (x as f64) <= best)
    })
}

/// Per image: the done beam with the highest p (stable sort, as Python's `sorted`), padded.
fn collect_best(
    done: Vec<Vec<Done>>,
    history: &BeamRows,
    max_len: i64,
    v1: i64,
    dev: tch::Device,
) -> Decoded {
    let b = done.len() as i64;
    let seq = Tensor::zeros([b, max_len], (Kind::Int64, dev));
    let logprobs = Tensor::zeros([b, max_len, v1], (Kind::Float, dev));
    let mut scores = Vec::new();
    for (i, mut beams) in done.into_iter().enumerate() {
        beams.sort_by(|a, c| c.p.partial_cmp(&a.p).unwrap_or(std::cmp::Ordering::Equal));
        let best = &beams[0];
        let n = best.seq.len() as i64;
        seq.get(i as i64)
            .narrow(0, 0, n)
            .copy_(&Tensor::from_slice(&best.seq).to_device(dev));
        logprobs
            .get(i as i64)
            .narrow(0, 0, n)
            .copy_(&history.path(best.step, best.row));
        scores.push(best.p);
    }
    Decoded {
        seq,
        logprobs,
        scores,
    }
}
