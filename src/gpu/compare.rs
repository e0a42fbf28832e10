//! Tensor comparisons of the parity check, each a [`Check`] row with its figures and the
//! tolerance it was held to (stated in docs/gpu.md).
//!
//! Two error measures: the element-wise one of tests/it/model_parity.rs
//! (|got − want| ≤ max(rtol·|want|, atol) for every element), and the relative L2 error
//! ‖got − want‖₂ / ‖want‖₂ that METHOD-style GPU checks use (float32 lands far under 1e-3,
//! bfloat16 operands between 1e-3 and 1e-2 per product). A NaN or infinity in either tensor
//! always fails.

use serde::Serialize;
use tch::{Kind, Tensor};

/// How close two tensors must be.
#[derive(Debug, Clone, Copy)]
pub enum Tol {
    /// Every element within max(rtol·|want|, atol).
    Elementwise { atol: f64, rtol: f64 },
    /// ‖got − want‖₂ ≤ bound·‖want‖₂ + atol·√n: the floor keeps tensors whose true value is
    /// zero (the gradient of an attention key bias, which softmax cancels) from failing on noise.
    RelL2 { bound: f64, atol: f64 },
    /// Identical values (token ids).
    Exact,
}

impl Tol {
    fn describe(&self) -> String {
        match self {
            Tol::Elementwise { atol, rtol } => format!("elementwise rtol {rtol:e} atol {atol:e}"),
            Tol::RelL2 { bound, atol } => format!("rel-L2 ≤ {bound:e} (+{atol:e}·√n)"),
            Tol::Exact => "exact".into(),
        }
    }
}

/// One compared tensor.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What is compared ("fixture", "cpu", "fp32").
    pub against: String,
    pub name: String,
    pub max_abs: f64,
    pub rel_l2: f64,
    pub tolerance: String,
    pub ok: bool,
    /// Why it failed when it did not get as far as the numbers (shape, NaN).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Compares `got` with `want` (any device, any floating or integer kind) under `tol`.
pub fn compare(against: &str, name: &str, got: &Tensor, want: &Tensor, tol: Tol) -> Check {
    let mut check = Check {
        against: against.into(),
        name: name.into(),
        max_abs: f64::NAN,
        rel_l2: f64::NAN,
        tolerance: tol.describe(),
        ok: false,
        note: None,
    };
    if got.size() != want.size() {
        check.note = Some(format!("shape {:?} vs {:?}", got.size(), want.size()));
        return check;
    }
    let got = got
        .detach()
        .to_device(tch::Device::Cpu)
        .to_kind(Kind::Double);
    let want = want
        .detach()
        .to_device(tch::Device::Cpu)
        .to_kind(Kind::Double);
    let finite = |t: &Tensor| t.isfinite().all().int64_value(&[]) == 1;
    if !finite(&got) || !finite(&want) {
        check.note = Some("NaN or infinity".into());
        return check;
    }
    let err = (&got - &want).abs();
    let numel = err.numel();
    check.max_abs = if numel == 0 {
        0.0
    } else {
        err.max().double_value(&[])
    };
    let norm = |t: &Tensor| t.square().sum(Kind::Double).sqrt().double_value(&[]);
    let want_norm = norm(&want);
    let err_norm = norm(&err);
    check.rel_l2 = if want_norm > 0.0 {
        err_norm / want_norm
    } else {
        err_norm
    };
    check.ok = match tol {
        Tol::Elementwise { atol, rtol } => {
            numel == 0
                || err
                    .le_tensor(&(want.abs() * rtol).clamp_min(atol))
                    .all()
                    .int64_value(&[])
                    == 1
        }
        Tol::RelL2 { bound, atol } => err_norm <= bound * want_norm + atol * (numel as f64).sqrt(),
        Tol::Exact => check.max_abs == 0.0,
    };
    check
}

/// A check on two scalars already computed (e.g. a beam score from decode.json).
pub fn compare_scalar(against: &str, name: &str, got: f64, want: f64, rtol: f64) -> Check {
    let err = (got - want).abs();
    Check {
        against: against.into(),
        name: name.into(),
        max_abs: err,
        rel_l2: err / want.abs().max(1e-30),
        tolerance: format!("rel ≤ {rtol:e}"),
        ok: got.is_finite() && err <= rtol * want.abs(),
        note: None,
    }
}

/// One printed line per check.
pub fn print(c: &Check) {
    println!(
        "{:<5} {:<8} {:<52} max|err| {:>10.3e} rel-L2 {:>10.3e}  ({}){}",
        if c.ok { "ok" } else { "FAIL" },
        c.against,
        c.name,
        c.max_abs,
        c.rel_l2,
        c.tolerance,
        c.note
            .as_deref()
            .map(|n| format!(" [{n}]"))
            .unwrap_or_default()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(bound: f64) -> Tol {
        Tol::RelL2 { bound, atol: 0.0 }
    }

    #[test]
    fn relative_l2_floor_lets_zero_references_pass_on_noise_only() {
        let zero = Tensor::zeros([64], (Kind::Float, tch::Device::Cpu));
        let noise = Tensor::full([64], 5e-10, (Kind::Float, tch::Device::Cpu));
        let floor = Tol::RelL2 {
            bound: 1e-3,
            atol: 1e-8,
        };
        assert!(compare("x", "noise", &noise, &zero, floor).ok);
        assert!(!compare("x", "noise", &noise, &zero, rel(1e-3)).ok);
        let big = Tensor::full([64], 1e-6, (Kind::Float, tch::Device::Cpu));
        assert!(!compare("x", "signal", &big, &zero, floor).ok);
    }

    #[test]
    fn tolerances_accept_close_and_reject_far_tensors() {
        let want = Tensor::from_slice(&[1.0f32, -2.0, 3.0]);
        let close = &want * 1.00001;
        let far = &want * 1.1;
        let el = Tol::Elementwise {
            atol: 1e-5,
            rtol: 1e-4,
        };
        assert!(compare("x", "close", &close, &want, el).ok);
        assert!(!compare("x", "far", &far, &want, el).ok);
        assert!(compare("x", "close", &close, &want, rel(1e-4)).ok);
        let c = compare("x", "far", &far, &want, rel(1e-2));
        assert!(!c.ok);
        assert!((c.rel_l2 - 0.1).abs() < 1e-6, "{}", c.rel_l2);
        assert!(compare("x", "same", &want, &want, Tol::Exact).ok);
        assert!(!compare("x", "close", &close, &want, Tol::Exact).ok);
    }

    #[test]
    fn nan_and_shape_mismatch_fail() {
        let want = Tensor::from_slice(&[1.0f32, 2.0]);
        let nan = Tensor::from_slice(&[1.0f32, f32::NAN]);
        let c = compare("x", "nan", &nan, &want, rel(1.0));
        assert!(!c.ok && c.note.as_deref() == Some("NaN or infinity"));
        let c = compare("x", "shape", &want.view([2, 1]), &want, rel(1.0));
        assert!(!c.ok && c.note.unwrap().starts_with("shape"));
        assert!(!compare_scalar("x", "s", f64::NAN, 1.0, 1.0).ok);
        assert!(compare_scalar("x", "s", 1.00001, 1.0, 1e-4).ok);
    }
}
