//! The live progress display of SPEC 4: on a terminal only (stderr), done/total, rate, ETA,
//! counts per outcome. Messages go through the bar so they never tear it. Whether to show it
//! is a pure function, tested on its own.

use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::pipeline::control::Live;
use crate::store::Outcome;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Bar,
    Silent,
}

/// A bar only for a person watching a terminal.
pub fn mode(stderr_is_terminal: bool, quiet: bool) -> Mode {
    if stderr_is_terminal && !quiet {
        Mode::Bar
    } else {
        Mode::Silent
    }
}

#[derive(Clone)]
pub struct Progress {
    bar: Arc<ProgressBar>,
    quiet: bool,
}

impl Progress {
    pub fn new(total: u64, quiet: bool) -> Progress {
        let bar = match mode(std::io::stderr().is_terminal(), quiet) {
            Mode::Bar => {
                let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
                bar.set_style(
                    ProgressStyle::with_template(
                        "{bar:30} {pos}/{len} rows  {per_sec}  ETA {eta}  {msg}",
                    )
                    .expect("valid template"),
                );
                bar
            }
            Mode::Silent => ProgressBar::hidden(),
        };
        Progress {
            bar: Arc::new(bar),
            quiet,
        }
    }

    /// Reflects the committed outcomes.
    pub fn update(&self, live: &Live) {
        if self.bar.is_hidden() {
            return;
        }
        self.bar.set_position(live.finished.load(Ordering::Relaxed));
        let parts: Vec<String> = [
            Outcome::Succeeded,
            Outcome::Skipped,
            Outcome::Failed,
            Outcome::Pending,
            Outcome::Unknown,
            Outcome::Blocked,
        ]
        .iter()
        .map(|o| (o, live.count(*o)))
        .filter(|(_, n)| *n > 0)
        .map(|(o, n)| format!("{o} {n}"))
        .collect();
        self.bar.set_message(parts.join(" · "));
    }

    /// Prints a line without tearing the bar.
    pub fn println(&self, line: &str) {
        if self.quiet {
            return;
        }
        // A closed stderr (`2>&1 | head`) must not stop the run: write, never panic.
        let write = || {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "{line}");
        };
        if self.bar.is_hidden() {
            write();
        } else {
            self.bar.suspend(write);
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar_only_on_a_terminal_and_not_when_quiet() {
        assert_eq!(mode(true, false), Mode::Bar);
        assert_eq!(mode(false, false), Mode::Silent);
        assert_eq!(mode(true, true), Mode::Silent);
    }
}
