//! The validation pass of SPEC 1.4 over one job file: every row checked in one streaming pass,
//! row counts per provider and action, then the cross-row duplicate/conflict check. Memory is
//! bounded whatever the row count (diagnostics are capped, duplicates use an external sort).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use super::diagnostic::{Diagnostic, Diagnostics, DEFAULT_DIAGNOSTIC_CAP};
use super::duplicates::DuplicateCheck;
use super::model::Action;
use super::parse::ParseOptions;
use super::reader::{JobReader, RowResult};
use super::source::JobFormat;

/// The outcome of validating one file.
#[derive(Debug)]
pub struct FileValidation {
    pub path: String,
    pub valid_rows: u64,
    pub invalid_rows: u64,
    /// Valid rows per (provider name, action).
    pub counts: BTreeMap<(String, Action), u64>,
    pub diagnostics: Diagnostics,
    /// The file could not be read to its end.
    pub unreadable: bool,
    /// Rows that repeat an earlier row's change (same target, action and parameters): (line,
    /// line of the first), by line. A run does each such change once and skips the repeats.
    pub duplicate_of: Vec<(u64, u64)>,
    /// Valid rows outside any `group` whose target is a SIM named by its ICCID, per (provider
    /// name, action): the rows an inventory listing could answer. Empty for [`Self::clean`].
    pub listable: BTreeMap<(String, Action), u64>,
    /// Valid rows in a `group` (`None`: not known, for an earlier check that did not count).
    pub grouped_rows: Option<u64>,
}

impl FileValidation {
    /// A file known to be valid from an earlier check of the same bytes (no diagnostics).
    pub fn clean(
        path: &Path,
        valid_rows: u64,
        counts: impl IntoIterator<Item = (String, Action, u64)>,
        duplicate_of: Vec<(u64, u64)>,
        grouped_rows: Option<u64>,
    ) -> FileValidation {
        FileValidation {
            path: path.display().to_string(),
            valid_rows,
            invalid_rows: 0,
            counts: counts.into_iter().map(|(p, a, n)| ((p, a), n)).collect(),
            diagnostics: Diagnostics::with_cap(DEFAULT_DIAGNOSTIC_CAP),
            unreadable: false,
            duplicate_of,
            listable: BTreeMap::new(),
            grouped_rows,
        }
    }

    /// A file that could not be read at all.
    pub fn refused(path: &Path, message: impl Into<String>) -> FileValidation {
        let mut diagnostics = Diagnostics::with_cap(DEFAULT_DIAGNOSTIC_CAP);
        diagnostics.push(Diagnostic::error(None, message));
        FileValidation {
            path: path.display().to_string(),
            valid_rows: 0,
            invalid_rows: 0,
            counts: BTreeMap::new(),
            diagnostics,
            unreadable: true,
            duplicate_of: Vec::new(),
            listable: BTreeMap::new(),
            grouped_rows: None,
        }
    }

    pub fn is_valid(&self) -> bool {
        self.diagnostics.error_count() == 0
    }
}

/// Machine-readable form of a file's validation (`validate --json`).
#[derive(Debug, Serialize)]
pub struct ValidationSummary<'a> {
    pub path: &'a str,
    pub valid: bool,
    pub rows: u64,
    pub invalid_rows: u64,
    pub errors: u64,
    pub warnings: u64,
    pub counts: Vec<CountEntry<'a>>,
    pub messages: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct CountEntry<'a> {
    pub provider: &'a str,
    pub action: Action,
    pub rows: u64,
}

impl FileValidation {
    pub fn summary(&self) -> ValidationSummary<'_> {
        ValidationSummary {
            path: &self.path,
            valid: self.is_valid(),
            rows: self.valid_rows,
            invalid_rows: self.invalid_rows,
            errors: self.diagnostics.error_count(),
            warnings: self.diagnostics.warning_count(),
            counts: self
                .counts
                .iter()
                .map(|((provider, action), rows)| CountEntry {
                    provider,
                    action: *action,
                    rows: *rows,
                })
                .collect(),
            messages: self
                .diagnostics
                .sorted()
                .iter()
                .map(|d| d.display(&self.path).to_string())
                .collect(),
        }
    }
}

/// Validates one job file, reading it once.
pub fn validate_file(
    path: &Path,
    format: Option<JobFormat>,
    options: &ParseOptions,
) -> FileValidation {
    validate(path, JobReader::open(path, format, options.clone()))
}

/// Validates a job read from any source of its bytes; `path` names it in the diagnostics.
pub fn validate_read(
    input: impl std::io::Read + 'static,
    path: &Path,
    format: Option<JobFormat>,
    options: &ParseOptions,
) -> FileValidation {
    validate(
        path,
        JobReader::from_read(input, path, format, options.clone()),
    )
}

fn validate(path: &Path, opened: Result<JobReader, Diagnostic>) -> FileValidation {
    let mut result = FileValidation {
        path: path.display().to_string(),
        valid_rows: 0,
        invalid_rows: 0,
        counts: BTreeMap::new(),
        diagnostics: Diagnostics::with_cap(DEFAULT_DIAGNOSTIC_CAP),
        unreadable: false,
        duplicate_of: Vec::new(),
        listable: BTreeMap::new(),
        grouped_rows: Some(0),
    };
    let reader = match opened {
        Ok(reader) => reader,
        Err(diag) => {
            result.diagnostics.push(diag);
            result.unreadable = true;
            return result;
        }
    };
    for diag in reader.header_diagnostics() {
        result.diagnostics.push(diag.clone());
    }
    let mut duplicates = DuplicateCheck::new();
    for item in reader {
        match item {
            RowResult::Valid(parsed) => {
                result.valid_rows += 1;
                let row = &parsed.row;
                let key = (row.provider.clone(), row.action());
                if row.group.is_some() {
                    *result.grouped_rows.get_or_insert(0) += 1;
                } else if row.target.iccid().is_some() {
                    *result.listable.entry(key.clone()).or_default() += 1;
                }
                *result.counts.entry(key).or_default() += 1;
                for w in parsed.warnings {
                    result.diagnostics.push(w);
                }
                if let Err(e) = duplicates.add(&parsed.row) {
                    result.diagnostics.push(spill_error(&e));
                    result.unreadable = true;
                    return result;
                }
            }
            RowResult::Invalid(diags) => {
                result.invalid_rows += 1;
                for d in diags {
                    result.diagnostics.push(d);
                }
            }
            RowResult::Fatal(diag) => {
                result.diagnostics.push(diag);
                result.unreadable = true;
                return result;
            }
        }
    }
    if result.valid_rows == 0 && result.invalid_rows == 0 {
        result.diagnostics.push(Diagnostic::error(
            None,
            "the file has no rows (only a header, blank or comment lines)",
        ));
    }
    match duplicates.finish(&mut result.diagnostics) {
        Ok(repeats) => result.duplicate_of = repeats,
        Err(e) => result.diagnostics.push(spill_error(&e)),
    }
    result
}

fn spill_error(e: &std::io::Error) -> Diagnostic {
    Diagnostic::error(
        None,
        format!("cannot check for duplicate rows: temporary file error: {e} (is TMPDIR writable and not full?)"),
    )
}
