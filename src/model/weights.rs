//! Parameter registry, reference state_dict import/export and the on-disk "model checkpoint".
//!
//! Why a registry of our own rather than `nn::VarStore`: the reference state_dict has an order
//! that matters (optimizer order, bucket layout), int64 buffers (`num_batches_tracked`), tied
//! keys (`encoder_decoder.model.cmn.*` = `encoder_decoder.cmn.*`) and two optimizer groups.
//! `VarStore` keeps names in a `HashMap` and has no notion of aliases, so every module registers
//! its tensors here, in reference `state_dict()` order, and everything else derives from that.
//!
//! Guarantees: [`Registry::state_dict`] yields exactly the reference keys in reference order
//! (aliases resolved to their source tensor); [`Registry::load_state_dict`] is strict (missing,
//! unexpected, mis-shaped or inconsistent tied keys are errors naming the file and key);
//! files are written atomically (temp file in the same directory, fsync, rename).

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Display;
use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};

use crate::config::Config;

/// Errors of the model domain; each names the file and key it concerns.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `reason` is in words ([`safetensors_reason`]): tch's text repeats the path and gives
    /// the safetensors crate's variant name (`InvalidHeaderLength`, `IoError(Os { … })`).
    #[error("{path}: cannot read safetensors: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{path}: missing key {key:?}")]
    MissingKey { path: PathBuf, key: String },
    #[error("{path}: unexpected key {key:?} (not in the model's state_dict)")]
    UnexpectedKey { path: PathBuf, key: String },
    #[error("{path}: key {key:?} has shape {found:?}, the model expects {expected:?}")]
    Shape {
        path: PathBuf,
        key: String,
        expected: Vec<i64>,
        found: Vec<i64>,
    },
    #[error("{path}: tied key {key:?} differs from {source_key:?}")]
    Tied {
        path: PathBuf,
        key: String,
        source_key: String,
    },
    #[error("{path}: {msg}")]
    Invalid { path: PathBuf, msg: String },
    #[error("model configuration: {0}")]
    Config(String),
    #[error("torch: {0}")]
    Torch(#[from] tch::TchError),
}

/// What a registered tensor is in the reference module tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// A trainable parameter in optimizer group `group` (0 = visual extractor, 1 = the rest).
    Param { group: usize },
    /// A buffer (BatchNorm statistics, positional encodings): saved, never trained.
    Buffer,
    /// A second state_dict key for the tensor registered under `of` (a module registered twice).
    Alias { of: String },
}

/// One state_dict entry.
#[derive(Debug)]
pub struct Entry {
    pub name: String,
    pub tensor: Tensor,
    pub role: Role,
}

/// All tensors of a model, in reference state_dict order.
#[derive(Debug, Default)]
pub struct Registry {
    entries: Vec<Entry>,
}

/// A naming scope (like `nn::Path`): `root.sub("encoder").sub(0)` names `encoder.0.<leaf>`.
pub struct Scope<'a> {
    reg: &'a RefCell<Registry>,
    prefix: String,
    group: usize,
    device: Device,
}

impl<'a> Scope<'a> {
    pub fn root(reg: &'a RefCell<Registry>, device: Device) -> Self {
        Scope {
            reg,
            prefix: String::new(),
            // Everything outside the visual extractor (which sets its own group).
            group: crate::config::LrGroup::EncoderDecoder.index(),
            device,
        }
    }

