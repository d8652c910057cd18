//! Confirmation of asynchronous changes, one task per lane. Workers hand an accepted change
//! over and move on to the next row (a worker waiting out Twilio's or Telnyx's settling time
//! would cap the lane at workers ÷ delay rows per second); this task sweeps the waiting changes
//! in batches where the provider can list them, through the same rate gate as everything else,
//! and records each outcome — or `pending` once `--wait-timeout` has passed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use super::control::{Stop, StopReason};
use super::lane::Lane;
use super::writer::Writer;
use crate::provider::{ErrorClass, Polled};
use crate::store::{codec, Outcome, RowRecord};

/// First look at a newly accepted change, and the pace of sweeps after that. A sweep costs a
/// request or a few whatever the number of rows waiting: every 2 s, Telnyx confirmation costs
/// about 1% of its 98 requests/s (measured: 149 extra requests on a 10,000-row job, with the
/// 40-page inventory listing).
const FIRST_LOOK: Duration = Duration::from_millis(250);
const SWEEP_EVERY: Duration = Duration::from_secs(2);
/// While dispatch is busy, a sweep that took long (pages read one after another: Twilio's
/// status listings grow with the fleet, ten pages of 1,000 at 10,000 SIMs) is followed by a
/// pause of this many times its length, so that sweeping holds a small share of the lane's
/// capacity: at a cap of 20 in flight and 100 ms per request, sweeping every 2 s held 2.75% of
/// the slots and slowed dispatch by as much (measured: 181.9 changes/s where the load generator
/// gets 194.6). Changes a group waits for are swept at [`SWEEP_EVERY`] regardless.
const SWEEP_PAUSE_FACTOR: u32 = 10;
/// The longest pause between busy sweeps, whatever they cost.
const SWEEP_AT_MOST_EVERY: Duration = Duration::from_secs(30);
/// Once no change has been handed over for this long, dispatch is winding down: sweep at the
/// first-look pace so the run's tail is short.
const QUIET_AFTER: Duration = Duration::from_millis(500);
/// A sweep is patient (see [`crate::provider::account::Account::confirm_batch`]) only while
/// every change it looks at is further than this from its wait timeout.
const PATIENCE_BEFORE_DEADLINE: Duration = Duration::from_secs(10);
/// Changes awaiting confirmation per lane, at most: past this, workers wait before handing
/// over more, so that memory stays bounded when a run dispatches faster than its changes
/// settle (or faster than their outcomes are written). Far above what a provider's limit
/// allows in flight: Telnyx's 98 requests/s over a 2-minute settling time is 11,760.
pub const MAX_WAITING: usize = 16_384;

/// An accepted change awaiting confirmation.
pub struct Handoff {
    pub index: u64,
    pub record: RowRecord,
    pub reference: String,
    pub after: String,
    pub started: Instant,
    /// Told the final outcome (groups wait for it before their next step).
    pub done: Option<oneshot::Sender<Option<Outcome>>>,
}

/// A handoff as it reaches the confirmer's task: its place among the waiting changes, and when
/// it was handed over.
type Arrival = (Handoff, OwnedSemaphorePermit, Instant);

/// Told every outcome the confirmer produces (progress, failure threshold).
pub type OnOutcome = Arc<dyn Fn(Outcome) + Send + Sync>;

#[derive(Clone)]
pub struct Confirmer {
    tx: mpsc::UnboundedSender<Arrival>,
    /// One permit per change that may wait (see [`MAX_WAITING`]).
    room: Arc<Semaphore>,
}

impl Confirmer {
    /// Hands a change over, once there is room among the changes awaiting confirmation.
    pub async fn submit(&self, handoff: Handoff) {
        let permit = self
            .room
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        if let Err(mpsc::error::SendError((h, _, _))) =
            self.tx.send((handoff, permit, Instant::now()))
        {
            // The task is gone (it only ends once every sender is dropped): tell the waiter.
            if let Some(done) = h.done {
                let _ = done.send(None);
            }
        }
    }

    /// Starts a lane's confirmer; it ends when every `Confirmer` clone is dropped and nothing waits.
    pub fn start(
        lane: Arc<Lane>,
        writer: Writer,
        wait: Duration,
        stop: Arc<Stop>,
        note: OnOutcome,
    ) -> (Confirmer, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(lane, writer, wait, stop, note, rx));
        let room = Arc::new(Semaphore::new(MAX_WAITING));
        (Confirmer { tx, room }, task)
    }
}

/// A handoff as it waits, its record in the store's compact form: a backlog of 16,384 waiting
/// changes is about 4 MB smaller than with the records as structs.
struct Parked {
    index: u64,
    record: Box<[u8]>,
    reference: Box<str>,
    after: Box<str>,
    started: Instant,
    done: Option<oneshot::Sender<Option<Outcome>>>,
}

impl Parked {
    fn new(h: Handoff) -> Parked {
        Parked {
            index: h.index,
            record: codec::encode(&h.record).into_boxed_slice(),
            reference: h.reference.into_boxed_str(),
            after: h.after.into_boxed_str(),
            started: h.started,
            done: h.done,
        }
    }

