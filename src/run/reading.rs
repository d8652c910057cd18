//! How a run reads its job file, recorded in its manifest so that a resume, `report` and
//! `revert` read the run's copy the same way.

use super::request::RunRequest;
use crate::job::{IdStrictness, JobFormat, ParseOptions};
use crate::store::Reading;

/// How this request reads its job.
pub fn reading_of(req: &RunRequest, format: JobFormat) -> Reading {
    Reading {
        providers: req.parse.providers.kinds(),
        provider: req.parse.default_provider.clone(),
        lenient_ids: req.parse.strictness == IdStrictness::Lenient,
        format,
    }
}

/// The parse options a recorded reading stands for (provider names with their kinds and
/// default URLs: enough to read the job again).
pub fn parse_options(reading: &Reading) -> ParseOptions {
    ParseOptions {
        strictness: if reading.lenient_ids {
            IdStrictness::Lenient
        } else {
            IdStrictness::Strict
        },
        default_provider: reading.provider.clone(),
        providers: crate::config::Providers::from_kinds(&reading.providers),
    }
}
