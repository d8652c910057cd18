//! simbatch: bulk SIM and eSIM lifecycle changes against cellular-IoT providers (emnify,
//! Twilio Super SIM, Telnyx). The binary is a thin shell over this library; see `README.md`
//! for the product and `commands` for where each subcommand starts.

pub mod cli;
pub mod commands;
pub mod config;
pub(crate) mod defaults;
pub mod exit_code;
pub(crate) mod export;
pub mod job;
pub(crate) mod latch;
pub mod pipeline;
pub mod progress;
pub mod provider;
pub(crate) mod report;
pub mod run;
pub mod sandbox;
pub mod store;
