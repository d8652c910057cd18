//! The built-in provider sandbox of SPEC 6: faithful local stand-ins for the emnify, Twilio
//! Super SIM and Telnyx APIs on one port, with a deterministic inventory, the documented state
//! machines and asynchronous behaviour, rate limits in each provider's shape, injectable
//! faults, and inspection endpoints. Used by `simbatch sandbox`, `demo`, tests and benches.
//!
//! Its wire structs are its own: the provider clients must not share them (DESIGN 1).
//!
//! Handlers return `Result<_, Response>` to leave early with a ready provider error; that error
//! path is cold, so clippy's advice to box the large `Err` would only add noise here.
#![allow(clippy::result_large_err)]

pub(crate) mod emnify;
pub(crate) mod gate;
pub(crate) mod inspect;
pub mod inventory;
pub(crate) mod journal;
pub(crate) mod limits;
pub(crate) mod paging;
pub(crate) mod server;
pub(crate) mod settings;
pub(crate) mod shared;
pub mod telnyx;
pub(crate) mod twilio;

pub use server::{bind, start, RunningSandbox};
pub use settings::{Faults, Latency, LimitMode, SandboxConfig};
pub use shared::Shared;
