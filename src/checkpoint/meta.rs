//! What a checkpoint records besides tensors: the trainer state (`trainer.json`) and the
//! fingerprint of the configuration keys that change the mathematics of a run.
//!
//! No RNG state is stored: every random draw is derived from (seed, global step, sample index)
//! (SPEC §5), so the step counter and the loader cursor are all a resumed run needs to replay
//! the uninterrupted one bit for bit. The cursor counts *global* batches, so it means the same
//! thing on any number of ranks.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::config::Config;
use crate::data::sampler::Cursor;

/// Version of the on-disk layout; bumped on any incompatible change. Version 2 stores the
/// trainer's state once (`state`); checkpoints of version 1 are refused with a clear error.
pub const FORMAT_VERSION: u32 = 2;

/// Why a checkpoint was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SaveReason {
    /// `checkpoint.every_steps`.
    Steps,
    /// `checkpoint.every_minutes` (rank 0's clock).
    Minutes,
    /// End of an epoch (`checkpoint.every_epoch`).
    EpochEnd,
    /// SIGUSR1 / SIGTERM / SIGINT.
    Signal,
    /// The run finished.
    Final,
}

/// Where a training run stands, besides its tensors: everything a resumed run needs to continue
/// the uninterrupted one (the trainer's state, `trainer.json`'s `state`). Same meaning on every
/// rank and on any number of ranks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainState {
    /// 1-based epoch in progress (the λ schedule and StepLR read it). After the last step of an
    /// epoch it still names that epoch until its validation is done.
    pub epoch: u64,
    /// Optimizer steps completed.
    pub step: u64,
    /// Position of the data loader: global batches of `cursor.epoch` consumed by completed steps.
    pub cursor: Cursor,
    /// Best validation score so far (`train.monitor_metric`, as rank 0 computed it).
    pub best_metric: Option<f64>,
    /// The epoch that reached it (its model is `RUN/best/`).
    pub best_epoch: Option<u64>,
    /// Validations since the last improvement (early stopping).
    pub epochs_without_improvement: usize,
    /// Current learning rate of each optimizer group, in group order (visual extractor,
    /// encoder–decoder).
    pub lrs: Vec<f64>,
}

impl TrainState {
    /// The state before the first step: epoch 1, nothing consumed, the configured learning rates.
    pub fn fresh(cfg: &Config) -> TrainState {
        TrainState {
            epoch: 1,
            step: 0,
            cursor: Cursor {
                epoch: 1,
                batches_consumed: 0,
            },
            best_metric: None,
            best_epoch: None,
            epochs_without_improvement: 0,
            lrs: vec![cfg.train.lr_ve, cfg.train.lr_ed],
        }
    }
}

/// The content of `trainer.json`: the trainer's [`TrainState`] plus what the checkpoint manager
/// needs to judge the directory (format, world, configuration fingerprint, why it was written).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainerMeta {
    /// [`FORMAT_VERSION`] of the writer.
    pub format_version: u32,
    /// What triggered the save.
    pub reason: SaveReason,
    /// Ranks that wrote this checkpoint (informational: resume works on any number).
    pub world_size: usize,
    /// [`config_hash`] of the run's configuration.
    pub config_hash: String,
    /// Where the run stands.
    pub state: TrainState,
    /// Free-form additions of the writer (kept verbatim across resumes).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// Keys that may differ between a checkpoint's config and the resuming run's without changing
/// what is computed. A key matches an entry when it equals it or lies below it (`dist` covers
/// `dist.timeout_s`). Everything else is part of the fingerprint. Keep docs/resume.md in step.
pub const FREE_KEYS: &[&str] = &[
    "data.num_workers",
    "data.prefetch",
    "data.cache_mb",
    "data.prepared",
    "train.feature_cache_mb",
    "train.epochs",
    "eval.batch_size",
    "checkpoint",
    "dist",
    "log",
];

/// Keys added after runs were already being checkpointed, with the value every earlier version
/// computed with. At that value a key is left out of the fingerprint, so a run checkpointed
/// before the key existed still resumes; any other value is part of it.
pub const LATER_KEYS: &[(&str, &str)] = &[
    ("data.augment", "true"),
    ("model.freeze_visual_extractor", "false"),
];

/// True when `key` (dotted) may change on resume.
pub fn is_free_key(key: &str) -> bool {
    FREE_KEYS.iter().any(|f| {
        key == *f
            || key
                .strip_prefix(f)
                .is_some_and(|rest| rest.starts_with('.'))
    })
}

