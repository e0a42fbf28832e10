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
use super::{negatives, select, PrepareError, Skipped, SourceData, SourceSample, Split};
use crate::data::text::{Dataset, Vocab};

const WORK_DIR: &str = ".prepare-work";
/// Samples whose images are decoded in parallel before the next spill write.
const IMAGE_CHUNK: usize = 256;

/// Everything that shapes the output besides the source itself.
#[derive(Debug, Clone)]
pub struct PrepareOptions {
    pub out: PathBuf,
    pub image: ImageParams,
    /// Images stored per study (the first `views` of each; studies with fewer are skipped).
    pub views: usize,
    pub max_seq_length: usize,
    /// Vocabulary threshold; `None` = the dataset's published one (3 IU, 10 MIMIC).
    pub threshold: Option<usize>,
    pub shard_rows: usize,
    pub row_group_rows: usize,
    /// Make any unusable sample fatal instead of skipping it.
    pub strict: bool,
    pub progress: bool,
}

impl PrepareOptions {
    /// The bounds the command line enforces, checked again for library callers.
    pub fn validate(&self) -> Result<(), PrepareError> {
        let bad = |what: &str| Err(PrepareError::Options(what.into()));
        if self.shard_rows == 0 || self.row_group_rows == 0 {
            return bad("--shard-rows and --row-group-rows must be at least 1");
        }
        if self.max_seq_length < 2 {
            return bad("--max-seq-length must be at least 2 (BOS and EOS)");
        }
        if !(1..=2).contains(&self.views) {
            return bad("--views must be 1 or 2");
        }
        if self.threshold == Some(0) {
            return bad("--threshold must be at least 1");
        }
        if !(1..=100).contains(&self.image.jpeg_quality) {
            return bad("--jpeg-quality must be in 1..=100");
        }
        Ok(())
    }
}

