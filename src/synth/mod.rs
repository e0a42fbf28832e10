//! `ithn-dist synth`: labelled-synthetic phantom radiographs for an R2Gen annotation file.
//!
//! The IU X-Ray images cannot be downloaded here, but the demo must still show a model that
//! learns image → report. So each study gets a phantom drawn from its own report: a
//! rule-based reader ([`crate::eval::ce::labeler`], the project's one labeler) extracts findings
//! (with negation and uncertainty; only positive findings are drawn), and [`phantom`] draws anatomy
//! whose heart width, costophrenic angles, lung zones and devices follow those findings.
//!
//! Guarantees:
//! - **Deterministic**: a study's pixels depend only on (seed, study id, report, size), never on
//!   thread scheduling, `--limit`, or which other studies are in the file.
//! - **Drop-in layout**: images are written at the annotation's own `image_path` entries
//!   under `--out` (view 0 frontal, further views lateral), so
//!   `prepare --source r2gen --ann FILE --images DIR` reads them like the real dataset.
//! - **Labelled synthetic everywhere**: `DIR/SYNTHETIC.txt` says so, `DIR/findings.jsonl`
//!   records what was drawn per study, and every PNG carries a `Comment` text chunk.
//! - **Ground truth**: each `findings.jsonl` line also carries `chexpert`, the 14 CheXpert
//!   labels of what was drawn (1 drawn, 0 not drawn; "No Finding" 1 when no pathology was
//!   drawn), so generated reports can be scored against what the image truly shows
//!   (`score --ce-labels`, `evaluate --ce-labels`).
//! - Every file is written atomically (temp file in the same directory, fsync, rename).

pub mod canvas;
pub mod phantom;

use std::path::{Component, Path, PathBuf};

use clap::Args;
use image::ImageEncoder;
use rayon::prelude::*;
use serde::Deserialize;

pub use crate::eval::ce::labeler::{read_report, Finding, Kind, Severity, Side, Zone};
use canvas::{fnv1a, Rng};
use phantom::{Anatomy, View};

/// Everything that can go wrong while synthesising a dataset.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("cannot read annotation file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not an R2Gen annotation (object of split → list of {{id, report, image_path}}): {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path}: split `{split}` not found (the file has: {available})")]
    MissingSplit {
        path: PathBuf,
        split: String,
        available: String,
    },
    #[error("{path}: {split}[{row}] (id `{id}`): image path `{image}` must be relative and stay inside the output directory")]
    UnsafeImagePath {
        path: PathBuf,
        split: String,
        row: usize,
        id: String,
        image: String,
    },
    #[error("{path}: {split}[{row}] (id `{id}`) has no image_path entries")]
    NoImages {
        path: PathBuf,
        split: String,
        row: usize,
        id: String,
    },
    #[error("--size {0}: must be between 16 and 4096 pixels")]
    Size(usize),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot encode PNG {path}: {source}")]
    Encode {
        path: PathBuf,
        source: image::ImageError,
    },
}

/// `ithn-dist synth` arguments.
#[derive(Args, Debug, Clone)]
pub struct SynthArgs {
    /// R2Gen annotation JSON (e.g. data/iu_xray/annotation.json).
    #[arg(long, value_name = "FILE")]
    pub ann: PathBuf,
    /// Output directory; images go to DIR/<image_path> of each record.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Image side in pixels (square, 8-bit grey).
    #[arg(long, default_value_t = 256)]
    pub size: usize,
    /// Global seed; each study's randomness is derived from (seed, study id).
    #[arg(long, default_value_t = 7580)]
    pub seed: u64,
    /// Comma-separated splits to render, in this order.
    #[arg(long, value_delimiter = ',', default_value = "train,val,test")]
    pub splits: Vec<String>,
    /// Render at most N studies per split (the first N in file order).
    #[arg(long, value_name = "N", value_parser = crate::bounds::at_least::<usize>(1))]
    pub limit: Option<usize>,
}

/// One annotation record, as far as the phantom needs it (extra keys are ignored).
#[derive(Debug, Clone, Deserialize)]
pub struct Record {
    pub id: String,
    pub report: String,
    pub image_path: Vec<String>,
}

/// A rendered study: the findings read from its report and one PNG-ready image per view.
#[derive(Debug, Clone)]
pub struct Study {
    pub findings: Vec<Finding>,
    /// Row-major 8-bit grey pixels, `size`×`size`, one per entry of `image_path`.
    pub views: Vec<Vec<u8>>,
}

