//! Parquet shards: the Arrow schema of a prepared row, writing a shard atomically, and reading
//! one back (for `inspect` and tests; the training loader has its own random-access reader).
//!
//! The schema is documented column by column in `docs/prepared-format.md`. Row groups are small
//! (64 rows by default) so that a loader can fetch one sample without decoding a whole shard.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BinaryBuilder, Float32Builder, Int64Builder, ListBuilder, RecordBatch,
    StringBuilder, UInt32Builder, UInt64Builder, UInt8Builder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use super::images::StoredViews;
use super::{PrepareError, Split};

/// One output row before it is turned into Arrow columns.
#[derive(Debug, Clone)]
pub struct Row {
    pub index: u64,
    pub id: String,
    pub study_id: Option<String>,
    pub subject_id: Option<String>,
    pub split: Split,
    pub report_raw: String,
    pub report: String,
    pub ids: Vec<i64>,
    pub views: StoredViews,
    /// Train rows: (row index of the negative in the train split, TF-IDF cosine).
    pub neg: Option<(u64, f32)>,
    pub neg_report_raw: Option<String>,
}

/// The Arrow schema of every shard.
pub fn schema() -> SchemaRef {
    let f = |name: &str, t: DataType, nullable: bool| Field::new(name, t, nullable);
    Arc::new(Schema::new(vec![
        f("index", DataType::UInt64, false),
        f("id", DataType::Utf8, false),
        f("study_id", DataType::Utf8, true),
        f("subject_id", DataType::Utf8, true),
        f("split", DataType::Utf8, false),
        f("report_raw", DataType::Utf8, false),
        f("report", DataType::Utf8, false),
        f(
            "ids",
            DataType::List(Arc::new(Field::new("item", DataType::Int64, true))),
            false,
        ),
        f("n_views", DataType::UInt8, false),
        f("image_0", DataType::Binary, false),
        f("image_1", DataType::Binary, true),
        f("width_0", DataType::UInt32, false),
        f("height_0", DataType::UInt32, false),
        f("width_1", DataType::UInt32, true),
        f("height_1", DataType::UInt32, true),
        f("pixel_format", DataType::Utf8, false),
        f("neg_index", DataType::UInt64, true),
        f("neg_score", DataType::Float32, true),
        f("neg_report_raw", DataType::Utf8, true),
    ]))
}

fn strings<'a>(values: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
    let mut b = StringBuilder::new();
    values.for_each(|v| b.append_option(v));
    Arc::new(b.finish())
}

fn u32s(values: impl Iterator<Item = Option<u32>>) -> ArrayRef {
    let mut b = UInt32Builder::new();
    values.for_each(|v| b.append_option(v));
    Arc::new(b.finish())
}

fn binaries<'a>(values: impl Iterator<Item = Option<&'a [u8]>>) -> ArrayRef {
    let mut b = BinaryBuilder::new();
    values.for_each(|v| b.append_option(v));
    Arc::new(b.finish())
}

