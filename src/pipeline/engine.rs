//! The engine of `simbatch run`: feeds every row to its provider's lane, runs the lanes'
//! worker pools side by side, runs `group`s step by step across lanes, and stops cleanly on an
//! auth failure, the failure threshold or Ctrl-C.
//!
//! One dispatch pass (`feed`) reads the job and fills each lane's bounded queue, so memory
//! stays flat; a lane that falls behind while another starves reads the rest of its rows
//! itself, so a slow or throttled provider never holds up another's rows. Rows that belong to
//! a `group` are collected by the same pass (memory grows with grouped rows only) and each
//! group runs as one sequence.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::Semaphore;

use super::bulk::{BulkEnd, BulkLane};
use super::confirm::{Confirmer, Handoff};
use super::control::{over_limit, FailureLimit, Stop, StopReason};
use super::execute::{execute, RowContext, RowEnd};
use super::feed::{self, JobShape, JobSource, LaneFeed};
use super::lane::Lane;
use super::live::Live;
use super::writer::Writer;
use crate::job::{Action, JobRow};
use crate::provider::retry::RetryPolicy;
use crate::store::{CheckpointStore, FinishedPrefix, Outcome, RowRecord};

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub policy: RetryPolicy,
    pub preflight: bool,
    /// How long to wait for asynchronous confirmations; `None` with `--no-wait`.
    pub wait: Option<Duration>,
    pub max_failures: Option<FailureLimit>,
    /// Groups running at once.
    pub group_concurrency: usize,
    /// Lanes whose bulk-capable rows go in chunks: the chunk size and how many such rows the
    /// job has (see [`super::bulk`]).
    pub bulk: BTreeMap<String, (usize, u64)>,
}

pub struct Engine {
    pub job: JobSource,
    /// What validation counted: where each lane's rows end, how many rows are grouped.
    pub shape: JobShape,
    /// Rows an inventory listing could answer, per (provider, action), from this invocation's
    /// validation; `None` on a resume, which surveys what is left instead.
    pub listable: Option<BTreeMap<(String, Action), u64>>,
    pub lanes: BTreeMap<String, Arc<Lane>>,
    pub store: Arc<dyn CheckpointStore>,
    pub options: RunOptions,
    pub live: Arc<Live>,
    pub stop: Arc<Stop>,
    /// True while the schedule (`--window`, `--until`) allows sending; see `schedule`.
    pub open: tokio::sync::watch::Receiver<bool>,
    /// Leading rows that earlier invocations finished: the lanes skip them unread (groups
    /// still read theirs, to know how far each group got), and they are counted once, here.
    pub prefix: FinishedPrefix,
    /// Rows that repeat an earlier row's change, by line → the first's line: done once, the
    /// repeats `skipped` (validation warned "it will be done once").
    pub duplicate_of: std::collections::HashMap<u64, u64>,
}

/// Executes a row, counting the time its requests waited at the rate gate as queueing, not as
/// the provider's latency.
async fn execute_timed(
    ctx: &RowContext<'_>,
    index: u64,
    row: &JobRow,
    prior: Option<RowRecord>,
    queued: Duration,
) -> RowEnd {
    let (end, gate_wait) = crate::provider::limiter::GATE_WAIT
        .scope(std::cell::Cell::new(Duration::ZERO), async {
            let end = execute(ctx, index, row, prior, queued).await;
            (end, crate::provider::limiter::GATE_WAIT.with(|w| w.get()))
        })
        .await;
    let wait = gate_wait.as_millis() as u64;
    match end {
        RowEnd::Record(mut record) => {
            record.latency_ms = record.latency_ms.map(|l| l.saturating_sub(wait));
            record.queued_ms = Some(record.queued_ms.unwrap_or(0) + wait);
            RowEnd::Record(record)
        }
        RowEnd::Handoff {
            mut record,
            reference,
            after,
            started,
        } => {
            record.queued_ms = Some(record.queued_ms.unwrap_or(0) + wait);
            RowEnd::Handoff {
                record,
                reference,
                after,
                started: started + gate_wait,
            }
        }
        other => other,
    }
}

