//! The dispatch pass: one reader parses each row of the job once and hands it to its lane's
//! queue, or — for a row of a `group` — collects it for the group's sequence. However many
//! providers a job names, the file is read once for dispatch (plus the validation pass a run
//! starts with, or the survey of what is left that a resume makes instead; see
//! [`survey_listable`]).
//!
//! Each lane's queue is bounded, so memory stays flat whatever the job's size. When the reader
//! meets a full queue it waits for room — unless someone else starves meanwhile: another
//! lane whose queue ran dry, or groups that cannot start until their last row is read. Then,
//! rather than hold everyone to the pace of the slowest provider, it *detaches* that lane at
//! the row it could not hand over: the lane drains its queue and reads the rest of its own
//! rows in a catch-up pass from that row. A job for one provider is read once; a provider
//! slower than the others costs a partial pass of its own, never a held-up neighbour.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use tokio::sync::mpsc::{self, error::TryRecvError, error::TrySendError};
use tokio::sync::{oneshot, Notify};

use super::control::Stop;
use super::lane::Lane;
use crate::job::{Action, JobFormat, JobReader, JobRow, ParseOptions, RowResult};
use crate::store::CheckpointStore;

/// Rows a lane's queue holds.
const QUEUE: usize = 256;

/// A row on its way to a lane's workers, with when it was queued (for `queued_ms`).
pub struct Queued {
    pub index: u64,
    pub row: JobRow,
    pub at: Instant,
}

/// The job a run executes, and how to read it.
#[derive(Clone)]
pub struct JobSource {
    pub path: PathBuf,
    pub format: Option<JobFormat>,
    pub parse: ParseOptions,
}

impl JobSource {
    /// Reads the job from row `skip` on and hands each valid row (with its index) to `keep`,
    /// until `keep` says stop or the run stops.
    pub fn read(&self, stop: &Stop, skip: u64, mut keep: impl FnMut(u64, JobRow) -> bool) {
        let Ok(mut reader) = JobReader::open(&self.path, self.format, self.parse.clone()) else {
            return;
        };
        reader.skip_rows(skip);
        for (index, item) in (skip..).zip(reader) {
            if stop.requested() {
                return;
            }
            if let RowResult::Valid(parsed) = item {
                if !keep(index, parsed.row) {
                    return;
                }
            }
        }
    }
}

/// What validation counted about the job, which lets the dispatch pass end each lane's queue
/// at the lane's last row and hand the groups over at the last grouped row.
#[derive(Debug, Clone, Default)]
pub struct JobShape {
    /// Valid rows per lane (grouped or not, finished or not).
    pub lane_rows: BTreeMap<String, u64>,
    /// Valid rows in a `group`; `None` when not known (then groups wait for the pass's end).
    pub grouped_rows: Option<u64>,
}

/// Grouped rows by group, each in file order.
pub type Groups = BTreeMap<String, Vec<(u64, JobRow)>>;

/// Which lanes' queues ran dry: the reader stops waiting on a full queue when another lane
/// starves.
#[derive(Default)]
struct Hunger {
    lanes: Mutex<BTreeSet<String>>,
    changed: Notify,
}

impl Hunger {
    fn set(&self, lane: &str, hungry: bool) {
        let mut lanes = self.lanes.lock().expect("hunger lock");
        if hungry {
            lanes.insert(lane.to_string());
            drop(lanes);
            self.changed.notify_waiters();
        } else {
            lanes.remove(lane);
        }
    }

    /// Whether a lane other than `full`, still fed by the pass, is starving.
    fn starving_besides(&self, full: &str, fed: &BTreeMap<String, Outlet>) -> bool {
        let lanes = self.lanes.lock().expect("hunger lock");
        lanes.iter().any(|l| l != full && fed.contains_key(l))
    }
}

/// The pass's end of one lane's queue.
struct Outlet {
    tx: mpsc::Sender<Queued>,
    /// Set once: the row from which the lane reads on its own.
    detached: Arc<OnceLock<u64>>,
}

/// A lane's rows: from the dispatch pass, then (if it was detached) from its own catch-up pass.
pub struct LaneFeed {
    lane: String,
    source: JobSource,
    stop: Arc<Stop>,
    hunger: Arc<Hunger>,
    shared: Option<mpsc::Receiver<Queued>>,
    detached: Arc<OnceLock<u64>>,
    own: Option<mpsc::Receiver<Queued>>,
}