    pub fn sub(&self, name: impl Display) -> Scope<'a> {
        Scope {
            reg: self.reg,
            prefix: self.name(&name.to_string()),
            group: self.group,
            device: self.device,
        }
    }

    /// Same scope, parameters registered below it go to optimizer group `group`.
    pub fn group(mut self, group: usize) -> Scope<'a> {
        self.group = group;
        self
    }

    pub fn device(&self) -> Device {
        self.device
    }

    fn name(&self, leaf: &str) -> String {
        if self.prefix.is_empty() {
            leaf.to_string()
        } else {
            format!("{}.{leaf}", self.prefix)
        }
    }

    /// Registers a trainable parameter; `init` is created on the CPU (so initialisation from a
    /// seed does not depend on the device) and moved to the scope's device.
    pub fn param(&self, leaf: &str, init: Tensor) -> Tensor {
        let t = init.to_device(self.device).detach().set_requires_grad(true);
        self.push(leaf, &t, Role::Param { group: self.group });
        t
    }

    pub fn buffer(&self, leaf: &str, init: Tensor) -> Tensor {
        let t = init.to_device(self.device).detach();
        self.push(leaf, &t, Role::Buffer);
        t
    }

    /// Registers `leaf` as a second name of the already registered full name `of`.
    pub fn alias(&self, leaf: &str, of: &str) {
        let reg = self.reg.borrow();
        let src = reg
            .entries
            .iter()
            .find(|e| e.name == of)
            .map(|e| e.tensor.shallow_clone());
        drop(reg);
        if let Some(t) = src {
            self.push(leaf, &t, Role::Alias { of: of.to_string() });
        }
    }

    fn push(&self, leaf: &str, t: &Tensor, role: Role) {
        self.reg.borrow_mut().entries.push(Entry {
            name: self.name(leaf),
            tensor: t.shallow_clone(),
            role,
        });
    }

    pub fn full_name(&self, leaf: &str) -> String {
        self.name(leaf)
    }
}

impl Registry {
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Trainable parameters in reference `named_parameters()` order with their optimizer group.
    pub fn parameters(&self) -> Vec<(String, Tensor, usize)> {
        self.entries
            .iter()
            .filter_map(|e| match e.role {
                Role::Param { group } => Some((e.name.clone(), e.tensor.shallow_clone(), group)),
                _ => None,
            })
            .collect()
    }

    /// Converts every floating-point parameter and buffer to `kind` in place (`set_data`, so the
    /// layers' handles and aliases, which share the tensor, see the change).
    pub fn cast_floating(&self, kind: Kind) {
        let _guard = tch::no_grad_guard();
        for e in &self.entries {
            if e.tensor.is_floating_point() && e.tensor.kind() != kind {
                let mut t = e.tensor.shallow_clone();
                t.set_data(&e.tensor.to_kind(kind));
            }
        }
    }

    /// The full reference state_dict: every key (aliases included) in reference order.
    pub fn state_dict(&self) -> Vec<(String, Tensor)> {
        self.entries
            .iter()
            .map(|e| (e.name.clone(), e.tensor.shallow_clone()))
            .collect()
    }

    /// Copies a state_dict (name → tensor) into the registered tensors, strictly.
    /// Tied keys may be absent; when present they must equal their source.
    pub fn load_map(&self, path: &Path, map: HashMap<String, Tensor>) -> Result<(), ModelError> {
        self.load_filtered(path, map, "")
    }

    /// Like [`Self::load_map`] but only for the entries whose name starts with `prefix`
    /// (e.g. ImageNet weights for `visual_extractor.`); every such entry must be present and
    /// the map must hold nothing else.
    pub fn load_filtered(
        &self,
        path: &Path,
        mut map: HashMap<String, Tensor>,
        prefix: &str,
    ) -> Result<(), ModelError> {
        let _guard = tch::no_grad_guard();
        for e in self.entries.iter().filter(|e| e.name.starts_with(prefix)) {
            let found = map.remove(&e.name);
            if let Role::Alias { of } = &e.role {
                if let Some(t) = found {
                    let t = t.to_device(e.tensor.device()).to_kind(e.tensor.kind());
                    if t.size() != e.tensor.size() || !t.equal(&e.tensor) {
                        return Err(ModelError::Tied {
                            path: path.into(),
                            key: e.name.clone(),
                            source_key: of.clone(),
                        });
                    }
                }
                continue;
            }
            let t = found.ok_or_else(|| ModelError::MissingKey {
                path: path.into(),
                key: e.name.clone(),
            })?;
            if t.size() != e.tensor.size() {
                return Err(ModelError::Shape {
                    path: path.into(),
                    key: e.name.clone(),
                    expected: e.tensor.size(),
                    found: t.size(),
                });
            }
            let mut dst = e.tensor.shallow_clone();
            dst.f_copy_(&t.to_kind(e.tensor.kind()))?;
        }
        if let Some(key) = map.into_keys().min() {
            return Err(ModelError::UnexpectedKey {
                path: path.into(),
                key,
            });
        }
        Ok(())
    }

