//! `ithn-dist prepare` and `ithn-dist inspect`: argument parsing (raw clap arguments, then a
//! validated source choice) over [`super::run`] and [`super::inspect`].

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::images::{ImageParams, PixelMode};
use super::{sources, PrepareError, PrepareOptions, SourceData};
use crate::bounds;
use crate::data::text::{Dataset, DEFAULT_MAX_SEQ_LENGTH};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SourceKind {
    /// R2Gen annotation JSON (`--ann`, `--images`, `--dataset`).
    R2gen,
    /// PhysioNet MIMIC-CXR-JPG tree (`--root`, optional `--reports`).
    MimicCxrJpg,
    /// Open-i XML reports (`--reports` .tgz or directory, `--images`, optional `--metadata`).
    Openi,
}

#[derive(Args, Debug)]
pub struct PrepareArgs {
    /// Input layout.
    #[arg(long, value_enum)]
    pub source: SourceKind,
    /// Output directory (created; may hold a previous prepare's output, which is replaced).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// r2gen: the annotation JSON.
    #[arg(long, value_name = "FILE")]
    pub ann: Option<PathBuf>,
    /// r2gen, openi: the image directory the annotation's / reports' image names are relative to.
    #[arg(long, value_name = "DIR")]
    pub images: Option<PathBuf>,
    /// r2gen: which dataset convention (cleaner, views, vocabulary threshold).
    #[arg(long, value_enum)]
    pub dataset: Option<Dataset>,
    /// mimic-cxr-jpg: the MIMIC-CXR-JPG root (split/metadata CSVs and files/).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// mimic-cxr-jpg: root of the report .txt tree (default: --root); openi: NLMCXR_reports.tgz or its directory.
    #[arg(long, value_name = "PATH")]
    pub reports: Option<PathBuf>,
    /// openi: view metadata CSV (image id + view columns).
    #[arg(long, value_name = "CSV")]
    pub metadata: Option<PathBuf>,
    /// openi: seed of the deterministic 70/10/20 split.
    #[arg(long, default_value_t = 1234)]
    pub split_seed: u64,
    /// Shorter image side after resizing (at most 20000); 0 keeps the original size.
    #[arg(long, default_value_t = 256, value_parser = bounds::between::<u32>(0, bounds::MAX_IMAGE_SIDE))]
    pub resize: u32,
    /// Images stored per study, the first ones of each (1 or 2) [default: 2 for iu_xray, 1 for
    /// mimic_cxr]; a study with fewer is skipped with its reason.
    #[arg(long, value_parser = bounds::between::<usize>(1, 2))]
    pub views: Option<usize>,
    /// Store JPEG bytes or raw uint8 pixels.
    #[arg(long, value_enum, default_value = "jpeg")]
    pub pixels: PixelMode,
    /// JPEG quality (1-100) for --pixels jpeg.
    #[arg(long, default_value_t = 95, value_parser = bounds::between::<u8>(1, 100))]
    pub jpeg_quality: u8,
    /// Length of the stored id lists (BOS and EOS included).
    #[arg(long, default_value_t = DEFAULT_MAX_SEQ_LENGTH, value_parser = bounds::at_least::<usize>(2))]
    pub max_seq_length: usize,
    /// Vocabulary threshold [default: 3 for iu_xray, 10 for mimic_cxr].
    #[arg(long, value_parser = bounds::at_least::<usize>(1))]
    pub threshold: Option<usize>,
    /// Rows per shard.
    #[arg(long, default_value_t = 4096, value_parser = bounds::at_least::<usize>(1))]
    pub shard_rows: usize,
    /// Rows per Parquet row group (the unit of random access).
    #[arg(long, default_value_t = 64, value_parser = bounds::at_least::<usize>(1))]
    pub row_group_rows: usize,
    /// Fail on the first unusable sample instead of skipping it.
    #[arg(long)]
    pub strict: bool,
    /// Never draw progress bars (they are drawn only on a terminal anyway).
    #[arg(long)]
    pub no_progress: bool,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// A directory written by `prepare`.
    pub dir: PathBuf,
    /// Sample rows to print per split.
    #[arg(long, default_value_t = 2)]
    pub rows: usize,
}

