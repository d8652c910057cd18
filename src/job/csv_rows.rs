//! Streaming CSV job reader: one header row (names in any case and order), then one row per
//! record. Every cell passes `write::unneutralise`, undoing the `'` simbatch's reports put
//! before cells a spreadsheet would run, so a report reads back as exactly what was written. Quoted fields may hold commas and newlines; blank lines and `#` comment lines are
//! skipped; CRLF is accepted. Memory stays constant: one record is held at a time.
//!
//! Physical lines are split here, not by the csv crate, because its positions skip comment
//! and blank lines and so would put wrong numbers in `FILE:LINE` messages. A record continues
//! onto the next line while a quoted field is open (odd number of `"` so far); each complete
//! record is then split into fields by `csv-core`.

use std::io::BufRead;
use std::sync::Arc;

use super::columns::{match_header, Column, HeaderMatch};
use super::diagnostic::Diagnostic;
use super::source::{io_problem, RawRow, ReadProblem, MAX_LINE_BYTES};
use super::write::unneutralise;

/// How a CSV column is used.
#[derive(Debug, Clone)]
enum Slot {
    Known(Column),
    Extra(Arc<str>),
    /// A near-miss or a repeated name: already reported at the header, its cells are not used.
    Refused,
}

/// Splits a byte stream into CSV records with the line each starts on.
struct RecordSplitter<R: BufRead> {
    input: R,
    line: u64,
    record: Vec<u8>,
    fields: Vec<u8>,
    ends: Vec<usize>,
    parser: csv_core::Reader,
}

impl<R: BufRead> RecordSplitter<R> {
    fn new(input: R) -> Self {
        RecordSplitter {
            input,
            line: 0,
            record: Vec::with_capacity(1024),
            fields: vec![0; 1024],
            ends: vec![0; 32],
            parser: csv_core::Reader::new(),
        }
    }

    /// Reads the next non-blank, non-comment record; returns its first line, or `None` at the end.
    fn next_record(&mut self) -> Result<Option<u64>, ReadProblem> {
        self.record.clear();
        let mut start = 0;
        let mut quotes = 0usize;
        loop {
            let before = self.record.len();
            let n = self
                .input
                .read_until(b'\n', &mut self.record)
                .map_err(|e| io_problem(&e))?;
            if n == 0 {
                if self.record.is_empty() {
                    return Ok(None);
                }
                if quotes % 2 == 1 {
                    return Err(ReadProblem::fatal(
                        start,
                        "a quoted field opened on this line is never closed (a stray `\"`?)",
                    ));
                }
                return Ok(Some(start));
            }
            self.line += 1;
            let new = &self.record[before..];
            if before == 0 {
                let text = new.trim_ascii_start();
                if text.is_empty() || text.starts_with(b"#") {
                    self.record.clear();
                    continue;
                }
                start = self.line;
            }
            quotes += new.iter().filter(|&&b| b == b'"').count();
            if quotes % 2 == 0 {
                return Ok(Some(start));
            }
            if self.record.len() > MAX_LINE_BYTES {
                return Err(ReadProblem::fatal(
                    start,
                    format!(
                        "a quoted field opened on this line is still open after {MAX_LINE_BYTES} bytes (a stray `\"`?)"
                    ),
                ));
            }
        }
    }

    /// Splits the current record into fields (as byte ranges of `self.fields`).
    fn split(&mut self) -> usize {
        self.parser.reset();
        let mut input = &self.record[..];
        let (mut out_pos, mut end_pos) = (0, 0);
        loop {
            let (result, nin, nout, nend) = self.parser.read_record(
                input,
                &mut self.fields[out_pos..],
                &mut self.ends[end_pos..],
            );
            input = &input[nin..];
            out_pos += nout;
            end_pos += nend;
            match result {
                csv_core::ReadRecordResult::InputEmpty => {
                    // The record's bytes are all given: an empty input tells csv-core it ended.
                    if input.is_empty() {
                        let (res, _, nout, nend) = self.parser.read_record(
                            &[],
                            &mut self.fields[out_pos..],
                            &mut self.ends[end_pos..],
                        );
                        out_pos += nout;
                        end_pos += nend;
                        if matches!(res, csv_core::ReadRecordResult::OutputFull) {
                            let len = self.fields.len() * 2;
                            self.fields.resize(len, 0);
                            continue;
                        }
                        if matches!(res, csv_core::ReadRecordResult::OutputEndsFull) {
                            let len = self.ends.len() * 2;
                            self.ends.resize(len, 0);
                            continue;
                        }
                        return end_pos;
                    }
                }
                csv_core::ReadRecordResult::OutputFull => {
                    let len = self.fields.len() * 2;
                    self.fields.resize(len, 0);
                }
                csv_core::ReadRecordResult::OutputEndsFull => {
                    let len = self.ends.len() * 2;
                    self.ends.resize(len, 0);
                }
                csv_core::ReadRecordResult::Record | csv_core::ReadRecordResult::End => {
                    return end_pos;
                }
            }
        }
    }

