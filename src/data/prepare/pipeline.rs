//! The `prepare` pipeline: source samples → images (parallel, spilled to a work file) → text
//! and vocabulary → negatives → shards → vocab.json → manifest.json (last).
//!
//! Encoded images are spilled to `.prepare-work/images.spill` instead of being held in memory,
//! because which rows survive (and hence the vocabulary, the negatives and every row index) is
//! only known once every image has been read, and MIMIC's 270k encoded images do not belong in
//! RAM. The work directory is removed at the end; a rerun after an interruption starts over.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

use super::images::{self, ImageParams, StoredImage, StoredViews};
use super::manifest::{self, Manifest, NegativesSummary, Preprocessing, ShardEntry, VocabSummary};
use super::shards::{self, Row};
use super::{negatives, PrepareError, Skipped, SourceData, SourceSample, Split};
use crate::data::text::Vocab;

const WORK_DIR: &str = ".prepare-work";
/// Samples whose images are decoded in parallel before the next spill write.
const IMAGE_CHUNK: usize = 256;

/// Everything that shapes the output besides the source itself.
#[derive(Debug, Clone)]
pub struct PrepareOptions {
    pub out: PathBuf,
    pub image: ImageParams,
    pub max_seq_length: usize,
    /// Vocabulary threshold; `None` = the dataset's published one (3 IU, 10 MIMIC).
    pub threshold: Option<usize>,
    pub shard_rows: usize,
    pub row_group_rows: usize,
    /// Make any unusable sample fatal instead of skipping it.
    pub strict: bool,
    pub progress: bool,
}

/// Where one sample's stored views live in the spill file.
struct Spilled {
    format: &'static str,
    views: Vec<(u64, usize, u32, u32)>,
}

/// A sample that survived the image phase.
struct Kept {
    sample: SourceSample,
    spilled: Spilled,
}

fn bar(len: usize, what: &str, enabled: bool) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len as u64);
    if let Ok(style) =
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})")
    {
        pb.set_style(style);
    }
    pb.set_message(what.to_string());
    pb
}

/// A sample cannot be used: fatal with `--strict`, else listed in the manifest.
fn reject(
    skipped: &mut Vec<Skipped>,
    strict: bool,
    s: &SourceSample,
    reason: String,
) -> Result<(), PrepareError> {
    if strict {
        return Err(PrepareError::Strict {
            id: s.id.clone(),
            split: s.split.name().into(),
            reason,
        });
    }
    skipped.push(Skipped {
        id: s.id.clone(),
        split: Some(s.split),
        reason,
    });
    Ok(())
}

