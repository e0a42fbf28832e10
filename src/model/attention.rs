//! Multi-head attention as in the reference (4 linears q/k/v/out, scores/√d_k, −∞ where the
//! mask is false, softmax, dropout on the probabilities), plus the cached forms used by
//! incremental decoding: keys/values are cached *projected, not split into heads*, exactly
//! as the reference caches them, so a step costs one new row per layer.

use tch::Tensor;

use super::layers::{Dropout, Linear, LinearInit};
use super::weights::Scope;

#[derive(Debug)]
pub struct MultiHeadAttention {
    linears: Vec<Linear>,
    heads: i64,
    d_k: i64,
    dropout: f64,
}

impl MultiHeadAttention {
    pub fn new(s: &Scope, d_model: i64, heads: i64, dropout: f64) -> MultiHeadAttention {
        let l = s.sub("linears");
        let linears = (0..4)
            .map(|i| Linear::new(&l.sub(i), d_model, d_model, true, LinearInit::Xavier))
            .collect();
        MultiHeadAttention {
            linears,
            heads,
            d_k: d_model / heads,
            dropout,
        }
    }

    /// `[B, T, d_model]` → `[B, h, T, d_k]`.
    fn split(&self, x: &Tensor) -> Tensor {
        let (b, t, _) = x.size3().expect("attention input is [B, T, d]");
        x.view([b, t, self.heads, self.d_k]).transpose(1, 2)
    }

    /// Projected keys and values of `x` (what the caches hold).
    pub fn project_kv(&self, key: &Tensor, value: &Tensor) -> (Tensor, Tensor) {
        (self.linears[1].forward(key), self.linears[2].forward(value))
    }

    /// Attention of `query` (raw) over already projected `k`, `v` (`[B, Tk, d_model]`).
    /// `mask` is `[B, Tq, Tk]` (or broadcastable), true = attend.
    pub fn attend(
        &self,
        query: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Tensor>,
        drop: &Dropout,
    ) -> Tensor {
        let (b, tq, _) = query.size3().expect("attention query is [B, T, d]");
        let q = self.split(&self.linears[0].forward(query));
        let (k, v) = (self.split(k), self.split(v));
        let mut scores = q.matmul(&k.transpose(-2, -1)) / (self.d_k as f64).sqrt();
        if let Some(m) = mask {
            scores = scores.masked_fill(&m.unsqueeze(1).logical_not(), f64::NEG_INFINITY);
        }
        let p = drop.apply(&scores.softmax(-1, None), self.dropout);
        let x = p
            .matmul(&v)
            .transpose(1, 2)
            .contiguous()
            .view([b, tq, self.heads * self.d_k]);
        self.linears[3].forward(&x)
    }

    /// Full (teacher-forced) attention.
    pub fn forward(
        &self,
        query: &Tensor,
        key: &Tensor,
        value: &Tensor,
        mask: Option<&Tensor>,
        drop: &Dropout,
    ) -> Tensor {
        let (k, v) = self.project_kv(key, value);
        self.attend(query, &k, &v, mask, drop)
    }

    /// One decoding step of self-attention: `x` is `[N, 1, d]`; its projected key/value are
    /// appended to `cache` and the query attends over every cached position (no mask: the
    /// newest position may see all earlier ones).
    pub fn forward_step(&self, x: &Tensor, cache: &mut Option<(Tensor, Tensor)>) -> Tensor {
        let (k_new, v_new) = self.project_kv(x, x);
        let (k, v) = match cache.take() {
            Some((k, v)) => (Tensor::cat(&[k, k_new], 1), Tensor::cat(&[v, v_new], 1)),
            None => (k_new, v_new),
        };
        let out = self.attend(x, &k, &v, None, &Dropout::eval());
        *cache = Some((k, v));
        out
    }
}
