//! The local API between dfget and dfdaemon: HTTP/1.1 over the unix socket
//! `<home>/dfdaemon.sock`. `POST /download` takes a [`DownloadRequest`] and answers with
//! newline-delimited JSON [`Event`]s, the last one `done` or `error`.

use std::path::PathBuf;

use odonata_proto::messages::Header;
use odonata_proto::Digest;
use serde::{Deserialize, Serialize};

/// File name of the daemon's socket inside its home.
pub const SOCKET_NAME: &str = "dfdaemon.sock";

/// One download asked of the engine.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct DownloadRequest {
    /// Source URL.
    pub url: String,
    /// Absolute output path.
    pub output: PathBuf,
    /// Headers for the source.
    #[serde(default)]
    pub headers: Vec<Header>,
    /// Query parameters ignored for identity.
    #[serde(default)]
    pub filter: Vec<String>,
    /// Whole-file digest to check before the output appears.
    #[serde(default)]
    pub digest: Option<Digest>,
    /// Supernodes to use instead of the daemon's own (`host:port`).
    #[serde(default)]
    pub supernodes: Vec<String>,
    /// Never go to the source directly.
    #[serde(default)]
    pub no_source: bool,
    /// Download rate limit for this task, bytes per second.
    #[serde(default)]
    pub rate_limit: Option<u64>,
    /// Only this byte range of the file goes to the output (`dfget --range`).
    #[serde(default)]
    pub range: Option<crate::range::ByteRange>,
}

/// Where the bytes came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// Through the swarm.
    P2p,
    /// Directly from the source (fallback).
    Source,
}

/// Summary of a finished download.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// Bytes in the output.
    pub bytes: u64,
    /// How they came.
    pub via: Via,
    /// Pieces already on disk from an earlier, interrupted run.
    pub reused_pieces: u32,
    /// Pieces fetched from other peers.
    pub from_peers: u32,
    /// Pieces fetched from the supernode's seed.
    pub from_seed: u32,
    /// Why the swarm was left for the source, when it was.
    #[serde(default)]
    pub fallback_reason: Option<String>,
}

/// A line of the download's answer stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Bytes so far and the total when known.
    Progress {
        /// Bytes held.
        done: u64,
        /// Total, when known.
        total: Option<u64>,
    },
    /// The output is in place.
    Done(Outcome),
    /// The download failed; nothing was written.
    Error {
        /// One line saying why.
        message: String,
    },
}
