//! Deletes in bulk (emnify: `DELETE /api/v1/sim/multi`), with what a single delete does around
//! it ([`crate::provider::emnify::Emnify::delete_sim`]): a SIM on a device is first released
//! from it — one bulk update for the chunk ([`crate::provider::Account::assign_devices`]) —
//! then the chunk's SIMs are deleted in one request, and a SIM whose delete the provider
//! refuses (a reseller deleting a SIM it sold: 403) is put back on its device in one more, the
//! row failing with both facts ([`crate::provider::Provider::delete_refused`]).
//!
//! Whether one bad item fails the whole request is not documented. After a refused delete the
//! SIMs are listed once (when that costs fewer pages than half the chunk) so that those already
//! gone — the provider applied the good items — are not sent again, and only the rest is
//! split. A SIM the provider no longer knows (404) is not a failure: the confirming listing,
//! which settles every delete sent, finds it gone.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::devices::fail;
use super::{entering, BulkCall, BulkEnd, BulkLane};
use crate::job::JobRow;
use crate::pipeline::control::{Stop, StopReason};
use crate::pipeline::feed::Queued;
use crate::pipeline::preflight::decide;
use crate::pipeline::writer::Writer;
use crate::provider::retry::with_retries;
use crate::provider::{Decision, ErrorClass, Observed, ProviderError, SimState};
use crate::store::{Outcome, Phase, RowRecord};

/// What a deleted row's `after` says.
const DELETED: &str = "deleted";

/// A row of a chunk to delete: its marker, its SIM and the device it is on.
struct ToDelete {
    queued: Queued,
    record: RowRecord,
    sim: String,
    device: Option<String>,
}

/// A row whose SIM was sent for deletion, awaiting the confirming listing.
pub(super) struct Deleted {
    index: u64,
    row: JobRow,
    record: RowRecord,
    sim: String,
    device: Option<String>,
    started: Instant,
}

impl BulkLane {
    /// Runs a chunk's deletes: look, decide, mark, release, delete, put back the refused.
    pub(super) async fn run_deletes(
        &self,
        rows: Vec<(Queued, Option<RowRecord>)>,
        writer: &Writer,
        stop: &Stop,
        ends: &mut Vec<BulkEnd>,
    ) -> Result<(), StopReason> {
        let to_delete = self.decide_deletes(rows, ends).await;
        if to_delete.is_empty() || stop.requested() {
            return Ok(());
        }
        self.mark(
            writer,
            to_delete.iter().map(|t| (t.queued.index, &t.record)),
        )
        .await?;
        let started = Instant::now();
        let Some(released) = self.release(&to_delete, stop, ends, started).await? else {
            return Ok(());
        };
        let ids: Vec<String> = released.iter().map(|t| t.sim.clone()).collect();
        let results = self.delete_split(&ids, stop).await;
        let mut refused = Vec::new();
        for (t, result) in released.into_iter().zip(results) {
            let mut deleted = Deleted {
                index: t.queued.index,
                row: t.queued.row.clone(),
                record: t.record.clone(),
                sim: t.sim.clone(),
                device: t.device.clone(),
                started,
            };
            match result {
                Ok(()) => {}
                Err(e) if e.class == ErrorClass::Stopped => return Ok(()),
                Err(e) if e.stops_run() => return Err(StopReason::provider(&self.lane.name, &e)),
                // Perhaps deleted, or gone already: the listing decides.
                Err(e) if e.maybe_applied || e.http_status == Some(404) => {
                    deleted.record.reason = Some(e.to_string())
                }
                Err(e) => {
                    refused.push((deleted, e));
                    continue;
                }
            }
            self.deleted
                .lock()
                .expect("bulk deleted lock")
                .push(deleted);
        }
        self.put_back(refused, stop, ends).await
    }

