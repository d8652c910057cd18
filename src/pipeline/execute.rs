//! One row, start to finish: observe the target, decide (pre-flight), make the "sending" marker
//! durable, send with retries, confirm an asynchronous change, and return the row's record.
//!
//! Reconciliation lives here too. Whenever a change may have reached the provider without a
//! clean answer — a reset or timeout after sending, a 5xx (a gateway's page after the provider
//! applied it), a 2xx whose body is cut or of another shape, or a crash between the marker and
//! the outcome — the target is read again before anything is re-sent: if the change is already
//! in effect the row succeeded; an asynchronous change still under way is waited for; for eUICC
//! operations, an operation that appeared after the marker was written is adopted instead of
//! scheduling another. A change that may have been applied and cannot be read back ends
//! `unknown`, never `failed` (SPEC 3.1).
//!
//! The steps of a row return `Result<_, RowEnd>`: `Err` ends the row early with its end (its
//! record, a handoff, a stop). That end is the row's normal result, not a cold error path, so
//! clippy's advice to box the large `Err` would only add an allocation per row.
//!
//! Once the run stops, every wait here (retry backoff, waiting for a target to settle) ends at
//! once and no request is sent: the row ends [`RowEnd::Stopped`] and keeps its durable marker,
//! so the next run reconciles it.

#![allow(clippy::result_large_err)]

use std::time::{Duration, Instant};

use chrono::Utc;

use super::control::Stop;
use super::lane::Lane;
use super::preflight::{decide, in_effect};
use super::writer::Writer;
use crate::job::JobRow;
use crate::provider::retry::RetryPolicy;
use crate::provider::{Decision, ErrorClass, Observed, ProviderError, Sent};
use crate::store::{Outcome, Phase, RowRecord};

/// What a row needs from its run.
pub struct RowContext<'a> {
    pub lane: &'a Lane,
    pub policy: RetryPolicy,
    pub preflight: bool,
    pub wait: Option<Duration>,
    pub writer: &'a Writer,
    pub stop: &'a Stop,
}

/// How a row ended (for now).
pub enum RowEnd {
    Record(RowRecord),
    /// Accepted by the provider; the confirmer takes it from here.
    Handoff {
        record: RowRecord,
        reference: String,
        after: String,
        started: Instant,
    },
    /// Credentials were refused: the run must stop; the row stays resumable.
    Aborted(ProviderError),
    /// The run stopped before the row could finish; it stays as stored (a "sending" marker is
    /// reconciled by the next run).
    Stopped,
}

struct Attempt<'a> {
    ctx: &'a RowContext<'a>,
    record: RowRecord,
    started: Instant,
    /// A change request of this row may have reached the provider (one was sent, or an earlier
    /// process was interrupted after its marker): a failure to read the target now leaves the
    /// row `unknown`, not `failed`.
    change_out: bool,
}

impl Attempt<'_> {
    /// Ends the row with `outcome`: its record, to be written.
    fn finish(&mut self, outcome: Outcome, reason: Option<String>) -> RowEnd {
        let latency = self.started.elapsed().as_millis() as u64;
        self.record.finish(outcome, reason, Some(latency));
        RowEnd::Record(self.record.clone())
    }

    /// Ends the row on an error: `failed`, or `unknown` when a change may be out and this
    /// error keeps simbatch from seeing whether it landed.
    fn fail(&mut self, e: ProviderError) -> RowEnd {
        if e.stops_run() {
            return RowEnd::Aborted(e);
        }
        if e.class == ErrorClass::Stopped {
            return RowEnd::Stopped;
        }
        self.record.http_status = e.http_status;
        self.record.provider_code = e.code.clone();
        let gave_up = match e.class {
            ErrorClass::Transient | ErrorClass::RateLimited => {
                format!(
                    "gave up after {} attempts: {e}",
                    self.ctx.policy.max_attempts
                )
            }
            _ => e.to_string(),
        };
        if self.change_out {
            self.finish(
                Outcome::Unknown,
                Some(format!(
                    "the change may have been applied and could not be read back ({gave_up})"
                )),
            )
        } else {
            // Not the state the row aimed at: what the failed call left, if it says (else the
            // target is as `before` says).
            self.record.after = e.left.clone();
            self.finish(Outcome::Failed, Some(gave_up))
        }
    }

    /// Waits `pause` unless the run stops first; false when it did.
    async fn pause(&self, pause: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(pause) => true,
            _ = self.ctx.stop.stopped() => false,
        }
    }

    /// Runs `call` with retries for transient failures and 429s.
    async fn retrying<T, F, Fut>(&mut self, mut call: F) -> Result<T, ProviderError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ProviderError>>,
    {
        let mut failures = 0;
        loop {
            let e = match call().await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let Some(delay) = self.ctx.policy.again(&mut failures, &e) else {
                return Err(e);
            };
            if !self.pause(delay).await {
                return Err(ProviderError::stopped());
            }
        }
    }

    /// Reads the target until no asynchronous change is under way (bounded by the wait timeout).
    async fn observe_settled(&mut self, row: &JobRow) -> Result<Observed, ProviderError> {
        let lane = self.ctx.lane;
        let deadline = Instant::now() + self.ctx.wait.unwrap_or(Duration::from_secs(60));
        let mut pause = Duration::from_millis(100);
        loop {
            let observed = self.retrying(|| lane.observe(row)).await?;
            let busy = matches!(&observed, Observed::Sim(s) if !s.settled);
            if !busy || Instant::now() >= deadline {
                return Ok(observed);
            }
            if !self.pause(pause).await {
                return Err(ProviderError::stopped());
            }
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }
}

