//! libtorch's inference mode (`c10::InferenceMode`, `torch.inference_mode()` in Python), which
//! tch does not expose: like no-grad, and besides skips the autograd and view/version-counter
//! dispatch of every op. Decoding issues hundreds of small ops per token, so that per-op
//! dispatch is a measurable share of it (`ithn-dist bench decode`).
//!
//! Tensors created inside are inference tensors: they can be read anywhere (functional ops,
//! copies to another device), but never recorded for backward nor modified in place outside
//! inference mode. Decoding's outputs (token ids, log-prob rows) are only read afterwards.

use std::ffi::c_void;
use std::marker::PhantomData;

extern "C" {
    fn ithn_inference_mode_enter() -> *mut c_void;
    fn ithn_inference_mode_exit(guard: *mut c_void);
}

/// RAII guard: inference mode is on for this thread until it is dropped (guards nest).
/// Not `Send`: libtorch keeps the mode per thread, so the guard must end where it began.
pub struct InferenceModeGuard {
    guard: *mut c_void,
    _not_send: PhantomData<*mut c_void>,
}

impl InferenceModeGuard {
    pub fn new() -> InferenceModeGuard {
        // SAFETY: the shim allocates a c10::InferenceMode (a thread-local RAII guard) and
        // returns it; Drop releases it on the same thread (the type is !Send).
        let guard = unsafe { ithn_inference_mode_enter() };
        InferenceModeGuard {
            guard,
            _not_send: PhantomData,
        }
    }
}

impl Default for InferenceModeGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for InferenceModeGuard {
    fn drop(&mut self) {
        // SAFETY: `guard` came from ithn_inference_mode_enter on this thread, freed once.
        unsafe { ithn_inference_mode_exit(self.guard) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Kind, Tensor};

    #[test]
    fn tensors_made_inside_are_inference_tensors_and_readable_outside() {
        let w = Tensor::ones([3], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
        let y = {
            let _g = InferenceModeGuard::new();
            &w * 2.0
        };
        assert!(!y.requires_grad(), "no graph is recorded inside");
        assert!(y.is_inference(), "made inside: an inference tensor");
        // Read outside: functional ops work and give the values.
        assert_eq!(Vec::<f32>::try_from(&y + 1.0).unwrap(), vec![3.0; 3]);
        // Outside, the mode is off again: new ops record the graph.
        assert!((&w * 2.0).requires_grad());
        assert!(!(&w * 2.0).is_inference());
    }
}
