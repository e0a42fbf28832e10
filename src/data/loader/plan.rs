//! The shard plan: which Parquet files hold a split, in which row order, and whether they are the
//! files `prepare` wrote. Rank 0 reads `manifest.json`, verifies every shard's sha256, and
//! broadcasts the resulting plan (or its error) so that every rank reads the same files in the
//! same order and no rank waits forever when the coordinator finds a problem.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::LoaderError;
use crate::dist::world::World;

/// One shard of the split as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardEntry {
    /// File name relative to the prepared directory.
    #[serde(alias = "path", alias = "name")]
    pub file: String,
    pub split: String,
    /// Split-wide row number (`index` column) of the shard's first row.
    #[serde(default)]
    pub first_index: u64,
    pub rows: u64,
    #[serde(default)]
    pub sha256: Option<String>,
}

/// What every rank agrees to read for one split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardPlan {
    pub dir: PathBuf,
    pub split: String,
    /// Shards sorted by `first_index`; together they cover rows `0..rows` without gaps.
    pub shards: Vec<ShardEntry>,
    pub rows: u64,
}

impl ShardPlan {
    /// Read the manifest of `dir` and keep the shards of `split` (no checksum work).
    pub fn from_manifest(dir: &Path, split: &str) -> Result<ShardPlan, LoaderError> {
        let path = dir.join("manifest.json");
        let text = std::fs::read_to_string(&path).map_err(|source| LoaderError::Io {
            path: path.clone(),
            source,
        })?;
        let bad = |reason: String| LoaderError::Manifest {
            path: path.clone(),
            reason,
        };
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let list = value
            .get("shards")
            .cloned()
            .ok_or_else(|| bad("no `shards` list".into()))?;
        let all: Vec<ShardEntry> =
            serde_json::from_value(list).map_err(|e| bad(format!("shards: {e}")))?;
        let mut shards: Vec<ShardEntry> = all.into_iter().filter(|s| s.split == split).collect();
        if shards.is_empty() {
            return Err(bad(format!("no shard of split {split:?}")));
        }
        shards.sort_by_key(|s| s.first_index);
        let mut next = 0;
        for s in &shards {
            if s.first_index != next {
                return Err(bad(format!(
                    "shard {} starts at row {} but the previous shards end at {next}",
                    s.file, s.first_index
                )));
            }
            if s.file.contains("..") || Path::new(&s.file).is_absolute() {
                return Err(bad(format!("shard path {:?} leaves the directory", s.file)));
            }
            next += s.rows;
        }
        Ok(ShardPlan {
            dir: dir.to_path_buf(),
            split: split.to_string(),
            shards,
            rows: next,
        })
    }

    pub fn shard_path(&self, i: usize) -> PathBuf {
        self.dir.join(&self.shards[i].file)
    }

    /// Compare every shard with its manifest sha256 (shards without one are refused: an
    /// unverifiable file is exactly what this check exists to catch).
    pub fn verify_checksums(&self) -> Result<(), LoaderError> {
        for (i, s) in self.shards.iter().enumerate() {
            let path = self.shard_path(i);
            let expected = s.sha256.clone().ok_or_else(|| LoaderError::Manifest {
                path: self.dir.join("manifest.json"),
                reason: format!("shard {} has no sha256", s.file),
            })?;
            let actual = sha256_file(&path)?;
            if !actual.eq_ignore_ascii_case(&expected) {
                return Err(LoaderError::Checksum {
                    path,
                    expected,
                    actual,
                });
            }
        }
        Ok(())
    }

    /// Rank 0 builds (and, with `verify`, checks) the plan; every rank receives it, or the
    /// coordinator's error message, so that all ranks fail together.
    pub fn coordinated(
        world: &World,
        dir: &Path,
        split: &str,
        verify: bool,
    ) -> Result<ShardPlan, LoaderError> {
        let mut bytes = Vec::new();
        if world.is_root() {
            let outcome = ShardPlan::from_manifest(dir, split).and_then(|plan| {
                if verify {
                    plan.verify_checksums()?;
                }
                Ok(plan)
            });
            let msg: Result<ShardPlan, String> = outcome.map_err(|e| e.to_string());
            bytes = serde_json::to_vec(&msg).expect("a plan always serialises");
        }
        world.broadcast_bytes(0, &mut bytes);
        let msg: Result<ShardPlan, String> =
            serde_json::from_slice(&bytes).map_err(|e| LoaderError::Coordinator {
                rank: world.rank,
                reason: format!("undecodable shard plan: {e}"),
            })?;
        msg.map_err(|reason| LoaderError::Coordinator {
            rank: world.rank,
            reason,
        })
    }
}

pub fn sha256_file(path: &Path) -> Result<String, LoaderError> {
    let io = |source| LoaderError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}
