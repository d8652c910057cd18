//! Reports (SPEC 4), always regenerable from the job file and the checkpoint store alone:
//! `results.csv` (or `.jsonl`) with one row per job row in file order, `failed.csv` and
//! `pending.csv` as job files that can be run again, and `summary.json`.
//!
//! A report on disk is always whole: each is written to a new temporary file in the reports
//! directory and renamed into place once complete (a kill or a full disk leaves the previous
//! report, or none, never a cut one), and the rename replaces whatever was at the name — a
//! planted symlink is replaced, never followed. Files and their directory are readable by the
//! owner only: they name SIMs and accounts. CSV reports are written for spreadsheets as well as
//! for simbatch (see `job::write`): every field quoted, formula-looking cells disarmed in a way
//! the job reader undoes.

pub mod histogram;
pub mod revert;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::job::write::CsvJobWriter;
use crate::job::{Action, JobFormat, JobReader, JobRow, ParseOptions, RowResult};
use crate::store::{CheckpointStore, Outcome, RowRecord, StoreError};
use histogram::Histogram;

/// The fixed columns of `results.csv`, then the job's extra columns.
pub const RESULT_COLUMNS: [&str; 19] = [
    "line",
    "id",
    "group",
    "provider",
    "action",
    "iccid",
    "eid",
    "outcome",
    "reason",
    "before",
    "after",
    "attempts",
    "http_status",
    "provider_code",
    "provider_ref",
    "queued_ms",
    "latency_ms",
    "started_at",
    "finished_at",
];

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot write reports in {dir}: {source}")]
    Io { dir: String, source: std::io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot re-read the job file: {0}")]
    Job(String),
}

/// Counts and timings gathered while writing the results.
#[derive(Debug, Default, Serialize)]
pub struct Tally {
    pub rows: u64,
    pub outcomes: BTreeMap<Outcome, u64>,
    pub per_provider: BTreeMap<String, BTreeMap<Outcome, u64>>,
    pub per_action: BTreeMap<Action, BTreeMap<Outcome, u64>>,
    pub not_started: u64,
    pub attempts: u64,
    /// Rows written to `revert.csv`, and succeeded rows that have no inverse.
    pub revert_rows: u64,
    pub not_revertible: u64,
    /// Why rows ended `failed`, `unknown` or `blocked`, with identifiers left out so that the
    /// same reason for many SIMs counts once (see [`reason_kind`]).
    #[serde(skip)]
    pub failure_reasons: BTreeMap<String, u64>,
    #[serde(skip)]
    pub latency: Histogram,
    #[serde(skip)]
    pub queued: Histogram,
}

impl Tally {
    pub fn count(&self, outcome: Outcome) -> u64 {
        self.outcomes.get(&outcome).copied().unwrap_or(0)
    }

    /// The `n` most frequent failure reasons, most frequent first.
    pub fn top_failure_reasons(&self, n: usize) -> Vec<(&str, u64)> {
        most_frequent(&self.failure_reasons, n)
    }
}

/// The `n` most frequent of `counts`, most frequent first (ties in name order).
pub fn most_frequent(counts: &BTreeMap<String, u64>, n: usize) -> Vec<(&str, u64)> {
    let mut top: Vec<(&str, u64)> = counts.iter().map(|(r, c)| (r.as_str(), *c)).collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    top.truncate(n);
    top
}

/// `path` as one word for a POSIX shell: as it is when it needs no quoting, else in single
/// quotes.
pub fn shell_word(path: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+:,@%".contains(c);
    if !path.is_empty() && path.chars().all(plain) {
        path.to_string()
    } else {
        format!("'{}'", path.replace('\'', "'\\''"))
    }
}

