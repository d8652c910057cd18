//! Rows a provider can apply many at once, in chunks instead of one request each: emnify
//! `enable-device`/`disable-device` through `PATCH /api/v2/endpoint/multi`
//! ([`devices`]), and emnify `delete` through the same PATCH (releasing each SIM from its
//! endpoint) and `DELETE /api/v1/sim/multi` ([`delete`]).
//!
//! A lane with at least [`BULK_MIN_ROWS`] such rows gives them to its [`BulkLane`] instead of
//! running them one by one. Per chunk of up to `chunk` rows:
//! 1. **Look**: every target is read from one listing, taken once per lane — the device
//!    listing (1,000 per page) for device rows, the lane's inventory listing for deletes —
//!    never a request per row. A row the listing does not answer for goes the single-row way,
//!    which says exactly why.
//! 2. **Decide**: as pre-flight does; a change already in effect is skipped, or — when an
//!    earlier, interrupted attempt had marked the row — succeeded.
//! 3. **Mark**: every row to send gets its durable "sending" marker before the chunk leaves.
//! 4. **Send**: one bulk request per chunk, one at a time per account (emnify asks so) and
//!    through the lane's rate gate like any request. A refused chunk (4xx: the document does
//!    not say whether one bad item fails the whole request) is split in halves until the bad
//!    rows are alone and fail with the provider's message; the good rows still go in bulk
//!    ([`BulkLane::send_split`]). A chunk whose answer may mean applied (a lost answer, a
//!    5xx) is retried as a chunk: setting a status twice changes nothing, and a SIM deleted
//!    already is found gone when the deletes are confirmed.
//! 5. **Confirm**: a chunk's 204 is not proof for each row. Once the lane's rows are sent,
//!    the result is listed and each sent row succeeds only if the listing shows its change;
//!    otherwise it fails with what the listing shows.
//!
//! After a crash, rows marked "sending" come back here and the listing decides: in effect →
//! succeeded, not → sent again. Nothing is applied twice: the journal of a status change only
//! records changes, and a SIM is deleted once.

mod delete;
mod devices;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::control::{Stop, StopReason};
use super::feed::Queued;
use super::lane::Lane;
use super::writer::Writer;
use crate::job::{Action, JobRow, Operation};
use crate::provider::account::Call;
use crate::provider::retry::{with_retries, RetryPolicy};
use crate::provider::{Cursor, Device, ErrorClass, ProviderError, SimState};
use crate::store::{Phase, RowRecord};

/// Fewer such rows in a lane than this go one by one: a bulk path costs two listings.
pub const BULK_MIN_ROWS: u64 = 20;
/// Items per bulk request by default. emnify states a maximum only for the bulk create
/// (2,000 endpoints per request); half of it keeps a request's body (~40 kB) and the cost of
/// isolating a bad item (≈ 2 × log2(1,000) = 20 requests) small.
pub const DEFAULT_CHUNK: usize = 1_000;

/// The lanes whose bulk-capable rows go in chunks of `chunk` (`None`: `--no-bulk`): those with
/// at least [`BULK_MIN_ROWS`] of them among the job's `counts` (per provider and action), with
/// how many — for `run` and `plan` alike.
pub fn bulk_lanes(
    chunk: Option<usize>,
    counts: &BTreeMap<(String, Action), u64>,
    lanes: &BTreeMap<String, Arc<Lane>>,
) -> BTreeMap<String, (usize, u64)> {
    let Some(chunk) = chunk else {
        return BTreeMap::new();
    };
    let mut rows: BTreeMap<&str, u64> = BTreeMap::new();
    for ((provider, action), n) in counts {
        if lanes
            .get(provider)
            .is_some_and(|lane| lane.provider().bulk(*action))
        {
            *rows.entry(provider.as_str()).or_default() += n;
        }
    }
    rows.into_iter()
        .filter(|(_, n)| *n >= BULK_MIN_ROWS)
        .map(|(lane, n)| (lane.to_string(), (chunk, n)))
        .collect()
}

/// The bulk requests `changes` rows of `action` take in chunks of `chunk`: one per chunk (a
/// delete two: the release from the devices, then the delete).
pub fn requests_for(action: Action, changes: u64, chunk: usize) -> u64 {
    let per_chunk = match action {
        Action::Delete => 2,
        _ => 1,
    };
    changes.div_ceil(chunk.max(1) as u64) * per_chunk
}

/// The pages of the listing that confirms `changes` rows sent in bulk (1,000 per page).
pub fn confirming_pages(changes: u64) -> u64 {
    changes.div_ceil(1_000)
}

/// One result per item of a bulk request, in order, when it is done.
type ItemResults<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Vec<Result<(), ProviderError>>> + Send + 'a>,
>;

