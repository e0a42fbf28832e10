//! Decoding invariants beyond the fixture's two images, on the fixture model
//! (`../shared/reference/public/model/weights.safetensors`, config A from its config.json):
//! the KV-cached sampler equals the uncached one, batching does not change any image's result,
//! and greedy/beam respect the length limit. Random features stand in for images.

use ithn_dist::model::decode::{beam_search_with, greedy_with, StepMode};
use ithn_dist::model::R2GenCmn;
use tch::{Device, Kind, Tensor};

fn fixture_model() -> R2GenCmn {
    crate::util::reference_fixture_model()
}

fn features(b: i64) -> Tensor {
    tch::manual_seed(11);
    // Patch features are post-ReLU ResNet outputs: non-negative.
    Tensor::rand([b, 49, 2048], (Kind::Float, Device::Cpu)) * 2.0
}

#[test]
fn cached_decoding_equals_uncached() {
    let model = fixture_model();
    let att = features(4);
    let g1 = greedy_with(&model, &att, 40, true, StepMode::Cached);
    let g2 = greedy_with(&model, &att, 40, true, StepMode::Recompute);
    assert!(g1.seq.equal(&g2.seq), "greedy sequences differ");
    assert!(g1.logprobs.allclose(&g2.logprobs, 1e-4, 1e-5, false));
    let b1 = beam_search_with(&model, &att, 40, 3, StepMode::Cached);
    let b2 = beam_search_with(&model, &att, 40, 3, StepMode::Recompute);
    assert!(b1.seq.equal(&b2.seq), "beam sequences differ");
    assert!(b1.logprobs.allclose(&b2.logprobs, 1e-4, 1e-5, false));
}

#[test]
fn batching_does_not_change_results() {
    let model = fixture_model();
    let att = features(5);
    let greedy_all = greedy_with(&model, &att, 30, true, StepMode::Cached);
    let beam_all = beam_search_with(&model, &att, 30, 3, StepMode::Cached);
    for i in 0..5 {
        let one = att.narrow(0, i, 1);
        let g = greedy_with(&model, &one, 30, true, StepMode::Cached);
        let b = beam_search_with(&model, &one, 30, 3, StepMode::Cached);
        assert_eq!(
            g.tokens(0),
            greedy_all.tokens(i as usize),
            "greedy image {i}"
        );
        assert_eq!(b.tokens(0), beam_all.tokens(i as usize), "beam image {i}");
        assert!((b.scores[0] - beam_all.scores[i as usize]).abs() < 1e-3);
    }
}

#[test]
fn length_limit_is_respected() {
    let model = fixture_model();
    let att = features(3);
    for max_len in [1usize, 2, 5] {
        let g = greedy_with(&model, &att, max_len, true, StepMode::Cached);
        let b = beam_search_with(&model, &att, max_len, 3, StepMode::Cached);
        assert_eq!(g.seq.size(), vec![3, max_len as i64]);
        assert_eq!(b.seq.size(), vec![3, max_len as i64]);
        assert_eq!(b.logprobs.size(), vec![3, max_len as i64, 761]);
    }
}