/// Executes one row. `prior` is its stored record when resuming.
pub async fn execute(
    ctx: &RowContext<'_>,
    index: u64,
    row: &JobRow,
    prior: Option<RowRecord>,
    queued: Duration,
) -> RowEnd {
    let interrupted = prior
        .as_ref()
        .is_some_and(|p| p.phase == Phase::Sending && p.attempts > 0);
    let mut attempt = Attempt {
        ctx,
        record: prior
            .clone()
            .unwrap_or_else(|| RowRecord::sending(Utc::now(), 0)),
        started: Instant::now(),
        change_out: interrupted,
    };
    attempt.record.queued_ms = Some(queued.as_millis() as u64);
    if attempt.record.started_at.is_none() {
        attempt.record.started_at = Some(Utc::now());
    }
    match steps(&mut attempt, index, row, prior.as_ref(), interrupted).await {
        Ok(end) | Err(end) => end,
    }
}

/// The steps of a row; each may end it (`Err`).
async fn steps(
    attempt: &mut Attempt<'_>,
    index: u64,
    row: &JobRow,
    prior: Option<&RowRecord>,
    interrupted: bool,
) -> Result<RowEnd, RowEnd> {
    // A pending row from an earlier run: confirm it, do not send again.
    if let Some(p) = prior.filter(|p| p.awaits_confirmation()) {
        let reference = p
            .provider_ref
            .clone()
            .expect("a change awaiting confirmation has its reference");
        return Ok(attempt.handoff(reference, p.after.clone().unwrap_or_default()));
    }
    let (mut observed, move_target) = attempt.look(row, interrupted).await?;
    if interrupted {
        attempt.reconcile(row, prior, &observed)?;
        if let Observed::Sim(sim) = &mut observed {
            sim.as_before_release(prior.and_then(|p| p.released_from.as_deref()));
        }
    }
    let after = attempt.plan(row, &observed, move_target.as_deref(), interrupted)?;
    // Read after the interruption, the change is not in effect: the earlier attempt did not
    // land, so a clear refusal of the next one fails the row (it is not `unknown`).
    attempt.change_out = false;
    attempt.mark(index, row, &observed).await?;
    let sent = attempt
        .send(row, &mut observed, &after, move_target.as_deref())
        .await?;
    Ok(attempt.sent(sent, after))
}

