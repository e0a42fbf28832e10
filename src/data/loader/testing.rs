//! A minimal writer of prepared-format shards (the schema of `docs/prepared-format.md`), so the
//! loader's tests and its benchmark do not depend on `prepare` or on real datasets. Writes are
//! atomic (temp file, fsync, rename) and the manifest is written last, like `prepare` does.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, Int64Builder, ListBuilder, RecordBatch, StringArray, UInt32Array,
    UInt64Array, UInt8Array,
};
use arrow::datatypes::{Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;

use super::plan::{sha256_file, ShardEntry};
use super::LoaderError;
use crate::data::image::{encode_jpeg, Channels, Image};

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
    split: &str,
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
        let file = format!("{split}-{i:05}.parquet");
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
            split: split.to_string(),
            first_index: first,
            rows: chunk.len() as u64,
            sha256: Some(sha256_file(&path)?),
        });
    }
    let manifest = dir.join("manifest.json");
    let mut shards: Vec<serde_json::Value> = match std::fs::read(&manifest) {
        Ok(b) => serde_json::from_slice::<serde_json::Value>(&b)
            .ok()
            .and_then(|v| v.get("shards").and_then(|s| s.as_array().cloned()))
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    shards.retain(|s| s.get("split").and_then(|x| x.as_str()) != Some(split));
    shards.extend(
        entries
            .iter()
            .map(|e| serde_json::to_value(e).expect("plain struct")),
    );
    let text =
        serde_json::to_vec_pretty(&serde_json::json!({ "format_version": 1, "shards": shards }))
            .expect("json");
    write_atomic(&manifest, &text)
}

fn pq(path: &Path, e: parquet::errors::ParquetError) -> LoaderError {
    LoaderError::Parquet {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), LoaderError> {
    crate::fsutil::write_atomic(path, bytes).map_err(|source| LoaderError::Io {
        path: path.to_path_buf(),
        source,
    })
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
        let gray = r
            .images
            .first()
            .is_some_and(|i| i.channels() == Channels::Gray);
        formats.push(match (pixels, gray) {
            (TestPixels::Jpeg { .. }, _) => "jpeg",
            (TestPixels::Raw, true) => "raw_gray8",
            (TestPixels::Raw, false) => "raw_rgb8",
        });
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