fn need<'a, T>(v: &'a Option<T>, flag: &str, source: &str) -> Result<&'a T, PrepareError> {
    v.as_ref()
        .ok_or_else(|| PrepareError::Options(format!("--source {source} needs {flag}")))
}

impl PrepareArgs {
    /// The dataset convention the source implies (`--dataset` for r2gen).
    fn dataset(&self) -> Result<Dataset, PrepareError> {
        Ok(match self.source {
            SourceKind::R2gen => *need(&self.dataset, "--dataset", "r2gen")?,
            SourceKind::MimicCxrJpg => Dataset::MimicCxr,
            SourceKind::Openi => Dataset::IuXray,
        })
    }

    /// `--views`, or the dataset's published number; MIMIC-CXR-JPG lists one image per sample.
    fn views(&self) -> Result<usize, PrepareError> {
        let views = match self.views {
            Some(v) => v,
            None => self.dataset()?.default_views(),
        };
        if self.source == SourceKind::MimicCxrJpg && views != 1 {
            return Err(PrepareError::Options(format!(
                "--views {views}: --source mimic-cxr-jpg stores one (frontal) image per sample"
            )));
        }
        Ok(views)
    }

    /// Reads the chosen source, checking that its flags are there.
    pub fn read_source(&self) -> Result<SourceData, PrepareError> {
        match self.source {
            SourceKind::R2gen => sources::r2gen::read(
                need(&self.ann, "--ann", "r2gen")?,
                need(&self.images, "--images", "r2gen")?,
                self.dataset()?,
            ),
            SourceKind::MimicCxrJpg => sources::mimic::read(
                need(&self.root, "--root", "mimic-cxr-jpg")?,
                self.reports.as_deref(),
            ),
            SourceKind::Openi => sources::openi::read(
                need(&self.reports, "--reports", "openi")?,
                need(&self.images, "--images", "openi")?,
                self.metadata.as_deref(),
                self.split_seed,
                self.views()?,
            ),
        }
    }

    /// The validated options (every bound of [`PrepareOptions::validate`]).
    pub fn options(&self) -> Result<PrepareOptions, PrepareError> {
        let opts = PrepareOptions {
            out: self.out.clone(),
            image: ImageParams {
                resize: (self.resize > 0).then_some(self.resize),
                pixels: self.pixels,
                jpeg_quality: self.jpeg_quality,
            },
            views: self.views()?,
            max_seq_length: self.max_seq_length,
            threshold: self.threshold,
            shard_rows: self.shard_rows,
            row_group_rows: self.row_group_rows,
            strict: self.strict,
            progress: !self.no_progress && std::io::stderr().is_terminal(),
        };
        opts.validate()?;
        Ok(opts)
    }
}

/// `ithn-dist prepare`: prints one summary line per split, the first skipped samples with
/// their reasons, and a warning for each empty split.
pub fn run_prepare(args: &PrepareArgs) -> Result<i32, PrepareError> {
    let opts = args.options()?;
    let source = args.read_source()?;
    let m = super::run(source, &opts)?;
    for (split, n) in &m.counts {
        println!("{}: {n} rows", split.name());
    }
    println!(
        "skipped: {}; vocab: {} tokens; negatives: {} train rows ({} without); shards: {}",
        m.skipped.len(),
        m.vocab.size,
        m.negatives.train_with_negative,
        m.negatives.train_without_negative,
        m.shards.len()
    );
    for line in super::inspect::skipped_lines(&m, 5) {
        println!("  {line}");
    }
    for w in super::inspect::split_warnings(&m) {
        eprintln!("warning: {}: {w}", opts.out.display());
    }
    Ok(0)
}

/// `ithn-dist inspect`: exit 0 when intact, an error (exit 1) on any mismatch.
pub fn run_inspect(args: &InspectArgs) -> Result<i32, PrepareError> {
    let mut out = std::io::stdout().lock();
    super::inspect::inspect(&args.dir, args.rows, &mut out)?;
    Ok(0)
}