    fn field(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.fields[start..self.ends[i]]
    }
}

/// The rows of a CSV job file.
pub struct CsvRows<R: BufRead> {
    splitter: RecordSplitter<R>,
    slots: Vec<Slot>,
    done: bool,
}

impl<R: BufRead> CsvRows<R> {
    /// Reads and checks the header. Problems with individual header names come back as
    /// diagnostics (validation goes on); a header that cannot drive a job is fatal.
    pub fn new(input: R) -> Result<(Self, Vec<Diagnostic>), ReadProblem> {
        let mut splitter = RecordSplitter::new(input);
        let Some(line) = splitter.next_record()? else {
            return Err(ReadProblem::fatal(
                None,
                "the file has no header line (only blank or comment lines): the first line must name the columns, e.g. `action,provider,iccid`",
            ));
        };
        let count = splitter.split();
        let mut names = Vec::with_capacity(count);
        for i in 0..count {
            let name = std::str::from_utf8(unneutralise(splitter.field(i))).map_err(|_| {
                ReadProblem::fatal(
                    line,
                    "the header is not valid UTF-8; save the file as UTF-8",
                )
            })?;
            // Escaped, so a binary file's header cannot put control characters on the terminal.
            names.push(name.trim().escape_debug().to_string());
        }
        let mut diagnostics = Vec::new();
        let mut slots = Vec::with_capacity(count);
        let mut seen = [false; Column::COUNT];
        for name in &names {
            let slot = match match_header(name) {
                HeaderMatch::Known(col) if seen[col.index()] => {
                    diagnostics.push(Diagnostic::error(
                        line,
                        format!(
                            "column `{}` appears more than once in the header",
                            col.name()
                        ),
                    ));
                    Slot::Refused
                }
                HeaderMatch::Known(col) => {
                    seen[col.index()] = true;
                    Slot::Known(col)
                }
                HeaderMatch::NearMiss(col) => {
                    diagnostics.push(Diagnostic::error(
                        line,
                        format!(
                            "unknown column `{name}`: did you mean `{}`? (rename it, or it would be ignored)",
                            col.name()
                        ),
                    ));
                    Slot::Refused
                }
                HeaderMatch::Extra => Slot::Extra(Arc::from(name.as_str())),
            };
            slots.push(slot);
        }
        if !seen[Column::Action.index()] {
            let looks_like_data = names
                .iter()
                .any(|f| f.len() >= 15 && f.bytes().all(|b| b.is_ascii_digit()));
            let semicolons = names.len() == 1 && names[0].to_ascii_lowercase().contains("action;");
            let message = if looks_like_data {
                format!(
                    "the first line looks like data, not a header (found `{}`): add a header line naming the columns, e.g. `action,provider,iccid`",
                    names.join(",")
                )
            } else if semicolons {
                format!(
                    "the header `{}` is separated by `;`, as Excel writes CSV in some locales: simbatch reads commas; save it as \"CSV UTF-8 (comma delimited)\" (or replace each `;` by `,`)",
                    names[0]
                )
            } else {
                format!(
                    "the header has no `action` column (found: {}); the first line must name the columns, e.g. `action,provider,iccid`",
                    names.join(", ")
                )
            };
            return Err(ReadProblem::fatal(line, message));
        }
        Ok((
            CsvRows {
                splitter,
                slots,
                done: false,
            },
            diagnostics,
        ))
    }

    /// The extra (carried) column names in file order.
    pub fn extra_columns(&self) -> Vec<Arc<str>> {
        self.slots
            .iter()
            .filter_map(|s| match s {
                Slot::Extra(name) => Some(name.clone()),
                _ => None,
            })
            .collect()
    }

