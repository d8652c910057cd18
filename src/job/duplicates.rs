//! Cross-row checks of SPEC 1.4: the same target twice with the same action is a warning; the
//! same target with conflicting actions outside one `group` is an error. The warning promises
//! "it will be done once": the repeats are returned (line → line of the first), and a run
//! skips them.
//!
//! These need every row's target, which a streaming pass cannot keep in memory without growing
//! with the file. So each row becomes a fixed-size record (target as a 128-bit number, action,
//! parameter and group fingerprints, line); records are sorted in fixed-size chunks, chunks
//! beyond the first are spilled to anonymous temporary files, and a k-way merge walks them in
//! target order. Memory is bounded by the chunk size whatever the row count.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};

use super::diagnostic::{Diagnostic, Diagnostics};
use super::model::{Action, JobRow, Target};

/// Records sorted in memory before a chunk is spilled (48 bytes each: 3 MiB).
const CHUNK_RECORDS: usize = 64 * 1024;
const RECORD_BYTES: usize = 48;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Record {
    // Field order is sort order: by target, then by line.
    provider: u16,
    is_euicc: u8,
    id_len: u8,
    id: u128,
    line: u64,
    action: u8,
    params: u64,
    group: u64,
}

impl Record {
    fn encode(&self, out: &mut [u8; RECORD_BYTES]) {
        out[0..2].copy_from_slice(&self.provider.to_le_bytes());
        out[2] = self.is_euicc;
        out[3] = self.id_len;
        out[4] = self.action;
        out[5..8].fill(0);
        out[8..24].copy_from_slice(&self.id.to_le_bytes());
        out[24..32].copy_from_slice(&self.line.to_le_bytes());
        out[32..40].copy_from_slice(&self.params.to_le_bytes());
        out[40..48].copy_from_slice(&self.group.to_le_bytes());
    }

    fn decode(b: &[u8; RECORD_BYTES]) -> Record {
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        Record {
            provider: u16::from_le_bytes([b[0], b[1]]),
            is_euicc: b[2],
            id_len: b[3],
            action: b[4],
            id: u128::from_le_bytes(b[8..24].try_into().expect("16 bytes")),
            line: u64_at(24),
            params: u64_at(32),
            group: u64_at(40),
        }
    }

    fn same_target(&self, other: &Record) -> bool {
        (self.provider, self.is_euicc, self.id_len, self.id)
            == (other.provider, other.is_euicc, other.id_len, other.id)
    }
}

fn fingerprint(value: &impl Hash) -> u64 {
    // SipHash with fixed keys: deterministic across runs, and collisions between different
    // parameters or group names are negligible for a warning/error decision.
    let mut h = std::hash::DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

/// Collects the rows of one file and reports duplicates and conflicts at the end.
#[derive(Default)]
pub struct DuplicateCheck {
    providers: HashMap<String, u16>,
    provider_names: Vec<String>,
    chunk: Vec<Record>,
    spilled: Vec<File>,
}

impl DuplicateCheck {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, row: &JobRow) -> io::Result<()> {
        let provider = match self.providers.get(&row.provider) {
            Some(&i) => i,
            None => {
                let i = u16::try_from(self.provider_names.len()).unwrap_or(u16::MAX);
                self.providers.insert(row.provider.clone(), i);
                self.provider_names.push(row.provider.clone());
                i
            }
        };
        // Both spellings of one ICCID (19 digits without its check digit, 20 with) are one
        // target.
        let (is_euicc, id) = match &row.target {
            Target::Sim { iccid, .. } => (0, iccid.canonical()),
            Target::Euicc { eid, .. } => (1, eid.as_str().to_string()),
        };
        self.chunk.push(Record {
            provider,
            is_euicc,
            id_len: id.len() as u8,
            id: id
                .parse()
                .expect("validated identifiers are at most 32 digits"),
            line: row.line,
            action: row.action() as u8,
            params: fingerprint(&row.operation),
            group: row.group.as_ref().map_or(0, |g| fingerprint(g) | 1),
        });
        if self.chunk.len() >= CHUNK_RECORDS {
            self.spill()?;
        }
        Ok(())
    }

    fn spill(&mut self) -> io::Result<()> {
        self.chunk.sort_unstable();
        let mut file = BufWriter::new(tempfile::tempfile()?);
        let mut buf = [0u8; RECORD_BYTES];
        for record in self.chunk.drain(..) {
            record.encode(&mut buf);
            file.write_all(&buf)?;
        }
        let mut file = file.into_inner().map_err(|e| e.into_error())?;
        file.seek(SeekFrom::Start(0))?;
        self.spilled.push(file);
        Ok(())
    }

    /// Walks all records in target order and reports what it finds; returns the repeats of an
    /// earlier row's change, as (line, line of the first), by line.
    pub fn finish(mut self, out: &mut Diagnostics) -> io::Result<Vec<(u64, u64)>> {
        self.chunk.sort_unstable();
        let mut sources: Vec<Box<dyn Iterator<Item = io::Result<Record>>>> = Vec::new();
        for file in std::mem::take(&mut self.spilled) {
            sources.push(Box::new(SpillReader {
                inner: BufReader::with_capacity(32 * 1024, file),
            }));
        }
        sources.push(Box::new(
            std::mem::take(&mut self.chunk).into_iter().map(Ok),
        ));

        let mut heap = BinaryHeap::new();
        for (i, source) in sources.iter_mut().enumerate() {
            if let Some(r) = source.next() {
                heap.push(Reverse((r?, i)));
            }
        }
        let mut first: Option<Record> = None;
        let mut repeats = Vec::new();
        while let Some(Reverse((record, i))) = heap.pop() {
            if let Some(next) = sources[i].next() {
                heap.push(Reverse((next?, i)));
            }
            match first {
                Some(f) if f.same_target(&record) => {
                    if self.compare(&f, &record, out) {
                        repeats.push((record.line, f.line));
                    }
                }
                _ => first = Some(record),
            }
        }
        repeats.sort_unstable();
        Ok(repeats)
    }

    /// Reports a later row of the first's target; true when it repeats the first's change.
    fn compare(&self, first: &Record, later: &Record, out: &mut Diagnostics) -> bool {
        let same_group = first.group != 0 && first.group == later.group;
        if same_group {
            return false; // steps of one group run in order: that is what groups are for
        }
        let what = if first.is_euicc == 1 { "EID" } else { "ICCID" };
        let id = format!("{:0width$}", later.id, width = later.id_len as usize);
        let provider = &self.provider_names[later.provider as usize];
        let action = Action::ALL[later.action as usize];
        if first.action == later.action && first.params == later.params {
            out.push(Diagnostic::warning(
                later.line,
                format!(
                    "duplicate: {what} {id} at {provider} already has `{action}` at line {}; it will be done once",
                    first.line
                ),
            ));
            true
        } else {
            let first_action = Action::ALL[first.action as usize];
            let detail = if first.action == later.action {
                format!("`{action}` with different parameters")
            } else {
                format!("`{action}`")
            };
            out.push(Diagnostic::error(
                later.line,
                format!(
                    "conflict: {what} {id} at {provider} gets {detail} here but `{first_action}` at line {}; \
                     remove one, or put both rows in one `group` to run them in order",
                    first.line
                ),
            ));
            false
        }
    }
}

