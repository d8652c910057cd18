//! Command-line structure (clap derive) and nothing else: parsing turns into these structs,
//! and `commands` turns them into work.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::job::JobFormat;

#[derive(Debug, Parser)]
#[command(
    name = "simbatch",
    version,
    about = "Bulk SIM and eSIM lifecycle changes against emnify, Twilio Super SIM and Telnyx: rate-limited, resumable, audited",
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
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check job files; send nothing. Exit 0 when valid, 2 when not.
    Validate(ValidateArgs),
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
