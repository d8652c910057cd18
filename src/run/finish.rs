//! The end of a run: its reports, written whole (or, when they cannot be, counted anyway and
//! left to `simbatch report`: exit 6), its summary — stored and written — the console's last
//! lines, and the exit code of SPEC 5.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::json;

use super::dispatch::Dispatched;
use super::request::{RunOutcome, RunRequest};
use super::state::Opened;
use crate::exit_code::ExitCode;
use crate::pipeline::control::StopReason;
use crate::pipeline::lane::Lane;
use crate::report::{ReportError, Tally};
use crate::store::{AccountRecord, CheckpointStore, Outcome, SCHEMA_VERSION};

/// Writes the reports and the summary; says how the run ended.
pub fn finish(
    req: &RunRequest,
    opened: &Opened,
    lanes: &BTreeMap<String, Arc<Lane>>,
    accounts: &[AccountRecord],
    dispatched: Dispatched,
) -> anyhow::Result<RunOutcome> {
    let (tally, mut unwritten) = write_reports(req, opened)?;
    let exit = exit_code(dispatched.stopped.as_ref(), &tally);
    let summary = summary(req, opened, lanes, accounts, &dispatched, &tally, exit);
    let summary_bytes = crate::report::summary_bytes(&summary);
    if let Err(e) = opened.run.put_summary(&summary_bytes) {
        eprintln!("simbatch: {e}");
    }
    if unwritten.is_none() {
        if let Err(e) = crate::report::write_summary(&opened.reports_dir, &summary_bytes) {
            unwritten = Some(e);
        }
    }
    if !req.quiet {
        print_end(opened, &summary, &tally, unwritten.is_none());
    }
    if let Some(e) = &unwritten {
        eprintln!("simbatch: the changes are done but the reports could not be written: {e}; once there is room, `simbatch report {}` writes them from the state store (the reports on disk are earlier ones, or none, never partial ones)", opened.run_id);
    }
    if let Some(reason) = &dispatched.stopped {
        eprintln!(
            "simbatch: stopped: {}; {}",
            describe_stop(reason),
            again(req, opened, "resume")
        );
    } else if exit == ExitCode::Pending {
        eprintln!(
            "simbatch: some changes are accepted but not yet confirmed; {}",
            again(req, opened, "confirm them")
        );
    }
    Ok(RunOutcome {
        exit: if unwritten.is_some() {
            ExitCode::ReportsUnwritten
        } else {
            exit
        },
        run_id: Some(opened.run_id.clone()),
        summary: Some(summary),
        reports: Some(opened.reports_dir.clone()),
    })
}

/// Reports that cannot be written (a full disk) do not undo the run: the rows are counted all
/// the same, and the error is returned beside the tally.
fn write_reports(
    req: &RunRequest,
    opened: &Opened,
) -> anyhow::Result<(Tally, Option<ReportError>)> {
    let format = req.job_format();
    let results_format = req.results_format.unwrap_or(format);
    let run = opened.run.as_ref();
    match crate::report::write_rows(
        &opened.reports_dir,
        &opened.job,
        Some(format),
        &req.parse,
        run,
        results_format,
    ) {
        Ok((_, tally)) => Ok((tally, None)),
        Err(e @ ReportError::Io { .. }) => Ok((
            crate::report::tally_rows(&opened.job, Some(format), &req.parse, run)?,
            Some(e),
        )),
        Err(e) => Err(e.into()),
    }
}

/// `summary.json` (SPEC 4).
fn summary(
    req: &RunRequest,
    opened: &Opened,
    lanes: &BTreeMap<String, Arc<Lane>>,
    accounts: &[AccountRecord],
    dispatched: &Dispatched,
    tally: &Tally,
    exit: ExitCode,
) -> serde_json::Value {
    let requests: BTreeMap<&str, u64> = lanes
        .values()
        .map(|l| (l.name.as_str(), l.http().requests()))
        .collect();
    let rate_limited: u64 = lanes.values().map(|l| l.http().gate.slowdowns()).sum();
    let elapsed = dispatched.elapsed;
    let finished = dispatched.live.finished.load(Ordering::Relaxed);
    json!({
        "schema_version": SCHEMA_VERSION,
        "run_id": opened.run_id,
        "job": {"path": req.job.display().to_string(), "sha256": opened.hash},
        "providers": accounts,
        "started_at": dispatched.started_at,
        "finished_at": Utc::now(),
        "elapsed_s": elapsed.as_secs_f64(),
        "rows": tally.rows,
        "outcomes": tally.outcomes,
        "not_started": tally.not_started,
        "per_provider": tally.per_provider,
        "per_action": tally.per_action,
        "requests": requests,
        "requests_total": requests.values().sum::<u64>(),
        "bulk_requests": lanes
            .values()
            .map(|l| (l.name.as_str(), l.http().bulk_requests()))
            .filter(|(_, n)| *n > 0)
            .collect::<BTreeMap<&str, u64>>(),
        "rate_limited_429": rate_limited,
        "attempts": tally.attempts,
        "rows_per_s": if elapsed > Duration::ZERO { finished as f64 / elapsed.as_secs_f64() } else { 0.0 },
        "latency_ms": {"p50": tally.latency.quantile(0.5), "p95": tally.latency.quantile(0.95), "p99": tally.latency.quantile(0.99)},
        "queued_ms": {"p50": tally.queued.quantile(0.5), "p95": tally.queued.quantile(0.95)},
        "not_revertible": tally.not_revertible,
        "revert_rows": tally.revert_rows,
        "failure_reasons": tally
            .top_failure_reasons(TOP_REASONS_IN_SUMMARY)
            .into_iter()
            .map(|(reason, rows)| json!({"reason": reason, "rows": rows}))
            .collect::<Vec<_>>(),
        "retry": retry_command(opened, tally),
        "stopped": dispatched.stopped.as_ref().map(describe_stop),
        "exit_code": exit as u8,
    })
}