struct SpillReader {
    inner: BufReader<File>,
}

impl Iterator for SpillReader {
    type Item = io::Result<Record>;
    fn next(&mut self) -> Option<Self::Item> {
        let mut buf = [0u8; RECORD_BYTES];
        match self.inner.read_exact(&mut buf) {
            Ok(()) => Some(Ok(Record::decode(&buf))),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => None,
            Err(e) => Some(Err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::diagnostic::Severity;
    use crate::job::ids::{luhn_complete, Iccid};
    use crate::job::model::{Operation, ProviderKind};

    fn row(line: u64, iccid: &str, operation: Operation, group: Option<&str>) -> JobRow {
        JobRow {
            line,
            id: line.to_string(),
            provider: "emnify".into(),
            kind: ProviderKind::Emnify,
            target: Target::Sim {
                iccid: Iccid::from_trusted(iccid.into()),
                eid: None,
            },
            operation,
            group: group.map(str::to_string),
            not_before: None,
            extra: vec![],
        }
    }

    #[test]
    fn record_encoding_round_trips() {
        let r = Record {
            provider: 3,
            is_euicc: 1,
            id_len: 32,
            id: 89049011803455664400046832584649,
            line: 123_456_789,
            action: 12,
            params: u64::MAX - 5,
            group: 77,
        };
        let mut buf = [0u8; RECORD_BYTES];
        r.encode(&mut buf);
        assert_eq!(Record::decode(&buf), r);
    }

    fn check(rows: &[JobRow]) -> Diagnostics {
        let mut dup = DuplicateCheck::new();
        for r in rows {
            dup.add(r).unwrap();
        }
        let mut out = Diagnostics::with_cap(100);
        dup.finish(&mut out).unwrap();
        out
    }

    #[test]
    fn repeats_are_returned_and_both_iccid_spellings_are_one_target() {
        let long = "89883030000000000015";
        let short = &long[..19];
        let mut dup = DuplicateCheck::new();
        for r in [
            row(2, long, Operation::Suspend, None),
            row(3, short, Operation::Suspend, None),
            row(4, long, Operation::Suspend, Some("g")),
            row(5, short, Operation::Activate, None),
        ] {
            dup.add(&r).unwrap();
        }
        let mut out = Diagnostics::with_cap(10);
        let repeats = dup.finish(&mut out).unwrap();
        assert_eq!(repeats, [(3, 2), (4, 2)]);
        assert_eq!(out.error_count(), 1, "line 5 conflicts with line 2");
    }

    #[test]
    fn duplicates_warn_conflicts_fail_groups_pass() {
        let a = "89883030000080139311";
        let b = "89883030000000001294";
        let out = check(&[
            row(2, a, Operation::Suspend, None),
            row(3, b, Operation::Suspend, Some("g")),
            row(4, a, Operation::Suspend, None),
            row(5, b, Operation::Activate, Some("g")),
            row(6, a, Operation::Activate, None),
            row(7, b, Operation::Move { target: "1".into() }, Some("h")),
        ]);
        let found: Vec<(Option<u64>, Severity)> =
            out.sorted().iter().map(|d| (d.line, d.severity)).collect();
        assert_eq!(
            found,
            [
                (Some(4), Severity::Warning),
                (Some(6), Severity::Error),
                (Some(7), Severity::Error)
            ]
        );
    }

    #[test]
    fn finds_conflicts_across_spilled_chunks() {
        let n = CHUNK_RECORDS as u64 * 2 + 10;
        let mut dup = DuplicateCheck::new();
        for i in 0..n {
            let iccid = luhn_complete(&format!("8988303{:012}", i % (n - 1)));
            let op = if i == n - 1 {
                Operation::Activate
            } else {
                Operation::Suspend
            };
            dup.add(&row(i + 2, &iccid, op, None)).unwrap();
        }
        assert_eq!(dup.spilled.len(), 2);
        let mut out = Diagnostics::with_cap(10);
        dup.finish(&mut out).unwrap();
        assert_eq!(out.error_count(), 1);
        assert_eq!(out.warning_count(), 0);
        assert_eq!(out.sorted()[0].line, Some(n + 1));
    }
}
