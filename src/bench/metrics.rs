//! `ithn-dist bench metrics`: this crate's BLEU + ROUGE-L + CIDEr against pycocoevalcap on the
//! same pairs, timed in the same run, with the values compared.
//!
//! Why: evaluation runs after every epoch on 2k–4k reports, and the Python scorers take
//! seconds; the point of the Rust scorer is to be much faster while giving *identical*
//! numbers. The pairs (3,858 by default, the size of the MIMIC-CXR test split) are built from
//! the IU X-Ray annotation's cleaned reports by a seeded generator: identical copies, other
//! records, word deletions/substitutions, truncations — the same kinds as the metric fixture.

use anyhow::Context;
use clap::Args;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::data::text::{
    clean_iu_xray, py_split_whitespace, read_annotation_reports, write_atomic,
};
use crate::eval::metrics::{score_without_meteor, ScoreReport, KEYS};

#[derive(Args, Debug)]
pub struct MetricsBenchArgs {
    /// Number of (reference, hypothesis) pairs.
    #[arg(long, default_value_t = 3858)]
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
    /// Timed repetitions of the Rust scorer (the median is reported).
    #[arg(long, default_value_t = 5)]
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

/// splitmix64: a tiny seeded generator, so the pairs are the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Builds `n` (reference, hypothesis) pairs from cleaned reports.
pub fn make_pairs(reports: &[String], n: usize, seed: u64) -> (Vec<String>, Vec<String>) {
    let mut rng = Rng(seed);
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

/// Median wall and CPU times of `repeat` runs of the Rust scorer on a pool of `threads`.
fn time_rust(
    refs: &[String],
    hyps: &[String],
    repeat: usize,
    threads: usize,
) -> anyhow::Result<(Duration, Duration, ScoreReport)> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    let (mut walls, mut cpus) = (Vec::new(), Vec::new());
    let mut last = None;
    for _ in 0..repeat.max(1) {
        let (t, c) = (Instant::now(), process_cpu_time());
        let report = pool.install(|| score_without_meteor(refs, hyps))?;
        walls.push(t.elapsed());
        cpus.push(process_cpu_time().saturating_sub(c));
        last = Some(report);
    }
    let report = last.expect("at least one repetition");
    Ok((median(walls), median(cpus), report))
}

/// Sum of the Python side's BLEU + ROUGE-L + CIDEr times under `field`.
fn python_seconds(py: &serde_json::Value, field: &str) -> f64 {
    ["BLEU", "ROUGE_L", "CIDEr"]
        .iter()
        .map(|k| py[field][k].as_f64().unwrap_or(f64::NAN))
        .sum()
}

pub fn run(a: MetricsBenchArgs) -> anyhow::Result<i32> {
    let reports: Vec<String> = ["train", "val", "test"]
        .iter()
        .map(|split| read_annotation_reports(&a.ann, split))
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| {
            format!(
                "reading the bench's reports from {} (pass --ann)",
                a.ann.display()
            )
        })?
        .into_iter()
        .flatten()
        .map(|(_, report)| clean_iu_xray(&report))
        .collect();
    anyhow::ensure!(!reports.is_empty(), "{} has no reports", a.ann.display());
    let (refs, hyps) = make_pairs(&reports, a.pairs, a.seed);

    let dir = tempfile_dir()?;
    let pairs_path = dir.join("pairs.json");
    let out_path = dir.join("pycoco.json");
    write_atomic(
        &pairs_path,
        serde_json::to_string(&serde_json::json!({"refs": refs, "hyps": hyps}))?.as_bytes(),
    )?;

    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (wall_1, cpu_1, report) = time_rust(&refs, &hyps, a.repeat, 1)?;
    let (wall_n, _, _) = time_rust(&refs, &hyps, a.repeat, threads)?;

    let status = Command::new(&a.python)
        .arg(&a.script)
        .arg(&pairs_path)
        .arg(&out_path)
        .status()
        .with_context(|| format!("running {} {}", a.python.display(), a.script.display()))?;
    anyhow::ensure!(status.success(), "{} failed ({status})", a.script.display());
    let py: serde_json::Value = serde_json::from_slice(&std::fs::read(&out_path)?)?;
    let _ = std::fs::remove_dir_all(&dir);

    let (py_wall, py_cpu) = (
        python_seconds(&py, "times"),
        python_seconds(&py, "cpu_times"),
    );
    println!(
        "bench metrics: {} pairs from {}, BLEU-1..4 + ROUGE-L + CIDEr (median of {} Rust runs)",
        a.pairs,
        a.ann.display(),
        a.repeat.max(1)
    );
    let row = |label: &str, secs: f64, reference: f64| {
        println!(
            "  {label:<30} {:>10.1} ms   pycocoevalcap / this = {:>6.1}x",
            secs * 1e3,
            reference / secs
        )
    };
    println!("  {:<30} {:>10.1} ms", "pycocoevalcap, wall", py_wall * 1e3);
    println!("  {:<30} {:>10.1} ms", "pycocoevalcap, CPU", py_cpu * 1e3);
    row("rust 1 thread, wall", wall_1.as_secs_f64(), py_wall);
    row("rust 1 thread, CPU", cpu_1.as_secs_f64(), py_cpu);
    row(
        &format!("rust {threads} threads, wall"),
        wall_n.as_secs_f64(),
        py_wall,
    );
    let identical = compare(&py, &report);
    Ok(if identical { 0 } else { 1 })
}

/// Prints per-key agreement; true when every value (corpus and per item) is bit-identical.
/// The Python side sends IEEE-754 bit patterns ("bits"), so the comparison is exact.
fn compare(py: &serde_json::Value, report: &ScoreReport) -> bool {
    let mut all_identical = true;
    for key in KEYS.iter().filter(|k| **k != "METEOR") {
        let pick = |s: &crate::eval::metrics::Scores| {
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
