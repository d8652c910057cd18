//! The run's console while it goes: every second it samples each lane — rows finished, this
//! invocation's pace, 429s, retried requests, a pause after a 429, changes awaiting
//! confirmation — shows them ([`crate::progress`]) and replaces the live view `simbatch status`
//! reads from another terminal ([`super::live_view`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;

use super::live_view::{LiveLane, LiveView};
use crate::pipeline::lane::Lane;
use crate::pipeline::live::Live;
use crate::progress::view::{total_eta, LaneSample, LaneView, Pace};
use crate::progress::Progress;

/// How often the console samples the lanes.
const TICK: Duration = Duration::from_secs(1);
/// Failure reasons the live view lists.
const TOP_REASONS: usize = 5;

/// What the console needs to know about the run.
pub struct ConsoleSource {
    pub run_id: String,
    pub job: String,
    pub state: PathBuf,
    pub rows: u64,
    /// Each lane and its rows in the job.
    pub lanes: Vec<(Arc<Lane>, u64)>,
    pub live: Arc<Live>,
    /// Whether the run's window is open, and the schedule that opens it.
    pub open: tokio::sync::watch::Receiver<bool>,
    pub schedule: crate::pipeline::schedule::Schedule,
}

/// Samples, shows and publishes until aborted; the live file goes when the run ends
/// ([`super::live_view::remove`]).
pub fn start(source: ConsoleSource, progress: Progress) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut paces: BTreeMap<String, Pace> = BTreeMap::new();
        // Each lane's counters when this invocation started: its rates count only its own work.
        let base: Vec<(u64, u64, u64)> = source
            .lanes
            .iter()
            .map(|(l, _)| {
                let http = l.http();
                (
                    http.requests(),
                    http.gate.slowdowns(),
                    http.transient_failures(),
                )
            })
            .collect();
        let mut ticks = tokio::time::interval(TICK);
        loop {
            ticks.tick().await;
            let now = Instant::now();
            let views: Vec<LaneView> = source
                .lanes
                .iter()
                .zip(&base)
                .map(|((lane, total), base)| {
                    let sample = sample(lane, *total, &source.live, *base);
                    let pace = paces.entry(sample.name.clone()).or_default();
                    pace.add(now, sample.finished_now, sample.changed_now);
                    LaneView {
                        pace: pace.rates(),
                        sample,
                    }
                })
                .collect();
            let note = window_note(&source);
            progress.tick(&views, &source.live, note.as_deref());
            let view = live_view(&source, &views, note.as_deref());
            if let Err(e) = view.write(&source.state) {
                tracing::debug!(error = %e, "could not write the live view for `simbatch status`");
            }
        }
    })
}

/// "outside the window until 2026-12-01 22:00:00 CET" while the window is closed.
fn window_note(source: &ConsoleSource) -> Option<String> {
    if *source.open.borrow() {
        return None;
    }
    Some(match source.schedule.gate(Utc::now()) {
        crate::pipeline::schedule::Gate::Wait { opens } => format!(
            "outside the window until {}",
            source.schedule.local_time(opens)
        ),
        _ => "outside the window: nothing is sent".into(),
    })
}

/// One lane now.
fn sample(lane: &Lane, total: u64, live: &Live, base: (u64, u64, u64)) -> LaneSample {
    let counts = live.lane(&lane.name);
    let http = lane.http();
    LaneSample {
        name: lane.name.clone(),
        total,
        finished: counts.finished.load(Ordering::Relaxed),
        finished_now: counts.finished_now.load(Ordering::Relaxed),
        changed_now: counts.changed_now.load(Ordering::Relaxed),
        requests: http.requests() - base.0,
        rate_limited: http.gate.slowdowns() - base.1,
        retried: http.transient_failures() - base.2,
        confirming: counts.confirming.load(Ordering::Relaxed),
        paused_for: http.gate.paused_for(),
        rate: lane.limits.rate.map(|(r, _)| r),
    }
}

fn live_view(source: &ConsoleSource, views: &[LaneView], note: Option<&str>) -> LiveView {
    let live = &source.live;
    let outcomes = live
        .outcomes()
        .into_iter()
        .map(|(o, n)| (o.to_string(), n))
        .collect();
    LiveView {
        run_id: source.run_id.clone(),
        pid: std::process::id(),
        job: source.job.clone(),
        updated_at: Utc::now(),
        rows: source.rows,
        finished: live.finished.load(Ordering::Relaxed),
        outcomes,
        lanes: views
            .iter()
            .map(|v| LiveLane {
                name: v.sample.name.clone(),
                total: v.sample.total,
                finished: v.sample.finished,
                confirming: v.sample.confirming,
                rate_limited: v.sample.rate_limited,
                retried: v.sample.retried,
                eta_s: v.eta().map(|d| d.as_secs()),
                line: v.line(),
            })
            .collect(),
        eta_s: total_eta(views).map(|d| d.as_secs()),
        top_failure_reasons: crate::report::most_frequent(&live.reasons(), TOP_REASONS)
            .into_iter()
            .map(|(reason, n)| (reason.to_string(), n))
            .collect(),
        note: note.map(str::to_string),
    }
}
