//! The test kit's HTTP servers run in the background and stop when their owner drops.

use axum::Router;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// Stops its server when dropped.
pub(crate) struct Background(CancellationToken);

impl Drop for Background {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// Serves `app` on `listener` (HTTPS when `tls` is given) until the returned guard drops.
pub(crate) fn serve(listener: TcpListener, app: Router, tls: Option<TlsAcceptor>) -> Background {
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        match tls {
            Some(acceptor) => crate::tls::serve(listener, app, acceptor, s).await,
            None => {
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async move { s.cancelled().await })
                    .await;
            }
        }
    });
    Background(stop)
}
