//! Multi-head attention as in the reference (4 linears q/k/v/out, scores/√d_k, −∞ where the
//! mask is false, softmax, dropout on the probabilities), plus the cached forms used by
//! incremental decoding: keys/values are cached projected, as the reference caches them, so a
//! step costs one new row per layer (the cache's layout: [`SelfKv`]).

use tch::Tensor;

use super::layers::{Constant, Dropout, Linear, LinearInit};
use super::weights::Scope;

#[derive(Debug)]
pub struct MultiHeadAttention {
    linears: Vec<Linear>,
    heads: i64,
    d_k: i64,
    /// √d_k, the scores' divisor.
    scale: Constant,
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
            scale: Constant::new(((d_model / heads) as f64).sqrt()),
            dropout,
        }
    }

    /// `[B, T, d_model]` → `[B, h, T, d_k]`. For one position (a decoding step's query) that
    /// is a plain view of the same memory, one op instead of two.
    fn split(&self, x: &Tensor) -> Tensor {
        let (b, t, _) = x.size3().expect("attention input is [B, T, d]");
        if t == 1 {
            return x.view([b, self.heads, 1, self.d_k]);
        }
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
        let q = self.linears[0].forward(query);
        self.attend_heads_q(&q, k_t, v_h, mask, drop)
    }

    /// [`Self::attend_heads`] for a query already projected (`[B, Tq, d_model]`).
    fn attend_heads_q(
        &self,
        q: &Tensor,
        k_t: &Tensor,
        v_h: &Tensor,
        mask: Option<&Tensor>,
        drop: &Dropout,
    ) -> Tensor {
        let (b, tq, _) = q.size3().expect("attention query is [B, T, d]");
        let q = self.split(q);
        let mut scores = self.scale.divide(&q.matmul(k_t));
        if let Some(m) = mask {
            scores = scores.masked_fill(&m.unsqueeze(1).logical_not(), f64::NEG_INFINITY);
        }
        let p = drop.apply(&scores.softmax(-1, None), self.dropout);
        let heads = p.matmul(v_h);
        // Heads back side by side, `[B, h, Tq, d_k]` → `[B, Tq, h·d_k]`: for one query
        // position the memory is already in that order (a reshape, no copy).
        let x = if tq == 1 {
            heads.reshape([b, 1, self.heads * self.d_k])
        } else {
            heads
                .transpose(1, 2)
                .contiguous()
                .view([b, tq, self.heads * self.d_k])
        };
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

    /// The query, key and value linears as one `[3·d_model, d_model]` linear, for
    /// [`Self::forward_step`]: one product per step instead of three. Each output element is
    /// the same dot product either way (bit-identical at the decoding shapes checked in
    /// `fused_step_matches_separate_linears`); made once per decode.
    pub fn fused_qkv(&self) -> Linear {
        let cat = |f: &dyn Fn(&Linear) -> Tensor| {
            Tensor::cat(&self.linears[..3].iter().map(f).collect::<Vec<_>>(), 0)
        };
        let bias = self.linears[..3].iter().all(|l| l.bias.is_some());
        Linear {
            weight: cat(&|l: &Linear| l.weight.detach()),
            bias: bias.then(|| cat(&|l: &Linear| l.bias.as_ref().expect("bias").detach())),
        }
    }

    /// One decoding step of self-attention: `x` is `[N, 1, d]`, `qkv` its [`Self::fused_qkv`].
    /// The projected key and value of `x` are appended to `cache` (see [`SelfKv`] for its two
    /// forms) and the query attends over every cached position (no mask: the newest position
    /// may see all earlier ones).
    pub fn forward_step(&self, x: &Tensor, qkv: &Linear, cache: &mut Option<SelfKv>) -> Tensor {
        let d = self.heads * self.d_k;
        let projected = qkv.forward(x);
        let q = projected.narrow(-1, 0, d);
        let new = projected.narrow(-1, d, 2 * d);
        let next = match cache.take() {
            None => SelfKv::new(new, self.heads),
            Some(SelfKv::Packed { kv, heads }) => SelfKv::new(Tensor::cat(&[kv, new], 1), heads),
            Some(SelfKv::Heads { k_t, v_h }) => {
                let (k_new, v_new) =
                    per_head(&new.narrow(-1, 0, d), &new.narrow(-1, d, d), self.heads);
                SelfKv::Heads {
                    k_t: Tensor::cat(&[k_t, k_new], 3),
                    v_h: Tensor::cat(&[v_h, v_new], 2),
                }
            }
        };
        let out = match &next {
            SelfKv::Packed { kv, heads } => {
                let (k_t, v_h) = per_head(&kv.narrow(-1, 0, d), &kv.narrow(-1, d, d), *heads);
                self.attend_heads_q(&q, &k_t, &v_h, None, &Dropout::eval())
            }
            SelfKv::Heads { k_t, v_h } => self.attend_heads_q(&q, k_t, v_h, None, &Dropout::eval()),
        };
        *cache = Some(next);
        out
    }
}

