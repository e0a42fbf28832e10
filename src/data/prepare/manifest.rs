//! `manifest.json`: what a prepared directory contains, and the checks a reader runs on it.
//!
//! Why it exists: a loader on hundreds of ranks must know, without opening every shard, which
//! file holds row i of a split, and must be able to tell a complete, intact directory from a
//! half-written or corrupted one. The manifest is written last (atomically), so its presence
//! means every file it lists was complete when it was written; [`verify_checksums`] proves they
//! still are. It holds no timestamps: two runs on the same input write identical bytes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::images::ImageParams;
use super::{PrepareError, Skipped, Split};
use crate::data::text::Dataset;

/// Bumped whenever the Arrow schema or the manifest layout changes incompatibly.
pub const FORMAT_VERSION: u32 = 1;
pub const MANIFEST_FILE: &str = "manifest.json";
pub const VOCAB_FILE: &str = "vocab.json";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format_version: u32,
    /// Source kind and its options, as given on the command line.
    pub source: serde_json::Value,
    pub dataset: Dataset,
    /// Rows per split (`train`, `val`, `test`).
    pub counts: BTreeMap<Split, u64>,
    /// Samples left out, with the reason.
    pub skipped: Vec<Skipped>,
    pub preprocessing: Preprocessing,
    pub vocab: VocabSummary,
    pub negatives: NegativesSummary,
    /// Every shard, splits in order train, val, test, rows in index order.
    pub shards: Vec<ShardEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preprocessing {
    pub image: ImageParams,
    /// Views stored per sample, every row the same (`--views`: 2 for IU X-Ray, 1 for MIMIC-CXR
    /// by default).
    pub views: usize,
    pub max_seq_length: usize,
    pub shard_rows: usize,
    pub row_group_rows: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VocabSummary {
    pub file: String,
    pub threshold: usize,
    /// V, `<unk>` included.
    pub size: usize,
    pub sha256: String,
    /// Train records the vocabulary was counted over: every train record the source lists,
    /// skipped ones included (SPEC §1). Absent in directories written before this rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_records: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NegativesSummary {
    /// The mining rule, in words (see `negatives.rs`).
    pub method: String,
    pub train_with_negative: u64,
    pub train_without_negative: u64,
    /// Whether the source's own `neg_report` was kept in `neg_report_raw`.
    pub source_neg_report_kept: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardEntry {
    pub file: String,
    pub split: Split,
    /// `index` of the shard's first row.
    pub first_index: u64,
    pub rows: u64,
    pub row_group_rows: usize,
    pub bytes: u64,
    pub sha256: String,
}

impl Manifest {
    /// The shards of one split, in index order.
    pub fn shards_of(&self, split: Split) -> impl Iterator<Item = &ShardEntry> {
        self.shards.iter().filter(move |s| s.split == split)
    }

    /// Structural checks: known version, shards of each split contiguous from 0 and summing to
    /// the split's count, file names without directories.
    pub fn validate(&self, path: &Path) -> Result<(), PrepareError> {
        let bad = |what: String| PrepareError::Manifest {
            path: path.to_path_buf(),
            what,
        };
        if self.format_version != FORMAT_VERSION {
            return Err(bad(format!(
                "format_version {} is not the supported {FORMAT_VERSION}; rerun prepare",
                self.format_version
            )));
        }
        for split in Split::ALL {
            let mut next = 0u64;
            for s in self.shards_of(split) {
                if s.first_index != next {
                    return Err(bad(format!(
                        "shard {} starts at {} instead of {next}",
                        s.file, s.first_index
                    )));
                }
                if s.file.contains('/') || s.file.contains('\\') {
                    return Err(bad(format!(
                        "shard name {:?} must be a plain file name",
                        s.file
                    )));
                }
                next += s.rows;
            }
            let count = self.counts.get(&split).copied().unwrap_or(0);
            if next != count {
                return Err(bad(format!(
                    "{} shards hold {next} rows but counts says {count}",
                    split.name()
                )));
            }
        }
        Ok(())
    }
}

/// Reads and validates `dir/manifest.json`.
pub fn read_manifest(dir: &Path) -> Result<Manifest, PrepareError> {
    let path = dir.join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&path).map_err(|source| PrepareError::Read {
        path: path.clone(),
        source,
    })?;
    let m: Manifest = serde_json::from_str(&text).map_err(|e| PrepareError::Manifest {
        path: path.clone(),
        what: e.to_string(),
    })?;
    m.validate(&path)?;
    Ok(m)
}

/// Checks the size and sha256 of every shard and of vocab.json against the manifest; the
/// first mismatch (or unreadable file) is the error.
pub fn verify_checksums(dir: &Path, manifest: &Manifest) -> Result<(), PrepareError> {
    let files = manifest
        .shards
        .iter()
        .map(|s| (&s.file, &s.sha256))
        .chain(std::iter::once((
            &manifest.vocab.file,
            &manifest.vocab.sha256,
        )));
    for (file, expected) in files {
        let path = dir.join(file);
        let actual = sha256_file(&path)?;
        if &actual != expected {
            return Err(PrepareError::Checksum {
                path,
                expected: expected.clone(),
                actual,
            });
        }
    }
    Ok(())
}

/// Hex sha256 of a file ([`crate::fsutil::sha256_file`]), as a prepare error.
pub fn sha256_file(path: &Path) -> Result<String, PrepareError> {
    let read_err = |source| PrepareError::Read {
        path: path.to_path_buf(),
        source,
    };
    crate::fsutil::sha256_file(path).map_err(|e| read_err(e.source))
}

/// Writes the manifest atomically (pretty JSON, trailing newline).
pub fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<PathBuf, PrepareError> {
    let path = dir.join(MANIFEST_FILE);
    let mut bytes = serde_json::to_vec_pretty(manifest).map_err(|e| PrepareError::Manifest {
        path: path.clone(),
        what: e.to_string(),
    })?;
    bytes.push(b'\n');
    crate::fsutil::write_atomic(&path, &bytes).map_err(
        |crate::fsutil::IoError { source, .. }| PrepareError::Write {
            path: path.clone(),
            source,
        },
    )?;
    Ok(path)
}
