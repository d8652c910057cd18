//! Dispatch: the engine over the lanes, with what watches it — the schedule's supervisor
//! (`--window`, `--until`), the two-stage Ctrl-C handler, the progress display — until every
//! row is done or the run stops.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::request::RunRequest;
use super::state::Opened;
use crate::defaults;
use crate::exit_code::ExitCode;
use crate::job::FileValidation;
use crate::pipeline::control::{Stop, StopReason};
use crate::pipeline::engine::{Engine, RunOptions};
use crate::pipeline::feed::{JobShape, JobSource};
use crate::pipeline::lane::Lane;
use crate::pipeline::live::Live;
use crate::pipeline::writer::OnCommit;
use crate::provider::retry::RetryPolicy;
use crate::store::{CheckpointStore, FinishedPrefix, Outcome};

/// How dispatch ended.
pub struct Dispatched {
    pub stopped: Option<StopReason>,
    pub live: Arc<Live>,
    pub started_at: DateTime<Utc>,
    pub elapsed: Duration,
}

/// Runs every unfinished row of the run.
pub async fn dispatch(
    req: &RunRequest,
    opened: &Opened,
    validation: &FileValidation,
    lanes: &BTreeMap<String, Arc<Lane>>,
) -> Dispatched {
    let started_at = Utc::now();
    let started = Instant::now();
    let prefix = if opened.resumed {
        opened.run.finished_prefix().unwrap_or_default()
    } else {
        FinishedPrefix::default()
    };
    let live = Arc::new(Live::default());
    let stop = Arc::new(Stop::default());
    let lane_rows = rows_per_lane(validation, lanes);
    let progress = progress_for(req, validation, &lane_rows);
    if prefix.rows > 0 {
        inherit_lanes(&live, req, opened, prefix.rows);
    }
    let (open_tx, open) = tokio::sync::watch::channel(req.schedule.is_unrestricted());
    let open_rx = open.clone();
    if !req.schedule.is_unrestricted() {
        let (schedule, stop, progress) = (req.schedule, stop.clone(), progress.clone());
        tokio::spawn(async move {
            crate::pipeline::schedule::supervise(schedule, open_tx, stop, |line| {
                progress.println(line)
            })
            .await
        });
    }
    let engine = Arc::new(Engine {
        job: JobSource {
            path: opened.job.clone(),
            format: Some(req.job_format()),
            parse: req.parse.clone(),
        },
        shape: job_shape(validation),
        // A fresh run's validation counted the rows a listing could answer; a resume surveys
        // what is left.
        listable: (!opened.resumed).then(|| validation.listable.clone()),
        lanes: lanes.clone(),
        store: opened.run.clone(),
        options: run_options(req, validation, lanes),
        live: live.clone(),
        stop: stop.clone(),
        open,
        prefix,
        duplicate_of: validation.duplicate_of.iter().copied().collect(),
    });
    if req.handle_ctrl_c {
        handle_ctrl_c(stop.clone(), progress.clone());
    }
    let console = super::console::start(
        super::console::ConsoleSource {
            run_id: opened.run_id.clone(),
            job: req.job.display().to_string(),
            state: req.state.clone(),
            rows: validation.valid_rows,
            lanes: lane_rows,
            live: live.clone(),
            open: open_rx,
            schedule: req.schedule,
        },
        progress.clone(),
    );
    let stopped = engine.run(on_commit(progress.clone(), live.clone())).await;
    console.abort();
    let _ = console.await;
    super::live_view::remove(&req.state, &opened.run_id);
    progress.finish();
    // How far the leading rows are all final: the next resume skips them unread.
    if let Err(e) = opened.run.advance_finished_prefix() {
        tracing::warn!(error = %e, "could not record the finished rows; a resume reads them again");
    }
    Dispatched {
        stopped,
        live,
        started_at,
        elapsed: started.elapsed(),
    }
}

/// The display of this run: a line per lane and the total.
fn progress_for(
    req: &RunRequest,
    validation: &FileValidation,
    lane_rows: &[(Arc<Lane>, u64)],
) -> crate::progress::Progress {
    let names: Vec<(String, u64)> = lane_rows
        .iter()
        .map(|(l, n)| (l.name.clone(), *n))
        .collect();
    crate::progress::Progress::new(
        &names,
        validation.valid_rows,
        req.quiet,
        req.progress_interval,
    )
}

fn run_options(
    req: &RunRequest,
    validation: &FileValidation,
    lanes: &BTreeMap<String, Arc<Lane>>,
) -> RunOptions {
    RunOptions {
        policy: RetryPolicy {
            max_attempts: req.max_attempts,
            ..RetryPolicy::default()
        },
        preflight: req.preflight,
        wait: req.wait,
        max_failures: req.max_failures,
        group_concurrency: defaults::GROUPS_AT_ONCE,
        bulk: crate::pipeline::bulk::bulk_lanes(req.bulk_chunk, &validation.counts, lanes),
    }
}

/// First Ctrl-C: stop starting rows and finish; the second: exit at once.
fn handle_ctrl_c(stop: Arc<Stop>, progress: crate::progress::Progress) {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            progress.println("simbatch: interrupted: finishing requests in flight, then writing reports; press Ctrl-C again to exit at once (the run stays resumable)");
            stop.request(StopReason::Interrupted);
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(ExitCode::Aborted as i32);
            }
        }
    });
}

/// Told of each committed record: the total's position, and the reasons rows did not
/// succeed (for the live view).
fn on_commit(progress: crate::progress::Progress, live: Arc<Live>) -> OnCommit {
    Box::new(move |_, record| {
        if record.outcome.is_some_and(Outcome::did_not_succeed) {
            live.note_reason(crate::report::reason_kind(
                record.reason.as_deref().unwrap_or_default(),
            ));
        }
        progress.update(&live)
    })
}

/// Each lane with its rows in the job.
fn rows_per_lane(
    validation: &FileValidation,
    lanes: &BTreeMap<String, Arc<Lane>>,
) -> Vec<(Arc<Lane>, u64)> {
    lanes
        .iter()
        .map(|(name, lane)| {
            let rows = validation
                .counts
                .iter()
                .filter(|((p, _), _)| p == name)
                .map(|(_, n)| n)
                .sum();
            (lane.clone(), rows)
        })
        .collect()
}

/// A resumed run's leading rows, finished by earlier invocations and not read again, counted
/// per lane (one pass over the job's first `rows` rows) so that each lane's progress starts
/// where it stands.
fn inherit_lanes(live: &Live, req: &RunRequest, opened: &Opened, rows: u64) {
    let Ok(reader) =
        crate::job::JobReader::open(&opened.job, Some(req.job_format()), req.parse.clone())
    else {
        return;
    };
    let mut per: BTreeMap<String, u64> = BTreeMap::new();
    for item in reader.take(rows as usize) {
        if let crate::job::RowResult::Valid(p) = item {
            *per.entry(p.row.provider).or_default() += 1;
        }
    }
    for (lane, n) in per {
        live.lane(&lane)
            .finished
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }
}

/// What validation counted about the job that the dispatch pass uses.
fn job_shape(validation: &FileValidation) -> JobShape {
    let mut lane_rows: BTreeMap<String, u64> = BTreeMap::new();
    for ((provider, _), rows) in &validation.counts {
        *lane_rows.entry(provider.clone()).or_default() += rows;
    }
    JobShape {
        lane_rows,
        grouped_rows: validation.grouped_rows,
    }
}
