//! Provider clients and what simbatch believes about each provider. One module per provider
//! (`emnify`, `twilio`, `telnyx`) owns both faces of it: the facts every run, report and revert
//! relies on ([`facts::Provider`]: statuses, transitions, inverses, limits, defaults) and an
//! account's wire calls ([`account::Account`]) over the shared HTTP layer (`http`, with the rate
//! gate of `limiter`/`window`). `registry` is the one place that lists the providers. `state` is
//! the neutral vocabulary they speak to the pipeline; `error` classifies failures; `redact`
//! keeps credentials out of provider text; `coalesce` batches single calls.

pub mod account;
pub(crate) mod coalesce;
pub mod emnify;
pub mod error;
pub mod facts;
pub mod http;
pub mod limiter;
pub(crate) mod redact;
pub mod registry;
pub(crate) mod retry;
pub mod simulate;
pub mod state;
pub mod telnyx;
pub mod twilio;
pub(crate) mod window;

pub use account::{Account, Cursor, Device, Page};
pub use error::{ErrorClass, ProviderError};
pub use facts::{CredentialEnv, Provider};
pub use registry::provider_of;
pub use state::{Decision, EuiccState, Observed, Polled, Sent, SimState};
