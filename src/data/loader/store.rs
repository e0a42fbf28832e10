//! Reading prepared shards: the small per-row metadata of the whole split is held in memory
//! (token ids, negatives, view counts — needed for padding to the *global* batch and for
//! finding negatives), while image bytes are read per row group on demand through a cache
//! bounded in bytes (`data.cache_mb`), so a rank only ever reads the row groups it needs.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, RecordBatchReader};
use arrow::compute::{cast, concat_batches};
use arrow::datatypes::{DataType, Int64Type, UInt32Type, UInt64Type, UInt8Type};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::ProjectionMask;

use super::plan::ShardPlan;
use super::LoaderError;
use crate::data::image::Channels;

/// Columns read for every row of the split at start-up.
const META_COLUMNS: [&str; 4] = ["index", "ids", "n_views", "neg_index"];
/// Columns read per row group when images are needed.
const IMAGE_COLUMNS: [&str; 8] = [
    "id",
    "pixel_format",
    "image_0",
    "image_1",
    "width_0",
    "height_0",
    "width_1",
    "height_1",
];

/// Per-row metadata of the whole split, indexed by split row number.
#[derive(Debug, Default)]
pub(crate) struct Meta {
    /// Token ids of every row, concatenated; row `i` is `tokens[offsets[i]..offsets[i + 1]]`.
    pub tokens: Vec<u32>,
    pub offsets: Vec<usize>,
    /// `neg_index` per row (None: the row has no mined negative, or the split has none).
    pub neg: Vec<Option<u64>>,
    pub n_views: Vec<u8>,
}

impl Meta {
    pub fn rows(&self) -> usize {
        self.n_views.len()
    }
    pub fn ids(&self, row: u64) -> &[u32] {
        let r = row as usize;
        &self.tokens[self.offsets[r]..self.offsets[r + 1]]
    }
}

/// How an image cell is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PixelFormat {
    /// JPEG or PNG bytes.
    Encoded,
    Raw(Channels),
}

/// One image cell of one row.
pub(crate) struct Cell<'a> {
    pub bytes: &'a [u8],
    pub width: u32,
    pub height: u32,
    pub format: PixelFormat,
}

/// The image columns of one row group, cast to canonical types.
pub(crate) struct RowGroup {
    path: PathBuf,
    first: u64,
    batch: RecordBatch,
}

impl RowGroup {
    fn col(&self, name: &str) -> &ArrayRef {
        // Presence was checked when the row group was read.
        self.batch.column_by_name(name).expect("checked at read")
    }

    pub fn id(&self, row: u64) -> String {
        self.col("id")
            .as_string::<i32>()
            .value((row - self.first) as usize)
            .to_string()
    }

    /// Image `view` (0 or 1) of split row `row`.
    pub fn cell(&self, row: u64, view: usize) -> Result<Cell<'_>, LoaderError> {
        let r = (row - self.first) as usize;
        let bad = |reason: String| LoaderError::Row {
            path: self.path.clone(),
            row,
            reason,
        };
        let images = self.col(&format!("image_{view}")).as_binary::<i32>();
        if images.is_null(r) {
            return Err(bad(format!("image_{view} is null")));
        }
        let dim = |name: String| -> Result<u32, LoaderError> {
            let a = self.col(&name).as_primitive::<UInt32Type>();
            if a.is_null(r) {
                return Err(bad(format!("{name} is null")));
            }
            Ok(a.value(r))
        };
        let format = match self.col("pixel_format").as_string::<i32>().value(r) {
            "jpeg" | "png" => PixelFormat::Encoded,
            "raw_rgb8" => PixelFormat::Raw(Channels::Rgb),
            "raw_gray8" => PixelFormat::Raw(Channels::Gray),
            other => return Err(bad(format!("unknown pixel_format {other:?}"))),
        };
        Ok(Cell {
            bytes: images.value(r),
            width: dim(format!("width_{view}"))?,
            height: dim(format!("height_{view}"))?,
            format,
        })
    }
}

struct Shard {
    path: PathBuf,
    meta: ArrowReaderMetadata,
    /// Split row number of each row group's first row, plus the end.
    rg_starts: Vec<u64>,
}

/// Row groups in memory, least recently used evicted first once over the byte bound.
#[derive(Default)]
struct Cache {
    map: HashMap<(usize, usize), Arc<RowGroup>>,
    order: VecDeque<(usize, usize)>,
    bytes: usize,
}