impl PrepareOptions {
    /// What the manifest records of these options.
    fn preprocessing(&self) -> Preprocessing {
        Preprocessing {
            image: self.image,
            views: self.views,
            max_seq_length: self.max_seq_length,
            shard_rows: self.shard_rows,
            row_group_rows: self.row_group_rows,
        }
    }
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

/// The vocabulary of the listing: every train record's report, cleaned, whatever is skipped
/// later (the reference's `create_vocabulary` counts the annotation's whole `train` list, so
/// a skipped row must not shift token ids; SPEC §1).
fn listing_vocab(samples: &[SourceSample], dataset: Dataset, threshold: usize) -> Vocab {
    let cleaned: Vec<String> = samples
        .par_iter()
        .filter(|s| s.split == Split::Train)
        .map(|s| dataset.clean(&s.report_raw))
        .collect();
    Vocab::build(cleaned.iter().map(String::as_str), dataset, threshold)
}

/// Runs the whole pipeline into `opts.out`, returning the manifest it wrote.
pub fn run(source: SourceData, opts: &PrepareOptions) -> Result<Manifest, PrepareError> {
    opts.validate()?;
    let old_shards = prepare_out_dir(&opts.out)?;
    let SourceData {
        dataset,
        description,
        samples,
        mut skipped,
    } = source;
    refuse_source_skips(opts.strict, &skipped)?;
    let threshold = opts
        .threshold
        .unwrap_or_else(|| dataset.default_threshold());
    let vocab = listing_vocab(&samples, dataset, threshold);
    let train_records = samples.iter().filter(|s| s.split == Split::Train).count();
    tracing::info!(
        train_records,
        vocab = vocab.len(),
        "vocabulary built from the listing"
    );
    let selected = select::select(samples, opts.views, opts.strict, &mut skipped)?;
    let work = opts.out.join(WORK_DIR);
    let mut kept = spill_images(selected, &work, opts, &mut skipped)?;
    kept.sort_by_key(|k| k.sample.split); // stable: source order within a split

    let cleaned: Vec<String> = kept
        .par_iter()
        .map(|k| dataset.clean(&k.sample.report_raw))
        .collect();
    let negs = mine_negatives(&kept, &cleaned, train_records, opts.progress)?;

    let written = Written {
        kept: &kept,
        cleaned: &cleaned,
        negs: &negs,
        vocab: &vocab,
        opts,
        work: &work,
    };
    let entries = written.shards()?;
    let vocab_path = opts.out.join(manifest::VOCAB_FILE);
    vocab.save(&vocab_path)?;
    remove_stale_shards(&opts.out, &old_shards, &entries)?;
    let manifest = Manifest {
        format_version: manifest::FORMAT_VERSION,
        source: description,
        dataset,
        counts: Split::ALL
            .iter()
            .map(|&s| {
                (
                    s,
                    kept.iter().filter(|k| k.sample.split == s).count() as u64,
                )
            })
            .collect(),
        skipped,
        preprocessing: opts.preprocessing(),
        vocab: VocabSummary {
            file: manifest::VOCAB_FILE.into(),
            threshold,
            size: vocab.len(),
            sha256: manifest::sha256_file(&vocab_path)?,
            train_records: Some(train_records as u64),
        },
        negatives: negatives_summary(&negs, &kept),
        shards: entries,
    };
    std::fs::remove_dir_all(&work).map_err(|source| PrepareError::Write {
        path: work.clone(),
        source,
    })?;
    manifest::write_manifest(&opts.out, &manifest)?;
    Ok(manifest)
}

/// The hard negative of every kept train row (the first rows of `kept`); refuses a run
/// without any, which could not be trained on.
fn mine_negatives(
    kept: &[Kept],
    cleaned: &[String],
    train_records: usize,
    progress: bool,
) -> Result<Vec<Option<negatives::Negative>>, PrepareError> {
    let n_train = kept
        .iter()
        .take_while(|k| k.sample.split == Split::Train)
        .count();
    if n_train == 0 {
        return Err(PrepareError::Options(format!(
            "no usable train sample ({train_records} listed, all skipped or none): \
             training needs train rows; see the reasons with --strict"
        )));
    }
    let patients: Vec<Option<String>> = kept[..n_train]
        .iter()
        .map(|k| k.sample.subject_id.clone())
        .collect();
    let pb = bar(0, "negatives", progress);
    Ok(negatives::mine(&cleaned[..n_train], &patients, &pb))
}

/// Removes the shards of a previous run that this run did not write again.
fn remove_stale_shards(out: &Path, old: &[String], new: &[ShardEntry]) -> Result<(), PrepareError> {
    for stale in old.iter().filter(|f| !new.iter().any(|e| &e.file == *f)) {
        let path = out.join(stale);
        std::fs::remove_file(&path).map_err(|source| PrepareError::Write { path, source })?;
    }
    Ok(())
}

/// A source-level skip is fatal with `--strict`.
fn refuse_source_skips(strict: bool, skipped: &[Skipped]) -> Result<(), PrepareError> {
    match skipped.first() {
        Some(s) if strict => Err(PrepareError::Strict {
            id: s.id.clone(),
            split: s.split.map(|x| x.name()).unwrap_or("?").into(),
            reason: s.reason.clone(),
        }),
        _ => Ok(()),
    }
}

/// The manifest's account of the mined negatives of the train rows (`negs[i]` of train row i).
fn negatives_summary(negs: &[Option<negatives::Negative>], kept: &[Kept]) -> NegativesSummary {
    let with_neg = negs.iter().filter(|n| n.is_some()).count() as u64;
    NegativesSummary {
        method: "tfidf-cosine-top1: (1+ln tf)·(ln((1+N)/(1+df))+1), L2-normalised, tokens of the cleaned \
                 report without '.', other train samples with a different cleaned report and a different \
                 known patient; ties: first-seen text, then lowest index"
            .into(),
        train_with_negative: with_neg,
        train_without_negative: negs.len() as u64 - with_neg,
        source_neg_report_kept: kept.iter().any(|k| k.sample.neg_report_raw.is_some()),
    }
}

/// What the shard writer needs: the kept samples (split order), their cleaned reports, the
/// train rows' negatives and the vocabulary.
struct Written<'a> {
    kept: &'a [Kept],
    cleaned: &'a [String],
    negs: &'a [Option<negatives::Negative>],
    vocab: &'a Vocab,
    opts: &'a PrepareOptions,
    work: &'a Path,
}

impl Written<'_> {
    /// Writes every split's shards, returning their manifest entries in index order.
    fn shards(&self) -> Result<Vec<ShardEntry>, PrepareError> {
        let (kept, opts) = (self.kept, self.opts);
        let spill_path = self.work.join("images.spill");
        let spill = File::open(&spill_path).map_err(|source| PrepareError::Read {
            path: spill_path,
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
                    .map(|g| self.row(g, (g - start) as u64, &spill))
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
        Ok(entries)
    }

    /// Row `g` of the kept samples, numbered `index` within its split.
    fn row(&self, g: usize, index: u64, spill: &File) -> Result<Row, PrepareError> {
        let neg = self
            .negs
            .get(g)
            .copied()
            .flatten()
            .map(|n| (n.index as u64, n.score));
        build_row(
            &self.kept[g],
            index,
            &self.cleaned[g],
            neg,
            self.vocab,
            self.opts,
            spill,
            self.work,
        )
    }
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
                Err(reason) => select::reject(skipped, opts.strict, &sample, reason)?,
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