/// A failure reason with its identifiers (runs of six or more digits or hex letters: ICCIDs,
/// EIDs, SIDs, UUIDs) replaced by `…`, so that "no SIM 8988…01 at emnify" and "no SIM 8988…02
/// at emnify" are one reason.
pub fn reason_kind(reason: &str) -> String {
    let mut out = String::with_capacity(reason.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        let digits = run.bytes().filter(u8::is_ascii_digit).count();
        if run.len() >= 6 && digits >= 3 {
            out.push('…');
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in reason.chars() {
        if c.is_ascii_alphanumeric() || c == '-' {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

pub use crate::job::write::neutralise;

/// A report being written: a new private file beside its final name, renamed into place by
/// [`Pending::persist`] (dropped unpersisted, it is removed).
struct Pending {
    file: tempfile::NamedTempFile,
    dest: PathBuf,
}

impl Pending {
    fn new(dir: &Path, name: &str) -> std::io::Result<Pending> {
        // tempfile creates it new (O_EXCL), mode 0600.
        let file = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .tempfile_in(dir)?;
        Ok(Pending {
            file,
            dest: dir.join(name),
        })
    }

    /// A buffered writer into the file.
    fn writer(&self) -> std::io::Result<BufWriter<File>> {
        Ok(BufWriter::new(self.file.reopen()?))
    }

    fn persist(self) -> std::io::Result<()> {
        self.file.as_file().sync_all()?;
        self.file.persist(&self.dest).map(drop).map_err(|e| e.error)
    }
}

/// Creates the reports directory (owner-only on Unix).
pub fn create_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Makes sure reports can be written in `dir` (created if needed, a file can be made there):
/// checked before a run's first change, not found out after the last one.
pub fn check_dir(dir: &Path) -> Result<(), ReportError> {
    let io = |source| ReportError::Io {
        dir: dir.display().to_string(),
        source,
    };
    create_dir(dir).map_err(io)?;
    Pending::new(dir, "probe").map(drop).map_err(io)
}

/// Where the report files are.
pub struct ReportFiles {
    pub dir: PathBuf,
}

/// Writes results, failed, pending and revert files, each whole or not at all; returns the
/// tally for the summary.
pub fn write_rows(
    dir: &Path,
    job: &Path,
    format: Option<JobFormat>,
    parse: &ParseOptions,
    store: &dyn CheckpointStore,
    results_format: JobFormat,
) -> Result<(ReportFiles, Tally), ReportError> {
    let io = |source| ReportError::Io {
        dir: dir.display().to_string(),
        source,
    };
    create_dir(dir).map_err(io)?;
    let results_name = match results_format {
        JobFormat::Csv => "results.csv",
        JobFormat::Jsonl => "results.jsonl",
    };
    let files: Vec<Pending> = [results_name, "failed.csv", "pending.csv", "revert.csv"]
        .into_iter()
        .map(|name| Pending::new(dir, name))
        .collect::<Result<_, _>>()
        .map_err(io)?;
    let mut sinks = Vec::with_capacity(files.len());
    for file in &files {
        sinks.push(Box::new(file.writer().map_err(io)?) as Box<dyn Write>);
    }
    let [results, failed, pending, revert]: [Box<dyn Write>; 4] =
        sinks.try_into().ok().expect("four sinks");
    let tally = pass(
        Sinks {
            results,
            failed,
            pending,
            revert,
        },
        job,
        format,
        parse,
        store,
        results_format,
    )
    .map_err(|e| match e {
        PassError::Write(source) => io(source),
        PassError::Report(e) => e,
    })?;
    for file in files {
        file.persist().map_err(io)?;
    }
    Ok((
        ReportFiles {
            dir: dir.to_path_buf(),
        },
        tally,
    ))
}

/// The tally of [`write_rows`] without writing anything (the summary of a run whose reports
/// could not be written).
pub fn tally_rows(
    job: &Path,
    format: Option<JobFormat>,
    parse: &ParseOptions,
    store: &dyn CheckpointStore,
) -> Result<Tally, ReportError> {
    let sink = || Box::new(std::io::sink()) as Box<dyn Write>;
    pass(
        Sinks {
            results: sink(),
            failed: sink(),
            pending: sink(),
            revert: sink(),
        },
        job,
        format,
        parse,
        store,
        JobFormat::Csv,
    )
    .map_err(|e| match e {
        PassError::Write(source) => ReportError::Io {
            dir: String::new(),
            source,
        },
        PassError::Report(e) => e,
    })
}

/// Where one pass over the rows writes.
struct Sinks {
    results: Box<dyn Write>,
    failed: Box<dyn Write>,
    pending: Box<dyn Write>,
    revert: Box<dyn Write>,
}

enum PassError {
    Write(std::io::Error),
    Report(ReportError),
}

impl From<std::io::Error> for PassError {
    fn from(e: std::io::Error) -> Self {
        PassError::Write(e)
    }
}

impl From<csv::Error> for PassError {
    fn from(e: csv::Error) -> Self {
        PassError::Write(e.into())
    }
}

impl From<StoreError> for PassError {
    fn from(e: StoreError) -> Self {
        PassError::Report(e.into())
    }
}

/// One pass over the job's rows and their records: every report row written to `sinks`, the
/// tally counted.
fn pass(
    sinks: Sinks,
    job: &Path,
    format: Option<JobFormat>,
    parse: &ParseOptions,
    store: &dyn CheckpointStore,
    results_format: JobFormat,
) -> Result<Tally, PassError> {
    let reader = JobReader::open(job, format, parse.clone())
        .map_err(|d| PassError::Report(ReportError::Job(d.message)))?;
    let extras = reader.extra_columns();
    let mut results = ResultsWriter::new(sinks.results, results_format, &extras)?;
    let mut failed = CsvJobWriter::for_report(sinks.failed, extras.clone())?;
    let mut pending = CsvJobWriter::for_report(sinks.pending, extras.clone())?;
    let mut reverts = RevertWriter::new(sinks.revert, extras.clone())?;
    let mut tally = Tally::default();
    for joined in join(reader, store) {
        let (_index, item, record) = joined?;
        tally.rows += 1;
        match item {
            RowResult::Valid(parsed) => {
                let row = parsed.row;
                let outcome = record.as_ref().and_then(|r| r.outcome);
                match outcome {
                    Some(o) => {
                        *tally.outcomes.entry(o).or_default() += 1;
                        *tally
                            .per_provider
                            .entry(row.provider.clone())
                            .or_default()
                            .entry(o)
                            .or_default() += 1;
                        *tally
                            .per_action
                            .entry(row.action())
                            .or_default()
                            .entry(o)
                            .or_default() += 1;
                    }
                    None => tally.not_started += 1,
                }
                if let Some(r) = &record {
                    if r.outcome.is_some_and(Outcome::did_not_succeed) {
                        let reason = reason_kind(r.reason.as_deref().unwrap_or("no reason given"));
                        *tally.failure_reasons.entry(reason).or_default() += 1;
                    }
                    tally.attempts += u64::from(r.attempts);
                    if let Some(ms) = r.latency_ms {
                        tally.latency.record(ms);
                    }
                    if let Some(ms) = r.queued_ms {
                        tally.queued.record(ms);
                    }
                }
                results.write(&row, record.as_ref(), &extras)?;
                if let Some(r) = &record {
                    reverts.add(&row, r)?;
                }
                match outcome {
                    Some(o) if o.did_not_succeed() => failed.write(&row)?,
                    Some(Outcome::Pending) => pending.write(&row)?,
                    _ => {}
                }
            }
            RowResult::Invalid(diags) => {
                *tally.outcomes.entry(Outcome::Invalid).or_default() += 1;
                let line = diags.first().and_then(|d| d.line).unwrap_or(0);
                let reason = diags
                    .iter()
                    .map(|d| d.message.as_str())
                    .collect::<Vec<_>>()
                    .join("; ");
                results.write_invalid(line, &reason, extras.len())?;
            }
            RowResult::Fatal(d) => return Err(PassError::Report(ReportError::Job(d.message))),
        }
    }
    results.finish()?;
    failed.finish()?;
    pending.finish()?;
    (tally.revert_rows, tally.not_revertible) = reverts.finish()?;
    Ok(tally)
}

/// The job's rows in file order, each with its stored record (`None`: not started).
pub fn join<'a>(
    reader: JobReader,
    store: &'a dyn CheckpointStore,
) -> impl Iterator<Item = Result<(u64, RowResult, Option<RowRecord>), StoreError>> + 'a {
    let mut records = store.rows().peekable();
    reader.enumerate().map(move |(index, item)| {
        let index = index as u64;
        // Records come in index order; skip any beyond the job (a changed file is a new run).
        loop {
            match records.peek() {
                Some(Ok((i, _))) if *i < index => {
                    records.next();
                }
                Some(Ok((i, _))) if *i == index => {
                    let record = records.next().transpose()?.map(|(_, r)| r);
                    return Ok((index, item, record));
                }
                Some(Err(_)) => {
                    records.next().transpose()?;
                }
                _ => return Ok((index, item, None)),
            }
        }
    })
}

/// Writes revert rows as they come, holding back grouped ones to write each group's steps in
/// reverse at the end (memory grows with grouped rows only).
struct RevertWriter<W: Write> {
    writer: CsvJobWriter<W>,
    grouped: BTreeMap<String, Vec<JobRow>>,
    rows: u64,
    not_revertible: u64,
}

impl<W: Write> RevertWriter<W> {
    fn new(out: W, extras: Vec<Arc<str>>) -> csv::Result<Self> {
        Ok(RevertWriter {
            writer: CsvJobWriter::for_report(out, extras)?,
            grouped: BTreeMap::new(),
            rows: 0,
            not_revertible: 0,
        })
    }

    fn add(&mut self, row: &JobRow, record: &RowRecord) -> csv::Result<()> {
        match revert::inverse(row, record) {
            Some(revert::Inverse::Row(r)) => {
                self.rows += 1;
                match &r.group {
                    Some(g) => self.grouped.entry(g.clone()).or_default().push(*r),
                    None => self.writer.write(&r)?,
                }
            }
            Some(revert::Inverse::NotRevertible(_)) => self.not_revertible += 1,
            None => {}
        }
        Ok(())
    }

    /// (rows written, rows not revertible)
    fn finish(mut self) -> std::io::Result<(u64, u64)> {
        for (_, group) in std::mem::take(&mut self.grouped) {
            for r in group.iter().rev() {
                self.writer.write(r).map_err(std::io::Error::from)?;
            }
        }
        self.writer.finish()?;
        Ok((self.rows, self.not_revertible))
    }
}

/// Writes the revert job of a run to `out` (whole or not at all): (rows written, rows not
/// revertible).
pub fn write_revert(
    out: &Path,
    job: &Path,
    format: Option<JobFormat>,
    parse: &ParseOptions,
    store: &dyn CheckpointStore,
) -> Result<(u64, u64), ReportError> {
    let io = |source| ReportError::Io {
        dir: out.display().to_string(),
        source,
    };
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = out
        .file_name()
        .ok_or_else(|| io(std::io::Error::other("the output names no file")))?
        .to_string_lossy()
        .to_string();
    let file = Pending::new(dir, &name).map_err(io)?;
    let reader =
        JobReader::open(job, format, parse.clone()).map_err(|d| ReportError::Job(d.message))?;
    let extras = reader.extra_columns();
    let mut reverts =
        RevertWriter::new(file.writer().map_err(io)?, extras).map_err(|e| io(e.into()))?;
    for joined in join(reader, store) {
        let (_, item, record) = joined?;
        if let (RowResult::Valid(parsed), Some(record)) = (item, record) {
            reverts
                .add(&parsed.row, &record)
                .map_err(|e| io(e.into()))?;
        }
    }
    let counts = reverts.finish().map_err(io)?;
    file.persist().map_err(io)?;
    Ok(counts)
}

enum ResultsWriter<W: Write> {
    Csv(Box<csv::Writer<W>>),
    Jsonl(W),
}

fn cells(row: &JobRow, record: Option<&RowRecord>) -> [String; 19] {
    let opt = |v: Option<String>| v.unwrap_or_default();
    let r = record;
    [
        row.line.to_string(),
        row.id.clone(),
        opt(row.group.clone()),
        row.provider.clone(),
        row.action().name().to_string(),
        opt(row.target.iccid().map(|i| i.to_string())),
        opt(row.target.eid().map(|e| e.to_string())),
        // As summary.json counts it: a row without an outcome has not started (or may have
        // been in flight when the run stopped; the next run reconciles it).
        r.and_then(|r| r.outcome)
            .map_or("not_started".to_string(), |o| o.name().to_string()),
        match r {
            Some(r) => opt(r.reason.clone()),
            None => "not started: run again to resume".into(),
        },
        opt(r.and_then(|r| r.before.clone())),
        opt(r.and_then(|r| r.after.clone())),
        r.map_or(String::new(), |r| r.attempts.to_string()),
        opt(r.and_then(|r| r.http_status).map(|s| s.to_string())),
        opt(r.and_then(|r| r.provider_code.clone())),
        opt(r.and_then(|r| r.provider_ref.clone())),
        opt(r.and_then(|r| r.queued_ms).map(|v| v.to_string())),
        opt(r.and_then(|r| r.latency_ms).map(|v| v.to_string())),
        opt(r
            .and_then(|r| r.started_at)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))),
        opt(r
            .and_then(|r| r.finished_at)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))),
    ]
}

