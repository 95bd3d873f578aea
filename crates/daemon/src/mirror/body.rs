//! Response bodies of the mirror: whole, empty, streamed from upstream or from a channel.

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use tokio::sync::mpsc;

/// The body type every mirror response uses.
pub(crate) type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// A body of known bytes.
pub(crate) fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// No body.
pub(crate) fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// The upstream's body as it arrives; an upstream break aborts the client's response.
pub(crate) fn from_upstream(resp: reqwest::Response) -> Body {
    let s = resp
        .bytes_stream()
        .map(|r| r.map(Frame::data).map_err(std::io::Error::other));
    StreamBody::new(s).boxed_unsync()
}

/// Chunks sent by a producer task; an `Err` item aborts the response (the connection is
/// cut, so a client never takes a short or wrong body as complete).
pub(crate) fn from_channel(rx: mpsc::Receiver<Result<Bytes, std::io::Error>>) -> Body {
    let s = futures_util::stream::unfold(rx, |mut rx| async move {
        let item = rx.recv().await?;
        Some((item.map(Frame::data), rx))
    });
    StreamBody::new(s).boxed_unsync()
}