impl Engine {
    /// Runs every unfinished row; returns why it stopped early, if it did.
    pub async fn run(self: Arc<Self>, on_commit: super::writer::OnCommit) -> Option<StopReason> {
        self.live.inherit(&self.prefix.counts);
        // Once the run stops, no request leaves any more and every wait at a gate ends at once.
        let closer = {
            let (stop, lanes) = (self.stop.clone(), self.lanes.clone());
            tokio::spawn(async move {
                stop.stopped().await;
                for lane in lanes.values() {
                    lane.http().gate.close();
                }
            })
        };
        let mut on_commit = on_commit;
        let (writer, writer_task) = Writer::start(
            self.store.clone(),
            Box::new(move |index, record| on_commit(index, record)),
        );

        let (confirmers, confirmer_tasks) = self.start_confirmers(&writer);
        let confirmers = Arc::new(confirmers);

        let mut tasks = tokio::task::JoinSet::new();
        // Outside the window nothing is read either: a listing taken hours before the window
        // opens would be stale by then.
        if super::schedule::wait_open(&mut self.open.clone(), &self.stop).await {
            self.start_lanes_and_groups(&mut tasks, &writer, &confirmers)
                .await;
        }

        while let Some(result) = tasks.join_next().await {
            if let Err(e) = result {
                if e.is_panic() {
                    std::panic::resume_unwind(e.into_panic());
                }
            }
        }
        drop(confirmers);
        for task in confirmer_tasks {
            let _ = task.await;
        }
        drop(writer);
        if let Ok(Err(e)) = writer_task.await {
            self.stop.request(StopReason::Store(e.to_string()));
        }
        closer.abort();
        self.stop.reason()
    }

    /// One confirmer per lane, and the tasks to wait for at the end.
    #[allow(clippy::type_complexity)]
    fn start_confirmers(
        self: &Arc<Self>,
        writer: &Writer,
    ) -> (
        BTreeMap<String, Confirmer>,
        Vec<tokio::task::JoinHandle<()>>,
    ) {
        let wait = self.options.wait.unwrap_or(Duration::ZERO);
        let mut confirmers = BTreeMap::new();
        let mut tasks = Vec::new();
        for (name, lane) in &self.lanes {
            let (engine, lane_name) = (self.clone(), name.clone());
            let (confirmer, task) = Confirmer::start(
                lane.clone(),
                writer.clone(),
                wait,
                self.stop.clone(),
                Arc::new(move |outcome| {
                    engine.live.lane(&lane_name).confirmation_came();
                    engine.note(&lane_name, outcome, true)
                }),
            );
            confirmers.insert(name.clone(), confirmer);
            tasks.push(task);
        }
        (confirmers, tasks)
    }

    /// Starts the dispatch pass, a task per lane fed by it, and — once the pass has read
    /// their rows — a task per group.
    async fn start_lanes_and_groups(
        self: &Arc<Self>,
        tasks: &mut tokio::task::JoinSet<()>,
        writer: &Writer,
        confirmers: &Arc<BTreeMap<String, Confirmer>>,
    ) {
        let skip = self.prefix.rows;
        let wanted = self.listable_rows(skip).await;
        let (feeds, groups) = feed::start(
            &self.job,
            &self.stop,
            self.lanes.keys().cloned(),
            self.shape.clone(),
            skip,
        );
        for (name, feed) in feeds {
            let Some(lane) = self.lanes.get(&name).cloned() else {
                continue;
            };
            let wanted = wanted.get(&name).copied().unwrap_or(0);
            let (engine, writer, confirmers) = (self.clone(), writer.clone(), confirmers.clone());
            tasks.spawn(async move {
                engine
                    .run_lane(lane, feed, wanted, writer, confirmers)
                    .await
            });
        }
        let groups = tokio::select! {
            groups = groups => groups.unwrap_or_default(),
            _ = self.stop.stopped() => return,
        };
        let group_slots = Arc::new(Semaphore::new(self.options.group_concurrency.max(1)));
        for (_, rows) in groups {
            let (engine, writer, slots, confirmers) = (
                self.clone(),
                writer.clone(),
                group_slots.clone(),
                confirmers.clone(),
            );
            tasks.spawn(async move {
                let Ok(_slot) = slots.acquire_owned().await else {
                    return;
                };
                if !super::schedule::wait_open(&mut engine.open.clone(), &engine.stop).await {
                    return;
                }
                engine.run_group(&writer, &confirmers, rows).await;
            });
        }
    }