impl<W: Write> ResultsWriter<W> {
    fn new(out: W, format: JobFormat, extras: &[Arc<str>]) -> std::io::Result<Self> {
        Ok(match format {
            JobFormat::Csv => {
                let mut w = crate::job::write::spreadsheet_csv(out);
                let header = RESULT_COLUMNS
                    .iter()
                    .copied()
                    .chain(extras.iter().map(|e| &**e))
                    .map(|name| neutralise(name).into_owned());
                w.write_record(header)?;
                ResultsWriter::Csv(Box::new(w))
            }
            JobFormat::Jsonl => ResultsWriter::Jsonl(out),
        })
    }

    fn write(
        &mut self,
        row: &JobRow,
        record: Option<&RowRecord>,
        extras: &[Arc<str>],
    ) -> std::io::Result<()> {
        let cells = cells(row, record);
        match self {
            ResultsWriter::Csv(w) => {
                let fixed = cells.iter().map(|c| neutralise(c));
                let carried = crate::job::write::extra_values(row, extras);
                let carried = carried.iter().map(|v| neutralise(v));
                w.write_record(fixed.chain(carried).map(|c| c.into_owned()))?;
            }
            ResultsWriter::Jsonl(w) => {
                let mut object = serde_json::Map::new();
                for (name, value) in RESULT_COLUMNS.iter().zip(cells) {
                    object.insert(name.to_string(), serde_json::Value::String(value));
                }
                for (name, value) in &row.extra {
                    object.insert(name.to_string(), serde_json::Value::String(value.clone()));
                }
                serde_json::to_writer(&mut *w, &object)?;
                w.write_all(b"\n")?;
            }
        }
        Ok(())
    }

