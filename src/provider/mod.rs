//! Provider clients: one per provider kind over a shared HTTP layer (`http`), each with its own
//! reading of the provider's wire format, all speaking the neutral vocabulary of `state` to the
//! pipeline, and classifying failures (`error`) so the pipeline knows what to retry.

pub mod coalesce;
pub mod emnify;
pub mod error;
pub mod http;
pub mod limiter;
pub mod redact;
pub mod state;
pub mod telnyx;
pub mod twilio;
pub mod window;

pub use error::{ErrorClass, ProviderError};
pub use state::{EuiccState, Polled, Sent, SimState};
