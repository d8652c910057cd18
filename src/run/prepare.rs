//! The first step of a run, before anything is written or sent: is this the resume of a run
//! made from exactly these bytes; the whole file checked — for a new run by the one pass over
//! the path that also hashes and copies it (`job::intake`); the irreversible guard.

use std::io::{IsTerminal, Write};

use anyhow::bail;

use super::identity::{job_stem, run_for};
use super::reading::reading_of;
use super::request::{RunOutcome, RunRequest};
use crate::exit_code::ExitCode;
use crate::job::intake::{copy_dir, hash_file, validate_and_copy, JobCopy};
use crate::job::{validate_file, FileValidation, JobFormat, Severity};
use crate::store::{CheckpointStore, Manifest, Reading, SledStore, StoreError};

/// The run a job's bytes are a resume of: its id and manifest.
pub type Resume = (String, Manifest);

/// A run ready to open its state.
pub struct Prepared {
    pub format: JobFormat,
    pub reading: Reading,
    /// The state store, if it had to be opened to recognise a resume.
    pub store: Option<SledStore>,
    /// The run these bytes are a resume of.
    pub resume: Option<Resume>,
    /// A new run's private copy of the job (the bytes validated).
    pub copy: Option<JobCopy>,
    pub validation: FileValidation,
}

/// Identifies and validates the job; the early outcome when it must not run.
pub fn prepare(req: &RunRequest) -> anyhow::Result<Result<Prepared, RunOutcome>> {
    let format = req.job_format();
    let reading = reading_of(req, format);
    let (store, resume) = match &req.resume {
        Some(id) => match named_run(req, id)? {
            Ok(found) => found,
            Err(outcome) => return Ok(Err(outcome)),
        },
        None => match identify(req) {
            Ok(found) => found,
            Err(e) => return Ok(Err(RunOutcome::store_failed(e))),
        },
    };
    let (validation, copy) = match (&resume, &store) {
        (Some((id, manifest)), Some(store)) => {
            match revalidate(req, store, id, manifest, &reading) {
                Ok(v) => (v, None),
                Err(e) => return Ok(Err(RunOutcome::store_failed(e))),
            }
        }
        _ => validate_and_copy(&req.job, req.format, &req.parse, &copy_dir(&req.state)),
    };
    if let Some(refusal) = refusal(req, &validation)? {
        return Ok(Err(refusal));
    }
    Ok(Ok(Prepared {
        format,
        reading,
        store,
        resume,
        copy,
        validation,
    }))
}

/// `--resume RUN_ID`: that run, provided the job file is the one it was made from.
#[allow(clippy::type_complexity)]
fn named_run(
    req: &RunRequest,
    id: &str,
) -> anyhow::Result<Result<(Option<SledStore>, Option<Resume>), RunOutcome>> {
    let refuse = |why: String| {
        eprintln!("simbatch: cannot resume run {id}: {why}; `simbatch status` lists the runs and how to resume each; nothing was sent");
        Ok(Err(RunOutcome::early(ExitCode::Usage)))
    };
    if !req.state.join("db").exists() {
        return refuse(format!(
            "there is no state directory {}",
            req.state.display()
        ));
    }
    let store = match SledStore::open(&req.state) {
        Ok(s) => s,
        Err(e) => return Ok(Err(RunOutcome::store_failed(e))),
    };
    if !store.run_ids().iter().any(|r| r == id) {
        return refuse(format!("no such run in {}", req.state.display()));
    }
    let manifest = match store.run(id).and_then(|r| r.manifest()) {
        Ok(Some(m)) => m,
        Ok(None) => return refuse("it never started (no manifest)".into()),
        Err(e) => return Ok(Err(RunOutcome::store_failed(e))),
    };
    match hash_file(&req.job) {
        Some(hash) if hash == manifest.job_sha256 => {
            Ok(Ok((Some(store), Some((id.to_string(), manifest)))))
        }
        _ => refuse(format!(
            "{} is not the file it was made from ({}, sha256 {})",
            req.job.display(),
            manifest.job_path,
            &manifest.job_sha256[..16]
        )),
    }
}