    /// Per lane, the rows its inventory listing could answer: from validation's counts on a
    /// fresh run; on a resume, only the unfinished ones (counting those too made resuming the
    /// last 228 of 1,000,000 rows list all 4,000 pages: 160 s).
    async fn listable_rows(&self, skip: u64) -> BTreeMap<String, usize> {
        if let Some(listable) = &self.listable {
            return feed::listable_from_counts(&self.lanes, listable);
        }
        let (job, stop, lanes, store) = (
            self.job.clone(),
            self.stop.clone(),
            self.lanes.clone(),
            self.store.clone(),
        );
        tokio::task::spawn_blocking(move || {
            feed::survey_listable(&job, &stop, &lanes, store.as_ref(), skip)
        })
        .await
        .unwrap_or_default()
    }

    /// Counts an outcome (`now`: produced by this invocation) and stops dispatch once the
    /// failure threshold is exceeded after the warm-up.
    pub fn note(&self, lane: &str, outcome: Outcome, now: bool) {
        let (failed, finished) = self.live.record_in(lane, outcome, now);
        if now && over_limit(self.options.max_failures, failed, finished) {
            self.stop
                .request(StopReason::FailureThreshold { failed, finished });
        }
    }

    /// One lane: list its inventory if that saves requests (`wanted` rows could use it), and
    /// meanwhile feed its ungrouped rows to its workers.
    async fn run_lane(
        self: Arc<Self>,
        lane: Arc<Lane>,
        feed: LaneFeed,
        wanted: usize,
        writer: Writer,
        confirmers: Arc<BTreeMap<String, Confirmer>>,
    ) {
        // The listing runs alongside dispatch: a row whose SIM is listed goes as soon as its
        // page is in (see `Lane::take_listed`). It is polled first, so it is announced before
        // any row asks.
        let listing = async {
            match lane.prefetch(wanted, &self.options.policy).await {
                Ok(pages) if pages > 0 => {
                    tracing::info!(lane = %lane.name, pages, rows = wanted, "listed the inventory instead of looking rows up")
                }
                Ok(_) => {}
                Err(e) if e.stops_run() => {
                    self.stop.request(StopReason::provider(&lane.name, &e));
                }
                Err(e) if e.class == crate::provider::ErrorClass::Stopped => {}
                Err(e) => {
                    tracing::warn!(lane = %lane.name, error = %e, "could not list the inventory; looking the remaining rows up one by one")
                }
            }
        };
        tokio::join!(listing, self.work(lane.clone(), feed, writer, confirmers));
    }

    /// The lane's workers, each taking the lane's next row until none is left.
    async fn work(
        self: &Arc<Self>,
        lane: Arc<Lane>,
        feed: LaneFeed,
        writer: Writer,
        confirmers: Arc<BTreeMap<String, Confirmer>>,
    ) {
        let feed = Arc::new(tokio::sync::Mutex::new(feed));
        let bulk = self.options.bulk.get(&lane.name).map(|&(chunk, rows)| {
            Arc::new(BulkLane::new(
                lane.clone(),
                chunk,
                rows,
                self.options.policy,
            ))
        });
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..lane.concurrency.max(1) {
            let (engine, lane, feed, writer, confirmers, bulk) = (
                self.clone(),
                lane.clone(),
                feed.clone(),
                writer.clone(),
                confirmers.clone(),
                bulk.clone(),
            );
            workers.spawn(async move {
                loop {
                    let next = feed.lock().await.next().await;
                    let Some(queued) = next else {
                        break;
                    };
                    if engine.stop.requested() {
                        break;
                    }
                    if let Some(bulk) = bulk.as_ref().filter(|b| b.takes(&queued.row)) {
                        let Ok(prior) = engine
                            .before_sending(&writer, queued.index, &queued.row)
                            .await
                        else {
                            continue;
                        };
                        if let Some(chunk) = bulk.push(queued, prior) {
                            engine
                                .run_bulk_chunk(&lane, bulk, chunk, &writer, &confirmers)
                                .await;
                        }
                        continue;
                    }
                    engine
                        .run_row(
                            &lane,
                            &writer,
                            &confirmers,
                            queued.index,
                            &queued.row,
                            queued.at.elapsed(),
                            false,
                        )
                        .await;
                }
            });
        }
        while let Some(result) = workers.join_next().await {
            if let Err(e) = result {
                if e.is_panic() {
                    std::panic::resume_unwind(e.into_panic());
                }
            }
        }
        if let Some(bulk) = bulk {
            let rest = bulk.rest();
            if !rest.is_empty() && !self.stop.requested() {
                self.run_bulk_chunk(&lane, &bulk, rest, &writer, &confirmers)
                    .await;
            }
            let (records, stopped) = bulk.confirm(&self.stop).await;
            for (index, record) in records {
                self.record(&lane.name, &writer, index, record).await;
            }
            if let Some(reason) = stopped {
                self.stop.request(reason);
            }
        }
    }

