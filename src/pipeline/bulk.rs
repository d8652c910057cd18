//! Rows a provider can apply many at once (emnify `enable-device`/`disable-device`, through
//! `PATCH /api/v2/endpoint/multi`), in chunks instead of one request each.
//!
//! A lane with at least [`BULK_MIN_ROWS`] such rows gives them to its [`BulkLane`] instead of
//! running them one by one. Per chunk of up to `chunk` rows:
//! 1. **Look**: every device is read from one listing of the account's devices, taken once per
//!    lane (1,000 per page) — never a request per row. A row whose SIM the listing does not
//!    show (no device, or no such SIM) goes the single-row way, which says exactly why.
//! 2. **Decide**: a device already in the target status is skipped (`already Disabled`), or —
//!    when an earlier, interrupted attempt had marked it — succeeded.
//! 3. **Mark**: every row to send gets its durable "sending" marker before the chunk leaves.
//! 4. **Send**: one bulk request per chunk, one at a time per account (emnify asks so) and
//!    through the lane's rate gate like any request. A refused chunk (4xx: the document does
//!    not say whether one bad item fails the whole request) is split in halves until the bad
//!    rows are alone and fail with the provider's message; the good rows still go in bulk. A
//!    chunk whose answer may mean applied (a lost answer, a 5xx) is retried as a chunk:
//!    setting a status twice changes nothing.
//! 5. **Confirm**: a chunk's 204 is not proof for each row. Once the lane's rows are sent, the
//!    devices in each target status are listed (pages of 1,000) and each sent row succeeds only
//!    if its device is there; otherwise it fails with what the device shows.
//!
//! After a crash, rows marked "sending" come back here and the listing decides: in effect →
//! succeeded, not → sent again. Nothing is applied twice: the journal of a status change only
//! records changes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;

use super::control::{Stop, StopReason};
use super::feed::Queued;
use super::lane::Lane;
use super::retry::{with_retries, RetryPolicy};
use super::writer::Writer;
use crate::job::{JobRow, Operation};
use crate::provider::{Device, ErrorClass, ProviderError};
use crate::store::{Outcome, Phase, RowRecord};

/// Fewer such rows in a lane than this go one by one: a bulk path costs two listings.
pub const BULK_MIN_ROWS: u64 = 20;
/// Items per bulk request by default. emnify states a maximum only for the bulk create
/// (2,000 endpoints per request); half of it keeps a request's body (~40 kB) and the cost of
/// isolating a bad item (≈ 2 × log2(1,000) = 20 requests) small.
pub const DEFAULT_CHUNK: usize = 1_000;

/// One result per item of a bulk request, in order, when it is done.
type ItemResults<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Vec<Result<(), ProviderError>>> + Send + 'a>,
>;

/// A row of a chunk to be sent: its marker, its device and the status it aims at.
struct ToSend {
    queued: Queued,
    record: RowRecord,
    device: String,
    want: String,
    enable: bool,
}

/// A row marked and sent in a chunk, awaiting the confirming listing.
struct Sent {
    index: u64,
    record: RowRecord,
    device: String,
    want: String,
    started: Instant,
}

/// What a row's end in the bulk path means for the engine.
pub enum BulkEnd {
    /// Its record, final.
    Record(u64, RowRecord),
    /// Not for the bulk path: run it as a single row.
    Single(Queued),
}

/// The bulk rows of one lane.
pub struct BulkLane {
    lane: Arc<Lane>,
    chunk: usize,
    /// The lane's bulk rows in the job: the device listing is taken only when it costs fewer
    /// pages than half as many lookups (see [`BulkLane::devices`]).
    rows: u64,
    policy: RetryPolicy,
    queue: std::sync::Mutex<Vec<(Queued, Option<RowRecord>)>>,
    /// The devices with a SIM, by ICCID (listed once, at the first chunk).
    devices: tokio::sync::OnceCell<Option<HashMap<String, Device>>>,
    sent: std::sync::Mutex<Vec<Sent>>,
}

impl BulkLane {
    pub fn new(lane: Arc<Lane>, chunk: usize, rows: u64, policy: RetryPolicy) -> BulkLane {
        BulkLane {
            lane,
            chunk: chunk.max(1),
            rows,
            policy,
            queue: Default::default(),
            devices: Default::default(),
            sent: Default::default(),
        }
    }

    /// Whether `row` goes this way.
    pub fn takes(&self, row: &JobRow) -> bool {
        self.lane.provider().bulk(row.action()) && row.not_before.is_none()
    }

    /// Queues a row (with its stored record); a full chunk is taken off the queue and
    /// returned for the caller to run.
    pub fn push(
        &self,
        queued: Queued,
        prior: Option<RowRecord>,
    ) -> Option<Vec<(Queued, Option<RowRecord>)>> {
        let mut queue = self.queue.lock().expect("bulk queue lock");
        queue.push((queued, prior));
        (queue.len() >= self.chunk).then(|| std::mem::take(&mut *queue))
    }

