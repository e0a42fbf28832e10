//! `ithn-dist gpu …`: the parts of the GPU readiness check (ops/gpu/check.sh, docs/gpu.md) that
//! need the binary itself: the public parity checks on any device, and the FLOPs per training
//! sample from the model dimensions (for MFU next to `bench step`).

use clap::{Args, Subcommand};

use crate::config::ConfigArgs;

pub mod compare;
pub mod fixture;
pub mod flops;
pub mod parity;

#[derive(Subcommand, Debug)]
pub enum GpuCmd {
    /// Forward, losses, gradients, decoding and one Adam step against the public fixture, on the
    /// CPU or a CUDA device (CUDA also against the CPU in the same process; `--bf16` vs fp32).
    Parity(parity::ParityArgs),
    /// FLOPs of one training sample from the model dimensions, and the MFU of a measured rate.
    Flops(FlopsArgs),
}

#[derive(Args, Debug)]
pub struct FlopsArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Report length in tokens, BOS/EOS included (as `bench step --report-len`).
    #[arg(long, default_value_t = 40, value_parser = crate::bounds::between::<usize>(2, crate::bounds::MAX_SEQ_LEN as u64))]
    pub report_len: usize,
    /// Vocabulary size without the BOS/EOS/pad column (as `bench step --vocab`).
    #[arg(long, default_value_t = 761, value_parser = crate::bounds::at_least::<usize>(1))]
    pub vocab: usize,
    /// A measured training rate (samples/s, e.g. from `bench step`): prints the MFU against `--peak-tflops`.
    #[arg(long, value_parser = crate::bounds::positive_finite)]
    pub samples_per_s: Option<f64>,
    /// Peak rate to divide by, TFLOP/s (H200 bf16 dense matrix products measured at ~790 on these machines).
    #[arg(long, default_value_t = 790.0, value_parser = crate::bounds::positive_finite)]
    pub peak_tflops: f64,
}

pub fn run(cmd: GpuCmd) -> anyhow::Result<i32> {
    match cmd {
        GpuCmd::Parity(a) => parity::run(a),
        GpuCmd::Flops(a) => {
            let cfg = a.config.load()?;
            let f = flops::sample_flops(&cfg, a.report_len, a.vocab + 1);
            let mut out = serde_json::to_value(f)?;
            out["batch_size"] = cfg.train.batch_size.into();
            if let Some(rate) = a.samples_per_s {
                let achieved = rate * f.train;
                out["samples_per_s"] = rate.into();
                out["achieved_tflops"] = (achieved / 1e12).into();
                out["mfu"] = (achieved / (a.peak_tflops * 1e12)).into();
                out["peak_tflops"] = a.peak_tflops.into();
            }
            println!("{}", serde_json::to_string(&out)?);
            Ok(0)
        }
    }
}
