//! `simbatch export`: a provider's SIM inventory written as a job-shaped file. The listing is
//! read page by page through the lane's rate gate (so it keeps to the provider's limits) and
//! written as it arrives, so memory does not grow with the fleet. The columns are job columns
//! (`provider`, `iccid`, `eid`) plus carried extras (`provider_id`, `status`, `provider_group`):
//! adding an `action` column turns the file into a job.
//!
//! The file appears only when the whole listing was read: it is written next to its final name
//! and renamed at the end, so an interrupted export never leaves a partial inventory that looks
//! complete.

use std::io::Write;
use std::path::Path;

use anyhow::{anyhow, Context};
use serde::Serialize;

use crate::job::JobFormat;
use crate::pipeline::lane::Lane;
use crate::provider::retry::{with_retries, RetryPolicy};
use crate::provider::Cursor;
use crate::provider::SimState;

/// The columns of an export, in order.
pub const COLUMNS: [&str; 6] = [
    "provider",
    "iccid",
    "eid",
    "provider_id",
    "status",
    "provider_group",
];

/// Which SIMs to write; every filter that is set must match.
#[derive(Debug, Clone, Default)]
pub struct ExportFilter {
    /// The provider's status wording (`Activated`, `active`, `enabled`…), any case.
    pub status: Option<String>,
    /// emnify organisation id, Twilio Fleet SID, Telnyx SIM card group id.
    pub group: Option<String>,
}

impl ExportFilter {
    pub fn matches(&self, sim: &SimState) -> bool {
        self.status
            .as_deref()
            .is_none_or(|s| s.eq_ignore_ascii_case(&sim.status))
            && self
                .group
                .as_deref()
                .is_none_or(|g| sim.group.as_deref() == Some(g))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExportSummary {
    /// The statuses of the SIMs listed, with how many show each (to say which exist when a
    /// `--status` filter matched none).
    pub statuses: std::collections::BTreeMap<String, u64>,
    pub pages: u64,
    pub listed: u64,
    pub written: u64,
}

#[derive(Serialize)]
struct Line<'a> {
    provider: &'a str,
    iccid: &'a str,
    eid: Option<&'a str>,
    provider_id: &'a str,
    status: &'a str,
    provider_group: Option<&'a str>,
}

enum Sink {
    Csv(Box<csv::Writer<std::fs::File>>),
    Jsonl(std::io::BufWriter<std::fs::File>),
}

impl Sink {
    fn write(&mut self, line: &Line<'_>) -> anyhow::Result<()> {
        match self {
            Sink::Csv(w) => w.write_record([
                line.provider,
                line.iccid,
                line.eid.unwrap_or_default(),
                line.provider_id,
                line.status,
                line.provider_group.unwrap_or_default(),
            ])?,
            Sink::Jsonl(w) => {
                serde_json::to_writer(&mut *w, line)?;
                w.write_all(b"\n")?;
            }
        }
        Ok(())
    }

    fn finish(self) -> anyhow::Result<std::fs::File> {
        Ok(match self {
            Sink::Csv(w) => w.into_inner().map_err(|e| anyhow!("{}", e.error()))?,
            Sink::Jsonl(w) => w.into_inner().map_err(|e| anyhow!("{}", e.error()))?,
        })
    }
}

/// Lists `lane`'s inventory into `out` as `format`, each page retried under `policy`;
/// `on_page` hears of each page read.
pub async fn export(
    lane: &Lane,
    filter: &ExportFilter,
    format: JobFormat,
    out: &Path,
    policy: &RetryPolicy,
    mut on_page: impl FnMut(&ExportSummary),
) -> anyhow::Result<ExportSummary> {
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let temp = tempfile::Builder::new()
        .prefix(".simbatch-export-")
        .tempfile_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    let (file, temp_path) = temp.into_parts();
    let mut sink = match format {
        JobFormat::Csv => {
            let mut w = csv::Writer::from_writer(file);
            w.write_record(COLUMNS)?;
            Sink::Csv(Box::new(w))
        }
        JobFormat::Jsonl => Sink::Jsonl(std::io::BufWriter::new(file)),
    };
    // A provider that can narrows the listing to the group itself (Twilio's Fleet); every
    // page is filtered here as well.
    let group = filter.group.as_deref();
    let mut summary = ExportSummary::default();
    let mut cursor = Cursor::First;
    loop {
        let (sims, next) = with_retries(policy, || lane.inventory_page(&cursor, group))
            .await
            .with_context(|| format!("provider `{}`", lane.name))?;
        summary.pages += 1;
        summary.listed += sims.len() as u64;
        for (_, sim) in &sims {
            *summary.statuses.entry(sim.status.clone()).or_default() += 1;
        }
        for (iccid, sim) in sims.iter().filter(|(_, s)| filter.matches(s)) {
            sink.write(&Line {
                provider: &lane.name,
                iccid,
                eid: sim.eid.as_deref(),
                provider_id: &sim.id,
                status: &sim.status,
                provider_group: sim.group.as_deref(),
            })?;
            summary.written += 1;
        }
        on_page(&summary);
        match next {
            Some(n) => cursor = n,
            None => break,
        }
    }
    let file = sink.finish()?;
    file.sync_all()?;
    temp_path
        .persist(out)
        .map_err(|e| anyhow!("cannot write {}: {}", out.display(), e.error))?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sim(status: &str, group: Option<&str>) -> SimState {
        SimState {
            id: "1".into(),
            status: status.into(),
            settled: true,
            group: group.map(str::to_string),
            device: None,
            eid: None,
        }
    }

    #[test]
    fn filters_match_status_in_any_case_and_the_exact_group() {
        let f = ExportFilter {
            status: Some("activated".into()),
            group: Some("7".into()),
        };
        assert!(f.matches(&sim("Activated", Some("7"))));
        assert!(!f.matches(&sim("Suspended", Some("7"))));
        assert!(!f.matches(&sim("Activated", Some("8"))));
        assert!(!f.matches(&sim("Activated", None)));
        assert!(ExportFilter::default().matches(&sim("anything", None)));
    }
}
