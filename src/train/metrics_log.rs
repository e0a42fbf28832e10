//! `RUN/metrics.jsonl`: one JSON object per line (`kind` = train / val / test), written by rank 0
//! and read by `ithn-dist plot`, the tests and people. A resumed run rewinds it so that it reads
//! like one uninterrupted run.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::step::LossTerms;
use super::trainer::TrainError;
use crate::checkpoint::TrainState;
use crate::config::LrGroup;
use crate::dataset::Split;
use crate::eval::metrics::Scores;
use crate::run_dir::RunDir;

/// Appends JSON lines to `RUN/metrics.jsonl` (rank 0 only; an append-only log, flushed per line).
pub struct MetricsLog {
    file: Option<std::fs::File>,
    path: PathBuf,
}

impl MetricsLog {
    pub fn open(run: &RunDir, enabled: bool) -> Result<MetricsLog, TrainError> {
        let path = run.metrics();
        let file = if enabled {
            Some(append_to(&path)?)
        } else {
            None
        };
        Ok(MetricsLog { file, path })
    }

    /// On resume from the checkpoint of `step`: drops what the resumed run will redo, so that
    /// nothing appears twice — train records of later steps, and val/test records of `step` or
    /// later (a checkpoint at an epoch end is written before that epoch's validation) — and a
    /// torn last line (a kill in the middle of a write). Rewritten atomically, then appended to.
    pub fn rewind(&mut self, step: u64) -> Result<(), TrainError> {
        if self.file.is_none() {
            return Ok(());
        }
        let io = |source| TrainError::Io {
            path: self.path.clone(),
            source,
        };
        let text = std::fs::read_to_string(&self.path).map_err(io)?;
        let kept: String = text
            .lines()
            .filter(|l| {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(l) else {
                    return false;
                };
                let train = v.get("kind").and_then(|k| k.as_str()) == Some("train");
                v.get("step")
                    .and_then(|s| s.as_u64())
                    .is_some_and(|s| s < step || (train && s == step))
            })
            .flat_map(|l| [l, "\n"])
            .collect();
        if kept.len() != text.len() {
            crate::fsutil::write_atomic(&self.path, kept.as_bytes()).map_err(|e| io(e.source))?;
            self.file = Some(append_to(&self.path)?);
        }
        Ok(())
    }

    pub fn write(&mut self, line: &str) -> Result<(), TrainError> {
        if let Some(f) = &mut self.file {
            writeln!(f, "{line}")
                .and_then(|_| f.flush())
                .map_err(|source| TrainError::Io {
                    path: self.path.clone(),
                    source,
                })?;
        }
        Ok(())
    }
}

/// Opens (creating) `path` for appending.
fn append_to(path: &Path) -> Result<std::fs::File, TrainError> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| TrainError::Io {
            path: path.to_path_buf(),
            source,
        })
}

/// A JSON object with its keys in the given order (serde_json's own map sorts them, and
/// readers of metrics.jsonl find `kind` first).
pub fn ordered_json(pairs: &[(&str, serde_json::Value)]) -> String {
    let body: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}:{v}", serde_json::Value::from(*k)))
        .collect();
    format!("{{{}}}", body.join(","))
}

/// The JSON line of one training step.
pub fn train_record(state: &TrainState, t: &LossTerms, lam: f64, secs: f64) -> String {
    let secs = secs.max(1e-9);
    ordered_json(&[
        ("kind", "train".into()),
        ("epoch", state.epoch.into()),
        ("step", state.step.into()),
        ("loss", t.loss.into()),
        ("lm", t.lm.into()),
        ("l_cp", t.l_cp.into()),
        ("l_cs", t.l_cs.into()),
        (
            LrGroup::VisualExtractor.key(),
            state.lrs[LrGroup::VisualExtractor.index()].into(),
        ),
        (
            LrGroup::EncoderDecoder.key(),
            state.lrs[LrGroup::EncoderDecoder.index()].into(),
        ),
        ("lambda", lam.into()),
        ("samples_per_s", (t.samples / secs).into()),
        ("tokens_per_s", (t.tokens / secs).into()),
    ])
}

/// The JSON line of a val/test evaluation: kind, epoch, step, then the scores in
/// pycocoevalcap's order.
pub fn eval_record(split: Split, epoch: u64, step: u64, scores: &Scores) -> String {
    let mut pairs: Vec<(&str, serde_json::Value)> = vec![
        ("kind", split.name().into()),
        ("epoch", epoch.into()),
        ("step", step.into()),
    ];
    pairs.extend(scores.entries().into_iter().map(|(k, v)| (k, v.into())));
    ordered_json(&pairs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn rewind_drops_later_steps_and_a_torn_line_and_keeps_appending() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        std::fs::write(
            &path,
            concat!(
                "{\"kind\":\"train\",\"epoch\":1,\"step\":1}\n",
                "{\"kind\":\"train\",\"epoch\":1,\"step\":2}\n",
                "{\"kind\":\"val\",\"epoch\":1,\"step\":2}\n",
                "{\"kind\":\"train\",\"epoch\":2,\"step\":3}\n",
                "{\"kind\":\"train\",\"epoch\":2,\"step\":4}\n",
                "{\"kind\":\"val\",\"epoch\":2,\"step\":4}\n",
                "{\"kind\":\"train\",\"ep",
            ),
        )
        .unwrap();
        let mut log = MetricsLog::open(&RunDir::new(dir.path()), true).unwrap();
        // Resuming from the epoch-end checkpoint of step 4 (written before validation).
        log.rewind(4).unwrap();
        log.write("{\"kind\":\"val\",\"epoch\":2,\"step\":4}")
            .unwrap();
        let steps: Vec<(String, u64)> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (
                    v["kind"].as_str().unwrap().into(),
                    v["step"].as_u64().unwrap(),
                )
            })
            .collect();
        let want = [
            ("train", 1),
            ("train", 2),
            ("val", 2),
            ("train", 3),
            ("train", 4),
            ("val", 4),
        ];
        let want: Vec<(String, u64)> = want.iter().map(|(k, s)| (k.to_string(), *s)).collect();
        assert_eq!(steps, want);
        // A log that is disabled (ranks other than 0) is never touched.
        let mut off = MetricsLog::open(&RunDir::new(dir.path()), false).unwrap();
        off.rewind(0).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 6);
    }

    #[test]
    fn train_record_has_exactly_the_documented_keys() {
        let cfg = Config::default();
        let mut s = TrainState::fresh(&cfg);
        s.step = 3;
        let t = LossTerms {
            loss: 1.0,
            lm: 2.0,
            l_cp: 3.0,
            l_cs: 4.0,
            samples: 16.0,
            tokens: 160.0,
            times: Default::default(),
        };
        let line = train_record(&s, &t, 0.99, 2.0);
        assert!(
            line.starts_with(r#"{"kind":"train","epoch":1,"step":3,"loss":1.0,"#),
            "{line}"
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        let mut want = vec![
            "kind",
            "epoch",
            "step",
            "loss",
            "lm",
            "l_cp",
            "l_cs",
            "lr_ve",
            "lr_ed",
            "lambda",
            "samples_per_s",
            "tokens_per_s",
        ];
        let mut got = keys.clone();
        want.sort();
        got.sort();
        assert_eq!(got, want);
        assert_eq!(v["samples_per_s"], 8.0);
        assert_eq!(v["lr_ed"], 5e-4);
    }
}
