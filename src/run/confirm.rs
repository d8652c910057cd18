//! Before the first change (SPEC 3.4): the run says which account it is about to act on and
//! how many rows per provider and action, and on a terminal asks before it goes on (`--yes`
//! skips the question; it never implies `--allow-irreversible`).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::Arc;

use super::request::{RunOutcome, RunRequest};
use super::state::Opened;
use crate::exit_code::ExitCode;
use crate::job::FileValidation;
use crate::pipeline::lane::Lane;

/// Prints the banner; on a terminal, asks. The early outcome when the operator says no.
pub fn announce_and_ask(
    req: &RunRequest,
    opened: &Opened,
    validation: &FileValidation,
    lanes: &BTreeMap<String, Arc<Lane>>,
) -> anyhow::Result<Option<RunOutcome>> {
    if !req.quiet {
        eprintln!(
            "simbatch: {} run {}: {} rows from {} (state {}, reports {})",
            if opened.resumed {
                "resuming"
            } else {
                "starting"
            },
            opened.run_id,
            validation.valid_rows,
            validation.path,
            req.state.display(),
            opened.reports_dir.display()
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
            let actions = validation.counts.keys().filter(|(p, _)| *p == lane.name);
            for note in actions.filter_map(|(_, a)| lane.provider().action_note(*a)) {
                eprintln!("    note: {note}");
            }
        }
    }
    let asks = req.handle_ctrl_c
        && !req.yes
        && std::io::stdin().is_terminal()
        && std::io::stderr().is_terminal();
    if asks && !confirmed()? {
        eprintln!(
            "simbatch: not confirmed; nothing was sent (run {} stays, to be resumed)",
            opened.run_id
        );
        return Ok(Some(RunOutcome::early(ExitCode::Usage)));
    }
    Ok(None)
}

fn confirmed() -> anyhow::Result<bool> {
    eprint!("Send these changes? Type y to go on (or pass --yes): ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}
