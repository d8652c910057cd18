//! The [`CheckpointStore`] trait: one run's durable progress, as the pipeline and the reports
//! see it (the sled store implements it; tests can use another).

use super::error::StoreError;
use super::record::{FinishedPrefix, Manifest, RowRecord};

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