/// The rows as one record batch of [`schema`].
pub fn to_batch(rows: &[Row]) -> Result<RecordBatch, arrow::error::ArrowError> {
    fn view(r: &Row, i: usize) -> Option<&super::images::StoredImage> {
        r.views.views.get(i)
    }
    let mut index = UInt64Builder::new();
    let mut n_views = UInt8Builder::new();
    let mut ids = ListBuilder::new(Int64Builder::new());
    let mut neg_index = UInt64Builder::new();
    let mut neg_score = Float32Builder::new();
    for r in rows {
        index.append_value(r.index);
        n_views.append_value(r.views.views.len() as u8);
        ids.values().append_slice(&r.ids);
        ids.append(true);
        neg_index.append_option(r.neg.map(|n| n.0));
        neg_score.append_option(r.neg.map(|n| n.1));
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(index.finish()),
        strings(rows.iter().map(|r| Some(r.id.as_str()))),
        strings(rows.iter().map(|r| r.study_id.as_deref())),
        strings(rows.iter().map(|r| r.subject_id.as_deref())),
        strings(rows.iter().map(|r| Some(r.split.name()))),
        strings(rows.iter().map(|r| Some(r.report_raw.as_str()))),
        strings(rows.iter().map(|r| Some(r.report.as_str()))),
        Arc::new(ids.finish()),
        Arc::new(n_views.finish()),
        binaries(rows.iter().map(|r| view(r, 0).map(|v| v.bytes.as_slice()))),
        binaries(rows.iter().map(|r| view(r, 1).map(|v| v.bytes.as_slice()))),
        u32s(rows.iter().map(|r| view(r, 0).map(|v| v.width))),
        u32s(rows.iter().map(|r| view(r, 0).map(|v| v.height))),
        u32s(rows.iter().map(|r| view(r, 1).map(|v| v.width))),
        u32s(rows.iter().map(|r| view(r, 1).map(|v| v.height))),
        strings(rows.iter().map(|r| Some(r.views.format))),
        Arc::new(neg_index.finish()),
        Arc::new(neg_score.finish()),
        strings(rows.iter().map(|r| r.neg_report_raw.as_deref())),
    ];
    RecordBatch::try_new(schema(), columns)
}

/// Writes `rows` to `path` atomically (temp file in the same directory, fsync, rename) and
/// returns the file's size and sha256.
pub fn write_shard(
    path: &Path,
    rows: &[Row],
    row_group_rows: usize,
) -> Result<(u64, String), PrepareError> {
    let pq = |e: &dyn std::fmt::Display| PrepareError::Parquet {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let write_err = |source| PrepareError::Write {
        path: path.to_path_buf(),
        source,
    };
    let batch = to_batch(rows).map_err(|e| pq(&e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(row_group_rows.max(1)))
        .build();
    let file = File::create(&tmp).map_err(write_err)?;
    let mut writer = ArrowWriter::try_new(file, schema(), Some(props)).map_err(|e| pq(&e))?;
    writer.write(&batch).map_err(|e| pq(&e))?;
    let file = writer.into_inner().map_err(|e| pq(&e))?;
    file.sync_all().map_err(write_err)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(write_err)?;
    let bytes = std::fs::metadata(path).map_err(write_err)?.len();
    Ok((bytes, super::manifest::sha256_file(path)?))
}

fn parquet_error(path: &Path, e: &dyn std::fmt::Display) -> PrepareError {
    PrepareError::Parquet {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Opens a shard for reading (shared by [`read_shard`] and [`row_groups`]).
fn open_reader(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>, PrepareError> {
    let file = File::open(path).map_err(|source| PrepareError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| parquet_error(path, &e))
}

/// Reads a whole shard back as record batches (checking that its schema is ours).
pub fn read_shard(path: &Path) -> Result<Vec<RecordBatch>, PrepareError> {
    let pq = |e: &dyn std::fmt::Display| parquet_error(path, e);
    let builder = open_reader(path)?;
    if builder.schema().fields() != schema().fields() {
        return Err(pq(&"schema differs from the prepared-format schema"));
    }
    builder
        .build()
        .map_err(|e| pq(&e))?
        .map(|b| b.map_err(|e| pq(&e)))
        .collect()
}

/// Row groups and their row counts of a shard (for checks of the random-access layout).
pub fn row_groups(path: &Path) -> Result<Vec<i64>, PrepareError> {
    Ok(open_reader(path)?
        .metadata()
        .row_groups()
        .iter()
        .map(|g| g.num_rows())
        .collect())
}

/// A column of a batch by name, downcast; `None` when absent or of another type.
pub fn column<'a, T: Array + 'static>(batch: &'a RecordBatch, name: &str) -> Option<&'a T> {
    batch.column_by_name(name)?.as_any().downcast_ref::<T>()
}
