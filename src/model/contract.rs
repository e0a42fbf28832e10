//! Pairing checks: artifacts that must agree are compared before any work starts.
//!
//! Why it exists: a model is only meaningful on data prepared the way it was trained — the
//! same vocabulary (token ids name words: a vocabulary of the same size but other tokens
//! decodes every report into other words, silently), the same cleaner, at least as many
//! stored views as it reads, images at least as large as it crops. A run's configuration
//! makes the same claims about its prepared directory. Each mismatch stops the command with a
//! message that names both files and what differs, instead of a shape error deep inside
//! libtorch, a `<unk>`-ridden evaluation, or scores of another vocabulary.
//!
//! What is compared (issue 14):
//! - a model checkpoint (`config.toml`, `vocab.json`) against a prepared directory
//!   (`manifest.json`, `vocab.json`): vocabulary by content hash, dataset/cleaner, views,
//!   image size — in `evaluate`, and in `train --resume` for the checkpoint resumed from;
//! - a run configuration against a prepared directory: the same, plus `data.threshold`,
//!   `data.max_seq_length`, non-empty `val` and `test` splits and batches that fit — in `train`;
//! - a model against the images given to `generate`, and decoding options (beam width,
//!   length) against the model.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::data::prepare::manifest::{Manifest, MANIFEST_FILE};
use crate::data::prepare::{read_manifest, Split};
use crate::data::text::Vocab;
use crate::dist::World;
use crate::model::weights::{ModelCheckpoint, VocabInfo, CONFIG_FILE, VOCAB_FILE};

/// A pair of artifacts that do not fit, or a prepared directory that cannot serve a command.
#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    /// Two files disagree; both are named.
    #[error("{left} and {right} do not fit together: {what}")]
    Mismatch {
        left: String,
        right: String,
        what: String,
    },
    /// A prepared directory lacks what a command needs.
    #[error("{path}: {what}")]
    Data { path: PathBuf, what: String },
    /// An option does not fit the model it is applied to.
    #[error("{option} {value} does not fit {path}: {what}")]
    Option {
        option: String,
        value: String,
        path: PathBuf,
        what: String,
    },
}

/// The error every rank but 0 returns when rank 0's checks refused the inputs: rank 0 prints
/// the reason, `main` prints nothing for this one, so a launch of many ranks says it once.
#[derive(Debug, thiserror::Error)]
#[error("rank {rank}: rank 0 refused the inputs (its message says why)")]
pub struct RefusedOnRoot {
    pub rank: usize,
}

