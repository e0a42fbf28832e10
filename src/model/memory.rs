//! The cross-modal memory (CMN): a learned matrix M (`encoder_decoder.memory_matrix`) queried by
//! multi-head "memory querying and responding" with top-k sparsification. One module serves the
//! visual and the textual side with the same weights; its response is *added* to the features.
//!
//! Per head: scores = q·Kᵀ/√d_k over all memory slots, keep the top-k per query (torch.topk order),
//! softmax over those k, dropout (p = 0.1, fixed as in the reference), weighted sum of the k
//! selected value rows. The weighted sum is done by scattering the k probabilities into a dense
//! row and multiplying by V, which is the same sum without materialising k copies of V.

use tch::{Device, Kind, Tensor};

use super::layers::{Dropout, Linear, LinearInit};
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

    /// The memory's response to `query` `[B, T, d]` given the memory matrix `[S, d]`.
    pub fn respond(&self, query: &Tensor, memory: &Tensor, drop: &Dropout) -> Tensor {
        let (b, t, _) = query.size3().expect("memory query is [B, T, d]");
        let (slots, d) = memory.size2().expect("memory matrix is [S, d]");
        let mem = memory.unsqueeze(0).expand([b, slots, d], true);
        let q = self.split(&self.linears[0].forward(query));
        let k = self.split(&self.linears[1].forward(&mem));
        let v = self.split(&self.linears[2].forward(&mem));
        let scores = q.matmul(&k.transpose(-2, -1)) / (self.d_k as f64).sqrt();
        let (top, idx) = scores.topk(self.topk.min(slots), -1, true, true);
        let p = drop.apply(&top.softmax(-1, None), MEMORY_DROPOUT);
        let dense =
            Tensor::zeros(scores.size(), (scores.kind(), scores.device())).scatter(-1, &idx, &p);
        let x = dense
            .matmul(&v)
            .transpose(1, 2)
            .contiguous()
            .view([b, t, self.heads * self.d_k]);
        self.linears[3].forward(&x)
    }
}

/// Initial memory matrix: normal(0, 1/cmm_dim) (SPEC §2).
pub fn init_memory(size: i64, dim: i64) -> Tensor {
    Tensor::empty([size, dim], (Kind::Float, Device::Cpu)).normal_(0.0, 1.0 / dim as f64)
}