/// What `synth` did, for the command's summary line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub studies: usize,
    pub images: usize,
    pub normal: usize,
}

/// Mixes the global seed, the study id and a stream number into one RNG seed.
fn study_seed(seed: u64, id: &str, stream: u64) -> u64 {
    Rng::new(seed ^ fnv1a(id.as_bytes()).rotate_left(17) ^ stream.wrapping_mul(0x9E37_79B9))
        .next_u64()
}

/// Renders one study (`n_views` images; view 0 frontal, the rest lateral).
pub fn render_study(id: &str, report: &str, seed: u64, size: usize, n_views: usize) -> Study {
    render_findings(id, read_report(report), seed, size, n_views)
}

/// Renders given findings (lets tests and demos bypass the reader).
pub fn render_findings(
    id: &str,
    findings: Vec<Finding>,
    seed: u64,
    size: usize,
    n_views: usize,
) -> Study {
    let anatomy = Anatomy::new(&mut Rng::new(study_seed(seed, id, 0)), &findings);
    let views = (0..n_views)
        .map(|v| {
            let view = if v == 0 { View::Frontal } else { View::Lateral };
            let mut rng = Rng::new(study_seed(seed, id, 1 + v as u64));
            phantom::render(view, &anatomy, &findings, &mut rng, size)
        })
        .collect();
    Study { findings, views }
}

