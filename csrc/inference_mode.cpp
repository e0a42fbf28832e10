// libtorch's InferenceMode guard for Rust: tch exposes no_grad but not c10::InferenceMode,
// which also skips the autograd and view/version-tracking dispatch of every op (tensors made
// inside are "inference tensors": readable anywhere, never recorded for backward). Decoding
// runs thousands of tiny ops per report, where that per-op dispatch is a large share.
#include <c10/core/InferenceMode.h>

extern "C" void *ithn_inference_mode_enter() { return new c10::InferenceMode(true); }

extern "C" void ithn_inference_mode_exit(void *guard) {
  delete static_cast<c10::InferenceMode *>(guard);
}
