//! `ithn-dist bench metrics`: this crate's BLEU + ROUGE-L + CIDEr against pycocoevalcap on the
//! same pairs, timed in the same run, with the values compared.
//!
//! Why: evaluation runs after every epoch on 2k–4k reports, and the Python scorers take
//! seconds; the point of the Rust scorer is to be much faster while giving *identical*
//! numbers. The pairs (3,858 by default, the size of the MIMIC-CXR test split) are built from
//! the IU X-Ray annotation's cleaned reports by a seeded generator: identical copies, other
//! records, word deletions/substitutions, truncations — the same kinds as the metric fixture.
//!
//! What is timed: on the Python side only the `compute_score` calls (what a user waits for;
//! interpreter start-up and imports are left out); on the Rust side each metric alone
//! (`bleu::score`, `rouge::score`, `cider::score`, each tokenising for itself) and all three in
//! one pass (`score_without_meteor`, what `score` and `evaluate` run), on 1 thread and on all
//! cores, median of `--repeat` runs. Every Rust result is checked bit for bit against
//! pycocoevalcap's (IEEE bits sent by the script), so a fast but different scorer fails the
//! bench (exit code 1).

use anyhow::Context;
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::data::text::{clean_iu_xray, py_split_whitespace, read_annotation_reports};
use crate::dataset::Split;
use crate::eval::metrics::bleu::{self, BleuScores};
use crate::eval::metrics::{
    cider, rouge, score_without_meteor, MetricsError, ScoreReport, Scores, KEYS,
};

#[derive(Args, Debug)]
pub struct MetricsBenchArgs {
    /// Number of (reference, hypothesis) pairs.
    #[arg(long, default_value_t = 3858, value_parser = crate::bounds::at_least::<usize>(1))]
    pub pairs: usize,
    /// R2Gen annotation JSON whose reports seed the pairs.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "data/iu_xray/annotation.json"
    )]
    pub ann: PathBuf,
    /// Seed of the pair generator.
    #[arg(long, default_value_t = 1234)]
    pub seed: u64,
    /// Timed repetitions of each Rust scorer (the median is reported; on a loaded machine
    /// single runs swing by 2×, the scorers take milliseconds, so many runs cost little).
    #[arg(long, default_value_t = 11, value_parser = crate::bounds::at_least::<usize>(1))]
    pub repeat: usize,
    /// Python interpreter with pycocoevalcap installed.
    #[arg(long, value_name = "PYTHON", default_value = ".venv/bin/python")]
    pub python: PathBuf,
    /// The reference-side script.
    #[arg(
        long,
        value_name = "SCRIPT",
        default_value = "ops/bench/metrics_pycoco.py"
    )]
    pub script: PathBuf,
}

/// A seeded SplitMix64 stream, so the pairs are the same on every machine.
struct Rng(crate::rng::SplitMix64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0.below_mod(n as u64) as usize
    }
}

/// Builds `n` (reference, hypothesis) pairs from cleaned reports.
pub fn make_pairs(reports: &[String], n: usize, seed: u64) -> (Vec<String>, Vec<String>) {
    let mut rng = Rng(crate::rng::SplitMix64::new(seed));
    let words: Vec<&str> = reports
        .iter()
        .flat_map(|r| py_split_whitespace(r))
        .collect();
    let (mut refs, mut hyps) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        let r = &reports[rng.below(reports.len())];
        let hyp = match i % 5 {
            0 => r.clone(),
            1 => reports[rng.below(reports.len())].clone(),
            4 => {
                let toks: Vec<&str> = py_split_whitespace(r).collect();
                toks[..toks.len().div_ceil(2)].join(" ")
            }
            _ => py_split_whitespace(r)
                .filter_map(|w| match rng.below(10) {
                    0 | 1 => None,
                    2 | 3 => Some(words[rng.below(words.len())]),
                    _ => Some(w),
                })
                .collect::<Vec<_>>()
                .join(" "),
        };
        refs.push(r.clone());
        hyps.push(hyp);
    }
    (refs, hyps)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// CPU time of this process. On a shared machine wall time swings with other people's load;
/// CPU time does much less, so the bench reports both (Python measures `process_time`).
fn process_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec we pass.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Median wall and CPU times of `repeat` runs of `score` on a pool of `threads`, and its
/// last result.
fn time_on<T: Send>(
    threads: usize,
    repeat: usize,
    score: impl Fn() -> Result<T, MetricsError> + Send + Sync,
) -> anyhow::Result<Timed<T>> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    let (mut walls, mut cpus) = (Vec::new(), Vec::new());
    let mut last = None;
    for _ in 0..repeat.max(1) {
        let (t, c) = (Instant::now(), process_cpu_time());
        let out = pool.install(&score)?;
        walls.push(t.elapsed());
        cpus.push(process_cpu_time().saturating_sub(c));
        last = Some(out);
    }
    Ok(Timed {
        wall: median(walls).as_secs_f64(),
        cpu: median(cpus).as_secs_f64(),
        out: last.expect("at least one repetition"),
    })
}

