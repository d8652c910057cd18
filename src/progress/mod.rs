//! The live progress display of SPEC 4, on stderr. On a terminal: one bar per provider lane
//! and one for the total (rows done of total, changes/s, ETA, 429s, retries, what a lane waits
//! for — [`view`]). Not on a terminal (a file, a pipe): one plain line per lane every
//! `--progress-interval` (30 s by default), without escape codes. `-q`: nothing.
//!
//! Every other line the run prints — its own messages and log lines ([`ConsoleWriter`]) —
//! goes through the one [`console`], which takes the bars off the screen while it writes, so
//! they are never torn or left behind as stale copies.

pub mod view;

use std::io::{IsTerminal, Write};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::pipeline::estimate::about;
use crate::pipeline::live::Live;
use view::LaneView;

/// The default `--progress-interval`.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Bars redrawn in place, for a person watching a terminal.
    Bars,
    /// A plain line per lane now and then, for a file or a pipe.
    Lines,
    Silent,
}

/// Bars on a terminal, lines elsewhere, nothing when quiet.
pub fn mode(stderr_is_terminal: bool, quiet: bool) -> Mode {
    match (quiet, stderr_is_terminal) {
        (true, _) => Mode::Silent,
        (false, true) => Mode::Bars,
        (false, false) => Mode::Lines,
    }
}

/// The one place bars are drawn and other lines written past them (hidden when stderr is
/// not a terminal: then lines are written as they are).
pub fn console() -> &'static MultiProgress {
    static CONSOLE: OnceLock<MultiProgress> = OnceLock::new();
    CONSOLE.get_or_init(|| {
        let target = match std::io::stderr().is_terminal() {
            true => ProgressDrawTarget::stderr(),
            false => ProgressDrawTarget::hidden(),
        };
        MultiProgress::with_draw_target(target)
    })
}

/// Writes `bytes` to stderr past the bars. A closed stderr (`2>&1 | head`) must not stop the
/// run: write, never panic.
fn write_past_bars(bytes: &[u8]) {
    console().suspend(|| {
        let _ = std::io::stderr().write_all(bytes);
    });
}

/// The log's writer (`tracing_subscriber`'s `MakeWriter`): each event is written whole,
/// past the bars.
#[derive(Clone, Copy, Default)]
pub struct ConsoleWriter;

/// One event's bytes, written past the bars when the event is complete.
pub struct EventBuffer(Vec<u8>);

impl Write for EventBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for EventBuffer {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            write_past_bars(&self.0);
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for ConsoleWriter {
    type Writer = EventBuffer;

    fn make_writer(&'a self) -> EventBuffer {
        EventBuffer(Vec::with_capacity(256))
    }
}

/// The bars of one run (on a terminal).
struct Bars {
    lanes: Vec<(String, ProgressBar)>,
    total: ProgressBar,
}

#[derive(Clone)]
pub struct Progress {
    mode: Mode,
    total: u64,
    bars: Option<Arc<Bars>>,
    interval: Duration,
    /// When lines were last printed (not on a terminal).
    last_lines: Arc<Mutex<Instant>>,
}

impl Progress {
    /// The display of a run with these lanes (name, rows in the job) and `total` rows.
    pub fn new(lanes: &[(String, u64)], total: u64, quiet: bool, interval: Duration) -> Progress {
        let mode = mode(std::io::stderr().is_terminal(), quiet);
        let bars = (mode == Mode::Bars).then(|| {
            let width = lanes.iter().map(|(n, _)| n.len()).max().unwrap_or(5).max(5);
            let style = ProgressStyle::with_template(&format!(
                "{{prefix:<{width}}} {{bar:24}} {{pos}}/{{len}} {{msg}}"
            ))
            .expect("valid template");
            let bar = |prefix: &str, len: u64| {
                let bar = console().add(ProgressBar::new(len));
                bar.set_style(style.clone());
                bar.set_prefix(prefix.to_string());
                bar
            };
            let lanes = lanes
                .iter()
                .map(|(name, rows)| (name.clone(), bar(name, *rows)))
                .collect();
            let total_bar = bar("total", total);
            Arc::new(Bars {
                lanes,
                total: total_bar,
            })
        });
        Progress {
            mode,
            total,
            bars,
            interval,
            last_lines: Arc::new(Mutex::new(Instant::now())),
        }
    }

    /// Reflects the committed outcomes in the total.
    pub fn update(&self, live: &Live) {
        if let Some(bars) = &self.bars {
            bars.total
                .set_position(live.finished.load(Ordering::Relaxed));
        }
    }

    /// Shows each lane as sampled now (`note`: what the whole run waits for, such as its
    /// window). Bars are redrawn; lines are printed once per interval.
    pub fn tick(&self, lanes: &[LaneView], live: &Live, note: Option<&str>) {
        let eta = match view::total_eta(lanes) {
            Some(eta) if eta.is_zero() => "done".to_string(),
            Some(eta) => format!("ETA {}", about(eta)),
            None => "ETA –".into(),
        };
        let mut total = vec![eta, outcomes(live)];
        total.extend(note.map(str::to_string));
        let total = total
            .into_iter()
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>();
        match (&self.bars, self.mode) {
            (Some(bars), _) => {
                for (name, bar) in &bars.lanes {
                    if let Some(v) = lanes.iter().find(|v| &v.sample.name == name) {
                        bar.set_position(v.sample.finished);
                        bar.set_message(v.detail());
                    }
                }
                bars.total
                    .set_position(live.finished.load(Ordering::Relaxed));
                bars.total.set_message(total.join(" · "));
            }
            (None, Mode::Lines) => {
                let mut last = self.last_lines.lock().expect("progress lock");
                if last.elapsed() < self.interval {
                    return;
                }
                *last = Instant::now();
                let mut text = String::new();
                for v in lanes {
                    text.push_str(&format!("simbatch: progress: {}\n", v.line()));
                }
                text.push_str(&format!(
                    "simbatch: progress: total: {}/{} rows, {}\n",
                    crate::pipeline::estimate::thousands(live.finished.load(Ordering::Relaxed)),
                    crate::pipeline::estimate::thousands(self.total),
                    total.join(", ")
                ));
                write_past_bars(text.as_bytes());
            }
            _ => {}
        }
    }

    /// Prints a line without tearing the bars.
    pub fn println(&self, line: &str) {
        if self.mode == Mode::Silent {
            return;
        }
        write_past_bars(format!("{line}\n").as_bytes());
    }

    pub fn finish(&self) {
        if let Some(bars) = &self.bars {
            for (_, bar) in &bars.lanes {
                bar.finish_and_clear();
                console().remove(bar);
            }
            bars.total.finish_and_clear();
            console().remove(&bars.total);
        }
    }
}

/// "succeeded 1,200 · failed 3": the outcomes so far.
fn outcomes(live: &Live) -> String {
    live.outcomes()
        .iter()
        .map(|(o, n)| format!("{o} {}", crate::pipeline::estimate::thousands(*n)))
        .collect::<Vec<_>>()
        .join(" · ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_on_a_terminal_lines_elsewhere_nothing_when_quiet() {
        assert_eq!(mode(true, false), Mode::Bars);
        assert_eq!(mode(false, false), Mode::Lines);
        assert_eq!(mode(true, true), Mode::Silent);
        assert_eq!(mode(false, true), Mode::Silent);
    }
}
