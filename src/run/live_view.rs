//! The live view of a run that `simbatch status` shows from another terminal while the run
//! holds the state store's lock: the run replaces `<state>/live/<run id>.json` every second
//! (written beside it, then renamed over it, so a reader never sees half a file) and removes
//! it when it ends. Reading it takes no lock and cannot disturb the run; a file left by a run
//! that was killed is recognised by its process being gone.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One lane of a live run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LiveLane {
    pub name: String,
    pub total: u64,
    pub finished: u64,
    pub confirming: u64,
    pub rate_limited: u64,
    pub retried: u64,
    pub eta_s: Option<u64>,
    /// The console's line for it.
    pub line: String,
}

/// A run as it goes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LiveView {
    pub run_id: String,
    pub pid: u32,
    pub job: String,
    pub updated_at: DateTime<Utc>,
    pub rows: u64,
    pub finished: u64,
    pub outcomes: BTreeMap<String, u64>,
    pub lanes: Vec<LiveLane>,
    pub eta_s: Option<u64>,
    pub top_failure_reasons: Vec<(String, u64)>,
    /// What the whole run waits for (its window), if anything.
    pub note: Option<String>,
}

fn dir(state: &Path) -> PathBuf {
    state.join("live")
}

fn path(state: &Path, run_id: &str) -> PathBuf {
    dir(state).join(format!("{run_id}.json"))
}

impl LiveView {
    /// Replaces the run's live file with this view.
    pub fn write(&self, state: &Path) -> std::io::Result<()> {
        let dir = dir(state);
        std::fs::create_dir_all(&dir)?;
        let mut file = tempfile::NamedTempFile::new_in(&dir)?;
        file.write_all(&serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?)?;
        file.persist(path(state, &self.run_id))
            .map(drop)
            .map_err(|e| e.error)
    }

    /// Whether the process that writes it is still running.
    pub fn alive(&self) -> bool {
        // SAFETY: signal 0 only checks that the process exists.
        #[cfg(unix)]
        return unsafe { libc::kill(self.pid as libc::pid_t, 0) } == 0;
        #[cfg(not(unix))]
        return true;
    }

    /// The human view: a heading line, one line per lane, the total, the top reasons.
    pub fn lines(&self) -> Vec<String> {
        let outcomes: Vec<String> = self
            .outcomes
            .iter()
            .map(|(o, n)| format!("{o} {}", crate::pipeline::estimate::thousands(*n)))
            .collect();
        let age = (Utc::now() - self.updated_at).num_seconds().max(0);
        let mut lines = vec![format!(
            "{}  running (pid {}, as of {age} s ago)  {}/{} rows  {}",
            self.run_id,
            self.pid,
            crate::pipeline::estimate::thousands(self.finished),
            crate::pipeline::estimate::thousands(self.rows),
            if outcomes.is_empty() {
                "nothing finished yet".to_string()
            } else {
                outcomes.join(", ")
            }
        )];
        lines.extend(self.lanes.iter().map(|l| format!("  {}", l.line)));
        let eta = self.eta_s.map_or("ETA –".to_string(), |s| {
            format!(
                "ETA {}",
                crate::pipeline::estimate::about(std::time::Duration::from_secs(s))
            )
        });
        lines.push(format!(
            "  total: {eta}{}",
            self.note
                .as_deref()
                .map_or(String::new(), |n| format!("; {n}"))
        ));
        if !self.top_failure_reasons.is_empty() {
            lines.push("  why rows did not succeed so far:".into());
            for (reason, n) in &self.top_failure_reasons {
                lines.push(format!("  {n:>7} × {reason}"));
            }
        }
        lines
    }
}

/// Removes the run's live file (the run ended).
pub fn remove(state: &Path, run_id: &str) {
    let _ = std::fs::remove_file(path(state, run_id));
}

/// The live views of running runs in `state`, by run id.
pub fn read_all(state: &Path) -> Vec<LiveView> {
    let Ok(entries) = std::fs::read_dir(dir(state)) else {
        return Vec::new();
    };
    let mut views: Vec<LiveView> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|bytes| serde_json::from_slice::<LiveView>(&bytes).ok())
        .filter(LiveView::alive)
        .collect();
    views.sort_by(|a, b| a.run_id.cmp(&b.run_id));
    views
}
