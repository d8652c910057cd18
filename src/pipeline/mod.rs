//! The run pipeline: per-provider lanes (`lane`), pre-flight decisions (`preflight`), retry
//! timing (`retry`), one row's execution with reconciliation (`execute`), the group-commit
//! checkpoint writer (`writer`), batched confirmation of asynchronous changes (`confirm`), when
//! sending is allowed (`schedule`), what controls a run while it goes (`control`: the stop
//! signal, the failure limit), what it has done so far (`live`), the rows applied many at once (`bulk`), how long a
//! lane's work takes at its limits (`estimate`) and the engine that ties them together
//! (`engine`).

pub(crate) mod bulk;
pub(crate) mod confirm;
pub(crate) mod control;
pub(crate) mod engine;
pub(crate) mod estimate;
pub(crate) mod execute;
pub(crate) mod feed;
pub mod lane;
pub mod live;
pub(crate) mod preflight;
pub(crate) mod schedule;
pub(crate) mod snapshot;
pub(crate) mod writer;
