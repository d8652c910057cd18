//! Durable run progress behind the [`CheckpointStore`] trait, so the pipeline can be tested with
//! an in-memory store and the real one can be swapped. The real store is sled (see `sled_store`).

pub mod codec;
pub mod ledger;
pub mod record;
pub mod sled_store;

use std::path::PathBuf;

pub use record::{
    FinishedPrefix, Manifest, Outcome, Phase, RowRecord, StoredValidation, SCHEMA_VERSION,
};
pub use sled_store::{SledRun, SledStore};

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

/// One run's durable progress.
pub trait CheckpointStore: Send + Sync {
    fn manifest(&self) -> Result<Option<Manifest>, StoreError>;
    fn write_manifest(&self, manifest: &Manifest) -> Result<(), StoreError>;
    fn get(&self, index: u64) -> Result<Option<RowRecord>, StoreError>;
    /// Stores all records atomically and durably (against process crashes) before returning.
    fn commit(&self, rows: &[(u64, RowRecord)]) -> Result<(), StoreError>;
    /// All row records in row order.
    fn rows(&self) -> Box<dyn Iterator<Item = Result<(u64, RowRecord), StoreError>> + '_>;
    /// The exact bytes of the latest invocation's `summary.json`, durably (kept verbatim so that
    /// `report` reproduces it byte for byte: floats need not survive a parse and re-print).
    fn put_summary(&self, summary: &[u8]) -> Result<(), StoreError>;
    fn summary(&self) -> Result<Option<Vec<u8>>, StoreError>;
    /// The finished prefix as last recorded (empty if never).
    fn finished_prefix(&self) -> Result<FinishedPrefix, StoreError>;
    /// Extends the recorded finished prefix over the rows that have become final since, and
    /// records it (run at the end of an invocation).
    fn advance_finished_prefix(&self) -> Result<FinishedPrefix, StoreError>;
}
