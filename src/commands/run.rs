//! `simbatch run JOB`: validate the whole file, refuse irreversible actions unless allowed,
//! resolve credentials from the environment, open the state store, print the banner, run the
//! engine with live progress and two-stage Ctrl-C, write the reports, and exit per SPEC 5.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use chrono::Utc;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::validate::parse_options;
use crate::cli::{GlobalArgs, RunArgs};
use crate::config::{CredentialEnv, ProviderConfig};
use crate::exit_code::ExitCode;
use crate::job::{validate_file, Action, FileValidation, JobFormat, ProviderKind};
use crate::pipeline::engine::{Engine, FailureLimit, Live, RunOptions, Stop, StopReason};
use crate::pipeline::lane::{Client, Lane};
use crate::pipeline::retry::RetryPolicy;
use crate::provider::http::{Http, REQUEST_TIMEOUT};
use crate::provider::limiter::{LaneLimits, RateGate};
use crate::store::{CheckpointStore, Manifest, Outcome, SledStore, SCHEMA_VERSION};

/// Default rows in flight per lane; the rate gate, not this, sets the pace.
pub const DEFAULT_CONCURRENCY: usize = 32;

/// `<file stem>-<first 8 hex of the SHA-256 of its bytes>` and the full hash.
pub fn run_id(job: &Path) -> anyhow::Result<(String, String)> {
    let mut file =
        std::fs::File::open(job).with_context(|| format!("cannot open {}", job.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let hash: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let stem = job.file_stem().and_then(|s| s.to_str()).unwrap_or("job");
    Ok((format!("{stem}-{}", &hash[..8]), hash))
}

fn parse_max_failures(raw: &str) -> anyhow::Result<FailureLimit> {
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

fn env_var(name: &str, provider: &str) -> anyhow::Result<String> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => Ok(v),
        _ => bail!("provider `{provider}`: set the environment variable {name} (credentials are read only from the environment)"),
    }
}

fn build_lane(config: &ProviderConfig, args: &RunArgs) -> anyhow::Result<Lane> {
    let mut limits = LaneLimits::documented(config.kind);
    if let Some(rate) = config.tuning.rate {
        limits = limits.with_rate(rate);
    }
    if let Some(cap) = config.tuning.max_in_flight {
        limits.max_in_flight = Some(cap);
    }
    if let Some(rate) = args.rate {
        if !(rate.is_finite() && rate > 0.0) {
            bail!("--rate must be a positive number of requests per second");
        }
        limits = limits.with_rate(rate);
    }
    let gate = Arc::new(RateGate::new(limits));
    let http = Http::new(&config.base_url, gate, REQUEST_TIMEOUT)
        .map_err(|e| anyhow!("provider `{}`: {e}", config.name))?;
    let client = match (&config.credentials, config.kind) {
        (CredentialEnv::Token(var), ProviderKind::Emnify) => Client::Emnify(
            crate::provider::emnify::Emnify::new(http, env_var(var, &config.name)?),
        ),
        (CredentialEnv::Token(var), ProviderKind::Telnyx) => Client::Telnyx(
            crate::provider::telnyx::Telnyx::new(http, env_var(var, &config.name)?),
        ),
        (CredentialEnv::Basic { username, password }, ProviderKind::Twilio) => {
            Client::Twilio(crate::provider::twilio::Twilio::new(
                http,
                env_var(username, &config.name)?,
                env_var(password, &config.name)?,
            ))
        }
        _ => bail!(
            "provider `{}`: credentials do not match its kind",
            config.name
        ),
    };
    Ok(Lane {
        name: config.name.clone(),
        kind: config.kind,
        client,
        concurrency: args
            .concurrency
            .map(|c| c as usize)
            .or(config.tuning.concurrency)
            // Under an in-flight cap (Twilio), twice as many workers as slots: a row's own work
            // around its request (checkpoint marker, parsing) then overlaps other rows' requests
            // and the cap stays full (measured: 111.6 ms per row with 100 workers and 100 ms
            // latency; 2x workers reach the cap's bound).
            .unwrap_or_else(|| {
                limits
                    .max_in_flight
                    .map_or(DEFAULT_CONCURRENCY, |cap| 2 * cap)
            }),
        snapshot: std::sync::Mutex::new(None),
    })
}

fn print_validation_errors(v: &FileValidation) {
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

pub fn run(global: &GlobalArgs, args: &RunArgs) -> anyhow::Result<ExitCode> {
    let parse = parse_options(global, &args.input)?;
    let max_failures = args
        .max_failures
        .as_deref()
        .map(parse_max_failures)
        .transpose()?;

    // 1. The whole file is checked before anything is sent.
    let validation = validate_file(&args.job, args.input.format, &parse);
    if !global.quiet {
        for d in validation
            .diagnostics
            .sorted()
            .iter()
            .filter(|d| d.severity == crate::job::Severity::Warning)
        {
            eprintln!("{}", d.display(&validation.path));
        }
    }
    if validation.unreadable || (!validation.is_valid() && !args.skip_invalid) {
        print_validation_errors(&validation);
        eprintln!("{}: not run: fix the errors above (or pass --skip-invalid to run the valid rows); nothing was sent", validation.path);
        return Ok(ExitCode::Usage);
    }
    if validation.valid_rows == 0 {
        print_validation_errors(&validation);
        eprintln!("{}: no valid rows; nothing was sent", validation.path);
        return Ok(ExitCode::Usage);
    }
    let irreversible: u64 = validation
        .counts
        .iter()
        .filter(|((_, a), _)| a.is_irreversible())
        .map(|(_, n)| n)
        .sum();
    if irreversible > 0 {
        if !args.allow_irreversible {
            eprintln!(
                "{}: {irreversible} rows are irreversible (delete, profile-delete); pass --allow-irreversible to run them. Nothing was sent.",
                validation.path
            );
            return Ok(ExitCode::Usage);
        }
        if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
            confirm_irreversible(irreversible)?;
        }
    }

    // 2. Lanes for the providers the job uses, credentials from the environment.
    let mut lanes = BTreeMap::new();
    for (provider, _) in validation.counts.keys() {
        if lanes.contains_key(provider) {
            continue;
        }
        let config = parse
            .providers
            .get(provider)
            .expect("validation checked provider names");
        lanes.insert(provider.clone(), Arc::new(build_lane(config, args)?));
    }

    // 3. The state store: resume or start.
    let (base_id, hash) = run_id(&args.job)?;
    let run_id = if args.fresh {
        format!("{base_id}-{}", Utc::now().format("%Y%m%d%H%M%S"))
    } else {
        base_id
    };
    let store = match SledStore::open(&global.state) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("simbatch: {e}");
            return Ok(ExitCode::StateStore);
        }
    };
    let run_store = match store.run(&run_id) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("simbatch: {e}");
            return Ok(ExitCode::StateStore);
        }
    };
    let resumed = match run_store.manifest() {
        Ok(Some(_)) => true,
        Ok(None) => false,
        Err(e) => {
            eprintln!("simbatch: {e}");
            return Ok(ExitCode::StateStore);
        }
    };
    let accounts: Vec<serde_json::Value> = lanes
        .values()
        .map(|l| {
            let c = parse.providers.get(&l.name).expect("configured");
            json!({"name": l.name, "kind": l.kind, "base_url": c.base_url.as_str()})
        })
        .collect();
    if !resumed {
        let manifest = Manifest {
            schema_version: SCHEMA_VERSION,
            run_id: run_id.clone(),
            job_path: args.job.display().to_string(),
            job_sha256: hash.clone(),
            rows: validation.valid_rows + validation.invalid_rows,
            created_at: Utc::now(),
            options: json!({
                "accounts": accounts,
                "rate": args.rate, "concurrency": args.concurrency, "max_attempts": args.max_attempts,
                "max_failures": args.max_failures, "preflight": !args.no_preflight, "wait": !args.no_wait,
                "wait_timeout_s": args.wait_timeout.as_secs(), "lenient_ids": args.input.lenient_ids,
                "skip_invalid": args.skip_invalid,
            }),
        };
        if let Err(e) = run_store.write_manifest(&manifest) {
            eprintln!("simbatch: {e}");
            return Ok(ExitCode::StateStore);
        }
    }
    let reports_dir = global
        .reports
        .clone()
        .unwrap_or_else(|| PathBuf::from("reports").join(&run_id));

    // 4. The banner: what is about to change, where.
    if !global.quiet {
        eprintln!(
            "simbatch: {} run {run_id}: {} rows from {} (state {}, reports {})",
            if resumed { "resuming" } else { "starting" },
            validation.valid_rows,
            validation.path,
            global.state.display(),
            reports_dir.display()
        );
        for lane in lanes.values() {
            let c = parse.providers.get(&lane.name).expect("configured");
            let actions: Vec<String> = validation
                .counts
                .iter()
                .filter(|((p, _), _)| *p == lane.name)
                .map(|((_, a), n)| format!("{a} {n}"))
                .collect();
            eprintln!(
                "  {} ({}, {}): {}",
                lane.name,
                lane.kind,
                c.base_url,
                actions.join(", ")
            );
        }
    }

    let options = RunOptions {
        policy: RetryPolicy {
            max_attempts: args.max_attempts,
            ..RetryPolicy::default()
        },
        preflight: !args.no_preflight,
        wait: (!args.no_wait).then_some(args.wait_timeout),
        max_failures,
        group_concurrency: 64,
    };
    let total = validation.valid_rows;
    let started_at = Utc::now();
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let run_store: Arc<dyn CheckpointStore> = Arc::new(run_store);
    let live = Arc::new(Live::default());
    let stop = Arc::new(Stop::default());
    let engine = Arc::new(Engine {
        job: args.job.clone(),
        format: args.input.format,
        parse: parse.clone(),
        lanes: lanes.clone(),
        store: run_store.clone(),
        options,
        live: live.clone(),
        stop: stop.clone(),
    });
    let progress = crate::progress::Progress::new(total, global.quiet);
    let stopped = runtime.block_on(async {
        let ctrl_c_stop = stop.clone();
        let ctrl_c_progress = progress.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                ctrl_c_progress.println("simbatch: interrupted: finishing requests in flight, then writing reports; press Ctrl-C again to exit at once (the run stays resumable)");
                ctrl_c_stop.request(StopReason::Interrupted);
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(ExitCode::Aborted as i32);
                }
            }
        });
        let bar = progress.clone();
        let counts = live.clone();
        engine.run(Box::new(move |_, _| bar.update(&counts))).await
    });
    progress.finish();
    drop(runtime);

    // 5. Reports from the store, then the exit code.
    let results_format = args.report_format.unwrap_or_else(|| {
        args.input
            .format
            .or_else(|| JobFormat::from_path(&args.job))
            .unwrap_or(JobFormat::Csv)
    });
    let (files, tally) = crate::report::write_rows(
        &reports_dir,
        &args.job,
        args.input.format,
        &parse,
        run_store.as_ref(),
        results_format,
    )?;
    let requests: BTreeMap<&str, u64> = lanes
        .values()
        .map(|l| (l.name.as_str(), l.http().requests()))
        .collect();
    let rate_limited: u64 = lanes.values().map(|l| l.http().gate.slowdowns()).sum();
    let elapsed = started.elapsed();
    let code = exit_code(stopped.as_ref(), &tally);
    let not_revertible: u64 = tally
        .per_action
        .iter()
        .filter(|(a, _)| a.is_irreversible() || matches!(a, Action::Register | Action::EuiccAudit))
        .map(|(_, o)| o.get(&Outcome::Succeeded).copied().unwrap_or(0))
        .sum();
    let summary = json!({
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "job": {"path": args.job.display().to_string(), "sha256": hash},
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
        "not_revertible": not_revertible,
        "stopped": stopped.as_ref().map(describe_stop),
        "exit_code": code as u8,
    });
    let summary_path = crate::report::write_summary(&files.dir, &summary)?;

    if global.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else if !global.quiet {
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
        eprintln!(
            "simbatch: reports: {} (summary {})",
            files.results.display(),
            summary_path.display()
        );
    }
    if let Some(reason) = &stopped {
        eprintln!(
            "simbatch: stopped: {}; run the same command again to resume",
            describe_stop(reason)
        );
    } else if code == ExitCode::Pending {
        eprintln!("simbatch: some changes are accepted but not yet confirmed; run the same command again to confirm them");
    }
    Ok(code)
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
    }
}

fn exit_code(stopped: Option<&StopReason>, tally: &crate::report::Tally) -> ExitCode {
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
