//! Opening a job file: the format (from `--format` or the extension), the encoding checks that
//! must happen before any parsing (UTF-8 BOM stripped, UTF-16 and empty files refused), line
//! endings (LF, CRLF, and a lone CR, which spreadsheets and the csv crate read as a line break:
//! a file with mixed endings must not lose a row), the 1 MiB line cap that keeps memory
//! bounded whatever the input, and the raw row type both readers produce.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::sync::Arc;

use super::columns::Column;
use super::diagnostic::Diagnostic;

/// Longest physical line accepted. Real job rows are a few hundred bytes; anything near this is
/// not a job file, and refusing it keeps a 10 GB single-line file from being read into memory.
pub const MAX_LINE_BYTES: usize = 1 << 20;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum JobFormat {
    Csv,
    Jsonl,
}

impl JobFormat {
    /// The file extension (and stored name) of the format.
    pub fn name(self) -> &'static str {
        match self {
            JobFormat::Csv => "csv",
            JobFormat::Jsonl => "jsonl",
        }
    }

    /// The format named by the file's extension (`.csv`, `.jsonl`, `.ndjson`, any case).
    pub fn from_path(path: &Path) -> Option<JobFormat> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "csv" => Some(JobFormat::Csv),
            "jsonl" | "ndjson" => Some(JobFormat::Jsonl),
            _ => None,
        }
    }
}

/// A row as read, before any checking: trimmed values of the known columns (`None` when absent
/// or blank) and the carried extra columns.
#[derive(Debug, Clone, Default)]
pub struct RawRow {
    pub line: u64,
    pub values: [Option<String>; Column::COUNT],
    pub extra: Vec<(Arc<str>, String)>,
}

impl RawRow {
    pub fn get(&self, col: Column) -> Option<&str> {
        self.values[col.index()].as_deref()
    }
}

/// Something wrong while reading. `fatal` problems end the pass (the rest of the file cannot be
/// read); the others concern one row and reading goes on.
#[derive(Debug, Clone)]
pub struct ReadProblem {
    pub diagnostic: Diagnostic,
    pub fatal: bool,
}

impl ReadProblem {
    pub fn row(line: u64, message: impl Into<String>) -> Self {
        ReadProblem {
            diagnostic: Diagnostic::error(line, message),
            fatal: false,
        }
    }

    pub fn fatal(line: impl Into<Option<u64>>, message: impl Into<String>) -> Self {
        ReadProblem {
            diagnostic: Diagnostic::error(line, message),
            fatal: true,
        }
    }
}

/// The marker error the line cap raises through `io::Read`, so readers can name the line.
#[derive(Debug)]
pub struct LineTooLong {
    pub line: u64,
}

impl std::fmt::Display for LineTooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "line is longer than {MAX_LINE_BYTES} bytes; this does not look like a job file (one row per line)"
        )
    }
}

impl std::error::Error for LineTooLong {}

/// Turns an I/O error from a reader into a fatal problem, naming the line for the line cap.
pub fn io_problem(err: &io::Error) -> ReadProblem {
    match err.get_ref().and_then(|e| e.downcast_ref::<LineTooLong>()) {
        Some(too_long) => ReadProblem::fatal(too_long.line, too_long.to_string()),
        None => ReadProblem::fatal(None, format!("cannot read the file: {err}")),
    }
}

/// Gives every line break as LF (a lone CR, and CRLF, become one LF) and fails a read once
/// any line exceeds [`MAX_LINE_BYTES`]. Counts physical lines to say which.
pub struct LineCapped<R> {
    inner: R,
    run: usize,
    line: u64,
    limit: usize,
    /// The last byte read was a CR (already given as LF): an LF right after it is dropped.
    after_cr: bool,
}

impl<R: Read> LineCapped<R> {
    pub fn new(inner: R) -> Self {
        Self::with_limit(inner, MAX_LINE_BYTES)
    }

    pub fn with_limit(inner: R, limit: usize) -> Self {
        LineCapped {
            inner,
            run: 0,
            line: 1,
            limit,
            after_cr: false,
        }
    }
}

