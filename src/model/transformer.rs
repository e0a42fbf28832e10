//! The pre-norm Transformer of R2GenCMN (the "Annotated Transformer" layout): sinusoidal
//! positional encoding (a stored buffer, as in the reference state_dict), encoder and decoder
//! layers `x + dropout(f(LN(x)))`, final LayerNorms, and the decoder's cached single-step form.

use tch::{Device, Kind, Tensor};

use super::attention::{HeadsKv, MultiHeadAttention, SelfKv};
use super::layers::{Dropout, LayerNorm, Linear, LinearInit};
use super::memory::MemoryKv;
use super::weights::Scope;

/// Rows of the stored positional-encoding buffer (the reference's `max_len`).
pub const PE_LEN: i64 = crate::bounds::MAX_SEQ_LEN as i64;

/// `pe[pos, 2i] = sin(pos·exp(2i·(−ln 10000/d)))`, `pe[pos, 2i+1] = cos(...)`, float32, `[1, L, d]`.
pub fn positional_table(len: i64, d: i64) -> Tensor {
    let f = (Kind::Float, Device::Cpu);
    let position = Tensor::arange(len, f).unsqueeze(1);
    let div = (Tensor::arange_start_step(0, d, 2, f) * -(10000f64.ln() / d as f64)).exp();
    let arg = position * div;
    Tensor::stack(&[arg.sin(), arg.cos()], 2)
        .reshape([len, d])
        .unsqueeze(0)
}

/// Adds the positional encoding of positions `start..start+T` to `x` `[B, T, d]`.
pub fn add_position(pe: &Tensor, x: &Tensor, start: i64) -> Tensor {
    let t = x.size()[1];
    x + pe.narrow(1, start, t)
}

#[derive(Debug)]
pub struct FeedForward {
    w_1: Linear,
    w_2: Linear,
    dropout: f64,
}

impl FeedForward {
    fn new(s: &Scope, d_model: i64, d_ff: i64, dropout: f64) -> FeedForward {
        FeedForward {
            w_1: Linear::new(&s.sub("w_1"), d_model, d_ff, true, LinearInit::Xavier),
            w_2: Linear::new(&s.sub("w_2"), d_ff, d_model, true, LinearInit::Xavier),
            dropout,
        }
    }

    fn forward(&self, x: &Tensor, drop: &Dropout) -> Tensor {
        self.w_2
            .forward(&drop.apply(&self.w_1.forward(x).relu(), self.dropout))
    }
}

/// Sizes shared by every layer.
#[derive(Debug, Clone, Copy)]
pub struct Dims {
    pub d_model: i64,
    pub d_ff: i64,
    pub heads: i64,
    pub layers: i64,
    pub dropout: f64,
}

fn norms(s: &Scope, n: usize, d: i64) -> Vec<LayerNorm> {
    (0..n)
        .map(|i| LayerNorm::new(&s.sub("sublayer").sub(i).sub("norm"), d))
        .collect()
}

#[derive(Debug)]
struct EncoderLayer {
    self_attn: MultiHeadAttention,
    ff: FeedForward,
    norms: Vec<LayerNorm>,
}

#[derive(Debug)]
pub struct Encoder {
    layers: Vec<EncoderLayer>,
    norm: LayerNorm,
    dropout: f64,
}

impl Encoder {
    pub fn new(s: &Scope, d: Dims) -> Encoder {
        let layers = (0..d.layers)
            .map(|i| {
                let l = s.sub("layers").sub(i);
                EncoderLayer {
                    self_attn: MultiHeadAttention::new(
                        &l.sub("self_attn"),
                        d.d_model,
                        d.heads,
                        d.dropout,
                    ),
                    ff: FeedForward::new(&l.sub("feed_forward"), d.d_model, d.d_ff, d.dropout),
                    norms: norms(&l, 2, d.d_model),
                }
            })
            .collect();
        Encoder {
            layers,
            norm: LayerNorm::new(&s.sub("norm"), d.d_model),
            dropout: d.dropout,
        }
    }

    /// `x` `[B, S, d]` (already position-encoded); the visual mask is all ones, so none is used.
    pub fn forward(&self, x: &Tensor, drop: &Dropout) -> Tensor {
        let mut x = x.shallow_clone();
        for l in &self.layers {
            let y = l.norms[0].forward(&x);
            x = &x + drop.apply(&l.self_attn.forward(&y, &y, &y, None, drop), self.dropout);
            let y = l.norms[1].forward(&x);
            x = &x + drop.apply(&l.ff.forward(&y, drop), self.dropout);
        }
        self.norm.forward(&x)
    }
}

#[derive(Debug)]
struct DecoderLayer {
    self_attn: MultiHeadAttention,
    src_attn: MultiHeadAttention,
    ff: FeedForward,
    norms: Vec<LayerNorm>,
}

