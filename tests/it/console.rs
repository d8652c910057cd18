//! What the operator sees and can do while a run goes (issue "the operator's console"): runs
//! that fail fast when a provider cannot be reached at all; the end of a run that says why rows
//! failed and how to try them again; hints that resume the run they speak of; help that says
//! what the exit codes and credential variables are; completions and a manual page.

use std::time::{Duration, Instant};

use simbatch::sandbox::inventory::{iccid, EMNIFY_PREFIX};
use simbatch::sandbox::{LimitMode, SandboxConfig};

use crate::run_support::{show, RunEnv};

/// A `base_url` on a port nobody listens on: the lane stops after a few refused connections
/// — exit 3, the reason on the console, no row `failed` — instead of trying every row five
/// times (seen: 3m45s, 1,501 requests, 300 rows `failed: cannot connect`). Once the provider is
/// reachable, running the same command again finishes the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_provider_stops_the_run_at_once_and_it_resumes_later() {
    let env = RunEnv::unlimited(300).await;
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    env.point_at(&format!("http://{addr}"));
    // Every tenth SIM starts suspended: left out, each row is a change.
    let job = suspend_job(&env, (1..=300).filter(|i| i % 10 != 0));
    let args = [
        "run",
        "--yes",
        "--json",
        "--rate",
        "1000",
        job.to_str().unwrap(),
    ];
    let started = Instant::now();
    let output = env.run(&args).await;
    let took = started.elapsed();
    let text = show(&output);
    assert_eq!(output.status.code(), Some(3), "{text}");
    assert!(text.contains("cannot be reached"), "{text}");
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(
        summary["requests_total"].as_u64().unwrap() <= 30,
        "{} requests to a closed port",
        summary["requests_total"]
    );
    assert_eq!(
        summary["outcomes"]["failed"].as_u64().unwrap_or(0),
        0,
        "{summary}"
    );
    assert!(took < Duration::from_secs(60), "{took:?}");

    // The provider is back where it was (a forwarder to the sandbox on the same port).
    let _back = crate::proxy::Proxy::start_on(
        &addr,
        env.sb.base.clone(),
        std::sync::Arc::new(|_: &axum::http::Method, _: &str| crate::proxy::Fault::Forward),
    )
    .await;
    let output = env.run(&args).await;
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    assert!(env.results().iter().all(|r| r["outcome"] == "succeeded"));
}

