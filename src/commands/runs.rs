//! The commands that work on runs already in the state store: `status` (what runs exist, how
//! far they got, whether they can be resumed), `report` (every report rebuilt from the store
//! alone) and `revert` (the job that restores what a run changed).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{anyhow, bail};

use crate::cli::{GlobalArgs, ReportArgs, RevertArgs, StatusArgs};
use crate::exit_code::ExitCode;
use crate::run::live_view::{self, LiveView};
use crate::run::reading::parse_options;
use crate::store::{CheckpointStore, Manifest, Outcome, Phase, SledRun, SledStore, StoreError};

/// Opens the state store, turning store errors into the exit-4 message.
fn open_store(global: &GlobalArgs) -> Result<SledStore, ExitCode> {
    if !global.state.join("db").exists() {
        eprintln!("simbatch: no state store at {} (no run has used it yet; pass --state DIR to look elsewhere)", global.state.display());
        return Err(ExitCode::Usage);
    }
    SledStore::open(&global.state).map_err(|e| {
        eprintln!("simbatch: {e}");
        ExitCode::StateStore
    })
}

/// Resolves a run id or unique prefix.
fn find_run(store: &SledStore, wanted: &str) -> anyhow::Result<String> {
    let ids = store.run_ids();
    if ids.iter().any(|id| id == wanted) {
        return Ok(wanted.to_string());
    }
    let matches: Vec<&String> = ids.iter().filter(|id| id.starts_with(wanted)).collect();
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] => bail!(
            "no run `{wanted}` in {}; `simbatch status` lists the runs",
            store.dir().display()
        ),
        many => bail!(
            "`{wanted}` matches several runs: {}",
            many.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn manifest(run: &SledRun, id: &str) -> anyhow::Result<Manifest> {
    run.manifest()?
        .ok_or_else(|| anyhow!("run `{id}` has no manifest (it never started)"))
}

/// Counts per outcome, rows still in flight, and whether anything is left to do.
fn counts(
    run: &SledRun,
    manifest: &Manifest,
) -> anyhow::Result<(BTreeMap<Outcome, u64>, u64, bool)> {
    let mut per = BTreeMap::new();
    let (mut finals, mut in_flight) = (0u64, 0u64);
    for item in run.rows() {
        let (_, record) = item?;
        match (record.phase, record.outcome) {
            (Phase::Done, Some(o)) => {
                *per.entry(o).or_default() += 1;
                if o.is_final() {
                    finals += 1;
                }
            }
            _ => in_flight += 1,
        }
    }
    Ok((per, in_flight, finals < manifest.rows))
}

/// `status` while a run holds the store: the live views runs publish (see
/// `run::live_view`), read without the lock.
fn live_status(
    global: &GlobalArgs,
    args: &StatusArgs,
    busy: &StoreError,
) -> anyhow::Result<ExitCode> {
    let running = live_view::read_all(&global.state);
    let views: Vec<LiveView> = running
        .iter()
        .filter(|v| args.run.as_deref().is_none_or(|w| v.run_id.starts_with(w)))
        .cloned()
        .collect();
    if views.is_empty() {
        match (running.first(), &args.run) {
            (Some(live), Some(wanted)) => eprintln!(
                "simbatch: `{wanted}` is not the run going now ({}); its counts can be read once that run ends",
                live.run_id
            ),
            _ => eprintln!("simbatch: {busy} (it publishes no live view to show)"),
        }
        return Ok(ExitCode::StateStore);
    }
    if global.json {
        println!("{}", serde_json::to_string_pretty(&views)?);
        return Ok(ExitCode::Success);
    }
    for view in &views {
        for line in view.lines() {
            println!("{line}");
        }
    }
    if args.run.is_none() {
        println!(
            "(a run is going: other runs in {} are listed once it ends)",
            global.state.display()
        );
    }
    Ok(ExitCode::Success)
}

/// How a run that is not resumable ended, and where its failures are.
fn finished(id: &str, per: &BTreeMap<Outcome, u64>) -> String {
    let bad: u64 = per
        .iter()
        .filter(|(o, _)| o.did_not_succeed())
        .map(|(_, n)| n)
        .sum();
    if bad == 0 {
        return "finished".into();
    }
    let failed = std::path::Path::new("reports").join(id).join("failed.csv");
    let see = match failed.exists() {
        true => format!("see {}", failed.display()),
        false => format!("`simbatch report {id}` writes failed.csv"),
    };
    format!("finished: {bad} did not succeed — {see}")
}

pub fn status(global: &GlobalArgs, args: &StatusArgs) -> anyhow::Result<ExitCode> {
    if !global.state.join("db").exists() {
        return Ok(open_store(global).err().unwrap_or(ExitCode::Usage));
    }
    let store = match SledStore::open(&global.state) {
        Ok(s) => s,
        Err(busy @ StoreError::Busy { .. }) => return live_status(global, args, &busy),
        Err(e) => {
            eprintln!("simbatch: {e}");
            return Ok(ExitCode::StateStore);
        }
    };
    let ids = match &args.run {
        Some(wanted) => vec![find_run(&store, wanted)?],
        None => store.run_ids(),
    };
    if ids.is_empty() {
        println!("no runs in {}", global.state.display());
    }
    let mut listing = Vec::new();
    for id in ids {
        let run = store.run(&id)?;
        let manifest = match run.manifest() {
            Ok(Some(m)) => m,
            Ok(None) => continue,
            Err(e) => {
                eprintln!("simbatch: {e}");
                return Ok(ExitCode::StateStore);
            }
        };
        let (per, in_flight, resumable) = counts(&run, &manifest)?;
        let outcomes: Vec<String> = per.iter().map(|(o, n)| format!("{o} {n}")).collect();
        if global.json {
            listing.push(serde_json::json!({"run_id": id, "job": manifest.job_path, "created_at": manifest.created_at,
                "rows": manifest.rows, "outcomes": per, "in_flight": in_flight, "resumable": resumable}));
        } else {
            println!(
                "{id}  {}  {} rows  {}{}  {}",
                manifest.created_at.format("%Y-%m-%d %H:%M"),
                manifest.rows,
                if outcomes.is_empty() {
                    "nothing done yet".to_string()
                } else {
                    outcomes.join(", ")
                },
                if in_flight > 0 {
                    format!(", {in_flight} possibly in flight")
                } else {
                    String::new()
                },
                if resumable {
                    format!(
                        "resumable: {}",
                        crate::run::finish::resume_command(&id, &manifest.job_path)
                    )
                } else {
                    finished(&id, &per)
                }
            );
        }
    }
    if global.json {
        println!("{}", serde_json::to_string_pretty(&listing)?);
    }
    Ok(ExitCode::Success)
}

/// An existing run by id or prefix: its store, id, tree and manifest.
fn open_run(
    global: &GlobalArgs,
    wanted: &str,
) -> anyhow::Result<Result<(SledStore, String, SledRun, Manifest), ExitCode>> {
    let store = match open_store(global) {
        Ok(s) => s,
        Err(code) => return Ok(Err(code)),
    };
    let id = find_run(&store, wanted)?;
    let run = store.run(&id)?;
    let manifest = manifest(&run, &id)?;
    Ok(Ok((store, id, run, manifest)))
}

/// The run's own copy of its job file and how to read it.
fn job_of(
    store: &SledStore,
    id: &str,
    manifest: &Manifest,
) -> (
    PathBuf,
    crate::job::ParseOptions,
    Option<crate::job::JobFormat>,
) {
    let reading = &manifest.options.reading;
    (
        store.job_copy(id, reading.format.name()),
        parse_options(reading),
        Some(reading.format),
    )
}

pub fn report(global: &GlobalArgs, args: &ReportArgs) -> anyhow::Result<ExitCode> {
    let (store, id, run, manifest) = match open_run(global, &args.run)? {
        Ok(opened) => opened,
        Err(code) => return Ok(code),
    };
    let (job, parse, format) = job_of(&store, &id, &manifest);
    let results_format = manifest.options.results_format;
    let dir = global
        .reports
        .clone()
        .unwrap_or_else(|| PathBuf::from("reports").join(&id));
    let (files, tally) =
        crate::report::write_rows(&dir, &job, format, &parse, &run, results_format)?;
    if let Some(summary) = run.summary()? {
        crate::report::write_summary(&dir, &summary)?;
    }
    if !global.quiet {
        let outcomes: Vec<String> = tally
            .outcomes
            .iter()
            .map(|(o, n)| format!("{o} {n}"))
            .collect();
        eprintln!(
            "simbatch: {id}: {} rows ({}); reports in {}/",
            tally.rows,
            outcomes.join(", "),
            files.dir.display()
        );
    }
    Ok(ExitCode::Success)
}

pub fn revert(global: &GlobalArgs, args: &RevertArgs) -> anyhow::Result<ExitCode> {
    let (store, id, run, manifest) = match open_run(global, &args.run)? {
        Ok(opened) => opened,
        Err(code) => return Ok(code),
    };
    let (job, parse, format) = job_of(&store, &id, &manifest);
    let (rows, not_revertible) =
        crate::report::write_revert(&args.output, &job, format, &parse, &run)?;
    if !global.quiet {
        eprintln!(
            "simbatch: wrote {rows} rows to {} that restore what {id} changed{}",
            args.output.display(),
            if not_revertible > 0 {
                format!("; {not_revertible} changed rows cannot be reverted (see its results.csv)")
            } else {
                String::new()
            }
        );
        eprintln!(
            "simbatch: check it with `simbatch plan {}`, then run it with `simbatch run {}`",
            args.output.display(),
            args.output.display()
        );
    }
    Ok(ExitCode::Success)
}
