//! What every integration test needs: the binary under test and paths into the repository and
//! the shared fixtures beside it. The per-area helpers (`train_support`, `resume_support`,
//! `prepare_util`, `input_contracts::util`) build on these.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The `ithn-dist` binary cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_ithn-dist");

pub fn bin() -> &'static str {
    BIN
}

/// `<repo>/<rel>`.
pub fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// `../shared/<rel>` beside the checkout (fixtures only; the product never reads it).
pub fn shared(rel: &str) -> PathBuf {
    repo("../shared").join(rel)
}

/// The reference fixture's tiny R2GenCMN (`../shared/reference/public/model`, fixture README:
/// d_model 64, 4 heads, 2 layers, memory 64×64 top-8, vocabulary 760 + 1) with its weights.
pub fn reference_fixture_model() -> ithn_dist::model::R2GenCmn {
    let cfg = ithn_dist::config::ModelConfig {
        d_model: 64,
        d_ff: 128,
        num_heads: 4,
        num_layers: 2,
        cmm_size: 64,
        cmm_dim: 64,
        topk: 8,
        proj_dim: 32,
        visual_layers: vec![1, 1, 1, 1],
        visual_width_per_group: 16,
        ..ithn_dist::config::ModelConfig::default()
    };
    let m = ithn_dist::model::R2GenCmn::new(&cfg, 1, 761, tch::Device::Cpu, 0).unwrap();
    m.load_safetensors(&shared("reference/public/model/weights.safetensors"))
        .unwrap();
    m
}
