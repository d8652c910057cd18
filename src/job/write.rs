//! The reverse of parsing: a typed row back to job-file columns. Reports (`failed.csv`,
//! `revert.csv`) are written through this, so that every file simbatch writes is itself a
//! valid job file that parses back to the same rows.
//!
//! Reports are also opened in spreadsheets, which run a cell starting with `=`, `+`, `-`, `@`,
//! a tab or a CR as a formula, and in `;`-separated locales split an unquoted field at a `;`.
//! So report CSV quotes every field, and [`neutralise`] prefixes such a cell (header names
//! too) with `'` — and a cell that already starts with `'`, so that [`unneutralise`], which the
//! job reader applies to every CSV cell, gives back exactly what was written.

use std::io::Write;
use std::sync::Arc;

use super::columns::Column;
use super::model::{JobRow, Operation, DEFAULT_VALIDITY_PERIOD};

/// The known-column values of a row (`None` where the column is blank).
pub fn row_values(row: &JobRow) -> [Option<String>; Column::COUNT] {
    let mut v: [Option<String>; Column::COUNT] = Default::default();
    let mut set = |col: Column, value: String| v[col.index()] = Some(value);
    set(Column::Action, row.action().name().to_string());
    set(Column::Provider, row.provider.clone());
    if let Some(iccid) = row.target.iccid() {
        set(Column::Iccid, iccid.to_string());
    }
    if let Some(eid) = row.target.eid() {
        set(Column::Eid, eid.to_string());
    }
    set(Column::Id, row.id.clone());
    if let Some(group) = &row.group {
        set(Column::Group, group.clone());
    }
    if let Some(t) = row.not_before {
        set(
            Column::NotBefore,
            t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        );
    }
    let validity = |set: &mut dyn FnMut(Column, String), period: u32| {
        if period != DEFAULT_VALIDITY_PERIOD {
            set(Column::ValidityPeriod, period.to_string());
        }
    };
    match &row.operation {
        Operation::Activate
        | Operation::Suspend
        | Operation::Standby
        | Operation::EnableDevice
        | Operation::DisableDevice => {}
        Operation::Delete { report_lost } => {
            if *report_lost {
                set(Column::ReportLost, "true".into());
            }
        }
        Operation::Move { target } | Operation::Attach { target } => {
            set(Column::Target, target.clone())
        }
        Operation::Register { registration_code } => {
            set(Column::RegistrationCode, registration_code.clone())
        }
        Operation::EuiccAudit { validity_period } => validity(&mut set, *validity_period),
        Operation::ProfileDownload {
            activation_code,
            enable,
            rollback,
            validity_period,
        } => {
            set(Column::ActivationCode, activation_code.as_str().to_string());
            set(Column::Enable, enable.to_string());
            set(Column::Rollback, rollback.to_string());
            validity(&mut set, *validity_period);
        }
        Operation::ProfileEnable {
            profile_iccid,
            rollback,
            validity_period,
        } => {
            set(Column::ProfileIccid, profile_iccid.to_string());
            set(Column::Rollback, rollback.to_string());
            validity(&mut set, *validity_period);
        }
        Operation::ProfileFallback {
            profile_iccid,
            validity_period,
        }
        | Operation::ProfileDelete {
            profile_iccid,
            validity_period,
        } => {
            set(Column::ProfileIccid, profile_iccid.to_string());
            validity(&mut set, *validity_period);
        }
    }
    v
}

/// A row's values of the file's extra columns, in the file's column order (blank where the row
/// has none). A row carries its extras in that same order, so this is one walk over both, not
/// a search per column (a 5,000-column job spent its report time searching).
pub fn extra_values<'a>(row: &'a JobRow, columns: &[Arc<str>]) -> Vec<&'a str> {
    let mut values = Vec::with_capacity(columns.len());
    let mut carried = row.extra.iter().peekable();
    for name in columns {
        match carried.peek() {
            Some((n, v)) if n == name => {
                values.push(v.as_str());
                carried.next();
            }
            // Out of order (a row built in code): look it up.
            _ => values.push(
                row.extra
                    .iter()
                    .find(|(n, _)| n == name)
                    .map_or("", |(_, v)| v.as_str()),
            ),
        }
    }
    values
}

/// Writes rows as a CSV job file: every known column, then the given extra columns.
pub struct CsvJobWriter<W: Write> {
    out: csv::Writer<W>,
    extras: Vec<Arc<str>>,
    /// Disarm spreadsheet formulas (reports a person may open; see [`neutralise`]).
    neutralised: bool,
}

/// Whether a cell starting with this byte needs the `'` of [`neutralise`].
fn disarmed_by_quote(first: u8) -> bool {
    matches!(first, b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r' | b'\'')
}

