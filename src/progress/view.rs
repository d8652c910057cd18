//! What the console says about each lane while a run goes, as pure functions of what was
//! sampled: rows done of the lane's total, its pace (rows and changes per second over the last
//! [`PACE_WINDOW`], this invocation's work only — a resumed run's earlier rows are not pace),
//! its ETA, 429s and retried requests, and what it is waiting for (a pause after a 429,
//! confirmations). The total's ETA is the slowest lane's.
//!
//! The ETA of a lane is the longer of two: its remaining rows at its recent pace, and its
//! remaining requests (rows × the requests per row so far) at the rate it keeps to — a lane
//! that raced through a listing's answers still meets the provider's limit. Before a lane has
//! finished any row it has no ETA.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::pipeline::estimate::{about, thousands};

/// How far back the pace looks.
pub const PACE_WINDOW: Duration = Duration::from_secs(30);

/// One lane, as sampled.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LaneSample {
    pub name: String,
    /// The lane's rows in the job.
    pub total: u64,
    /// Rows final, earlier invocations' too.
    pub finished: u64,
    /// Rows this invocation finished, and those that changed something.
    pub finished_now: u64,
    pub changed_now: u64,
    /// This invocation's requests, 429s and requests retried (failed on the way or with a
    /// 5xx).
    pub requests: u64,
    pub rate_limited: u64,
    pub retried: u64,
    /// Changes awaiting confirmation.
    pub confirming: u64,
    /// The pause after a 429 still to run.
    pub paused_for: Option<Duration>,
    /// Requests per second the lane keeps to, if it keeps to a rate.
    pub rate: Option<f64>,
}

/// A lane's recent samples, for its pace.
#[derive(Debug, Default)]
pub struct Pace {
    samples: VecDeque<(Instant, u64, u64)>,
}

impl Pace {
    /// Adds a sample (this invocation's finished and changed rows at `at`) and forgets those
    /// older than [`PACE_WINDOW`] (keeping one to measure from).
    pub fn add(&mut self, at: Instant, finished_now: u64, changed_now: u64) {
        self.samples.push_back((at, finished_now, changed_now));
        while self.samples.len() > 2 && at.duration_since(self.samples[1].0) >= PACE_WINDOW {
            self.samples.pop_front();
        }
    }

    /// Rows and changes per second over the window; `None` before a second has passed.
    pub fn rates(&self) -> Option<(f64, f64)> {
        let (first, last) = (self.samples.front()?, self.samples.back()?);
        let secs = last.0.duration_since(first.0).as_secs_f64();
        (secs >= 1.0).then(|| {
            (
                (last.1 - first.1) as f64 / secs,
                (last.2 - first.2) as f64 / secs,
            )
        })
    }
}

/// A lane as the console shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct LaneView {
    pub sample: LaneSample,
    /// Rows and changes per second, recently.
    pub pace: Option<(f64, f64)>,
}

impl LaneView {
    pub fn remaining(&self) -> u64 {
        self.sample.total.saturating_sub(self.sample.finished)
    }

    /// How long the lane's remaining rows take (see the module doc); `None` when it cannot
    /// be told yet.
    pub fn eta(&self) -> Option<Duration> {
        let s = &self.sample;
        let remaining = self.remaining() as f64;
        if remaining == 0.0 {
            return Some(Duration::ZERO);
        }
        if s.finished_now == 0 {
            return None;
        }
        let by_pace = self
            .pace
            .map(|(rows, _)| rows)
            .filter(|r| *r > 0.0)
            .map(|r| remaining / r);
        let per_row = s.requests as f64 / s.finished_now as f64;
        let by_limit = s.rate.filter(|r| *r > 0.0).map(|r| remaining * per_row / r);
        let secs = match (by_pace, by_limit) {
            (Some(a), Some(b)) => a.max(b),
            (a, b) => a.or(b)?,
        };
        let pause = s.paused_for.unwrap_or_default();
        Some(Duration::from_secs_f64(secs.min(1e9)) + pause)
    }

    /// What the lane waits for, if anything.
    pub fn waiting(&self) -> Option<String> {
        let s = &self.sample;
        if let Some(p) = s.paused_for.filter(|p| !p.is_zero()) {
            return Some(format!(
                "paused by 429, resuming in {} s",
                p.as_secs_f64().ceil() as u64
            ));
        }
        (self.remaining() == 0 && s.confirming > 0).then(|| {
            format!(
                "confirming {} change{}",
                thousands(s.confirming),
                if s.confirming == 1 { "" } else { "s" }
            )
        })
    }