pub(crate) struct Store {
    shards: Vec<Shard>,
    cache: Mutex<Cache>,
    cache_limit: usize,
}

impl Store {
    /// Open every shard's footer and read the metadata columns of the whole split.
    pub fn open(plan: &ShardPlan, cache_mb: usize) -> Result<(Store, Meta), LoaderError> {
        let mut shards = Vec::with_capacity(plan.shards.len());
        let mut meta = Meta {
            offsets: vec![0],
            ..Meta::default()
        };
        let mut negs = Vec::new();
        for (i, entry) in plan.shards.iter().enumerate() {
            let path = plan.shard_path(i);
            let file = open(&path)?;
            let pq = |e: parquet::errors::ParquetError| LoaderError::Parquet {
                path: path.clone(),
                reason: e.to_string(),
            };
            let reader_meta =
                ArrowReaderMetadata::load(&file, ArrowReaderOptions::new()).map_err(pq)?;
            let mut rg_starts = vec![entry.first_index];
            for rg in reader_meta.metadata().row_groups() {
                let last = *rg_starts.last().expect("non-empty");
                rg_starts.push(last + rg.num_rows() as u64);
            }
            let shard = Shard {
                path: path.clone(),
                meta: reader_meta,
                rg_starts,
            };
            let batch = read(&shard, None, &META_COLUMNS, &["neg_index"])?;
            if batch.num_rows() as u64 != entry.rows {
                return Err(LoaderError::Row {
                    path,
                    row: entry.first_index,
                    reason: format!(
                        "shard has {} rows, manifest says {}",
                        batch.num_rows(),
                        entry.rows
                    ),
                });
            }
            append_meta(&shard, entry.first_index, &batch, &mut meta, &mut negs)?;
            shards.push(shard);
        }
        let rows = meta.rows() as u64;
        if let Some((row, n)) = negs
            .iter()
            .enumerate()
            .find_map(|(r, n)| n.filter(|&n| n >= rows).map(|n| (r, n)))
        {
            return Err(LoaderError::Row {
                path: plan.dir.clone(),
                row: row as u64,
                reason: format!("neg_index {n} is outside the split ({rows} rows)"),
            });
        }
        meta.neg = negs;
        let store = Store {
            shards,
            cache: Mutex::new(Cache::default()),
            cache_limit: cache_mb << 20,
        };
        Ok((store, meta))
    }

    /// (shard, row group) holding split row `row`.
    pub fn locate(&self, row: u64) -> (usize, usize) {
        let s = self
            .shards
            .partition_point(|sh| sh.rg_starts[0] <= row)
            .saturating_sub(1);
        let rg = self.shards[s].rg_starts.partition_point(|&st| st <= row) - 1;
        (s, rg)
    }

