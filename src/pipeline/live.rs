//! What a run has done so far, as it goes: outcomes (for the failure threshold, the progress
//! display and the live view `simbatch status` reads), per lane too — rows finished, this
//! invocation's own rows and changes (a resumed run's rates count only its own work), the
//! changes awaiting confirmation — and the most frequent failure reasons.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::store::Outcome;

/// Outcomes as they are produced (for progress and the failure threshold).
#[derive(Default)]
pub struct Live {
    pub counts: [AtomicU64; 7],
    pub finished: AtomicU64,
    /// This invocation's own finished and failed rows: a resumed run is judged on its own
    /// failures, not stopped at once by the ones it inherited.
    finished_now: AtomicU64,
    failed_now: AtomicU64,
    lanes: Mutex<BTreeMap<String, Arc<LaneLive>>>,
    /// Rows that did not succeed, by the kind of reason ([`crate::report::reason_kind`]).
    reasons: Mutex<BTreeMap<String, u64>>,
}

/// One lane's rows as they finish.
#[derive(Default)]
pub struct LaneLive {
    /// Rows finished, by earlier invocations too.
    pub finished: AtomicU64,
    /// Rows finished by this invocation, and those of them that changed something.
    pub finished_now: AtomicU64,
    pub changed_now: AtomicU64,
    /// Changes accepted by the provider and awaiting confirmation.
    pub confirming: AtomicU64,
}

impl LaneLive {
    /// A change handed over to be confirmed.
    pub fn confirmation_awaited(&self) {
        self.confirming.fetch_add(1, Ordering::Relaxed);
    }

    /// A change's confirmation came (whatever it said).
    pub fn confirmation_came(&self) {
        let _ = self
            .confirming
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }
}

impl Live {
    /// Counts the outcomes of rows finished by earlier invocations in bulk (the finished
    /// prefix, which this invocation does not read).
    pub fn inherit(&self, counts: &[u64; 7]) {
        for (slot, n) in self.counts.iter().zip(counts) {
            slot.fetch_add(*n, Ordering::Relaxed);
            self.finished.fetch_add(*n, Ordering::Relaxed);
        }
    }

    /// The live counts of lane `name`.
    pub fn lane(&self, name: &str) -> Arc<LaneLive> {
        let mut lanes = self.lanes.lock().expect("live lanes lock");
        // Asked for every row's outcome: no allocation once the lane is known.
        if let Some(lane) = lanes.get(name) {
            return lane.clone();
        }
        lanes.entry(name.to_string()).or_default().clone()
    }

    /// Counts an outcome of lane `lane` (see [`Live::record`]).
    pub fn record_in(&self, lane: &str, outcome: Outcome, now: bool) -> (u64, u64) {
        let counts = self.lane(lane);
        counts.finished.fetch_add(1, Ordering::Relaxed);
        if now {
            counts.finished_now.fetch_add(1, Ordering::Relaxed);
            if outcome == Outcome::Succeeded {
                counts.changed_now.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.record(outcome, now)
    }

    /// Counts a row that did not succeed under the kind of its reason.
    pub fn note_reason(&self, kind: String) {
        *self
            .reasons
            .lock()
            .expect("live reasons lock")
            .entry(kind)
            .or_default() += 1;
    }

    /// Rows that did not succeed so far, by the kind of reason.
    pub fn reasons(&self) -> BTreeMap<String, u64> {
        self.reasons.lock().expect("live reasons lock").clone()
    }

    /// The outcomes counted so far, those with rows only.
    pub fn outcomes(&self) -> Vec<(Outcome, u64)> {
        Outcome::ALL
            .iter()
            .map(|o| (*o, self.count(*o)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    pub fn count(&self, outcome: Outcome) -> u64 {
        self.counts[outcome as usize].load(Ordering::Relaxed)
    }

    /// Counts an outcome; `now` when this invocation produced it. Returns this invocation's
    /// (failed, finished) after counting.
    pub fn record(&self, outcome: Outcome, now: bool) -> (u64, u64) {
        self.counts[outcome as usize].fetch_add(1, Ordering::Relaxed);
        self.finished.fetch_add(1, Ordering::Relaxed);
        if !now {
            return (
                self.failed_now.load(Ordering::Relaxed),
                self.finished_now.load(Ordering::Relaxed),
            );
        }
        let failed = if matches!(outcome, Outcome::Failed | Outcome::Unknown) {
            self.failed_now.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            self.failed_now.load(Ordering::Relaxed)
        };
        (
            failed,
            self.finished_now.fetch_add(1, Ordering::Relaxed) + 1,
        )
    }
}
