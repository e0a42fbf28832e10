//! The command-line half of a configuration, shared by every subcommand that takes one.

use std::path::PathBuf;

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