impl Attempt<'_> {
    /// What the provider shows for the row's target, settled, and the `move` target resolved.
    async fn look(
        &mut self,
        row: &JobRow,
        interrupted: bool,
    ) -> Result<(Observed, Option<String>), RowEnd> {
        let lane = self.ctx.lane;
        let first = if interrupted {
            // The listing this run took before acting shows what the interrupted attempt left
            // behind (the process that sent it is gone); only a SIM still changing, or one the
            // listing did not show, is read live.
            match lane.take_listed(row).await {
                Ok(Some(Observed::Sim(s))) if s.settled => Ok(Observed::Sim(s)),
                Err(e) => Err(e),
                Ok(_) => self.observe_settled(row).await,
            }
        } else {
            self.retrying(|| lane.observe_first(row)).await
        };
        let mut observed = first.map_err(|e| self.fail(e))?;
        if matches!(&observed, Observed::Sim(s) if !s.settled) {
            // Listed mid-change (or changing now): wait for it to settle before deciding.
            observed = self.observe_settled(row).await.map_err(|e| self.fail(e))?;
        }
        let move_target = self
            .retrying(|| lane.move_target(row))
            .await
            .map_err(|e| self.fail(e))?;
        Ok((observed, move_target))
    }

    /// After a crash between the marker and the outcome: did the change land? An operation the
    /// interrupted attempt scheduled is adopted; a deleted SIM is gone.
    fn reconcile(
        &mut self,
        row: &JobRow,
        prior: Option<&RowRecord>,
        observed: &Observed,
    ) -> Result<(), RowEnd> {
        let provider = self.ctx.lane.provider();
        let before = prior.and_then(|p| p.operations_before.as_deref());
        if let Some(reference) = provider.adopted_operation(row, observed, before) {
            let after = prior.and_then(|p| p.after.clone()).unwrap_or_default();
            return Err(self.handoff(reference, after));
        }
        if matches!(observed, Observed::Missing) && in_effect(provider, row, observed, None) {
            self.record.after = Some("deleted".into());
            return Err(self.finish(
                Outcome::Succeeded,
                Some("confirmed after an interrupted attempt: the SIM is gone".into()),
            ));
        }
        Ok(())
    }

    /// Pre-flight: the state the change should produce, or the row's end (skipped, refused,
    /// or — after a crash — found already done).
    fn plan(
        &mut self,
        row: &JobRow,
        observed: &Observed,
        move_target: Option<&str>,
        interrupted: bool,
    ) -> Result<String, RowEnd> {
        let provider = self.ctx.lane.provider();
        let (before, after) = match decide(provider, row, observed, move_target) {
            Decision::Skip { reason, before } => {
                // After a crash the marker holds the state before the change; the state read
                // now is already the changed one, so it must not replace `before` (revert
                // needs it).
                if !(interrupted && self.record.before.is_some()) {
                    self.record.before = before.clone();
                }
                self.record.after = before;
                return Err(if interrupted {
                    self.finish(
                        Outcome::Succeeded,
                        Some(format!("confirmed after an interrupted attempt: {reason}")),
                    )
                } else {
                    self.finish(Outcome::Skipped, Some(reason))
                });
            }
            Decision::Fail { reason, before } if self.ctx.preflight || interrupted => {
                self.record.before = before;
                return Err(self.finish(Outcome::Failed, Some(format!("pre-flight: {reason}"))));
            }
            // --no-preflight: send anyway and let the provider answer with its own error.
            Decision::Fail { before, .. } => {
                let target = provider.target_status(&row.operation).unwrap_or_default();
                (before, target.to_string())
            }
            Decision::Send { before, after } => (before, after),
        };
        self.record.before = before;
        self.record.after = Some(after.clone());
        Ok(after)
    }

    /// The "sending" marker, durable before the request leaves, or a crash could hide a sent
    /// change.
    async fn mark(&mut self, index: u64, row: &JobRow, observed: &Observed) -> Result<(), RowEnd> {
        let provider = self.ctx.lane.provider();
        let mut marker = self.record.clone();
        marker.phase = Phase::Sending;
        marker.attempts = marker.attempts.max(1);
        marker.operations_before = provider.operations_before(observed);
        marker.released_from = provider.releases_from(row, observed);
        match self.ctx.writer.durable(index, marker).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.finish(
                Outcome::Unknown,
                Some(format!("checkpoint store failed: {e}")),
            )),
        }
    }

    /// Sends the change with retries. An answer that may mean applied is never followed by a
    /// blind re-send: the target is read back first (SPEC 3.1).
    async fn send(
        &mut self,
        row: &JobRow,
        observed: &mut Observed,
        after: &str,
        move_target: Option<&str>,
    ) -> Result<Sent, RowEnd> {
        let (lane, policy) = (self.ctx.lane, self.ctx.policy);
        let before = lane.provider().operations_before(observed);
        // The device a delete releases the SIM from: a read-back after an unclear answer may
        // find the SIM already released, and a refusal must still put it back there.
        let released_from = lane.provider().releases_from(row, observed);
        let mut failures = 0;
        loop {
            self.record.attempts += 1;
            let e = match lane.send(row, observed, after).await {
                Ok(sent) => return Ok(sent),
                Err(e) => e,
            };
            if e.class == ErrorClass::Stopped {
                // Not sent: the marker stays, and the next run reconciles whatever went before.
                return Err(RowEnd::Stopped);
            }
            if e.class == ErrorClass::RateLimited {
                // Refused unprocessed ("not now"): not an attempt at the change.
                self.record.attempts -= 1;
            }
            let again = policy.again(&mut failures, &e);
            if !e.maybe_applied {
                // A clear answer that nothing was done (a refusal, a 429, a refused connection).
                let Some(delay) = again else {
                    return Err(self.fail(e));
                };
                if !self.pause(delay).await {
                    return Err(RowEnd::Stopped);
                }
                continue;
            }
            // It may have landed: look before anything is sent again.
            self.change_out = true;
            if let Some(delay) = again {
                if !self.pause(delay).await {
                    return Err(RowEnd::Stopped);
                }
            }
            *observed = self
                .read_back(row, &e, before.as_deref(), after, move_target)
                .await?;
            // Read back, the change is not in effect: that attempt did not land, and a clear
            // refusal of the next one fails the row (as after an interrupted run).
            self.change_out = false;
            if let Observed::Sim(sim) = observed {
                sim.as_before_release(released_from.as_deref());
            }
            if again.is_none() {
                self.record.http_status = e.http_status;
                self.record.provider_code = e.code.clone();
                return Err(self.finish(
                    Outcome::Failed,
                    Some(format!(
                        "gave up after {} attempts: {e}; read back, the change is not in effect",
                        policy.max_attempts
                    )),
                ));
            }
        }
    }

    /// Reads the target back after `sent_error`, an answer that may mean applied: the row ends
    /// if the change is found (in effect, or its operation adopted) or cannot be verified;
    /// otherwise what the target shows, to send again.
    async fn read_back(
        &mut self,
        row: &JobRow,
        sent_error: &ProviderError,
        before: Option<&str>,
        after: &str,
        move_target: Option<&str>,
    ) -> Result<Observed, RowEnd> {
        let provider = self.ctx.lane.provider();
        let observed = match self.observe_settled(row).await {
            Ok(o) => o,
            Err(read) if read.class == ErrorClass::Stopped => return Err(RowEnd::Stopped),
            Err(read) => return Err(self.unverified(sent_error, &read.to_string())),
        };
        if let Some(reference) = provider.adopted_operation(row, &observed, before) {
            return Err(self.handoff(reference, after.to_string()));
        }
        if in_effect(provider, row, &observed, move_target) {
            self.record.after = Some(after.to_string());
            return Err(self.finish(
                Outcome::Succeeded,
                Some(format!("confirmed by reading it back after: {sent_error}")),
            ));
        }
        if matches!(&observed, Observed::Sim(s) if !s.settled) {
            return Err(self.unverified(sent_error, "the target was still changing"));
        }
        Ok(observed)
    }

    /// The provider took the change: done, or accepted and handed to the confirmer.
    fn sent(&mut self, sent: Sent, after: String) -> RowEnd {
        match sent {
            Sent::Done { after } => {
                self.record.after = Some(after);
                self.finish(Outcome::Succeeded, None)
            }
            Sent::Accepted { reference } => {
                self.record.provider_ref = Some(reference.clone());
                if self.ctx.wait.is_none() {
                    return self.finish(
                        Outcome::Pending,
                        Some("accepted; confirmation not awaited (--no-wait)".into()),
                    );
                }
                self.handoff(reference, after)
            }
        }
    }

    /// A change that may have been applied (its answer was `sent_error`) and could not be read
    /// back.
    fn unverified(&mut self, sent_error: &ProviderError, why: &str) -> RowEnd {
        self.record.http_status = sent_error.http_status;
        self.record.provider_code = sent_error.code.clone();
        self.finish(
            Outcome::Unknown,
            Some(format!(
                "the change may have been applied ({sent_error}) and could not be verified: {why}"
            )),
        )
    }

    /// Hands an accepted change to the lane's confirmer.
    fn handoff(&mut self, reference: String, after: String) -> RowEnd {
        self.record.provider_ref = Some(reference.clone());
        self.record.after = Some(after.clone());
        RowEnd::Handoff {
            record: self.record.clone(),
            reference,
            after,
            started: self.started,
        }
    }
}
