//! `ithn-dist bench …`: timings, each against a reference measured in the same run.
//!
//! Why a subcommand and not assertions: timings vary with the machine and its load, so tests
//! never assert on them; a bench prints its figure next to a reference (e.g. the Python
//! implementation) timed in the same process, and the ratio is what reports quote.
//! Each area adds its variant to [`BenchCmd`] and a match arm to [`run`].

use clap::Subcommand;

pub mod decode;
pub mod loader;
pub mod metrics;
pub mod prepare;
pub mod step;

#[derive(Subcommand, Debug)]
pub enum BenchCmd {
    /// BLEU + ROUGE-L + CIDEr: this crate vs pycocoevalcap on the same pairs (times, ratio, values).
    Metrics(metrics::MetricsBenchArgs),
    /// Greedy and beam-3 decoding: reports/s at batch 1 and 16, KV cache vs uncached decoder.
    Decode(decode::DecodeBenchArgs),
    /// The distributed ITHN training step: samples/s and data/forward/backward/communication/optimizer shares.
    Step(step::StepBenchArgs),
    /// Training-batch loader: images/s of this loader vs a PyTorch DataLoader + PIL pipeline on the same shards.
    Loader(loader::LoaderBenchArgs),
    /// `prepare`: images/s vs Pillow, and hard-negative mining at MIMIC scale (270k reports) vs brute force.
    Prepare(prepare::PrepareBenchArgs),
}

pub fn run(cmd: BenchCmd) -> anyhow::Result<i32> {
    match cmd {
        BenchCmd::Metrics(a) => metrics::run(a),
        BenchCmd::Decode(a) => decode::run(a),
        BenchCmd::Loader(a) => loader::run(a),
        BenchCmd::Prepare(a) => prepare::run(a),
        BenchCmd::Step(a) => step::run(a),
    }
}