/// Every leaf of the configuration as `dotted.key → TOML text`, sorted by key, without the
/// free keys. This is what the fingerprint covers and what a mismatch report compares.
pub fn math_keys(cfg: &Config) -> BTreeMap<String, String> {
    let value = toml::Value::try_from(cfg).expect("a Config always converts to TOML");
    let mut out = BTreeMap::new();
    flatten("", &value, &mut out);
    out.retain(|k, v| {
        let later_default = LATER_KEYS.iter().any(|(key, value)| k == key && v == value);
        !is_free_key(k) && !later_default
    });
    out
}

fn flatten(prefix: &str, value: &toml::Value, out: &mut BTreeMap<String, String>) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        leaf => {
            out.insert(prefix.to_string(), leaf.to_string());
        }
    }
}

/// Hex SHA-256 over the sorted `key=value` lines of [`math_keys`]: equal for two configs
/// exactly when they train the same mathematics.
pub fn config_hash(cfg: &Config) -> String {
    let text: String = math_keys(cfg)
        .iter()
        .map(|(k, v)| format!("{k}={v}\n"))
        .collect();
    crate::fsutil::sha256_bytes(text.as_bytes())
}

/// Keys whose values differ between two configurations (free keys excluded), as
/// `key: old → new` lines for an error message.
pub fn math_diff(old: &Config, new: &Config) -> Vec<String> {
    let (a, b) = (math_keys(old), math_keys(new));
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| {
            let show = |m: &BTreeMap<String, String>| {
                m.get(k).cloned().unwrap_or_else(|| "(unset)".into())
            };
            format!("{k}: {} → {}", show(&a), show(&b))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(overrides: &[&str]) -> Config {
        let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        Config::from_toml_str("", std::path::Path::new("<test>"), &o).unwrap()
    }

    #[test]
    fn free_keys_do_not_change_the_hash() {
        let base = config_hash(&cfg(&[]));
        for o in [
            "data.num_workers=7",
            "data.cache_mb=1",
            "data.prepared=/elsewhere",
            "train.epochs=3",
            "checkpoint.keep_last=9",
            "dist.timeout_s=5.0",
            "dist.backend=\"mpi\"",
            "log.every_steps=1",
            "train.feature_cache_mb=0",
        ] {
            assert_eq!(config_hash(&cfg(&[o])), base, "{o} must be free");
        }
    }

    #[test]
    fn math_keys_change_the_hash_and_are_named() {
        let base = cfg(&[]);
        for (o, key) in [
            ("train.lr_ed=0.1", "train.lr_ed"),
            ("train.batch_size=8", "train.batch_size"),
            ("model.dropout=0.0", "model.dropout"),
            ("ithn.negatives=\"ascent\"", "ithn.negatives"),
            ("train.seed=1", "train.seed"),
            ("data.image_size=64", "data.image_size"),
            ("data.augment=false", "data.augment"),
            (
                "model.freeze_visual_extractor=true",
                "model.freeze_visual_extractor",
            ),
        ] {
            let changed = cfg(&[o]);
            assert_ne!(
                config_hash(&changed),
                config_hash(&base),
                "{o} must change the hash"
            );
            let diff = math_diff(&base, &changed);
            assert_eq!(diff.len(), 1, "{diff:?}");
            assert!(diff[0].starts_with(key), "{diff:?}");
        }
    }

    /// A run checkpointed before a key existed hashed a config without it: at the value it
    /// computed with, the key stays out of the fingerprint (so that hash still matches).
    #[test]
    fn later_keys_at_their_old_value_are_not_fingerprinted() {
        let keys = math_keys(&cfg(&[]));
        for (key, old) in LATER_KEYS {
            assert!(!keys.contains_key(*key), "{key} at its default");
            let flipped = if *old == "true" { "false" } else { "true" };
            let changed = math_keys(&cfg(&[&format!("{key}={flipped}")]));
            assert_eq!(changed.get(*key).map(String::as_str), Some(flipped));
            assert!(cfg(&[]).to_toml().contains(key.rsplit('.').next().unwrap()));
        }
    }

    #[test]
    fn free_key_matching_is_by_whole_segments() {
        assert!(is_free_key("dist"));
        assert!(is_free_key("dist.timeout_s"));
        assert!(!is_free_key("distance"));
        assert!(!is_free_key("data.num_workers_extra"));
        assert!(is_free_key("data.num_workers"));
    }
}
