//! Running a job as a library call: everything `simbatch run` does between parsing its
//! arguments and printing — validation, the irreversible guard, lanes and credentials, the state
//! store, the banner, the engine, the reports and the exit code. `run`, `demo` and library users
//! (see `examples/`) all come through here.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use chrono::Utc;
use serde_json::json;

use crate::config::{CredentialEnv, ProviderConfig};
use crate::exit_code::ExitCode;
use crate::job::intake::{copy_dir, hash_file, validate_and_copy};
use crate::job::{validate_file, FileValidation, JobFormat, ParseOptions, ProviderKind};
use crate::pipeline::control::{FailureLimit, Live, Stop, StopReason};
use crate::pipeline::engine::{Engine, RunOptions};
use crate::pipeline::lane::Lane;
use crate::pipeline::retry::RetryPolicy;
use crate::pipeline::schedule::Schedule;
use crate::provider::http::{Http, REQUEST_TIMEOUT};
use crate::provider::limiter::{LaneLimits, RateGate};
use crate::provider::registry::{connect, provider_of, Secret};
use crate::store::{
    CheckpointStore, FinishedPrefix, Manifest, Outcome, SledStore, StoredValidation, SCHEMA_VERSION,
};

/// Default rows in flight per lane; the rate gate, not this, sets the pace.
pub const DEFAULT_CONCURRENCY: usize = 32;

/// Where credentials come from: the environment (the CLI), or given in code (the in-process
/// demo and library users talking to a sandbox).
#[derive(Clone)]
pub enum Credentials {
    Environment,
    /// Per provider name: a token (emnify, Telnyx) or `username:password` (Twilio).
    Given(BTreeMap<String, String>),
}

/// Groups running at once. A group waits for each step's confirmation, so its pace is set by
/// the provider's settling time, not by requests: many groups must overlap to keep a lane busy.
/// Requests stay bounded by each lane's rate gate and in-flight cap, whatever this number.
pub const GROUPS_AT_ONCE: usize = 1024;

/// Everything a run needs.
#[derive(Clone)]
pub struct RunRequest {
    pub job: PathBuf,
    pub format: Option<JobFormat>,
    pub parse: ParseOptions,
    pub state: PathBuf,
    pub reports: Option<PathBuf>,
    pub rate: Option<f64>,
    pub concurrency: Option<usize>,
    pub max_attempts: u32,
    pub max_failures: Option<FailureLimit>,
    pub preflight: bool,
    /// How long to wait for confirmations; `None` for `--no-wait`.
    pub wait: Option<Duration>,
    pub allow_irreversible: bool,
    /// Resume even though a provider name now points at another account than the run started
    /// on (`--allow-account-change`).
    pub allow_account_change: bool,
    pub skip_invalid: bool,
    pub fresh: bool,
    pub results_format: Option<JobFormat>,
    pub credentials: Credentials,
    pub quiet: bool,
    /// Install the two-stage Ctrl-C handler (the CLI does; a library caller may not want it).
    pub handle_ctrl_c: bool,
    /// When sending is allowed (`--window`, `--tz`, `--until`).
    pub schedule: Schedule,
}

impl RunRequest {
    /// A request with the CLI's defaults for `job`.
    pub fn new(job: impl Into<PathBuf>, parse: ParseOptions) -> RunRequest {
        RunRequest {
            job: job.into(),
            format: None,
            parse,
            state: PathBuf::from(".simbatch"),
            reports: None,
            rate: None,
            concurrency: None,
            max_attempts: 5,
            max_failures: None,
            preflight: true,
            wait: Some(Duration::from_secs(600)),
            allow_irreversible: false,
            allow_account_change: false,
            skip_invalid: false,
            fresh: false,
            schedule: Schedule::default(),
            results_format: None,
            credentials: Credentials::Environment,
            quiet: false,
            handle_ctrl_c: false,
        }
    }
}

