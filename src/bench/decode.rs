//! `ithn-dist bench decode`: reports/s of greedy and beam-3 decoding at batch 1 and 16, against
//! the reference's decoding loop (`ops/bench/decode_ref.py`: the PyTorch sampler of SPEC §4 as
//! the reference runs it) timed in the same invocation on the same weights, features, dims,
//! batch and threads, with their ratio and whether the tokens agree. `--uncached` adds this
//! decoder without its key/value cache (whole history through every layer at every step).
//! The visual extractor runs outside the timed region only for the features; the timed region
//! is the full sampler (encoder, memory, every step, beam bookkeeping) on both sides.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use tch::{Device, Kind, Tensor};

use super::cpu_seconds;
use crate::config::Config;
use crate::model::decode::{beam_search_with, greedy_with, Decoded, StepMode};
use crate::model::weights::write_safetensors_atomic;
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
    /// Also time this decoder without its key/value cache.
    #[arg(long)]
    pub uncached: bool,
    /// Skip the Python reference (only this decoder's figures).
    #[arg(long)]
    pub no_python: bool,
    /// Python interpreter with torch and safetensors.
    #[arg(long, value_name = "PYTHON", default_value = ".venv/bin/python")]
    pub python: PathBuf,
    /// The reference-side script.
    #[arg(long, value_name = "SCRIPT", default_value = "ops/bench/decode_ref.py")]
    pub script: PathBuf,
    /// Timed repetitions (the median is reported).
    #[arg(long, default_value_t = 3, value_parser = crate::bounds::at_least::<usize>(1))]
    pub repeat: usize,
    /// Rounds; in each, every row is timed on the reference (one script process serves the
    /// whole bench) and then right after on this decoder. With more than one the last table
    /// is the median of each row's per-round ratios: on a shared VM both sides' speed drifts
    /// by up to 2.5× over a minute, and pairs close in time compare the two at one moment.
    #[arg(long, default_value_t = 1, value_parser = crate::bounds::at_least::<usize>(1))]
    pub rounds: usize,
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// One side's timing of one (method, batch): median wall seconds and mean CPU seconds per run.
struct Timing {
    seconds: f64,
    cpu_seconds: f64,
}