struct Timed<T> {
    wall: f64,
    cpu: f64,
    out: T,
}

/// Wall seconds on 1 thread and on N threads.
fn walls<T>(t: &[Timed<T>; 2]) -> [f64; 2] {
    [t[0].wall, t[1].wall]
}

/// The Python side's time for `key` (`field` = "times" for wall, "cpu_times" for CPU).
fn python_seconds(py: &serde_json::Value, field: &str, key: &str) -> f64 {
    py[field][key].as_f64().unwrap_or(f64::NAN)
}

/// Runs pycocoevalcap on the pairs (written to a private temp dir) and returns its output.
fn run_python(
    a: &MetricsBenchArgs,
    refs: &[String],
    hyps: &[String],
) -> anyhow::Result<serde_json::Value> {
    let dir = tempfile_dir()?;
    let pairs_path = dir.join("pairs.json");
    let out_path = dir.join("pycoco.json");
    crate::fsutil::write_atomic(
        &pairs_path,
        serde_json::to_string(&serde_json::json!({"refs": refs, "hyps": hyps}))?.as_bytes(),
    )?;
    let status = Command::new(&a.python)
        .arg(&a.script)
        .arg(&pairs_path)
        .arg(&out_path)
        .status()
        .with_context(|| format!("running {} {}", a.python.display(), a.script.display()))?;
    anyhow::ensure!(status.success(), "{} failed ({status})", a.script.display());
    let py = serde_json::from_slice(&std::fs::read(&out_path)?)
        .with_context(|| format!("reading {}", out_path.display()))?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(py)
}

/// Each metric alone and all three in one pass, on 1 thread and on `threads`.
struct RustTimes {
    bleu: [Timed<BleuScores>; 2],
    rouge: [Timed<(f64, Vec<f64>)>; 2],
    cider: [Timed<(f64, Vec<f64>)>; 2],
    all: [Timed<ScoreReport>; 2],
}

fn time_rust(
    refs: &[String],
    hyps: &[String],
    repeat: usize,
    threads: usize,
) -> anyhow::Result<RustTimes> {
    fn both<T: Send>(
        threads: usize,
        repeat: usize,
        f: impl Fn() -> Result<T, MetricsError> + Send + Sync,
    ) -> anyhow::Result<[Timed<T>; 2]> {
        Ok([time_on(1, repeat, &f)?, time_on(threads, repeat, &f)?])
    }
    Ok(RustTimes {
        bleu: both(threads, repeat, || bleu::score(refs, hyps))?,
        rouge: both(threads, repeat, || rouge::score(refs, hyps))?,
        cider: both(threads, repeat, || cider::score(refs, hyps))?,
        all: both(threads, repeat, || score_without_meteor(refs, hyps))?,
    })
}

/// Every report of the annotation's three splits, cleaned as IU X-Ray's.
fn read_reports(ann: &Path) -> anyhow::Result<Vec<String>> {
    let reports: Vec<String> = Split::ALL
        .iter()
        .map(|split| read_annotation_reports(ann, split.name()))
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| {
            format!(
                "reading the bench's reports from {} (pass --ann)",
                ann.display()
            )
        })?
        .into_iter()
        .flatten()
        .map(|(_, report)| clean_iu_xray(&report))
        .collect();
    anyhow::ensure!(!reports.is_empty(), "{} has no reports", ann.display());
    Ok(reports)
}

pub fn run(a: MetricsBenchArgs) -> anyhow::Result<i32> {
    let reports = read_reports(&a.ann)?;
    let (refs, hyps) = make_pairs(&reports, a.pairs, a.seed);

    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rust = time_rust(&refs, &hyps, a.repeat, threads)?;
    let py = run_python(&a, &refs, &hyps)?;

    let profile = if cfg!(debug_assertions) {
        "DEBUG build (timings not representative; use --release)"
    } else {
        "release build"
    };
    println!(
        "bench metrics ({profile}): {} pairs from {}, median of {} Rust runs; \
         pycocoevalcap times only its compute_score calls",
        a.pairs,
        a.ann.display(),
        a.repeat.max(1)
    );
    println!(
        "  {:<26} {:>13} {:>12} {:>8} {:>12} {:>8}",
        "wall time",
        "pycocoevalcap",
        "rust 1 thr",
        "ratio",
        format!("rust {threads} thr"),
        "ratio"
    );
    let row = |label: &str, py_s: f64, rust: [f64; 2]| {
        println!(
            "  {label:<26} {:>10.1} ms {:>9.2} ms {:>7.1}x {:>9.2} ms {:>7.1}x",
            py_s * 1e3,
            rust[0] * 1e3,
            py_s / rust[0],
            rust[1] * 1e3,
            py_s / rust[1],
        )
    };
    let py_wall = |k: &str| python_seconds(&py, "times", k);
    row("BLEU-1..4", py_wall("BLEU"), walls(&rust.bleu));
    row("ROUGE-L", py_wall("ROUGE_L"), walls(&rust.rouge));
    row("CIDEr", py_wall("CIDEr"), walls(&rust.cider));
    let py_total = py_wall("BLEU") + py_wall("ROUGE_L") + py_wall("CIDEr");
    let sum = |i: usize| rust.bleu[i].wall + rust.rouge[i].wall + rust.cider[i].wall;
    row("sum of the three", py_total, [sum(0), sum(1)]);
    row("all three, one pass", py_total, walls(&rust.all));
    let py_cpu: f64 = ["BLEU", "ROUGE_L", "CIDEr"]
        .iter()
        .map(|k| python_seconds(&py, "cpu_times", k))
        .sum();
    println!(
        "  CPU time, all three: pycocoevalcap {:.1} ms, rust one pass on 1 thread {:.2} ms: {:.1}x",
        py_cpu * 1e3,
        rust.all[0].cpu * 1e3,
        py_cpu / rust.all[0].cpu
    );
    let report = &rust.all[1].out;
    let alone_agree = agrees_alone(&rust, report);
    println!(
        "  each metric alone, on 1 and {threads} threads, gives the one-pass values: {}",
        if alone_agree {
            "bit-identical"
        } else {
            "DIFFERENT"
        }
    );
    let identical = compare(&py, report) && alone_agree;
    Ok(if identical { 0 } else { 1 })
}