impl LaneFeed {
    /// The lane's next row in file order; `None` once it has none left.
    pub async fn next(&mut self) -> Option<Queued> {
        loop {
            if let Some(own) = &mut self.own {
                return own.recv().await;
            }
            let shared = self.shared.as_mut()?;
            match shared.try_recv() {
                Ok(queued) => return Some(queued),
                Err(TryRecvError::Empty) => {
                    self.hunger.set(&self.lane, true);
                    let next = shared.recv().await;
                    self.hunger.set(&self.lane, false);
                    if next.is_some() {
                        return next;
                    }
                }
                Err(TryRecvError::Disconnected) => {}
            }
            // The pass is done with this lane: the lane ends, or reads on from where it was
            // detached.
            self.shared = None;
            let &from = self.detached.get()?;
            self.own = Some(self.catch_up(from));
        }
    }

    /// The lane's own pass over its ungrouped rows from row `from` on.
    fn catch_up(&self, from: u64) -> mpsc::Receiver<Queued> {
        tracing::debug!(lane = %self.lane, from, "the lane reads its remaining rows itself");
        let (tx, rx) = mpsc::channel(QUEUE);
        let (source, stop, lane) = (self.source.clone(), self.stop.clone(), self.lane.clone());
        tokio::task::spawn_blocking(move || {
            source.read(&stop, from, |index, row| {
                if row.provider != lane || row.group.is_some() {
                    return true;
                }
                let at = Instant::now();
                tx.blocking_send(Queued { index, row, at }).is_ok()
            });
        });
        rx
    }
}

/// Starts the dispatch pass: every lane's feed, and the groups (handed over once their last
/// row is read, else at the pass's end). Rows before `skip` go to groups only: the lanes'
/// earlier rows are final.
pub fn start(
    source: &JobSource,
    stop: &Arc<Stop>,
    lanes: impl IntoIterator<Item = String>,
    shape: JobShape,
    skip: u64,
) -> (BTreeMap<String, LaneFeed>, oneshot::Receiver<Groups>) {
    let hunger = Arc::new(Hunger::default());
    let mut feeds = BTreeMap::new();
    let mut outlets = BTreeMap::new();
    for lane in lanes {
        let (tx, rx) = mpsc::channel(QUEUE);
        let detached = Arc::new(OnceLock::new());
        outlets.insert(
            lane.clone(),
            Outlet {
                tx,
                detached: detached.clone(),
            },
        );
        feeds.insert(
            lane.clone(),
            LaneFeed {
                lane,
                source: source.clone(),
                stop: stop.clone(),
                hunger: hunger.clone(),
                shared: Some(rx),
                detached,
                own: None,
            },
        );
    }
    let (groups_tx, groups_rx) = oneshot::channel();
    let pass = Pass {
        outlets,
        hunger,
        shape,
        seen: BTreeMap::new(),
        grouped_seen: 0,
        groups: Groups::new(),
        groups_tx: Some(groups_tx),
        stop: stop.clone(),
        runtime: tokio::runtime::Handle::current(),
    };
    let source = source.clone();
    tokio::task::spawn_blocking(move || pass.run(&source, skip));
    (feeds, groups_rx)
}

/// The dispatch pass's state while it reads.
struct Pass {
    outlets: BTreeMap<String, Outlet>,
    hunger: Arc<Hunger>,
    shape: JobShape,
    seen: BTreeMap<String, u64>,
    grouped_seen: u64,
    groups: Groups,
    groups_tx: Option<oneshot::Sender<Groups>>,
    stop: Arc<Stop>,
    runtime: tokio::runtime::Handle,
}

impl Pass {
    fn run(mut self, source: &JobSource, skip: u64) {
        if self.shape.grouped_rows == Some(0) {
            self.hand_over_groups();
        }
        let stop = self.stop.clone();
        source.read(&stop, 0, |index, row| {
            self.take(index, row, skip);
            !(self.outlets.is_empty() && self.groups_tx.is_none())
        });
        self.hand_over_groups();
    }

    /// One row: to its group, or to its lane (from `skip` on).
    fn take(&mut self, index: u64, row: JobRow, skip: u64) {
        let lane = row.provider.clone();
        let seen = self.seen.entry(lane.clone()).or_default();
        *seen += 1;
        let lane_done = self.shape.lane_rows.get(&lane) == Some(&*seen);
        if let Some(group) = row.group.clone() {
            self.groups.entry(group).or_default().push((index, row));
            self.grouped_seen += 1;
            if self.shape.grouped_rows == Some(self.grouped_seen) {
                self.hand_over_groups();
            }
        } else if index >= skip {
            self.deliver(&lane, index, row);
        }
        if lane_done {
            // The lane's last row is read: its queue ends when drained.
            self.outlets.remove(&lane);
        }
    }

    fn hand_over_groups(&mut self) {
        if let Some(tx) = self.groups_tx.take() {
            let _ = tx.send(std::mem::take(&mut self.groups));
        }
    }