/// The console's last lines: outcomes, time, requests, where the reports are.
fn print_end(opened: &Opened, summary: &serde_json::Value, tally: &Tally, written: bool) {
    let counts: Vec<String> = tally
        .outcomes
        .iter()
        .map(|(o, n)| format!("{o} {n}"))
        .collect();
    let bulk: u64 = summary["bulk_requests"]
        .as_object()
        .map_or(0, |b| b.values().filter_map(|n| n.as_u64()).sum());
    let bulk = match bulk {
        0 => String::new(),
        n => format!(" ({n} of them bulk)"),
    };
    eprintln!(
        "simbatch: {}: {} in {:.1}s; {} requests{bulk}, {} rate-limited",
        opened.run_id,
        counts.join(", "),
        summary["elapsed_s"].as_f64().unwrap_or_default(),
        summary["requests_total"],
        summary["rate_limited_429"]
    );
    if written {
        eprintln!(
            "simbatch: reports in {}/ (results, failed, pending, revert, summary)",
            opened.reports_dir.display()
        );
    }
    let reasons = tally.top_failure_reasons(TOP_REASONS_ON_CONSOLE);
    if !reasons.is_empty() {
        eprintln!("simbatch: why rows did not succeed (most frequent first):");
        for (reason, rows) in reasons {
            eprintln!("  {rows:>7} × {reason}");
        }
    }
    if let (true, Some(retry)) = (written, retry_command(opened, tally)) {
        eprintln!("simbatch: to try those rows again: {retry}");
    }
}

/// How to continue this run: the same command does it unless it was started with `--fresh`
/// (which would start yet another run) or `--resume`; the command naming the run always does.
fn again(req: &RunRequest, opened: &Opened, to: &str) -> String {
    let named = resume_command(&opened.run_id, &req.job.display().to_string());
    if req.fresh || req.resume.is_some() {
        format!("to {to}: {named} (with the same options)")
    } else {
        format!("run the same command again to {to} (or: {named})")
    }
}

/// The command that continues run `id` of the job at `job`.
pub fn resume_command(id: &str, job: &str) -> String {
    format!(
        "simbatch run --resume {} {}",
        crate::report::shell_word(id),
        crate::report::shell_word(job)
    )
}

/// Failure reasons in `summary.json`, and on the console.
const TOP_REASONS_IN_SUMMARY: usize = 10;
const TOP_REASONS_ON_CONSOLE: usize = 5;

/// The command that runs `failed.csv` — the rows that failed, are unknown or were blocked — as
/// a new job; `None` when there are none.
fn retry_command(opened: &Opened, tally: &Tally) -> Option<String> {
    let again = Outcome::ALL
        .iter()
        .filter(|o| o.did_not_succeed())
        .map(|o| tally.count(*o))
        .sum::<u64>();
    (again > 0).then(|| {
        format!(
            "simbatch run {}",
            crate::report::shell_word(&opened.reports_dir.join("failed.csv").display().to_string())
        )
    })
}

fn describe_stop(reason: &StopReason) -> String {
    match reason {
        StopReason::Auth { provider, message } => {
            format!("provider `{provider}` refused the credentials ({message})")
        }
        StopReason::Unreachable { provider, message } => {
            format!("provider `{provider}` cannot be reached ({message}); check its base_url and the network — the rows it did not answer for wait for the resume")
        }
        StopReason::FailureThreshold { failed, finished } => {
            format!("{failed} of {finished} finished rows failed, over --max-failures")
        }
        StopReason::Interrupted => "interrupted".into(),
        StopReason::Store(e) => format!("checkpoint store failed: {e}"),
        StopReason::Until { at } => {
            format!("nothing may be sent after --until {}", at.to_rfc3339())
        }
        StopReason::WindowClosed { window } => format!("the {window} closed"),
    }
}

/// The exit code of SPEC 5 for a finished (or stopped) run.
pub fn exit_code(stopped: Option<&StopReason>, tally: &Tally) -> ExitCode {
    match stopped {
        Some(StopReason::Store(_)) => return ExitCode::StateStore,
        Some(_) => return ExitCode::Aborted,
        None => {}
    }
    if tally.count(Outcome::Failed)
        + tally.count(Outcome::Unknown)
        + tally.count(Outcome::Blocked)
        + tally.count(Outcome::Invalid)
        > 0
    {
        ExitCode::RowsFailed
    } else if tally.count(Outcome::Pending) > 0 {
        ExitCode::Pending
    } else if tally.not_started > 0 {
        ExitCode::Aborted
    } else {
        ExitCode::Success
    }
}
