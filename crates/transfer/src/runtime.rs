//! What every Odonata binary needs around its service: logging set-up, signals, a bounded
//! shutdown, and metrics in Prometheus text format.

use std::fmt::Write as _;

use tokio_util::sync::CancellationToken;

/// Logs to stderr at `default` level unless `RUST_LOG` says otherwise.
pub fn init_logging(default: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// Resolves on SIGINT or SIGTERM (for the binaries' graceful shutdown).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// A token cancelled by SIGINT or SIGTERM.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let stopper = token.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        stopper.cancel();
    });
    token
}

/// Resolves a while after shutdown began: long downloads must not hold the process forever.
pub async fn grace_period(token: CancellationToken) {
    token.cancelled().await;
    tokio::time::sleep(std::time::Duration::from_secs(10)).await;
}

/// One sample for [`render_metrics`]: name, help text, `counter` or `gauge`, value.
pub type Metric<'a> = (&'a str, &'a str, &'a str, u64);

/// Renders samples in the Prometheus text exposition format.
pub fn render_metrics(metrics: &[Metric<'_>]) -> String {
    let mut out = String::new();
    for (name, help, kind, value) in metrics {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_text_format() {
        let text = render_metrics(&[("a_total", "As.", "counter", 3)]);
        assert_eq!(
            text,
            "# HELP a_total As.\n# TYPE a_total counter\na_total 3\n"
        );
    }
}
