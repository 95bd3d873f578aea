//! Control-plane messages between dfdaemon and supernode (JSON bodies over HTTP/1.1).
//!
//! Endpoints (supernode, default port 8002):
//! - `POST /api/v1/tasks` [`RegisterRequest`] → [`RegisterResponse`]
//! - `POST /api/v1/tasks/{id}/sync` [`SyncRequest`] → [`SyncResponse`]
//! - `POST /api/v1/tasks/{id}/leave` [`LeaveRequest`] → 204
//! - `GET /api/v1/tasks/{id}` → [`TaskInfo`]
//!
//! Pieces (supernode port 8001, dfdaemon port 65000): `GET /pieces/{task_id}/{num}` → the
//! piece's bytes, 404 when the piece is not held.

use serde::{Deserialize, Serialize};

use crate::digest::{Digest, PieceDigest};
use crate::ids::{PeerId, TaskId};
use crate::piece::PieceLayout;

/// One HTTP header passed to the source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Header name.
    pub name: String,
    /// Header value.
    pub value: String,
}

impl Header {
    /// Parses a `Name: value` argument, as `dfget --header` takes it.
    pub fn parse(arg: &str) -> Result<Self, String> {
        let (name, value) = arg
            .split_once(':')
            .ok_or_else(|| format!("header '{arg}' must be 'Name: value'"))?;
        let name = name.trim();
        let value = value.trim();
        let token_ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token_ok {
            return Err(format!("header '{arg}' has an invalid name '{name}'"));
        }
        if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(format!(
                "header '{name}' has a value with a control character"
            ));
        }
        Ok(Self {
            name: name.to_owned(),
            value: value.to_owned(),
        })
    }
}

/// A peer asks the supernode to join (and if needed start) the task for a URL.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RegisterRequest {
    /// The source URL, exactly as the source must be asked.
    pub url: String,
    /// Headers for the source (auth, cookies).
    #[serde(default)]
    pub headers: Vec<Header>,
    /// Query parameters that do not change identity.
    #[serde(default)]
    pub filter: Vec<String>,
    /// Whole-file digest the user expects, when known.
    #[serde(default)]
    pub digest: Option<Digest>,
    /// The registering peer.
    pub peer_id: PeerId,
    /// Where the peer serves pieces (`ip:port`).
    pub peer_addr: String,
    /// Explicit identity (e.g. `oci-blob:sha256:HEX`): the task id comes from it through
    /// `TaskId::for_identity` instead of from the URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_identity: Option<String>,
}

/// The supernode's answer to [`RegisterRequest`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RegisterResponse {
    /// The task's identity.
    pub task_id: TaskId,
    /// How the content is cut.
    pub layout: PieceLayout,
}

/// A piece a peer now holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PieceDone {
    /// Piece number.
    pub num: u32,
    /// The parent it came from; None when it was already on the peer's disk.
    #[serde(default)]
    pub parent: Option<PeerId>,
    /// Milliseconds the transfer took.
    #[serde(default)]
    pub cost_ms: u32,
}

/// Why fetching a piece from a parent failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailReason {
    /// Could not connect, or the connection broke.
    Unreachable,
    /// The bytes did not match the piece digest.
    Corrupt,
    /// Too slow.
    Timeout,
    /// The parent said it does not hold the piece.
    NotFound,
    /// Anything else.
    Other,
}

/// A failed attempt at a piece from one parent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PieceFailed {
    /// Piece number.
    pub num: u32,
    /// The parent that failed.
    pub parent: PeerId,
    /// What went wrong.
    pub reason: FailReason,
}

/// Reports since the last sync plus a request for more work; one round trip for both.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SyncRequest {
    /// The reporting peer.
    pub peer_id: PeerId,
    /// Pieces now held.
    #[serde(default)]
    pub finished: Vec<PieceDone>,
    /// Failed attempts.
    #[serde(default)]
    pub failed: Vec<PieceFailed>,
    /// Pieces assigned but given up without a transfer (e.g. the peer is shutting down).
    #[serde(default)]
    pub released: Vec<u32>,
    /// Pieces the peer held and no longer does (its copy failed a re-check).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lost: Vec<u32>,
    /// How many new assignments the peer can take now.
    pub want: u32,
    /// How long the supernode may hold the request when there is no work yet.
    #[serde(default)]
    pub wait_ms: u32,
}