    /// A row's record produced by this invocation: counted, and handed to the writer. Its
    /// outcome, if it has one.
    async fn record(
        &self,
        lane: &str,
        writer: &Writer,
        index: u64,
        record: RowRecord,
    ) -> Option<Outcome> {
        let outcome = record.outcome;
        if let Some(o) = outcome {
            self.note(lane, o, true);
        }
        writer.put(index, record).await;
        outcome
    }

    /// One chunk of bulk rows: its records written; the rows it cannot take run as single
    /// rows, side by side up to the lane's concurrency (one slow answer holds up no other).
    async fn run_bulk_chunk(
        &self,
        lane: &Lane,
        bulk: &BulkLane,
        chunk: Vec<(super::feed::Queued, Option<RowRecord>)>,
        writer: &Writer,
        confirmers: &BTreeMap<String, Confirmer>,
    ) {
        let ends = match bulk.run_chunk(chunk, writer, &self.stop).await {
            Ok(ends) => ends,
            Err(reason) => return self.stop.request(reason),
        };
        let mut singles = Vec::new();
        for end in ends {
            match end {
                BulkEnd::Record(index, record) => {
                    self.record(&lane.name, writer, index, record).await;
                }
                BulkEnd::Single(q) => singles.push(q),
            }
        }
        futures_util::stream::iter(singles)
            .for_each_concurrent(lane.concurrency.max(1), |q| async move {
                self.run_row(
                    lane,
                    writer,
                    confirmers,
                    q.index,
                    &q.row,
                    q.at.elapsed(),
                    false,
                )
                .await;
            })
            .await;
    }

    /// Runs one row unless it is already final; returns its final outcome (if it got one now or
    /// before). With `await_confirmation`, an accepted change is waited for (groups need it).
    #[allow(clippy::too_many_arguments)]
    async fn run_row(
        &self,
        lane: &Lane,
        writer: &Writer,
        confirmers: &BTreeMap<String, Confirmer>,
        index: u64,
        row: &JobRow,
        queued: Duration,
        await_confirmation: bool,
    ) -> Option<Outcome> {
        let prior = match self.before_sending(writer, index, row).await {
            Ok(prior) => prior,
            Err(outcome) => return outcome,
        };
        let ctx = RowContext {
            lane,
            policy: self.options.policy,
            preflight: self.options.preflight,
            wait: self.options.wait,
            writer,
            stop: &self.stop,
        };
        let end = execute_timed(&ctx, index, row, prior, queued).await;
        self.conclude(lane, writer, confirmers, index, end, await_confirmation)
            .await
    }