    /// What is left in the queue.
    pub fn rest(&self) -> Vec<(Queued, Option<RowRecord>)> {
        std::mem::take(&mut *self.queue.lock().expect("bulk queue lock"))
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

    /// Runs one chunk: look, decide, mark, send. Rows to send are kept for [`BulkLane::confirm`].
    pub async fn run_chunk(
        &self,
        chunk: Vec<(Queued, Option<RowRecord>)>,
        writer: &Writer,
        stop: &Stop,
    ) -> Result<Vec<BulkEnd>, StopReason> {
        let Some(devices) = self.devices(stop).await else {
            return Ok(chunk.into_iter().map(|(q, _)| BulkEnd::Single(q)).collect());
        };
        let (mut ends, to_send) = self.decide(chunk, devices);
        if to_send.is_empty() || stop.requested() {
            return Ok(ends);
        }
        // Mark: every marker durable before the chunk leaves.
        let marks = futures_util::future::join_all(
            to_send
                .iter()
                .map(|t| writer.durable(t.queued.index, t.record.clone())),
        )
        .await;
        if let Some(Err(e)) = marks.into_iter().find(Result::is_err) {
            return Err(StopReason::Store(e));
        }
        for enable in [false, true] {
            let group: Vec<&ToSend> = to_send.iter().filter(|t| t.enable == enable).collect();
            if !group.is_empty() && !self.send(group, enable, stop, &mut ends).await? {
                break;
            }
        }
        Ok(ends)
    }

    /// Look and decide: each row of the chunk ends here (already in effect), goes the
    /// single-row way (its device is not listed), or is to be sent.
    fn decide(
        &self,
        chunk: Vec<(Queued, Option<RowRecord>)>,
        devices: &HashMap<String, Device>,
    ) -> (Vec<BulkEnd>, Vec<ToSend>) {
        let mut ends = Vec::new();
        let mut to_send = Vec::new();
        for (queued, prior) in chunk {
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
            let interrupted = prior
                .as_ref()
                .is_some_and(|p| p.phase == Phase::Sending && p.attempts > 0);
            let mut record = prior.unwrap_or_else(|| RowRecord::sending(Utc::now(), 0));
            record.queued_ms = Some(queued.at.elapsed().as_millis() as u64);
            record.started_at.get_or_insert_with(Utc::now);
            if !interrupted {
                record.before = Some(device.status.clone());
            }
            record.after = Some(want.to_string());
            if device.status == want {
                let (outcome, reason) = match interrupted {
                    true => (
                        Outcome::Succeeded,
                        format!("confirmed after an interrupted attempt: already {want}"),
                    ),
                    false => (Outcome::Skipped, format!("already {want}")),
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
        (ends, to_send)
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
        let results = self.send_split(&ids, enable, stop).await;
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
                    record.http_status = e.http_status;
                    record.provider_code = e.code.clone();
                    record.after = None;
                    let latency = started.elapsed().as_millis() as u64;
                    record.finish(Outcome::Failed, Some(e.to_string()), Some(latency));
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

    /// Sends `ids` in one bulk request (retried as a whole while it may have been applied or
    /// was rate-limited); a refusal splits it in halves until each bad item is alone. One
    /// result per id, in order.
    fn send_split<'a>(
        &'a self,
        ids: &'a [String],
        enable: bool,
        stop: &'a Stop,
    ) -> ItemResults<'a> {
        Box::pin(async move {
            if stop.requested() {
                return vec![Err(ProviderError::stopped()); ids.len()];
            }
            let account = self.lane.account.as_ref();
            match with_retries(&self.policy, || account.set_devices(ids, enable)).await {
                Ok(()) => vec![Ok(()); ids.len()],
                Err(e) if refuses_items(&e) && ids.len() > 1 => {
                    let (left, right) = ids.split_at(ids.len() / 2);
                    let mut results = self.send_split(left, enable, stop).await;
                    results.extend(self.send_split(right, enable, stop).await);
                    results
                }
                Err(e) => vec![Err(e); ids.len()],
            }
        })
    }

    /// Confirms every row sent: lists the devices in each target status and settles each
    /// row by whether its device is among them. Records to write, in any order, and why the
    /// run must stop when a listing says so (credentials refused, provider unreachable: those
    /// rows keep their markers for the next run).
    pub async fn confirm(&self, stop: &Stop) -> (Vec<(u64, RowRecord)>, Option<StopReason>) {
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

/// A refusal of what the request carries (some item of it), not of the request as such or
/// the account: split the chunk to find the bad items.
fn refuses_items(e: &ProviderError) -> bool {
    matches!(e.class, ErrorClass::Permanent | ErrorClass::Forbidden)
        && e.http_status.is_some_and(|s| (400..500).contains(&s))
}
