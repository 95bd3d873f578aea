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

use crate::{acquire, Limiter, LIMIT_CHUNK};

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
    let read = tokio::task::spawn_blocking(move || data.read_piece(num)).await;
    let bytes = match read {
        Ok(Ok(Some(b))) => Bytes::from(b),
        Ok(Ok(None)) => return refuse(&st, StatusCode::NOT_FOUND, "piece not held\n".into()),
        Ok(Err(e)) => {
            tracing::warn!(task = %task, piece = num, error = %e, "reading piece failed");
            return refuse(&st, StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n"));
        }
        Err(e) => return refuse(&st, StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    };
    let len = bytes.len();
    st.stats.pieces.fetch_add(1, Ordering::Relaxed);
    st.stats.bytes.fetch_add(len as u64, Ordering::Relaxed);
    let body = match st.limit.clone() {
        None => Body::from(bytes),
        Some(limit) => {
            let chunks = futures_util::stream::unfold((bytes, limit), |(mut rest, limit)| async {
                if rest.is_empty() {
                    return None;
                }
                let chunk = rest.split_to(rest.len().min(LIMIT_CHUNK));
                acquire(std::slice::from_ref(&limit), chunk.len()).await;
                Some((Ok::<_, std::io::Error>(chunk), (rest, limit)))
            });
            Body::from_stream(chunks)
        }
    };
    Response::builder()
        .header(header::CONTENT_LENGTH, len)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(body)
        .unwrap_or_else(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response())
}
