//! `ithn-dist prepare`: raw datasets (R2Gen annotation, MIMIC-CXR-JPG, Open-i XML) into
//! validated Parquet shards with one mined hard negative per training sample.
//!
//! Why it exists: training at scale must not decode hundreds of thousands of full-size JPEGs
//! from a network filesystem every epoch, users arrive with three different layouts, and ITHN
//! needs a hard-negative (report, image) pair per training sample whose mining the authors
//! never published. Every rank later reads only what this module writes.
//!
//! Guarantees (the format is documented in `docs/prepared-format.md`):
//! - one row per kept sample; rows of a split are numbered `0..n` (`index`) and stored in that
//!   order across `{split}-{i:05}.parquet` shards; samples that cannot be used (missing or
//!   corrupt image, empty report, no FINDINGS section, …) are listed in the manifest with their
//!   reason, or abort the run with `--strict`;
//! - every file is written atomically (temp file, fsync, rename) and `manifest.json` is written
//!   last and removed first, so a directory with a manifest is complete and an interrupted run
//!   is simply rerun;
//! - the output is a pure function of the input and the options: two runs are byte-identical
//!   (no timestamps, ordered parallelism, deterministic negative tie-breaking).

pub mod cli;
mod commit;
pub mod fixtures;
pub mod images;
pub mod inspect;
pub mod manifest;
pub mod negatives;
mod pipeline;
mod select;
pub mod shards;
pub mod sources;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use manifest::{read_manifest, verify_checksums, Manifest};
pub use pipeline::{run, PrepareOptions};

/// Everything that can make `prepare` or `inspect` fail; each variant names the file (and the
/// row, sample or key) so that the user can fix the input.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {what}")]
    Input { path: PathBuf, what: String },
    #[error("{path}, row {row}: {what}")]
    Row {
        path: PathBuf,
        row: usize,
        what: String,
    },
    #[error("sample {id} ({split}) cannot be used and --strict is set: {reason}")]
    Strict {
        id: String,
        split: String,
        reason: String,
    },
    #[error("invalid option: {0}")]
    Options(String),
    #[error("{path}: parquet: {message}")]
    Parquet { path: PathBuf, message: String },
    #[error("{path}: invalid manifest: {what}")]
    Manifest { path: PathBuf, what: String },
    #[error("{path}: sha256 mismatch: manifest says {expected}, file has {actual}")]
    Checksum {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error(transparent)]
    Text(#[from] crate::data::text::TextError),
}

impl PrepareError {
    pub(crate) fn input(path: impl Into<PathBuf>, what: impl Into<String>) -> Self {
        PrepareError::Input {
            path: path.into(),
            what: what.into(),
        }
    }
}

pub use crate::dataset::Split;

/// One sample as a source describes it, before images are read or text is cleaned.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceSample {
    pub id: String,
    pub study_id: Option<String>,
    /// The patient, when the layout knows it; negatives never come from the same patient.
    pub subject_id: Option<String>,
    pub split: Split,
    pub report_raw: String,
    /// One (MIMIC) or two (IU: frontal, lateral) image files.
    pub images: Vec<PathBuf>,
    /// An R2Gen annotation's own `neg_report[0]`, kept for reference.
    pub neg_report_raw: Option<String>,
}

/// A sample left out of the output, with the reason (listed in the manifest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    pub id: String,
    /// `None` when the sample was dropped before its split was known.
    pub split: Option<Split>,
    pub reason: String,
}

/// What a source reader hands to the pipeline.
#[derive(Debug, Clone)]
pub struct SourceData {
    pub dataset: crate::data::text::Dataset,
    /// The source kind and its options, recorded verbatim in the manifest.
    pub description: serde_json::Value,
    pub samples: Vec<SourceSample>,
    pub skipped: Vec<Skipped>,
}
