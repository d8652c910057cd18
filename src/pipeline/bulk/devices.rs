//! Device rows in bulk: emnify `enable-device`/`disable-device`, each chunk one
//! `PATCH /api/v2/endpoint/multi` per target status ([`crate::provider::Account::set_devices`]).
//! The devices are read from one listing of the account's devices (see [`BulkLane::devices`]);
//! the rows sent are confirmed by listing the devices in each target status.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use super::{entering, BulkCall, BulkEnd, BulkLane};
use crate::job::{JobRow, Operation};
use crate::pipeline::control::{Stop, StopReason};
use crate::pipeline::feed::Queued;
use crate::pipeline::writer::Writer;
use crate::provider::retry::with_retries;
use crate::provider::{Decision, Device, ErrorClass, ProviderError};
use crate::store::{Outcome, Phase, RowRecord};

/// A row of a chunk to be sent: its marker, its device and the status it aims at.
struct ToSend {
    queued: Queued,
    record: RowRecord,
    device: String,
    want: String,
    enable: bool,
}

/// A row marked and sent in a chunk, awaiting the confirming listing.
pub(super) struct Sent {
    index: u64,
    record: RowRecord,
    device: String,
    want: String,
    started: Instant,
}

impl BulkLane {
    /// Runs a chunk's device rows: look, decide, mark, send.
    pub(super) async fn run_device_rows(
        &self,
        rows: Vec<(Queued, Option<RowRecord>)>,
        writer: &Writer,
        stop: &Stop,
        ends: &mut Vec<BulkEnd>,
    ) -> Result<(), StopReason> {
        let Some(devices) = self.devices(stop).await else {
            self.declined_devices
                .store(true, std::sync::atomic::Ordering::Relaxed);
            ends.extend(rows.into_iter().map(|(q, _)| BulkEnd::Single(q)));
            return Ok(());
        };
        let to_send = self.decide(rows, devices, ends);
        if to_send.is_empty() || stop.requested() {
            return Ok(());
        }
        self.mark(writer, to_send.iter().map(|t| (t.queued.index, &t.record)))
            .await?;
        for enable in [false, true] {
            let group: Vec<&ToSend> = to_send.iter().filter(|t| t.enable == enable).collect();
            if !group.is_empty() && !self.send(group, enable, stop, ends).await? {
                break;
            }
        }
        Ok(())
    }

    /// The account's devices, listed once; `None` when the listing failed or would cost more
    /// pages than half the lane's bulk rows (a few rows on a large account: each is looked up
    /// on its own, the single-row way).
    async fn devices(&self, stop: &Stop) -> Option<&HashMap<String, Device>> {
        self.devices
            .get_or_init(|| async {
                let budget = (self.rows / 2).max(1);
                match self.list_within(None, budget, stop).await {
                    Ok(None) => {
                        tracing::info!(lane = %self.lane.name, rows = self.rows, "the device listing would cost more than looking each row up; rows go one by one");
                        None
                    }
                    Ok(Some(devices)) => {
                        Some(devices.into_iter().map(|d| (d.iccid.clone(), d)).collect())
                    }
                    Err(e) => {
                        tracing::warn!(lane = %self.lane.name, error = %e, "could not list the devices; reading each row's instead");
                        None
                    }
                }
            })
            .await
            .as_ref()
    }

    /// What a device row would do, as the bulk path decides it from the device listing
    /// (for `plan`); `None` when the listing does not answer for it (the row would go the
    /// single-row way).
    pub async fn plan_device(&self, row: &JobRow, stop: &Stop) -> Option<Decision> {
        let enable = matches!(row.operation, Operation::EnableDevice);
        let want = self.lane.provider().device_status(enable)?;
        let device = self
            .devices(stop)
            .await?
            .get(row.target.iccid()?.as_str())?;
        Some(decide_device(device, want))
    }

    /// Every device with a SIM (in `status`, when given), all pages.
    async fn list(&self, status: Option<&str>, stop: &Stop) -> Result<Vec<Device>, ProviderError> {
        self.list_within(status, u64::MAX, stop)
            .await
            .map(Option::unwrap_or_default)
    }

    /// [`BulkLane::list`], or `None` when it has more than `budget` pages.
    async fn list_within(
        &self,
        status: Option<&str>,
        budget: u64,
        stop: &Stop,
    ) -> Result<Option<Vec<Device>>, ProviderError> {
        let account = self.lane.account.as_ref();
        let mut all = Vec::new();
        let mut page = 1;
        loop {
            if stop.requested() {
                return Err(ProviderError::stopped());
            }
            let (devices, pages) =
                with_retries(&self.policy, || account.devices_page(page, status)).await?;
            if pages > budget {
                return Ok(None);
            }
            all.extend(devices);
            if page >= pages {
                return Ok(Some(all));
            }
            page += 1;
        }
    }

