//! simbatch's integration tests: one test binary of modules (faster to build and link than one
//! binary per file). Each test uses its own temporary directory.

mod jobs;
mod roundtrip;
mod support;
mod validate;