    /// Hands a row to its lane's queue: at once if there is room; else waits for room unless
    /// someone starves meanwhile, and then detaches the lane at this row.
    fn deliver(&mut self, lane: &str, index: u64, row: JobRow) {
        let Some(outlet) = self.outlets.get(lane) else {
            return; // detached, or no longer listening
        };
        let queued = Queued {
            index,
            row,
            at: Instant::now(),
        };
        let queued = match outlet.tx.try_send(queued) {
            Ok(()) => return,
            Err(TrySendError::Closed(_)) => {
                self.outlets.remove(lane);
                return;
            }
            Err(TrySendError::Full(queued)) => queued,
        };
        // Groups not yet handed over wait for this pass: never hold them behind a lane.
        let waited = match self.groups_tx.is_some() {
            true => Wait::Starving,
            false => self.runtime.block_on(room_or_starving(
                lane,
                queued,
                &self.outlets,
                &self.hunger,
                &self.stop,
            )),
        };
        match waited {
            Wait::Sent => {}
            Wait::Closed => {
                self.outlets.remove(lane);
            }
            Wait::Starving => {
                if let Some(outlet) = self.outlets.remove(lane) {
                    let _ = outlet.detached.set(index);
                }
            }
        }
    }
}

enum Wait {
    Sent,
    Closed,
    Starving,
}

/// Waits for room in `lane`'s queue and sends the row, unless another lane starves first.
async fn room_or_starving(
    lane: &str,
    queued: Queued,
    outlets: &BTreeMap<String, Outlet>,
    hunger: &Hunger,
    stop: &Stop,
) -> Wait {
    let tx = &outlets[lane].tx;
    loop {
        // Registered before the check, so that a lane turning hungry in between still wakes us.
        let changed = hunger.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        if hunger.starving_besides(lane, outlets) {
            return Wait::Starving;
        }
        tokio::select! {
            permit = tx.reserve() => {
                return match permit {
                    Ok(permit) => {
                        permit.send(queued);
                        Wait::Sent
                    }
                    Err(_) => Wait::Closed,
                };
            }
            _ = &mut changed => {}
            _ = stop.stopped() => return Wait::Closed,
        }
    }
}

/// What a resume has left for each lane's inventory listing: the unfinished rows outside
/// groups, from `skip` on, that a listing could answer (rows a previous invocation finished
/// need no lookup, nor do changes it left pending: they are confirmed by their reference).
/// One pass for all lanes.
pub fn survey_listable(
    source: &JobSource,
    stop: &Stop,
    lanes: &BTreeMap<String, Arc<Lane>>,
    store: &dyn CheckpointStore,
    skip: u64,
) -> BTreeMap<String, usize> {
    let mut wanted: BTreeMap<String, usize> = BTreeMap::new();
    let finished = |index: u64| {
        store
            .get(index)
            .ok()
            .flatten()
            .is_some_and(|r| r.final_outcome().is_some() || r.awaits_confirmation())
    };
    source.read(stop, skip, |index, row| {
        if let Some(lane) = lanes.get(&row.provider) {
            if lane.snapshot_eligible(&row) && row.target.iccid().is_some() && !finished(index) {
                *wanted.entry(row.provider.clone()).or_default() += 1;
            }
        }
        true
    });
    wanted
}

