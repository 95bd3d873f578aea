//! Supernode configuration: defaults, then `/etc/dragonfly/supernode.yml` (or `--config`),
//! then environment, then flags.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use clap::Parser;
use odonata_proto::config::{load, ConfigError};
use serde::Deserialize;

/// Command line of `supernode`.
#[derive(Parser, Debug, Default)]
#[command(
    name = "supernode",
    version,
    about = "Odonata supernode: scheduler and CDN seed"
)]
pub struct Args {
    /// YAML config file (default /etc/dragonfly/supernode.yml when it exists).
    #[arg(long, env = "SUPERNODE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Home directory for the CDN cache (data/, meta/, logs/).
    #[arg(long, env = "SUPERNODE_HOME")]
    pub home: Option<PathBuf>,
    /// Control API address.
    #[arg(long, env = "SUPERNODE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Piece upload address.
    #[arg(long = "upload-listen", env = "SUPERNODE_UPLOAD_LISTEN")]
    pub upload_listen: Option<SocketAddr>,
    /// IP peers should use to reach the upload port (default: the host they reached us by).
    #[arg(long = "advertise-ip", env = "SUPERNODE_ADVERTISE_IP")]
    pub advertise_ip: Option<IpAddr>,
    /// More logging.
    #[arg(short, long)]
    pub verbose: bool,
}

/// The YAML file's shape (every key optional).
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct FileConfig {
    home: Option<PathBuf>,
    listen: Option<SocketAddr>,
    upload_listen: Option<SocketAddr>,
    advertise_ip: Option<IpAddr>,
    peer_upload_slots: Option<u32>,
    seed_upload_slots: Option<u32>,
    /// Passive-CDN settings (see `cache::CdnFile`).
    #[serde(default)]
    cdn: crate::cache::CdnFile,
}

/// Resolved supernode configuration.
#[derive(Clone, Debug)]
pub struct SupernodeConfig {
    /// Cache directory.
    pub home: PathBuf,
    /// Control API address.
    pub listen: SocketAddr,
    /// Piece upload address.
    pub upload_listen: SocketAddr,
    /// Advertised IP for the upload port, if fixed.
    pub advertise_ip: Option<IpAddr>,
    /// Scheduler tunables.
    pub scheduler: odonata_scheduler::Config,
    /// Cache validation, retries, negative caching and disk quota.
    pub cdn: crate::cache::CdnConfig,
}

fn default_home() -> PathBuf {
    odonata_proto::config::home_dir()
        .join(".small-dragonfly")
        .join("supernode")
}

impl SupernodeConfig {
    /// Merges defaults, file, environment and flags, then validates.
    pub fn resolve(args: &Args) -> Result<Self, ConfigError> {
        let file: FileConfig = load(
            args.config.as_deref(),
            Path::new("/etc/dragonfly/supernode.yml"),
        )?;
        let mut scheduler = odonata_scheduler::Config::default();
        if let Some(s) = file.peer_upload_slots {
            scheduler.peer_upload_slots = s;
        }
        if let Some(s) = file.seed_upload_slots {
            scheduler.seed_upload_slots = s;
        }
        if scheduler.peer_upload_slots == 0 || scheduler.seed_upload_slots == 0 {
            return Err(ConfigError::Invalid(
                "upload slots must be at least 1".into(),
            ));
        }
        let default_listen = SocketAddr::from(([0, 0, 0, 0], 8002));
        let default_upload = SocketAddr::from(([0, 0, 0, 0], 8001));
        Ok(Self {
            home: args.home.clone().or(file.home).unwrap_or_else(default_home),
            listen: args.listen.or(file.listen).unwrap_or(default_listen),
            upload_listen: args
                .upload_listen
                .or(file.upload_listen)
                .unwrap_or(default_upload),
            advertise_ip: args.advertise_ip.or(file.advertise_ip),
            scheduler,
            cdn: crate::cache::CdnConfig::resolve(&file.cdn)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_and_unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s.yml");
        std::fs::write(&f, "listen: 127.0.0.1:9002\nseed_upload_slots: 3\n").unwrap();
        let args = Args {
            config: Some(f.clone()),
            upload_listen: Some("127.0.0.1:9001".parse().unwrap()),
            ..Args::default()
        };
        let c = SupernodeConfig::resolve(&args).unwrap();
        assert_eq!(c.listen.port(), 9002);
        assert_eq!(c.upload_listen.port(), 9001);
        assert_eq!(c.scheduler.seed_upload_slots, 3);
        std::fs::write(&f, "lisen: 1\n").unwrap();
        let e = SupernodeConfig::resolve(&args).unwrap_err().to_string();
        assert!(e.contains("unknown field"), "{e}");
    }
}
