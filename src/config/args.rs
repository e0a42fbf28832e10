//! The command-line half of a configuration, shared by every subcommand that takes one.

use std::path::{Path, PathBuf};

use super::{Config, ConfigError};

/// A configuration file plus `--set` overrides (`#[command(flatten)]` into a subcommand).
#[derive(clap::Args, Debug, Clone)]
pub struct ConfigArgs {
    /// TOML configuration file (see configs/).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Override one key, e.g. `--set train.epochs=5` (repeatable; values are TOML, type-checked).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub set: Vec<String>,
}

impl ConfigArgs {
    /// Reads the file, applies the overrides and validates (errors name the file and key).
    pub fn load(&self) -> Result<Config, ConfigError> {
        Config::load(&self.config, &self.set)
    }
}

impl ConfigArgs {
    /// Where `data.prepared` of `cfg` is: the file or the `--set` that gave it.
    pub fn origin_of(&self, key: &str) -> String {
        match super::override_for(&self.set, key) {
            Some(spec) => format!("--set {spec}"),
            None => self.config.display().to_string(),
        }
    }

    /// `data.prepared` when it holds a prepared directory (a `manifest.json`); otherwise an
    /// error naming the key, where its value came from, the directory it resolved to (a
    /// relative path resolves from the current directory) and the command that makes it.
    pub fn prepared_dir(&self, cfg: &Config) -> Result<PathBuf, ConfigError> {
        let dir = cfg.data.prepared.clone();
        if dir.join("manifest.json").is_file() {
            return Ok(dir);
        }
        let resolved = std::path::absolute(&dir).unwrap_or_else(|_| dir.clone());
        let relative = if dir.is_relative() {
            let cwd = std::env::current_dir().unwrap_or_default();
            format!(
                " (relative, so from the current directory {})",
                cwd.display()
            )
        } else {
            String::new()
        };
        let what = if Path::new(&resolved).is_dir() {
            "holds no manifest.json, so it is not a prepared directory"
        } else {
            "does not exist"
        };
        Err(ConfigError::MissingPrepared {
            origin: self.origin_of("data.prepared"),
            value: cfg.data.prepared.display().to_string(),
            resolved: format!("{}{relative}", resolved.display()),
            what,
        })
    }
}
