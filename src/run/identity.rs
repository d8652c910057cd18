//! Which run a job's bytes are: run ids are the file's stem and a prefix of its SHA-256, and
//! the full hash decides whether an existing run is this one.

use std::path::Path;

use crate::store::{CheckpointStore, Manifest, SledStore, StoreError};

/// The stem run ids are made from.
pub fn job_stem(job: &Path) -> &str {
    job.file_stem().and_then(|s| s.to_str()).unwrap_or("job")
}

/// The id of the run made from a job file with this stem and SHA-256, and that run's manifest
/// if it exists (a resume). Ids are `<stem>-<first 8 hex of the hash>`, longer (16, 32, 64 hex)
/// only when a run of other bytes already holds the shorter one: the full hash identifies a
/// run, the short id only names it (SPEC 3.3).
pub fn run_for(
    store: &SledStore,
    stem: &str,
    hash: &str,
) -> Result<(String, Option<Manifest>), StoreError> {
    let ids = store.run_ids();
    for len in [8, 16, 32, 64] {
        let id = format!("{stem}-{}", &hash[..len.min(hash.len())]);
        if !ids.contains(&id) {
            return Ok((id, None));
        }
        match store.run(&id)?.manifest()? {
            Some(m) if m.job_sha256 == hash => return Ok((id, Some(m))),
            // A run that never recorded its manifest holds no progress: take its place.
            None => return Ok((id, None)),
            Some(_) => {}
        }
    }
    Ok((format!("{stem}-{hash}"), None))
}
