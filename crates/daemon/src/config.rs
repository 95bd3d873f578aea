//! dfdaemon configuration: defaults, then `/etc/dragonfly/dfdaemon.yml` (or `--config`),
//! then environment, then flags.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use clap::Parser;
use odonata_proto::config::{home_dir, load, ConfigError};
use odonata_proto::units::parse_rate;
use serde::Deserialize;

/// Command line of `dfdaemon`.
#[derive(Parser, Debug, Default)]
#[command(
    name = "dfdaemon",
    version,
    about = "Odonata dfdaemon: the per-host peer"
)]
pub struct Args {
    /// YAML config file (default /etc/dragonfly/dfdaemon.yml when it exists).
    #[arg(long, env = "DFDAEMON_CONFIG")]
    pub config: Option<PathBuf>,
    /// Home directory (data/, meta/, logs/, dfdaemon.sock); default ~/.small-dragonfly.
    #[arg(long, env = "DFDAEMON_HOME")]
    pub home: Option<PathBuf>,
    /// Supernode control address HOST:PORT (repeat for failover, nearest first).
    #[arg(long = "supernode", env = "DFDAEMON_SUPERNODES", value_delimiter = ',')]
    pub supernodes: Vec<String>,
    /// Piece upload address.
    #[arg(long = "upload-listen", env = "DFDAEMON_UPLOAD_LISTEN")]
    pub upload_listen: Option<SocketAddr>,
    /// IP other peers reach this host by (default: the route towards the supernode).
    #[arg(long = "advertise-ip", env = "DFDAEMON_ADVERTISE_IP")]
    pub advertise_ip: Option<IpAddr>,
    /// Download limit for the whole host, e.g. 100M (bytes per second).
    #[arg(long = "totallimit", env = "DFDAEMON_TOTALLIMIT")]
    pub total_limit: Option<String>,
    /// Upload limit for the whole host, e.g. 11M (bytes per second); a little under the
    /// uplink keeps this host's own downloads from starving behind its uploads.
    #[arg(long = "upload-limit", env = "DFDAEMON_UPLOAD_LIMIT")]
    pub upload_limit: Option<String>,
    /// Pieces fetched at once per task.
    #[arg(long, env = "DFDAEMON_PARALLEL")]
    pub parallel: Option<usize>,
    /// Registry mirror / HTTP proxy address, e.g. 127.0.0.1:65001 (off when unset).
    #[arg(long = "proxy-listen", env = "DFDAEMON_PROXY_LISTEN")]
    pub proxy_listen: Option<SocketAddr>,
    /// Default upstream registry of the mirror, e.g. https://index.docker.io.
    #[arg(long, env = "DFDAEMON_REGISTRY")]
    pub registry: Option<String>,
    /// More logging.
    #[arg(short, long)]
    pub verbose: bool,
}

/// The YAML file's shape (every key optional).
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct FileConfig {
    home: Option<PathBuf>,
    #[serde(alias = "nodes")]
    supernodes: Option<Vec<String>>,
    upload_listen: Option<SocketAddr>,
    advertise_ip: Option<IpAddr>,
    totallimit: Option<String>,
    upload_limit: Option<String>,
    parallel: Option<usize>,
    proxy_listen: Option<SocketAddr>,
    mirror: Option<crate::mirror::MirrorFile>,
}

/// Resolved dfdaemon configuration.
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    /// Home directory.
    pub home: PathBuf,
    /// Supernodes, nearest first.
    pub supernodes: Vec<String>,
    /// Piece upload address.
    pub upload_listen: SocketAddr,
    /// Advertised IP, if fixed.
    pub advertise_ip: Option<IpAddr>,
    /// Whole-host download limit.
    pub total_limit: Option<u64>,
    /// Whole-host upload limit.
    pub upload_limit: Option<u64>,
    /// Pieces fetched at once per task.
    pub parallel: usize,
    /// Registry mirror / proxy address, when enabled.
    pub proxy_listen: Option<SocketAddr>,
    /// Registry mirror settings.
    pub mirror: crate::mirror::MirrorConfig,
}

/// Default home: `~/.small-dragonfly`, as Dragonfly.
pub fn default_home() -> PathBuf {
    home_dir().join(".small-dragonfly")
}

/// Checks `host:port` shape of a supernode address.
pub fn check_node(n: &str) -> Result<(), ConfigError> {
    let ok = n
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid(format!(
            "supernode '{n}' must be HOST:PORT"
        )))
    }
}

impl DaemonConfig {
    /// Merges defaults, file, environment and flags, then validates.
    pub fn resolve(args: &Args) -> Result<Self, ConfigError> {
        let file: FileConfig = load(
            args.config.as_deref(),
            Path::new("/etc/dragonfly/dfdaemon.yml"),
        )?;
        let supernodes = if args.supernodes.is_empty() {
            file.supernodes.unwrap_or_default()
        } else {
            args.supernodes.clone()
        };
        for n in &supernodes {
            check_node(n)?;
        }
        let rate = |flag: Option<&str>, key: Option<&str>, what: &str| match flag.or(key) {
            Some(s) => parse_rate(s).map_err(|e| ConfigError::Invalid(format!("{what}: {e}"))),
            None => Ok(None),
        };
        let total_limit = rate(
            args.total_limit.as_deref(),
            file.totallimit.as_deref(),
            "totallimit",
        )?;
        let upload_limit = rate(
            args.upload_limit.as_deref(),
            file.upload_limit.as_deref(),
            "upload_limit",
        )?;
        let parallel = args.parallel.or(file.parallel).unwrap_or(8);
        if !(1..=64).contains(&parallel) {
            return Err(ConfigError::Invalid(format!(
                "parallel must be 1..=64, got {parallel}"
            )));
        }
        let mirror =
            crate::mirror::MirrorConfig::resolve(file.mirror.as_ref(), args.registry.as_deref())?;
        Ok(Self {
            proxy_listen: args.proxy_listen.or(file.proxy_listen),
            mirror,
            home: args.home.clone().or(file.home).unwrap_or_else(default_home),
            supernodes,
            upload_listen: args
                .upload_listen
                .or(file.upload_listen)
                .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 65000))),
            advertise_ip: args.advertise_ip.or(file.advertise_ip),
            total_limit,
            upload_limit,
            parallel,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("d.yml");
        std::fs::write(
            &f,
            "nodes: [\"a:8002\", \"b:8002\"]\ntotallimit: 20M\nupload_limit: 11M\n",
        )
        .unwrap();
        let mut args = Args {
            config: Some(f.clone()),
            ..Args::default()
        };
        let c = DaemonConfig::resolve(&args).unwrap();
        assert_eq!(c.supernodes, vec!["a:8002", "b:8002"]);
        assert_eq!(c.total_limit, Some(20 << 20));
        assert_eq!(c.upload_limit, Some(11 << 20));
        args.supernodes = vec!["c:1".into()];
        assert_eq!(
            DaemonConfig::resolve(&args).unwrap().supernodes,
            vec!["c:1"]
        );
        args.supernodes = vec!["nope".into()];
        let e = DaemonConfig::resolve(&args).unwrap_err().to_string();
        assert!(e.contains("HOST:PORT"), "{e}");
        std::fs::write(&f, "parallel: [\n").unwrap();
        assert!(DaemonConfig::resolve(&Args {
            config: Some(f),
            ..Args::default()
        })
        .is_err());
    }
}
