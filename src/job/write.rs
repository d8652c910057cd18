//! The reverse of parsing: a typed row back to job-file columns. Reports (`failed.csv`,
//! `revert.csv`) are written through this, so that every file simbatch writes is itself a
//! valid job file that parses back to the same rows.

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
        Operation::Move { target } => set(Column::Target, target.clone()),
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

/// Writes rows as a CSV job file: every known column, then the given extra columns.
pub struct CsvJobWriter<W: Write> {
    out: csv::Writer<W>,
    extras: Vec<Arc<str>>,
    /// Disarm spreadsheet formulas (reports a person may open; see [`neutralise`]).
    neutralised: bool,
}

/// Neutralises spreadsheet formulas (`=HYPERLINK(...)`) in report cells meant to be opened in a
/// spreadsheet: a leading quote makes them text.
pub fn neutralise(cell: &str) -> std::borrow::Cow<'_, str> {
    match cell.as_bytes().first() {
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r') => {
            std::borrow::Cow::Owned(format!("'{cell}"))
        }
        _ => std::borrow::Cow::Borrowed(cell),
    }
}

impl<W: Write> CsvJobWriter<W> {
    pub fn new(out: W, extras: Vec<Arc<str>>) -> csv::Result<Self> {
        let mut out = csv::Writer::from_writer(out);
        let header: Vec<&str> = Column::ALL
            .iter()
            .map(|c| c.name())
            .chain(extras.iter().map(|e| &**e))
            .collect();
        out.write_record(&header)?;
        Ok(CsvJobWriter {
            out,
            extras,
            neutralised: false,
        })
    }

    /// A writer for a report that is also a job (failed, pending, revert): cells that a
    /// spreadsheet would run as formulas get a leading `'`.
    pub fn for_report(out: W, extras: Vec<Arc<str>>) -> csv::Result<Self> {
        let mut w = Self::new(out, extras)?;
        w.neutralised = true;
        Ok(w)
    }

    pub fn write(&mut self, row: &JobRow) -> csv::Result<()> {
        let values = row_values(row);
        let known = values.iter().map(|v| v.as_deref().unwrap_or(""));
        let extra = self.extras.iter().map(|name| {
            row.extra
                .iter()
                .find(|(n, _)| n == name)
                .map_or("", |(_, v)| v.as_str())
        });
        let neutralised = self.neutralised;
        self.out.write_record(known.chain(extra).map(|cell| {
            if neutralised {
                neutralise(cell).into_owned().into_bytes()
            } else {
                cell.as_bytes().to_vec()
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