    /// Everything after the lane's name and counts: pace, ETA, 429s, retries, what it waits
    /// for.
    pub fn detail(&self) -> String {
        let s = &self.sample;
        let pace = match self.pace {
            Some((_, changes)) => format!("{changes:.0} changes/s"),
            None => "– changes/s".into(),
        };
        let eta = match (self.remaining(), self.eta()) {
            (0, _) => "done".to_string(),
            (_, Some(eta)) => format!("ETA {}", about(eta)),
            (_, None) => "ETA –".to_string(),
        };
        let mut parts = vec![
            pace,
            eta,
            format!("{} × 429", thousands(s.rate_limited)),
            format!("{} retried", thousands(s.retried)),
        ];
        if s.confirming > 0 && self.remaining() > 0 {
            parts.push(format!("{} confirming", thousands(s.confirming)));
        }
        let mut line = parts.join(", ");
        if let Some(waiting) = self.waiting() {
            line.push_str(&format!("; {waiting}"));
        }
        line
    }

    /// One plain line: "emnify: 1,234/40,000 rows, 7 changes/s, ETA 1 h 36 min, 0 × 429,
    /// 0 retried".
    pub fn line(&self) -> String {
        format!(
            "{}: {}/{} rows, {}",
            self.sample.name,
            thousands(self.sample.finished),
            thousands(self.sample.total),
            self.detail()
        )
    }
}

/// The run's ETA: the slowest lane's; `None` while a lane with rows left cannot tell.
pub fn total_eta(lanes: &[LaneView]) -> Option<Duration> {
    lanes
        .iter()
        .map(LaneView::eta)
        .try_fold(Duration::ZERO, |longest, eta| Some(longest.max(eta?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emnify() -> LaneSample {
        LaneSample {
            name: "emnify".into(),
            total: 40_000,
            finished: 1_000,
            finished_now: 1_000,
            changed_now: 1_000,
            requests: 1_000,
            rate: Some(6.65),
            ..LaneSample::default()
        }
    }

    #[test]
    fn the_documented_limit_binds_the_eta_when_the_recent_pace_is_faster() {
        // 100 rows/s recently, but 39,000 requests at 6.65/s take 98 minutes.
        let view = LaneView {
            sample: emnify(),
            pace: Some((100.0, 100.0)),
        };
        assert_eq!(view.eta().unwrap().as_secs(), 5_864);
        assert_eq!(
            view.line(),
            "emnify: 1,000/40,000 rows, 100 changes/s, ETA 1 h 38 min, 0 × 429, 0 retried"
        );
    }

    #[test]
    fn a_resumed_lane_is_paced_by_this_invocation_only() {
        // 39,000 rows finished earlier; this invocation did 10 in 10 s.
        let view = LaneView {
            sample: LaneSample {
                name: "twilio".into(),
                total: 40_000,
                finished: 39_010,
                finished_now: 10,
                changed_now: 10,
                requests: 10,
                ..LaneSample::default()
            },
            pace: Some((1.0, 1.0)),
        };
        assert_eq!(view.eta(), Some(Duration::from_secs(990)));
    }

    #[test]
    fn a_paused_or_confirming_lane_says_what_it_waits_for() {
        let paused = LaneView {
            sample: LaneSample {
                paused_for: Some(Duration::from_millis(11_200)),
                rate_limited: 3,
                ..emnify()
            },
            pace: None,
        };
        assert_eq!(
            paused.line(),
            "emnify: 1,000/40,000 rows, – changes/s, ETA 1 h 38 min, 3 × 429, 0 retried; paused by 429, resuming in 12 s"
        );
        let confirming = LaneView {
            sample: LaneSample {
                name: "twilio".into(),
                total: 1_200,
                finished: 1_200,
                confirming: 1_200,
                ..LaneSample::default()
            },
            pace: None,
        };
        assert_eq!(
            confirming.waiting().as_deref(),
            Some("confirming 1,200 changes")
        );
        assert!(confirming.line().contains("done"));
    }

    #[test]
    fn the_slowest_lane_sets_the_total_and_an_unknown_one_leaves_it_unknown() {
        let fast = LaneView {
            sample: LaneSample {
                total: 100,
                finished: 50,
                finished_now: 50,
                requests: 50,
                ..LaneSample::default()
            },
            pace: Some((50.0, 50.0)),
        };
        let slow = LaneView {
            sample: emnify(),
            pace: Some((6.0, 6.0)),
        };
        assert_eq!(total_eta(&[fast.clone(), slow.clone()]), slow.eta());
        let unknown = LaneView {
            sample: LaneSample {
                total: 10,
                ..LaneSample::default()
            },
            pace: None,
        };
        assert_eq!(total_eta(&[fast, unknown]), None);
    }

    #[test]
    fn pace_looks_back_thirty_seconds() {
        let t0 = Instant::now();
        let mut pace = Pace::default();
        pace.add(t0, 0, 0);
        assert_eq!(pace.rates(), None);
        for s in 1..=60u64 {
            // 10 rows/s for the first 30 s, then 2 rows/s.
            let rows = if s <= 30 { s * 10 } else { 300 + (s - 30) * 2 };
            pace.add(t0 + Duration::from_secs(s), rows, rows / 2);
        }
        let (rows, changes) = pace.rates().unwrap();
        assert!((rows - 2.0).abs() < 0.3, "{rows}");
        assert!((changes - 1.0).abs() < 0.2, "{changes}");
    }
}