/// The end of a run with failures names the most frequent reasons with their counts — one line
/// for 20 unknown SIMs, not 20 — and the command that retries them, in `summary.json` too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_end_of_a_run_says_why_rows_failed_and_how_to_retry_them() {
    let env = RunEnv::unlimited(100).await;
    // SIMs 1-9 exist; 201-220 do not.
    let rows: String = (1..=9)
        .chain(201..=220)
        .map(|i| format!("suspend,emnify,{}\n", iccid(EMNIFY_PREFIX, i)))
        .collect();
    let job = env.write_job("mixed.csv", &format!("action,provider,iccid\n{rows}"));
    let output = env
        .run(&["run", "--yes", "--rate", "1000", job.to_str().unwrap()])
        .await;
    assert_eq!(output.status.code(), Some(1), "{}", show(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("     20 × pre-flight: no SIM … at emnify"),
        "{stderr}"
    );
    let failed = env.report_dir().join("failed.csv");
    let run_dir = env.report_dir();
    let run_name = run_dir.file_name().unwrap().to_string_lossy();
    assert!(
        stderr.contains(&format!(
            "to try those rows again: simbatch run reports/{run_name}/failed.csv"
        )),
        "{stderr}"
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.report_dir().join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(
        summary["failure_reasons"],
        serde_json::json!([{"reason": "pre-flight: no SIM … at emnify", "rows": 20}]),
        "{summary}"
    );
    assert_eq!(crate::run_support::read_csv(&failed).len(), 20);
}

/// A `--fresh` run stopped by a refused token: its hint names that run (`--resume ID`) —
/// running "the same command again" would start a third run, and the plain command resumes the
/// older, complete one — `status` lists it with the same command, and that command finishes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hints_resume_the_run_they_speak_of_even_after_fresh() {
    let env = RunEnv::new(SandboxConfig {
        sims: 100,
        limits: LimitMode::Off,
        require_token: Some(crate::run_support::TOKEN.into()),
        ..SandboxConfig::default()
    })
    .await;
    let rows: String = (1..=20)
        .filter(|i| i % 10 != 0)
        .map(|i| {
            format!(
                "suspend,twilio,{}\n",
                iccid(simbatch::sandbox::inventory::TWILIO_PREFIX, i)
            )
        })
        .collect();
    let job = env.write_job("job.csv", &format!("action,provider,iccid\n{rows}"));
    let job = job.to_str().unwrap();
    let output = env.run(&["run", "--yes", job]).await;
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));

    let output = env
        .run_with_token(&["run", "--yes", "--fresh", job], "wrong-token")
        .await;
    assert_eq!(output.status.code(), Some(3), "{}", show(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let hint = stderr
        .lines()
        .find_map(|l| l.split("to resume: ").nth(1))
        .unwrap_or_else(|| panic!("no resume hint: {stderr}"));
    let command = hint.trim_end_matches(" (with the same options)");
    assert!(
        command.starts_with("simbatch run --resume job-"),
        "{command}"
    );
    let id = command.split_whitespace().nth(3).unwrap().to_string();

    let status = env.run(&["status"]).await;
    let listed = String::from_utf8_lossy(&status.stdout);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with(&id) && l.ends_with(&format!("resumable: {command}"))),
        "{listed}"
    );

    let mut args: Vec<&str> = command.split_whitespace().skip(1).collect();
    args.insert(1, "--yes");
    let output = env.run(&args).await;
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let summary: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            env.dir
                .path()
                .join("reports")
                .join(&id)
                .join("summary.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(summary["run_id"], id.as_str());
    assert_eq!(summary["outcomes"]["skipped"], 18, "{summary}");

    // A run id that does not exist, or another file: refused, nothing sent.
    let output = env.run(&["run", "--resume", "nope", job]).await;
    assert_eq!(output.status.code(), Some(2), "{}", show(&output));
}

/// `--help` carries examples, SPEC 5's exit codes and the credential variables of each
/// provider; `completions` and `manpage` print what a shell and `man` read.
#[test]
fn help_completions_and_manual() {
    let out = crate::support::simbatch().arg("--help").output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "Examples:",
        "Exit codes:",
        "  3  aborted",
        "  6  changes finished",
        "EMNIFY_APPLICATION_TOKEN",
        "TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN",
        "TELNYX_API_KEY",
    ] {
        assert!(help.contains(needle), "{needle}: {help}");
    }
    let out = crate::support::simbatch()
        .args(["run", "--help"])
        .output()
        .unwrap();
    assert!(String::from_utf8(out.stdout)
        .unwrap()
        .contains("simbatch run --resume RUN_ID"));
    for shell in ["bash", "zsh", "fish"] {
        let out = crate::support::simbatch()
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success());
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(
            script.contains("simbatch") && script.contains("resume"),
            "{shell}"
        );
    }
    let out = crate::support::simbatch().arg("manpage").output().unwrap();
    let man = String::from_utf8(out.stdout).unwrap();
    assert!(
        man.contains(".TH simbatch 1") && man.contains("Exit codes"),
        "{man}"
    );
}

/// A job suspending emnify's SIMs `sims` (by number).
fn suspend_job(env: &RunEnv, sims: impl Iterator<Item = u64>) -> std::path::PathBuf {
    let rows: String = sims
        .map(|i| format!("suspend,emnify,{}\n", iccid(EMNIFY_PREFIX, i)))
        .collect();
    env.write_job("suspend.csv", &format!("action,provider,iccid\n{rows}"))
}

/// A job of `n` emnify suspensions (SIMs 1..=n, every tenth already suspended: skipped).
fn emnify_suspensions(env: &RunEnv, n: u64) -> std::path::PathBuf {
    suspend_job(env, 1..=n)
}

