//! The piece upload server.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use odonata_proto::TaskId;
use odonata_storage::Store;

use crate::{acquire, Limiter};

/// Bytes read from disk per body chunk. 256 KiB: with 1 MiB chunks and 8 upload slots a
/// daemon peaked at 92 MiB RSS (16 peers, 1 GiB file), with 256 KiB at 67 MiB; loopback
/// serving stayed at ~2 GiB/s (docs/benchmarks.md).
const READ_CHUNK: usize = 256 * 1024;

/// Counters of what the upload server served.
#[derive(Default, Debug)]
pub struct UploadStats {
    /// Pieces served.
    pub pieces: AtomicU64,
    /// Bytes served.
    pub bytes: AtomicU64,
    /// Requests refused (piece not held, bad request).
    pub misses: AtomicU64,
}

#[derive(Clone)]
struct UploadState {
    store: Arc<Store>,
    stats: Arc<UploadStats>,
    limit: Option<Limiter>,
}

/// The router serving `GET /pieces/{task_id}/{num}` from `store`.
pub fn upload_router(store: Arc<Store>, stats: Arc<UploadStats>, limit: Option<Limiter>) -> Router {
    Router::new()
        .route("/pieces/{task}/{num}", get(serve_piece))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(UploadState {
            store,
            stats,
            limit,
        })
}

fn refuse(st: &UploadState, code: StatusCode, msg: String) -> Response {
    st.stats.misses.fetch_add(1, Ordering::Relaxed);
    (code, msg).into_response()
}

async fn serve_piece(
    State(st): State<UploadState>,
    Path((task, num)): Path<(String, String)>,
) -> Response {
    let Ok(task) = TaskId::parse(&task) else {
        return refuse(&st, StatusCode::BAD_REQUEST, "malformed task id\n".into());
    };
    let Ok(num) = num.parse::<u32>() else {
        return refuse(
            &st,
            StatusCode::BAD_REQUEST,
            "malformed piece number\n".into(),
        );
    };
    let Some(data) = st.store.get(&task) else {
        return refuse(&st, StatusCode::NOT_FOUND, "task not held\n".into());
    };
    let Some((len, _)) = data.piece(num) else {
        return refuse(&st, StatusCode::NOT_FOUND, "piece not held\n".into());
    };
    st.stats.pieces.fetch_add(1, Ordering::Relaxed);
    let start = data.layout().offset(num);
    let (stats, limit) = (st.stats.clone(), st.limit.clone());
    // Stream from the file in chunks: memory per upload stays at one chunk, not one piece.
    let chunks = futures_util::stream::unfold(0u64, move |sent| {
        let (data, stats, limit) = (data.clone(), stats.clone(), limit.clone());
        async move {
            let left = u64::from(len) - sent;
            if left == 0 {
                return None;
            }
            let n = left.min(READ_CHUNK as u64) as usize;
            if let Some(l) = &limit {
                acquire(std::slice::from_ref(l), n).await;
            }
            let read = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; n];
                data.read_at(&mut buf, start + sent).map(|()| buf)
            })
            .await;
            match read {
                Ok(Ok(buf)) => {
                    stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
                    Some((Ok(Bytes::from(buf)), sent + n as u64))
                }
                Ok(Err(e)) => Some((Err(std::io::Error::other(e.to_string())), u64::from(len))),
                Err(e) => Some((Err(std::io::Error::other(e.to_string())), u64::from(len))),
            }
        }
    });
    let body = Body::from_stream(chunks);
    Response::builder()
        .header(header::CONTENT_LENGTH, len)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(body)
        .unwrap_or_else(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response())
}