/// Per-layer key/value caches of incremental decoding (projected; see [`SelfKv`]).
#[derive(Debug)]
pub struct DecoderCache {
    /// Encoder output `[N, S, d]` (used by the uncached reference path).
    pub memory: Tensor,
    /// The memory matrix's projection for the text side's memory response, set by
    /// `R2GenCmn::start_decoding` (batch-independent: beam reordering leaves it as it is).
    pub text_memory: Option<MemoryKv>,
    /// The token embeddings times √d_model (`[V+1, d]`), set by `R2GenCmn::start_decoding`:
    /// the scaling done once per decode instead of once per step.
    pub text_lut: Option<Tensor>,
    self_kv: Vec<Option<SelfKv>>,
    /// Per layer: its self-attention's query/key/value linears fused into one.
    self_qkv: Vec<Linear>,
    src_kv: Vec<HeadsKv>,
}

impl DecoderCache {
    /// Keeps rows `index` (beam reordering / repetition), in that order.
    pub fn select(&mut self, index: &Tensor) {
        self.select_within_images(index);
        for kv in self.src_kv.iter_mut() {
            *kv = kv.index_select(index);
        }
        self.memory = self.memory.index_select(0, index);
    }

    /// Like [`Self::select`] for an `index` that only permutes or repeats rows *among rows of
    /// the same image* (beam search after its first step): the encoder memory and its projected
    /// source keys/values are identical for all of an image's rows, so only the self-attention
    /// caches (which differ per beam history) are reordered. Saves, per step, copying
    /// `2·layers + 1` tensors of `[N, S, d]` (full dims, batch 16, beam 3: ~34 MB).
    pub fn select_within_images(&mut self, index: &Tensor) {
        for kv in self.self_kv.iter_mut().flatten() {
            *kv = kv.index_select(index);
        }
    }
}

#[derive(Debug)]
pub struct Decoder {
    layers: Vec<DecoderLayer>,
    norm: LayerNorm,
    dropout: f64,
}

impl Decoder {
    pub fn new(s: &Scope, d: Dims) -> Decoder {
        let layers = (0..d.layers)
            .map(|i| {
                let l = s.sub("layers").sub(i);
                DecoderLayer {
                    self_attn: MultiHeadAttention::new(
                        &l.sub("self_attn"),
                        d.d_model,
                        d.heads,
                        d.dropout,
                    ),
                    src_attn: MultiHeadAttention::new(
                        &l.sub("src_attn"),
                        d.d_model,
                        d.heads,
                        d.dropout,
                    ),
                    ff: FeedForward::new(&l.sub("feed_forward"), d.d_model, d.d_ff, d.dropout),
                    norms: norms(&l, 3, d.d_model),
                }
            })
            .collect();
        Decoder {
            layers,
            norm: LayerNorm::new(&s.sub("norm"), d.d_model),
            dropout: d.dropout,
        }
    }

    /// Teacher-forced decoding: `x` `[B, T, d]` embedded tokens, `memory` `[B, S, d]`,
    /// `tgt_mask` `[B, T, T]` (true = attend). Returns the final-normed states `[B, T, d]`.
    pub fn forward(
        &self,
        x: &Tensor,
        memory: &Tensor,
        tgt_mask: &Tensor,
        drop: &Dropout,
    ) -> Tensor {
        let mut x = x.shallow_clone();
        for l in &self.layers {
            let y = l.norms[0].forward(&x);
            x = &x
                + drop.apply(
                    &l.self_attn.forward(&y, &y, &y, Some(tgt_mask), drop),
                    self.dropout,
                );
            let y = l.norms[1].forward(&x);
            x = &x
                + drop.apply(
                    &l.src_attn.forward(&y, memory, memory, None, drop),
                    self.dropout,
                );
            let y = l.norms[2].forward(&x);
            x = &x + drop.apply(&l.ff.forward(&y, drop), self.dropout);
        }
        self.norm.forward(&x)
    }

    /// Starts incremental decoding: projects `memory` once per layer for source attention.
    pub fn start(&self, memory: &Tensor) -> DecoderCache {
        DecoderCache {
            memory: memory.shallow_clone(),
            text_memory: None,
            text_lut: None,
            self_kv: (0..self.layers.len()).map(|_| None).collect(),
            self_qkv: self
                .layers
                .iter()
                .map(|l| l.self_attn.fused_qkv())
                .collect(),
            src_kv: self
                .layers
                .iter()
                .map(|l| l.src_attn.project_heads(memory))
                .collect(),
        }
    }

    /// One step: `x` `[N, 1, d]` = the newest embedded position. Returns its state `[N, 1, d]`.
    pub fn step(&self, x: &Tensor, cache: &mut DecoderCache) -> Tensor {
        let drop = Dropout::eval();
        let mut x = x.shallow_clone();
        for (i, l) in self.layers.iter().enumerate() {
            let y = l.norms[0].forward(&x);
            x = &x
                + l.self_attn
                    .forward_step(&y, &cache.self_qkv[i], &mut cache.self_kv[i]);
            let y = l.norms[1].forward(&x);
            x = &x + l.src_attn.attend_projected(&y, &cache.src_kv[i]);
            let y = l.norms[2].forward(&x);
            x = &x + l.ff.forward(&y, &drop);
        }
        self.norm.forward(&x)
    }
}
