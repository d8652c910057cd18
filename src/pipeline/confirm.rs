//! Confirmation of asynchronous changes, one task per lane. Workers hand an accepted change
//! over and move on to the next row (a worker waiting out Twilio's or Telnyx's settling time
//! would cap the lane at workers ÷ delay rows per second); this task sweeps the waiting changes
//! in batches where the provider can list them, through the same rate gate as everything else,
//! and records each outcome — or `pending` once `--wait-timeout` has passed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::{mpsc, oneshot};

use super::engine::{Stop, StopReason};
use super::lane::Lane;
use super::writer::Writer;
use crate::provider::{ErrorClass, Polled};
use crate::store::{Outcome, Phase, RowRecord};

/// First look at a newly accepted change, and the pace of sweeps after that. A sweep costs a
/// request or a few whatever the number of rows waiting, so a slower pace keeps confirmation
/// near 1–2% of the requests of a large job.
const FIRST_LOOK: Duration = Duration::from_millis(250);
const SWEEP_EVERY: Duration = Duration::from_secs(1);

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

#[derive(Clone)]
pub struct Confirmer {
    tx: mpsc::UnboundedSender<Handoff>,
}

impl Confirmer {
    pub fn submit(&self, handoff: Handoff) {
        if let Err(mpsc::error::SendError(h)) = self.tx.send(handoff) {
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
    ) -> (Confirmer, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(lane, writer, wait, stop, rx));
        (Confirmer { tx }, task)
    }
}

struct Waiting {
    handoff: Handoff,
    deadline: Instant,
    next_look: Instant,
}

async fn finish(
    writer: &Writer,
    mut h: Handoff,
    outcome: Outcome,
    reason: Option<String>,
    after: Option<String>,
) {
    h.record.phase = Phase::Done;
    h.record.outcome = Some(outcome);
    h.record.reason = reason;
    if let Some(after) = after {
        h.record.after = Some(after);
    }
    h.record.finished_at = Some(Utc::now());
    h.record.latency_ms = Some(h.started.elapsed().as_millis() as u64);
    writer.put(h.index, h.record).await;
    if let Some(done) = h.done {
        let _ = done.send(Some(outcome));
    }
}

async fn run(
    lane: Arc<Lane>,
    writer: Writer,
    wait: Duration,
    stop: Arc<Stop>,
    mut rx: mpsc::UnboundedReceiver<Handoff>,
) {
    let mut waiting: Vec<Waiting> = Vec::new();
    let mut open = true;
    loop {
        // Take in new handoffs; when idle, block for the next one.
        if waiting.is_empty() && open {
            match rx.recv().await {
                Some(h) => waiting.push(Waiting {
                    deadline: Instant::now() + wait,
                    next_look: Instant::now() + FIRST_LOOK,
                    handoff: h,
                }),
                None => open = false,
            }
        }
        while let Ok(h) = rx.try_recv() {
            waiting.push(Waiting {
                deadline: Instant::now() + wait,
                next_look: Instant::now() + FIRST_LOOK,
                handoff: h,
            });
        }
        if waiting.is_empty() && !open {
            return;
        }
        if waiting.is_empty() {
            continue;
        }
        if stop.requested() {
            // Leave them pending: the next run polls them instead of sending again.
            for w in waiting.drain(..) {
                finish(
                    &writer,
                    w.handoff,
                    Outcome::Pending,
                    Some("accepted; not yet confirmed (run again to confirm)".into()),
                    None,
                )
                .await;
            }
            continue;
        }
        let due = waiting
            .iter()
            .map(|w| w.next_look)
            .min()
            .expect("not empty");
        tokio::select! {
            _ = tokio::time::sleep_until(due.into()) => {}
            h = rx.recv(), if open => {
                match h {
                    Some(h) => waiting.push(Waiting { deadline: Instant::now() + wait, next_look: Instant::now() + FIRST_LOOK, handoff: h }),
                    None => open = false,
                }
                continue;
            }
        }
        let now = Instant::now();
        let (look, later): (Vec<Waiting>, Vec<Waiting>) =
            waiting.drain(..).partition(|w| w.next_look <= now);
        waiting = later;
        let queries: Vec<(String, String)> = look
            .iter()
            .map(|w| (w.handoff.reference.clone(), w.handoff.after.clone()))
            .collect();
        let results = lane.sweep(&queries).await;
        for (mut w, result) in look.into_iter().zip(results) {
            w.handoff.record.attempts += 1;
            match result {
                Ok(Polled::Done { after }) => {
                    finish(&writer, w.handoff, Outcome::Succeeded, None, Some(after)).await
                }
                Ok(Polled::Failed { reason }) => {
                    finish(&writer, w.handoff, Outcome::Failed, Some(reason), None).await
                }
                Err(e) if e.class == ErrorClass::Auth => {
                    stop.request(StopReason::Auth {
                        provider: lane.name.clone(),
                        message: e.to_string(),
                    });
                    waiting.push(w);
                }
                Err(e) if !e.is_retryable() => {
                    let reason = format!("confirmation failed: {e}");
                    finish(&writer, w.handoff, Outcome::Unknown, Some(reason), None).await;
                }
                Ok(Polled::Waiting) | Err(_) if Instant::now() >= w.deadline => {
                    finish(
                        &writer,
                        w.handoff,
                        Outcome::Pending,
                        Some("accepted; not yet confirmed (run again to confirm)".into()),
                        None,
                    )
                    .await;
                }
                Ok(Polled::Waiting) | Err(_) => {
                    w.next_look = Instant::now() + SWEEP_EVERY;
                    waiting.push(w);
                }
            }
        }
    }
}