    fn write_invalid(&mut self, line: u64, reason: &str, extras: usize) -> std::io::Result<()> {
        let mut cells = vec![String::new(); RESULT_COLUMNS.len() + extras];
        cells[0] = line.to_string();
        cells[7] = "invalid".into();
        cells[8] = reason.to_string();
        match self {
            ResultsWriter::Csv(w) => {
                w.write_record(cells.iter().map(|c| neutralise(c).into_owned()))?
            }
            ResultsWriter::Jsonl(w) => {
                serde_json::to_writer(
                    &mut *w,
                    &serde_json::json!({"line": line.to_string(), "outcome": "invalid", "reason": reason}),
                )?;
                w.write_all(b"\n")?;
            }
        }
        Ok(())
    }

    fn finish(self) -> std::io::Result<()> {
        match self {
            ResultsWriter::Csv(mut w) => w.flush(),
            ResultsWriter::Jsonl(mut w) => w.flush(),
        }
    }
}

/// The bytes of `summary.json` for a summary.
pub fn summary_bytes(summary: &serde_json::Value) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(summary).expect("summaries serialize");
    bytes.push(b'\n');
    bytes
}

/// Writes `summary.json` (owner-only, whole or not at all).
pub fn write_summary(dir: &Path, bytes: &[u8]) -> Result<PathBuf, ReportError> {
    let io = |source| ReportError::Io {
        dir: dir.display().to_string(),
        source,
    };
    create_dir(dir).map_err(io)?;
    let file = Pending::new(dir, "summary.json").map_err(io)?;
    let path = file.dest.clone();
    let mut out = file.writer().map_err(io)?;
    out.write_all(bytes).map_err(io)?;
    out.flush().map_err(io)?;
    drop(out);
    file.persist().map_err(io)?;
    Ok(path)
}