/// Reads the annotation and returns (split, records) in the requested order.
pub fn load_annotation(
    path: &Path,
    splits: &[String],
) -> Result<Vec<(String, Vec<Record>)>, SynthError> {
    let text = std::fs::read_to_string(path).map_err(|source| SynthError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut all: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&text).map_err(|source| SynthError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
    let available = all.keys().cloned().collect::<Vec<_>>().join(", ");
    splits
        .iter()
        .map(|split| {
            let value = all.remove(split).ok_or_else(|| SynthError::MissingSplit {
                path: path.to_path_buf(),
                split: split.clone(),
                available: available.clone(),
            })?;
            let records: Vec<Record> =
                serde_json::from_value(value).map_err(|source| SynthError::Parse {
                    path: path.to_path_buf(),
                    source,
                })?;
            Ok((split.clone(), records))
        })
        .collect()
}

/// Checks that an image path is relative and cannot escape the output directory.
fn safe_relative(image: &str) -> bool {
    let p = Path::new(image);
    !image.is_empty()
        && p.components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

/// Validates every record before anything is written, so a bad row fails fast and whole.
fn validate(path: &Path, split: &str, records: &[Record]) -> Result<(), SynthError> {
    for (row, r) in records.iter().enumerate() {
        if r.image_path.is_empty() {
            return Err(SynthError::NoImages {
                path: path.to_path_buf(),
                split: split.to_string(),
                row,
                id: r.id.clone(),
            });
        }
        if let Some(bad) = r.image_path.iter().find(|i| !safe_relative(i)) {
            return Err(SynthError::UnsafeImagePath {
                path: path.to_path_buf(),
                split: split.to_string(),
                row,
                id: r.id.clone(),
                image: bad.clone(),
            });
        }
    }
    Ok(())
}

/// Runs `synth`: validates, renders in parallel, writes images, findings.jsonl, SYNTHETIC.txt.
pub fn run(args: &SynthArgs) -> Result<Summary, SynthError> {
    if !(16..=4096).contains(&args.size) {
        return Err(SynthError::Size(args.size));
    }
    let splits = load_annotation(&args.ann, &args.splits)?;
    let mut jobs: Vec<(&str, &Record)> = Vec::new();
    for (split, records) in &splits {
        validate(&args.ann, split, records)?;
        let n = args.limit.unwrap_or(records.len()).min(records.len());
        jobs.extend(records[..n].iter().map(|r| (split.as_str(), r)));
    }
    let lines: Vec<String> = jobs
        .par_iter()
        .map(|(split, r)| {
            let study = render_study(&r.id, &r.report, args.seed, args.size, r.image_path.len());
            for (rel, pixels) in r.image_path.iter().zip(&study.views) {
                write_png(&args.out.join(rel), pixels, args.size)?;
            }
            Ok(findings_line(split, r, &study.findings))
        })
        .collect::<Result<_, SynthError>>()?;
    let normal = jobs
        .iter()
        .filter(|(_, r)| read_report(&r.report).is_empty())
        .count();
    write_file(&args.out.join("findings.jsonl"), lines.concat().as_bytes())?;
    write_file(
        &args.out.join("SYNTHETIC.txt"),
        synthetic_notice(args).as_bytes(),
    )?;
    Ok(Summary {
        studies: jobs.len(),
        images: jobs.iter().map(|(_, r)| r.image_path.len()).sum(),
        normal,
    })
}

fn findings_line(split: &str, r: &Record, findings: &[Finding]) -> String {
    let line = serde_json::json!({
        "id": r.id,
        "split": split,
        "synthetic": true,
        "normal": findings.is_empty(),
        "findings": findings,
        "chexpert": crate::eval::ce::labels_of_findings(findings).to_json(),
        "images": r.image_path,
    });
    format!("{line}\n")
}

fn synthetic_notice(args: &SynthArgs) -> String {
    format!(
        "SYNTHETIC IMAGES - NOT REAL RADIOGRAPHS - NOT FOR CLINICAL OR RESEARCH CONCLUSIONS\n\n\
         Every PNG under this directory is a phantom drawn by `ithn-dist synth` from the text of\n\
         its study's report (annotation: {ann}; seed {seed}; {size} px). The drawing follows a\n\
         rule-based reading of the report (see findings.jsonl: one line per study with the\n\
         findings that were drawn and their 14 CheXpert labels). They exist so the ithn-dist\n\
         demo can train image -> report without the IU X-Ray images; they say nothing about\n\
         real anatomy or disease.\n",
        ann = args.ann.display(),
        seed = args.seed,
        size = args.size,
    )
}

/// Encodes 8-bit grey pixels as PNG with a "synthetic" comment chunk, and writes atomically.
pub fn write_png(path: &Path, pixels: &[u8], size: usize) -> Result<(), SynthError> {
    let mut bytes = Vec::new();
    let encoder = image::codecs::png::PngEncoder::new(&mut bytes);
    let side = u32::try_from(size).map_err(|_| SynthError::Size(size))?;
    encoder
        .write_image(pixels, side, side, image::ExtendedColorType::L8)
        .map_err(|source| SynthError::Encode {
            path: path.to_path_buf(),
            source,
        })?;
    write_file(path, &with_comment(bytes))
}

/// Inserts a `tEXt` chunk `Comment=synthetic phantom (ithn-dist synth)` after IHDR.
fn with_comment(png: Vec<u8>) -> Vec<u8> {
    const IHDR_END: usize = 8 + 4 + 4 + 13 + 4; // signature + length + type + data + CRC
    if png.len() < IHDR_END {
        return png;
    }
    let data = b"Comment\0synthetic phantom (ithn-dist synth), not a real radiograph";
    let mut chunk = Vec::with_capacity(data.len() + 12);
    chunk.extend_from_slice(&(data.len() as u32).to_be_bytes());
    chunk.extend_from_slice(b"tEXt");
    chunk.extend_from_slice(data);
    chunk.extend_from_slice(&crc32(&chunk[4..]).to_be_bytes());
    let mut out = png[..IHDR_END].to_vec();
    out.extend_from_slice(&chunk);
    out.extend_from_slice(&png[IHDR_END..]);
    out
}

/// CRC-32 (IEEE, as PNG uses); bitwise, since it runs once per image on ~70 bytes.
fn crc32(bytes: &[u8]) -> u32 {
    !bytes.iter().fold(!0u32, |mut c, &b| {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 == 1 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
        c
    })
}

/// Atomic write with the error naming the file.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<(), SynthError> {
    crate::fsutil::write_atomic(path, bytes).map_err(|crate::fsutil::IoError { source, .. }| {
        SynthError::Write {
            path: path.to_path_buf(),
            source,
        }
    })
}

/// CLI entry: runs and prints a one-line summary.
pub fn run_cli(args: SynthArgs) -> anyhow::Result<i32> {
    let t0 = std::time::Instant::now();
    let s = run(&args)?;
    println!(
        "synth: {} studies ({} normal), {} SYNTHETIC images of {} px in {} ({:.1} s)",
        s.studies,
        s.normal,
        s.images,
        args.size,
        args.out.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(0)
}

#[cfg(test)]
mod tests;
