//! Small building blocks shared by the model: Linear with the reference initialisations, the
//! reference LayerNorm (unbiased std, eps added to the std) and the one dropout helper.
//!
//! Dropout is the only randomness in the model's forward. [`Dropout`] draws masks either from
//! torch's global generator (no seeds) or, for distributed exactness, from per-sample seeds:
//! each sample's mask is a pure function of (sample seed, call index), generated on the CPU
//! by a counter-based hash and moved to the device, so it is the same on any rank, device and
//! batch composition.

use std::cell::Cell;

use tch::{Device, Kind, Tensor};

use super::weights::Scope;

/// How a Linear layer's weight is initialised (SPEC §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinearInit {
    /// PyTorch's default: U(±1/√fan_in) for weight and bias.
    Default,
    /// Xavier-uniform weight (transformer modules); the bias keeps PyTorch's default.
    Xavier,
}

/// `U(lo, hi)` on the CPU from torch's global generator.
pub fn uniform(dims: &[i64], bound: f64) -> Tensor {
    Tensor::empty(dims, (Kind::Float, Device::Cpu)).uniform_(-bound, bound)
}

/// Xavier-uniform for a 2-D `[out, in]` weight.
pub fn xavier(dims: &[i64]) -> Tensor {
    let (fan_out, fan_in) = (dims[0] as f64, dims[1] as f64);
    uniform(dims, (6.0 / (fan_in + fan_out)).sqrt())
}

#[derive(Debug)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    pub fn new(s: &Scope, input: i64, output: i64, bias: bool, init: LinearInit) -> Linear {
        let bound = 1.0 / (input as f64).sqrt();
        let w = match init {
            LinearInit::Default => uniform(&[output, input], bound),
            LinearInit::Xavier => xavier(&[output, input]),
        };
        let weight = s.param("weight", w);
        let bias = bias.then(|| s.param("bias", uniform(&[output], bound)));
        Linear { weight, bias }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        if bf16_active() {
            let bias = self.bias.as_ref().map(|b| b.to_kind(Kind::BFloat16));
            return x
                .to_kind(Kind::BFloat16)
                .linear(&self.weight.to_kind(Kind::BFloat16), bias.as_ref())
                .to_kind(Kind::Float);
        }
        x.linear(&self.weight, self.bias.as_ref())
    }
}

/// Convolution without bias, in bf16 inside [`with_bf16`] (fp32 in and out).
pub fn conv2d(x: &Tensor, w: &Tensor, stride: i64, padding: i64) -> Tensor {
    let none: Option<&Tensor> = None;
    if bf16_active() {
        let k = Kind::BFloat16;
        return x
            .to_kind(k)
            .conv2d(&w.to_kind(k), none, stride, padding, 1, 1)
            .to_kind(Kind::Float);
    }
    x.conv2d(w, none, stride, padding, 1, 1)
}

thread_local! {
    static BF16: Cell<bool> = const { Cell::new(false) };
}

fn bf16_active() -> bool {
    BF16.with(Cell::get)
}

/// Runs `f` with `model.precision = "bf16"` semantics: the heavy products (Linear layers and
/// convolutions) compute in bfloat16 from fp32 master weights and return fp32, while softmax,
/// LayerNorm, BatchNorm statistics and the losses stay fp32 — the autocast policy, done by
/// hand because tch's `autocast` only offers float16. Gradients flow back to the fp32 weights.
pub fn with_bf16<T>(on: bool, f: impl FnOnce() -> T) -> T {
    let prev = BF16.with(|c| c.replace(on));
    let out = f();
    BF16.with(|c| c.set(prev));
    out
}

/// A constant operand of elementwise ops (`x + c`, `x * c`, `x / c`), kept as 0-dim CPU
/// tensors in f32 and f64. For an f32 or f64 `x` the result is bit-for-bit the scalar form's
/// (`x + 1e-6`): libtorch converts the operand to `x`'s dtype either way, and a CPU 0-dim
/// tensor is a valid operand of a CUDA tensor too. What differs is the cost: the scalar form
/// wraps the number into a fresh tensor and takes TensorIterator's type-promotion path,
/// ~4.7 µs per op against ~1.0 µs (release build, inference mode, `[1, 1, 64]` operands);
/// a decoding step of the tiny model does 13 of them. Other dtypes (bf16 activations) take
/// the scalar form, as does an operand of a different float dtype, which would be as slow.
#[derive(Debug)]
pub struct Constant {
    value: f64,
    f32: Tensor,
    f64: Tensor,
}