    fn into_handoff(self) -> Handoff {
        Handoff {
            index: self.index,
            record: codec::decode(&self.record).expect("a record this process encoded"),
            reference: self.reference.into(),
            after: self.after.into(),
            started: self.started,
            done: self.done,
        }
    }
}

struct Waiting {
    handoff: Parked,
    deadline: Instant,
    next_look: Instant,
    /// Frees its place among the waiting changes when dropped, that is once finished.
    _room: OwnedSemaphorePermit,
}

impl Waiting {
    /// A newly handed-over change: first look soon after it was handed over (not after the
    /// sweep that kept this task busy meanwhile), give up at the wait timeout.
    fn new((handoff, room, at): Arrival, wait: Duration) -> Waiting {
        Waiting {
            handoff: Parked::new(handoff),
            deadline: at + wait,
            next_look: at + FIRST_LOOK,
            _room: room,
        }
    }
}

async fn finish(
    writer: &Writer,
    note: &OnOutcome,
    mut h: Handoff,
    outcome: Outcome,
    reason: Option<String>,
    after: Option<String>,
) {
    if let Some(after) = after {
        h.record.after = Some(after);
    }
    let latency = h.started.elapsed().as_millis() as u64;
    h.record.finish(outcome, reason, Some(latency));
    note(outcome);
    writer.put(h.index, h.record).await;
    if let Some(done) = h.done {
        let _ = done.send(Some(outcome));
    }
}

/// The confirmer's state between sweeps.
struct Confirming {
    lane: Arc<Lane>,
    writer: Writer,
    wait: Duration,
    stop: Arc<Stop>,
    note: OnOutcome,
    waiting: Vec<Waiting>,
    /// Changes may still be handed over (some sender is alive).
    open: bool,
    last_arrival: Instant,
    last_sweep: Instant,
    last_sweep_took: Duration,
}

const NOT_YET_CONFIRMED: &str = "accepted; not yet confirmed (run again to confirm)";

async fn run(
    lane: Arc<Lane>,
    writer: Writer,
    wait: Duration,
    stop: Arc<Stop>,
    note: OnOutcome,
    mut rx: mpsc::UnboundedReceiver<Arrival>,
) {
    let mut c = Confirming {
        lane,
        writer,
        wait,
        stop,
        note,
        waiting: Vec::new(),
        open: true,
        last_arrival: Instant::now(),
        last_sweep: Instant::now() - SWEEP_EVERY,
        last_sweep_took: Duration::ZERO,
    };
    loop {
        // Take in new handoffs; when idle, block for the next one.
        if c.waiting.is_empty() && c.open {
            match rx.recv().await {
                Some(h) => c.arrive(h, false),
                None => c.open = false,
            }
        }
        while let Ok(h) = rx.try_recv() {
            c.arrive(h, true);
        }
        // Quiet: dispatch has ended (every sender is gone) or paused long enough.
        let quiet = !c.open || c.last_arrival.elapsed() >= QUIET_AFTER;
        if quiet {
            let soon = Instant::now() + FIRST_LOOK;
            for w in &mut c.waiting {
                w.next_look = w.next_look.min(soon);
            }
        }
        if c.waiting.is_empty() {
            if !c.open {
                return;
            }
            continue;
        }
        if c.stop.requested() {
            // Leave them pending: the next run polls them instead of sending again.
            for w in std::mem::take(&mut c.waiting) {
                c.finish(w, Outcome::Pending, Some(NOT_YET_CONFIRMED.into()), None)
                    .await;
            }
            continue;
        }
        let due = c.due(quiet);
        tokio::select! {
            _ = tokio::time::sleep_until(due.into()) => {}
            h = rx.recv(), if c.open => {
                match h {
                    Some(h) => c.arrive(h, true),
                    None => c.open = false,
                }
                continue;
            }
        }
        c.sweep(
            if quiet {
                Instant::now().max(due)
            } else {
                Instant::now()
            },
            quiet,
        )
        .await;
    }
}

impl Confirming {
    fn arrive(&mut self, h: Arrival, counts: bool) {
        if counts {
            self.last_arrival = Instant::now();
        }
        self.waiting.push(Waiting::new(h, self.wait));
    }

    /// When the next sweep is due. While changes keep arriving, at most once per
    /// [`SWEEP_EVERY`] whatever their first looks say (each sweep costs requests from the
    /// lane's budget); once they stop, at once.
    fn due(&self, quiet: bool) -> Instant {
        let looks = self.waiting.iter().map(|w| w.next_look);
        let earliest = looks.clone().min().expect("not empty");
        if quiet {
            // Nothing more is coming for now: one sweep once the last of them is due takes them
            // all, where sweeping each at its own first look cost a request or two apiece.
            return looks.max().expect("not empty");
        }
        // Busy: the sweep pace — unless dispatch goes quiet first, when the run's tail starts
        // and waiting out the rest of the pause would only lengthen it.
        let pace = busy_pace(
            self.last_sweep_took,
            self.waiting.len(),
            self.waiting.iter().any(|w| w.handoff.done.is_some()),
        );
        earliest
            .max(self.last_sweep + pace)
            .min(earliest.max(self.last_arrival + QUIET_AFTER))
    }

