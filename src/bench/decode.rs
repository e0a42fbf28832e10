//! `ithn-dist bench decode`: reports/s of greedy and beam-3 decoding at batch 1 and 16, with the
//! incremental key/value cache against the uncached decoder (whole history through every layer
//! at every step) timed in the same run on the same features — the ratio is the cache's gain.
//! The visual extractor and encoder run outside the timed region only for the features; the
//! timed region is the full sampler (encoder memory, every step, beam bookkeeping).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use tch::{Device, Kind, Tensor};

use crate::config::Config;
use crate::model::decode::{beam_search_with, greedy_with, Decoded, StepMode};
use crate::model::{ModelCheckpoint, R2GenCmn};

#[derive(Args, Debug)]
pub struct DecodeBenchArgs {
    /// Model checkpoint directory; without it a fresh model is built from --config.
    #[arg(long, value_name = "DIR")]
    pub checkpoint: Option<PathBuf>,
    /// Configuration of the fresh model.
    #[arg(long, value_name = "FILE", default_value = "configs/tiny.toml")]
    pub config: PathBuf,
    /// Output classes (V+1) of the fresh model.
    #[arg(long, default_value_t = 761, value_parser = crate::bounds::at_least::<usize>(2))]
    pub logit_dim: usize,
    /// Batch sizes (images decoded together).
    #[arg(long, value_delimiter = ',', default_value = "1,16", value_parser = crate::bounds::at_least::<usize>(1))]
    pub batch: Vec<usize>,
    /// Maximum report length (default: eval.max_seq_length of the config).
    #[arg(long, value_parser = crate::bounds::between::<usize>(2, crate::bounds::MAX_SEQ_LEN))]
    pub max_len: Option<usize>,
    /// libtorch intra-op threads (1 avoids OpenMP oversubscription on a shared machine).
    #[arg(long, default_value_t = 1, value_parser = crate::bounds::threads::<i32>())]
    pub threads: i32,
    /// Timed repetitions (the median is reported).
    #[arg(long, default_value_t = 3, value_parser = crate::bounds::at_least::<usize>(1))]
    pub repeat: usize,
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn timed(repeat: usize, f: impl Fn() -> Decoded) -> (Duration, Decoded) {
    let mut times = Vec::new();
    let mut last = f(); // warm-up (allocator, kernels)
    for _ in 0..repeat.max(1) {
        let t = Instant::now();
        last = f();
        times.push(t.elapsed());
    }
    (median(times), last)
}

/// A rate with 3 significant digits (full-size models decode well under 1 report/s).
fn sig3(x: f64) -> String {
    let decimals = if x > 0.0 {
        (2 - x.log10().floor() as i64).clamp(0, 6) as usize
    } else {
        1
    };
    format!("{x:.decimals$}")
}

fn mean_len(d: &Decoded) -> f64 {
    let n = d.seq.size()[0];
    d.seq.ne(0).sum(Kind::Int64).int64_value(&[]) as f64 / n as f64
}

pub fn run(a: DecodeBenchArgs) -> anyhow::Result<i32> {
    let device = Device::cuda_if_available();
    tch::set_num_threads(a.threads);
    let (model, config) = match &a.checkpoint {
        Some(dir) => {
            let ckpt = ModelCheckpoint::open(dir)?;
            (R2GenCmn::from_checkpoint(&ckpt, device)?, ckpt.config)
        }
        None => {
            let config = Config::load(&a.config, &[])?;
            (R2GenCmn::from_config(&config, a.logit_dim, device)?, config)
        }
    };
    let max_len = a.max_len.unwrap_or(config.eval.max_seq_length);
    let size = config.data.image_size as i64;
    println!(
        "bench decode: device {device:?}, d_model {}, layers {}, vocab {}, max_len {max_len}, threads {}, repeat {}",
        config.model.d_model,
        config.model.num_layers,
        model.logit_dim(),
        a.threads,
        a.repeat
    );
    println!(
        "{:<8} {:>5} {:>12} {:>12} {:>8} {:>9} {:>6}",
        "method", "batch", "cached r/s", "uncached r/s", "speedup", "mean len", "same"
    );
    tch::manual_seed(7);
    for &b in &a.batch {
        let images = Tensor::randn(
            [b as i64, model.views() as i64, 3, size, size],
            (Kind::Float, device),
        );
        let (att, _) = tch::no_grad(|| model.visual(&images, false));
        for (name, beam) in [("greedy", 1usize), ("beam3", 3)] {
            let run = |mode| {
                if beam == 1 {
                    greedy_with(&model, &att, max_len, config.eval.block_trigrams, mode)
                } else {
                    beam_search_with(&model, &att, max_len, beam, mode)
                }
            };
            let (tc, dc) = timed(a.repeat, || run(StepMode::Cached));
            let (tr, dr) = timed(a.repeat, || run(StepMode::Recompute));
            let rate = |t: Duration| b as f64 / t.as_secs_f64();
            println!(
                "{name:<8} {b:>5} {:>12} {:>12} {:>7.2}x {:>9.1} {:>6}",
                sig3(rate(tc)),
                sig3(rate(tr)),
                tr.as_secs_f64() / tc.as_secs_f64(),
                mean_len(&dc),
                if dc.seq.equal(&dr.seq) { "yes" } else { "no" }
            );
        }
    }
    Ok(0)
}