/// What a fresh run has for each lane's inventory listing, from the validation's counts.
pub fn listable_from_counts(
    lanes: &BTreeMap<String, Arc<Lane>>,
    listable: &BTreeMap<(String, Action), u64>,
) -> BTreeMap<String, usize> {
    let mut wanted: BTreeMap<String, usize> = BTreeMap::new();
    for ((provider, action), rows) in listable {
        if let Some(lane) = lanes.get(provider) {
            if lane.listing_answers(*action) {
                *wanted.entry(provider.clone()).or_default() += *rows as usize;
            }
        }
    }
    wanted
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::inventory::{iccid, EMNIFY_PREFIX, TWILIO_PREFIX};

    /// A job of `(provider, group)` rows, suspending SIM i of its provider on row i.
    fn job(rows: &[(&str, Option<&str>)]) -> (tempfile::TempDir, JobSource) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("job.csv");
        let mut text = String::from("action,provider,iccid,group\n");
        for (i, (provider, group)) in rows.iter().enumerate() {
            let prefix = match *provider {
                "twilio" => TWILIO_PREFIX,
                _ => EMNIFY_PREFIX,
            };
            let sim = iccid(prefix, i as u64 + 1);
            text.push_str(&format!(
                "suspend,{provider},{sim},{}\n",
                group.unwrap_or("")
            ));
        }
        std::fs::write(&path, text).unwrap();
        let source = JobSource {
            path,
            format: None,
            parse: ParseOptions::default(),
        };
        (dir, source)
    }

    fn shape(rows: &[(&str, Option<&str>)], grouped_known: bool) -> JobShape {
        let mut lane_rows = BTreeMap::new();
        for (provider, _) in rows {
            *lane_rows.entry(provider.to_string()).or_default() += 1;
        }
        let grouped = rows.iter().filter(|(_, g)| g.is_some()).count() as u64;
        JobShape {
            lane_rows,
            grouped_rows: grouped_known.then_some(grouped),
        }
    }

    async fn drain(feed: &mut LaneFeed) -> Vec<u64> {
        let mut got = Vec::new();
        while let Some(q) = feed.next().await {
            got.push(q.index);
        }
        got
    }

    /// Fails the test instead of hanging it when a feed waits for a row it will never get.
    async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(120), f)
            .await
            .unwrap_or_else(|_| panic!("{what}: still waiting after 120 s"))
    }

    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_for_one_provider_is_read_once_whatever_its_pace() {
        let rows = vec![("emnify", None); 1000];
        let (_dir, source) = job(&rows);
        let stop = Arc::new(Stop::default());
        let (mut feeds, _groups) = feed_start(&source, &stop, &["emnify"], shape(&rows, true), 0);
        let mut feed = feeds.remove("emnify").unwrap();
        // The queue is full before the first row is taken: the pass waits for room.
        while feed.shared.as_ref().unwrap().len() < QUEUE {
            tokio::task::yield_now().await;
        }
        let got = within("the lane's rows", drain(&mut feed)).await;
        assert_eq!(got, (0..1000).collect::<Vec<_>>());
        assert_eq!(
            feed.detached.get(),
            None,
            "the lane had to read the job again"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lane_that_falls_behind_reads_on_by_itself_and_holds_no_other_up() {
        let mut rows = vec![("emnify", None); 600];
        rows.extend(vec![("twilio", None); 300]);
        let (_dir, source) = job(&rows);
        let stop = Arc::new(Stop::default());
        let (mut feeds, _groups) =
            feed_start(&source, &stop, &["emnify", "twilio"], shape(&rows, true), 0);
        let (mut emnify, mut twilio) = (
            feeds.remove("emnify").unwrap(),
            feeds.remove("twilio").unwrap(),
        );
        // Nobody takes emnify's rows until every Twilio row is through.
        let got = within(
            "twilio's rows behind a full emnify queue",
            drain(&mut twilio),
        )
        .await;
        assert_eq!(got, (600..900).collect::<Vec<_>>());
        let got = within("emnify's rows", drain(&mut emnify)).await;
        assert_eq!(got, (0..600).collect::<Vec<_>>(), "each row once, in order");
        assert_eq!(
            emnify.detached.get(),
            Some(&(QUEUE as u64)),
            "detached at the first row its queue could not take"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn groups_are_handed_over_without_waiting_for_a_full_lane() {
        for grouped_known in [true, false] {
            let mut rows = vec![("emnify", None); 600];
            rows.extend([("twilio", Some("device-1")), ("emnify", Some("device-1"))]);
            rows.extend(vec![("emnify", None); 10]);
            let (_dir, source) = job(&rows);
            let stop = Arc::new(Stop::default());
            let (mut feeds, groups) = feed_start(
                &source,
                &stop,
                &["emnify", "twilio"],
                shape(&rows, grouped_known),
                0,
            );
            let groups = within("the groups", groups).await.unwrap();
            let device: Vec<u64> = groups["device-1"].iter().map(|(i, _)| *i).collect();
            assert_eq!(device, vec![600, 601]);
            let got = within("emnify's rows", drain(feeds.get_mut("emnify").unwrap())).await;
            let want: Vec<u64> = (0..600).chain(602..612).collect();
            assert_eq!(got, want, "grouped_known: {grouped_known}");
            let got = within("twilio's rows", drain(feeds.get_mut("twilio").unwrap())).await;
            assert!(got.is_empty());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rows_a_resume_finished_go_to_groups_only() {
        let mut rows = vec![("emnify", None); 50];
        rows[10].1 = Some("g");
        let (_dir, source) = job(&rows);
        let stop = Arc::new(Stop::default());
        let (mut feeds, groups) = feed_start(&source, &stop, &["emnify"], shape(&rows, true), 20);
        let got = within("the lane's rows", drain(feeds.get_mut("emnify").unwrap())).await;
        assert_eq!(got, (20..50).collect::<Vec<_>>());
        let groups = within("the groups", groups).await.unwrap();
        assert_eq!(groups["g"][0].0, 10);
    }

    fn feed_start(
        source: &JobSource,
        stop: &Arc<Stop>,
        lanes: &[&str],
        shape: JobShape,
        skip: u64,
    ) -> (BTreeMap<String, LaneFeed>, oneshot::Receiver<Groups>) {
        start(
            source,
            stop,
            lanes.iter().map(|l| l.to_string()),
            shape,
            skip,
        )
    }
}
