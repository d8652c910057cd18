//! The promises of README "Guarantees" — nothing doubled, nothing lost, nothing leaked — tried
//! against what the happy-path suites do not foresee: a gateway in front of the provider, a job
//! file that changes under a run, a damaged state directory, hostile report paths and values,
//! absurd numbers. One test per case of the issue that found them (`case_NN_…`), each through
//! the real binary against the sandbox, or a small proxy in front of it (`proxy`).

mod gateway;
mod inputs;
mod leaks;
mod reports;
mod state;
