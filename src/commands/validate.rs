//! `simbatch validate JOB...`: checks job files in one streaming pass each and prints, per
//! file, the row counts per provider and action, then every problem as `FILE:LINE: message`.

use std::io::Write;

use crate::cli::{GlobalArgs, JobInputArgs, ValidateArgs};
use crate::config::Providers;
use crate::exit_code::ExitCode;
use crate::job::{validate_file, FileValidation, IdStrictness, ParseOptions};

/// Builds parse options from the shared job-input flags and the provider configuration.
pub fn parse_options(global: &GlobalArgs, input: &JobInputArgs) -> anyhow::Result<ParseOptions> {
    let providers = Providers::load(global.config.as_deref())?;
    if let Some(name) = &input.provider {
        if providers.get(name).is_none() {
            let names: Vec<&str> = providers.names().collect();
            anyhow::bail!(
                "--provider `{name}` is not configured (configured: {})",
                names.join(", ")
            );
        }
    }
    Ok(ParseOptions {
        strictness: if input.lenient_ids {
            IdStrictness::Lenient
        } else {
            IdStrictness::Strict
        },
        default_provider: input.provider.clone(),
        providers,
    })
}

pub fn run(global: &GlobalArgs, args: &ValidateArgs) -> anyhow::Result<ExitCode> {
    let options = parse_options(global, &args.input)?;
    let results: Vec<FileValidation> = args
        .jobs
        .iter()
        .map(|path| validate_file(path, args.input.format, &options))
        .collect();
    let all_valid = results.iter().all(FileValidation::is_valid);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if global.json {
        let summaries: Vec<_> = results.iter().map(FileValidation::summary).collect();
        serde_json::to_writer_pretty(
            &mut out,
            &serde_json::json!({ "valid": all_valid, "files": summaries }),
        )?;
        writeln!(out)?;
    } else {
        for result in &results {
            print_human(&mut out, result, global.quiet)?;
        }
    }
    Ok(if all_valid {
        ExitCode::Success
    } else {
        ExitCode::Usage
    })
}

fn print_human(out: &mut impl Write, result: &FileValidation, quiet: bool) -> std::io::Result<()> {
    let path = &result.path;
    if !quiet && !result.unreadable {
        writeln!(
            out,
            "{path}: {} valid rows, {} invalid",
            result.valid_rows, result.invalid_rows
        )?;
        if !result.counts.is_empty() {
            writeln!(out, "  {:<12} {:<18} {:>9}", "provider", "action", "rows")?;
            for ((provider, action), rows) in &result.counts {
                writeln!(out, "  {provider:<12} {:<18} {rows:>9}", action.name())?;
            }
        }
    }
    for diag in result.diagnostics.sorted() {
        if quiet && diag.severity == crate::job::Severity::Warning {
            continue;
        }
        writeln!(out, "{}", diag.display(path))?;
    }
    let (more_errors, more_warnings) = result.diagnostics.omitted();
    if more_errors + more_warnings > 0 {
        writeln!(
            out,
            "{path}: ... and {more_errors} more errors, {more_warnings} more warnings not shown"
        )?;
    }
    let errors = result.diagnostics.error_count();
    let warnings = result.diagnostics.warning_count();
    if errors > 0 {
        writeln!(out, "{path}: INVALID: {errors} errors, {warnings} warnings; nothing will be sent until they are fixed")?;
    } else if !quiet {
        writeln!(out, "{path}: valid ({warnings} warnings)")?;
    }
    Ok(())
}