/// The accounts (kind, base URL, credential variables) behind the provider names a job uses,
/// as recorded in a run's manifest.
fn accounts<'a>(req: &RunRequest, names: impl Iterator<Item = &'a str>) -> Vec<serde_json::Value> {
    let mut names: Vec<&str> = names.collect();
    names.dedup();
    names
        .into_iter()
        .filter_map(|name| req.parse.providers.get(name))
        .map(|c| {
            let credentials = match (&req.credentials, &c.credentials) {
                (Credentials::Given(_), _) => "given in code".to_string(),
                (_, CredentialEnv::Token(var)) => var.clone(),
                (_, CredentialEnv::Basic { username, password }) => format!("{username}+{password}"),
            };
            json!({"name": c.name, "kind": c.kind, "base_url": c.base_url.as_str(), "credentials": credentials})
        })
        .collect()
}

/// How the accounts of this invocation differ from those a run recorded, in words; `None`
/// when every provider name is on the account it was (names the run did not record, from an
/// older manifest, are not compared).
fn account_change(recorded: &serde_json::Value, now: &[serde_json::Value]) -> Option<String> {
    let describe = |a: &serde_json::Value| {
        format!(
            "{} at {} (credentials {})",
            a["kind"].as_str().unwrap_or("?"),
            a["base_url"].as_str().unwrap_or("?"),
            a["credentials"].as_str().unwrap_or("?")
        )
    };
    let changes: Vec<String> = now
        .iter()
        .filter_map(|a| {
            let before = recorded
                .as_array()?
                .iter()
                .find(|r| r["name"] == a["name"])?;
            let same = ["kind", "base_url", "credentials"]
                .iter()
                .all(|k| before.get(*k).is_none() || before[*k] == a[*k]);
            (!same).then(|| {
                format!(
                    "provider `{}` was {}, is now {}",
                    a["name"].as_str().unwrap_or("?"),
                    describe(before),
                    describe(a)
                )
            })
        })
        .collect();
    (!changes.is_empty()).then(|| changes.join("; "))
}

/// A state store that cannot be used: its message, and exit 4.
fn store_failed(e: crate::store::StoreError) -> RunOutcome {
    eprintln!("simbatch: {e}");
    RunOutcome::early(ExitCode::StateStore)
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub exit: ExitCode,
    pub run_id: Option<String>,
    pub summary: Option<serde_json::Value>,
    pub reports: Option<PathBuf>,
}

impl RunOutcome {
    fn early(exit: ExitCode) -> RunOutcome {
        RunOutcome {
            exit,
            run_id: None,
            summary: None,
            reports: None,
        }
    }
}

/// The id of the run made from a job file with this stem and SHA-256, and that run's manifest
/// if it exists (a resume). Ids are `<stem>-<first 8 hex of the hash>`, longer (16, 32, 64 hex)
/// only when a run of other bytes already holds the shorter one: the full hash identifies a
/// run, the short id only names it (SPEC 3.3).
pub fn run_for(
    store: &SledStore,
    stem: &str,
    hash: &str,
) -> Result<(String, Option<Manifest>), crate::store::StoreError> {
    let ids = store.run_ids();
    for len in [8, 16, 32, 64] {
        let id = format!("{stem}-{}", &hash[..len.min(hash.len())]);
        if !ids.contains(&id) {
            return Ok((id, None));
        }
        match store.run(&id)?.manifest()? {
            Some(m) if m.job_sha256 == hash => return Ok((id, Some(m))),
            // A run that never recorded its manifest holds no progress: take its place.
            None => return Ok((id, None)),
            Some(_) => {}
        }
    }
    Ok((format!("{stem}-{hash}"), None))
}

/// The stem run ids are made from.
fn job_stem(job: &Path) -> &str {
    job.file_stem().and_then(|s| s.to_str()).unwrap_or("job")
}

/// `--max-failures N` or `N%`.
pub fn parse_max_failures(raw: &str) -> anyhow::Result<FailureLimit> {
    let invalid = || {
        anyhow!("--max-failures `{raw}`: expected a number of rows (e.g. 50) or a share (e.g. 5%)")
    };
    match raw.strip_suffix('%') {
        Some(p) => {
            let p: f64 = p.trim().parse().map_err(|_| invalid())?;
            if !(0.0..=100.0).contains(&p) {
                return Err(invalid());
            }
            Ok(FailureLimit::Percent(p))
        }
        None => Ok(FailureLimit::Count(
            raw.trim().parse().map_err(|_| invalid())?,
        )),
    }
}

