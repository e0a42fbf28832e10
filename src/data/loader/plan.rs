//! The shard plan: which Parquet files hold a split, in which row order, and whether they are the
//! files `prepare` wrote. Rank 0 reads `manifest.json` (with `prepare`'s own reader: one parser
//! and one set of checks for the format), verifies the split's shards' sha256, and
//! broadcasts the resulting plan (or its error) so that every rank reads the same files in the
//! same order and no rank waits forever when the coordinator finds a problem.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::LoaderError;
use crate::data::prepare::manifest::{read_manifest, sha256_file, ShardEntry, MANIFEST_FILE};
use crate::data::prepare::Split;
use crate::dist::world::World;

/// What every rank agrees to read for one split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardPlan {
    pub dir: PathBuf,
    pub split: Split,
    /// Shards sorted by `first_index`; together they cover rows `0..rows` without gaps.
    pub shards: Vec<ShardEntry>,
    pub rows: u64,
}

impl ShardPlan {
    /// Read the manifest of `dir` (through `prepare`'s reader, which checks the format version
    /// and that each split's shards are contiguous from row 0) and keep the shards of `split`.
    /// No checksum work.
    pub fn from_manifest(dir: &Path, split: Split) -> Result<ShardPlan, LoaderError> {
        let manifest = read_manifest(dir)?;
        let bad = |reason: String| LoaderError::Manifest {
            path: dir.join(MANIFEST_FILE),
            reason,
        };
        let shards: Vec<ShardEntry> = manifest.shards_of(split).cloned().collect();
        if shards.is_empty() {
            return Err(bad(format!("no shard of split {:?}", split.name())));
        }
        Ok(ShardPlan {
            dir: dir.to_path_buf(),
            split,
            rows: shards.iter().map(|s| s.rows).sum(),
            shards,
        })
    }

    pub fn shard_path(&self, i: usize) -> PathBuf {
        self.dir.join(&self.shards[i].file)
    }

    /// Compare every shard of the split with its manifest sha256 (only this split's shards:
    /// a rank opening `val` should not hash the whole `train` split again).
    pub fn verify_checksums(&self) -> Result<(), LoaderError> {
        for (i, s) in self.shards.iter().enumerate() {
            let path = self.shard_path(i);
            let actual = sha256_file(&path)?;
            if !actual.eq_ignore_ascii_case(&s.sha256) {
                return Err(LoaderError::Checksum {
                    path,
                    expected: s.sha256.clone(),
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
        split: Split,
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
