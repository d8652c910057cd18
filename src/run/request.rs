//! What a run is asked to do ([`RunRequest`], with the command line's defaults) and how it
//! ended ([`RunOutcome`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::anyhow;

use crate::defaults;
use crate::exit_code::ExitCode;
use crate::job::{JobFormat, ParseOptions};
use crate::pipeline::control::FailureLimit;
use crate::pipeline::schedule::Schedule;

/// Where credentials come from: the environment (the CLI), or given in code (the in-process
/// demo and library users talking to a sandbox).
#[derive(Clone)]
pub enum Credentials {
    Environment,
    /// Per provider name: a token, or `user:password` for an account that signs in with both.
    Given(BTreeMap<String, String>),
}

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
    /// Skip the confirmation a terminal asks before the first change (`--yes`).
    pub yes: bool,
    pub skip_invalid: bool,
    pub fresh: bool,
    /// Items per bulk request where a provider has bulk updates; `None` (`--no-bulk`): every
    /// row its own request.
    pub bulk_chunk: Option<usize>,
    /// Continue this run (`--resume RUN_ID`) rather than the one the job's bytes name.
    pub resume: Option<String>,
    pub results_format: Option<JobFormat>,
    pub credentials: Credentials,
    pub quiet: bool,
    /// How often the progress is printed when stderr is not a terminal.
    pub progress_interval: std::time::Duration,
    /// Install the two-stage Ctrl-C handler and ask on a terminal (the CLI does; a library
    /// caller may not want either).
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
            state: PathBuf::from(defaults::STATE_DIR),
            reports: None,
            rate: None,
            concurrency: None,
            max_attempts: defaults::MAX_ATTEMPTS,
            max_failures: None,
            preflight: true,
            wait: Some(defaults::WAIT_TIMEOUT),
            allow_irreversible: false,
            allow_account_change: false,
            yes: false,
            skip_invalid: false,
            fresh: false,
            resume: None,
            bulk_chunk: Some(crate::pipeline::bulk::DEFAULT_CHUNK),
            schedule: Schedule::default(),
            results_format: None,
            credentials: Credentials::Environment,
            quiet: false,
            progress_interval: crate::progress::DEFAULT_INTERVAL,
            handle_ctrl_c: false,
        }
    }

    /// The job's format: as given, else from its name, else CSV.
    pub fn job_format(&self) -> JobFormat {
        self.format
            .or_else(|| JobFormat::from_path(&self.job))
            .unwrap_or(JobFormat::Csv)
    }
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
    /// A run that ended before it started (nothing was sent).
    pub fn early(exit: ExitCode) -> RunOutcome {
        RunOutcome {
            exit,
            run_id: None,
            summary: None,
            reports: None,
        }
    }

    /// A state store that cannot be used: its message, and exit 4.
    pub fn store_failed(e: crate::store::StoreError) -> RunOutcome {
        eprintln!("simbatch: {e}");
        RunOutcome::early(ExitCode::StateStore)
    }
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