    /// Look and decide, from the lane's inventory listing: each row is to delete, ends here
    /// (gone after an interrupted attempt), or goes the single-row way (not listed, nothing
    /// to delete, or refused by pre-flight: that way says exactly why).
    async fn decide_deletes(
        &self,
        rows: Vec<(Queued, Option<RowRecord>)>,
        ends: &mut Vec<BulkEnd>,
    ) -> Vec<ToDelete> {
        let provider = self.lane.provider();
        let mut to_delete = Vec::new();
        for (queued, prior) in rows {
            let Ok(Some(observed)) = self.lane.take_listed(&queued.row).await else {
                if self.lane.listing_off() {
                    // No listing (not worth it, or it failed): no row will be listed.
                    self.declined_deletes.store(true, Ordering::Relaxed);
                }
                ends.push(BulkEnd::Single(queued));
                continue;
            };
            let (mut record, interrupted) = entering(&queued, prior);
            let mut observed = observed;
            if let (true, Observed::Sim(sim)) = (interrupted, &mut observed) {
                sim.as_before_release(record.released_from.as_deref());
            }
            match (&observed, decide(provider, &queued.row, &observed, None)) {
                (Observed::Missing, _) if interrupted => {
                    record.after = Some(DELETED.into());
                    let why = "confirmed after an interrupted attempt: the SIM is gone";
                    record.finish(Outcome::Succeeded, Some(why.into()), None);
                    ends.push(BulkEnd::Record(queued.index, record));
                }
                (Observed::Sim(sim), Decision::Send { before, .. }) => {
                    if !(interrupted && record.before.is_some()) {
                        record.before = before;
                    }
                    record.after = Some(DELETED.into());
                    record.phase = Phase::Sending;
                    record.attempts += 1;
                    record.released_from = provider.releases_from(&queued.row, &observed);
                    to_delete.push(ToDelete {
                        queued,
                        record,
                        sim: sim.id.clone(),
                        device: sim.device.as_ref().map(|(d, _)| d.clone()),
                    });
                }
                _ => ends.push(BulkEnd::Single(queued)),
            }
        }
        to_delete
    }

