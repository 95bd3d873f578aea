//! The dfget side of the local API: talks to a daemon over its unix socket.

use std::path::Path;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

use crate::api::{DownloadRequest, Event};

/// Why the daemon could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No daemon listens on the socket.
    #[error("no daemon at {0}")]
    NoDaemon(String),
    /// The conversation broke off.
    #[error("daemon connection failed: {0}")]
    Broken(String),
}

/// Sends `req` to the daemon at `socket` and calls `on_event` for every event until the
/// last one, which is returned.
pub async fn download_via_daemon(
    socket: &Path,
    req: &DownloadRequest,
    mut on_event: impl FnMut(&Event),
) -> Result<Event, ClientError> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|_| ClientError::NoDaemon(socket.display().to_string()))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ClientError::Broken(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let body = serde_json::to_vec(req).map_err(|e| ClientError::Broken(e.to_string()))?;
    let request = http::Request::post("/download")
        .header(http::header::HOST, "dfdaemon")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| ClientError::Broken(e.to_string()))?;
    let resp = sender
        .send_request(request)
        .await
        .map_err(|e| ClientError::Broken(e.to_string()))?;
    let mut body = resp.into_body();
    let mut pending: Vec<u8> = Vec::new();
    let mut last: Option<Event> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ClientError::Broken(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        pending.extend_from_slice(&data);
        while let Some(pos) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=pos).collect();
            let ev: Event = serde_json::from_slice(&line)
                .map_err(|e| ClientError::Broken(format!("bad event from daemon: {e}")))?;
            on_event(&ev);
            if matches!(ev, Event::Done(_) | Event::Error { .. }) {
                last = Some(ev);
            }
        }
    }
    last.ok_or_else(|| ClientError::Broken("daemon closed the connection mid-download".into()))
}