impl Constant {
    pub fn new(value: f64) -> Constant {
        Constant {
            value,
            f32: Tensor::from(value as f32),
            f64: Tensor::from(value),
        }
    }

    /// The 0-dim operand of `x`'s dtype, if it is f32 or f64.
    fn operand(&self, x: &Tensor) -> Option<&Tensor> {
        match x.kind() {
            Kind::Float => Some(&self.f32),
            Kind::Double => Some(&self.f64),
            _ => None,
        }
    }

    /// `x + c`.
    pub fn add_to(&self, x: &Tensor) -> Tensor {
        match self.operand(x) {
            Some(c) => x + c,
            None => x + self.value,
        }
    }

    /// `x · c`.
    pub fn multiply(&self, x: &Tensor) -> Tensor {
        match self.operand(x) {
            Some(c) => x * c,
            None => x * self.value,
        }
    }

    /// `x / c`.
    pub fn divide(&self, x: &Tensor) -> Tensor {
        match self.operand(x) {
            Some(c) => x / c,
            None => x / self.value,
        }
    }
}

/// The reference LayerNorm: `a·(x − mean)/(std + eps) + b` with the unbiased std.
#[derive(Debug)]
pub struct LayerNorm {
    pub a: Tensor,
    pub b: Tensor,
    eps: Constant,
    /// The normalised width, the divisor of the mean.
    width: Constant,
}

impl LayerNorm {
    pub const EPS: f64 = 1e-6;

    pub fn new(s: &Scope, dim: i64) -> LayerNorm {
        LayerNorm {
            a: s.param("a_2", Tensor::ones([dim], (Kind::Float, Device::Cpu))),
            b: s.param("b_2", Tensor::zeros([dim], (Kind::Float, Device::Cpu))),
            eps: Constant::new(Self::EPS),
            width: Constant::new(dim as f64),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        if x.numel() == 0 {
            // A rank whose share of the global batch is empty: the result is empty as well,
            // and libtorch would warn that std() of no rows has no degrees of freedom.
            return &self.a * x + &self.b;
        }
        // Without gradients through x (no-grad or inference mode: decoding, evaluation) the
        // statistics take fewer and cheaper ops with the same values, 7 norms per decoding
        // step of a 2-layer model: the std from `std_mean`, the same Welford kernel as `std`
        // (~2.5 µs against ~5.9 µs; its mean is unused: Welford's running mean can differ from
        // the reference's in the last bit), and the mean as sum / width, which is how libtorch
        // computes `mean` on the CPU (~2.9 µs against ~3.9 µs).
        // `layer_norm_without_autograd_is_bit_identical` holds both paths to the same bits.
        let (mean, std) = if x.requires_grad() {
            (x.mean_dim(-1, true, None), x.std_dim(-1, true, true))
        } else {
            let (std, _) = x.std_mean_dim(-1, true, true);
            (self.width.divide(&x.sum_dim_intlist(-1, true, None)), std)
        };
        let scaled = &self.a * (x - mean);
        if scaled.requires_grad() {
            // With autograd the reference's two ops, so the gradients keep its formulas.
            return scaled / self.eps.add_to(&std) + &self.b;
        }
        // Without it, the division and the addition in one `addcdiv` with value 1, which
        // rounds exactly as they do (1·t is exact): one op fewer per norm.
        self.b.addcdiv(&scaled, &self.eps.add_to(&std))
    }
}

/// BatchNorm with PyTorch's defaults (eps 1e-5, momentum 0.1, weight 1, bias 0): BatchNorm2d
/// of the ResNet on `[N, C, H, W]`, and BatchNorm1d of att_embed (`model.use_bn`) on `[M, C]`.
/// Statistics are per channel (dim 1) over every other dim; the running variance is updated
/// with the unbiased batch variance, the normalisation uses the biased one (PyTorch's rule).
#[derive(Debug)]
pub struct BatchNorm {
    pub(crate) weight: Tensor,
    pub(crate) bias: Tensor,
    pub(crate) running_mean: Tensor,
    pub(crate) running_var: Tensor,
    pub(crate) num_batches_tracked: Tensor,
}

impl BatchNorm {
    pub fn new(s: &Scope, c: i64) -> BatchNorm {
        let f = (Kind::Float, Device::Cpu);
        BatchNorm {
            weight: s.param("weight", Tensor::ones([c], f)),
            bias: s.param("bias", Tensor::zeros([c], f)),
            running_mean: s.buffer("running_mean", Tensor::zeros([c], f)),
            running_var: s.buffer("running_var", Tensor::ones([c], f)),
            num_batches_tracked: s.buffer(
                "num_batches_tracked",
                Tensor::zeros([], (Kind::Int64, Device::Cpu)),
            ),
        }
    }