    /// Asks the provider about every change due by `cutoff` and settles what it says.
    async fn sweep(&mut self, cutoff: Instant, quiet: bool) {
        let now = Instant::now();
        self.last_sweep = now;
        // Taken out in place (order does not matter): partitioning into two new vectors
        // doubled the backlog's memory at every sweep.
        let mut look: Vec<Waiting> = Vec::new();
        let mut i = 0;
        while i < self.waiting.len() {
            if self.waiting[i].next_look <= cutoff {
                look.push(self.waiting.swap_remove(i));
            } else {
                i += 1;
            }
        }
        let queries: Vec<(String, String)> = look
            .iter()
            .map(|w| (w.handoff.reference.to_string(), w.handoff.after.to_string()))
            .collect();
        // Nothing presses: proof that costs much per change may wait to be shared by more —
        // until the waiting changes fill three quarters of their room (past that, workers
        // would soon stop to wait for it).
        let patient = !quiet
            && self.waiting.len() + look.len() < MAX_WAITING / 4 * 3
            && look
                .iter()
                .all(|w| w.handoff.done.is_none() && w.deadline > now + PATIENCE_BEFORE_DEADLINE);
        tracing::debug!(lane = %self.lane.name, looking = queries.len(), waiting = self.waiting.len(), quiet, patient, "sweep starts");
        let results = self.lane.sweep(&queries, patient).await;
        self.last_sweep_took = now.elapsed();
        tracing::debug!(lane = %self.lane.name, took = ?self.last_sweep_took, "sweep ends");
        for (w, result) in look.into_iter().zip(results) {
            self.settle(w, result, now).await;
        }
    }

    /// What one change's answer means: an outcome, or another look later.
    async fn settle(
        &mut self,
        mut w: Waiting,
        result: Result<Polled, crate::provider::ProviderError>,
        swept_at: Instant,
    ) {
        match result {
            Ok(Polled::Done { after }) => {
                self.finish(w, Outcome::Succeeded, None, Some(after)).await
            }
            Ok(Polled::Failed { reason }) => {
                self.finish(w, Outcome::Failed, Some(reason), None).await
            }
            Err(e) if e.stops_run() => {
                self.stop.request(StopReason::provider(&self.lane.name, &e));
                self.waiting.push(w);
            }
            // Not asked: the run is stopping; it ends `pending` with the others.
            Err(e) if e.class == ErrorClass::Stopped => self.waiting.push(w),
            Err(e) if !e.is_retryable() => {
                let reason = format!("confirmation failed: {e}");
                self.finish(w, Outcome::Unknown, Some(reason), None).await;
            }
            Ok(Polled::Waiting) | Err(_) if Instant::now() >= w.deadline => {
                self.finish(w, Outcome::Pending, Some(NOT_YET_CONFIRMED.into()), None)
                    .await;
            }
            Ok(Polled::Waiting) | Err(_) => {
                // From when the sweep started, which is when it saw them still changing (a
                // sweep under a busy lane takes a second or more): once dispatch is quiet, the
                // next sweep then takes them too instead of leaving them for another.
                w.next_look = swept_at + SWEEP_EVERY;
                self.waiting.push(w);
            }
        }
    }

    async fn finish(
        &self,
        w: Waiting,
        outcome: Outcome,
        reason: Option<String>,
        after: Option<String>,
    ) {
        finish(
            &self.writer,
            &self.note,
            w.handoff.into_handoff(),
            outcome,
            reason,
            after,
        )
        .await
    }
}

/// How long after a busy sweep the next one may start: [`SWEEP_EVERY`], or longer after a sweep
/// that took long (see [`SWEEP_PAUSE_FACTOR`]) — unless a group waits for one of the changes or
/// the waiting changes fill half their room (workers would soon stop to wait for it).
fn busy_pace(last_sweep_took: Duration, waiting: usize, group_waits: bool) -> Duration {
    if group_waits || waiting >= MAX_WAITING / 2 {
        return SWEEP_EVERY;
    }
    (last_sweep_took * SWEEP_PAUSE_FACTOR).clamp(SWEEP_EVERY, SWEEP_AT_MOST_EVERY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_costly_sweep_is_followed_by_a_longer_pause_within_bounds() {
        // Cheap sweeps (Telnyx's two short listings): the base pace.
        assert_eq!(
            busy_pace(Duration::from_millis(30), 100, false),
            SWEEP_EVERY
        );
        // Ten pages of 100 ms: ten times as long.
        assert_eq!(
            busy_pace(Duration::from_millis(1_100), 100, false),
            Duration::from_millis(11_000)
        );
        // Never longer than the ceiling.
        assert_eq!(
            busy_pace(Duration::from_secs(10), 100, false),
            SWEEP_AT_MOST_EVERY
        );
        // A group waiting, or the room half full: the base pace again.
        assert_eq!(busy_pace(Duration::from_secs(1), 100, true), SWEEP_EVERY);
        assert_eq!(
            busy_pace(Duration::from_secs(1), MAX_WAITING / 2, false),
            SWEEP_EVERY
        );
    }
}
