//! `simbatch plan JOB`: what a run would do, without changing anything. It validates, resolves
//! each row's target (listing the inventory when that is cheaper), reads its current state and
//! applies the same pre-flight rules as `run`, then prints per provider and action how many rows
//! would change, be skipped or fail, and with `-o` writes the per-row plan. Only reads are sent.
//!
//! Rows of a `group` are each judged against today's state, not the state earlier steps would
//! leave behind. The rows are held in memory while they are planned.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures_util::stream::StreamExt;

use super::validate::parse_options;
use crate::cli::{GlobalArgs, PlanArgs};
use crate::exit_code::ExitCode;
use crate::job::{validate_file, Action, JobReader, JobRow, RowResult};
use crate::pipeline::lane::Lane;
use crate::pipeline::preflight::decide;
use crate::provider::{provider_of, Decision, ErrorClass};
use crate::run::{build_lane, print_validation_errors, Credentials, LaneSettings};

/// One row's plan.
struct Planned {
    index: u64,
    row: JobRow,
    verdict: &'static str,
    reason: String,
    before: String,
    after: String,
}

/// Why `plan` cannot go on with a lane.
fn stopped_by(lane: &str, e: &crate::provider::ProviderError) -> String {
    match e.class {
        ErrorClass::Unreachable => format!("provider `{lane}` cannot be reached: {e}"),
        _ => format!("provider `{lane}` refused the credentials: {e}"),
    }
}

async fn plan_lane(lane: Arc<Lane>, rows: Vec<(u64, JobRow)>) -> Result<Vec<Planned>, String> {
    let wanted = rows
        .iter()
        .filter(|(_, r)| lane.snapshot_eligible(r) && r.target.iccid().is_some())
        .count();
    match lane.prefetch(wanted).await {
        Err(e) if e.stops_run() => return Err(stopped_by(&lane.name, &e)),
        _ => {}
    }
    let concurrency = lane.concurrency;
    let planned = futures_util::stream::iter(rows.into_iter().map(|(index, row)| {
        let lane = lane.clone();
        async move {
            let observed = lane.observe_first(&row).await;
            let target = lane.move_target(&row).await;
            let (verdict, reason, before, after) = match (observed, target) {
                (Err(e), _) | (_, Err(e)) if e.stops_run() => {
                    return Err(stopped_by(&lane.name, &e))
                }
                (Err(e), _) | (_, Err(e)) => (
                    "error",
                    format!("could not read the current state: {e}"),
                    None,
                    None,
                ),
                (Ok(observed), Ok(target)) => {
                    match decide(lane.provider(), &row, &observed, target.as_deref()) {
                        Decision::Send { before, after } => {
                            ("change", String::new(), before, Some(after))
                        }
                        Decision::Skip { reason, before } => {
                            ("skip", reason, before.clone(), before)
                        }
                        Decision::Fail { reason, before } => ("fail", reason, before, None),
                    }
                }
            };
            Ok(Planned {
                index,
                row,
                verdict,
                reason,
                before: before.unwrap_or_default(),
                after: after.unwrap_or_default(),
            })
        }
    }))
    .buffer_unordered(concurrency.max(1))
    .collect::<Vec<_>>()
    .await;
    planned.into_iter().collect()
}

