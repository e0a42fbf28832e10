//! ithn-dist: R2GenCMN radiology report generation trained with ITHN (increasingly hard
//! negatives) across many ranks. The modules follow the data's way through the system:
//! `config` → `data` → `model` → `dist` → `train` → `checkpoint` → `eval`; `cli` ties them to
//! the `ithn-dist` binary.

pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod data;
pub mod dist;
pub mod eval;
pub mod fsutil;
pub mod gpu;
pub mod logging;
pub mod model;
pub mod plot;
pub mod synth;
pub mod train;
