//! Crash torture: `simbatch run` is SIGKILLed again and again — during start-up and
//! validation, dispatch, confirmation and report writing — and resumed each time; afterwards
//! the sandbox journal proves that no row was lost and no change applied twice, and the
//! reports are complete.
//!
//! The provider truths of the sandbox are mixed in: Telnyx actions that end `interrupted` (their
//! rows must end `failed` with the SIM unchanged, never `succeeded` and never re-sent), Twilio
//! Fleet moves answered 202 `scheduled`, and next-page links that name another host.
//!
//! Size: 1,500 rows (plus the moves) and 24 kills by default (part of the normal suite); the opt-in larger run
//! is `SIMBATCH_TORTURE_ROWS=30000 SIMBATCH_TORTURE_KILLS=60 cargo test --release --test it
//! torture::` (see README).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use simbatch::sandbox::{inventory, Faults, LimitMode, SandboxConfig};

use crate::run_resilience::mixed_job;
use crate::run_support::{read_csv, show, RunEnv, TOKEN};

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Change requests (anything but a read) the sandbox has seen.
async fn changes_sent(env: &RunEnv) -> u64 {
    env.sb.stats().await["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            let path = r["path"].as_str().unwrap();
            !path.starts_with("GET") && !path.contains("authenticate")
        })
        .map(|r| r["count"].as_u64().unwrap())
        .sum()
}