/// Per-head operands of projected keys and values (`[N, T, d]` each, views allowed): `k_t`
/// `[N, h, d_k, T]` and `v_h` `[N, h, T, d_k]`. Views for one row or one position; otherwise
/// contiguous. Why: per-head views of more rows do not fold into `matmul`'s `[N·h, …]` batch
/// (the `[N, h]` strides are not nested), so it copied them to exactly this contiguous layout
/// at every product; made once here, the products see the same operands (the same bits)
/// without the per-step copies. For one row they are already foldable, and a contiguous copy
/// would change the layout the product sees (and its last bits).
fn per_head(k: &Tensor, v: &Tensor, heads: i64) -> (Tensor, Tensor) {
    let (n, t, d) = k.size3().expect("projected keys are [N, T, d]");
    let split = |x: &Tensor| x.view([n, t, heads, d / heads]).transpose(1, 2);
    let (k_t, v_h) = (split(k).transpose(-2, -1), split(v));
    if n > 1 && t > 1 {
        (k_t.contiguous(), v_h.contiguous())
    } else {
        (k_t, v_h)
    }
}

/// A decoder layer's self-attention cache: the projected keys and values of every position so
/// far. Its form follows what the products multiply, because their rounding follows the
/// operands' layout:
/// - `Packed`, for one row: `[1, t, 2·d]`, keys then values as projected; the scores and the
///   weighted sum multiply per-head views of it (one concatenation per step);
/// - `Heads`, for more rows: `k_t` `[N, h, d_k, t]` and `v_h` `[N, h, t, d_k]` in the layout
///   [`per_head`] gives (contiguous past one position), which `matmul` otherwise copied per-head
///   views of a packed cache to at every step of every layer; kept in it (two concatenations
///   per step), the products give the same bits without the copies.
#[derive(Debug)]
pub enum SelfKv {
    Packed { kv: Tensor, heads: i64 },
    Heads { k_t: Tensor, v_h: Tensor },
}

impl SelfKv {
    /// The cache of packed keys and values `kv` (`[N, t, 2·d]`) in the form for its rows.
    fn new(kv: Tensor, heads: i64) -> SelfKv {
        let (n, _, d2) = kv.size3().expect("packed cache is [N, t, 2d]");
        if n == 1 {
            return SelfKv::Packed { kv, heads };
        }
        let (k_t, v_h) = per_head(
            &kv.narrow(-1, 0, d2 / 2),
            &kv.narrow(-1, d2 / 2, d2 / 2),
            heads,
        );
        SelfKv::Heads { k_t, v_h }
    }

    /// Keeps rows `index`, in that order; more than one row takes the `Heads` form.
    pub fn index_select(&self, index: &Tensor) -> SelfKv {
        match self {
            SelfKv::Packed { kv, heads } => SelfKv::new(kv.index_select(0, index), *heads),
            SelfKv::Heads { k_t, v_h } => SelfKv::Heads {
                k_t: k_t.index_select(0, index),
                v_h: v_h.index_select(0, index),
            },
        }
    }
}

/// A decoder source's projected keys and values `[N, S, d_model]` with their per-head forms
/// (`k_t` `[N, h, d_k, S]`, `v_h` `[N, h, S, d_k]`), made once per decode instead of at every
/// step ([`per_head`]: views for one row, else the contiguous layout the products read). Row
/// selection (beams) selects the projected rows and re-derives both forms.
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
        let (k_t, v_h) = per_head(&k, &v, heads);
        HeadsKv {
            k_t,
            v_h,
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

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use tch::{Device, Kind, Tensor};

    use super::super::inference::InferenceModeGuard;
    use super::super::weights::{Registry, Scope};
    use super::*;

    /// The fused, cached decoding step against the reference's form of it (separate query,
    /// key and value linears, keys and values cached apart, the query projected inside
    /// `attend`): the same bits at every step, for one row, a beam's three and a batch's 16,
    /// at the tiny and the published widths; and for one row repeated to three after a few
    /// steps (beam search's first reordering, where the cache changes form).
    #[test]
    fn fused_step_matches_separate_linears() {
        for (d, h) in [(64i64, 4i64), (512, 8)] {
            let reg = RefCell::new(Registry::default());
            tch::manual_seed(d);
            let mha = MultiHeadAttention::new(&Scope::root(&reg, Device::Cpu), d, h, 0.1);
            let _g = tch::no_grad_guard();
            let _i = InferenceModeGuard::new();
            let qkv = mha.fused_qkv();
            for (n, repeat_at) in [(1i64, None), (3, None), (16, None), (1, Some(3))] {
                let mut fused: Option<SelfKv> = None;
                let mut apart: Option<(Tensor, Tensor)> = None;
                let mut rows = n;
                for step in 0..7 {
                    if repeat_at == Some(step) {
                        let index = Tensor::from_slice(&[0i64, 0, 0]);
                        fused = fused.map(|c| c.index_select(&index));
                        apart = apart
                            .map(|(k, v)| (k.index_select(0, &index), v.index_select(0, &index)));
                        rows = 3;
                    }
                    let x = Tensor::randn([rows, 1, d], (Kind::Float, Device::Cpu));
                    let got = mha.forward_step(&x, &qkv, &mut fused);
                    let (k_new, v_new) = mha.project_kv(&x, &x);
                    let (k, v) = match apart.take() {
                        Some((k, v)) => (Tensor::cat(&[k, k_new], 1), Tensor::cat(&[v, v_new], 1)),
                        None => (k_new, v_new),
                    };
                    let want = mha.attend(&x, &k, &v, None, &Dropout::eval());
                    apart = Some((k, v));
                    assert!(
                        got.equal(&want),
                        "d {d} rows {rows} step {step}: differs by {}",
                        (&got - &want).abs().max().double_value(&[])
                    );
                }
                let packed = matches!(fused, Some(SelfKv::Packed { .. }));
                assert_eq!(packed, rows == 1, "rows {rows}: the cache's form");
            }
        }
    }
}