    /// Loads a reference state_dict from a safetensors file (strict, see [`Self::load_map`]).
    pub fn load_safetensors(&self, path: &Path) -> Result<(), ModelError> {
        let map = read_safetensors(path)?;
        self.load_map(path, map)
    }

    /// Writes the full state_dict (reference names, reference order) atomically.
    pub fn save_safetensors(&self, path: &Path) -> Result<(), ModelError> {
        write_safetensors_atomic(path, &self.state_dict())
    }
}

/// Reads every tensor of a safetensors file onto the CPU. A floating tensor holding NaN or
/// ±Inf is an error naming the key: such weights decode garbage without any other sign.
pub fn read_safetensors(path: &Path) -> Result<HashMap<String, Tensor>, ModelError> {
    if !path.is_file() {
        return Err(ModelError::Io {
            path: path.into(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        });
    }
    let list = Tensor::read_safetensors(path).map_err(|e| ModelError::Read {
        path: path.into(),
        reason: safetensors_reason(&e.to_string(), path),
    })?;
    check_finite(path, &list)?;
    Ok(list.into_iter().collect())
}

/// Refuses tensors with non-finite values (the first such key, in name order).
pub fn check_finite(path: &Path, tensors: &[(String, Tensor)]) -> Result<(), ModelError> {
    let mut bad: Vec<(&str, i64)> = tensors
        .iter()
        .filter(|(_, t)| t.is_floating_point())
        .filter_map(|(n, t)| {
            let count = t.isfinite().logical_not().sum(Kind::Int64).int64_value(&[]);
            (count > 0).then_some((n.as_str(), count))
        })
        .collect();
    bad.sort_unstable();
    match bad.first() {
        None => Ok(()),
        Some((key, count)) => Err(ModelError::Invalid {
            path: path.into(),
            msg: format!(
                "tensor {key:?} holds {count} non-finite value(s) (NaN or Inf){}; these weights \
                 cannot produce meaningful output",
                if bad.len() > 1 {
                    format!(", and {} more tensors do", bad.len() - 1)
                } else {
                    String::new()
                }
            ),
        }),
    }
}

/// A CPU tensor as a safetensors view (copied to bytes on demand).
struct View<'a> {
    tensor: &'a Tensor,
    shape: Vec<usize>,
    dtype: safetensors::Dtype,
}

impl safetensors::View for View<'_> {
    fn dtype(&self) -> safetensors::Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        let mut data = vec![0u8; self.data_len()];
        self.tensor.copy_data_u8(&mut data, self.tensor.numel());
        data.into()
    }
    fn data_len(&self) -> usize {
        self.tensor.numel() * self.tensor.kind().elt_size_in_bytes()
    }
}

/// Named tensors in the safetensors format, in memory. Serialising here (rather than through
/// `Tensor::write_safetensors`) lets the caller write the bytes with its own I/O, so a full
/// disk is reported as an `io::Error` ("No space left on device"), not as debug text.
pub fn safetensors_bytes(tensors: &[(String, Tensor)]) -> Result<Vec<u8>, ModelError> {
    use safetensors::Dtype;
    let cpu: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(n, t)| (n.clone(), t.detach().to_device(Device::Cpu).contiguous()))
        .collect();
    let mut views = Vec::with_capacity(cpu.len());
    for (name, t) in &cpu {
        let dtype = match t.kind() {
            Kind::Float => Dtype::F32,
            Kind::Double => Dtype::F64,
            Kind::Half => Dtype::F16,
            Kind::BFloat16 => Dtype::BF16,
            Kind::Int64 => Dtype::I64,
            Kind::Int => Dtype::I32,
            Kind::Int16 => Dtype::I16,
            Kind::Int8 => Dtype::I8,
            Kind::Uint8 => Dtype::U8,
            Kind::Bool => Dtype::BOOL,
            k => {
                return Err(ModelError::Config(format!(
                    "tensor {name:?}: kind {k:?} cannot be saved"
                )))
            }
        };
        let shape = t.size().iter().map(|&d| d as usize).collect();
        views.push((
            name.as_str(),
            View {
                tensor: t,
                shape,
                dtype,
            },
        ));
    }
    safetensors::serialize(views, None)
        .map_err(|e| ModelError::Config(format!("serialising safetensors: {e}")))
}

