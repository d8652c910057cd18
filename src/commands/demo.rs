//! `simbatch demo`: the two-minute tour. Starts the sandbox in-process with its limits in their
//! documented shape but scaled up (so thousands of rows take seconds), runs `jobs/demo.csv`
//! with the progress display, writes the reports, then writes and runs the revert job — all
//! against loopback, with throwaway credentials, leaving the reports on disk to look at.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::cli::{DemoArgs, GlobalArgs};
use crate::config::{Providers, Tuning};
use crate::exit_code::ExitCode;
use crate::job::{IdStrictness, ParseOptions, ProviderKind};
use crate::provider::registry::provider_of;
use crate::run::{run_job, Credentials, RunRequest};
use crate::sandbox::{LimitMode, SandboxConfig};

/// Where the demo keeps its state and reports (wiped and rewritten by each demo).
const DEMO_STATE: &str = ".simbatch-demo";
const DEMO_REPORTS: &str = "reports/demo";
const DEMO_REVERT_REPORTS: &str = "reports/demo-revert";

/// Providers pointed at the in-process sandbox, paced for its scaled limits.
fn providers(base: &str, scale: f64) -> Providers {
    let mut providers = Providers::default();
    providers.point_at_sandbox(&url::Url::parse(base).expect("sandbox URL"));
    for kind in ProviderKind::ALL {
        let mut config = providers
            .get(kind.name())
            .expect("default providers")
            .clone();
        // The documented limits times `scale`, as the client would be configured for them.
        let limits = provider_of(kind).documented_limits();
        config.tuning = Tuning {
            rate: limits.rate.map(|(rate, _)| rate * scale),
            max_in_flight: limits.max_in_flight.map(|n| (n as f64 * scale) as usize),
            // An in-flight cap at `scale` times allows more workers than the default.
            concurrency: limits.max_in_flight.map(|_| 256),
        };
        providers.insert(config);
    }
    providers
}

fn wipe(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    Ok(())
}

pub fn run(global: &GlobalArgs, args: &DemoArgs) -> anyhow::Result<ExitCode> {
    if !args.job.is_file() {
        bail!(
            "{} not found: run the demo from the simbatch source tree (it uses the bundled jobs/)",
            args.job.display()
        );
    }
    if !(args.scale.is_finite() && args.scale > 0.0) {
        bail!("--scale must be positive");
    }
    wipe(Path::new(DEMO_STATE))?;
    wipe(Path::new(DEMO_REPORTS))?;
    wipe(Path::new(DEMO_REVERT_REPORTS))?;

    // The sandbox lives on its own runtime thread, as a separate service would.
    let sandbox_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let config = SandboxConfig {
        sims: 2_000,
        limits: LimitMode::Scaled(args.scale),
        ..SandboxConfig::default()
    };
    let sandbox = sandbox_runtime.block_on(crate::sandbox::bind(
        "127.0.0.1:0".parse().expect("address"),
        config,
    ))?;
    let base = sandbox.base_url();
    eprintln!(
        "simbatch demo: sandbox at {base} (emnify, Twilio, Telnyx stand-ins; limits in their documented shape times {}, so this takes seconds)",
        args.scale
    );

    let credentials: BTreeMap<String, String> = [
        ("emnify".to_string(), "demo-application-token".to_string()),
        (
            "twilio".to_string(),
            "AC00000000000000000000000000000001:demo-auth-token".to_string(),
        ),
        ("telnyx".to_string(), "demo-api-key".to_string()),
    ]
    .into();
    let parse = ParseOptions {
        strictness: IdStrictness::Strict,
        default_provider: None,
        providers: providers(&base, args.scale),
    };
    let request = |job: PathBuf, reports: &str| RunRequest {
        state: PathBuf::from(DEMO_STATE),
        reports: Some(PathBuf::from(reports)),
        credentials: Credentials::Given(credentials.clone()),
        // Against its own throwaway sandbox; the demo's profile-delete rows are there to be
        // refused by pre-flight (the profiles are enabled).
        allow_irreversible: true,
        quiet: global.quiet,
        handle_ctrl_c: true,
        ..RunRequest::new(job, parse.clone())
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;

    eprintln!(
        "\n== 1. {}: suspensions, standby, group moves, registrations and eSIM profile changes",
        args.job.display()
    );
    let first = runtime.block_on(run_job(request(args.job.clone(), DEMO_REPORTS)))?;
    if first.reports.is_none() {
        bail!("the demo run did not start (see above)");
    }
    let revert_job = PathBuf::from(DEMO_REPORTS).join("revert.csv");
    eprintln!(
        "\n== 2. {}: the job that restores every SIM the first run changed",
        revert_job.display()
    );
    let second = runtime.block_on(run_job(request(revert_job.clone(), DEMO_REVERT_REPORTS)))?;

    let journal = sandbox.shared.journal.entries().len();
    sandbox_runtime.block_on(sandbox.shutdown());
    eprintln!(
        "\nsimbatch demo: done. The sandbox applied {journal} changes in all. Look at:\n  {DEMO_REPORTS}/results.csv   one row per job row: outcome, reason, before/after\n  {DEMO_REPORTS}/summary.json  counts, requests, latency\n  {DEMO_REPORTS}/failed.csv    the rows pre-flight refused on purpose (forbidden transitions), as a job file\n  {DEMO_REPORTS}/revert.csv    the revert job that step 2 ran\n  {DEMO_REVERT_REPORTS}/       its reports"
    );
    // The demo job contains rows that must fail pre-flight (that is part of the tour): the demo
    // succeeded when both runs finished without a stop, pending or unknown row.
    let clean = |o: &crate::run::RunOutcome| {
        matches!(o.exit, ExitCode::Success | ExitCode::RowsFailed)
            && o.summary.as_ref().is_some_and(|s| {
                s["outcomes"].get("unknown").is_none() && s["outcomes"].get("pending").is_none()
            })
    };
    Ok(if clean(&first) && clean(&second) {
        ExitCode::Success
    } else {
        ExitCode::RowsFailed
    })
}
