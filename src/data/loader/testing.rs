//! A minimal writer of prepared-format shards (the schema of `docs/prepared-format.md`), so the
//! loader's tests and its benchmark do not depend on `prepare` or on real datasets. Writes are
//! atomic (temp file, fsync, rename) and the manifest — a complete `prepare` manifest, read back
//! by the same reader — is written last, like `prepare` does.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, Int64Builder, ListBuilder, RecordBatch, StringArray, UInt32Array,
    UInt64Array, UInt8Array,
};
use arrow::datatypes::{Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;

use super::LoaderError;
use crate::data::image::{encode_jpeg, Channels, Image};
use crate::data::prepare::images::{ImageParams, PixelMode};
use crate::data::prepare::manifest::{
    read_manifest, sha256_file, write_manifest, Manifest, NegativesSummary, Preprocessing,
    ShardEntry, VocabSummary, FORMAT_VERSION, MANIFEST_FILE, VOCAB_FILE,
};
use crate::data::prepare::{PrepareError, Split};
use crate::data::text::{Dataset, Vocab};

/// One sample to write.
#[derive(Debug, Clone)]
pub struct TestRow {
    pub id: String,
    /// Token ids as stored (`[0] + ids + [0]`, already cut).
    pub ids: Vec<i64>,
    /// One or two views, all of one channel layout.
    pub images: Vec<Image>,
    pub neg_index: Option<u64>,
}

/// How image cells are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestPixels {
    Jpeg { quality: u8 },
    Raw,
}

/// Write `rows` as `{split}-{i:05}.parquet` shards of `shard_rows` rows with row groups of
/// `row_group_rows`, and add them to `dir/manifest.json` (replacing that split's entries).
pub fn write_split(
    dir: &Path,
    split: Split,
    rows: &[TestRow],
    pixels: TestPixels,
    shard_rows: usize,
    row_group_rows: usize,
) -> Result<(), LoaderError> {
    std::fs::create_dir_all(dir).map_err(|source| LoaderError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut entries = Vec::new();
    for (i, chunk) in rows.chunks(shard_rows.max(1)).enumerate() {
        let first = (i * shard_rows) as u64;
        let file = format!("{}-{i:05}.parquet", split.name());
        let path = dir.join(&file);
        let batch = record_batch(first, chunk, pixels)?;
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(row_group_rows.max(1)))
            .build();
        let mut bytes = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut bytes, batch.schema(), Some(props))
            .map_err(|e| pq(&path, e))?;
        writer.write(&batch).map_err(|e| pq(&path, e))?;
        writer.close().map_err(|e| pq(&path, e))?;
        write_atomic(&path, &bytes)?;
        entries.push(ShardEntry {
            file,
            split,
            first_index: first,
            rows: chunk.len() as u64,
            row_group_rows,
            bytes: bytes.len() as u64,
            sha256: sha256_file(&path)?,
        });
    }
    let image = ImageParams {
        resize: None,
        pixels: match pixels {
            TestPixels::Jpeg { .. } => PixelMode::Jpeg,
            TestPixels::Raw => PixelMode::Raw,
        },
        jpeg_quality: match pixels {
            TestPixels::Jpeg { quality } => quality,
            TestPixels::Raw => 95,
        },
    };
    write_manifest_for(
        dir,
        split,
        rows,
        image,
        (shard_rows, row_group_rows),
        entries,
    )
}

/// Merge `entries` (split `split`) into the directory's manifest — a complete `prepare`
/// manifest, so the loader reads test shards through the same reader and checks as real ones —
/// and write it (with a small vocab.json, which the manifest must name) atomically, last.
fn write_manifest_for(
    dir: &Path,
    split: Split,
    rows: &[TestRow],
    image: ImageParams,
    (shard_rows, row_group_rows): (usize, usize),
    entries: Vec<ShardEntry>,
) -> Result<(), LoaderError> {
    let mut manifest = if dir.join(MANIFEST_FILE).exists() {
        read_manifest(dir)?
    } else {
        empty_manifest(dir)?
    };
    manifest.shards.retain(|s| s.split != split);
    manifest.shards.extend(entries);
    manifest.shards.sort_by_key(|s| (s.split, s.first_index));
    manifest.counts.insert(split, rows.len() as u64);
    let p = &mut manifest.preprocessing;
    p.image = image;
    p.views = p
        .views
        .max(rows.iter().map(|r| r.images.len()).max().unwrap_or(0));
    p.max_seq_length = p
        .max_seq_length
        .max(rows.iter().map(|r| r.ids.len()).max().unwrap_or(0));
    (p.shard_rows, p.row_group_rows) = (shard_rows, row_group_rows);
    if split == Split::Train {
        let with = rows.iter().filter(|r| r.neg_index.is_some()).count() as u64;
        manifest.negatives.train_with_negative = with;
        manifest.negatives.train_without_negative = rows.len() as u64 - with;
    }
    write_manifest(dir, &manifest)?;
    Ok(())
}

