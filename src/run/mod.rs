//! Running a job as a library call: everything `simbatch run` does between parsing its
//! arguments and printing. `run`, `demo` and library users (see `examples/`) come through
//! [`run_job`]; `plan` and `export` build their lanes through [`lanes::build_lane`]. The steps,
//! in order, are in `steps`; each has its module.

pub(crate) mod accounts;
pub(crate) mod confirm;
pub(crate) mod console;
pub(crate) mod dispatch;
pub(crate) mod finish;
pub(crate) mod identity;
pub mod lanes;
pub mod live_view;
pub(crate) mod prepare;
pub(crate) mod reading;
pub mod request;
pub(crate) mod state;
pub mod steps;

pub use lanes::{build_lane, LaneSettings};
pub use prepare::print_validation_errors;
pub use request::{parse_max_failures, Credentials, RunOutcome, RunRequest};
pub use steps::run_job;