fn timed(repeat: usize, f: impl Fn() -> Decoded) -> (Timing, Decoded) {
    let mut times = Vec::new();
    let mut last = f(); // warm-up (allocator, kernels)
    let cpu0 = cpu_seconds();
    for _ in 0..repeat.max(1) {
        let t = Instant::now();
        last = f();
        times.push(t.elapsed());
    }
    let cpu = (cpu_seconds() - cpu0) / repeat.max(1) as f64;
    let t = Timing {
        seconds: median(times).as_secs_f64(),
        cpu_seconds: cpu,
    };
    (t, last)
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

/// The reference side's result for one (method, batch).
struct RefRun {
    timing: Timing,
    tokens: Vec<Vec<i64>>,
}

/// The reference side, `ops/bench/decode_ref.py --serve` on the model's state dict and the
/// features of every batch size (written to a temporary directory, removed on drop): one
/// process for the whole bench, asked for one row at a time so that this decoder's run of the
/// same row follows it within seconds. On this VM either side's speed drifts by up to 2.5× over
/// a minute; one script run timing every row before this side's first (how rounds worked
/// before) let that drift into the ratios.
struct Reference {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: std::io::BufReader<std::process::ChildStdout>,
    script: PathBuf,
    dir: PathBuf,
}

impl Reference {
    fn start(
        a: &DecodeBenchArgs,
        model: &R2GenCmn,
        config: &Config,
        feats: &[(usize, Tensor)],
        max_len: usize,
    ) -> anyhow::Result<Reference> {
        let dir = std::env::temp_dir().join(format!("ithn-bench-decode-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let started = Self::spawn(a, model, config, feats, max_len, &dir);
        if started.is_err() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        let (child, stdin, stdout) = started?;
        Ok(Reference {
            child,
            stdin,
            stdout: std::io::BufReader::new(stdout),
            script: a.script.clone(),
            dir,
        })
    }

    fn spawn(
        a: &DecodeBenchArgs,
        model: &R2GenCmn,
        config: &Config,
        feats: &[(usize, Tensor)],
        max_len: usize,
        dir: &Path,
    ) -> anyhow::Result<(
        std::process::Child,
        std::process::ChildStdin,
        std::process::ChildStdout,
    )> {
        use std::process::{Command, Stdio};
        let (weights, feats_path) = (
            dir.join("weights.safetensors"),
            dir.join("feats.safetensors"),
        );
        let state: Vec<(String, Tensor)> = model
            .registry()
            .state_dict()
            .into_iter()
            .map(|(k, t)| (k, t.to_device(Device::Cpu).to_kind(Kind::Float)))
            .collect();
        write_safetensors_atomic(&weights, &state)?;
        let named: Vec<(String, Tensor)> = feats
            .iter()
            .map(|(b, t)| (format!("att_feats.{b}"), t.to_device(Device::Cpu)))
            .collect();
        write_safetensors_atomic(&feats_path, &named)?;
        let mut child = Command::new(&a.python)
            .arg(&a.script)
            .arg("--weights")
            .arg(&weights)
            .arg("--feats")
            .arg(&feats_path)
            .args([
                "--heads".to_string(),
                config.model.num_heads.to_string(),
                "--topk".into(),
                config.model.topk.to_string(),
                "--max-len".into(),
                max_len.to_string(),
                "--threads".into(),
                a.threads.to_string(),
                "--repeat".into(),
                a.repeat.to_string(),
                "--serve".into(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {} {}", a.python.display(), a.script.display()))?;
        let stdin = child.stdin.take().context("reference stdin")?;
        let stdout = child.stdout.take().context("reference stdout")?;
        Ok((child, stdin, stdout))
    }

    /// The reference's timing and tokens of one row (a warm-up, then `--repeat` timed runs).
    fn measure(&mut self, method: &str, batch: usize) -> anyhow::Result<RefRun> {
        use std::io::{BufRead, Write};
        let script = self.script.display().to_string();
        writeln!(self.stdin, "{method} {batch}")
            .and_then(|()| self.stdin.flush())
            .with_context(|| format!("{script}: sending {method} {batch}"))?;
        let mut line = String::new();
        loop {
            line.clear();
            let n = self
                .stdout
                .read_line(&mut line)
                .with_context(|| format!("{script}: reading its answer"))?;
            if n == 0 {
                anyhow::bail!(
                    "{script} ended without answering {method} {batch} (its error is above)"
                );
            }
            if line.starts_with('{') {
                return parse_reference_line(&line, &self.script);
            }
        }
    }
}

impl Drop for Reference {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Parses one of the script's JSON lines (see its docstring).
fn parse_reference_line(line: &str, script: &Path) -> anyhow::Result<RefRun> {
    let v: serde_json::Value = serde_json::from_str(line.trim())
        .with_context(|| format!("{}: bad output line {line:?}", script.display()))?;
    let f = |k: &str| {
        v[k].as_f64()
            .with_context(|| format!("{}: {k} missing in {line:?}", script.display()))
    };
    let tokens: Vec<Vec<i64>> = serde_json::from_value(v["tokens"].clone())
        .with_context(|| format!("{}: tokens in {line:?}", script.display()))?;
    let timing = Timing {
        seconds: f("seconds")?,
        cpu_seconds: f("cpu_seconds")?,
    };
    Ok(RefRun { timing, tokens })
}

fn load_model(a: &DecodeBenchArgs, device: Device) -> anyhow::Result<(R2GenCmn, Config)> {
    Ok(match &a.checkpoint {
        Some(dir) => {
            let ckpt = ModelCheckpoint::open(dir)?;
            (R2GenCmn::from_checkpoint(&ckpt, device)?, ckpt.config)
        }
        None => {
            let config = Config::load(&a.config, &[])?;
            (R2GenCmn::from_config(&config, a.logit_dim, device)?, config)
        }
    })
}

/// Patch features of `b` random images per batch size (seeded), outside any timed region.
fn features(
    model: &R2GenCmn,
    config: &Config,
    batches: &[usize],
    device: Device,
) -> Vec<(usize, Tensor)> {
    let size = config.data.image_size as i64;
    tch::manual_seed(7);
    batches
        .iter()
        .map(|&b| {
            let images = Tensor::randn(
                [b as i64, model.views() as i64, 3, size, size],
                (Kind::Float, device),
            );
            (b, tch::no_grad(|| model.visual(&images, false)).0)
        })
        .collect()
}

pub fn run(a: DecodeBenchArgs) -> anyhow::Result<i32> {
    let device = Device::cuda_if_available();
    tch::set_num_threads(a.threads);
    let (model, config) = load_model(&a, device)?;
    let max_len = a.max_len.unwrap_or(config.eval.max_seq_length);
    let profile = if cfg!(debug_assertions) {
        "debug (not representative: build with --release)"
    } else {
        "release"
    };
    println!(
        "bench decode: {profile} build, device {device:?}, d_model {}, layers {}, vocab {}, max_len {max_len}, threads {} (both sides), repeat {}",
        config.model.d_model,
        config.model.num_layers,
        model.logit_dim(),
        a.threads,
        a.repeat
    );
    let feats = features(&model, &config, &a.batch, device);
    // Per table row (method, batch): each round's figures against the reference.
    let mut rounds: Vec<RowRounds> = Vec::new();
    let mut reference = if a.no_python {
        None
    } else {
        Some(Reference::start(&a, &model, &config, &feats, max_len)?)
    };
    for round in 1..=a.rounds {
        if a.rounds > 1 {
            println!("round {round} of {}", a.rounds);
        }
        print_header(a.uncached);
        for (b, att) in &feats {
            for (name, beam) in [("greedy", 1usize), ("beam3", 3)] {
                let run = |mode| {
                    if beam == 1 {
                        greedy_with(&model, att, max_len, config.eval.block_trigrams, mode)
                    } else {
                        beam_search_with(&model, att, max_len, beam, mode)
                    }
                };
                // The reference's run of this row, then ours right after it.
                let theirs = match reference.as_mut() {
                    Some(r) => Some(r.measure(name, *b)?),
                    None => None,
                };
                let (ours, decoded) = timed(a.repeat, || run(StepMode::Cached));
                let uncached = a
                    .uncached
                    .then(|| timed(a.repeat, || run(StepMode::Recompute)).0);
                print_row(
                    name,
                    *b,
                    &ours,
                    theirs.as_ref(),
                    &decoded,
                    uncached.as_ref(),
                );
                if let Some(r) = &theirs {
                    let at = match rounds.iter().position(|x| (x.name, x.batch) == (name, *b)) {
                        Some(i) => i,
                        None => {
                            rounds.push(RowRounds::new(name, *b));
                            rounds.len() - 1
                        }
                    };
                    rounds[at].push(&ours, &r.timing);
                }
            }
        }
    }
    if a.rounds > 1 && !rounds.is_empty() {
        print_medians(a.rounds, &rounds);
    }
    Ok(0)
}

fn print_header(uncached: bool) {
    println!(
        "{:<7} {:>5} {:>10} {:>10} {:>7} {:>11} {:>11} {:>7} {:>8} {:>6}{}",
        "method",
        "batch",
        "ours r/s",
        "ref r/s",
        "ratio",
        "ours r/cpus",
        "ref r/cpus",
        "ratio",
        "mean len",
        "same",
        if uncached { "  uncached r/s" } else { "" }
    );
}

/// One table row's figures over the rounds: reports/s of both sides and the two ratios.
struct RowRounds {
    name: &'static str,
    batch: usize,
    ours: Vec<f64>,
    theirs: Vec<f64>,
    wall: Vec<f64>,
    cpu: Vec<f64>,
}

impl RowRounds {
    fn new(name: &'static str, batch: usize) -> RowRounds {
        RowRounds {
            name,
            batch,
            ours: Vec::new(),
            theirs: Vec::new(),
            wall: Vec::new(),
            cpu: Vec::new(),
        }
    }

    fn push(&mut self, ours: &Timing, theirs: &Timing) {
        let rate = |s: f64| self.batch as f64 / s.max(1e-12);
        self.ours.push(rate(ours.seconds));
        self.theirs.push(rate(theirs.seconds));
        self.wall.push(theirs.seconds / ours.seconds.max(1e-12));
        self.cpu
            .push(theirs.cpu_seconds / ours.cpu_seconds.max(1e-12));
    }
}

/// Each row's median reports/s and the median [range] of its per-round ratios.
fn print_medians(n: usize, rows: &[RowRounds]) {
    println!("median of {n} rounds (ratios are per round, then the median; range in brackets)");
    println!(
        "{:<7} {:>5} {:>10} {:>10} {:>20} {:>20}",
        "method", "batch", "ours r/s", "ref r/s", "ratio (wall)", "ratio (CPU-s)"
    );
    let median = super::median_f64;
    for r in rows {
        println!(
            "{:<7} {:>5} {:>10} {:>10} {:>20} {:>20}",
            r.name,
            r.batch,
            sig3(median(&r.ours)),
            sig3(median(&r.theirs)),
            super::rounds_summary(&r.wall),
            super::rounds_summary(&r.cpu)
        );
    }
}

/// One table row: rates per wall second and per CPU-second of both sides and their ratios.
fn print_row(
    name: &str,
    b: usize,
    ours: &Timing,
    theirs: Option<&RefRun>,
    decoded: &Decoded,
    uncached: Option<&Timing>,
) {
    let rate = |s: f64| b as f64 / s.max(1e-12);
    let cell = |x: Option<f64>| x.map(sig3).unwrap_or_else(|| "-".into());
    let ratio = |x: Option<f64>| x.map(|r| format!("{r:.2}x")).unwrap_or_else(|| "-".into());
    let ref_rate = theirs.map(|r| rate(r.timing.seconds));
    let ref_cpu = theirs.map(|r| rate(r.timing.cpu_seconds));
    let same = theirs.map_or("-", |r| {
        let ours: Vec<Vec<i64>> = (0..b).map(|i| decoded.tokens(i)).collect();
        if ours == r.tokens {
            "yes"
        } else {
            "NO"
        }
    });
    println!(
        "{name:<7} {b:>5} {:>10} {:>10} {:>7} {:>11} {:>11} {:>7} {:>8.1} {:>6}{}",
        sig3(rate(ours.seconds)),
        cell(ref_rate),
        ratio(ref_rate.map(|r| rate(ours.seconds) / r)),
        sig3(rate(ours.cpu_seconds)),
        cell(ref_cpu),
        ratio(ref_cpu.map(|r| rate(ours.cpu_seconds) / r)),
        mean_len(decoded),
        same,
        uncached
            .map(|t| format!("  {:>12}", sig3(rate(t.seconds))))
            .unwrap_or_default()
    );
}