/// Runs the whole pipeline into `opts.out`, returning the manifest it wrote.
pub fn run(source: SourceData, opts: &PrepareOptions) -> Result<Manifest, PrepareError> {
    if opts.shard_rows == 0 || opts.row_group_rows == 0 || opts.max_seq_length < 2 {
        return Err(PrepareError::Options(
            "--shard-rows and --row-group-rows must be positive and --max-seq-length at least 2"
                .into(),
        ));
    }
    let old_shards = prepare_out_dir(&opts.out)?;
    let SourceData {
        dataset,
        description,
        samples,
        mut skipped,
    } = source;
    if opts.strict {
        if let Some(s) = skipped.first() {
            return Err(PrepareError::Strict {
                id: s.id.clone(),
                split: s.split.map(|x| x.name()).unwrap_or("?").into(),
                reason: s.reason.clone(),
            });
        }
    }
    let mut with_text = Vec::with_capacity(samples.len());
    for s in samples {
        if s.report_raw.trim().is_empty() {
            reject(&mut skipped, opts.strict, &s, "empty report".into())?;
        } else {
            with_text.push(s);
        }
    }
    let work = opts.out.join(WORK_DIR);
    let mut kept = spill_images(with_text, &work, opts, &mut skipped)?;
    kept.sort_by_key(|k| k.sample.split); // stable: source order within a split

    let cleaned: Vec<String> = kept
        .par_iter()
        .map(|k| dataset.clean(&k.sample.report_raw))
        .collect();
    let n_train = kept
        .iter()
        .take_while(|k| k.sample.split == Split::Train)
        .count();
    if n_train == 0 {
        return Err(PrepareError::Options(
            "no usable train sample: cannot build a vocabulary".into(),
        ));
    }
    let threshold = opts
        .threshold
        .unwrap_or_else(|| dataset.default_threshold());
    let vocab = Vocab::build(
        cleaned[..n_train].iter().map(String::as_str),
        dataset,
        threshold,
    );
    tracing::info!(train = n_train, vocab = vocab.len(), "vocabulary built");

    let patients: Vec<Option<String>> = kept[..n_train]
        .iter()
        .map(|k| k.sample.subject_id.clone())
        .collect();
    let pb = bar(0, "negatives", opts.progress);
    let negs = negatives::mine(&cleaned[..n_train], &patients, &pb);
    let with_neg = negs.iter().filter(|n| n.is_some()).count() as u64;

    let spill = File::open(work.join("images.spill")).map_err(|source| PrepareError::Read {
        path: work.join("images.spill"),
        source,
    })?;
    let mut entries = Vec::new();
    let mut start = 0;
    let pb = bar(kept.len(), "shards", opts.progress);
    for split in Split::ALL {
        let end = start
            + kept[start..]
                .iter()
                .take_while(|k| k.sample.split == split)
                .count();
        for (i, chunk_start) in (start..end).step_by(opts.shard_rows).enumerate() {
            let chunk_end = (chunk_start + opts.shard_rows).min(end);
            let rows = (chunk_start..chunk_end)
                .map(|g| {
                    let neg = negs
                        .get(g)
                        .copied()
                        .flatten()
                        .map(|n| (n.index as u64, n.score));
                    build_row(
                        &kept[g],
                        (g - start) as u64,
                        &cleaned[g],
                        neg,
                        &vocab,
                        opts,
                        &spill,
                        &work,
                    )
                })
                .collect::<Result<Vec<_>, _>>()?;
            let file = format!("{}-{i:05}.parquet", split.name());
            let (bytes, sha256) =
                shards::write_shard(&opts.out.join(&file), &rows, opts.row_group_rows)?;
            entries.push(ShardEntry {
                file,
                split,
                first_index: (chunk_start - start) as u64,
                rows: rows.len() as u64,
                row_group_rows: opts.row_group_rows,
                bytes,
                sha256,
            });
            pb.inc(rows.len() as u64);
        }
        start = end;
    }
    pb.finish_and_clear();

    let vocab_path = opts.out.join(manifest::VOCAB_FILE);
    vocab.save(&vocab_path)?;
    for stale in old_shards
        .iter()
        .filter(|f| !entries.iter().any(|e| &e.file == *f))
    {
        let path = opts.out.join(stale);
        std::fs::remove_file(&path).map_err(|source| PrepareError::Write { path, source })?;
    }
    let manifest = Manifest {
        format_version: manifest::FORMAT_VERSION,
        source: description,
        dataset,
        counts: Split::ALL
            .iter()
            .map(|&s| (s, kept.iter().filter(|k| k.sample.split == s).count() as u64))
            .collect(),
        skipped,
        preprocessing: Preprocessing {
            image: opts.image,
            views: kept.first().map(|k| k.spilled.views.len()).unwrap_or(0),
            max_seq_length: opts.max_seq_length,
            shard_rows: opts.shard_rows,
            row_group_rows: opts.row_group_rows,
        },
        vocab: VocabSummary {
            file: manifest::VOCAB_FILE.into(),
            threshold,
            size: vocab.len(),
            sha256: manifest::sha256_file(&vocab_path)?,
        },
        negatives: NegativesSummary {
            method: "tfidf-cosine-top1: (1+ln tf)·(ln((1+N)/(1+df))+1), L2-normalised, tokens of the cleaned \
                     report without '.', other train samples with a different cleaned report and a different \
                     known patient; ties: first-seen text, then lowest index"
                .into(),
            train_with_negative: with_neg,
            train_without_negative: n_train as u64 - with_neg,
            source_neg_report_kept: kept.iter().any(|k| k.sample.neg_report_raw.is_some()),
        },
        shards: entries,
    };
    std::fs::remove_dir_all(&work).map_err(|source| PrepareError::Write {
        path: work.clone(),
        source,
    })?;
    manifest::write_manifest(&opts.out, &manifest)?;
    Ok(manifest)
}

