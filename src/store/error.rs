//! Why the state store could not be used: every variant maps to exit code 4 and names the
//! directory and what to do. A leaf, so that every part of the store can name it.

use std::path::PathBuf;

/// Why the state store could not be used. Every variant maps to exit code 4 and names the
/// directory and what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state directory {} is in use by another simbatch process; wait for it to finish (or stop it), or pass a different --state", dir.display())]
    Busy { dir: PathBuf },
    #[error("state directory {} is damaged ({detail}); move it aside and rerun with --fresh, or restore it from a backup", dir.display())]
    Corrupt { dir: PathBuf, detail: String },
    #[error("state directory {} was written by a different simbatch (schema version {found}, this one reads {expected}); use the simbatch that wrote it, or move it aside", dir.display())]
    Schema {
        dir: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error("cannot use state directory {}: {source}", dir.display())]
    Io {
        dir: PathBuf,
        source: std::io::Error,
    },
}
