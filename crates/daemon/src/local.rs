//! The daemon side of the local API (see [`crate::api`]).

use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::api::{DownloadRequest, Event};
use crate::engine::Engine;

/// The local API router.
pub(crate) fn local_router(engine: Engine) -> Router {
    Router::new()
        .route("/download", post(download))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(engine)
}

fn line(e: &Event) -> Bytes {
    let mut v = serde_json::to_vec(e).unwrap_or_else(|_| b"{}".to_vec());
    v.push(b'\n');
    Bytes::from(v)
}

async fn download(
    State(engine): State<Engine>,
    body: Result<Json<DownloadRequest>, JsonRejection>,
) -> Response {
    let req = match body {
        Ok(Json(r)) => r,
        Err(e) => {
            let ev = Event::Error {
                message: format!("bad request: {}", e.body_text()),
            };
            return (StatusCode::BAD_REQUEST, line(&ev)).into_response();
        }
    };
    let (tx, rx) = mpsc::channel::<Event>(64);
    tokio::spawn(async move {
        let final_event = match engine.download(req, tx.clone()).await {
            Ok(outcome) => Event::Done(outcome),
            Err(e) => Event::Error {
                message: e.to_string(),
            },
        };
        let _ = tx.send(final_event).await;
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let e = rx.recv().await?;
        Some((Ok::<_, std::convert::Infallible>(line(&e)), rx))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response())
}