    /// Look and decide: each row ends here (already in effect), goes the single-row way (its
    /// device is not listed), or is to be sent.
    fn decide(
        &self,
        rows: Vec<(Queued, Option<RowRecord>)>,
        devices: &HashMap<String, Device>,
        ends: &mut Vec<BulkEnd>,
    ) -> Vec<ToSend> {
        let mut to_send = Vec::new();
        for (queued, prior) in rows {
            let enable = matches!(queued.row.operation, Operation::EnableDevice);
            let listed = queued
                .row
                .target
                .iccid()
                .and_then(|iccid| devices.get(iccid.as_str()));
            let (Some(device), Some(want)) = (listed, self.lane.provider().device_status(enable))
            else {
                ends.push(BulkEnd::Single(queued));
                continue;
            };
            let (mut record, interrupted) = entering(&queued, prior);
            if !interrupted {
                record.before = Some(device.status.clone());
            }
            record.after = Some(want.to_string());
            if let Decision::Skip { reason, .. } = decide_device(device, want) {
                let (outcome, reason) = match interrupted {
                    true => (
                        Outcome::Succeeded,
                        format!("confirmed after an interrupted attempt: {reason}"),
                    ),
                    false => (Outcome::Skipped, reason),
                };
                record.finish(outcome, Some(reason), None);
                ends.push(BulkEnd::Record(queued.index, record));
                continue;
            }
            record.phase = Phase::Sending;
            record.attempts += 1;
            to_send.push(ToSend {
                queued,
                record,
                device: device.id.clone(),
                want: want.to_string(),
                enable,
            });
        }
        to_send
    }

    /// Sends one target status's rows of a chunk; each either awaits the confirming listing
    /// or ends (`ends`). False when the run stops before they could go (their markers stay).
    async fn send(
        &self,
        group: Vec<&ToSend>,
        enable: bool,
        stop: &Stop,
        ends: &mut Vec<BulkEnd>,
    ) -> Result<bool, StopReason> {
        let ids: Vec<String> = group.iter().map(|t| t.device.clone()).collect();
        let started = Instant::now();
        let account = self.lane.account.as_ref();
        let call: &BulkCall<'_, String> = &move |ids| account.set_devices(ids, enable);
        let results = self.send_split(&ids, call, stop).await;
        for (t, result) in group.into_iter().zip(results) {
            let mut record = t.record.clone();
            match result {
                Ok(()) => {}
                Err(e) if e.class == ErrorClass::Stopped => return Ok(false),
                Err(e) if e.stops_run() => {
                    return Err(StopReason::provider(&self.lane.name, &e));
                }
                // Perhaps applied: the listing decides.
                Err(e) if e.maybe_applied => record.reason = Some(e.to_string()),
                Err(e) => {
                    fail(&mut record, &e, started);
                    ends.push(BulkEnd::Record(t.queued.index, record));
                    continue;
                }
            }
            self.sent.lock().expect("bulk sent lock").push(Sent {
                index: t.queued.index,
                record,
                device: t.device.clone(),
                want: t.want.clone(),
                started,
            });
        }
        Ok(true)
    }

    /// Confirms every device row sent: lists the devices in each target status and settles
    /// each row by whether its device is among them.
    pub(super) async fn confirm_devices(
        &self,
        stop: &Stop,
    ) -> (Vec<(u64, RowRecord)>, Option<StopReason>) {
        let mut stopped = None;
        let sent = std::mem::take(&mut *self.sent.lock().expect("bulk sent lock"));
        let statuses: HashSet<String> = sent.iter().map(|s| s.want.clone()).collect();
        let mut shown: HashMap<String, Result<HashSet<String>, ProviderError>> = HashMap::new();
        for status in statuses {
            let listed = self
                .list(Some(&status), stop)
                .await
                .map(|devices| devices.into_iter().map(|d| d.id).collect());
            shown.insert(status, listed);
        }
        let mut out = Vec::with_capacity(sent.len());
        for s in sent {
            let mut record = s.record;
            let latency = Some(s.started.elapsed().as_millis() as u64);
            match shown.get(&s.want).expect("listed above") {
                Err(e) if e.class == ErrorClass::Stopped => continue,
                Err(e) if e.stops_run() => {
                    stopped.get_or_insert_with(|| StopReason::provider(&self.lane.name, e));
                    continue;
                }
                Err(e) => record.finish(
                    Outcome::Unknown,
                    Some(format!(
                        "the bulk update may have been applied and could not be read back ({e})"
                    )),
                    latency,
                ),
                Ok(ids) if ids.contains(&s.device) => {
                    record.reason = None;
                    record.finish(Outcome::Succeeded, None, latency)
                }
                Ok(_) => {
                    let why = record
                        .reason
                        .take()
                        .map_or(String::new(), |r| format!(" ({r})"));
                    record.after = None;
                    record.finish(
                        Outcome::Failed,
                        Some(format!(
                            "device {} does not show {} after the bulk update{why}",
                            s.device, s.want
                        )),
                        latency,
                    )
                }
            }
            out.push((s.index, record));
        }
        (out, stopped)
    }
}

/// Pre-flight of a device row from the device listing: skip a device already in `want`, else
/// send (for the bulk path and for `plan` alike).
fn decide_device(device: &Device, want: &str) -> Decision {
    match device.status == want {
        true => Decision::skip(format!("already {want}"), &device.status),
        false => Decision::send(Some(&device.status), want),
    }
}

/// Fails a row the provider refused: its status and code, the provider's message, and the
/// `after` the error left (nothing changed, unless it says otherwise).
pub(super) fn fail(record: &mut RowRecord, e: &ProviderError, started: Instant) {
    record.http_status = e.http_status;
    record.provider_code = e.code.clone();
    record.after = e.left.clone();
    let latency = started.elapsed().as_millis() as u64;
    record.finish(Outcome::Failed, Some(e.to_string()), Some(latency));
}
