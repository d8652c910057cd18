//! Opening a run's state: the state store, the run's id (the full SHA-256 of its bytes picks
//! it; the short id only names it), the run's own copy of the job in the state directory, the
//! account check of a resume, the manifest of a new run, and the reports directory — all
//! before the first change.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::anyhow;
use chrono::Utc;

use super::accounts::account_change;
use super::identity::{job_stem, run_for};
use super::prepare::Prepared;
use super::request::{RunOutcome, RunRequest};
use crate::exit_code::ExitCode;
use crate::job::{FileValidation, JobFormat};
use crate::store::{
    AccountRecord, CheckpointStore, Manifest, Reading, RunSettings, SledRun, SledStore,
    StoredValidation, SCHEMA_VERSION,
};

/// A run whose state is open.
pub struct Opened {
    /// Kept open for the whole run (sled allows one open per process): held, not read.
    #[expect(dead_code, reason = "held for its lifetime, not read")]
    pub store: SledStore,
    pub run_id: String,
    /// The full SHA-256 of the job's bytes.
    pub hash: String,
    pub resumed: bool,
    /// The run's own copy of the job, which it executes and reports from.
    pub job: PathBuf,
    pub run: Arc<SledRun>,
    pub reports_dir: PathBuf,
}

/// Opens (or creates) the run's state; the early outcome when it must not go on.
pub fn open(
    req: &RunRequest,
    prepared: &mut Prepared,
    accounts: &[AccountRecord],
) -> anyhow::Result<Result<Opened, RunOutcome>> {
    let store = match prepared
        .store
        .take()
        .map_or_else(|| SledStore::open(&req.state), Ok)
    {
        Ok(s) => s,
        Err(e) => return Ok(Err(RunOutcome::store_failed(e))),
    };
    let format = prepared.format.name();
    let (run_id, hash, resumed) = match (prepared.resume.take(), prepared.copy.take()) {
        (Some((id, manifest)), _) => (id, manifest.job_sha256.clone(), Some(manifest)),
        (None, Some(copy)) => {
            let hash = copy.sha256.clone();
            let stem = job_stem(&req.job);
            let (id, existing) = if req.fresh {
                let stamp = Utc::now().format("%Y%m%d%H%M%S");
                (format!("{stem}-{}-{stamp}", &hash[..8]), None)
            } else {
                match run_for(&store, stem, &hash) {
                    Ok(found) => found,
                    Err(e) => return Ok(Err(RunOutcome::store_failed(e))),
                }
            };
            // The same bytes as an earlier run (read through a pipe, or changed back while
            // this run was validating it) are that run's resume. The copy goes into the state
            // directory before the manifest, so that reports can be rebuilt from it alone.
            copy.persist(&store.job_copy(&id, format)).map_err(|e| {
                anyhow!(
                    "cannot copy the job into the state directory {}: {e}",
                    req.state.display()
                )
            })?;
            (id, hash, existing)
        }
        (None, None) => unreachable!("a new run's job was read to its end and copied"),
    };
    let run = match store.run(&run_id) {
        Ok(r) => Arc::new(r),
        Err(e) => return Ok(Err(RunOutcome::store_failed(e))),
    };
    let is_resume = resumed.is_some();
    let recorded = match resumed {
        Some(manifest) => keep_accounts(req, &run, manifest, accounts),
        None => {
            let (validation, reading) = (&prepared.validation, &prepared.reading);
            let manifest = Manifest {
                schema_version: SCHEMA_VERSION,
                run_id: run_id.clone(),
                job_path: req.job.display().to_string(),
                job_sha256: hash.clone(),
                rows: validation.valid_rows + validation.invalid_rows,
                created_at: Utc::now(),
                options: settings(req, reading, prepared.format, accounts),
                validated: (validation.invalid_rows == 0 && validation.is_valid())
                    .then(|| stored_validation(validation, reading)),
            };
            run.write_manifest(&manifest)
                .map_err(RunOutcome::store_failed)
        }
    };
    if let Err(outcome) = recorded {
        return Ok(Err(outcome));
    }
    let reports_dir = req
        .reports
        .clone()
        .unwrap_or_else(|| PathBuf::from("reports").join(&run_id));
    // Found out now, not after the last change was sent.
    if let Err(e) = crate::report::check_dir(&reports_dir) {
        eprintln!(
            "simbatch: {e}; pass --reports DIR with a directory that can be written; nothing was sent"
        );
        return Ok(Err(RunOutcome::early(ExitCode::Usage)));
    }
    Ok(Ok(Opened {
        job: store.job_copy(&run_id, format),
        store,
        run_id,
        hash,
        resumed: is_resume,
        run,
        reports_dir,
    }))
}

/// A resume acts on the accounts its run started on, unless told otherwise; from then on the
/// run is on the new ones (the next resume compares with them).
fn keep_accounts(
    req: &RunRequest,
    run: &SledRun,
    mut manifest: Manifest,
    accounts: &[AccountRecord],
) -> Result<(), RunOutcome> {
    let Some(change) = account_change(&manifest.options.accounts, accounts) else {
        return Ok(());
    };
    let run_id = &manifest.run_id;
    if !req.allow_account_change {
        eprintln!(
            "simbatch: run {run_id} started on another account: {change}; pass --allow-account-change to resume it there. Nothing was sent."
        );
        return Err(RunOutcome::early(ExitCode::Usage));
    }
    eprintln!("simbatch: warning: resuming run {run_id} on another account (--allow-account-change): {change}");
    manifest.options.accounts = accounts.to_vec();
    run.write_manifest(&manifest)
        .map_err(RunOutcome::store_failed)
}

/// The settings a new run records.
fn settings(
    req: &RunRequest,
    reading: &Reading,
    format: JobFormat,
    accounts: &[AccountRecord],
) -> RunSettings {
    RunSettings {
        reading: reading.clone(),
        accounts: accounts.to_vec(),
        results_format: req.results_format.unwrap_or(format),
        rate: req.rate,
        concurrency: req.concurrency,
        max_attempts: req.max_attempts,
        preflight: req.preflight,
        wait_s: req.wait.map(|w| w.as_secs()),
        skip_invalid: req.skip_invalid,
        schedule: (!req.schedule.is_unrestricted()).then(|| req.schedule.describe()),
    }
}

/// A clean validation, kept so that a resume of the same bytes need not validate again.
fn stored_validation(validation: &FileValidation, reading: &Reading) -> StoredValidation {
    StoredValidation {
        reading: reading.clone(),
        valid_rows: validation.valid_rows,
        counts: validation
            .counts
            .iter()
            .map(|((p, a), n)| (p.clone(), *a, *n))
            .collect(),
        duplicate_of: validation.duplicate_of.clone(),
        grouped_rows: validation.grouped_rows,
    }
}
