//! The run pipeline: per-provider lanes (`lane`), pre-flight decisions (`preflight`), retry
//! timing (`retry`), one row's execution with reconciliation (`execute`), the group-commit
//! checkpoint writer (`writer`), batched confirmation of asynchronous changes (`confirm`), when
//! sending is allowed (`schedule`), what controls a run while it goes (`control`: the stop
//! signal, the failure limit, live counts) and the engine that ties them together (`engine`).

pub mod confirm;
pub mod control;
pub mod engine;
pub mod execute;
pub mod feed;
pub mod lane;
pub mod preflight;
pub mod retry;
pub mod schedule;
pub mod snapshot;
pub mod writer;
