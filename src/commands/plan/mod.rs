//! `simbatch plan JOB`: what a run would do, without changing anything. It validates, resolves
//! each row's target (listing the inventory when that is cheaper), reads its current state and
//! applies the same pre-flight rules as `run`, then prints per provider and action how many rows
//! would change, be skipped or fail, and per provider how many requests that takes and how
//! long at the provider's limits — bulk requests counted where a run would use them, and read
//! the way the run reads (device rows in bulk from the device listing). With `-o` it writes
//! the per-row plan. Only reads are sent.
//!
//! Rows of a `group` are judged step by step against the state the earlier steps leave
//! ([`groups`]), so that `plan` predicts what `run` does. The rows are held in memory while
//! they are planned.

mod groups;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures_util::stream::StreamExt;

use super::validate::parse_options;
use crate::cli::{GlobalArgs, PlanArgs};
use crate::exit_code::ExitCode;
use crate::job::{validate_file, Action, JobReader, JobRow, RowResult};
use crate::pipeline::bulk::{bulk_lanes, BulkLane};
use crate::pipeline::control::Stop;
use crate::pipeline::estimate::LaneWork;
use crate::pipeline::lane::Lane;
use crate::pipeline::preflight::decide;
use crate::provider::retry::RetryPolicy;
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
    /// Its change would go in a bulk request.
    bulk: bool,
    /// Sent on its own, its change first takes the SIM off its device (one request more).
    releases: bool,
}

impl Planned {
    fn new(
        index: u64,
        row: JobRow,
        verdict: &'static str,
        reason: String,
        before: Option<String>,
        after: Option<String>,
    ) -> Planned {
        Planned {
            index,
            row,
            verdict,
            reason,
            before: before.unwrap_or_default(),
            after: after.unwrap_or_default(),
            bulk: false,
            releases: false,
        }
    }
}

/// Why `plan` cannot go on with a lane.
fn stopped_by(lane: &str, e: &crate::provider::ProviderError) -> String {
    match e.class {
        ErrorClass::Unreachable => format!("provider `{lane}` cannot be reached: {e}"),
        _ => format!("provider `{lane}` refused the credentials: {e}"),
    }
}

/// A row's target read and judged as the run would.
struct Looked {
    /// Its change would go in a bulk request.
    in_bulk: bool,
    /// Its change first takes the SIM off its device ([`crate::provider::Provider::releases_from`]).
    releases: bool,
    decision: Decision,
}

/// Reads a row's target and decides as the run would: a device row of the bulk path from the
/// device listing, others from the inventory listing or a lookup.
async fn look_and_decide(
    lane: &Lane,
    bulk: Option<&BulkLane>,
    row: &JobRow,
) -> Result<Looked, crate::provider::ProviderError> {
    let bulk = bulk.filter(|b| b.takes(row) && row.group.is_none());
    if let Some(bulk) = bulk {
        if row.action().target_kind() == crate::job::TargetKind::Sim
            && !lane.provider().listing_shows(row.action())
        {
            if let Some(decision) = bulk.plan_device(row, &Stop::default()).await {
                return Ok(Looked {
                    in_bulk: true,
                    releases: false,
                    decision,
                });
            }
        }
    }
    let (observed, listed) = match lane.take_listed(row).await? {
        Some(observed) => (observed, true),
        None => (lane.observe(row).await?, false),
    };
    let target = lane.move_target(row).await?;
    let decision = decide(lane.provider(), row, &observed, target.as_deref());
    Ok(Looked {
        in_bulk: bulk.is_some() && listed && matches!(decision, Decision::Send { .. }),
        releases: lane.provider().releases_from(row, &observed).is_some(),
        decision,
    })
}

/// Plans a lane's rows outside groups, many at once; `bulk`: the chunk size and bulk rows of
/// the lane's bulk path, when a run would give it one ([`bulk_lanes`]).
async fn plan_lane(
    lane: Arc<Lane>,
    rows: Vec<(u64, JobRow)>,
    bulk: Option<(usize, u64)>,
) -> Result<Vec<Planned>, String> {
    let wanted = rows
        .iter()
        .filter(|(_, r)| lane.snapshot_eligible(r) && r.target.iccid().is_some())
        .count();
    match lane.prefetch(wanted, &RetryPolicy::default()).await {
        Err(e) if e.stops_run() => return Err(stopped_by(&lane.name, &e)),
        _ => {}
    }
    let bulk =
        bulk.map(|(chunk, rows)| BulkLane::new(lane.clone(), chunk, rows, RetryPolicy::default()));
    let concurrency = lane.concurrency;
    let planned = futures_util::stream::iter(rows.into_iter().map(|(index, row)| {
        let (lane, bulk) = (lane.clone(), bulk.as_ref());
        async move {
            let looked = match look_and_decide(&lane, bulk, &row).await {
                Err(e) if e.stops_run() => return Err(stopped_by(&lane.name, &e)),
                Err(e) => {
                    let reason = format!("could not read the current state: {e}");
                    return Ok(Planned::new(index, row, "error", reason, None, None));
                }
                Ok(looked) => looked,
            };
            let planned = match looked.decision {
                Decision::Send { before, after } => {
                    let mut p =
                        Planned::new(index, row, "change", String::new(), before, Some(after));
                    p.bulk = looked.in_bulk;
                    p.releases = looked.releases && !looked.in_bulk;
                    p
                }
                Decision::Skip { reason, before } => {
                    Planned::new(index, row, "skip", reason, before.clone(), before)
                }
                Decision::Fail { reason, before } => {
                    Planned::new(index, row, "fail", reason, before, None)
                }
            };
            Ok(planned)
        }
    }))
    .buffer_unordered(concurrency.max(1))
    .collect::<Vec<_>>()
    .await;
    planned.into_iter().collect()
}