/// With stderr to a file, a plain progress line per lane comes at the interval — a long run
/// is never silent between its first and last lines — and nothing written carries a terminal
/// escape, not even `-v`'s log lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_to_a_file_is_plain_lines_at_the_interval() {
    let env = RunEnv::unlimited(100).await;
    let job = emnify_suspensions(&env, 60);
    let log = env.dir.path().join("stderr.txt");
    let status = env
        .command(
            &[
                "run",
                "-v",
                "--yes",
                "--rate",
                "12",
                "--progress-interval",
                "1s",
                job.to_str().unwrap(),
            ],
            crate::run_support::TOKEN,
        )
        .stderr(std::fs::File::create(&log).unwrap())
        .status()
        .unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(0), "{text}");
    let progress: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("simbatch: progress: emnify: "))
        .collect();
    // 54 changes at 12 requests/s take about five seconds: a line a second.
    assert!(progress.len() >= 2, "{text}");
    assert!(
        progress[0].contains("/60 rows, ") && progress[0].contains("changes/s, ETA"),
        "{text}"
    );
    assert!(text.contains("simbatch: progress: total: "), "{text}");
    assert!(
        text.contains(" INFO "),
        "-v shows simbatch's own events: {text}"
    );
    assert!(
        !text.contains('\u{1b}'),
        "no escape codes in a file: {text:?}"
    );
}

