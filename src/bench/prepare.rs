//! `ithn-dist bench prepare`: (1) images/s of the whole `prepare` pipeline on synthetic
//! radiographs at the annotation's image paths, against Pillow doing only the per-image work
//! (`ops/bench/prepare_pil.py`: decode, antialiased resize, JPEG 95) on the same files in the
//! same run; (2) hard-negative mining at MIMIC scale (default 270,000 reports of 3–8 sentences
//! drawn with their real frequencies from the IU train reports, patients of 4 reports each;
//! `--reports 20000,100000,270000` for a scaling series), against the O(n²) brute force timed
//! on a subset in the same run (results compared exactly there, then extrapolated
//! quadratically). The 270k run says whether it met the 5-minute target.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;

use crate::data::prepare::fixtures::{self, Rng};
use crate::data::prepare::images::{ImageParams, PixelMode};
use crate::data::prepare::{negatives, sources, PrepareOptions};
use crate::data::text::Dataset;

#[derive(Args, Debug)]
pub struct PrepareBenchArgs {
    /// R2Gen IU X-Ray annotation: record layout for the image bench, sentences for the reports.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "../shared/data/iu_xray/annotation.json"
    )]
    pub ann: PathBuf,
    /// Studies (two images each) in the image bench.
    #[arg(long, default_value_t = 150, value_parser = crate::bounds::at_least::<usize>(1))]
    pub studies: usize,
    /// Side of the generated square-ish source images, in pixels.
    #[arg(long, default_value_t = 1024, value_parser = crate::bounds::between::<u32>(1, crate::bounds::MAX_IMAGE_SIDE))]
    pub image_size: u32,
    /// Report counts of the negatives bench, comma-separated (MIMIC-CXR train: 270,790).
    #[arg(long, value_delimiter = ',', default_value = "270000", value_parser = crate::bounds::at_least::<usize>(1))]
    pub reports: Vec<usize>,
    /// Reports in the brute-force reference (O(n²)).
    #[arg(long, default_value_t = 4000)]
    pub brute: usize,
    /// Rayon threads for prepare and the negatives (default: all cores).
    #[arg(long, value_parser = crate::bounds::threads::<usize>())]
    pub threads: Option<usize>,
    /// Python with Pillow, for the per-image reference.
    #[arg(long, value_name = "PYTHON", default_value = ".venv/bin/python")]
    pub python: PathBuf,
    /// The Pillow reference script, run with `--python`.
    #[arg(
        long,
        value_name = "SCRIPT",
        default_value = "ops/bench/prepare_pil.py"
    )]
    pub script: PathBuf,
    /// Skip the Pillow reference.
    #[arg(long)]
    pub no_python: bool,
    /// Skip the image part (negatives only).
    #[arg(long)]
    pub no_images: bool,
}

/// The acceptance target for MIMIC-CXR's train split: 270k reports in under 5 minutes.
const MIMIC_REPORTS: usize = 270_000;
const MIMIC_SECONDS: f64 = 300.0;

pub fn run(a: PrepareBenchArgs) -> anyhow::Result<i32> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(a.threads.unwrap_or(0))
        .build()?;
    let profile = if cfg!(debug_assertions) {
        "debug (timings are not representative: build with --release)"
    } else {
        "release"
    };
    println!(
        "bench prepare: {} rayon threads, {profile} build",
        pool.current_num_threads()
    );
    pool.install(|| -> anyhow::Result<()> {
        if !a.no_images {
            images_bench(&a)?;
        }
        negatives_bench(&a)
    })?;
    Ok(0)
}

/// Writes a subset annotation (first `studies` records of each split, proportionally) and
/// generated images; returns (annotation, image dir, image files).
fn make_fixture(
    a: &PrepareBenchArgs,
    dir: &Path,
) -> anyhow::Result<(PathBuf, PathBuf, Vec<PathBuf>)> {
    let text =
        std::fs::read_to_string(&a.ann).with_context(|| format!("reading {}", a.ann.display()))?;
    let root: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", a.ann.display()))?;
    let mut subset = serde_json::Map::new();
    for (split, share) in [("train", 0.7), ("val", 0.1), ("test", 0.2)] {
        let n = ((a.studies as f64 * share).ceil() as usize).max(1);
        let list: Vec<serde_json::Value> = root[split]
            .as_array()
            .map(|l| l.iter().take(n).cloned().collect())
            .unwrap_or_default();
        subset.insert(split.into(), list.into());
    }
    let ann = dir.join("annotation.json");
    std::fs::write(&ann, serde_json::to_vec(&subset)?)?;
    let images = dir.join("images");
    fixtures::write_r2gen_images(&ann, &images, a.image_size)?;
    let data = sources::r2gen::read(&ann, &images, Dataset::IuXray)?;
    let files = data.samples.iter().flat_map(|s| s.images.clone()).collect();
    Ok((ann, images, files))
}