/// A manifest with no shards yet, and the vocab.json it names (a few placeholder tokens: the
/// test rows' ids are arbitrary numbers, not encoded words).
fn empty_manifest(dir: &Path) -> Result<Manifest, LoaderError> {
    let vocab_path = dir.join(VOCAB_FILE);
    let vocab = Vocab::build(["tok_a tok_b tok_c"], Dataset::IuXray, 1);
    vocab.save(&vocab_path).map_err(PrepareError::from)?;
    Ok(Manifest {
        format_version: FORMAT_VERSION,
        source: serde_json::json!({ "kind": "loader-testing" }),
        dataset: Dataset::IuXray,
        counts: Default::default(),
        skipped: Vec::new(),
        preprocessing: Preprocessing {
            image: ImageParams {
                resize: None,
                pixels: PixelMode::Raw,
                jpeg_quality: 95,
            },
            views: 0,
            max_seq_length: 0,
            shard_rows: 0,
            row_group_rows: 0,
        },
        vocab: VocabSummary {
            file: VOCAB_FILE.into(),
            threshold: 1,
            size: vocab.len(),
            sha256: sha256_file(&vocab_path)?,
            train_records: None,
        },
        negatives: NegativesSummary {
            method: "given by the test rows".into(),
            train_with_negative: 0,
            train_without_negative: 0,
            source_neg_report_kept: false,
        },
        shards: Vec::new(),
    })
}

fn pq(path: &Path, e: parquet::errors::ParquetError) -> LoaderError {
    LoaderError::Parquet {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), LoaderError> {
    crate::fsutil::write_atomic(path, bytes).map_err(|crate::fsutil::IoError { source, .. }| {
        LoaderError::Io {
            path: path.to_path_buf(),
            source,
        }
    })
}

/// Appends a row's two image cells (encoded per `pixels`; null for a missing view) and their
/// width/height columns (`dims` = width_0, height_0, width_1, height_1).
fn append_views(
    r: &TestRow,
    pixels: TestPixels,
    img: &mut [BinaryBuilder; 2],
    dims: &mut [Vec<Option<u32>>; 4],
) -> Result<(), LoaderError> {
    for v in 0..2 {
        match r.images.get(v) {
            Some(im) => {
                let cell = match pixels {
                    TestPixels::Jpeg { quality } => encode_jpeg(im, quality)?,
                    TestPixels::Raw => im.pixels().to_vec(),
                };
                img[v].append_value(cell);
                dims[2 * v].push(Some(im.width()));
                dims[2 * v + 1].push(Some(im.height()));
            }
            None => {
                img[v].append_null();
                dims[2 * v].push(None);
                dims[2 * v + 1].push(None);
            }
        }
    }
    Ok(())
}

/// The `pixel_format` of a row: `jpeg`, or raw 8-bit gray / RGB after its first view.
fn pixel_format(r: &TestRow, pixels: TestPixels) -> &'static str {
    let gray = r
        .images
        .first()
        .is_some_and(|i| i.channels() == Channels::Gray);
    match (pixels, gray) {
        (TestPixels::Jpeg { .. }, _) => "jpeg",
        (TestPixels::Raw, true) => "raw_gray8",
        (TestPixels::Raw, false) => "raw_rgb8",
    }
}

fn record_batch(
    first: u64,
    rows: &[TestRow],
    pixels: TestPixels,
) -> Result<RecordBatch, LoaderError> {
    let mut ids = ListBuilder::new(Int64Builder::new());
    let mut img = [BinaryBuilder::new(), BinaryBuilder::new()];
    let mut dims: [Vec<Option<u32>>; 4] = Default::default();
    let mut formats = Vec::new();
    for r in rows {
        ids.append_value(r.ids.iter().map(|&t| Some(t)));
        append_views(r, pixels, &mut img, &mut dims)?;
        formats.push(pixel_format(r, pixels));
    }
    let [img0, img1] = &mut img;
    let mut cols: Vec<(&str, ArrayRef)> = vec![
        (
            "index",
            Arc::new(UInt64Array::from_iter_values(
                first..first + rows.len() as u64,
            )),
        ),
        (
            "id",
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.id.as_str()),
            )),
        ),
        (
            "report",
            Arc::new(StringArray::from_iter_values(rows.iter().map(|_| ""))),
        ),
        ("ids", Arc::new(ids.finish())),
        (
            "n_views",
            Arc::new(UInt8Array::from_iter_values(
                rows.iter().map(|r| r.images.len() as u8),
            )),
        ),
        ("image_0", Arc::new(img0.finish())),
        ("image_1", Arc::new(img1.finish())),
    ];
    for (name, d) in ["width_0", "height_0", "width_1", "height_1"]
        .iter()
        .zip(&dims)
    {
        cols.push((name, Arc::new(UInt32Array::from(d.clone()))));
    }
    cols.push(("pixel_format", Arc::new(StringArray::from(formats))));
    if rows.iter().any(|r| r.neg_index.is_some()) {
        let negs: Vec<Option<u64>> = rows.iter().map(|r| r.neg_index).collect();
        cols.push(("neg_index", Arc::new(UInt64Array::from(negs))));
    }
    let fields: Vec<Field> = cols
        .iter()
        .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
        .collect();
    let arrays = cols.into_iter().map(|(_, a)| a).collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).map_err(|e| LoaderError::Option {
        key: "test rows",
        reason: e.to_string(),
    })
}