/// `simbatch status` from a second terminal while a run holds the state store: the live
/// view (rows so far, each lane's line), not "in use by another simbatch process"; once the
/// run has ended, `status` says how it finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_during_a_run_shows_the_live_counts() {
    let env = RunEnv::unlimited(100).await;
    let job = emnify_suspensions(&env, 60);
    let mut run = env
        .command(
            &["run", "-q", "--yes", "--rate", "6", job.to_str().unwrap()],
            crate::run_support::TOKEN,
        )
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let live = loop {
        assert!(Instant::now() < deadline, "no live view within a minute");
        let output = env.run(&["status"]).await;
        let stdout = String::from_utf8_lossy(&output.stdout).to_string();
        // Wait for the event: the run has published a view with rows finished.
        if output.status.code() == Some(0)
            && stdout.contains("running (pid")
            && stdout.contains("succeeded")
        {
            break stdout;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(live.contains("/60 rows"), "{live}");
    assert!(live.contains("  emnify: "), "{live}");
    assert!(live.contains("changes/s"), "{live}");
    let json = env.run(&["status", "--json"]).await;
    let views: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(views[0]["rows"], 60, "{views}");
    assert_eq!(views[0]["lanes"][0]["name"], "emnify", "{views}");
    let status = tokio::task::spawn_blocking(move || run.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let after = env.run(&["status"]).await;
    let stdout = String::from_utf8_lossy(&after.stdout);
    assert!(stdout.contains("finished"), "{stdout}");
    assert!(!stdout.contains("running"), "{stdout}");
}

/// The smaller things a new user met: a past `--until` and a mistyped `--tz` are refused up
/// front (exit 2, with a suggestion); `validate` recognises a `;`-separated Excel export, an
/// ICCID a spreadsheet rounded to `8.98830300000000E+19` and a JSONL ICCID written as a
/// number (never a rounded value); `export --status` that matches nothing says which statuses
/// exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mistakes_are_refused_with_what_to_do() {
    let env = RunEnv::unlimited(100).await;
    let job = emnify_suspensions(&env, 3);
    let job = job.to_str().unwrap();
    let past = env
        .run(&["run", "--yes", "--until", "2020-01-01T00:00:00Z", job])
        .await;
    assert_eq!(past.status.code(), Some(2), "{}", show(&past));
    assert!(show(&past).contains("already past"), "{}", show(&past));
    let tz = env
        .run(&[
            "run",
            "--yes",
            "--window",
            "22:00-05:00",
            "--tz",
            "Europe/Berln",
            job,
        ])
        .await;
    assert_eq!(tz.status.code(), Some(2), "{}", show(&tz));
    assert!(
        show(&tz).contains("did you mean Europe/Berlin?"),
        "{}",
        show(&tz)
    );
    assert!(env.sb.journal().await.is_empty(), "nothing was sent");

    let iccid = iccid(EMNIFY_PREFIX, 1);
    let semicolons = env.write_job(
        "excel.csv",
        &format!("action;provider;iccid\nsuspend;emnify;{iccid}\n"),
    );
    let rounded = env.write_job(
        "rounded.csv",
        "action,provider,iccid\nsuspend,emnify,8.98830300000000E+19\n",
    );
    let number = env.write_job(
        "number.jsonl",
        "{\"action\":\"suspend\",\"provider\":\"emnify\",\"iccid\":89883030000000000015}\n",
    );
    for (file, says) in [
        (&semicolons, "is separated by `;`"),
        (&rounded, "a number a spreadsheet rounded"),
        (&number, "write ICCIDs and EIDs as strings"),
    ] {
        let output = env.run(&["validate", file.to_str().unwrap()]).await;
        assert_eq!(output.status.code(), Some(2), "{}", show(&output));
        assert!(show(&output).contains(says), "{}", show(&output));
    }

    let out = env.dir.path().join("none.csv");
    let export = env
        .run(&[
            "export",
            "--provider",
            "emnify",
            "--status",
            "Bogus",
            "-o",
            out.to_str().unwrap(),
        ])
        .await;
    assert_eq!(export.status.code(), Some(0), "{}", show(&export));
    assert!(
        show(&export)
            .contains("no SIM of `emnify` has status `Bogus`; the statuses listed: Activated"),
        "{}",
        show(&export)
    );
}

/// A provider that goes away in the middle of a run (its port now refuses connections): the
/// lane stops after a few attempts in a row that reach nothing — exit 3 within seconds, the
/// reason on the console — instead of spending five attempts on every remaining row; once the
/// provider is back, the resume finishes the job, each change applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_goes_away_mid_run_stops_it_and_the_resume_finishes() {
    let env = RunEnv::unlimited(100).await;
    let proxy = crate::proxy::Proxy::start(
        env.sb.base.clone(),
        crate::proxy::on_changes(|| crate::proxy::Fault::Forward),
    )
    .await;
    let addr = proxy.base.trim_start_matches("http://").to_string();
    env.point_at(&proxy.base);
    // Every tenth SIM starts suspended: left out, each row is a change.
    let job = suspend_job(&env, (1..=100).filter(|i| i % 10 != 0));
    let args = [
        "run",
        "--yes",
        "--json",
        "--rate",
        "20",
        job.to_str().unwrap(),
    ];
    let run = env
        .command(&args, crate::run_support::TOKEN)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the event: some changes applied. Then the provider goes away.
    let deadline = Instant::now() + Duration::from_secs(60);
    while env.sb.journal().await.len() < 10 {
        assert!(Instant::now() < deadline, "no change within a minute");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proxy.stop().await;
    let cut = Instant::now();
    let before_cut = env.sb.journal().await.len();
    let output = tokio::task::spawn_blocking(move || run.wait_with_output().unwrap())
        .await
        .unwrap();
    let took = cut.elapsed();
    let text = show(&output);
    assert_eq!(output.status.code(), Some(3), "{text}");
    assert!(text.contains("cannot be reached"), "{text}");
    assert!(
        took < Duration::from_secs(30),
        "{took:?} after the provider went away"
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let failed = summary["outcomes"]["failed"].as_u64().unwrap_or(0);
    assert!(
        failed <= 8,
        "{failed} rows failed instead of waiting: {summary}"
    );
    let applied = env.sb.journal().await.len();
    assert!(
        applied < 90,
        "the run did not stop: {applied} of 90 applied"
    );
    assert!(applied >= before_cut);

    // The provider comes back where it was: the resume finishes every row not failed.
    let _back = crate::proxy::Proxy::start_on(
        &addr,
        env.sb.base.clone(),
        crate::proxy::on_changes(|| crate::proxy::Fault::Forward),
    )
    .await;
    let output = env.run(&args).await;
    assert!(
        matches!(output.status.code(), Some(0 | 1)),
        "{}",
        show(&output)
    );
    let results = env.results();
    let succeeded = results
        .iter()
        .filter(|r| r["outcome"] == "succeeded")
        .count();
    assert_eq!(succeeded as u64 + failed, 90, "{results:?}");
    let mut once = std::collections::HashMap::new();
    for e in env.sb.journal().await {
        *once
            .entry(e["target"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    assert!(
        once.values().all(|n| *n == 1),
        "a change applied twice: {once:?}"
    );
    assert_eq!(once.len(), succeeded);
}