    /// Batch statistics (updating the running ones) only when training in `local` mode, and
    /// only when the batch gives each channel at least 2 values (N·H·W ≥ 2, or M ≥ 2). With fewer — a rank
    /// whose share of the global batch is 0 samples, or 1 sample on a 1×1 map — batch statistics
    /// are undefined (PyTorch refuses 1 value per channel in training; 0 values give NaN), so
    /// this layer normalises with its running statistics and leaves them untouched, exactly as
    /// in evaluation. The other ranks' batches still train it, and rank 0's statistics are
    /// everyone's after the step (`train::optim_step`).
    pub fn forward(&self, x: &Tensor, batch_stats: bool) -> Tensor {
        let channels = x.size().get(1).copied().unwrap_or(1).max(1);
        let batch_stats = batch_stats && x.numel() as i64 / channels >= 2;
        if batch_stats {
            let _g = tch::no_grad_guard();
            let mut n = self.num_batches_tracked.shallow_clone();
            let _ = n.g_add_scalar_(1);
        }
        x.batch_norm(
            Some(&self.weight),
            Some(&self.bias),
            Some(&self.running_mean),
            Some(&self.running_var),
            batch_stats,
            0.1,
            1e-5,
            true,
        )
    }
}

/// Dropout context of one forward pass: training flag, optional per-sample seeds, and a call
/// counter so every dropout site of the pass draws an independent mask.
#[derive(Debug)]
pub struct Dropout<'a> {
    train: bool,
    seeds: Option<&'a [u64]>,
    calls: Cell<u64>,
}

impl<'a> Dropout<'a> {
    /// `seeds`, when given, holds one seed per sample (the leading dim of every tensor that is
    /// dropped out in this pass).
    pub fn new(train: bool, seeds: Option<&'a [u64]>) -> Dropout<'a> {
        Dropout {
            train,
            seeds,
            calls: Cell::new(0),
        }
    }

    /// Evaluation: dropout is the identity.
    pub fn eval() -> Dropout<'static> {
        Dropout::new(false, None)
    }

    pub fn train(&self) -> bool {
        self.train
    }

    /// Inverted dropout with probability `p` (identity in eval mode or for p = 0).
    pub fn apply(&self, x: &Tensor, p: f64) -> Tensor {
        if !self.train || p <= 0.0 {
            return x.shallow_clone();
        }
        let call = self.calls.get();
        self.calls.set(call + 1);
        match self.seeds {
            None => x.dropout(p, true),
            Some(seeds) => x * seeded_mask(seeds, call, &x.size(), p, x.kind(), x.device()),
        }
    }
}

use crate::rng::splitmix64 as mix;

