//! The cross-modal memory (CMN): a learned matrix M (`encoder_decoder.memory_matrix`) queried by
//! multi-head "memory querying and responding" with top-k sparsification. One module serves the
//! visual and the textual side with the same weights; its response is *added* to the features.
//!
//! Per head: scores = q·Kᵀ/√d_k over all memory slots, keep the top-k per query (torch.topk order),
//! softmax over those k, dropout (p = 0.1, fixed as in the reference), weighted sum of the k
//! selected value rows. The weighted sum is done by scattering the k probabilities into a dense
//! row and multiplying by V, which is the same sum without materialising k copies of V.

use tch::{Device, Kind, Tensor};

use super::layers::{Constant, Dropout, Linear, LinearInit};
use super::weights::Scope;

/// Dropout inside the memory module: hard-coded in the reference, not `model.dropout`.
pub const MEMORY_DROPOUT: f64 = 0.1;

#[derive(Debug)]
pub struct Memory {
    /// Full registered name of the linears' scope (for the tied alias keys).
    pub scope_name: String,
    linears: Vec<Linear>,
    heads: i64,
    d_k: i64,
    /// √d_k, the scores' divisor.
    scale: Constant,
    topk: i64,
}

impl Memory {
    pub fn new(s: &Scope, d_model: i64, heads: i64, topk: i64) -> Memory {
        let l = s.sub("linears");
        let linears = (0..4)
            .map(|i| Linear::new(&l.sub(i), d_model, d_model, true, LinearInit::Xavier))
            .collect();
        Memory {
            scope_name: s.full_name("linears"),
            linears,
            heads,
            d_k: d_model / heads,
            scale: Constant::new(((d_model / heads) as f64).sqrt()),
            topk,
        }
    }

    /// Registers the reference's second name for these weights (`encoder_decoder.model.cmn`).
    pub fn register_alias(&self, s: &Scope) {
        for i in 0..4 {
            for leaf in ["weight", "bias"] {
                s.sub("linears")
                    .sub(i)
                    .alias(leaf, &format!("{}.{i}.{leaf}", self.scope_name));
            }
        }
    }

    fn split(&self, x: &Tensor) -> Tensor {
        let (b, t, _) = x.size3().expect("memory input is [B, T, d]");
        x.view([b, t, self.heads, self.d_k]).transpose(1, 2)
    }

    /// Keys and values of the memory matrix `[S, d]`, projected once and shared by every query
    /// row: `[heads, S, d_k]` each. M does not depend on the input, so projecting it per sample
    /// (what the reference does by expanding M to `[B, S, d]` first) repeats the same two
    /// linears B times; in training the gradient of the shared projection is the sum the
    /// reference accumulates over its B copies (equal up to float re-association).
    pub fn project(&self, memory: &Tensor) -> MemoryKv {
        let heads = |x: Tensor| self.split(&x.unsqueeze(0)).squeeze_dim(0);
        MemoryKv {
            k: heads(self.linears[1].forward(memory)),
            v: heads(self.linears[2].forward(memory)),
        }
    }

    /// The memory's response to `query` `[B, T, d]` given the memory matrix `[S, d]`.
    pub fn respond(&self, query: &Tensor, memory: &Tensor, drop: &Dropout) -> Tensor {
        self.respond_kv(query, &self.project(memory), drop)
    }

    /// The memory's response to `query` `[B, T, d]` given its projection ([`Self::project`]).
    /// The batch is folded into the query rows (`[heads, B·T, d_k]`) so that the shared keys
    /// and values multiply every row in one product per head, without being expanded (copied)
    /// per sample the way a broadcast batch matmul would.
    pub fn respond_kv(&self, query: &Tensor, kv: &MemoryKv, drop: &Dropout) -> Tensor {
        let (b, t, _) = query.size3().expect("memory query is [B, T, d]");
        let (h, slots) = (self.heads, kv.k.size()[1]);
        // The query rows `[heads, B·T, d_k]`: a strided view of the projection (no copy).
        let q = self.linears[0]
            .forward(query)
            .view([b * t, h, self.d_k])
            .transpose(0, 1);
        let scores = self.scale.divide(&q.matmul(&kv.k.transpose(-2, -1)));
        let (top, idx) = scores.topk(self.topk.min(slots), -1, true, true);
        let kept = top.size()[2];
        let p = top.softmax(-1, None);
        // Dropout draws its mask in the reference's [B, h, T, k] layout (per-sample seeds), so
        // in training the probabilities go there and back; in eval (decoding) dropout is the
        // identity and they stay as they are: the same values, five ops fewer per step.
        let p = if drop.train() {
            let p = p.view([h, b, t, kept]).transpose(0, 1).contiguous();
            drop.apply(&p, MEMORY_DROPOUT)
                .transpose(0, 1)
                .reshape([h, b * t, kept])
        } else {
            p
        };
        let dense =
            Tensor::zeros(scores.size(), (scores.kind(), scores.device())).scatter(-1, &idx, &p);
        // The heads side by side again, `[h, B·T, d_k]` → `[B, T, h·d_k]`: one copy, none
        // for a single row (a decoding step at batch 1).
        let x = dense
            .matmul(&kv.v)
            .transpose(0, 1)
            .reshape([b, t, h * self.d_k]);
        self.linears[3].forward(&x)
    }
}

/// The memory matrix's keys and values, `[heads, S, d_k]` each ([`Memory::project`]).
#[derive(Debug)]
pub struct MemoryKv {
    k: Tensor,
    v: Tensor,
}

/// Initial memory matrix: normal(0, 1/cmm_dim) (SPEC §2).
pub fn init_memory(size: i64, dim: i64) -> Tensor {
    Tensor::empty([size, dim], (Kind::Float, Device::Cpu)).normal_(0.0, 1.0 / dim as f64)
}
