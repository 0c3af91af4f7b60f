//! The progress display on stderr: on a terminal, one bar over all scenarios with the current
//! phase and live counters; otherwise (CI, pipes) one plain line per phase.

use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::load::Live;

pub struct Progress {
    bar: ProgressBar,
    tty: bool,
    label: Arc<Mutex<(String, Instant)>>,
    ticker: Option<JoinHandle<()>>,
}

impl Progress {
    /// `units`: scenario runs (scenarios × gateways).
    pub fn new(units: u64, live: Arc<Live>) -> Self {
        let tty = std::io::stderr().is_terminal();
        let bar = if tty {
            ProgressBar::with_draw_target(Some(units), ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:20} {pos}/{len} {wide_msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let label = Arc::new(Mutex::new((String::new(), Instant::now())));
        let ticker = tty.then(|| {
            let (bar, label) = (bar.clone(), label.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(200));
                loop {
                    tick.tick().await;
                    let (text, since) =
                        label
                            .lock()
                            .map(|l| (l.0.clone(), l.1))
                            .unwrap_or_else(|e| {
                                let l = e.into_inner();
                                (l.0.clone(), l.1)
                            });
                    bar.set_message(format!(
                        "{text} · {:.1} s · {} ok · {} errors",
                        since.elapsed().as_secs_f64(),
                        live.done.load(Ordering::Relaxed),
                        live.errors.load(Ordering::Relaxed)
                    ));
                    bar.tick();
                }
            })
        });
        Self {
            bar,
            tty,
            label,
            ticker,
        }
    }

    /// A new phase begins.
    pub fn phase(&self, text: String) {
        if !self.tty {
            eprintln!("droid2api-bench: {text}");
        }
        if let Ok(mut l) = self.label.lock() {
            *l = (text, Instant::now());
        }
    }

    /// A line kept above the bar (or printed plainly).
    pub fn line(&self, text: &str) {
        if self.tty {
            self.bar.println(text);
        } else {
            eprintln!("droid2api-bench: {text}");
        }
    }

    /// One scenario run finished.
    pub fn advance(&self) {
        self.bar.inc(1);
    }

    pub fn finish(mut self) {
        if let Some(t) = self.ticker.take() {
            t.abort();
        }
        self.bar.finish_and_clear();
    }
}