/// tch's safetensors error text (`safetensors error PATH: Variant(…)`) in words, without the
/// path (the caller names it once). Header and buffer variants mean the file is not a whole
/// safetensors file; an OS error keeps only its message.
pub fn safetensors_reason(text: &str, path: &Path) -> String {
    let t = text.trim();
    let t = t
        .strip_prefix("safetensors error")
        .unwrap_or(t)
        .trim_start();
    let shown = path.display().to_string();
    let t = t.strip_prefix(shown.as_str()).unwrap_or(t);
    let t = t.strip_prefix(':').unwrap_or(t).trim();
    if let Some(i) = t.find("message: \"") {
        let msg = &t[i + 10..];
        return msg.split('"').next().unwrap_or(msg).to_string();
    }
    let variant: String = t
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    match variant.as_str() {
        v if v.starts_with("InvalidHeader")
            || v.starts_with("HeaderTooSmall")
            || v == "MetadataIncompleteBuffer"
            || v == "InvalidOffset"
            || v == "ValidationOverflow" =>
        {
            format!(
                "not a complete safetensors file (truncated, or another format; {v}): copy or \
                 export it again"
            )
        }
        "HeaderTooLarge" => "the header is larger than safetensors allows (not a safetensors \
                             file?)"
            .into(),
        _ => t.to_string(),
    }
}

/// Writes named tensors as safetensors: temp file in the same directory, fsync, rename.
pub fn write_safetensors_atomic(
    path: &Path,
    tensors: &[(String, Tensor)],
) -> Result<(), ModelError> {
    let bytes = safetensors_bytes(tensors)?;
    write_bytes_atomic(path, &bytes)
}

/// Runs `write` on a temporary path beside `path`, then fsyncs and renames it into place
/// ([`crate::fsutil::write_atomic_with`]); the writer's own error is returned unchanged.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&Path) -> Result<(), ModelError>,
) -> Result<(), ModelError> {
    let mut inner = None;
    crate::fsutil::write_atomic_with(path, |tmp| {
        write(tmp).map_err(|e| {
            let message = e.to_string();
            inner = Some(e);
            std::io::Error::other(message)
        })
    })
    .map_err(|source| {
        inner.take().unwrap_or(ModelError::Io {
            path: path.into(),
            source,
        })
    })
}

/// Writes bytes atomically (see [`write_atomic`]).
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<(), ModelError> {
    crate::fsutil::write_atomic(path, bytes).map_err(|crate::fsutil::IoError { source, .. }| {
        ModelError::Io {
            path: path.into(),
            source,
        }
    })
}

/// The vocabulary a model was trained with: `tokens[i]` has id `i + 1`; id 0 is BOS/EOS/pad.
/// `logit_dim` = tokens + 1 when the tokens are known.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct VocabInfo {
    pub logit_dim: usize,
    #[serde(default)]
    pub tokens: Vec<String>,
}

