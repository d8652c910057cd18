//! The commit ledger: a small file beside the sled database that says, per run, how many
//! durable writes (commits) its tree holds. sled recovers from a damaged log by keeping what it
//! can, so a log that was deleted, emptied, zero-filled or cut short opens as an empty or
//! shorter database — a silent fresh start or a partial resume (SPEC 3.3 forbids both). Each
//! run's tree keeps its own count, written in the same atomic batch as every change; the ledger
//! is rewritten (temporary file, then rename) after each commit; on open, a run whose tree
//! holds fewer commits than the ledger recorded, or is missing, means committed progress is
//! gone: the directory is damaged (exit 4).
//!
//! The tree may be ahead of the ledger (a crash between the two writes); never behind.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::error::StoreError;

/// The ledger's file name in the state directory.
pub const LEDGER_FILE: &str = "ledger.json";

#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
struct LedgerFile {
    schema_version: u32,
    /// Commits per run id.
    runs: BTreeMap<String, u64>,
}

/// The ledger of one state directory, as this process keeps it.
pub struct Ledger {
    path: PathBuf,
    dir: PathBuf,
    file: Mutex<LedgerFile>,
}

impl Ledger {
    /// Reads the ledger of `dir`; `None` when there is none yet.
    pub fn read(dir: &Path) -> Result<Option<Ledger>, StoreError> {
        let path = dir.join(LEDGER_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(StoreError::Io {
                    dir: dir.to_path_buf(),
                    source: e,
                })
            }
        };
        let file: LedgerFile = serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
            dir: dir.to_path_buf(),
            detail: format!("its commit ledger {LEDGER_FILE} is unreadable: {e}"),
        })?;
        Ok(Some(Ledger {
            path,
            dir: dir.to_path_buf(),
            file: Mutex::new(file),
        }))
    }

    /// An empty ledger for `dir` (written at the first commit).
    pub fn new(dir: &Path) -> Ledger {
        Ledger {
            path: dir.join(LEDGER_FILE),
            dir: dir.to_path_buf(),
            file: Mutex::new(LedgerFile {
                schema_version: super::record::SCHEMA_VERSION,
                runs: BTreeMap::new(),
            }),
        }
    }

    /// The runs it records, with their commits.
    pub fn runs(&self) -> BTreeMap<String, u64> {
        self.file.lock().expect("ledger lock").runs.clone()
    }

    /// Records that `run` now holds `commits` commits, durably against a process crash.
    pub fn record(&self, run: &str, commits: u64) -> Result<(), StoreError> {
        let mut file = self.file.lock().expect("ledger lock");
        match file.runs.get_mut(run) {
            Some(n) if *n >= commits => return Ok(()),
            Some(n) => *n = commits,
            None => {
                file.runs.insert(run.to_string(), commits);
            }
        }
        let bytes = serde_json::to_vec(&*file).expect("the ledger serializes");
        let io = |source| StoreError::Io {
            dir: self.dir.clone(),
            source,
        };
        let temp = self.path.with_extension("json.tmp");
        let mut out = std::fs::File::create(&temp).map_err(io)?;
        out.write_all(&bytes).map_err(io)?;
        drop(out);
        std::fs::rename(&temp, &self.path).map_err(io)
    }
}

/// The refusal of a directory whose run `run` lost committed progress.
pub fn lost(dir: &Path, run: &str, found: Option<u64>, recorded: u64) -> StoreError {
    StoreError::Corrupt {
        dir: dir.to_path_buf(),
        detail: match found {
            None => format!("run {run} is missing from its database, which lost committed progress"),
            Some(n) => format!(
                "run {run} holds {n} of its {recorded} recorded commits: committed progress is missing"
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_a_reread_and_never_go_back() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Ledger::read(dir.path()).unwrap().is_none());
        let ledger = Ledger::new(dir.path());
        ledger.record("a", 3).unwrap();
        ledger.record("b", 1).unwrap();
        ledger.record("a", 2).unwrap();
        let again = Ledger::read(dir.path()).unwrap().unwrap();
        assert_eq!(
            again.runs(),
            BTreeMap::from([("a".into(), 3), ("b".into(), 1)])
        );
        std::fs::write(dir.path().join(LEDGER_FILE), b"{half").unwrap();
        assert!(matches!(
            Ledger::read(dir.path()),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