/// The BLEU-1..4, ROUGE-L and CIDEr columns of a report as IEEE bits: corpus value, then items.
fn columns(r: &ScoreReport) -> Vec<Vec<u64>> {
    let col = |pick: &dyn Fn(&Scores) -> f64| -> Vec<u64> {
        std::iter::once(&r.corpus)
            .chain(&r.items)
            .map(|s| pick(s).to_bits())
            .collect()
    };
    let mut out: Vec<Vec<u64>> = (0..4).map(|k| col(&|s| s.bleu[k])).collect();
    out.push(col(&|s| s.rouge_l));
    out.push(col(&|s| s.cider));
    out
}

/// The same columns from the metrics run one by one.
fn alone_columns(b: &BleuScores, r: &(f64, Vec<f64>), c: &(f64, Vec<f64>)) -> Vec<Vec<u64>> {
    let mut out: Vec<Vec<u64>> = (0..4)
        .map(|k| {
            std::iter::once(b.0[k])
                .chain(b.1.iter().map(|x| x[k]))
                .map(f64::to_bits)
                .collect()
        })
        .collect();
    for (corpus, items) in [r, c] {
        out.push(
            std::iter::once(*corpus)
                .chain(items.iter().copied())
                .map(f64::to_bits)
                .collect(),
        );
    }
    out
}

/// True when every run (each metric alone and all in one pass, on 1 and N threads) gave
/// bit for bit `report`'s values.
fn agrees_alone(rust: &RustTimes, report: &ScoreReport) -> bool {
    let want = columns(report);
    (0..2).all(|i| {
        columns(&rust.all[i].out) == want
            && alone_columns(&rust.bleu[i].out, &rust.rouge[i].out, &rust.cider[i].out) == want
    })
}

/// Prints per-key agreement; true when every value (corpus and per item) is bit-identical.
/// The Python side sends IEEE-754 bit patterns ("bits"), so the comparison is exact.
fn compare(py: &serde_json::Value, report: &ScoreReport) -> bool {
    let mut all_identical = true;
    for key in KEYS.iter().filter(|k| **k != "METEOR") {
        let pick = |s: &Scores| {
            s.entries()
                .into_iter()
                .find(|e| e.0 == *key)
                .map_or(f64::NAN, |e| e.1)
        };
        let ours: Vec<f64> = std::iter::once(&report.corpus)
            .chain(&report.items)
            .map(pick)
            .collect();
        let theirs: Vec<f64> = py["bits"][key]
            .as_array()
            .map(|v| {
                v.iter()
                    .map(|b| b.as_u64().map_or(f64::NAN, f64::from_bits))
                    .collect()
            })
            .unwrap_or_default();
        let same = ours.len() == theirs.len()
            && ours
                .iter()
                .zip(&theirs)
                .all(|(a, b)| a.to_bits() == b.to_bits());
        let max_diff = ours
            .iter()
            .zip(&theirs)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        all_identical &= same;
        println!(
            "  {key:<8} corpus {:.12}  {}  (max |diff| {max_diff:.1e} over corpus + {} items)",
            ours[0],
            if same { "bit-identical" } else { "DIFFERENT" },
            ours.len() - 1
        );
    }
    all_identical
}

/// A fresh private directory under the system temp dir.
fn tempfile_dir() -> std::io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("ithn-bench-metrics-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_deterministic_and_of_every_kind() {
        let reports: Vec<String> = ["a b c d .", "e f g .", "a e i o u ."]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (r1, h1) = make_pairs(&reports, 10, 7);
        let (r2, h2) = make_pairs(&reports, 10, 7);
        assert_eq!((r1.clone(), h1.clone()), (r2, h2));
        assert_eq!(r1.len(), 10);
        assert_eq!(r1[0], h1[0]); // kind 0: identical
        assert!(h1[4].split(' ').count() <= r1[4].split(' ').count()); // kind 4: truncated
    }
}
