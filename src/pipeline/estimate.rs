//! How long a lane's work takes at its limits, told before it starts (`plan`): the requests it
//! will send — the reads `plan` itself sent (a run reads the same way: the same listing or the
//! same lookups), one request per row to change, or per chunk where the rows go in bulk
//! ([`super::bulk::requests_for`]) and the listing that confirms them — over the rate the lane
//! keeps to. Confirmations of
//! asynchronous changes add a little (about one request per hundred rows, `benches/README.md`)
//! and are not counted.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::job::Action;
use crate::provider::limiter::LaneLimits;

/// One action's rows in a lane.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ActionWork {
    pub rows: u64,
    /// Rows that would be changed (the rest are skipped or refused before sending).
    pub changes: u64,
    /// How many of the changes go in bulk requests, and how many items per request.
    pub in_bulk: u64,
    pub chunk: usize,
    /// Changes sent on their own that first take the SIM off its device (an emnify delete:
    /// [`crate::provider::Provider::releases_from`]): one request more each.
    pub releases: u64,
}

/// One lane's work, as `plan` found it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LaneWork {
    /// Requests `plan` sent to read the targets.
    pub reads: u64,
    pub actions: BTreeMap<Action, ActionWork>,
}

impl LaneWork {
    /// Bulk requests the changes take.
    pub fn bulk_requests(&self) -> u64 {
        self.actions
            .iter()
            .map(|(action, w)| super::bulk::requests_for(*action, w.in_bulk, w.chunk))
            .sum()
    }

    /// Every request: the reads, one per row changed on its own (two where it is first taken
    /// off its device), the bulk requests and the listing that confirms them.
    pub fn requests(&self) -> u64 {
        let others: u64 = self
            .actions
            .values()
            .map(|w| w.changes - w.in_bulk + w.releases + super::bulk::confirming_pages(w.in_bulk))
            .sum();
        self.reads + others + self.bulk_requests()
    }

    /// The time the requests take at the lane's rate; `None` when it keeps to no rate (only
    /// to requests in flight, as at Twilio: then latency decides).
    pub fn duration(&self, limits: &LaneLimits) -> Option<Duration> {
        let (rate, _) = limits.rate?;
        Some(Duration::from_secs_f64(self.requests() as f64 / rate))
    }

    /// One line: "emnify: 40,000 disable-device in 41 bulk requests; ≈ 81 requests, ≈ 13 s at
    /// 6.65 requests/s".
    pub fn describe(&self, lane: &str, limits: &LaneLimits) -> String {
        let parts: Vec<String> = self
            .actions
            .iter()
            .map(|(action, w)| match w.in_bulk {
                1.. => format!(
                    "{} {} ({} to change) in {} bulk requests",
                    thousands(w.rows),
                    action.name(),
                    thousands(w.changes),
                    thousands(super::bulk::requests_for(*action, w.in_bulk, w.chunk))
                ),
                0 => format!(
                    "{} {} ({} to change)",
                    thousands(w.rows),
                    action.name(),
                    thousands(w.changes)
                ),
            })
            .collect();
        let requests = self.requests();
        let pace = match (self.duration(limits), limits.rate, limits.max_in_flight) {
            (Some(d), Some((rate, _)), _) => {
                format!("≈ {} at {rate:.2} requests/s", about(d))
            }
            (_, _, Some(n)) => format!("no documented request rate (at most {n} in flight)"),
            _ => "no rate limit".to_string(),
        };
        format!(
            "{lane}: {}; ≈ {} requests, {pace}",
            parts.join(", "),
            thousands(requests)
        )
    }
}

/// `40000` as `40,000`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A duration to the second (to the minute past an hour): `13 s`, `4 min 10 s`, `1 h 40 min`.
pub fn about(d: Duration) -> String {
    let s = d.as_secs_f64().ceil() as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3_600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3_600, (s % 3_600).div_ceil(60)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emnify() -> LaneLimits {
        LaneLimits {
            rate: Some((1995.0 / 300.0, 5)),
            ..LaneLimits::default()
        }
    }

    #[test]
    fn bulk_rows_cost_a_request_per_chunk_and_one_by_one_rows_one_each() {
        let mut work = LaneWork {
            reads: 16,
            ..LaneWork::default()
        };
        work.actions.insert(
            Action::DisableDevice,
            ActionWork {
                rows: 40_000,
                changes: 40_000,
                in_bulk: 40_000,
                chunk: 1_000,
                releases: 0,
            },
        );
        // 40 chunks, and 40 pages of the confirming listing.
        assert_eq!(work.bulk_requests(), 40);
        assert_eq!(work.requests(), 96);
        let d = work.duration(&emnify()).unwrap();
        assert_eq!(d.as_secs(), 14, "96 requests at 6.65/s");
        let line = work.describe("emnify", &emnify());
        assert_eq!(
            line,
            "emnify: 40,000 disable-device (40,000 to change) in 40 bulk requests; ≈ 96 requests, ≈ 15 s at 6.65 requests/s"
        );

        work.actions
            .get_mut(&Action::DisableDevice)
            .unwrap()
            .in_bulk = 0;
        assert_eq!(work.requests(), 40_016);
        assert_eq!(about(work.duration(&emnify()).unwrap()), "1 h 41 min");
    }

    #[test]
    fn a_delete_on_its_own_costs_a_release_and_the_delete() {
        let mut work = LaneWork {
            reads: 31,
            ..LaneWork::default()
        };
        work.actions.insert(
            Action::Delete,
            ActionWork {
                rows: 30,
                changes: 30,
                releases: 28,
                ..ActionWork::default()
            },
        );
        assert_eq!(work.requests(), 31 + 30 + 28);
    }

    #[test]
    fn deletes_in_bulk_cost_two_requests_per_chunk() {
        assert_eq!(
            super::super::bulk::requests_for(Action::Delete, 2_500, 1_000),
            6
        );
        assert_eq!(
            super::super::bulk::requests_for(Action::Delete, 0, 1_000),
            0
        );
    }

    #[test]
    fn a_lane_without_a_rate_says_so() {
        let mut work = LaneWork::default();
        work.actions.insert(
            Action::Suspend,
            ActionWork {
                rows: 1_000,
                changes: 900,
                ..ActionWork::default()
            },
        );
        let twilio = LaneLimits {
            max_in_flight: Some(100),
            ..LaneLimits::default()
        };
        assert_eq!(
            work.describe("twilio", &twilio),
            "twilio: 1,000 suspend (900 to change); ≈ 900 requests, no documented request rate (at most 100 in flight)"
        );
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(about(Duration::from_millis(250_500)), "4 min 11 s");
    }
}
