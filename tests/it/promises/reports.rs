//! The reports are the truth and the next job file: written whole or not at all, as new
//! private files in a directory checked before the first change, never through a planted
//! symlink; with every cell a spreadsheet would run disarmed in a way that reading the file
//! back as a job undoes exactly.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use simbatch::job::{JobReader, ParseOptions, RowResult};
use simbatch::sandbox::inventory::{self, EMNIFY_PREFIX, TWILIO_PREFIX};

use crate::run_support::{read_csv, show, RunEnv, TOKEN};

fn emnify_suspensions(numbers: impl IntoIterator<Item = u64>) -> String {
    super::job_of("suspend", "emnify", EMNIFY_PREFIX, numbers)
}

const REPORTS: [&str; 5] = [
    "results.csv",
    "failed.csv",
    "pending.csv",
    "revert.csv",
    "summary.json",
];

/// Case 11: a report file planted as a symlink to a victim file is replaced, not followed (the
/// victim is untouched; the report is a new regular file, mode 0600); a `--reports` that is a
/// file is refused before the first change (exit 2, nothing sent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_11_reports_are_new_private_files_in_a_directory_checked_first() {
    let env = RunEnv::new(super::sandbox(400)).await;
    let path = env.write_job("job.csv", &emnify_suspensions([1, 2, 3]));
    let reports = env.dir.path().join("out");
    std::fs::create_dir(&reports).unwrap();
    let victim = env.dir.path().join("victim.txt");
    std::fs::write(&victim, "precious\n").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
    for report in REPORTS {
        std::os::unix::fs::symlink(&victim, reports.join(report)).unwrap();
    }
    let output = env
        .run(&["run", "-q", "--reports", "out", path.to_str().unwrap()])
        .await;
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert_eq!(
        std::fs::metadata(&victim).unwrap().permissions().mode() & 0o777,
        0o644
    );
    for report in REPORTS {
        let meta = std::fs::symlink_metadata(reports.join(report)).unwrap();
        assert!(meta.file_type().is_file(), "{report} is a regular file");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{report}");
    }
    assert_eq!(read_csv(&reports.join("results.csv")).len(), 3);

    // A --reports that is a file: refused before anything is sent.
    env.sb.sandbox.shared.reset();
    let other = env.write_job("other.csv", &emnify_suspensions([4, 6]));
    std::fs::write(env.dir.path().join("not-a-dir"), "x").unwrap();
    let output = env
        .run(&["run", "--reports", "not-a-dir", other.to_str().unwrap()])
        .await;
    let text = show(&output);
    assert_eq!(output.status.code(), Some(2), "{text}");
    assert!(text.contains("not-a-dir"), "{text}");
    assert!(text.contains("nothing was sent"), "{text}");
    assert_eq!(env.sb.stats().await["requests_total"], 0, "{text}");
}

/// The hostile values of case 16: each starts with a character a spreadsheet evaluates, or
/// hides a formula behind a `;` (a field separator in many locales), or is already quoted.
const HOSTILE: [&str; 7] = [
    "-fleet", "=1+2", "+1", "@SUM(A1)", "'=kept", "x;=1+2", "'plain",
];

/// A row as simbatch reads it: (id, action, iccid, target, extras).
type ReadRow = (String, String, String, String, Vec<(String, String)>);

/// The rows of a CSV job file as simbatch reads them.
fn job_rows(path: &Path) -> Vec<ReadRow> {
    JobReader::open(path, None, ParseOptions::default())
        .unwrap()
        .map(|item| match item {
            RowResult::Valid(parsed) => {
                let row = parsed.row;
                let target = match &row.operation {
                    simbatch::job::Operation::Move { target } => target.clone(),
                    _ => String::new(),
                };
                (
                    row.id.clone(),
                    row.action().name().to_string(),
                    row.target
                        .iccid()
                        .map(|i| i.to_string())
                        .unwrap_or_default(),
                    target,
                    row.extra
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.clone()))
                        .collect(),
                )
            }
            other => panic!("{} does not read back: {other:?}", path.display()),
        })
        .collect()
}

