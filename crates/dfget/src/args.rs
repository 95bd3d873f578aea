//! dfget's flags (Dragonfly's names) and their validation into a [`Plan`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use odonata_daemon::api::DownloadRequest;
use odonata_daemon::config::{check_node, default_home};
use odonata_daemon::engine::absolute;
use odonata_proto::config::load;
use odonata_proto::messages::Header;
use odonata_proto::units::{parse_duration, parse_rate};
use odonata_proto::{Digest, TaskKey};
use serde::Deserialize;

/// Command line of `dfget`.
#[derive(Parser, Debug)]
#[command(
    name = "dfget",
    version,
    about = "Download a file through the Odonata P2P swarm"
)]
pub(crate) struct Args {
    /// URL to download.
    #[arg(short = 'u', long = "url")]
    url: String,
    /// Output file (default: the URL's file name in the current directory).
    #[arg(short = 'o', long = "output")]
    output: Option<PathBuf>,
    /// Header for the source, 'Name: value' (repeatable).
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// Expected digest of the whole file, sha256:HEX.
    #[arg(long)]
    digest: Option<String>,
    /// Expected md5 of the whole file, HEX.
    #[arg(short = 'm', long)]
    md5: Option<String>,
    /// Query parameters that do not change what is downloaded ('a&b', 'a,b', or repeat).
    #[arg(short = 'f', long)]
    filter: Vec<String>,
    /// Supernode HOST:PORT (repeatable); default: nodes: in /etc/dragonfly/dfget.yml.
    #[arg(short = 'n', long = "node", value_delimiter = ',')]
    nodes: Vec<String>,
    /// Never download from the source directly.
    #[arg(long = "notbs")]
    notbs: bool,
    /// Only this byte range of the file, START-END (inclusive) or START-.
    #[arg(long)]
    range: Option<String>,
    /// Give up after this long, e.g. 300s (plain numbers are seconds).
    #[arg(short = 'e', long)]
    timeout: Option<String>,
    /// Download rate limit for this file, e.g. 20M (bytes/s).
    #[arg(short = 's', long = "locallimit")]
    local_limit: Option<String>,
    /// Download rate limit for the whole host, e.g. 100M (bytes/s).
    #[arg(long = "totallimit")]
    total_limit: Option<String>,
    /// Show a progress bar.
    #[arg(short = 'b', long = "showbar")]
    show_bar: bool,
    /// Home of the daemon to use (its socket is HOME/dfdaemon.sock).
    #[arg(long)]
    home: Option<PathBuf>,
    /// Config file with nodes: (default /etc/dragonfly/dfget.yml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Caller's name, for the logs.
    #[arg(long)]
    callsystem: Option<String>,
    /// More logging.
    #[arg(short, long)]
    pub(crate) verbose: bool,
}

#[derive(Deserialize, Default)]
struct FileConfig {
    #[serde(default)]
    nodes: Vec<String>,
    #[serde(default, rename = "totalLimit", alias = "totallimit")]
    total_limit: Option<String>,
}

/// A validated download.
pub(crate) struct Plan {
    pub(crate) request: DownloadRequest,
    pub(crate) home: PathBuf,
    pub(crate) timeout: Option<Duration>,
    pub(crate) total_limit: Option<u64>,
    pub(crate) show_bar: bool,
}

fn file_name_of(key: &TaskKey) -> Option<String> {
    key.url
        .path_segments()
        .and_then(|mut s| s.next_back().map(str::to_owned))
        .filter(|n| !n.is_empty() && n != "." && n != "..")
}

impl Args {
    /// Validates every flag; each error is one line naming what was wrong.
    pub(crate) fn plan(&self) -> Result<Plan, String> {
        let filter: Vec<String> = self
            .filter
            .iter()
            .flat_map(|f| f.split(['&', ',']))
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .map(str::to_owned)
            .collect();
        let key = TaskKey::new(&self.url, &filter).map_err(|e| e.to_string())?;
        let headers = self
            .headers
            .iter()
            .map(|h| Header::parse(h))
            .collect::<Result<Vec<_>, _>>()?;
        let digest = match (&self.digest, &self.md5) {
            (Some(_), Some(_)) => return Err("give --digest or --md5, not both".into()),
            (Some(d), None) => Some(d.parse::<Digest>().map_err(|e| e.to_string())?),
            (None, Some(m)) => Some(Digest::md5_hex(m).map_err(|e| e.to_string())?),
            (None, None) => None,
        };
        let file: FileConfig = load(
            self.config.as_deref(),
            Path::new("/etc/dragonfly/dfget.yml"),
        )
        .map_err(|e| e.to_string())?;
        let nodes = if self.nodes.is_empty() {
            file.nodes
        } else {
            self.nodes.clone()
        };
        for n in &nodes {
            check_node(n).map_err(|e| e.to_string())?;
        }
        let rate = |s: &Option<String>| -> Result<Option<u64>, String> {
            s.as_deref()
                .map(parse_rate)
                .transpose()
                .map(Option::flatten)
                .map_err(|e| e.to_string())
        };
        let range = self
            .range
            .as_deref()
            .map(odonata_daemon::range::ByteRange::parse)
            .transpose()?;
        let local_limit = rate(&self.local_limit)?;
        let total_limit = rate(&self.total_limit.clone().or(file.total_limit))?;
        let timeout = self
            .timeout
            .as_deref()
            .map(parse_duration)
            .transpose()
            .map_err(|e| e.to_string())?
            .filter(|d| !d.is_zero());
        let output = match &self.output {
            Some(o) => absolute(o),
            None => absolute(Path::new(&file_name_of(&key).ok_or_else(|| {
                format!(
                    "cannot name the output after URL '{}': give -o FILE",
                    self.url
                )
            })?)),
        };
        if let Some(c) = &self.callsystem {
            tracing::debug!(callsystem = %c, "caller");
        }
        // Both limits cap this download; the total one is the whole host's when we run the peer.
        let rate_limit = match (local_limit, total_limit) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Ok(Plan {
            request: DownloadRequest {
                url: self.url.trim().to_owned(),
                output,
                headers,
                filter,
                digest,
                supernodes: nodes,
                no_source: self.notbs,
                rate_limit,
                range,
            },
            home: self.home.clone().unwrap_or_else(default_home),
            timeout,
            total_limit,
            show_bar: self.show_bar,
        })
    }
}
