//! Typed run configuration: TOML tables → structs (unknown keys rejected) → `validate()`.
//!
//! A run is described by one immutable [`Config`]. It is read from a TOML file, then
//! `--set section.key=value` overrides are applied to the TOML tree *before* deserialising,
//! so every override is type-checked against the same schema as the file. Errors always name
//! the file and the dotted key. Batch sizes are **global** (SPEC §5): a run means the same
//! thing on 1 or 64 ranks.

mod args;
mod metric;
mod schema;

pub use args::ConfigArgs;
pub use metric::{LrGroup, Metric};
pub use schema::*;

use std::path::{Path, PathBuf};

/// Everything that can go wrong while reading or checking a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: invalid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{path}: key `{key}`: {message}")]
    Schema {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error("{path}: invalid value for `{key}`: {reason}")]
    Invalid {
        path: PathBuf,
        key: String,
        reason: String,
    },
    #[error("--set {spec:?}: {reason}")]
    Override { spec: String, reason: String },
    #[error(
        "data.prepared = {value:?} (from {origin}): {resolved} {what}; make it with \
         `ithn-dist prepare … --out DIR` and point data.prepared at DIR (--set data.prepared=DIR)"
    )]
    MissingPrepared {
        origin: String,
        value: String,
        resolved: String,
        what: &'static str,
    },
}

impl Config {
    /// Reads `path`, applies `overrides` (`section.key=value`), deserialises and validates.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml_str(&text, path, overrides)
    }

    /// Like [`Config::load`] on an in-memory document; `origin` is only used in messages.
    pub fn from_toml_str(
        text: &str,
        origin: &Path,
        overrides: &[String],
    ) -> Result<Config, ConfigError> {
        let mut tree: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigError::Syntax {
                    path: origin.to_path_buf(),
                    message: e.to_string(),
                })?;
        for spec in overrides {
            apply_override(&mut tree, spec)?;
        }
        let cfg: Config =
            serde_path_to_error::deserialize(toml::Value::Table(tree)).map_err(|e| {
                let key = e.path().to_string();
                // toml's message ends with "\nin `section`": the key already says where.
                let message = e.into_inner().to_string();
                let message = message.split('\n').next().unwrap_or_default().to_string();
                match override_for(overrides, &key) {
                    Some(spec) => ConfigError::Override {
                        spec: spec.clone(),
                        reason: format!("key `{key}`: {message}"),
                    },
                    None => ConfigError::Schema {
                        path: origin.to_path_buf(),
                        key,
                        message,
                    },
                }
            })?;
        cfg.validate().map_err(
            |InvalidValue {
                 key,
                 reason,
                 related,
             }| {
                // A rule between keys is blamed on the one a `--set` changed, if any did.
                let blamed = std::iter::once(&key)
                    .chain(&related)
                    .find_map(|k| override_for(overrides, k).map(|spec| (k, spec)));
                match blamed {
                    Some((k, spec)) => ConfigError::Override {
                        spec: spec.clone(),
                        reason: format!("invalid value for `{k}`: {reason}"),
                    },
                    None => ConfigError::Invalid {
                        path: origin.to_path_buf(),
                        key,
                        reason,
                    },
                }
            },
        )?;
        Ok(cfg)
    }

    /// The resolved configuration as TOML (what `config show` prints and runs record).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a validated Config always serialises")
    }
}

/// The last `--set` whose key is `key` or a part of it (`train=…` for `train.lr`, or
/// `train.lr.x=…` for `train.lr`): the value there, not the file, is what an error about
/// `key` is about (the last one wins, as in [`apply_override`]).
fn override_for<'a>(overrides: &'a [String], key: &str) -> Option<&'a String> {
    overrides.iter().rev().find(|spec| {
        let k = spec
            .split_once('=')
            .map_or(spec.as_str(), |(k, _)| k)
            .trim();
        k == key || key.starts_with(&format!("{k}.")) || k.starts_with(&format!("{key}."))
    })
}

/// Applies one `section.key=value` override to the raw TOML tree. The value is parsed as a
/// TOML value (`5`, `1e-4`, `true`, `[3,4,23,3]`, `"x"`); anything that is not valid TOML is
/// taken as a bare string, so `--set data.prepared=/scratch/iu` works without quotes.
pub fn apply_override(tree: &mut toml::Table, spec: &str) -> Result<(), ConfigError> {
    let err = |reason: &str| ConfigError::Override {
        spec: spec.to_string(),
        reason: reason.to_string(),
    };
    let (key, raw) = spec
        .split_once('=')
        .ok_or_else(|| err("expected section.key=value"))?;
    let key = key.trim();
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(err("empty key segment"));
    }
    let value = parse_value(raw.trim());
    let (last, parents) = parts.split_last().expect("split yields at least one part");
    let mut table = tree;
    for p in parents {
        let entry = table
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry
            .as_table_mut()
            .ok_or_else(|| err(&format!("`{p}` is not a table")))?;
    }
    table.insert(last.to_string(), value);
    Ok(())
}

fn parse_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match doc.parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

#[cfg(test)]
mod tests;
