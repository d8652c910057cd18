//! Command-line structure (clap derive) and the bounds of its values: parsing turns into these
//! structs, and `commands` turns them into work. Every number has a bound, so that an absurd
//! value is a usage error (exit 2) naming the option, never a panic later.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::job::JobFormat;

/// A duration of at most `limit` (humantime syntax: `90s`, `10m`, `2h`).
fn duration_at_most(text: &str, limit: std::time::Duration) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if d > limit {
        return Err(format!(
            "`{text}` is longer than the {} allowed",
            humantime::format_duration(limit)
        ));
    }
    Ok(d)
}

fn parse_wait_timeout(text: &str) -> Result<std::time::Duration, String> {
    duration_at_most(text, std::time::Duration::from_secs(7 * 24 * 3600))
}

/// `--progress-interval`: at least a second, at most a day.
fn progress_interval(text: &str) -> Result<std::time::Duration, String> {
    let d = parse_day_at_most(text)?;
    if d < std::time::Duration::from_secs(1) {
        return Err(format!("`{text}` is shorter than a second"));
    }
    Ok(d)
}

fn parse_day_at_most(text: &str) -> Result<std::time::Duration, String> {
    duration_at_most(text, std::time::Duration::from_secs(24 * 3600))
}

/// `demo --scale K`: more than 0, at most 10,000.
fn parse_scale(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(k) if k.is_finite() && k > 0.0 && k <= 10_000.0 => Ok(k),
        _ => Err(format!(
            "`{text}` is not a scale: give a number above 0 and at most 10000"
        )),
    }
}

/// Shown under `simbatch --help`: what the exit code says, where credentials come from.
const AFTER_HELP: &str = "\
Examples:
  simbatch demo                                   the bundled job against the built-in sandbox
  simbatch validate jobs/mass-suspension.csv      check a job; send nothing
  simbatch plan jobs/mass-suspension.csv          what it would change, read from the providers
  simbatch run jobs/mass-suspension.csv           run it (ask first on a terminal; --yes skips)
  simbatch status                                 the runs in .simbatch and how to resume each

Exit codes:
  0  every row succeeded or was skipped
  1  finished; some rows failed, unknown or blocked (reports/<run>/failed.csv retries them)
  2  usage, configuration or job-file error; nothing was sent
  3  aborted (credentials refused, provider unreachable, --max-failures, Ctrl-C, --until,
     the --window closed); resumable
  4  state store busy (another simbatch) or unreadable
  5  dispatch finished; some changes still await confirmation; run again to confirm
  6  changes finished but the reports could not be written; `simbatch report RUN` rewrites them

Credentials (read only from the environment; simbatch.toml may name other variables):
  emnify   EMNIFY_APPLICATION_TOKEN
  twilio   TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN
  telnyx   TELNYX_API_KEY";