    /// Releases the SIMs on a device from it, in one bulk update; the rows ready to delete,
    /// or `None` when the run stops first. A refused release fails its row, nothing changed.
    async fn release<'t>(
        &self,
        rows: &'t [ToDelete],
        stop: &Stop,
        ends: &mut Vec<BulkEnd>,
        started: Instant,
    ) -> Result<Option<Vec<&'t ToDelete>>, StopReason> {
        let (attached, mut ready): (Vec<&ToDelete>, Vec<&ToDelete>) =
            rows.iter().partition(|t| t.device.is_some());
        let pairs: Vec<(String, Option<String>)> = attached
            .iter()
            .map(|t| (t.device.clone().unwrap_or_default(), None))
            .collect();
        let account = self.lane.account.as_ref();
        let call: &BulkCall<'_, (String, Option<String>)> = &|pairs| account.assign_devices(pairs);
        let results = self.send_split(&pairs, call, stop).await;
        for (t, result) in attached.into_iter().zip(results) {
            match result {
                Ok(()) => ready.push(t),
                Err(e) if e.class == ErrorClass::Stopped => return Ok(None),
                Err(e) if e.stops_run() => return Err(StopReason::provider(&self.lane.name, &e)),
                Err(e) => {
                    let mut record = t.record.clone();
                    fail(&mut record, &e, started);
                    if e.maybe_applied {
                        let device = t.device.as_deref().unwrap_or_default();
                        record.outcome = Some(Outcome::Unknown);
                        record.reason = Some(format!(
                            "{e}; the SIM may have been released from endpoint {device}, and was not deleted"
                        ));
                    }
                    ends.push(BulkEnd::Record(t.queued.index, record));
                }
            }
        }
        ready.sort_by_key(|t| t.queued.index);
        Ok(Some(ready))
    }

    /// Deletes the SIMs `ids` in one request; after a refusal, those the provider shows gone
    /// are not sent again (see the module doc) and the rest is split.
    async fn delete_split(&self, ids: &[String], stop: &Stop) -> Vec<Result<(), ProviderError>> {
        let account = self.lane.account.as_ref();
        let call: &BulkCall<'_, String> = &|ids| account.delete_sims(ids);
        let refusal = match with_retries(&self.policy, || call(ids)).await {
            Ok(()) => return vec![Ok(()); ids.len()],
            Err(e) if super::refuses_items(&e) && ids.len() > 1 => e,
            Err(e) => return vec![Err(e); ids.len()],
        };
        let budget = (ids.len() as u64 / 2).max(1);
        let Ok(Some(listed)) = self.listed_sims(budget, stop).await else {
            tracing::debug!(lane = %self.lane.name, error = %refusal, "bulk delete refused; splitting it");
            return self.send_split(ids, call, stop).await;
        };
        let rest: Vec<String> = ids
            .iter()
            .filter(|id| listed.contains_key(*id))
            .cloned()
            .collect();
        let mut rest_results = self.send_split(&rest, call, stop).await.into_iter();
        ids.iter()
            .map(|id| match listed.contains_key(id) {
                true => rest_results.next().unwrap_or(Ok(())),
                false => Ok(()),
            })
            .collect()
    }

    /// Puts each refused delete's SIM back on its device (one bulk update) and fails the row
    /// with both facts.
    async fn put_back(
        &self,
        refused: Vec<(Deleted, ProviderError)>,
        stop: &Stop,
        ends: &mut Vec<BulkEnd>,
    ) -> Result<(), StopReason> {
        let provider = self.lane.provider();
        let (attached, alone): (Vec<_>, Vec<_>) =
            refused.into_iter().partition(|(d, _)| d.device.is_some());
        for (mut d, e) in alone {
            fail(&mut d.record, &e, d.started);
            ends.push(BulkEnd::Record(d.index, d.record));
        }
        let pairs: Vec<(String, Option<String>)> = attached
            .iter()
            .map(|(d, _)| (d.device.clone().unwrap_or_default(), Some(d.sim.clone())))
            .collect();
        let account = self.lane.account.as_ref();
        let call: &BulkCall<'_, (String, Option<String>)> = &|pairs| account.assign_devices(pairs);
        let results = self.send_split(&pairs, call, stop).await;
        for ((mut d, e), back) in attached.into_iter().zip(results) {
            let device = d.device.clone().unwrap_or_default();
            let e = provider.delete_refused(&e, &device, &d.sim, back.as_ref().map(|_| ()));
            fail(&mut d.record, &e, d.started);
            ends.push(BulkEnd::Record(d.index, d.record));
        }
        Ok(())
    }

    /// Confirms every delete sent: lists the SIMs (or, when that costs more pages than half
    /// the rows, reads each) and settles each row by whether its SIM is gone. A SIM still
    /// there was not deleted: it goes back on its device and the row fails.
    pub(super) async fn confirm_deletes(
        &self,
        stop: &Stop,
    ) -> (Vec<(u64, RowRecord)>, Option<StopReason>) {
        let deleted = std::mem::take(&mut *self.deleted.lock().expect("bulk deleted lock"));
        if deleted.is_empty() {
            return (Vec::new(), None);
        }
        let budget = (deleted.len() as u64 / 2).max(1);
        let listed = match self.listed_sims(budget, stop).await {
            Ok(listed) => listed,
            Err(e) => return self.unconfirmed(deleted, &e),
        };
        let mut out = Vec::with_capacity(deleted.len());
        let mut still = Vec::new();
        for d in deleted {
            let now = match &listed {
                Some(listed) => Ok(listed.get(&d.sim).cloned()),
                None => self.read(&d.row).await,
            };
            match now {
                Err(e) if e.stops_run() || e.class == ErrorClass::Stopped => {
                    let (records, stopped) = self.unconfirmed(vec![d], &e);
                    out.extend(records);
                    return (out, stopped);
                }
                Err(e) => out.extend(self.unconfirmed(vec![d], &e).0),
                Ok(Some(sim)) if !self.lane.provider().shows_deleted(&sim) => {
                    let why = d
                        .record
                        .reason
                        .clone()
                        .map_or(String::new(), |r| format!(" ({r})"));
                    let e = ProviderError::permanent(format!(
                        "SIM {} is still there ({}) after the bulk delete{why}",
                        d.sim, sim.status
                    ));
                    still.push((d, e));
                }
                Ok(_) => {
                    let mut record = d.record;
                    record.reason = None;
                    let latency = Some(d.started.elapsed().as_millis() as u64);
                    record.finish(Outcome::Succeeded, None, latency);
                    out.push((d.index, record));
                }
            }
        }
        let mut ends = Vec::new();
        let stopped = self.put_back(still, stop, &mut ends).await.err();
        out.extend(ends.into_iter().filter_map(|end| match end {
            BulkEnd::Record(index, record) => Some((index, record)),
            BulkEnd::Single(_) => None,
        }));
        (out, stopped)
    }

    /// The SIM of a row as the provider shows it now (`None`: gone).
    async fn read(&self, row: &JobRow) -> Result<Option<SimState>, ProviderError> {
        match with_retries(&self.policy, || self.lane.observe(row)).await? {
            Observed::Sim(sim) => Ok(Some(sim)),
            _ => Ok(None),
        }
    }

    /// Deletes that could not be read back: unknown — or, when the run must stop, left with
    /// their markers for the next run.
    fn unconfirmed(
        &self,
        deleted: Vec<Deleted>,
        e: &ProviderError,
    ) -> (Vec<(u64, RowRecord)>, Option<StopReason>) {
        if e.class == ErrorClass::Stopped {
            return (Vec::new(), None);
        }
        if e.stops_run() {
            return (Vec::new(), Some(StopReason::provider(&self.lane.name, e)));
        }
        let records = deleted
            .into_iter()
            .map(|d| {
                let mut record = d.record;
                let latency = Some(d.started.elapsed().as_millis() as u64);
                record.finish(
                    Outcome::Unknown,
                    Some(format!(
                        "the bulk delete may have been applied and could not be read back ({e})"
                    )),
                    latency,
                );
                (d.index, record)
            })
            .collect();
        (records, None)
    }
}