/// Neutralises spreadsheet formulas (`=HYPERLINK(...)`) in report cells meant to be opened in a
/// spreadsheet: a leading `'` makes them text. A cell that starts with `'` gets one more, so
/// that [`unneutralise`] is its exact inverse.
pub fn neutralise(cell: &str) -> std::borrow::Cow<'_, str> {
    match cell.as_bytes().first() {
        Some(&b) if disarmed_by_quote(b) => std::borrow::Cow::Owned(format!("'{cell}")),
        _ => std::borrow::Cow::Borrowed(cell),
    }
}

/// The inverse of [`neutralise`], applied to every cell (and header name) the CSV job reader
/// reads: a `'` before a character that [`neutralise`] quotes is dropped.
pub fn unneutralise(cell: &[u8]) -> &[u8] {
    match cell {
        [b'\'', next, ..] if disarmed_by_quote(*next) => &cell[1..],
        _ => cell,
    }
}

/// A cell as a plain job file holds it so that the reader gives it back: only a cell the reader
/// would take for a neutralised one (`'` before a character [`neutralise`] quotes) gets one more
/// `'`.
fn exact(cell: &str) -> std::borrow::Cow<'_, str> {
    if unneutralise(cell.as_bytes()).len() != cell.len() {
        std::borrow::Cow::Owned(format!("'{cell}"))
    } else {
        std::borrow::Cow::Borrowed(cell)
    }
}

/// A CSV writer for a file a person may open in a spreadsheet: every field quoted, so that a
/// `;` inside a value cannot split it in `;`-separated locales.
pub fn spreadsheet_csv<W: Write>(out: W) -> csv::Writer<W> {
    csv::WriterBuilder::new()
        .quote_style(csv::QuoteStyle::Always)
        .from_writer(out)
}

impl<W: Write> CsvJobWriter<W> {
    pub fn new(out: W, extras: Vec<Arc<str>>) -> csv::Result<Self> {
        Self::start(csv::Writer::from_writer(out), extras, false)
    }

    /// A writer for a report that is also a job (failed, pending, revert): fields quoted and
    /// cells (header names too) that a spreadsheet would run as formulas disarmed — in a way
    /// the job reader undoes, so the report runs again with the operator's own values.
    pub fn for_report(out: W, extras: Vec<Arc<str>>) -> csv::Result<Self> {
        Self::start(spreadsheet_csv(out), extras, true)
    }

    fn start(
        mut out: csv::Writer<W>,
        extras: Vec<Arc<str>>,
        neutralised: bool,
    ) -> csv::Result<Self> {
        let header = Column::ALL
            .iter()
            .map(|c| c.name())
            .chain(extras.iter().map(|e| &**e))
            .map(|name| {
                if neutralised {
                    neutralise(name)
                } else {
                    name.into()
                }
            });
        out.write_record(header.map(|n| n.into_owned()))?;
        Ok(CsvJobWriter {
            out,
            extras,
            neutralised,
        })
    }

    pub fn write(&mut self, row: &JobRow) -> csv::Result<()> {
        let values = row_values(row);
        let known = values.iter().map(|v| v.as_deref().unwrap_or(""));
        let carried = extra_values(row, &self.extras);
        let extra = carried.iter().copied();
        let neutralised = self.neutralised;
        self.out.write_record(known.chain(extra).map(|cell| {
            if neutralised {
                neutralise(cell).into_owned().into_bytes()
            } else {
                exact(cell).into_owned().into_bytes()
            }
        }))
    }

    pub fn finish(mut self) -> std::io::Result<W> {
        self.out.flush()?;
        self.out.into_inner().map_err(|e| e.into_error())
    }
}

/// Writes rows as a JSONL job file: one object per row with the non-blank known keys and the
/// row's extra keys.
pub struct JsonlJobWriter<W: Write> {
    out: W,
}

impl<W: Write> JsonlJobWriter<W> {
    pub fn new(out: W) -> Self {
        JsonlJobWriter { out }
    }

    pub fn write(&mut self, row: &JobRow) -> std::io::Result<()> {
        let mut object = serde_json::Map::new();
        for (col, value) in Column::ALL.iter().zip(row_values(row)) {
            if let Some(value) = value {
                object.insert(col.name().to_string(), serde_json::Value::String(value));
            }
        }
        for (name, value) in &row.extra {
            object.insert(name.to_string(), serde_json::Value::String(value.clone()));
        }
        serde_json::to_writer(&mut self.out, &object)?;
        self.out.write_all(b"\n")
    }

    pub fn finish(mut self) -> std::io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}