#[derive(Debug, Parser)]
#[command(
    name = "simbatch",
    version,
    about = "Bulk SIM and eSIM lifecycle changes against emnify, Twilio Super SIM and Telnyx: rate-limited, resumable, audited",
    after_help = AFTER_HELP,
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Provider configuration file [default: simbatch.toml if present]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print only errors
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Print a machine-readable summary on stdout
    #[arg(long, global = true)]
    pub json: bool,
    /// More logging (repeat for more); RUST_LOG also works
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// State directory (the checkpoint store)
    #[arg(long, global = true, value_name = "DIR", default_value = crate::defaults::STATE_DIR)]
    pub state: PathBuf,
    /// Reports directory [default: reports/<run-id>/]
    #[arg(long, global = true, value_name = "DIR")]
    pub reports: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check job files; send nothing. Exit 0 when valid, 2 when not.
    #[command(
        after_help = "Examples:\n  simbatch validate jobs/*.csv\n  simbatch validate --lenient-ids --provider emnify sims.csv"
    )]
    Validate(ValidateArgs),
    /// Read current state and show what a job would change; send no change
    #[command(
        after_help = "Examples:\n  simbatch plan jobs/mass-suspension.csv\n  simbatch --json plan job.csv > plan.json"
    )]
    Plan(PlanArgs),
    /// Run (or resume) a job: validate, pre-flight, change, confirm, report
    #[command(
        after_help = "Examples:\n  simbatch run --yes jobs/mass-suspension.csv\n  simbatch run --window 22:00-05:00 --tz Europe/Berlin jobs/scheduled-reactivation.csv\n  simbatch run --allow-irreversible delete.csv\n  simbatch run --resume RUN_ID job.csv            continue a named run (see `simbatch status`)\n  simbatch run reports/RUN_ID/failed.csv          try the rows that did not succeed again\n\nExit codes: see `simbatch --help`."
    )]
    Run(RunArgs),
    /// List the runs in the state store, or show one run's counts
    #[command(after_help = "Examples:\n  simbatch status\n  simbatch status RUN_ID")]
    Status(StatusArgs),
    /// (Re)write a run's reports from the state store alone
    #[command(after_help = "Example:\n  simbatch report RUN_ID")]
    Report(ReportArgs),
    /// Write the job that restores what a run changed
    #[command(
        after_help = "Example:\n  simbatch revert RUN_ID -o undo.csv && simbatch run undo.csv"
    )]
    Revert(RevertArgs),
    /// List a provider's SIM inventory as CSV/JSONL (add an `action` column to make it a job)
    #[command(after_help = "Example:\n  simbatch export --provider emnify -o emnify.csv")]
    Export(ExportArgs),
    /// Run a bundled job end to end against an in-process sandbox, then revert it
    #[command(after_help = "Example:\n  simbatch demo")]
    Demo(DemoArgs),
    /// Serve the built-in provider sandbox (emnify, Twilio, Telnyx stand-ins) on one port
    #[command(
        after_help = "Example:\n  simbatch sandbox --listen 127.0.0.1:8080 --limits scaled:20"
    )]
    Sandbox(SandboxArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) on stdout
    #[command(
        after_help = "Example:\n  simbatch completions bash > ~/.local/share/bash-completion/completions/simbatch"
    )]
    Completions(CompletionsArgs),
    /// Print the manual page (roff) on stdout
    #[command(after_help = "Example:\n  simbatch manpage > simbatch.1 && man ./simbatch.1")]
    Manpage,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// How job files are read (shared by every command that reads one).
#[derive(Debug, Args, Clone)]
pub struct JobInputArgs {
    /// Job file format [default: from the extension: .csv, .jsonl, .ndjson]
    #[arg(long, value_enum)]
    pub format: Option<JobFormat>,
    /// Provider name for rows whose `provider` is blank or missing
    #[arg(long, value_name = "NAME")]
    pub provider: Option<String>,
    /// Accept ICCIDs/EIDs with wrong check digits, with a warning
    #[arg(long)]
    pub lenient_ids: bool,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Job files (CSV or JSONL)
    #[arg(required = true, value_name = "JOB")]
    pub jobs: Vec<PathBuf>,
    #[command(flatten)]
    pub input: JobInputArgs,
}

