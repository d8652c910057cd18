//! `simbatch run JOB`: maps the command line onto a [`RunRequest`] and runs it (see `run`).

use crate::cli::{GlobalArgs, RunArgs};
use crate::exit_code::ExitCode;
use crate::pipeline::schedule::Schedule;
use crate::run::{parse_max_failures, run_job, Credentials, RunRequest};

use super::validate::parse_options;

pub fn run(global: &GlobalArgs, args: &RunArgs) -> anyhow::Result<ExitCode> {
    let parse = parse_options(global, &args.input)?;
    let request = RunRequest {
        job: args.job.clone(),
        format: args.input.format,
        parse,
        state: global.state.clone(),
        reports: global.reports.clone(),
        rate: args.rate,
        concurrency: args.concurrency.map(|c| c as usize),
        max_attempts: args.max_attempts,
        max_failures: args
            .max_failures
            .as_deref()
            .map(parse_max_failures)
            .transpose()?,
        preflight: !args.no_preflight,
        wait: (!args.no_wait).then_some(args.wait_timeout),
        allow_irreversible: args.allow_irreversible,
        allow_account_change: args.allow_account_change,
        yes: args.yes,
        skip_invalid: args.skip_invalid,
        fresh: args.fresh,
        resume: args.resume.clone(),
        bulk_chunk: args.bulk.chunk(),
        results_format: args.report_format,
        credentials: Credentials::Environment,
        quiet: global.quiet,
        progress_interval: args.progress_interval,
        handle_ctrl_c: true,
        schedule: Schedule {
            window: args.window,
            zone: args.tz,
            until: args.until,
        },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(run_job(request))?;
    if global.json {
        if let Some(summary) = &outcome.summary {
            println!("{}", serde_json::to_string_pretty(summary)?);
        }
    }
    Ok(outcome.exit)
}