    /// What a row needs before it may be sent: its stored record, unless it is final already,
    /// a repeat of an earlier row (skipped now), or held by its `not_before` until the run
    /// stopped (`Err`: the outcome the row has, if any).
    async fn before_sending(
        &self,
        writer: &Writer,
        index: u64,
        row: &JobRow,
    ) -> Result<Option<RowRecord>, Option<Outcome>> {
        let prior = match self.store.get(index) {
            Ok(p) => p,
            Err(e) => {
                self.stop.request(StopReason::Store(e.to_string()));
                return Err(None);
            }
        };
        if let Some(outcome) = prior.as_ref().and_then(RowRecord::final_outcome) {
            if index >= self.prefix.rows {
                self.note(&row.provider, outcome, false); // the prefix was counted at the start
            }
            return Err(Some(outcome));
        }
        if let Some(first) = self.duplicate_of.get(&row.line) {
            self.note(&row.provider, Outcome::Skipped, true);
            let reason = format!("duplicate of line {first}");
            writer
                .put(index, RowRecord::decided(Outcome::Skipped, reason))
                .await;
            return Err(Some(Outcome::Skipped));
        }
        // `not_before`: the row is held, not failed, until its time (a stop — Ctrl-C, the
        // window's close, `--until` — ends the wait and leaves the row for the next run).
        if let Some(at) = row.not_before {
            if let Ok(wait) = (at - chrono::Utc::now()).to_std() {
                tracing::info!(line = row.line, until = %at, "holding the row until its not_before");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = self.stop.stopped() => return Err(None),
                }
            }
        }
        Ok(prior)
    }

    /// Where a row's end goes: an accepted change to the lane's confirmer (a group waits for
    /// its outcome), a record to the writer, a refusal of credentials to the stop signal.
    async fn conclude(
        &self,
        lane: &Lane,
        writer: &Writer,
        confirmers: &BTreeMap<String, Confirmer>,
        index: u64,
        end: RowEnd,
        await_confirmation: bool,
    ) -> Option<Outcome> {
        match end {
            RowEnd::Handoff {
                record,
                reference,
                after,
                started,
            } => {
                let confirmer = confirmers
                    .get(&lane.name)
                    .expect("every lane has a confirmer");
                self.live.lane(&lane.name).confirmation_awaited();
                // Groups wait for the confirmed outcome; other rows move on.
                let (done, outcome) = match await_confirmation {
                    true => {
                        let (done, outcome) = tokio::sync::oneshot::channel();
                        (Some(done), Some(outcome))
                    }
                    false => (None, None),
                };
                confirmer
                    .submit(Handoff {
                        index,
                        record,
                        reference,
                        after,
                        started,
                        done,
                    })
                    .await;
                match outcome {
                    Some(outcome) => outcome.await.ok().flatten(),
                    None => None,
                }
            }
            RowEnd::Record(record) => self.record(&lane.name, writer, index, record).await,
            RowEnd::Aborted(e) => {
                self.stop.request(StopReason::provider(&lane.name, &e));
                None
            }
            RowEnd::Stopped => None,
        }
    }

    /// Runs a group's rows in file order, each only after the previous one succeeded (or was a
    /// no-op); after a failure the rest are `blocked`.
    async fn run_group(
        &self,
        writer: &Writer,
        confirmers: &BTreeMap<String, Confirmer>,
        rows: Vec<(u64, JobRow)>,
    ) {
        let mut blocked_by: Option<u64> = None;
        for (index, row) in rows {
            if self.stop.requested() {
                return;
            }
            if let Some(line) = blocked_by {
                let prior = self.store.get(index).ok().flatten();
                if prior
                    .as_ref()
                    .and_then(|p| p.outcome)
                    .is_some_and(Outcome::is_final)
                {
                    continue;
                }
                let reason = format!(
                    "an earlier row of group `{}` (line {line}) did not succeed",
                    row.group.as_deref().unwrap_or_default()
                );
                self.note(&row.provider, Outcome::Blocked, true);
                writer
                    .put(index, RowRecord::decided(Outcome::Blocked, reason))
                    .await;
                continue;
            }
            let Some(lane) = self.lanes.get(&row.provider) else {
                continue;
            };
            match self
                .run_row(lane, writer, confirmers, index, &row, Duration::ZERO, true)
                .await
            {
                Some(Outcome::Succeeded | Outcome::Skipped) => {}
                // Not confirmed yet: the next step waits for the next run, it is not blocked.
                Some(Outcome::Pending) => return,
                Some(_) => blocked_by = Some(row.line),
                None => return, // stopped: the rest stays for the next run
            }
        }
    }
}