#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// Address to listen on (port 0 picks a free one; printed as the first line)
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// SIMs per provider (Twilio and Telnyx have as many again, not yet registered)
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=5_000_000))]
    pub sims: u32,
    /// Rate limits: documented, off, or scaled:K (every documented limit times K)
    #[arg(long, default_value = "documented")]
    pub limits: crate::sandbox::LimitMode,
    /// Added latency per request: MS or MS±JITTER (also MS+-JITTER)
    #[arg(long, value_name = "MS[±JITTER]")]
    pub latency: Option<crate::sandbox::Latency>,
    /// Share of requests answered 5xx without doing anything (0.1 or 10%)
    #[arg(long, value_name = "P", value_parser = crate::sandbox::settings::parse_rate, default_value = "0")]
    pub error_rate: f64,
    /// Share of requests that hang past the client timeout, then drop the connection
    #[arg(long, value_name = "P", value_parser = crate::sandbox::settings::parse_rate, default_value = "0")]
    pub timeout_rate: f64,
    /// Share of requests whose connection is dropped (half after the change was applied)
    #[arg(long, value_name = "P", value_parser = crate::sandbox::settings::parse_rate, default_value = "0")]
    pub reset_rate: f64,
    /// Share of asynchronous operations that end failed
    #[arg(long, value_name = "P", value_parser = crate::sandbox::settings::parse_rate, default_value = "0")]
    pub fail_async: f64,
    /// Share of Telnyx SIM card actions that end `interrupted` (the SIM keeps its status)
    #[arg(long, value_name = "P", value_parser = crate::sandbox::settings::parse_rate, default_value = "0")]
    pub interrupt_async: f64,
    /// How long asynchronous changes take to settle (at most a day)
    #[arg(long, default_value = "200ms", value_parser = parse_day_at_most)]
    pub async_delay: std::time::Duration,
    /// Answer 429 without `Retry-After` or rate-window headers (as Twilio and emnify may)
    #[arg(long)]
    pub no_retry_after: bool,
    /// How long a hanging request hangs before its connection is dropped (at most a day)
    #[arg(long, default_value = "120s", value_parser = parse_day_at_most)]
    pub hang: std::time::Duration,
    /// Accept only this credential (emnify application token, Twilio auth token, Telnyx key)
    #[arg(long, value_name = "TOKEN")]
    pub require_token: Option<String>,
    /// Lifetime of emnify auth tokens (at most a day)
    #[arg(long, default_value = "240m", value_parser = parse_day_at_most)]
    pub token_ttl: std::time::Duration,
    /// Telnyx SIMs 91-94 of every hundred in statuses Telnyx sets itself (data_limit_exceeded,
    /// unauthorized_imei, blocked, abolished)
    #[arg(long)]
    pub system_statuses: bool,
    /// Next-page links carry another host than the request's, as behind an API gateway
    #[arg(long)]
    pub foreign_links: bool,
    /// emnify bulk requests: at most this many items in one (more is answered 422)
    #[arg(long, default_value_t = 2_000, value_name = "N")]
    pub bulk_max_items: usize,
    /// emnify bulk requests with bad items apply the good ones (default: one bad item fails
    /// the whole request)
    #[arg(long)]
    pub bulk_partial: bool,
    /// emnify endpoint ids whose updates are refused with 422, single or in bulk
    #[arg(long, value_delimiter = ',', value_name = "IDS")]
    pub refuse_endpoint_updates: Vec<u64>,
    /// Seed for the fault dice (the same seed repeats the same faults for the same requests)
    #[arg(long, default_value_t = 0x5EED)]
    pub seed: u64,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The job file (CSV or JSONL)
    #[arg(value_name = "JOB")]
    pub job: PathBuf,
    #[command(flatten)]
    pub input: JobInputArgs,
    /// Requests per second per provider (overrides the documented limits)
    #[arg(long, value_name = "N", value_parser = crate::config::parse_rate)]
    pub rate: Option<f64>,
    /// Rows in flight at once per provider [default: from the provider's limits, at least 32]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub concurrency: Option<u32>,
    /// Attempts per request, the first included
    #[arg(long, value_name = "N", default_value_t = crate::defaults::MAX_ATTEMPTS, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_attempts: u32,
    /// Stop dispatching after this many failures, or this share (N%), once 20 rows have finished
    #[arg(long, value_name = "N|P%")]
    pub max_failures: Option<String>,
    /// Do not refuse forbidden transitions locally; let the provider answer
    #[arg(long)]
    pub no_preflight: bool,
    /// Do not wait for asynchronous changes to be confirmed (they end `pending`)
    #[arg(long)]
    pub no_wait: bool,
    /// How long to wait for an asynchronous change to be confirmed (at most 7 days)
    #[arg(long, value_name = "DUR", default_value = crate::defaults::WAIT_TIMEOUT_TEXT, value_parser = parse_wait_timeout)]
    pub wait_timeout: std::time::Duration,
    /// Skip ordinary confirmations (never implies --allow-irreversible)
    #[arg(long)]
    pub yes: bool,
    /// Allow irreversible actions (delete, profile-delete)
    #[arg(long)]
    pub allow_irreversible: bool,
    /// Resume a run although a provider name now points at another account (base_url or
    /// credential variables) than the run started on
    #[arg(long)]
    pub allow_account_change: bool,
    /// Run the valid rows; list invalid ones in the reports as `invalid`
    #[arg(long)]
    pub skip_invalid: bool,
    /// Start a new run even if this job was run before
    #[arg(long, conflicts_with = "resume")]
    pub fresh: bool,
    #[command(flatten)]
    pub bulk: BulkArgs,
    /// How often progress is printed (one line per provider) when stderr is not a terminal
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = progress_interval)]
    pub progress_interval: std::time::Duration,
    /// Continue this run (its id, as `status` lists it and every "to resume" hint prints it);
    /// the job file must be the one it was made from
    #[arg(long, value_name = "RUN_ID")]
    pub resume: Option<String>,
    /// Format of the results file [default: that of the job]
    #[arg(long, value_enum)]
    pub report_format: Option<JobFormat>,
    /// Only send inside this daily window (HH:MM-HH:MM, may cross midnight); wait for it to
    /// open, stop at its close (exit 3, resumable)
    #[arg(long, value_name = "HH:MM-HH:MM", value_parser = crate::pipeline::schedule::parse_window)]
    pub window: Option<crate::pipeline::schedule::Window>,
    /// Time zone of --window (IANA name, e.g. Europe/Berlin) [default: local time]
    #[arg(long, value_name = "ZONE", requires = "window", value_parser = crate::pipeline::schedule::parse_zone)]
    pub tz: Option<crate::pipeline::schedule::Zone>,
    /// Stop sending at this time (RFC 3339, or a duration from now such as 45m); exit 3, resumable
    #[arg(long, value_name = "TIME", value_parser = crate::pipeline::schedule::parse_until_from_now)]
    pub until: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The job file (CSV or JSONL)
    #[arg(value_name = "JOB")]
    pub job: PathBuf,
    #[command(flatten)]
    pub input: JobInputArgs,
    /// Write the per-row plan (CSV) here
    #[arg(short, long, value_name = "PLAN.csv")]
    pub output: Option<PathBuf>,
    /// Requests per second per provider (overrides the documented limits)
    #[arg(long, value_name = "N", value_parser = crate::config::parse_rate)]
    pub rate: Option<f64>,
    #[command(flatten)]
    pub bulk: BulkArgs,
}

