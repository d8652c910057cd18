//! `simbatch export --provider NAME -o FILE`: maps the command line onto [`crate::export`] and
//! reports what was written. Credentials come from the environment, as for `run`.

use crate::cli::{ExportArgs, GlobalArgs};
use crate::exit_code::ExitCode;
use crate::export::{export, ExportFilter};
use crate::job::JobFormat;
use crate::run::{build_lane, Credentials, LaneSettings};

pub fn run(global: &GlobalArgs, args: &ExportArgs) -> anyhow::Result<ExitCode> {
    let providers = crate::config::Providers::load(global.config.as_deref())?;
    let Some(config) = providers.get(&args.provider) else {
        let names: Vec<&str> = providers.names().collect();
        anyhow::bail!(
            "--provider `{}` is not configured (configured: {})",
            args.provider,
            names.join(", ")
        );
    };
    let format = args
        .format
        .or_else(|| JobFormat::from_path(&args.output))
        .unwrap_or(JobFormat::Csv);
    let lane = build_lane(
        config,
        &LaneSettings {
            rate: args.rate,
            concurrency: None,
            credentials: Credentials::Environment,
        },
    )?;
    let filter = ExportFilter {
        status: args.status.clone(),
        group: args.group.clone(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let policy = crate::provider::retry::RetryPolicy::default();
    let result = runtime.block_on(export(&lane, &filter, format, &args.output, &policy, |s| {
        tracing::info!(
            pages = s.pages,
            listed = s.listed,
            written = s.written,
            "listed a page"
        )
    }));
    match result {
        Ok(summary) => {
            if !global.quiet {
                eprintln!(
                    "simbatch: {} of {} SIMs of `{}` written to {} ({} pages, {} requests); add an `action` column to make it a job",
                    summary.written,
                    summary.listed,
                    args.provider,
                    args.output.display(),
                    summary.pages,
                    lane.http().requests()
                );
                if let (0, Some(wanted)) = (summary.written, &args.status) {
                    let seen: Vec<String> = summary
                        .statuses
                        .iter()
                        .map(|(s, n)| format!("{s} ({n})"))
                        .collect();
                    eprintln!(
                        "simbatch: no SIM of `{}` has status `{wanted}`; the statuses listed: {}",
                        args.provider,
                        if seen.is_empty() {
                            "none".into()
                        } else {
                            seen.join(", ")
                        }
                    );
                }
            }
            if global.json {
                println!(
                    "{}",
                    serde_json::json!({"provider": args.provider, "output": args.output.display().to_string(),
                        "pages": summary.pages, "listed": summary.listed, "written": summary.written})
                );
            }
            Ok(ExitCode::Success)
        }
        Err(e) => {
            let provider = e
                .chain()
                .find_map(|c| c.downcast_ref::<crate::provider::ProviderError>());
            eprintln!(
                "simbatch: export failed, {} was not written: {e:#}",
                args.output.display()
            );
            // The provider refused the credentials or kept failing after retries: exit 3, run
            // it again once the provider answers. Anything else (the file) is a usage error.
            match provider {
                Some(_) => Ok(ExitCode::Aborted),
                None => Err(e),
            }
        }
    }
}
