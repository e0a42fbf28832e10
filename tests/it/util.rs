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
