//! Property-based fuzzing of the job parser and the config parser (cargo-fuzz needs a nightly
//! toolchain and an extra tool; this runs in the normal suite on stable). Inputs: arbitrary
//! bytes, and valid job files mutated byte by byte (insertions, deletions, replacements with
//! bytes that matter to CSV and JSON). Properties: reading and validating never panics, every
//! row is accounted for as valid or invalid, every diagnostic points at a line that exists,
//! and a file with any error is not valid.
//!
//! Longer run: `PROPTEST_CASES=20000 cargo test --release --test it fuzz::` (see README).

use std::io::Write;

use proptest::prelude::*;
use simbatch::job::{validate_file, JobFormat, JobReader, ParseOptions, RowResult};

const CSV: &str = include_str!("../fixtures/valid/all_actions.csv");
const JSONL: &str = include_str!("../fixtures/valid/all_actions.jsonl");

/// Bytes that steer a CSV or JSON parser.
const INTERESTING: &[u8] = b",\"\n\r{}[]:\\#\0\xff\xfe\xef\xbb\xbf \t=1a";

#[derive(Debug, Clone)]
enum Edit {
    Insert(usize, u8),
    Delete(usize),
    Replace(usize, u8),
    Duplicate(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let byte = prop_oneof![
        3 => proptest::sample::select(INTERESTING.to_vec()),
        1 => any::<u8>(),
    ];
    prop_oneof![
        (any::<usize>(), byte.clone()).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<usize>().prop_map(Edit::Delete),
        (any::<usize>(), byte).prop_map(|(i, b)| Edit::Replace(i, b)),
        (any::<usize>(), 1..64usize).prop_map(|(i, n)| Edit::Duplicate(i, n)),
    ]
}

fn mutate(base: &str, edits: &[Edit]) -> Vec<u8> {
    let mut bytes = base.as_bytes().to_vec();
    for e in edits {
        let len = bytes.len().max(1);
        match *e {
            Edit::Insert(i, b) => bytes.insert(i % (len + 1).min(bytes.len() + 1), b),
            Edit::Delete(i) if !bytes.is_empty() => {
                bytes.remove(i % bytes.len());
            }
            Edit::Replace(i, b) if !bytes.is_empty() => {
                let at = i % bytes.len();
                bytes[at] = b;
            }
            Edit::Duplicate(i, n) if !bytes.is_empty() => {
                let at = i % bytes.len();
                let end = (at + n).min(bytes.len());
                let piece = bytes[at..end].to_vec();
                bytes.splice(at..at, piece);
            }
            _ => {}
        }
    }
    bytes
}

/// Reads and validates `bytes` as a job of `format`; checks the properties.
fn check(bytes: &[u8], format: JobFormat) -> Result<(), TestCaseError> {
    let mut file = tempfile::Builder::new()
        .suffix(match format {
            JobFormat::Csv => ".csv",
            JobFormat::Jsonl => ".jsonl",
        })
        .tempfile()
        .unwrap();
    file.write_all(bytes).unwrap();
    file.flush().unwrap();
    let options = ParseOptions::default();
    // Line breaks as the readers count them: LF, CRLF, and a lone CR.
    let lines = bytes
        .iter()
        .enumerate()
        .filter(|(i, b)| **b == b'\n' || (**b == b'\r' && bytes.get(i + 1) != Some(&b'\n')))
        .count() as u64
        + 1;

    let validation = validate_file(file.path(), None, &options);
    for d in validation.diagnostics.sorted() {
        if let Some(line) = d.line {
            prop_assert!(
                line >= 1 && line <= lines,
                "line {line} of {lines}: {}",
                d.message
            );
        }
    }
    if validation.diagnostics.error_count() > 0 {
        prop_assert!(!validation.is_valid());
    }

    if let Ok(reader) = JobReader::open(file.path(), None, options) {
        let valid = reader
            .filter(|item| matches!(item, RowResult::Valid(_)))
            .count() as u64;
        // The reader and the validator agree on which rows are valid (the validator also
        // finds duplicates and conflicts, which make rows invalid only as a file).
        prop_assert_eq!(valid, validation.valid_rows);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_the_csv_reader(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        check(&bytes, JobFormat::Csv)?;
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_jsonl_reader(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        check(&bytes, JobFormat::Jsonl)?;
    }

    #[test]
    fn mutated_csv_jobs_are_read_or_refused_cleanly(edits in proptest::collection::vec(edit(), 1..12)) {
        check(&mutate(CSV, &edits), JobFormat::Csv)?;
    }

    #[test]
    fn mutated_jsonl_jobs_are_read_or_refused_cleanly(edits in proptest::collection::vec(edit(), 1..12)) {
        check(&mutate(JSONL, &edits), JobFormat::Jsonl)?;
    }

    #[test]
    fn config_files_never_panic_the_parser(bytes in proptest::collection::vec(any::<u8>(), 0..512),
                                           edits in proptest::collection::vec(edit(), 0..8)) {
        let base = "[providers.emnify]\nkind = \"emnify\"\nbase_url = \"https://cdn.emnify.net\"\nrate = 5\n";
        let text = String::from_utf8_lossy(&mutate(base, &edits)).into_owned()
            + &String::from_utf8_lossy(&bytes);
        let _ = simbatch::config::Providers::from_toml(&text);
    }
}