impl<R: Read> Read for LineCapped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let n = self.inner.read(buf)?;
            if n == 0 {
                return Ok(0);
            }
            let mut kept = 0;
            for i in 0..n {
                let b = buf[i];
                if b == b'\n' && self.after_cr {
                    self.after_cr = false;
                    continue; // the CR of this CRLF was the break
                }
                self.after_cr = b == b'\r';
                let b = if self.after_cr { b'\n' } else { b };
                buf[kept] = b;
                kept += 1;
                if b == b'\n' {
                    self.run = 0;
                    self.line += 1;
                } else {
                    self.run += 1;
                    if self.run > self.limit {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            LineTooLong { line: self.line },
                        ));
                    }
                }
            }
            // All of it was the LF of a CRLF split across reads: read on (0 would mean the end).
            if kept > 0 {
                return Ok(kept);
            }
        }
    }
}

/// Opens `path`, refuses empty and UTF-16 files, and strips a UTF-8 byte-order mark.
pub fn open(path: &Path) -> Result<LineCapped<BufReader<File>>, ReadProblem> {
    let file = File::open(path)
        .map_err(|e| ReadProblem::fatal(None, format!("cannot open the job file: {e}")))?;
    from_read(file)
}

/// The checks of [`open`] over any source of a job's bytes (a file, or a copy being taken).
pub fn from_read<R: Read>(input: R) -> Result<LineCapped<BufReader<R>>, ReadProblem> {
    let mut reader = BufReader::with_capacity(64 * 1024, input);
    prepare(&mut reader)?;
    Ok(LineCapped::new(reader))
}

/// The encoding checks of [`open`] for any buffered reader.
pub fn prepare<R: BufRead>(reader: &mut R) -> Result<(), ReadProblem> {
    let head = reader
        .fill_buf()
        .map_err(|e| ReadProblem::fatal(None, format!("cannot read the job file: {e}")))?;
    if head.is_empty() {
        return Err(ReadProblem::fatal(
            None,
            "the file is empty: a job file needs a header line (CSV) or one JSON object per line (JSONL)",
        ));
    }
    if head.starts_with(&[0xFF, 0xFE]) || head.starts_with(&[0xFE, 0xFF]) {
        return Err(ReadProblem::fatal(
            None,
            "the file is UTF-16 encoded; save it as UTF-8 (in Excel: \"CSV UTF-8\")",
        ));
    }
    if head.starts_with(&[0xEF, 0xBB, 0xBF]) {
        reader.consume(3);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_cap_names_the_line() {
        let data = b"short\nalso short\nthis one is far too long\n".to_vec();
        let mut capped = LineCapped::with_limit(&data[..], 12);
        let mut out = Vec::new();
        let err = capped.read_to_end(&mut out).unwrap_err();
        let problem = io_problem(&err);
        assert!(problem.fatal);
        assert_eq!(problem.diagnostic.line, Some(3));
    }

    #[test]
    fn every_line_ending_is_one_lf() {
        let data = b"a\r\nb\rc\nd\r\r\ne\r".to_vec();
        let mut out = Vec::new();
        LineCapped::new(&data[..]).read_to_end(&mut out).unwrap();
        assert_eq!(out, b"a\nb\nc\nd\n\ne\n");
        // A CRLF split across two reads is still one break.
        let mut split = LineCapped::new(io::Read::chain(&b"x\r"[..], &b"\ny"[..]));
        let mut out = Vec::new();
        split.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"x\ny");
    }

    #[test]
    fn bom_is_stripped_and_utf16_refused() {
        let mut with_bom = &b"\xEF\xBB\xBFaction\n"[..];
        prepare(&mut with_bom).unwrap();
        assert_eq!(with_bom, b"action\n");
        let mut utf16 = &b"\xFF\xFEa\0"[..];
        assert!(prepare(&mut utf16)
            .unwrap_err()
            .diagnostic
            .message
            .contains("UTF-16"));
        let mut empty = &b""[..];
        assert!(prepare(&mut empty)
            .unwrap_err()
            .diagnostic
            .message
            .contains("empty"));
    }

    #[test]
    fn format_from_extension() {
        assert_eq!(
            JobFormat::from_path(Path::new("a.CSV")),
            Some(JobFormat::Csv)
        );
        assert_eq!(
            JobFormat::from_path(Path::new("a.ndjson")),
            Some(JobFormat::Jsonl)
        );
        assert_eq!(JobFormat::from_path(Path::new("a.txt")), None);
    }
}