fn secret(credentials: &Credentials, provider: &str, var: &str) -> anyhow::Result<String> {
    let value = match credentials {
        Credentials::Environment => std::env::var(var).ok(),
        Credentials::Given(map) => map.get(provider).cloned(),
    };
    match value {
        // A credential travels in an HTTP header: a line break or other control character
        // would fail every request of the run (the value is never echoed).
        Some(v) if v.chars().any(char::is_control) => bail!(
            "provider `{provider}`: the value of {var} holds a control character (a line break?); a credential cannot — check how the variable was set"
        ),
        Some(v) if !v.trim().is_empty() => Ok(v),
        _ => bail!("provider `{provider}`: set the environment variable {var} (credentials are read only from the environment)"),
    }
}

/// Builds a provider's lane: its limits (documented, `simbatch.toml` tuning, `--rate`), its
/// HTTP client and its credentials.
pub fn build_lane(config: &ProviderConfig, req: &RunRequest) -> anyhow::Result<Lane> {
    let mut limits = provider_of(config.kind).documented_limits();
    if let Some(rate) = config.tuning.rate {
        limits = limits.with_rate(rate);
    }
    if let Some(cap) = config.tuning.max_in_flight {
        limits.max_in_flight = Some(cap);
    }
    if let Some(rate) = req.rate {
        if !(rate.is_finite() && rate > 0.0) {
            bail!("--rate must be a positive number of requests per second");
        }
        limits = limits.with_rate(rate);
    }
    let gate = Arc::new(RateGate::new(limits));
    let http = Http::new(&config.base_url, gate, REQUEST_TIMEOUT)
        .map_err(|e| anyhow!("provider `{}`: {e}", config.name))?;
    let secret = match &config.credentials {
        CredentialEnv::Token(var) => Secret::Token(secret(&req.credentials, &config.name, var)?),
        CredentialEnv::Basic { username, password } => match &req.credentials {
            Credentials::Environment => Secret::Basic(
                secret(&req.credentials, &config.name, username)?,
                secret(&req.credentials, &config.name, password)?,
            ),
            Credentials::Given(_) => {
                let both = secret(&req.credentials, &config.name, "credentials")?;
                let (u, p) = both.split_once(':').ok_or_else(|| {
                    anyhow!(
                        "provider `{}`: give its credentials as USER:PASSWORD",
                        config.name
                    )
                })?;
                Secret::Basic(u.to_string(), p.to_string())
            }
        },
    };
    let account = connect(config.kind, http, secret).ok_or_else(|| {
        anyhow!(
            "provider `{}`: credentials do not match its kind",
            config.name
        )
    })?;
    Ok(Lane {
        name: config.name.clone(),
        account,
        concurrency: req
            .concurrency
            .or(config.tuning.concurrency)
            .unwrap_or_else(|| default_concurrency(&limits)),
        listing: Default::default(),
    })
}

/// Workers of a lane when neither `--concurrency` nor the config says: enough to keep the
/// lane's limit busy while each request takes up to [`LATENCY_TO_HIDE`].
pub fn default_concurrency(limits: &LaneLimits) -> usize {
    match (limits.max_in_flight, limits.rate) {
        // Under an in-flight cap (Twilio), twice as many workers as slots: a row's own work
        // around its request (checkpoint marker, parsing) then overlaps other rows' requests
        // and the cap stays full (measured: 111.6 ms per row with 100 workers and 100 ms
        // latency; 2x workers reach the cap's bound).
        (Some(cap), _) => 2 * cap,
        // At a rate R, R × latency requests are in flight on average: 500/s at 100 ms ± 20 ms
        // needs ~60 (measured: 32 workers reached 64% of 500/s).
        (None, Some((rate, _))) => ((rate * LATENCY_TO_HIDE.as_secs_f64()).ceil() as usize)
            .clamp(DEFAULT_CONCURRENCY, MAX_DEFAULT_CONCURRENCY),
        (None, None) => DEFAULT_CONCURRENCY,
    }
}