fn images_bench(a: &PrepareBenchArgs) -> anyhow::Result<()> {
    // No tempfile crate in the product: a per-process directory, removed at the end.
    let tmp = std::env::temp_dir().join(format!("ithn-bench-prepare-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let result = images_bench_in(a, &tmp);
    std::fs::remove_dir_all(&tmp).ok();
    result
}

fn images_bench_in(a: &PrepareBenchArgs, tmp: &Path) -> anyhow::Result<()> {
    let (ann, images, files) = make_fixture(a, tmp)?;
    let opts = PrepareOptions {
        out: tmp.join("out"),
        image: ImageParams {
            resize: Some(256),
            pixels: PixelMode::Jpeg,
            jpeg_quality: 95,
        },
        views: 2,
        max_seq_length: 60,
        threshold: None,
        shard_rows: 4096,
        row_group_rows: 64,
        strict: true,
        progress: false,
    };
    let (start, cpu0) = (Instant::now(), super::cpu_seconds());
    let source = sources::r2gen::read(&ann, &images, Dataset::IuXray)?;
    crate::data::prepare::run(source, &opts)?;
    let ours = files.len() as f64 / start.elapsed().as_secs_f64();
    let ours_cpu = files.len() as f64 / (super::cpu_seconds() - cpu0).max(1e-9);
    println!(
        "images: {} synthetic {}x{} PNGs",
        files.len(),
        a.image_size,
        a.image_size + a.image_size / 4
    );
    println!(
        "  prepare (whole pipeline, Rust)      {ours:>9.1} images/s  {ours_cpu:>9.1} images per CPU-second"
    );
    if a.no_python {
        return Ok(());
    }
    let mut child = Command::new(&a.python)
        .arg(&a.script)
        .arg("256")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {} {}", a.python.display(), a.script.display()))?;
    let list: String = files.iter().map(|f| format!("{}\n", f.display())).collect();
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(list.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("{} failed", a.script.display());
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let n = v["images"].as_f64().unwrap_or(0.0);
    let theirs = n / v["seconds"].as_f64().unwrap_or(f64::NAN);
    let theirs_cpu = n / v["cpu_seconds"].as_f64().unwrap_or(f64::NAN);
    println!(
        "  Pillow per-image work (1 process)   {theirs:>9.1} images/s  {theirs_cpu:>9.1} images per CPU-second"
    );
    // The sides use different numbers of cores (rayon pool vs one process): the per-CPU-second
    // ratio is the like-for-like one.
    println!(
        "  ratio                               {:>9.2}x wall ({} threads vs 1)  {:>9.2}x per CPU-second",
        ours / theirs,
        rayon::current_num_threads(),
        ours_cpu / theirs_cpu
    );
    Ok(())
}

/// `n` synthetic cleaned reports from the annotation's sentences, with patients of 4 reports.
fn synthetic_reports(
    a: &PrepareBenchArgs,
    n: usize,
) -> anyhow::Result<(Vec<String>, Vec<Option<String>>)> {
    let reports = crate::data::text::read_annotation_reports(&a.ann, "train")?;
    let pool = fixtures::sentence_pool(reports.iter().map(|(_, r)| r.as_str()));
    let mut rng = Rng::new(2023);
    let cleaned = (0..n)
        .map(|_| Dataset::MimicCxr.clean(&fixtures::pooled_report(&mut rng, &pool)))
        .collect();
    let patients = (0..n).map(|i| Some(format!("p{}", i / 4))).collect();
    Ok((cleaned, patients))
}

fn negatives_bench(a: &PrepareBenchArgs) -> anyhow::Result<()> {
    let hidden = indicatif::ProgressBar::hidden();
    let (small, small_p) = synthetic_reports(a, a.brute)?;
    let t = Instant::now();
    let brute = negatives::brute_force(&small, &small_p);
    let t_brute = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let fast = negatives::mine(&small, &small_p, &hidden);
    let t_fast = t.elapsed().as_secs_f64();
    if fast != brute {
        bail!(
            "fast negatives differ from the brute force on {} reports",
            a.brute
        );
    }
    println!("negatives: {} reports, identical to brute force", a.brute);
    println!(
        "  brute force {t_brute:>9.3} s   mine {t_fast:>9.3} s   ratio {:>7.1}x",
        t_brute / t_fast
    );

    for &n in &a.reports {
        let (big, big_p) = synthetic_reports(a, n)?;
        let distinct = big.iter().collect::<std::collections::HashSet<_>>().len();
        let t = Instant::now();
        let negs = negatives::mine(&big, &big_p, &hidden);
        let t_big = t.elapsed().as_secs_f64();
        let scale = (n as f64 / a.brute as f64).powi(2);
        println!(
            "negatives: {n} reports ({distinct} distinct), {} with a negative",
            negs.iter().flatten().count()
        );
        println!(
            "  mine {t_big:>9.1} s   brute force extrapolated {:>9.0} s   ratio {:>7.0}x",
            t_brute * scale,
            t_brute * scale / t_big
        );
        if n >= MIMIC_REPORTS {
            let verdict = if t_big < MIMIC_SECONDS { "yes" } else { "NO" };
            println!("  MIMIC scale: under {MIMIC_SECONDS:.0} s: {verdict}");
        }
    }
    Ok(())
}
