//! simbatch's integration tests: one test binary of modules (faster to build and link than one
//! binary per file). Each test uses its own temporary directory.

mod bulk;
mod clients;
mod console;
mod export;
mod fuzz;
mod hostile;
mod jobs;
mod migration;
mod operator;
mod promises;
mod proxy;
mod roundtrip;
mod run_actions;
mod run_control;
mod run_resilience;
mod run_schedule;
mod run_support;
mod sandbox_emnify;
mod sandbox_faults;
mod sandbox_limits;
mod sandbox_support;
mod sandbox_telnyx;
mod sandbox_twilio;
mod secrets;
mod soak;
mod store_damage;
mod support;
mod terminal;
mod torture;
mod truth;
mod validate;