/// Keep-mask scaled by 1/(1−p); sample `i` (leading dim) uses only `seeds[i]` and `call`.
pub fn seeded_mask(
    seeds: &[u64],
    call: u64,
    shape: &[i64],
    p: f64,
    kind: Kind,
    device: Device,
) -> Tensor {
    assert_eq!(
        shape.first().copied(),
        Some(seeds.len() as i64),
        "dropout seeds: one per sample (leading dim)"
    );
    let per: usize = shape[1..].iter().product::<i64>() as usize;
    let scale = (1.0 / (1.0 - p)) as f32;
    let mut data = Vec::with_capacity(per * seeds.len());
    for &seed in seeds {
        let base = mix(seed ^ mix(call.wrapping_add(0x5EED)));
        for j in 0..per as u64 {
            let u = (mix(base.wrapping_add(j)) >> 11) as f64 / (1u64 << 53) as f64;
            data.push(if u >= p { scale } else { 0.0 });
        }
    }
    Tensor::from_slice(&data)
        .reshape(shape)
        .to_device(device)
        .to_kind(kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_dropout_is_per_sample() {
        // Sample 1 of a batch [a, b] gets the same mask as sample 0 of a batch [b].
        let x = Tensor::ones([2, 50], (Kind::Float, Device::Cpu));
        let d = Dropout::new(true, Some(&[11, 22]));
        let y = d.apply(&x, 0.5);
        let x1 = Tensor::ones([1, 50], (Kind::Float, Device::Cpu));
        let d1 = Dropout::new(true, Some(&[22]));
        let y1 = d1.apply(&x1, 0.5);
        assert!(y.get(1).equal(&y1.get(0)));
        assert!(!y.get(0).equal(&y.get(1)));
        // Kept entries are scaled by 1/(1-p), and roughly half are kept.
        let kept = y.ne(0.0).sum(Kind::Float).double_value(&[]);
        assert!((20.0..80.0).contains(&kept), "kept {kept}");
        assert_eq!(y.max().double_value(&[]), 2.0);
        // A second call in the same pass draws a different mask.
        assert!(!d.apply(&x, 0.5).equal(&y));
    }

    #[test]
    fn bf16_linear_is_close_to_fp32_and_differentiable() {
        let reg = std::cell::RefCell::new(super::super::weights::Registry::default());
        tch::manual_seed(5);
        let lin = Linear::new(
            &Scope::root(&reg, Device::Cpu),
            32,
            8,
            true,
            LinearInit::Default,
        );
        let x = Tensor::randn([4, 32], (Kind::Float, Device::Cpu));
        let full = lin.forward(&x);
        let half = with_bf16(true, || lin.forward(&x));
        assert_eq!(half.kind(), Kind::Float);
        let err = (&full - &half).abs().max().double_value(&[]);
        assert!(err > 0.0 && err < 5e-2, "bf16 error {err}");
        half.sum(None).backward();
        assert!(lin.weight.grad().defined());
        // The flag is restored after the scope.
        assert!(lin.forward(&x).equal(&full));
    }

    #[test]
    fn layer_norm_uses_unbiased_std_plus_eps() {
        let reg = std::cell::RefCell::new(super::super::weights::Registry::default());
        let ln = LayerNorm::new(&Scope::root(&reg, Device::Cpu), 4);
        let x = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).reshape([1, 4]);
        let y = ln.forward(&x);
        // mean 2.5, unbiased std sqrt(5/3)
        let std = (5.0f64 / 3.0).sqrt();
        let expect = (1.0 - 2.5) / (std + 1e-6);
        assert!((y.double_value(&[0, 0]) - expect).abs() < 1e-6);
    }

    #[test]
    fn layer_norm_without_autograd_is_bit_identical() {
        // Widths of the tiny and the published model and one that is not a power of two
        // (the mean's division then rounds); rows of several magnitudes and offsets.
        for (width, seed) in [(64i64, 3i64), (512, 4), (100, 5)] {
            let reg = std::cell::RefCell::new(super::super::weights::Registry::default());
            let ln = LayerNorm::new(&Scope::root(&reg, Device::Cpu), width);
            tch::manual_seed(seed);
            // Non-trivial gain and bias, so the fused path's every term matters.
            tch::no_grad(|| {
                ln.a.shallow_clone()
                    .copy_(&(Tensor::randn([width], (Kind::Float, Device::Cpu)) * 0.7 + 1.0));
                ln.b.shallow_clone()
                    .copy_(&(Tensor::randn([width], (Kind::Float, Device::Cpu)) * 0.3));
            });
            let f = (Kind::Float, Device::Cpu);
            let x = Tensor::randn([6, 40, width], f) * Tensor::randn([6, 40, 1], f).exp()
                + Tensor::randn([6, 40, 1], f) * 5.0;
            let x = x.set_requires_grad(true);
            let with_grad = ln.forward(&x);
            assert!(with_grad.requires_grad(), "the autograd path was not taken");
            let fast = tch::no_grad(|| ln.forward(&x.detach()));
            assert!(!fast.requires_grad());
            assert!(
                fast.equal(&with_grad.detach()),
                "width {width}: no-grad LayerNorm differs by {}",
                (&fast - with_grad.detach()).abs().max().double_value(&[])
            );
            let inference = {
                let _g = super::super::inference::InferenceModeGuard::new();
                ln.forward(&x.detach())
            };
            assert!(
                inference.equal(&fast),
                "width {width}: inference mode differs"
            );
        }
    }

    #[test]
    fn constant_operands_round_as_scalars() {
        let f = (Kind::Float, Device::Cpu);
        tch::manual_seed(9);
        let x = Tensor::randn([7, 33], f) * 11.0;
        for v in [1e-6, 8.0, 22.627416997969522, 5.656854249492381, 0.1] {
            let c = Constant::new(v);
            for x in [
                x.shallow_clone(),
                x.to_kind(Kind::Double),
                x.to_kind(Kind::BFloat16),
            ] {
                assert!(c.add_to(&x).equal(&(&x + v)), "{v} add {:?}", x.kind());
                assert!(c.multiply(&x).equal(&(&x * v)), "{v} mul {:?}", x.kind());
                assert!(c.divide(&x).equal(&(&x / v)), "{v} div {:?}", x.kind());
                assert_eq!(c.divide(&x).kind(), x.kind());
            }
        }
    }
}