/// A lane's work as planned: its reads so far and its rows by action.
fn lane_work(lane: &Lane, planned: &[Planned], chunk: Option<usize>) -> LaneWork {
    let mut work = LaneWork {
        reads: lane.account.http().requests(),
        ..LaneWork::default()
    };
    for p in planned.iter().filter(|p| p.row.provider == lane.name) {
        let w = work.actions.entry(p.row.action()).or_default();
        w.rows += 1;
        w.changes += u64::from(p.verdict == "change");
        w.in_bulk += u64::from(p.bulk);
        w.releases += u64::from(p.releases);
        w.chunk = chunk.unwrap_or(1);
    }
    work
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
    let mut groups: BTreeMap<String, Vec<(u64, JobRow)>> = BTreeMap::new();
    let reader = JobReader::open(&args.job, args.input.format, parse.clone())
        .map_err(|d| anyhow::anyhow!(d.message))?;
    let extras = reader.extra_columns();
    let mut lanes: BTreeMap<String, Arc<Lane>> = BTreeMap::new();
    for (index, item) in reader.enumerate() {
        if let RowResult::Valid(p) = item {
            if !lanes.contains_key(&p.row.provider) {
                let config = parse
                    .providers
                    .get(&p.row.provider)
                    .expect("validated provider");
                lanes.insert(
                    p.row.provider.clone(),
                    Arc::new(build_lane(config, &settings)?),
                );
            }
            let rows = match &p.row.group {
                Some(group) => groups.entry(group.clone()).or_default(),
                None => by_lane.entry(p.row.provider.clone()).or_default(),
            };
            rows.push((index as u64, p.row));
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let chunk = args.bulk.chunk();
    let in_bulk = bulk_lanes(chunk, &validation.counts, &lanes);
    let planned = runtime.block_on(async {
        let ungrouped = futures_util::future::join_all(by_lane.into_iter().map(|(name, rows)| {
            let bulk = in_bulk.get(&name).copied();
            plan_lane(lanes[&name].clone(), rows, bulk)
        }));
        let (ungrouped, grouped) = tokio::join!(ungrouped, groups::plan_groups(&lanes, groups));
        let mut planned = grouped?;
        for lane in ungrouped {
            planned.extend(lane?);
        }
        Ok::<_, String>(planned)
    });
    let mut planned = match planned {
        Ok(planned) => planned,
        Err(message) => {
            eprintln!("simbatch: {message}; nothing was sent");
            return Ok(ExitCode::Aborted);
        }
    };
    planned.sort_by_key(|p| p.index);

    print_plan(&args.job, &planned);
    println!("  at the providers' limits (as configured):");
    for lane in lanes.values() {
        let work = lane_work(lane, &planned, chunk);
        println!("    {}", work.describe(&lane.name, &lane.limits));
    }
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
        "  {:<12} {:<18} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "provider", "action", "change", "skip", "fail", "blocked", "error"
    );
    for ((provider, action), v) in &table {
        let n = |k: &str| v.get(k).copied().unwrap_or(0);
        println!(
            "  {provider:<12} {:<18} {:>8} {:>8} {:>8} {:>8} {:>8}",
            action.name(),
            n("change"),
            n("skip"),
            n("fail"),
            n("blocked"),
            n("error")
        );
    }
    // Identical reasons once, identifiers left out ("500 × no SIM … at telnyx"), with the
    // lines they apply to.
    let mut reasons: BTreeMap<(String, String), Vec<u64>> = BTreeMap::new();
    for p in planned.iter().filter(|p| p.verdict != "change") {
        let kind = crate::report::reason_kind(&p.reason);
        reasons
            .entry((p.row.provider.clone(), kind))
            .or_default()
            .push(p.row.line);
    }
    let mut reasons: Vec<_> = reasons.into_iter().collect();
    reasons.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then_with(|| a.0.cmp(&b.0)));
    for ((provider, reason), lines) in reasons {
        println!(
            "  {:>8} × {provider}: {reason} ({})",
            lines.len(),
            lines_of(&lines)
        );
    }
    for (provider, note) in &notes {
        println!("  note: {provider}: {note}");
    }
}

/// "line 4", "lines 4, 7, 9", "lines 4, 7, 9, 12, 15 and 495 more".
fn lines_of(lines: &[u64]) -> String {
    const SHOWN: usize = 5;
    let shown: Vec<String> = lines.iter().take(SHOWN).map(u64::to_string).collect();
    match lines.len() {
        1 => format!("line {}", shown[0]),
        n if n <= SHOWN => format!("lines {}", shown.join(", ")),
        n => format!("lines {} and {} more", shown.join(", "), n - SHOWN),
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