    fn convert(&mut self, line: u64) -> Result<Option<RawRow>, ReadProblem> {
        let count = self.splitter.split();
        let splitter = &self.splitter;
        if (0..count).all(|i| splitter.field(i).iter().all(u8::is_ascii_whitespace)) {
            return Ok(None); // a line of bare separators counts as blank
        }
        if count != self.slots.len() {
            return Err(ReadProblem::row(
                line,
                format!(
                    "row has {count} fields but the header has {} columns (an unquoted comma in a value? quote it)",
                    self.slots.len()
                ),
            ));
        }
        let mut row = RawRow {
            line,
            ..RawRow::default()
        };
        for (i, slot) in self.slots.iter().enumerate() {
            let value = std::str::from_utf8(unneutralise(splitter.field(i))).map_err(|e| {
                ReadProblem::row(
                    line,
                    format!(
                        "value is not valid UTF-8 (byte {} of the field); save the file as UTF-8",
                        e.valid_up_to() + 1
                    ),
                )
            })?;
            match slot {
                Slot::Known(col) => {
                    let trimmed = value.trim();
                    if !trimmed.is_empty() {
                        row.values[col.index()] = Some(trimmed.to_string());
                    }
                }
                Slot::Extra(name) => row.extra.push((name.clone(), value.to_string())),
                Slot::Refused => {}
            }
        }
        Ok(Some(row))
    }
}

impl<R: BufRead> Iterator for CsvRows<R> {
    type Item = Result<RawRow, ReadProblem>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            match self.splitter.next_record() {
                Ok(None) => self.done = true,
                Ok(Some(line)) => match self.convert(line) {
                    Ok(None) => continue,
                    Ok(Some(row)) => return Some(Ok(row)),
                    Err(problem) => return Some(Err(problem)),
                },
                Err(problem) => {
                    self.done = true;
                    return Some(Err(problem));
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(input: &str) -> (Vec<Result<RawRow, ReadProblem>>, Vec<Diagnostic>) {
        let (reader, diags) = CsvRows::new(input.as_bytes()).unwrap();
        (reader.collect(), diags)
    }

    #[test]
    fn quoted_fields_crlf_blank_lines_and_comments() {
        let input = "# a comment\r\nAction,ICCID,note\r\n\r\nsuspend, 89883030000080139311 ,\"a, b\nc\"\r\n,,\r\nactivate,89883030000080139311,x\r\n";
        let (rows, diags) = rows(input);
        assert!(diags.is_empty());
        let rows: Vec<RawRow> = rows.into_iter().map(Result::unwrap).collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].line, 4);
        assert_eq!(rows[0].get(Column::Action), Some("suspend"));
        assert_eq!(rows[0].get(Column::Iccid), Some("89883030000080139311"));
        assert_eq!(
            rows[0].extra,
            vec![(Arc::from("note"), "a, b\nc".to_string())]
        );
        assert_eq!(rows[1].line, 7);
    }

    #[test]
    fn header_problems() {
        let (_, diags) = rows("action,rollbak,iccid,ICCID\n");
        assert_eq!(diags.len(), 2);
        assert!(diags[0].message.contains("did you mean `rollback`"));
        assert!(diags[1].message.contains("more than once"));
        let missing = CsvRows::new("iccid,provider\n".as_bytes()).err().unwrap();
        assert!(missing.diagnostic.message.contains("no `action` column"));
        let data = CsvRows::new("suspend,89883030000080139311\n".as_bytes())
            .err()
            .unwrap();
        assert!(data.diagnostic.message.contains("looks like data"));
    }

    #[test]
    fn unclosed_quote_is_fatal_at_its_line() {
        let (reader, _) =
            CsvRows::new("action,iccid\nsuspend,\"89\nsuspend,1\n".as_bytes()).unwrap();
        let results: Vec<_> = reader.collect();
        let problem = results[0].as_ref().unwrap_err();
        assert!(problem.fatal);
        assert_eq!(problem.diagnostic.line, Some(2));
    }

    #[test]
    fn ragged_rows_and_bad_utf8_are_row_errors() {
        let input = b"action,iccid\nsuspend\nsuspend,\xff\xfe\nsuspend,1\n";
        let (reader, _) = CsvRows::new(&input[..]).unwrap();
        let results: Vec<_> = reader.collect();
        assert_eq!(results.len(), 3);
        assert!(results[0]
            .as_ref()
            .unwrap_err()
            .diagnostic
            .message
            .contains("1 fields"));
        assert!(results[1]
            .as_ref()
            .unwrap_err()
            .diagnostic
            .message
            .contains("UTF-8"));
        assert!(results[2].is_ok());
    }
}