/// Creates `out` or checks that it holds only a previous prepare's files; removes the old
/// manifest first (so the directory reads as incomplete until this run finishes) and any
/// leftovers of an interrupted run. Returns the shard files already there.
fn prepare_out_dir(out: &Path) -> Result<Vec<String>, PrepareError> {
    let werr = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PrepareError::Write { path, source }
    };
    std::fs::create_dir_all(out).map_err(werr(out))?;
    let mut shards = Vec::new();
    let entries = std::fs::read_dir(out).map_err(|source| PrepareError::Read {
        path: out.into(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| PrepareError::Read {
            path: out.into(),
            source,
        })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name == manifest::MANIFEST_FILE || (name.starts_with('.') && name.ends_with(".tmp")) {
            std::fs::remove_file(&path).map_err(werr(&path))?;
        } else if name == WORK_DIR {
            std::fs::remove_dir_all(&path).map_err(werr(&path))?;
        } else if is_shard_name(&name) {
            shards.push(name);
        } else if name != manifest::VOCAB_FILE {
            return Err(PrepareError::input(
                out,
                format!("refusing to write into a directory holding {name:?}, which prepare did not write"),
            ));
        }
    }
    shards.sort();
    Ok(shards)
}

fn is_shard_name(name: &str) -> bool {
    Split::ALL.iter().any(|s| {
        name.strip_prefix(s.name())
            .and_then(|r| r.strip_prefix('-'))
            .and_then(|r| r.strip_suffix(".parquet"))
            .is_some_and(|n| n.len() == 5 && n.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// Decodes every sample's images in parallel (in chunks, results in sample order) and appends
/// the stored bytes to the spill file; failures are rejected with their reason.
fn spill_images(
    samples: Vec<SourceSample>,
    work: &Path,
    opts: &PrepareOptions,
    skipped: &mut Vec<Skipped>,
) -> Result<Vec<Kept>, PrepareError> {
    std::fs::create_dir_all(work).map_err(|source| PrepareError::Write {
        path: work.into(),
        source,
    })?;
    let path = work.join("images.spill");
    let werr = |source| PrepareError::Write {
        path: path.clone(),
        source,
    };
    let mut out = BufWriter::new(File::create(&path).map_err(werr)?);
    let mut offset = 0u64;
    let mut kept = Vec::with_capacity(samples.len());
    let pb = bar(samples.len(), "images", opts.progress);
    let mut samples = samples.into_iter().peekable();
    while samples.peek().is_some() {
        let chunk: Vec<SourceSample> = samples.by_ref().take(IMAGE_CHUNK).collect();
        let n = chunk.len() as u64;
        let results: Vec<Result<StoredViews, String>> = chunk
            .par_iter()
            .map(|s| images::process(&s.images, &opts.image))
            .collect();
        for (sample, result) in chunk.into_iter().zip(results) {
            match result {
                Ok(stored) => {
                    let mut views = Vec::with_capacity(stored.views.len());
                    for v in &stored.views {
                        out.write_all(&v.bytes).map_err(werr)?;
                        views.push((offset, v.bytes.len(), v.width, v.height));
                        offset += v.bytes.len() as u64;
                    }
                    kept.push(Kept {
                        sample,
                        spilled: Spilled {
                            format: stored.format,
                            views,
                        },
                    });
                }
                Err(reason) => reject(skipped, opts.strict, &sample, reason)?,
            }
        }
        pb.inc(n);
    }
    pb.finish_and_clear();
    out.flush().map_err(werr)?;
    tracing::info!(kept = kept.len(), skipped = skipped.len(), "images done");
    Ok(kept)
}

#[allow(clippy::too_many_arguments)]
fn build_row(
    k: &Kept,
    index: u64,
    cleaned: &str,
    neg: Option<(u64, f32)>,
    vocab: &Vocab,
    opts: &PrepareOptions,
    spill: &File,
    work: &Path,
) -> Result<Row, PrepareError> {
    let views = k
        .spilled
        .views
        .iter()
        .map(|&(offset, len, width, height)| {
            let mut bytes = vec![0u8; len];
            spill
                .read_exact_at(&mut bytes, offset)
                .map_err(|source| PrepareError::Read {
                    path: work.join("images.spill"),
                    source,
                })?;
            Ok(StoredImage {
                bytes,
                width,
                height,
            })
        })
        .collect::<Result<Vec<_>, PrepareError>>()?;
    let s = &k.sample;
    Ok(Row {
        index,
        id: s.id.clone(),
        study_id: s.study_id.clone(),
        subject_id: s.subject_id.clone(),
        split: s.split,
        report_raw: s.report_raw.clone(),
        report: cleaned.to_string(),
        ids: vocab.encode(cleaned, opts.max_seq_length),
        views: StoredViews {
            format: k.spilled.format,
            views,
        },
        neg,
        neg_report_raw: s.neg_report_raw.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_names_are_recognised_exactly() {
        assert!(is_shard_name("train-00000.parquet"));
        assert!(is_shard_name("test-00012.parquet"));
        assert!(!is_shard_name("train-0.parquet"));
        assert!(!is_shard_name("notes.txt"));
    }
}