impl VocabInfo {
    /// Reads `vocab.json`: either a JSON list of tokens (id order), or an object with a
    /// `tokens`/`vocab` list (e.g. the fixture's text.json) and optionally `logit_dim`.
    pub fn load(path: &Path) -> Result<VocabInfo, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
            path: path.into(),
            source,
        })?;
        let invalid = |msg: String| ModelError::Invalid {
            path: path.into(),
            msg,
        };
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| invalid(format!("not JSON: {e}")))?;
        let list = match &v {
            serde_json::Value::Array(_) => Some(&v),
            serde_json::Value::Object(o) => o.get("tokens").or_else(|| o.get("vocab")),
            _ => None,
        };
        let tokens: Vec<String> = match list {
            Some(l) => serde_json::from_value(l.clone())
                .map_err(|e| invalid(format!("token list is not a list of strings: {e}")))?,
            None => Vec::new(),
        };
        let logit_dim = match v.get("logit_dim").and_then(|x| x.as_u64()) {
            Some(d) => d as usize,
            None if !tokens.is_empty() => tokens.len() + 1,
            None => return Err(invalid("neither a token list nor logit_dim".into())),
        };
        if !tokens.is_empty() && tokens.len() + 1 != logit_dim {
            return Err(invalid(format!(
                "{} tokens but logit_dim {logit_dim} (expected tokens + 1)",
                tokens.len()
            )));
        }
        Ok(VocabInfo { logit_dim, tokens })
    }

    /// Text of a token id sequence: tokens up to the first 0, joined by single spaces.
    pub fn decode(&self, ids: &[i64]) -> String {
        ids.iter()
            .take_while(|&&i| i != 0)
            .map(|&i| match self.tokens.get((i - 1) as usize) {
                Some(t) => t.clone(),
                None => format!("<{i}>"),
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A model checkpoint directory: `model.safetensors` (reference state_dict names),
/// `config.toml` (the full resolved [`Config`]) and `vocab.json` ([`VocabInfo`]).
/// Trainer checkpoints (`step-XXXXXXXX/`) contain the same three files plus other state.
#[derive(Debug, Clone)]
pub struct ModelCheckpoint {
    pub dir: PathBuf,
    pub config: Config,
    pub vocab: VocabInfo,
}

pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const CONFIG_FILE: &str = "config.toml";
pub const VOCAB_FILE: &str = "vocab.json";

/// Checks a model directory's files against its `SHA256SUMS` (every directory ithn-dist
/// writes has one: `best/`, `final/`, checkpoints, `import`/`init` outputs). A directory
/// without one (assembled by hand) is read with a warning; a mismatch is an error naming the
/// file.
pub fn verify_model_dir(dir: &Path) -> Result<(), ModelError> {
    match crate::fsutil::verify_checksums(dir) {
        Ok(()) => Ok(()),
        Err(crate::fsutil::ChecksumError::Missing { .. }) => {
            tracing::warn!(
                dir = %dir.display(),
                "no SHA256SUMS: the model directory's files are not checked (directories written by ithn-dist carry one)"
            );
            Ok(())
        }
        Err(e) => Err(ModelError::Invalid {
            path: dir.into(),
            msg: format!("not the model directory that was written: {e}"),
        }),
    }
}

/// Why `dir` is not a model directory, with where the model is when `dir` is a run directory
/// (its `best/` and `final/`) or the newest checkpoint's parent.
fn not_a_model_dir(dir: &Path) -> String {
    use crate::run_dir::RunDir;
    if !dir.exists() {
        return "no such directory".into();
    }
    if !dir.is_dir() {
        return format!("not a directory (a model is a directory with {WEIGHTS_FILE}, {CONFIG_FILE} and {VOCAB_FILE})");
    }
    let inside: Vec<String> = [RunDir::BEST, RunDir::FINAL]
        .iter()
        .map(|d| dir.join(d))
        .filter(|d| d.join(WEIGHTS_FILE).is_file())
        .map(|d| d.display().to_string())
        .collect();
    if !inside.is_empty() {
        return format!(
            "this is a run directory, not a model: pass {} (best: the model chosen on validation; final: the last epoch)",
            inside.join(" or ")
        );
    }
    if dir.join(RunDir::CHECKPOINTS).is_dir() {
        return format!(
            "this is a run directory whose training has not finished: pass a checkpoint under {}",
            dir.join(RunDir::CHECKPOINTS).display()
        );
    }
    format!(
        "not a model checkpoint: no {WEIGHTS_FILE} inside (a model directory is a run's best/ or final/, or a checkpoint under checkpoints/)"
    )
}

impl ModelCheckpoint {
    /// Reads the config and vocabulary of a checkpoint directory (weights are loaded by
    /// [`crate::model::R2GenCmn::from_checkpoint`]).
    pub fn open(dir: &Path) -> Result<ModelCheckpoint, ModelError> {
        let weights = dir.join(WEIGHTS_FILE);
        if !weights.is_file() {
            return Err(ModelError::Invalid {
                path: dir.into(),
                msg: not_a_model_dir(dir),
            });
        }
        verify_model_dir(dir)?;
        let cfg_path = dir.join(CONFIG_FILE);
        let config = Config::load(&cfg_path, &[]).map_err(|e| ModelError::Invalid {
            path: cfg_path.clone(),
            msg: e.to_string(),
        })?;
        let vocab = VocabInfo::load(&dir.join(VOCAB_FILE))?;
        Ok(ModelCheckpoint {
            dir: dir.into(),
            config,
            vocab,
        })
    }

    pub fn weights_path(&self) -> PathBuf {
        self.dir.join(WEIGHTS_FILE)
    }

    /// Writes `config.toml` and `vocab.json` into `dir` (the caller writes the weights).
    /// With known tokens, vocab.json has the data pipeline's format
    /// (`{"dataset", "threshold", "tokens"}`); otherwise `{"logit_dim": V+1, "tokens": []}`.
    pub fn write_meta(dir: &Path, config: &Config, vocab: &VocabInfo) -> Result<(), ModelError> {
        write_bytes_atomic(&dir.join(CONFIG_FILE), config.to_toml().as_bytes())?;
        let value = if vocab.tokens.is_empty() {
            serde_json::json!({"logit_dim": vocab.logit_dim, "tokens": []})
        } else {
            serde_json::json!({
                "dataset": config.data.dataset.name(),
                "threshold": config.data.threshold,
                "tokens": vocab.tokens,
            })
        };
        let mut json = serde_json::to_vec(&value).map_err(|e| ModelError::Invalid {
            path: dir.join(VOCAB_FILE),
            msg: e.to_string(),
        })?;
        json.push(b'\n');
        write_bytes_atomic(&dir.join(VOCAB_FILE), &json)
    }
}

/// Kind of a tensor as the reference names it in config.json (`float32`, `int64`).
pub fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Float => "float32",
        Kind::Int64 => "int64",
        Kind::Double => "float64",
        Kind::BFloat16 => "bfloat16",
        Kind::Half => "float16",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A registry with one parameter, one int64 buffer and an alias of the parameter.
    fn small() -> Registry {
        let reg = RefCell::new(Registry::default());
        let root = Scope::root(&reg, Device::Cpu);
        let _ = root
            .sub("a")
            .param("weight", Tensor::zeros([2, 3], (Kind::Float, Device::Cpu)));
        let _ = root
            .sub("a")
            .buffer("n", Tensor::zeros([], (Kind::Int64, Device::Cpu)));
        root.sub("b").alias("weight", "a.weight");
        reg.into_inner()
    }

    fn map(entries: &[(&str, Tensor)]) -> HashMap<String, Tensor> {
        entries
            .iter()
            .map(|(k, t)| (k.to_string(), t.shallow_clone()))
            .collect()
    }

    #[test]
    fn registry_orders_and_classifies_entries() {
        let reg = small();
        let names: Vec<String> = reg.state_dict().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["a.weight", "a.n", "b.weight"]);
        let params = reg.parameters();
        assert_eq!(params.len(), 1);
        assert_eq!((params[0].0.as_str(), params[0].2), ("a.weight", 1));
    }

    #[test]
    fn load_is_strict_and_names_the_key() {
        let reg = small();
        let p = Path::new("w.safetensors");
        let w = Tensor::ones([2, 3], (Kind::Float, Device::Cpu));
        let n = Tensor::from(7i64);
        // Aliases may be absent; the alias then shows the loaded source.
        reg.load_map(
            p,
            map(&[("a.weight", w.shallow_clone()), ("a.n", n.shallow_clone())]),
        )
        .unwrap();
        assert!(reg.state_dict()[2].1.equal(&w));
        assert_eq!(reg.state_dict()[1].1.int64_value(&[]), 7);
        let err = reg
            .load_map(p, map(&[("a.n", n.shallow_clone())]))
            .unwrap_err();
        assert!(
            matches!(&err, ModelError::MissingKey { key, .. } if key == "a.weight"),
            "{err}"
        );
        let extra = map(&[
            ("a.weight", w.shallow_clone()),
            ("a.n", n.shallow_clone()),
            ("zz", n.shallow_clone()),
        ]);
        let err = reg.load_map(p, extra).unwrap_err();
        assert!(
            matches!(&err, ModelError::UnexpectedKey { key, .. } if key == "zz"),
            "{err}"
        );
        let bad = map(&[
            ("a.weight", Tensor::ones([3, 2], (Kind::Float, Device::Cpu))),
            ("a.n", n.shallow_clone()),
        ]);
        let err = reg.load_map(p, bad).unwrap_err();
        assert!(err.to_string().contains("w.safetensors") && err.to_string().contains("a.weight"));
        let tied = map(&[
            ("a.weight", w.shallow_clone()),
            ("a.n", n.shallow_clone()),
            ("b.weight", w.zeros_like()),
        ]);
        let err = reg.load_map(p, tied).unwrap_err();
        assert!(
            matches!(&err, ModelError::Tied { key, .. } if key == "b.weight"),
            "{err}"
        );
    }

    #[test]
    fn save_is_atomic_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let reg = small();
        let path = dir.path().join("m.safetensors");
        reg.save_safetensors(&path).unwrap();
        let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(files.len(), 1, "no temp file left behind");
        let back = read_safetensors(&path).unwrap();
        assert_eq!(back.len(), 3);
        assert_eq!(back["a.n"].kind(), Kind::Int64);
        let err = read_safetensors(&dir.path().join("missing.safetensors")).unwrap_err();
        assert!(err.to_string().contains("missing.safetensors"));
    }

    #[test]
    fn vocab_file_forms() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v.json");
        std::fs::write(
            &p,
            r#"{"dataset":"iu_xray","threshold":3,"tokens":["a","b","<unk>"]}"#,
        )
        .unwrap();
        let v = VocabInfo::load(&p).unwrap();
        assert_eq!(v.logit_dim, 4);
        assert_eq!(v.decode(&[2, 1, 9, 0, 1]), "b a <9>");
        std::fs::write(&p, r#"["x"]"#).unwrap();
        assert_eq!(VocabInfo::load(&p).unwrap().logit_dim, 2);
        std::fs::write(&p, r#"{"logit_dim": 5, "tokens": []}"#).unwrap();
        assert_eq!(VocabInfo::load(&p).unwrap().logit_dim, 5);
        std::fs::write(&p, r#"{"logit_dim": 5, "tokens": ["a"]}"#).unwrap();
        assert!(VocabInfo::load(&p)
            .unwrap_err()
            .to_string()
            .contains("v.json"));
        std::fs::write(&p, "not json").unwrap();
        assert!(VocabInfo::load(&p)
            .unwrap_err()
            .to_string()
            .contains("v.json"));
    }

    #[test]
    fn a_run_directory_points_to_its_models() {
        let run = tempfile::tempdir().unwrap();
        let err = |d: &Path| ModelCheckpoint::open(d).err().unwrap().to_string();
        let missing = run.path().join("nope");
        assert!(
            err(&missing).contains("no such directory"),
            "{}",
            err(&missing)
        );
        // A run still training: only checkpoints/.
        std::fs::create_dir_all(run.path().join("checkpoints/step-00000010")).unwrap();
        let m = err(run.path());
        assert!(
            m.contains("checkpoints") && m.contains("not finished"),
            "{m}"
        );
        // A finished run: best/ and final/ named, in that order.
        for d in ["best", "final"] {
            std::fs::create_dir_all(run.path().join(d)).unwrap();
            std::fs::write(run.path().join(d).join(WEIGHTS_FILE), b"").unwrap();
        }
        let m = err(run.path());
        let (b, f) = (m.find("/best").unwrap(), m.find("/final").unwrap());
        assert!(b < f && m.contains("run directory"), "{m}");
        // Any other directory: what a model directory is.
        let other = tempfile::tempdir().unwrap();
        assert!(
            err(other.path()).contains("best/ or final/"),
            "{}",
            err(other.path())
        );
    }
}