/// Runs `check` on rank 0 and shares the verdict with every rank (a collective: call it on
/// every rank). The inputs are the same files for every rank, so one rank's verdict is
/// everyone's; the others do not need to read them.
pub fn on_root(world: &World, check: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<()> {
    let result = if world.is_root() { check() } else { Ok(()) };
    let mut verdict = vec![u8::from(result.is_err())];
    world.broadcast_bytes(0, &mut verdict);
    match result {
        Err(e) => Err(e),
        Ok(()) if verdict.first() == Some(&1) => Err(RefusedOnRoot { rank: world.rank }.into()),
        Ok(()) => Ok(()),
    }
}

/// The content hash of a vocabulary: sha256 of its tokens in id order, one per line. Two
/// vocabularies with the same hash map every id to the same token, whatever file wrote them.
pub fn vocab_hash(tokens: &[String]) -> String {
    let mut h = Sha256::new();
    for t in tokens {
        h.update(t.as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

/// A prepared directory as the pairing checks see it.
#[derive(Debug, Clone)]
pub struct PreparedData {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub vocab: Vocab,
}

impl PreparedData {
    /// Reads `dir/manifest.json` (structural checks) and `dir/vocab.json`.
    pub fn open(dir: &Path) -> anyhow::Result<PreparedData> {
        let manifest = read_manifest(dir)?;
        let vocab = Vocab::load(&dir.join(&manifest.vocab.file))?;
        Ok(PreparedData {
            dir: dir.to_path_buf(),
            manifest,
            vocab,
        })
    }

    fn manifest_path(&self) -> String {
        self.dir.join(MANIFEST_FILE).display().to_string()
    }

    fn vocab_path(&self) -> String {
        self.dir
            .join(&self.manifest.vocab.file)
            .display()
            .to_string()
    }

    /// Rows of `split`.
    pub fn rows(&self, split: Split) -> u64 {
        self.manifest.counts.get(&split).copied().unwrap_or(0)
    }

    /// Refuses an empty split, saying what uses it and what to do.
    pub fn require_rows(&self, split: Split, needed_by: &str) -> Result<(), ContractError> {
        if self.rows(split) > 0 {
            return Ok(());
        }
        let skipped = self
            .manifest
            .skipped
            .iter()
            .filter(|s| s.split == Some(split))
            .count();
        let why = if skipped > 0 {
            format!("all {skipped} of its samples were skipped (see `skipped` in the manifest)")
        } else {
            "the source listed none".into()
        };
        Err(ContractError::Data {
            path: self.dir.join(MANIFEST_FILE),
            what: format!(
                "split {} is empty ({why}), but {needed_by} needs it; give the source {} samples and rerun prepare",
                split.name(),
                split.name()
            ),
        })
    }
}

fn mismatch(left: String, right: String, what: String) -> ContractError {
    ContractError::Mismatch { left, right, what }
}

/// The first id whose token differs, as `id N ("a" vs "b")`, for messages.
fn first_difference(a: &[String], b: &[String]) -> String {
    let none = "(none)".to_string();
    let i = a
        .iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    format!(
        "id {} is {:?} in one and {:?} in the other",
        i + 1,
        a.get(i).unwrap_or(&none),
        b.get(i).unwrap_or(&none)
    )
}

/// The model's vocabulary against the data's: same tokens in the same order.
fn check_vocab(
    model_vocab: &VocabInfo,
    model_vocab_path: String,
    data: &PreparedData,
) -> Result<(), ContractError> {
    let data_tokens = data.vocab.tokens();
    if model_vocab.tokens.is_empty() {
        return Err(mismatch(
            model_vocab_path,
            data.vocab_path(),
            format!(
                "the model's vocabulary lists no tokens (imported without --vocab; {} output classes), \
                 so its ids cannot be checked against the data's {} tokens; re-import it with --vocab",
                model_vocab.logit_dim,
                data_tokens.len()
            ),
        ));
    }
    if vocab_hash(&model_vocab.tokens) != vocab_hash(data_tokens) {
        return Err(mismatch(
            model_vocab_path,
            data.vocab_path(),
            format!(
                "different vocabularies ({} vs {} tokens, content hash {} vs {}; {}): \
                 the model's ids would decode into other words; prepare the data from the \
                 annotation (train list, dataset, threshold) the model was trained on",
                model_vocab.tokens.len(),
                data_tokens.len(),
                &vocab_hash(&model_vocab.tokens)[..12],
                &vocab_hash(data_tokens)[..12],
                first_difference(&model_vocab.tokens, data_tokens)
            ),
        ));
    }
    Ok(())
}

/// `data.dataset`, `data.views` and the image size of `cfg` against the prepared directory.
/// `crop` is the side the model sees; `resize` the shorter side the train transform resizes to
/// (None for evaluation, which resizes straight to `crop`).
fn check_shape(
    cfg: &Config,
    cfg_path: String,
    data: &PreparedData,
    resize: Option<usize>,
) -> Result<(), ContractError> {
    let m = &data.manifest;
    let err = |what: String| mismatch(cfg_path.clone(), data.manifest_path(), what);
    if cfg.data.dataset != m.dataset {
        return Err(err(format!(
            "data.dataset is {} but the data was prepared as {} (another report cleaner)",
            cfg.data.dataset.name(),
            m.dataset.name()
        )));
    }
    if cfg.data.views > m.preprocessing.views {
        return Err(err(format!(
            "data.views = {} but the data stores {} view(s) per study; prepare with --views {} \
             (studies with fewer images are then skipped) or use a {}-view model",
            cfg.data.views, m.preprocessing.views, cfg.data.views, m.preprocessing.views
        )));
    }
    let (need, key) = match resize {
        Some(r) => (r, "data.resize"),
        None => (cfg.data.image_size, "data.image_size"),
    };
    if let Some(stored) = m.preprocessing.image.resize {
        if (stored as usize) < need {
            return Err(err(format!(
                "{key} = {need} but the images were stored with their shorter side at {stored} px \
                 (prepare --resize {stored}); upscaling would feed the model blurred images: \
                 prepare with --resize {need} (or more), or lower {key}"
            )));
        }
    }
    Ok(())
}

/// `evaluate`: the checkpoint's vocabulary, dataset, views and image size against `data`,
/// and a non-empty `split`.
pub fn check_model_on_data(
    ckpt: &ModelCheckpoint,
    data: &PreparedData,
    split: Split,
) -> Result<(), ContractError> {
    check_vocab(
        &ckpt.vocab,
        ckpt.dir.join(VOCAB_FILE).display().to_string(),
        data,
    )?;
    check_shape(
        &ckpt.config,
        ckpt.dir.join(CONFIG_FILE).display().to_string(),
        data,
        None,
    )?;
    data.require_rows(split, &format!("evaluating --split {}", split.name()))
}

/// `train`: the run configuration against its prepared directory — dataset, views, image size,
/// vocabulary threshold, id-list length, the splits training reads, and a batch that fits.
pub fn check_config_on_data(
    cfg: &Config,
    cfg_path: &Path,
    data: &PreparedData,
) -> Result<(), ContractError> {
    let cfg_name = cfg_path.display().to_string();
    check_shape(cfg, cfg_name.clone(), data, Some(cfg.data.resize))?;
    let m = &data.manifest;
    let err = |what: String| mismatch(cfg_name.clone(), data.manifest_path(), what);
    if cfg.data.threshold != m.vocab.threshold {
        return Err(err(format!(
            "data.threshold = {} but the vocabulary was built with threshold {}; set \
             data.threshold = {} or prepare with --threshold {}",
            cfg.data.threshold, m.vocab.threshold, m.vocab.threshold, cfg.data.threshold
        )));
    }
    if cfg.data.max_seq_length != m.preprocessing.max_seq_length {
        return Err(err(format!(
            "data.max_seq_length = {} but the stored id lists were cut at {}; set \
             data.max_seq_length = {} or prepare with --max-seq-length {}",
            cfg.data.max_seq_length,
            m.preprocessing.max_seq_length,
            m.preprocessing.max_seq_length,
            cfg.data.max_seq_length
        )));
    }
    check_beam(
        cfg.eval.beam_size,
        "eval.beam_size",
        data.vocab.len() + 1,
        &data.dir.join(&m.vocab.file),
    )?;
    data.require_rows(Split::Train, "`train`")?;
    data.require_rows(
        Split::Val,
        "`train` (it validates on val every eval.every_epochs epochs: best model, early stopping)",
    )?;
    data.require_rows(Split::Test, "`train` (it scores test at the end)")?;
    let train_rows = data.rows(Split::Train) as usize;
    let micro = cfg.train.batch_size / cfg.train.accumulation_steps.max(1);
    if cfg.train.drop_last && micro > train_rows {
        return Err(err(format!(
            "train.drop_last = true and a batch of {micro} (train.batch_size / \
             train.accumulation_steps) is more than the {train_rows} train rows: every batch \
             would be dropped; lower train.batch_size or set train.drop_last = false"
        )));
    }
    Ok(())
}

/// `train --resume`: the vocabulary saved in the checkpoint resumed from against the data the
/// run reads now (`data.prepared` may change on resume; the vocabulary may not).
pub fn check_resume_on_data(checkpoint_dir: &Path, cfg: &Config) -> anyhow::Result<()> {
    let saved = checkpoint_dir.join(VOCAB_FILE);
    if !saved.is_file() {
        // Checkpoints written without a prepared vocabulary (drills): nothing to compare.
        return Ok(());
    }
    let data = PreparedData::open(&cfg.data.prepared)?;
    check_vocab(
        &VocabInfo::load(&saved)?,
        saved.display().to_string(),
        &data,
    )?;
    Ok(())
}

/// The id rule (an id names one sample, decided by `prepare`) for rows read back from `dir`:
/// directories written before `prepare` enforced it may repeat an id, which `score` refuses.
pub fn unique_ids<'a>(
    rows: impl IntoIterator<Item = (u64, &'a str)>,
    dir: &Path,
    split: Split,
) -> Result<(), ContractError> {
    let mut first: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
    for (row, id) in rows {
        if let Some(earlier) = first.insert(id, row) {
            return Err(ContractError::Data {
                path: dir.join(MANIFEST_FILE),
                what: format!(
                    "id {id:?} is in split {split} twice (rows {earlier} and {row}): this directory                      was prepared before duplicate ids were skipped; rerun prepare"
                ),
            });
        }
    }
    Ok(())
}

/// A beam width against the model's output classes (`logit_dim` = V + 1): the first step
/// chooses `beam` different tokens, so it cannot exceed them.
pub fn check_beam(
    beam: usize,
    option: &str,
    logit_dim: usize,
    vocab_path: &Path,
) -> Result<(), ContractError> {
    if beam == 0 || beam > logit_dim {
        return Err(ContractError::Option {
            option: option.into(),
            value: beam.to_string(),
            path: vocab_path.to_path_buf(),
            what: format!(
                "a beam width must be in 1..={logit_dim} (the model's output classes: {} tokens + BOS/EOS)",
                logit_dim.saturating_sub(1)
            ),
        });
    }
    Ok(())
}

/// `generate`: one image per view the model reads.
pub fn check_images_for_model(
    ckpt: &ModelCheckpoint,
    images: &[PathBuf],
) -> Result<(), ContractError> {
    let views = ckpt.config.data.views;
    if images.len() != views {
        let given: Vec<String> = images.iter().map(|p| p.display().to_string()).collect();
        return Err(ContractError::Option {
            option: "--image".into(),
            value: given.join(" --image "),
            path: ckpt.dir.join(CONFIG_FILE),
            what: format!(
                "the model takes {views} view(s) per study (data.views = {views}) but {} --image \
                 were given; give {}",
                images.len(),
                if views == 2 {
                    "the frontal then the lateral image"
                } else {
                    "one image"
                }
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocab_hash_depends_on_order_and_content_only() {
        let a = vec!["<unk>".to_string(), "a".into(), "b".into()];
        let b = vec!["<unk>".to_string(), "a".into(), "c".into()];
        assert_eq!(vocab_hash(&a), vocab_hash(&a.clone()));
        assert_ne!(vocab_hash(&a), vocab_hash(&b));
        // Concatenation ambiguity is excluded by the separator.
        let c = vec!["ab".to_string()];
        let d = vec!["a".to_string(), "b".into()];
        assert_ne!(vocab_hash(&c), vocab_hash(&d));
        assert_eq!(
            first_difference(&a, &b),
            "id 3 is \"b\" in one and \"c\" in the other"
        );
    }

    #[test]
    fn a_repeated_id_names_both_rows() {
        let dir = Path::new("prep");
        assert!(unique_ids([(0, "a"), (1, "b")], dir, Split::Test).is_ok());
        let e = unique_ids([(0, "a"), (1, "b"), (2, "a")], dir, Split::Test)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("prep/manifest.json: id \"a\" is in split test twice (rows 0 and 2)"),
            "{e}"
        );
    }

    #[test]
    fn beam_must_fit_the_output_classes() {
        let p = Path::new("ck/vocab.json");
        assert!(check_beam(3, "--beam", 761, p).is_ok());
        assert!(check_beam(761, "--beam", 761, p).is_ok());
        let e = check_beam(762, "--beam", 761, p).unwrap_err().to_string();
        assert!(
            e.starts_with("--beam 762 does not fit ck/vocab.json"),
            "{e}"
        );
        assert!(e.contains("1..=761"), "{e}");
        assert!(check_beam(0, "--beam", 761, p).is_err());
    }
}