/// The request latency the default worker count hides at the lane's full rate.
pub const LATENCY_TO_HIDE: Duration = Duration::from_millis(250);
/// The most workers a lane gets by default (`--concurrency` may set more).
const MAX_DEFAULT_CONCURRENCY: usize = 1024;

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

/// What a run records about how to read its job again (for `report`, `revert`, `status`).
pub fn job_reading(manifest: &Manifest) -> (ParseOptions, Option<JobFormat>) {
    let o = &manifest.options;
    let kinds: BTreeMap<String, ProviderKind> =
        serde_json::from_value(o["providers"].clone()).unwrap_or_default();
    let parse = ParseOptions {
        strictness: if o["lenient_ids"].as_bool().unwrap_or(false) {
            crate::job::IdStrictness::Lenient
        } else {
            crate::job::IdStrictness::Strict
        },
        default_provider: o["provider"].as_str().map(str::to_string),
        providers: crate::config::Providers::from_kinds(&kinds),
    };
    let format = match o["format"].as_str() {
        Some("jsonl") => Some(JobFormat::Jsonl),
        Some("csv") => Some(JobFormat::Csv),
        _ => None,
    };
    (parse, format)
}

fn format_name(f: JobFormat) -> &'static str {
    match f {
        JobFormat::Csv => "csv",
        JobFormat::Jsonl => "jsonl",
    }
}

/// How a run reads its job file: a resume that would read it differently validates it again.
fn reading(req: &RunRequest, format: JobFormat) -> serde_json::Value {
    json!({
        "providers": req.parse.providers.kinds(),
        "provider": req.parse.default_provider,
        "lenient_ids": req.parse.strictness == crate::job::IdStrictness::Lenient,
        "format": format_name(format),
    })
}

/// `base` (an object) with `more`'s fields added.
fn with_fields(mut base: serde_json::Value, more: serde_json::Value) -> serde_json::Value {
    if let (Some(base), serde_json::Value::Object(more)) = (base.as_object_mut(), more) {
        base.extend(more);
    }
    base
}