/// Case 16: hostile values — in a known column (a Twilio Fleet name), in extra columns, and as
/// an extra column's *name* — come out disarmed in every CSV report (no cell, header included,
/// starts with `=`, `+`, `-`, `@`; a value with `;` is quoted), and failed.csv and revert.csv
/// read back as jobs give the operator's values exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_16_reports_are_disarmed_for_spreadsheets_and_read_back_exactly() {
    let env = RunEnv::new(super::sandbox(400)).await;
    let quote = |v: &str| format!("\"{}\"", v.replace('"', "\"\""));
    let mut job = String::from("action,provider,iccid,target,note,\"=1+2\"\n");
    for (n, value) in HOSTILE.iter().enumerate() {
        let i = n as u64 + 1;
        // A move to a Fleet that does not exist: failed, so the row is in failed.csv.
        job.push_str(&format!(
            "move,twilio,{},{},{},{}\n",
            inventory::iccid(TWILIO_PREFIX, i),
            quote(value),
            quote(value),
            quote(&format!("{value}{n}"))
        ));
        // A suspension that succeeds, so the row is in revert.csv.
        job.push_str(&format!(
            "suspend,emnify,{},,{},{}\n",
            inventory::iccid(EMNIFY_PREFIX, [1, 2, 3, 4, 6, 7, 8][n]),
            quote(value),
            quote(value)
        ));
    }
    let path = env.write_job("hostile.csv", &job);
    let output = env.run(&["run", "-q", path.to_str().unwrap()]).await;
    assert_eq!(output.status.code(), Some(1), "{}", show(&output));
    let dir = env.report_dir();

    // What a spreadsheet sees.
    for report in ["results.csv", "failed.csv", "revert.csv"] {
        let raw = std::fs::read_to_string(dir.join(report)).unwrap();
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(raw.as_bytes());
        for record in reader.records() {
            for cell in record.unwrap().iter() {
                assert!(
                    !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
                    "{report}: `{cell}` would run as a formula"
                );
                if cell.contains(';') {
                    assert!(
                        raw.contains(&quote(cell)),
                        "{report}: `{cell}` is not quoted"
                    );
                }
            }
        }
    }

    // What a job reader sees: the operator's own values.
    let original: HashMap<String, _> = job_rows(&path)
        .into_iter()
        .map(|r| (r.0.clone(), r))
        .collect();
    let failed = job_rows(&dir.join("failed.csv"));
    assert_eq!(failed.len(), HOSTILE.len());
    for row in &failed {
        assert_eq!(row, &original[&row.0], "failed.csv row {}", row.0);
    }
    let revert = job_rows(&dir.join("revert.csv"));
    assert_eq!(revert.len(), HOSTILE.len());
    for row in &revert {
        let first = &original[row.0.strip_prefix("revert-").unwrap()];
        assert_eq!(row.1, "activate");
        assert_eq!(
            (&row.2, &row.4),
            (&first.2, &first.4),
            "revert.csv row {}",
            row.0
        );
    }
}

/// Runs `args` with every file the process writes limited to `bytes`: a disk that fills up,
/// for the largest file only.
async fn run_with_file_limit(env: &RunEnv, args: &[&str], bytes: u64) -> std::process::Output {
    crate::run_support::output_with_limit(env.command(args, TOKEN), libc::RLIMIT_FSIZE, bytes).await
}

/// Case 17: the disk fills up while the reports are written, after every change was applied:
/// exit 6 (changes done, reports not written), no report cut short, an earlier complete report
/// left whole, and `simbatch report` writes them once there is room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_17_reports_are_whole_or_absent_and_a_full_disk_is_exit_6() {
    let env = RunEnv::new(super::sandbox(400)).await;
    // A long extra column name: JSONL results repeat it on every row (1.2 MB), while the job
    // (and so the run's copy of it) names it once.
    let name = format!("n{}", "x".repeat(3999));
    let mut job = format!("action,provider,iccid,{name}\n");
    for i in super::active(300) {
        job.push_str(&format!(
            "suspend,emnify,{},v\n",
            inventory::iccid(EMNIFY_PREFIX, i)
        ));
    }
    let path = env.write_job("big.csv", &job);
    let args = [
        "run",
        "--rate",
        "2000",
        "--report-format",
        "jsonl",
        "--reports",
        "out",
        path.to_str().unwrap(),
    ];
    let limit = 600 * 1024;
    let output = run_with_file_limit(&env, &args, limit).await;
    let text = show(&output);
    assert_eq!(output.status.code(), Some(6), "{text}");
    assert!(
        text.contains("simbatch report"),
        "says how to write them: {text}"
    );
    assert_eq!(
        env.sb.journal().await.len(),
        300,
        "every change was applied"
    );
    let out = env.dir.path().join("out");
    for entry in std::fs::read_dir(&out).into_iter().flatten() {
        let name = entry.unwrap().file_name().to_string_lossy().to_string();
        assert!(
            [
                "failed.csv",
                "pending.csv",
                "revert.csv",
                "summary.json",
                "results.jsonl"
            ]
            .contains(&name.as_str()),
            "a leftover or partial file: {name}"
        );
    }
    assert!(!out.join("results.jsonl").exists(), "no results cut short");

    let run_id = std::fs::read_dir(env.dir.path().join(".simbatch/jobs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .to_string();
    let output = env.run(&["report", "--reports", "out", &run_id]).await;
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let results = std::fs::read(out.join("results.jsonl")).unwrap();
    assert_eq!(results.iter().filter(|b| **b == b'\n').count(), 300);

    // Full again while the resumed (finished) run rewrites them: the complete ones stay.
    let output = run_with_file_limit(&env, &args, limit).await;
    assert_eq!(output.status.code(), Some(6), "{}", show(&output));
    assert_eq!(std::fs::read(out.join("results.jsonl")).unwrap(), results);
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert!(
        names.iter().all(|n| !n.starts_with('.')),
        "temporary files left: {names:?}"
    );
}
