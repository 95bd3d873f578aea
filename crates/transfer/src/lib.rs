//! Moving pieces between hosts: the upload server every seed and peer runs, and the
//! client that fetches and verifies a piece.
//!
//! Wire format: `GET /pieces/{task_id}/{num}` over HTTP/1.1 keep-alive; the answer is the
//! piece's bytes. Chosen over a custom framed protocol because it is debuggable with curl,
//! reuses connections, and measured fast enough on loopback (docs/benchmarks.md).

#![warn(missing_docs, unreachable_pub)]

mod client;
pub mod runtime;
mod server;

pub use client::{FetchError, PieceClient};
pub use runtime::shutdown_signal;
pub use server::{upload_router, UploadStats};

use std::sync::Arc;

/// A byte-rate limiter shared by whoever must stay under one limit.
pub type Limiter = Arc<leaky_bucket::RateLimiter>;

/// Chunk size for rate-limited streaming: small enough for smooth shaping.
pub const LIMIT_CHUNK: usize = 64 * 1024;

/// A limiter allowing `bytes_per_sec`, with a burst of a tenth of a second.
pub fn limiter(bytes_per_sec: u64) -> Limiter {
    let per_tick = (bytes_per_sec / 10).max(LIMIT_CHUNK as u64);
    let per_tick = usize::try_from(per_tick).unwrap_or(usize::MAX);
    Arc::new(
        leaky_bucket::RateLimiter::builder()
            .max(per_tick)
            .initial(per_tick)
            .refill(per_tick)
            .interval(std::time::Duration::from_millis(100))
            .fair(false)
            .build(),
    )
}

/// Waits until every limiter in `limits` allows `n` more bytes.
pub async fn acquire(limits: &[Limiter], n: usize) {
    for l in limits {
        // A request larger than the bucket would wait forever; take it in bucket-sized bites.
        let mut left = n;
        while left > 0 {
            let bite = left.min(l.max());
            l.acquire(bite).await;
            left -= bite;
        }
    }
}