/// Where a run was when it was killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    /// Before its first request: start-up, validation, opening the store.
    StartUp,
    /// Sending changes.
    Dispatch,
    /// Every change sent, reports not started: confirming.
    Confirmation,
    /// Writing reports.
    Reports,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_in_every_phase_loses_nothing_and_applies_nothing_twice() {
    let per_provider = env_number("SIMBATCH_TORTURE_ROWS", 1_500) / 3;
    let target_kills = env_number("SIMBATCH_TORTURE_KILLS", 24);
    let rows = 3 * per_provider;
    let env = RunEnv::new(SandboxConfig {
        sims: (per_provider + 100) as u32,
        limits: LimitMode::Off,
        async_delay: Duration::from_millis(300),
        faults: Faults {
            reset_rate: 0.01,
            interrupt_async: 0.03,
            ..Faults::default()
        },
        foreign_links: true,
        ..SandboxConfig::default()
    })
    .await;
    let moves = per_provider / 10;
    let path = env.write_job("torture.csv", &torture_job(per_provider, moves));
    let rows = rows + moves;
    let reports = env.dir.path().join("torture-reports");
    // About five seconds of dispatch per provider, so that many kills land in it.
    let rate = (per_provider / 5).max(20).to_string();
    let args = [
        "run",
        "-q",
        "--reports",
        reports.to_str().unwrap(),
        "--rate",
        &rate,
        "--wait-timeout",
        "120s",
        path.to_str().unwrap(),
    ];
    let seed = fastrand::u64(..);
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut phases: BTreeMap<Phase, u32> = BTreeMap::new();
    let mut kills = 0;
    let mut attempt = 0u64;
    const EVERY_PHASE: [Phase; 4] = [
        Phase::StartUp,
        Phase::Dispatch,
        Phase::Confirmation,
        Phase::Reports,
    ];
    // At least `target_kills`, and on until every phase has had one.
    while kills < target_kills || EVERY_PHASE.iter().any(|p| !phases.contains_key(p)) {
        attempt += 1;
        assert!(
            attempt < target_kills * 5,
            "seed {seed}: {attempt} runs and still {phases:?}; {}",
            env.sb.stats().await["requests"]
        );
        let _ = std::fs::remove_dir_all(&reports);
        let requests_before = env.sb.stats().await["requests_total"].as_u64().unwrap();
        let mut child = env.command(&args, TOKEN).spawn().unwrap();
        let spawned = Instant::now();
        // Pick the moment: a few ms in; a random point of dispatch (while changes remain to be
        // sent); shortly after every change is out; or as soon as the reports appear.
        let dispatching = changes_sent(&env).await < rows;
        let mode = if dispatching {
            [1, 0, 1][(attempt % 3) as usize]
        } else {
            [0, 2, 3][(attempt % 3) as usize]
        };
        let early = Duration::from_millis(rng.u64(0..25));
        let later = Duration::from_millis(rng.u64(150..1_500));
        let settle = Duration::from_millis(rng.u64(0..250));
        let mut all_sent_at: Option<Instant> = None;
        let mut polls = 0u64;
        let exited = loop {
            polls += 1;
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            let elapsed = spawned.elapsed();
            let fire = match mode {
                0 => elapsed >= early,
                // At the random point, or the moment the last change is out: a later kill
                // could overshoot a short confirmation into the reports, and once one run has
                // confirmed everything no later run has a confirmation phase to kill.
                1 => elapsed >= later || (polls % 10 == 0 && changes_sent(&env).await >= rows),
                2 => {
                    if all_sent_at.is_none() && changes_sent(&env).await >= rows {
                        all_sent_at = Some(Instant::now());
                    }
                    all_sent_at.is_some_and(|t| t.elapsed() >= settle) || writing_reports(&reports)
                }
                _ => writing_reports(&reports),
            };
            if fire {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        if let Some(status) = exited {
            assert!(
                // 1: some Telnyx actions were interrupted.
                status.code().is_some_and(|c| c == 0 || c == 1 || c == 5),
                "seed {seed}: run ended with {status}"
            );
            continue;
        }
        child.kill().unwrap(); // SIGKILL
        let _ = child.wait();
        kills += 1;
        let requests_now = env.sb.stats().await["requests_total"].as_u64().unwrap();
        let phase = if writing_reports(&reports) {
            Phase::Reports
        } else if requests_now == requests_before {
            Phase::StartUp
        } else if changes_sent(&env).await >= rows {
            Phase::Confirmation
        } else {
            Phase::Dispatch
        };
        *phases.entry(phase).or_default() += 1;
        eprintln!(
            "kill {kills} after {:?}: {phase:?} (+{} requests)",
            spawned.elapsed(),
            requests_now - requests_before
        );
    }
    let _ = std::fs::remove_dir_all(&reports);
    let output = env.run(&args).await;
    eprintln!("seed {seed}: {kills} kills by phase {phases:?}");
    // Reports complete: every row once, with a final outcome, in every report.
    let reported = read_csv(&reports.join("results.csv"));
    assert_eq!(reported.len() as u64, rows, "seed {seed}");
    let interrupted: Vec<&HashMap<String, String>> = reported
        .iter()
        .filter(|r| r["outcome"] != "succeeded")
        .collect();
    assert_eq!(
        output.status.code(),
        Some(if interrupted.is_empty() { 0 } else { 1 }),
        "seed {seed}: {}",
        show(&output)
    );
    // Only interrupted Telnyx actions fail, and each says so. Actions are interrupted in
    // every run (3% of them); a row whose action was interrupted in a run killed before it
    // confirmed is read again by the next, found unchanged and sent again — so fewer rows fail
    // than actions were interrupted.
    let ended_interrupted = env.sb.telnyx_actions_ended("interrupted").await;
    eprintln!(
        "seed {seed}: {ended_interrupted} actions interrupted, {} rows failed by it",
        interrupted.len()
    );
    assert!(
        ended_interrupted > 0,
        "seed {seed}: the fault was not mixed in"
    );
    assert!(interrupted.len() <= ended_interrupted, "seed {seed}");
    for r in &interrupted {
        assert!(
            r["provider"] == "telnyx"
                && r["outcome"] == "failed"
                && r["reason"].contains("interrupted"),
            "seed {seed}: {r:?}"
        );
    }
    assert_eq!(
        read_csv(&reports.join("revert.csv")).len(),
        reported.len() - interrupted.len()
    );
    assert!(Path::new(&reports.join("summary.json")).exists());
    // Every succeeded row changed its target exactly once; an interrupted one not at all.
    let mut by_target: HashMap<String, usize> = HashMap::new();
    for e in env.sb.journal().await {
        *by_target
            .entry(e["target"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    for r in &reported {
        let want = usize::from(r["outcome"] == "succeeded");
        assert_eq!(
            by_target.get(&r["iccid"]).copied().unwrap_or(0),
            want,
            "seed {seed}: {r:?}"
        );
    }
    assert_eq!(
        by_target.len(),
        reported.len() - interrupted.len(),
        "seed {seed}: no change outside the job"
    );
}

/// `mixed_job`, and `moves` Twilio SIMs beyond it moved to the Fleet `reserve`.
fn torture_job(per_provider: u64, moves: u64) -> String {
    let mixed = mixed_job(per_provider);
    let mut lines = mixed.lines();
    let mut job = format!("{},target\n", lines.next().unwrap());
    for line in lines {
        job.push_str(&format!("{line},\n"));
    }
    for i in per_provider + 1..=per_provider + moves {
        job.push_str(&format!(
            "move,twilio,{},reserve\n",
            inventory::iccid(inventory::TWILIO_PREFIX, i)
        ));
    }
    job
}

/// Whether the run has begun writing its reports: a results file (whole, or the temporary one
/// it is written to) is in the reports directory, which itself exists from before the first
/// change.
fn writing_reports(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().contains("results"))
    })
}