    /// The image columns of one row group, from the cache or the file.
    pub fn row_group(&self, key: (usize, usize)) -> Result<Arc<RowGroup>, LoaderError> {
        if let Some(hit) = self.lock().map.get(&key) {
            return Ok(hit.clone());
        }
        let shard = &self.shards[key.0];
        let batch = read(
            shard,
            Some(key.1),
            &IMAGE_COLUMNS,
            &["image_1", "width_1", "height_1"],
        )?;
        let rg = Arc::new(RowGroup {
            path: shard.path.clone(),
            first: shard.rg_starts[key.1],
            batch,
        });
        let size = rg.batch.get_array_memory_size();
        let mut cache = self.lock();
        if cache.map.insert(key, rg.clone()).is_none() {
            cache.order.push_back(key);
            cache.bytes += size;
        }
        // Evict the oldest, but always keep the entry just inserted.
        while cache.bytes > self.cache_limit && cache.order.len() > 1 {
            let old = cache.order.pop_front().expect("len > 1");
            if let Some(gone) = cache.map.remove(&old) {
                cache.bytes -= gone.batch.get_array_memory_size();
            }
        }
        Ok(rg)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        // A panic elsewhere cannot leave the cache inconsistent in a way that matters: at worst
        // the byte count is off until entries are evicted.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes held by the cache (for tests of the bound).
    #[cfg(test)]
    pub fn cached_bytes(&self) -> usize {
        self.lock().bytes
    }
}

fn open(path: &PathBuf) -> Result<File, LoaderError> {
    File::open(path).map_err(|source| LoaderError::Io {
        path: path.clone(),
        source,
    })
}

/// Read `columns` of one row group (or the whole shard) and cast them to canonical types;
/// `optional` columns may be missing (a null column of the right type is put in their place).
fn read(
    shard: &Shard,
    row_group: Option<usize>,
    columns: &[&str],
    optional: &[&str],
) -> Result<RecordBatch, LoaderError> {
    let pq = |e: String| LoaderError::Parquet {
        path: shard.path.clone(),
        reason: e,
    };
    let arrow_schema = shard.meta.schema().clone();
    for c in columns {
        if arrow_schema.field_with_name(c).is_err() && !optional.contains(c) {
            return Err(pq(format!("missing column {c:?}")));
        }
    }
    let present: Vec<&str> = columns
        .iter()
        .copied()
        .filter(|c| arrow_schema.field_with_name(c).is_ok())
        .collect();
    let mask = ProjectionMask::columns(shard.meta.parquet_schema(), present.iter().copied());
    let mut builder =
        ParquetRecordBatchReaderBuilder::new_with_metadata(open(&shard.path)?, shard.meta.clone())
            .with_projection(mask)
            .with_batch_size(64 * 1024);
    if let Some(rg) = row_group {
        builder = builder.with_row_groups(vec![rg]);
    }
    let reader = builder.build().map_err(|e| pq(e.to_string()))?;
    let schema = reader.schema();
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pq(e.to_string()))?;
    let batch = concat_batches(&schema, &batches).map_err(|e| pq(e.to_string()))?;
    canonical(&batch, columns).map_err(pq)
}

/// Cast the columns to the types the accessors expect (writers may pick Int64 for counts,
/// LargeBinary for images, ...).
fn canonical(batch: &RecordBatch, columns: &[&str]) -> Result<RecordBatch, String> {
    let mut fields = Vec::new();
    let mut arrays = Vec::new();
    for &name in columns {
        let want = match name {
            "index" | "neg_index" => DataType::UInt64,
            "ids" => DataType::new_list(DataType::Int64, true),
            "n_views" => DataType::UInt8,
            "id" | "pixel_format" => DataType::Utf8,
            "image_0" | "image_1" => DataType::Binary,
            _ => DataType::UInt32,
        };
        let array = match batch.column_by_name(name) {
            Some(a) => cast(a, &want).map_err(|e| format!("column {name:?}: {e}"))?,
            None => arrow::array::new_null_array(&want, batch.num_rows()),
        };
        fields.push(arrow::datatypes::Field::new(name, want, true));
        arrays.push(array);
    }
    let schema = Arc::new(arrow::datatypes::Schema::new(fields));
    RecordBatch::try_new(schema, arrays).map_err(|e| e.to_string())
}

fn append_meta(
    shard: &Shard,
    first: u64,
    batch: &RecordBatch,
    meta: &mut Meta,
    negs: &mut Vec<Option<u64>>,
) -> Result<(), LoaderError> {
    let bad = |row: u64, reason: String| LoaderError::Row {
        path: shard.path.clone(),
        row,
        reason,
    };
    let col = |n: &str| batch.column_by_name(n).expect("canonical");
    let index = col("index").as_primitive::<UInt64Type>();
    let ids = col("ids").as_list::<i32>();
    let n_views = col("n_views").as_primitive::<UInt8Type>();
    let neg = col("neg_index");
    for r in 0..batch.num_rows() {
        let row = first + r as u64;
        if index.is_null(r) || index.value(r) != row {
            return Err(bad(
                row,
                format!(
                    "index column says {:?}",
                    index.is_valid(r).then(|| index.value(r))
                ),
            ));
        }
        if ids.is_null(r) {
            return Err(bad(row, "ids is null".into()));
        }
        let list = ids.value(r);
        for &t in list.as_primitive::<Int64Type>().values() {
            let t = u32::try_from(t).map_err(|_| bad(row, format!("token id {t} out of range")))?;
            meta.tokens.push(t);
        }
        meta.offsets.push(meta.tokens.len());
        meta.n_views.push(if n_views.is_null(r) {
            1
        } else {
            n_views.value(r)
        });
        negs.push(
            neg.is_valid(r)
                .then(|| neg.as_primitive::<UInt64Type>().value(r)),
        );
    }
    Ok(())
}