/// Whether and how rows go in bulk requests where a provider has them (`run` and `plan`).
#[derive(Debug, Args)]
pub struct BulkArgs {
    /// Send every row on its own, even where the provider has bulk requests
    #[arg(long, conflicts_with = "bulk_chunk")]
    pub no_bulk: bool,
    /// Items per bulk request (emnify device updates and deletes) [default: 1000]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub bulk_chunk: Option<u32>,
}

impl BulkArgs {
    /// Items per bulk request, or `None` (`--no-bulk`): every row its own request.
    pub fn chunk(&self) -> Option<usize> {
        (!self.no_bulk).then(|| {
            self.bulk_chunk
                .map_or(crate::pipeline::bulk::DEFAULT_CHUNK, |n| n as usize)
        })
    }
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// A run id (or a unique prefix of one)
    pub run: Option<String>,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A run id (or a unique prefix of one)
    pub run: String,
}

#[derive(Debug, Args)]
pub struct RevertArgs {
    /// A run id (or a unique prefix of one)
    pub run: String,
    /// Where to write the revert job (CSV)
    #[arg(short, long, value_name = "JOB")]
    pub output: PathBuf,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The configured provider to list
    #[arg(long, value_name = "NAME")]
    pub provider: String,
    /// Only SIMs in this status (the provider's wording: Activated, active, enabled…)
    #[arg(long, value_name = "S")]
    pub status: Option<String>,
    /// Only SIMs in this emnify organisation, Twilio Fleet or Telnyx SIM card group
    #[arg(long, visible_aliases = ["fleet", "org"], value_name = "ID")]
    pub group: Option<String>,
    /// Where to write the inventory
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Output format [default: from the extension of FILE, else CSV]
    #[arg(long, value_enum)]
    pub format: Option<JobFormat>,
    /// Requests per second (overrides the documented limits)
    #[arg(long, value_name = "N", value_parser = crate::config::parse_rate)]
    pub rate: Option<f64>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The job to demonstrate
    #[arg(long, default_value = "jobs/demo.csv")]
    pub job: PathBuf,
    /// Sandbox limits: the documented shape times K (so the demo takes seconds, not hours)
    #[arg(long, default_value_t = 50.0, value_parser = parse_scale)]
    pub scale: f64,
}