#[cfg(test)]
mod tests {

    #[test]
    fn failure_reasons_group_without_their_identifiers() {
        assert_eq!(
            reason_kind("pre-flight: no SIM 89883030000000000201 at emnify"),
            "pre-flight: no SIM … at emnify"
        );
        assert_eq!(
            reason_kind("HTTP 403 (1104): SIM 99 was sold; HS0123456789abcdef0123456789abcdef"),
            "HTTP 403 (1104): SIM 99 was sold; …"
        );
        assert_eq!(
            reason_kind("gave up after 5 attempts"),
            "gave up after 5 attempts"
        );
    }

    #[test]
    fn shell_words_quote_only_what_needs_it() {
        assert_eq!(
            shell_word("reports/run-1/failed.csv"),
            "reports/run-1/failed.csv"
        );
        assert_eq!(
            shell_word("my reports/failed.csv"),
            "'my reports/failed.csv'"
        );
        assert_eq!(shell_word("it's/failed.csv"), "'it'\\''s/failed.csv'");
    }
    use super::*;

    #[test]
    fn formulas_are_neutralised() {
        assert_eq!(
            neutralise("=HYPERLINK(\"http://x\")"),
            "'=HYPERLINK(\"http://x\")"
        );
        assert_eq!(neutralise("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(neutralise("plain"), "plain");
        assert_eq!(neutralise(""), "");
        for cell in [
            "=1+2", "-fleet", "'=kept", "'plain", "''", "plain", "", "\tx",
        ] {
            let written = neutralise(cell);
            assert_eq!(
                crate::job::write::unneutralise(written.as_bytes()),
                cell.as_bytes(),
                "{cell:?}"
            );
        }
    }
}
