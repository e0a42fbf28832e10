//! `ithn-dist bench loader`: training-batch throughput (images/s, per decode thread) of the
//! Rust loader and, in the same run, of the PyTorch DataLoader + PIL + torchvision pipeline
//! (`ops/bench/loader_torch.py`) reading the same shards, and their ratio.
//!
//! Why: an H200 consumes ResNet-101 batches far faster than one core decodes JPEGs, so the
//! loader must not be the bottleneck; the targets are ≥ 3× the Python pipeline per core on JPEG
//! shards and ≥ 10× on raw-pixel shards. Both sides count positive and negative views, exclude
//! start-up (first batch), and use `--threads` workers.
//!
//! `--make-from IMAGES --rows N --pixels jpeg|raw` first writes N synthetic train rows into
//! `--data` from the PNG/JPEG files of IMAGES (cycled, resized to the shorter side 256 like
//! `prepare` does), so the bench also runs before any dataset has been prepared.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};

use crate::data::image::{decode_file, resize_shorter};
use crate::data::loader::testing::{write_split, TestPixels, TestRow};
use crate::data::loader::{Loader, LoaderOptions, ShardPlan};
use crate::data::sampler::Cursor;

use super::cpu_seconds;
use crate::dataset::Split;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Pixels {
    Jpeg,
    Raw,
}

#[derive(Args, Debug)]
pub struct LoaderBenchArgs {
    /// Prepared directory (manifest.json + shards).
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// Decode threads (Rust) / DataLoader workers (Python).
    #[arg(long, default_value_t = 1, value_parser = crate::bounds::threads::<usize>())]
    pub threads: usize,
    /// Timed batches (after one warm-up batch). 200 by default: on a shared machine 20 batches
    /// (a fraction of a second) gave ratios from 6× to 27×, 200 gave 25–26×.
    #[arg(long, default_value_t = 200, value_parser = crate::bounds::at_least::<usize>(1))]
    pub batches: usize,
    /// Global batch size.
    #[arg(long, default_value_t = 16, value_parser = crate::bounds::at_least::<usize>(1))]
    pub batch_size: usize,
    /// Views per sample.
    #[arg(long, default_value_t = 1, value_parser = crate::bounds::between::<usize>(1, 2))]
    pub views: usize,
    /// Shorter side of the train resize (SPEC §1: 256).
    #[arg(long, default_value_t = 256, value_parser = crate::bounds::between::<u32>(1, crate::bounds::MAX_IMAGE_SIDE))]
    pub resize: u32,
    /// Side of the random crop (SPEC §1: 224).
    #[arg(long, default_value_t = 224, value_parser = crate::bounds::between::<u32>(1, crate::bounds::MAX_IMAGE_SIDE))]
    pub image_size: u32,
    /// Rounds, each timing this loader then the Python pipeline; the ratio reported is the
    /// median of the rounds' ratios. On a shared VM the speed of both sides drifts by up to 2×
    /// over minutes: one Rust run followed by one Python run gave 6.9× and, minutes later, the
    /// Rust side alone ran 1.6× faster; alternating pairs compare the two at the same moment.
    #[arg(long, default_value_t = 3, value_parser = crate::bounds::at_least::<usize>(1))]
    pub rounds: usize,
    /// Skip the Python reference (only this loader's figure).
    #[arg(long)]
    pub no_python: bool,
    /// Write synthetic train shards into --data first, from the images of this directory.
    #[arg(long, value_name = "IMAGES")]
    pub make_from: Option<PathBuf>,
    /// Rows to write with --make-from.
    #[arg(long, default_value_t = 512, value_parser = crate::bounds::at_least::<usize>(1))]
    pub rows: usize,
    /// Pixel storage of the rows written with --make-from.
    #[arg(long, value_enum, default_value_t = Pixels::Jpeg)]
    pub pixels: Pixels,
    /// Python interpreter with torch, torchvision and pyarrow.
    #[arg(long, value_name = "PYTHON", default_value = ".venv/bin/python")]
    pub python: PathBuf,
    /// The reference-side script.
    #[arg(
        long,
        value_name = "SCRIPT",
        default_value = "ops/bench/loader_torch.py"
    )]
    pub script: PathBuf,
}

pub fn run(a: LoaderBenchArgs) -> anyhow::Result<i32> {
    if let Some(src) = &a.make_from {
        make_shards(src, &a.data, a.rows, a.pixels)?;
    }
    // Timings of a debug build say little about what users run; say which one this is.
    let profile = if cfg!(debug_assertions) {
        "debug (not representative: build with --release)"
    } else {
        "release"
    };
    println!("build profile: {profile}");
    let (mut wall, mut per_cpu) = (Vec::new(), Vec::new());
    for round in 1..=a.rounds {
        let ours = rust_throughput(&a)?;
        ours.print(&format!("round {round}: rust loader"), a.threads);
        if a.no_python {
            continue;
        }
        let theirs = python_throughput(&a)?;
        theirs.print(
            &format!("round {round}: pytorch DataLoader + PIL + torchvision"),
            a.threads,
        );
        wall.push(ours.per_s / theirs.per_s);
        per_cpu.push(ours.per_cpu_s / theirs.per_cpu_s);
        println!(
            "round {round}: ratio {:.2}x images/s, {:.2}x images per CPU-second",
            wall[wall.len() - 1],
            per_cpu[per_cpu.len() - 1]
        );
    }
    if a.no_python {
        return Ok(0);
    }
    println!(
        "ratio rust/python, median of {} rounds [range]: {} images/s (wall, {} thread(s) each), {} images per CPU-second (per core)",
        a.rounds,
        super::rounds_summary(&wall),
        a.threads,
        super::rounds_summary(&per_cpu)
    );
    Ok(0)
}