/// A regular file is hashed first: when a run was made from exactly these bytes it is
/// resumed from its own stored copy, and the path is not read again.
fn identify(req: &RunRequest) -> Result<(Option<SledStore>, Option<Resume>), StoreError> {
    if req.fresh || !req.state.join("db").exists() {
        return Ok((None, None));
    }
    let Some(hash) = hash_file(&req.job) else {
        return Ok((None, None));
    };
    let store = SledStore::open(&req.state)?;
    let stem = job_stem(&req.job);
    let resume = match run_for(&store, stem, &hash)? {
        (id, Some(manifest)) => Some((id, manifest)),
        _ => None,
    };
    Ok((Some(store), resume))
}

/// A resume uses the check its first invocation made (1,000,000 rows: 2.5 s saved), or checks
/// its stored copy when the file is now read differently.
fn revalidate(
    req: &RunRequest,
    store: &SledStore,
    id: &str,
    manifest: &Manifest,
    reading: &Reading,
) -> Result<FileValidation, StoreError> {
    let stored = store.job_copy(id, reading.format.name());
    if !stored.is_file() {
        return Err(StoreError::Corrupt {
            dir: req.state.clone(),
            detail: format!(
                "run {id} has lost its copy of the job ({})",
                stored.display()
            ),
        });
    }
    Ok(
        match manifest.validated.clone().filter(|v| &v.reading == reading) {
            Some(v) => {
                if !req.quiet {
                    eprintln!(
                        "{}: validated when the run started ({} rows); not read again",
                        req.job.display(),
                        v.valid_rows
                    );
                }
                FileValidation::clean(
                    &req.job,
                    v.valid_rows,
                    v.counts,
                    v.duplicate_of,
                    v.grouped_rows,
                )
            }
            None => {
                let mut v = validate_file(&stored, Some(reading.format), &req.parse);
                v.path = req.job.display().to_string();
                v
            }
        },
    )
}

/// Prints the warnings; refuses an invalid job (unless `--skip-invalid`), one without valid
/// rows, and irreversible rows without `--allow-irreversible` (on a terminal, the operator
/// types their number).
fn refusal(req: &RunRequest, validation: &FileValidation) -> anyhow::Result<Option<RunOutcome>> {
    if !req.quiet {
        for d in validation
            .diagnostics
            .sorted()
            .iter()
            .filter(|d| d.severity == Severity::Warning)
        {
            eprintln!("{}", d.display(&validation.path));
        }
    }
    let refused = |message: String| {
        print_validation_errors(validation);
        eprintln!("{}: {message}", validation.path);
        Ok(Some(RunOutcome::early(ExitCode::Usage)))
    };
    if validation.unreadable || (!validation.is_valid() && !req.skip_invalid) {
        return refused("not run: fix the errors above (or pass --skip-invalid to run the valid rows); nothing was sent".into());
    }
    if validation.valid_rows == 0 {
        return refused("no valid rows; nothing was sent".into());
    }
    let irreversible: u64 = validation
        .counts
        .iter()
        .filter(|((_, a), _)| a.is_irreversible())
        .map(|(_, n)| n)
        .sum();
    if irreversible > 0 {
        if !req.allow_irreversible {
            eprintln!(
                "{}: {irreversible} rows are irreversible (delete, profile-delete); pass --allow-irreversible to run them. Nothing was sent.",
                validation.path
            );
            return Ok(Some(RunOutcome::early(ExitCode::Usage)));
        }
        if req.handle_ctrl_c && std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
            confirm_irreversible(irreversible)?;
        }
    }
    Ok(None)
}

/// Prints a file's validation problems to stderr.
pub fn print_validation_errors(v: &FileValidation) {
    for d in v.diagnostics.sorted() {
        eprintln!("{}", d.display(&v.path));
    }
    let (more_errors, more_warnings) = v.diagnostics.omitted();
    if more_errors + more_warnings > 0 {
        eprintln!(
            "{}: ... and {more_errors} more errors, {more_warnings} more warnings",
            v.path
        );
    }
}

/// Asks the operator to type the number of irreversible rows (SPEC 3.4).
fn confirm_irreversible(count: u64) -> anyhow::Result<()> {
    eprint!("This job irreversibly deletes {count} SIMs/profiles. Type {count} to continue: ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if answer.trim() != count.to_string() {
        bail!("not confirmed; nothing was sent");
    }
    Ok(())
}