pub fn run(global: &GlobalArgs, args: &PlanArgs) -> anyhow::Result<ExitCode> {
    let parse = parse_options(global, &args.input)?;
    let validation = validate_file(&args.job, args.input.format, &parse);
    if !validation.is_valid() || validation.valid_rows == 0 {
        print_validation_errors(&validation);
        eprintln!(
            "{}: cannot plan an invalid job; nothing was read or sent",
            validation.path
        );
        return Ok(ExitCode::Usage);
    }
    let settings = LaneSettings {
        rate: args.rate,
        concurrency: None,
        credentials: Credentials::Environment,
    };
    let mut by_lane: BTreeMap<String, Vec<(u64, JobRow)>> = BTreeMap::new();
    let reader = JobReader::open(&args.job, args.input.format, parse.clone())
        .map_err(|d| anyhow::anyhow!(d.message))?;
    let extras = reader.extra_columns();
    for (index, item) in reader.enumerate() {
        if let RowResult::Valid(p) = item {
            by_lane
                .entry(p.row.provider.clone())
                .or_default()
                .push((index as u64, p.row));
        }
    }
    let mut lanes = Vec::new();
    for (name, rows) in by_lane {
        let config = parse.providers.get(&name).expect("validated provider");
        lanes.push((Arc::new(build_lane(config, &settings)?), rows));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let results = runtime.block_on(futures_util::future::join_all(
        lanes.into_iter().map(|(lane, rows)| plan_lane(lane, rows)),
    ));
    let mut planned = Vec::new();
    for r in results {
        match r {
            Ok(p) => planned.extend(p),
            Err(message) => {
                eprintln!("simbatch: {message}; nothing was sent");
                return Ok(ExitCode::Aborted);
            }
        }
    }
    planned.sort_by_key(|p| p.index);

    print_plan(&args.job, &planned);
    if let Some(out) = &args.output {
        write_plan(out, &planned, &extras)?;
        eprintln!("simbatch: per-row plan in {}", out.display());
    }
    Ok(ExitCode::Success)
}

/// Per provider and action, how many rows would change, be skipped, fail; then the reasons.
fn print_plan(job: &std::path::Path, planned: &[Planned]) {
    let mut table: BTreeMap<(String, Action), BTreeMap<&'static str, u64>> = BTreeMap::new();
    let mut notes: BTreeSet<(String, &'static str)> = BTreeSet::new();
    for p in planned {
        if let Some(note) = provider_of(p.row.kind).action_note(p.row.action()) {
            notes.insert((p.row.provider.clone(), note));
        }
        *table
            .entry((p.row.provider.clone(), p.row.action()))
            .or_default()
            .entry(p.verdict)
            .or_default() += 1;
    }
    println!(
        "{}: plan for {} rows (nothing was changed)",
        job.display(),
        planned.len()
    );
    println!(
        "  {:<12} {:<18} {:>8} {:>8} {:>8} {:>8}",
        "provider", "action", "change", "skip", "fail", "error"
    );
    for ((provider, action), v) in &table {
        let n = |k: &str| v.get(k).copied().unwrap_or(0);
        println!(
            "  {provider:<12} {:<18} {:>8} {:>8} {:>8} {:>8}",
            action.name(),
            n("change"),
            n("skip"),
            n("fail"),
            n("error")
        );
    }
    let mut reasons: BTreeMap<&str, u64> = BTreeMap::new();
    for p in planned.iter().filter(|p| p.verdict != "change") {
        *reasons.entry(p.reason.as_str()).or_default() += 1;
    }
    for (reason, n) in reasons {
        println!("  {n:>8} × {reason}");
    }
    for (provider, note) in &notes {
        println!("  note: {provider}: {note}");
    }
}

/// The per-row plan (`-o`), as a spreadsheet-safe CSV.
fn write_plan(
    out: &std::path::Path,
    planned: &[Planned],
    extras: &[std::sync::Arc<str>],
) -> anyhow::Result<()> {
    let mut w = crate::job::write::spreadsheet_csv(std::fs::File::create(out)?);
    let header = [
        "line", "id", "provider", "action", "iccid", "eid", "plan", "reason", "before", "after",
    ];
    w.write_record(
        header
            .iter()
            .copied()
            .chain(extras.iter().map(|e| &**e))
            .map(|name| crate::report::neutralise(name).into_owned()),
    )?;
    for p in planned {
        let extra = crate::job::write::extra_values(&p.row, extras).into_iter();
        let cells = [
            p.row.line.to_string(),
            p.row.id.clone(),
            p.row.provider.clone(),
            p.row.action().name().to_string(),
            p.row
                .target
                .iccid()
                .map(|i| i.to_string())
                .unwrap_or_default(),
            p.row
                .target
                .eid()
                .map(|e| e.to_string())
                .unwrap_or_default(),
            p.verdict.to_string(),
            p.reason.clone(),
            p.before.clone(),
            p.after.clone(),
        ];
        w.write_record(
            cells
                .iter()
                .map(|c| crate::report::neutralise(c).into_owned())
                .chain(extra.map(|e| crate::report::neutralise(e).into_owned())),
        )?;
    }
    w.flush()?;
    Ok(())
}