/// Images per wall-clock second and per CPU-second (all threads/processes of the pipeline).
struct Throughput {
    per_s: f64,
    per_cpu_s: f64,
}

impl Throughput {
    fn print(&self, who: &str, threads: usize) {
        println!(
            "{who}: {:.1} images/s with {threads} thread(s); {:.1} images per CPU-second",
            self.per_s, self.per_cpu_s
        );
    }
}

fn rust_throughput(a: &LoaderBenchArgs) -> anyhow::Result<Throughput> {
    let opts = LoaderOptions {
        dir: a.data.clone(),
        split: Split::Train,
        seed: 1,
        batch_size: a.batch_size,
        accumulation_steps: 1,
        drop_last: true,
        views: a.views,
        resize: a.resize,
        image_size: a.image_size,
        augment: true,
        num_workers: a.threads,
        prefetch: 2,
        cache_mb: 256,
        verify_checksums: false,
    };
    let plan = ShardPlan::from_manifest(&a.data, Split::Train)?;
    let loader = Loader::open(opts, &plan, 0, 1)?;
    if loader.epoch_batches() == 0 {
        bail!("{}: fewer train rows than one batch", a.data.display());
    }
    let mut epoch = 1;
    let mut it = loader.iter_from(Cursor {
        epoch,
        batches_consumed: 0,
    });
    it.next().context("empty epoch")??; // warm-up
    let (mut images, start, cpu0) = (0i64, Instant::now(), cpu_seconds());
    for _ in 0..a.batches {
        let b = match it.next() {
            Some(b) => b?,
            None => {
                epoch += 1;
                it = loader.iter_from(Cursor {
                    epoch,
                    batches_consumed: 0,
                });
                it.next().context("empty epoch")??
            }
        };
        images += b.images.size()[..2].iter().product::<i64>();
        images += b.neg_images.size()[..2].iter().product::<i64>();
    }
    let (wall, cpu) = (start.elapsed().as_secs_f64(), cpu_seconds() - cpu0);
    Ok(Throughput {
        per_s: images as f64 / wall,
        per_cpu_s: images as f64 / cpu.max(1e-9),
    })
}

fn python_throughput(a: &LoaderBenchArgs) -> anyhow::Result<Throughput> {
    let args: Vec<std::ffi::OsString> = ["--data".into(), a.data.clone().into_os_string()]
        .into_iter()
        .chain(
            [
                ("--threads", a.threads.to_string()),
                ("--batches", a.batches.to_string()),
                ("--batch-size", a.batch_size.to_string()),
                ("--views", a.views.to_string()),
                ("--resize", a.resize.to_string()),
                ("--size", a.image_size.to_string()),
            ]
            .into_iter()
            .flat_map(|(k, v)| [k.into(), v.into()]),
        )
        .collect();
    let stdout = super::run_reference_script(&a.python, &a.script, &args)?;
    let line = stdout
        .lines()
        .last()
        .context("no output from the Python bench")?;
    let v: serde_json::Value = serde_json::from_str(line).context("Python bench output")?;
    let field = |k: &str| {
        v[k].as_f64()
            .with_context(|| format!("{k} missing in the Python bench output"))
    };
    Ok(Throughput {
        per_s: field("images_per_s")?,
        per_cpu_s: field("images_per_cpu_s")?,
    })
}

/// Synthetic train rows from real images (cycled), shorter side 256, one view each.
fn make_shards(src: &Path, dir: &Path, rows: usize, pixels: Pixels) -> anyhow::Result<()> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(src)
        .with_context(|| format!("reading {}", src.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .is_some_and(|x| x == "png" || x == "jpg" || x == "jpeg")
        })
        .collect();
    files.sort();
    let images = files
        .iter()
        .map(|f| Ok(resize_shorter(&decode_file(f)?, 256)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if images.is_empty() {
        bail!("{}: no PNG or JPEG images", src.display());
    }
    let rows: Vec<TestRow> = (0..rows)
        .map(|i| TestRow {
            id: format!("bench{i}"),
            ids: (0..2 + (i * 13) % 50).map(|t| t as i64).collect(),
            images: vec![images[i % images.len()].clone()],
            neg_index: Some(((i * 7 + 1) % rows) as u64),
        })
        .collect();
    let pixels = match pixels {
        Pixels::Jpeg => TestPixels::Jpeg { quality: 95 },
        Pixels::Raw => TestPixels::Raw,
    };
    write_split(dir, Split::Train, &rows, pixels, 256, 32)?;
    println!(
        "wrote {} synthetic train rows into {}",
        rows.len(),
        dir.display()
    );
    Ok(())
}
