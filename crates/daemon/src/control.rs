//! Client of the supernode's control API, with failover across supernodes.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::Duration;

use odonata_proto::messages::{
    ErrorBody, LeaveRequest, RegisterRequest, RegisterResponse, SyncRequest, SyncResponse,
};
use odonata_proto::{PeerId, TaskId};

/// Why the supernode could not help.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ControlError {
    /// No supernode answered.
    #[error("cannot reach supernode {addr}: {detail}")]
    Unreachable {
        /// The supernode tried last.
        addr: String,
        /// What happened.
        detail: String,
    },
    /// The supernode reports the source failing.
    #[error("{message}")]
    Source {
        /// The supernode's message.
        message: String,
        /// The source's status, when it answered.
        status: Option<u16>,
    },
    /// The supernode refused the request.
    #[error("supernode {addr} refused: {message}")]
    Refused {
        /// The supernode.
        addr: String,
        /// HTTP status.
        code: u16,
        /// Its message.
        message: String,
    },
    /// No supernode is configured.
    #[error("no supernode configured (use --node HOST:PORT or nodes: in dfget.yml)")]
    NoSupernode,
}

/// A pooled client for one or more supernodes.
#[derive(Clone)]
pub struct ControlClient {
    http: reqwest::Client,
}

fn detail(e: &reqwest::Error) -> String {
    odonata_proto::error::root_cause(e)
}

impl Default for ControlClient {
    fn default() -> Self {
        Self::new()
    }
}

impl ControlClient {
    /// A client with sensible timeouts (a long-poll is at most a few seconds).
    pub fn new() -> Self {
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .build()
            .unwrap_or_default();
        Self { http }
    }

    async fn post<B: serde::Serialize, R: serde::de::DeserializeOwned>(
        &self,
        node: &str,
        path: &str,
        body: &B,
    ) -> Result<R, ControlError> {
        let url = format!("http://{node}{path}");
        let resp = self.http.post(&url).json(body).send().await.map_err(|e| {
            ControlError::Unreachable {
                addr: node.to_owned(),
                detail: detail(&e),
            }
        })?;
        let code = resp.status();
        if code.is_success() {
            if code == reqwest::StatusCode::NO_CONTENT {
                return serde_json::from_str("null").map_err(|e| ControlError::Refused {
                    addr: node.to_owned(),
                    code: code.as_u16(),
                    message: e.to_string(),
                });
            }
            return resp.json().await.map_err(|e| ControlError::Unreachable {
                addr: node.to_owned(),
                detail: format!("bad answer: {}", detail(&e)),
            });
        }
        let text = resp.text().await.unwrap_or_default();
        let body: Option<ErrorBody> = serde_json::from_str(&text).ok();
        let message = body
            .as_ref()
            .map_or_else(|| text.trim().to_owned(), |b| b.error.clone());
        if code == reqwest::StatusCode::BAD_GATEWAY || code == reqwest::StatusCode::GATEWAY_TIMEOUT
        {
            return Err(ControlError::Source {
                message,
                status: body.and_then(|b| b.source_status),
            });
        }
        Err(ControlError::Refused {
            addr: node.to_owned(),
            code: code.as_u16(),
            message,
        })
    }

    /// Registers with the first supernode that answers; returns which one it was.
    pub async fn register(
        &self,
        nodes: &[String],
        req: &RegisterRequest,
    ) -> Result<(String, RegisterResponse), ControlError> {
        let mut last = ControlError::NoSupernode;
        for node in nodes {
            match self.post(node, "/api/v1/tasks", req).await {
                Ok(r) => return Ok((node.clone(), r)),
                Err(e @ ControlError::Unreachable { .. }) => {
                    tracing::warn!(supernode = %node, error = %e, "supernode unreachable, trying the next");
                    last = e;
                }
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// Reports and asks for work.
    pub async fn sync(
        &self,
        node: &str,
        task: &TaskId,
        req: &SyncRequest,
    ) -> Result<SyncResponse, ControlError> {
        self.post(node, &format!("/api/v1/tasks/{task}/sync"), req)
            .await
    }

    /// Leaves a task (best effort).
    pub async fn leave(&self, node: &str, task: &TaskId, peer: &PeerId) {
        let req = LeaveRequest {
            peer_id: peer.clone(),
        };
        let r: Result<(), _> = self
            .post(node, &format!("/api/v1/tasks/{task}/leave"), &req)
            .await;
        if let Err(e) = r {
            tracing::debug!(error = %e, "leave failed");
        }
    }
}

/// The local IP the kernel would use to reach `node`; sends nothing (UDP connect only
/// chooses a route).
pub fn local_ip_towards(node: &str) -> Option<IpAddr> {
    let target: SocketAddr = node.to_socket_addrs().ok()?.next()?;
    let bind: SocketAddr = if target.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(bind).ok()?;
    sock.connect(target).ok()?;
    Some(sock.local_addr().ok()?.ip())
}