/// Runs (or resumes) a job.
pub async fn run_job(req: RunRequest) -> anyhow::Result<RunOutcome> {
    let job_format = req
        .format
        .or_else(|| JobFormat::from_path(&req.job))
        .unwrap_or(JobFormat::Csv);
    let reading = reading(&req, job_format);
    let stem = job_stem(&req.job);

    // 1. A resume? A regular file is hashed first: when a run was made from exactly these
    //    bytes it is resumed from its own stored copy, and the path is not read again.
    let mut store: Option<SledStore> = None;
    let mut resume: Option<(String, Manifest)> = None;
    if !req.fresh && req.state.join("db").exists() {
        if let Some(hash) = hash_file(&req.job) {
            let opened = match SledStore::open(&req.state) {
                Ok(s) => s,
                Err(e) => return Ok(store_failed(e)),
            };
            match run_for(&opened, stem, &hash) {
                Ok((id, Some(manifest))) => resume = Some((id, manifest)),
                Ok(_) => {}
                Err(e) => return Ok(store_failed(e)),
            }
            store = Some(opened);
        }
    }

    // 2. The whole file is checked before anything is sent. A new run reads the path once:
    //    that pass validates, hashes and copies it, and the run executes the copy. A resume
    //    uses the check its first invocation made (1,000,000 rows: 2.5 s saved), or checks
    //    its stored copy when the file is now read differently.
    let (validation, copy) = match (&resume, &store) {
        (Some((id, manifest)), Some(store)) => {
            let stored = store.job_copy(id, format_name(job_format));
            if !stored.is_file() {
                return Ok(store_failed(crate::store::StoreError::Corrupt {
                    dir: req.state.clone(),
                    detail: format!(
                        "run {id} has lost its copy of the job ({})",
                        stored.display()
                    ),
                }));
            }
            let validation = match manifest.validated.clone().filter(|v| v.reading == reading) {
                Some(v) => {
                    if !req.quiet {
                        eprintln!(
                            "{}: validated when the run started ({} rows); not read again",
                            req.job.display(),
                            v.valid_rows
                        );
                    }
                    FileValidation::clean(&req.job, v.valid_rows, v.counts, v.duplicate_of)
                }
                None => {
                    let mut v = validate_file(&stored, Some(job_format), &req.parse);
                    v.path = req.job.display().to_string();
                    v
                }
            };
            (validation, None)
        }
        _ => validate_and_copy(&req.job, req.format, &req.parse, &copy_dir(&req.state)),
    };
    if !req.quiet {
        for d in validation
            .diagnostics
            .sorted()
            .iter()
            .filter(|d| d.severity == crate::job::Severity::Warning)
        {
            eprintln!("{}", d.display(&validation.path));
        }
    }
    if validation.unreadable || (!validation.is_valid() && !req.skip_invalid) {
        print_validation_errors(&validation);
        eprintln!("{}: not run: fix the errors above (or pass --skip-invalid to run the valid rows); nothing was sent", validation.path);
        return Ok(RunOutcome::early(ExitCode::Usage));
    }
    if validation.valid_rows == 0 {
        print_validation_errors(&validation);
        eprintln!("{}: no valid rows; nothing was sent", validation.path);
        return Ok(RunOutcome::early(ExitCode::Usage));
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
            return Ok(RunOutcome::early(ExitCode::Usage));
        }
        if req.handle_ctrl_c && std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
            confirm_irreversible(irreversible)?;
        }
    }

    // The provider accounts the run acts on.
    let accounts = accounts(&req, validation.counts.keys().map(|(p, _)| p.as_str()));

    // 3. Lanes for the providers the job uses.
    let mut lanes = BTreeMap::new();
    for (provider, _) in validation.counts.keys() {
        if !lanes.contains_key(provider) {
            let config = req
                .parse
                .providers
                .get(provider)
                .expect("validation checked provider names");
            lanes.insert(provider.clone(), Arc::new(build_lane(config, &req)?));
        }
    }

    // 4. The state store: resume or start. The run's own copy of the job goes into the state
    //    directory (so that its reports can be rebuilt from there alone) before its manifest.
    let store = match store.map_or_else(|| SledStore::open(&req.state), Ok) {
        Ok(s) => s,
        Err(e) => return Ok(store_failed(e)),
    };
    let (run_id, hash, resumed) = match (resume, copy) {
        (Some((id, manifest)), _) => (id, manifest.job_sha256.clone(), Some(manifest)),
        (None, Some(copy)) => {
            let hash = copy.sha256.clone();
            let (id, existing) = if req.fresh {
                let id = format!(
                    "{stem}-{}-{}",
                    &hash[..8],
                    Utc::now().format("%Y%m%d%H%M%S")
                );
                (id, None)
            } else {
                match run_for(&store, stem, &hash) {
                    Ok(found) => found,
                    Err(e) => return Ok(store_failed(e)),
                }
            };
            // The same bytes as an earlier run (read through a pipe, or changed back while
            // this run was validating it): that run's resume.
            let resumed = existing;
            let dest = store.job_copy(&id, format_name(job_format));
            copy.persist(&dest).map_err(|e| {
                anyhow!(
                    "cannot copy the job into the state directory {}: {e}",
                    req.state.display()
                )
            })?;
            (id, hash, resumed)
        }
        (None, None) => unreachable!("a new run's job was read to its end and copied"),
    };
    let job = store.job_copy(&run_id, format_name(job_format));
    let run_store = match store.run(&run_id) {
        Ok(r) => r,
        Err(e) => return Ok(store_failed(e)),
    };
    // A resume acts on the accounts its run started on, unless told otherwise; from then on
    // the run is on the new ones (the next resume compares with them).
    if let Some(mut manifest) = resumed.clone() {
        if let Some(change) = account_change(&manifest.options["accounts"], &accounts) {
            if !req.allow_account_change {
                eprintln!(
                    "simbatch: run {run_id} started on another account: {change}; pass --allow-account-change to resume it there. Nothing was sent."
                );
                return Ok(RunOutcome::early(ExitCode::Usage));
            }
            eprintln!("simbatch: warning: resuming run {run_id} on another account (--allow-account-change): {change}");
            manifest.options["accounts"] = json!(accounts);
            if let Err(e) = run_store.write_manifest(&manifest) {
                return Ok(store_failed(e));
            }
        }
    }
    let resumed = resumed.is_some();
    if !resumed {
        let manifest = Manifest {
            schema_version: SCHEMA_VERSION,
            run_id: run_id.clone(),
            job_path: req.job.display().to_string(),
            job_sha256: hash.clone(),
            rows: validation.valid_rows + validation.invalid_rows,
            created_at: Utc::now(),
            options: with_fields(
                reading.clone(),
                json!({
                    "accounts": accounts,
                    "results_format": format_name(req.results_format.unwrap_or(job_format)),
                    "rate": req.rate, "concurrency": req.concurrency, "max_attempts": req.max_attempts,
                    "preflight": req.preflight, "wait_s": req.wait.map(|w| w.as_secs()),
                    "skip_invalid": req.skip_invalid,
                    "schedule": (!req.schedule.is_unrestricted()).then(|| req.schedule.describe()),
                }),
            ),
            validated: (validation.invalid_rows == 0 && validation.is_valid()).then(|| {
                StoredValidation {
                    reading: reading.clone(),
                    valid_rows: validation.valid_rows,
                    counts: validation
                        .counts
                        .iter()
                        .map(|((p, a), n)| (p.clone(), *a, *n))
                        .collect(),
                    duplicate_of: validation.duplicate_of.clone(),
                }
            }),
        };
        if let Err(e) = run_store.write_manifest(&manifest) {
            return Ok(store_failed(e));
        }
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
        return Ok(RunOutcome::early(ExitCode::Usage));
    }

    // 5. The banner: what is about to change, where.
    if !req.quiet {
        eprintln!(
            "simbatch: {} run {run_id}: {} rows from {} (state {}, reports {})",
            if resumed { "resuming" } else { "starting" },
            validation.valid_rows,
            validation.path,
            req.state.display(),
            reports_dir.display()
        );
        for lane in lanes.values() {
            let c = req.parse.providers.get(&lane.name).expect("configured");
            let actions: Vec<String> = validation
                .counts
                .iter()
                .filter(|((p, _), _)| *p == lane.name)
                .map(|((_, a), n)| format!("{a} {n}"))
                .collect();
            eprintln!(
                "  {} ({}, {}): {}",
                lane.name,
                lane.provider().kind(),
                c.base_url,
                actions.join(", ")
            );
        }
    }

    let options = RunOptions {
        policy: RetryPolicy {
            max_attempts: req.max_attempts,
            ..RetryPolicy::default()
        },
        preflight: req.preflight,
        wait: req.wait,
        max_failures: req.max_failures,
        group_concurrency: GROUPS_AT_ONCE,
    };
    let started_at = Utc::now();
    let started = Instant::now();
    let prefix = if resumed {
        run_store.finished_prefix().unwrap_or_default()
    } else {
        FinishedPrefix::default()
    };
    let run_store: Arc<dyn CheckpointStore> = Arc::new(run_store);
    let live = Arc::new(Live::default());
    let stop = Arc::new(Stop::default());
    let progress = crate::progress::Progress::new(validation.valid_rows, req.quiet);
    let (open_tx, open) = tokio::sync::watch::channel(req.schedule.is_unrestricted());
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
        job: job.clone(),
        format: Some(job_format),
        parse: req.parse.clone(),
        lanes: lanes.clone(),
        store: run_store.clone(),
        options,
        live: live.clone(),
        stop: stop.clone(),
        open,
        prefix,
        duplicate_of: validation.duplicate_of.iter().copied().collect(),
    });
    if req.handle_ctrl_c {
        let (stop, progress) = (stop.clone(), progress.clone());
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
    let bar = progress.clone();
    let counts = live.clone();
    let stopped = engine.run(Box::new(move |_, _| bar.update(&counts))).await;
    progress.finish();
    // How far the leading rows are all final: the next resume skips them unread.
    if let Err(e) = run_store.advance_finished_prefix() {
        tracing::warn!(error = %e, "could not record the finished rows; a resume reads them again");
    }

    // 6. Reports from the store, then the exit code.
    let results_format = req.results_format.unwrap_or(job_format);
    // Reports that cannot be written (a full disk) do not undo the run: the summary is counted
    // and stored anyway, and `simbatch report` writes the files later (exit 6).
    let (tally, mut unwritten) = match crate::report::write_rows(
        &reports_dir,
        &job,
        Some(job_format),
        &req.parse,
        run_store.as_ref(),
        results_format,
    ) {
        Ok((_, tally)) => (tally, None),
        Err(e @ crate::report::ReportError::Io { .. }) => (
            crate::report::tally_rows(&job, Some(job_format), &req.parse, run_store.as_ref())?,
            Some(e),
        ),
        Err(e) => return Err(e.into()),
    };
    let requests: BTreeMap<&str, u64> = lanes
        .values()
        .map(|l| (l.name.as_str(), l.http().requests()))
        .collect();
    let rate_limited: u64 = lanes.values().map(|l| l.http().gate.slowdowns()).sum();
    let elapsed = started.elapsed();
    let exit = exit_code(stopped.as_ref(), &tally);
    let summary = json!({
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "job": {"path": req.job.display().to_string(), "sha256": hash},
        "providers": accounts,
        "started_at": started_at,
        "finished_at": Utc::now(),
        "elapsed_s": elapsed.as_secs_f64(),
        "rows": tally.rows,
        "outcomes": tally.outcomes,
        "not_started": tally.not_started,
        "per_provider": tally.per_provider,
        "per_action": tally.per_action,
        "requests": requests,
        "requests_total": requests.values().sum::<u64>(),
        "rate_limited_429": rate_limited,
        "attempts": tally.attempts,
        "rows_per_s": if elapsed > Duration::ZERO { live.finished.load(std::sync::atomic::Ordering::Relaxed) as f64 / elapsed.as_secs_f64() } else { 0.0 },
        "latency_ms": {"p50": tally.latency.quantile(0.5), "p95": tally.latency.quantile(0.95), "p99": tally.latency.quantile(0.99)},
        "queued_ms": {"p50": tally.queued.quantile(0.5), "p95": tally.queued.quantile(0.95)},
        "not_revertible": tally.not_revertible,
        "revert_rows": tally.revert_rows,
        "stopped": stopped.as_ref().map(describe_stop),
        "exit_code": exit as u8,
    });
    let summary_bytes = crate::report::summary_bytes(&summary);
    if let Err(e) = run_store.put_summary(&summary_bytes) {
        eprintln!("simbatch: {e}");
    }
    if unwritten.is_none() {
        if let Err(e) = crate::report::write_summary(&reports_dir, &summary_bytes) {
            unwritten = Some(e);
        }
    }

    if !req.quiet {
        let counts: Vec<String> = tally
            .outcomes
            .iter()
            .map(|(o, n)| format!("{o} {n}"))
            .collect();
        eprintln!(
            "simbatch: {run_id}: {} in {:.1}s; {} requests, {rate_limited} rate-limited",
            counts.join(", "),
            elapsed.as_secs_f64(),
            requests.values().sum::<u64>()
        );
        if unwritten.is_none() {
            eprintln!(
                "simbatch: reports in {}/ (results, failed, pending, revert, summary)",
                reports_dir.display()
            );
        }
    }
    if let Some(e) = &unwritten {
        eprintln!("simbatch: the changes are done but the reports could not be written: {e}; once there is room, `simbatch report {run_id}` writes them from the state store (the reports on disk are earlier ones, or none, never partial ones)");
    }
    if let Some(reason) = &stopped {
        eprintln!(
            "simbatch: stopped: {}; run the same command again to resume",
            describe_stop(reason)
        );
    } else if exit == ExitCode::Pending {
        eprintln!("simbatch: some changes are accepted but not yet confirmed; run the same command again to confirm them");
    }
    Ok(RunOutcome {
        exit: if unwritten.is_some() {
            ExitCode::ReportsUnwritten
        } else {
            exit
        },
        run_id: Some(run_id),
        summary: Some(summary),
        reports: Some(reports_dir),
    })
}

fn describe_stop(reason: &StopReason) -> String {
    match reason {
        StopReason::Auth { provider, message } => {
            format!("provider `{provider}` refused the credentials ({message})")
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
pub fn exit_code(stopped: Option<&StopReason>, tally: &crate::report::Tally) -> ExitCode {
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
