//! Rate-limited log lines, so a flood of bad peers cannot flood the owner's log.

use std::time::{Duration, Instant};

/// Log lines per window.
const LOG_LINES: u32 = 20;
const LOG_WINDOW: Duration = Duration::from_secs(10);

/// Counts the lines of the current window, and those it dropped.
#[derive(Default)]
pub(super) struct Log {
    window: Option<Instant>,
    lines: u32,
    dropped: u64,
}

impl Log {
    pub(super) fn line(&mut self, msg: impl FnOnce() -> String) {
        let now = Instant::now();
        if self
            .window
            .is_none_or(|w| now.duration_since(w) >= LOG_WINDOW)
        {
            if self.dropped > 0 {
                eprintln!(
                    "remora: {} more connection messages suppressed",
                    self.dropped
                );
            }
            *self = Log {
                window: Some(now),
                ..Log::default()
            };
        }
        if self.lines < LOG_LINES {
            self.lines += 1;
            eprintln!("remora: {}", msg());
        } else {
            self.dropped += 1;
        }
    }
}
