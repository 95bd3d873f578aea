//! Reading the YAML config files every binary takes (`/etc/dragonfly/*.yml`, `--config`).

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Why a config file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading config {path}: {source}")]
    Read {
        /// Which file.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// The file is not valid YAML of the expected shape.
    #[error("config {path}: {detail}")]
    Parse {
        /// Which file.
        path: PathBuf,
        /// What the parser said.
        detail: String,
    },
    /// A value is out of range.
    #[error("config: {0}")]
    Invalid(String),
}

/// Reads a YAML file; an empty file is an empty config.
pub fn read_yaml<T: for<'de> Deserialize<'de> + Default>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    if text.trim().is_empty() {
        return Ok(T::default());
    }
    serde_yaml_ng::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        detail: e.to_string().lines().next().unwrap_or_default().to_owned(),
    })
}

/// Reads `explicit` if given, else `system` if it exists, else the defaults.
pub fn load<T: for<'de> Deserialize<'de> + Default>(
    explicit: Option<&Path>,
    system: &Path,
) -> Result<T, ConfigError> {
    match explicit {
        Some(p) => read_yaml(p),
        None if system.exists() => read_yaml(system),
        None => Ok(T::default()),
    }
}

/// The user's home directory (for `~/.small-dragonfly`).
pub fn home_dir() -> PathBuf {
    std::env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from)
}
