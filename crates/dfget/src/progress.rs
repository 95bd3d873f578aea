//! Progress display: a bar on a terminal, a line a second otherwise.

use std::io::IsTerminal;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use odonata_daemon::api::Event;

/// Shows download progress when asked to.
pub(crate) struct Progress {
    bar: Option<ProgressBar>,
    lines: bool,
    last_line: Option<Instant>,
    started: Instant,
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

impl Progress {
    pub(crate) fn new(show: bool, url: &str) -> Self {
        let tty = std::io::stderr().is_terminal();
        let bar = (show && tty).then(|| {
            let b = ProgressBar::new(0);
            let style = ProgressStyle::with_template(
                "{msg} [{bar:40.cyan/blue}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            b.set_style(style);
            b.set_message(url.rsplit('/').next().unwrap_or(url).to_owned());
            b
        });
        Self {
            bar,
            lines: show && !tty,
            last_line: None,
            started: Instant::now(),
        }
    }

    pub(crate) fn event(&mut self, ev: &Event) {
        let Event::Progress { done, total } = ev else {
            return;
        };
        if let Some(b) = &self.bar {
            if let Some(t) = total {
                b.set_length(*t);
            }
            b.set_position(*done);
        } else if self.lines {
            let due = self
                .last_line
                .is_none_or(|t| t.elapsed().as_millis() >= 1000);
            if due || total.is_some_and(|t| t == *done) {
                self.last_line = Some(Instant::now());
                let secs = self.started.elapsed().as_secs_f64().max(0.001);
                let pct = total.map_or(String::new(), |t| {
                    format!("{:5.1}% ", 100.0 * *done as f64 / (t.max(1)) as f64)
                });
                eprintln!(
                    "progress: {pct}{:.1}/{} MiB {:.1} MiB/s",
                    mib(*done),
                    total.map_or("?".into(), |t| format!("{:.1}", mib(t))),
                    mib(*done) / secs
                );
            }
        }
    }

    pub(crate) fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