/// Where a task stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum TaskState {
    /// The seed is still reading the source.
    Running,
    /// The seed has every piece.
    Done,
    /// The seed failed; pieces cut so far stay available.
    Failed {
        /// One line saying why.
        message: String,
        /// The source's HTTP status, when it answered with an error.
        #[serde(default)]
        source_status: Option<u16>,
    },
}

/// A parent to fetch a piece from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parent {
    /// Its id.
    pub peer_id: PeerId,
    /// Where it serves pieces.
    pub addr: String,
}

/// One piece to fetch, with its digest and candidate parents, best first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// Piece number.
    pub num: u32,
    /// Its length in bytes.
    pub len: u32,
    /// Its sha256, as computed by the seed from the source.
    pub digest: PieceDigest,
    /// Candidate parents, best first.
    pub parents: Vec<Parent>,
}

/// The supernode's answer to [`SyncRequest`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SyncResponse {
    /// Where the task stands.
    #[serde(flatten)]
    pub state: TaskState,
    /// Layout, with the length once known.
    pub layout: PieceLayout,
    /// Total pieces, once the seed knows.
    pub piece_count: Option<u32>,
    /// New work.
    pub assignments: Vec<Assignment>,
}

/// A peer leaves a task (it stops serving it, or it is done and going away).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LeaveRequest {
    /// The leaving peer.
    pub peer_id: PeerId,
}

/// What went wrong, as the supernode tells a peer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    /// One line for a human.
    pub error: String,
    /// The source's HTTP status, when the source is the reason.
    #[serde(default)]
    pub source_status: Option<u16>,
}

/// A peer's standing in a task, for operators and tests.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PeerInfo {
    /// Its id.
    pub peer_id: PeerId,
    /// Upload address.
    pub addr: String,
    /// Whether this is the supernode's own seed.
    pub is_seed: bool,
    /// Pieces it holds.
    pub pieces: u32,
    /// Reported as serving corrupt data: never chosen again.
    pub blocked: bool,
    /// Unreachable or gone: not chosen until it reports again.
    pub dead: bool,
    /// Pieces it is serving right now.
    pub uploading: u32,
    /// Pieces it has served successfully.
    pub served: u64,
}

/// A task's standing, for operators and tests.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskInfo {
    /// Its id.
    pub task_id: TaskId,
    /// Source URL (without filtered parameters).
    pub url: String,
    /// Where it stands.
    #[serde(flatten)]
    pub state: TaskState,
    /// Layout.
    pub layout: PieceLayout,
    /// Pieces the seed has cut so far.
    pub pieces_known: u32,
    /// Every peer.
    pub peers: Vec<PeerInfo>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_parsing() {
        let h = Header::parse("Authorization: Bearer x:y").unwrap();
        assert_eq!(h.name, "Authorization");
        assert_eq!(h.value, "Bearer x:y");
        assert!(Header::parse("nocolon")
            .unwrap_err()
            .contains("Name: value"));
        assert!(Header::parse("bad name: v")
            .unwrap_err()
            .contains("invalid name"));
        assert!(Header::parse(": v").is_err());
        assert!(Header::parse("X: a\r\nInjected: 1").is_err());
    }

    #[test]
    fn sync_response_roundtrip() {
        let r = SyncResponse {
            state: TaskState::Failed {
                message: "source answered 404".into(),
                source_status: Some(404),
            },
            layout: PieceLayout {
                piece_size: 1 << 20,
                content_length: None,
            },
            piece_count: None,
            assignments: vec![],
        };
        let j = serde_json::to_string(&r).unwrap();
        let back: SyncResponse = serde_json::from_str(&j).unwrap();
        assert_eq!(back.state, r.state);
    }
}
