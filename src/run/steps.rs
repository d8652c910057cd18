//! A run, step by step: prepare and guard, the provider accounts, open the state, ask before
//! the first change, dispatch, finish. Each step is a function of its own module; this one
//! only says their order.

use super::accounts::accounts;
use super::confirm::announce_and_ask;
use super::dispatch::dispatch;
use super::finish::finish;
use super::lanes::{build_lanes, LaneSettings};
use super::prepare::prepare;
use super::request::{RunOutcome, RunRequest};
use super::state::open;

/// Runs (or resumes) a job.
pub async fn run_job(req: RunRequest) -> anyhow::Result<RunOutcome> {
    let mut prepared = match prepare(&req)? {
        Ok(prepared) => prepared,
        Err(refused) => return Ok(refused),
    };
    let providers = || prepared.validation.counts.keys().map(|(p, _)| p.as_str());
    let accounts = accounts(&req, providers());
    let settings = LaneSettings {
        rate: req.rate,
        concurrency: req.concurrency,
        credentials: req.credentials.clone(),
    };
    let lanes = build_lanes(&req.parse.providers, providers(), &settings)?;
    let opened = match open(&req, &mut prepared, &accounts)? {
        Ok(opened) => opened,
        Err(refused) => return Ok(refused),
    };
    let validation = &prepared.validation;
    if let Some(refused) = announce_and_ask(&req, &opened, validation, &lanes)? {
        return Ok(refused);
    }
    let dispatched = dispatch(&req, &opened, validation, &lanes).await;
    finish(&req, &opened, &lanes, &accounts, dispatched)
}
