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
    /// Greedy and beam-3 decoding: reports/s at batch 1 and 16 vs the reference decoding loop (PyTorch).
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

/// User + system CPU seconds of this process so far, all threads (`getrusage`). Benches divide
/// work by it to quote per-CPU-second figures, which stay comparable when the two sides use
/// different numbers of cores or the machine is shared.
pub fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// The median of `v` (the mean of the middle two for an even count; NaN when empty).
pub fn median_f64(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Per-round ratios of a bench that alternates the two sides (`--rounds`): their median and
/// range, printed as `4.34x [3.55-4.89]`.
pub fn rounds_summary(ratios: &[f64]) -> String {
    let (lo, hi) = ratios
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &x| {
            (l.min(x), h.max(x))
        });
    if ratios.is_empty() {
        return "-".into();
    }
    format!("{:.2}x [{lo:.2}-{hi:.2}]", median_f64(ratios))
}

/// Runs a Python reference script (`python script args…`) and returns its standard output;
/// a failure names the script and carries its standard error.
pub fn run_reference_script(
    python: &std::path::Path,
    script: &std::path::Path,
    args: &[std::ffi::OsString],
) -> anyhow::Result<String> {
    use anyhow::Context;
    let out = std::process::Command::new(python)
        .arg(script)
        .args(args)
        .output()
        .with_context(|| format!("running {} {}", python.display(), script.display()))?;
    if !out.status.success() {
        anyhow::bail!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    #[test]
    fn rounds_summary_is_median_and_range() {
        assert_eq!(super::rounds_summary(&[3.0, 1.0, 2.0]), "2.00x [1.00-3.00]");
        assert_eq!(
            super::rounds_summary(&[4.0, 1.0, 3.0, 2.0]),
            "2.50x [1.00-4.00]"
        );
        assert_eq!(super::rounds_summary(&[7.5]), "7.50x [7.50-7.50]");
        assert_eq!(super::rounds_summary(&[]), "-");
    }
}
