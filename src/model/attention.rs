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
        let (k_t, v_h) = (self.split(k).transpose(-2, -1), self.split(v));
        self.attend_heads(query, &k_t, &v_h, mask, drop)
    }

    /// [`Self::attend`] over keys and values already split into heads: `k_t` `[B, h, d_k, Tk]`
    /// (transposed), `v_h` `[B, h, Tk, d_k]` — what [`HeadsKv`] keeps for a decoder's source.
    fn attend_heads(
        &self,
        query: &Tensor,
        k_t: &Tensor,
        v_h: &Tensor,
        mask: Option<&Tensor>,
        drop: &Dropout,
    ) -> Tensor {
        let (b, tq, _) = query.size3().expect("attention query is [B, T, d]");
        let q = self.split(&self.linears[0].forward(query));
        let mut scores = q.matmul(k_t) / (self.d_k as f64).sqrt();
        if let Some(m) = mask {
            scores = scores.masked_fill(&m.unsqueeze(1).logical_not(), f64::NEG_INFINITY);
        }
        let p = drop.apply(&scores.softmax(-1, None), self.dropout);
        let x = p
            .matmul(v_h)
            .transpose(1, 2)
            .contiguous()
            .view([b, tq, self.heads * self.d_k]);
        self.linears[3].forward(&x)
    }

    /// Projects a fixed source once for incremental decoding (keys/values and their per-head
    /// views; see [`HeadsKv`]).
    pub fn project_heads(&self, source: &Tensor) -> HeadsKv {
        let (k, v) = self.project_kv(source, source);
        HeadsKv::new(k, v, self.heads)
    }

    /// Eval-mode attention of `query` over a source projected by [`Self::project_heads`]:
    /// the same ops and values as [`Self::attend`] without re-splitting the source every step.
    pub fn attend_projected(&self, query: &Tensor, kv: &HeadsKv) -> Tensor {
        self.attend_heads(query, &kv.k_t, &kv.v_h, None, &Dropout::eval())
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

/// A decoder source's projected keys and values `[N, S, d_model]` with their per-head views
/// (`k_t` `[N, h, d_k, S]`, `v_h` `[N, h, S, d_k]`), made once per decode instead of at every
/// step. Row selection (beams) selects the projected rows and re-derives the views, so the
/// attention sees exactly the tensors layouts it would after splitting them itself.
#[derive(Debug)]
pub struct HeadsKv {
    k: Tensor,
    v: Tensor,
    k_t: Tensor,
    v_h: Tensor,
    heads: i64,
}

impl HeadsKv {
    fn new(k: Tensor, v: Tensor, heads: i64) -> HeadsKv {
        let split = |x: &Tensor| {
            let (b, t, d) = x.size3().expect("projected source is [N, S, d]");
            x.view([b, t, heads, d / heads]).transpose(1, 2)
        };
        HeadsKv {
            k_t: split(&k).transpose(-2, -1),
            v_h: split(&v),
            k,
            v,
            heads,
        }
    }

    /// Keeps rows `index` of the source, in that order.
    pub fn index_select(&self, index: &Tensor) -> HeadsKv {
        HeadsKv::new(
            self.k.index_select(0, index),
            self.v.index_select(0, index),
            self.heads,
        )
    }
}
