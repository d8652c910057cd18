//! Durable run progress behind the [`CheckpointStore`] trait, so the pipeline can be tested with
//! an in-memory store and the real one can be swapped. The real store is sled (see `sled_store`).

pub mod checkpoint;
pub(crate) mod codec;
pub mod error;
pub(crate) mod ledger;
pub mod record;
pub mod sled_store;

pub use checkpoint::CheckpointStore;
pub use error::StoreError;
pub use record::{
    AccountRecord, FinishedPrefix, Manifest, Outcome, Phase, Reading, RowRecord, RunSettings,
    StoredValidation, SCHEMA_VERSION,
};
pub use sled_store::{SledRun, SledStore};