/// One bulk request over some items (of `T`), through the account.
type BulkCall<'a, T> = dyn Fn(&'a [T]) -> Call<'a, ()> + Send + Sync + 'a;

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
    /// The lane's bulk rows in the job: a listing is taken only when it costs fewer pages
    /// than half as many lookups (see [`BulkLane::devices`]).
    rows: u64,
    policy: RetryPolicy,
    queue: std::sync::Mutex<Vec<(Queued, Option<RowRecord>)>>,
    /// The devices with a SIM, by ICCID (listed once, at the first chunk with device rows).
    devices: tokio::sync::OnceCell<Option<HashMap<String, Device>>>,
    sent: std::sync::Mutex<Vec<devices::Sent>>,
    deleted: std::sync::Mutex<Vec<delete::Deleted>>,
    /// No listing answers for the device rows, or the deletes: the rest of them go the
    /// single-row way at once, through the lane's workers, instead of one by one after their
    /// chunk.
    declined_devices: std::sync::atomic::AtomicBool,
    declined_deletes: std::sync::atomic::AtomicBool,
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
            deleted: Default::default(),
            declined_devices: Default::default(),
            declined_deletes: Default::default(),
        }
    }

    /// Whether `row` goes this way.
    pub fn takes(&self, row: &JobRow) -> bool {
        let declined = match row.operation {
            Operation::Delete { .. } => &self.declined_deletes,
            _ => &self.declined_devices,
        };
        self.lane.provider().bulk(row.action())
            && row.not_before.is_none()
            && !declined.load(std::sync::atomic::Ordering::Relaxed)
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

    /// Runs one chunk: look, decide, mark, send — device rows, then deletes. Rows sent are
    /// kept for [`BulkLane::confirm`].
    pub async fn run_chunk(
        &self,
        chunk: Vec<(Queued, Option<RowRecord>)>,
        writer: &Writer,
        stop: &Stop,
    ) -> Result<Vec<BulkEnd>, StopReason> {
        let (deletes, devices): (Vec<_>, Vec<_>) = chunk
            .into_iter()
            .partition(|(q, _)| matches!(q.row.operation, Operation::Delete { .. }));
        let mut ends = Vec::new();
        if !devices.is_empty() {
            self.run_device_rows(devices, writer, stop, &mut ends)
                .await?;
        }
        if !deletes.is_empty() && !stop.requested() {
            self.run_deletes(deletes, writer, stop, &mut ends).await?;
        }
        Ok(ends)
    }

    /// Confirms every row sent: records to write, in any order, and why the run must stop
    /// when a listing says so (credentials refused, provider unreachable: those rows keep
    /// their markers for the next run).
    pub async fn confirm(&self, stop: &Stop) -> (Vec<(u64, RowRecord)>, Option<StopReason>) {
        let (mut out, stopped) = self.confirm_devices(stop).await;
        let (deleted, stopped_deleting) = self.confirm_deletes(stop).await;
        out.extend(deleted);
        (out, stopped.or(stopped_deleting))
    }

    /// Makes every row's "sending" marker durable before its chunk leaves.
    async fn mark<'r>(
        &self,
        writer: &Writer,
        rows: impl Iterator<Item = (u64, &'r RowRecord)>,
    ) -> Result<(), StopReason> {
        let marks =
            futures_util::future::join_all(rows.map(|(i, r)| writer.durable(i, r.clone()))).await;
        match marks.into_iter().find(Result::is_err) {
            Some(Err(e)) => Err(StopReason::Store(e)),
            _ => Ok(()),
        }
    }

    /// Sends `items` in one bulk request through `call` (retried as a whole while it may have
    /// been applied or was rate-limited); a refusal splits it in halves until each bad item is
    /// alone. One result per item, in order.
    fn send_split<'a, T: Sync>(
        &'a self,
        items: &'a [T],
        call: &'a BulkCall<'a, T>,
        stop: &'a Stop,
    ) -> ItemResults<'a> {
        Box::pin(async move {
            if items.is_empty() {
                // Nothing to send (no SIM to release or to put back): no request at all.
                return Vec::new();
            }
            if stop.requested() {
                return vec![Err(ProviderError::stopped()); items.len()];
            }
            match with_retries(&self.policy, || call(items)).await {
                Ok(()) => vec![Ok(()); items.len()],
                Err(e) if refuses_items(&e) && items.len() > 1 => {
                    let (left, right) = items.split_at(items.len() / 2);
                    let mut results = self.send_split(left, call, stop).await;
                    results.extend(self.send_split(right, call, stop).await);
                    results
                }
                Err(e) => vec![Err(e); items.len()],
            }
        })
    }

    /// Every SIM the inventory listing shows now, by provider id, or `None` when that takes
    /// more than `budget` pages.
    async fn listed_sims(
        &self,
        budget: u64,
        stop: &Stop,
    ) -> Result<Option<HashMap<String, SimState>>, ProviderError> {
        let account = self.lane.account.as_ref();
        let mut all = HashMap::new();
        let mut cursor = Cursor::First;
        loop {
            if stop.requested() {
                return Err(ProviderError::stopped());
            }
            let page = with_retries(&self.policy, || account.sim_page(&cursor, None)).await?;
            if page.pages.is_some_and(|p| p > budget) {
                return Ok(None);
            }
            all.extend(page.sims.into_iter().map(|(_, s)| (s.id.clone(), s)));
            match page.next {
                Some(next) => cursor = next,
                None => return Ok(Some(all)),
            }
        }
    }
}

/// A row's record as it enters the bulk path: the stored one (an interrupted attempt's, when
/// `interrupted`) or a new one, with its queueing time.
fn entering(queued: &Queued, prior: Option<RowRecord>) -> (RowRecord, bool) {
    let interrupted = prior
        .as_ref()
        .is_some_and(|p| p.phase == Phase::Sending && p.attempts > 0);
    let mut record = prior.unwrap_or_else(|| RowRecord::sending(chrono::Utc::now(), 0));
    record.queued_ms = Some(queued.at.elapsed().as_millis() as u64);
    record.started_at.get_or_insert_with(chrono::Utc::now);
    (record, interrupted)
}

/// A refusal of what the request carries (some item of it), not of the request as such or
/// the account: split the chunk to find the bad items.
fn refuses_items(e: &ProviderError) -> bool {
    matches!(e.class, ErrorClass::Permanent | ErrorClass::Forbidden)
        && e.http_status.is_some_and(|s| (400..500).contains(&s))
}
