//! One streaming reader over a job file of either format, yielding typed rows or the problems
//! of each row in file order. `validate`, `plan` and `run` all read job files through this.

use std::io::BufReader;
use std::path::Path;

use super::csv_rows::CsvRows;
use super::diagnostic::Diagnostic;
use super::jsonl_rows::JsonlRows;
use super::parse::{parse_row, ParseOptions, Parsed};
use super::source::{self, JobFormat, RawRow, ReadProblem};

/// Either format's raw rows; one virtual call per row is nothing next to parsing it.
type Rows = Box<dyn Iterator<Item = Result<RawRow, ReadProblem>>>;

/// What reading one row gave.
#[derive(Debug)]
pub enum RowResult {
    Valid(Parsed),
    /// The row's problems; reading goes on.
    Invalid(Vec<Diagnostic>),
    /// The file cannot be read further (I/O error, a line over the cap).
    Fatal(Diagnostic),
}

pub struct JobReader {
    rows: Rows,
    options: ParseOptions,
    header_diagnostics: Vec<Diagnostic>,
    extra_columns: Vec<std::sync::Arc<str>>,
}

impl JobReader {
    /// Opens a job file; `format` overrides the extension.
    pub fn open(
        path: &Path,
        format: Option<JobFormat>,
        options: ParseOptions,
    ) -> Result<JobReader, Diagnostic> {
        let format = format_of(path, format)?;
        let input = source::open(path).map_err(|p| p.diagnostic)?;
        Self::over(input, format, options)
    }

    /// Reads a job from any source of its bytes (`path` names it, for its format).
    pub fn from_read(
        input: impl std::io::Read + 'static,
        path: &Path,
        format: Option<JobFormat>,
        options: ParseOptions,
    ) -> Result<JobReader, Diagnostic> {
        let format = format_of(path, format)?;
        let input = source::from_read(input).map_err(|p| p.diagnostic)?;
        Self::over(input, format, options)
    }

    fn over(
        input: impl std::io::Read + 'static,
        format: JobFormat,
        options: ParseOptions,
    ) -> Result<JobReader, Diagnostic> {
        let input = BufReader::with_capacity(64 * 1024, input);
        let (rows, header_diagnostics, extra_columns): (Rows, _, _) = match format {
            JobFormat::Csv => {
                let (rows, diags) = CsvRows::new(input).map_err(|p| p.diagnostic)?;
                let extras = rows.extra_columns();
                (Box::new(rows), diags, extras)
            }
            JobFormat::Jsonl => (Box::new(JsonlRows::new(input)), Vec::new(), Vec::new()),
        };
        Ok(JobReader {
            rows,
            options,
            header_diagnostics,
            extra_columns,
        })
    }

    /// The carried extra columns in file order (CSV; for JSONL each row carries its own keys).
    pub fn extra_columns(&self) -> Vec<std::sync::Arc<str>> {
        self.extra_columns.clone()
    }

    /// Passes over the next `rows` rows without parsing them (rows an earlier invocation
    /// finished); stops early at the end of the file.
    pub fn skip_rows(&mut self, rows: u64) {
        for _ in 0..rows {
            if self.rows.next().is_none() {
                return;
            }
        }
    }

    /// Problems with the CSV header's names (near misses, repeats).
    pub fn header_diagnostics(&self) -> &[Diagnostic] {
        &self.header_diagnostics
    }
}

/// The format given, else the one the file name says.
fn format_of(path: &Path, format: Option<JobFormat>) -> Result<JobFormat, Diagnostic> {
    format.or_else(|| JobFormat::from_path(path)).ok_or_else(|| {
        Diagnostic::error(
            None,
            "cannot tell the format from the file name: use a .csv, .jsonl or .ndjson extension, or pass --format csv|jsonl",
        )
    })
}

impl Iterator for JobReader {
    type Item = RowResult;

    fn next(&mut self) -> Option<RowResult> {
        Some(match self.rows.next()? {
            Ok(raw) => match parse_row(&raw, &self.options) {
                Ok(parsed) => RowResult::Valid(parsed),
                Err(diags) => RowResult::Invalid(diags),
            },
            Err(problem) if problem.fatal => RowResult::Fatal(problem.diagnostic),
            Err(problem) => RowResult::Invalid(vec![problem.diagnostic]),
        })
    }
}
