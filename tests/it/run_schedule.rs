//! Scheduled runs through the real binary: outside its `--window` a run sends nothing and says
//! until when it waits; a window that closes mid-run stops dispatch at the close with exit 3,
//! and the next run finishes the job with no change applied twice.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{Timelike, Utc};
use simbatch::sandbox::{LimitMode, SandboxConfig};

use crate::run_control::telnyx_suspensions;
use crate::run_support::{show, RunEnv, TOKEN};

fn config() -> SandboxConfig {
    SandboxConfig {
        sims: 600,
        limits: LimitMode::Off,
        async_delay: Duration::from_millis(50),
        ..SandboxConfig::default()
    }
}

fn hh_mm_ss(at: chrono::DateTime<Utc>) -> String {
    format!("{:02}:{:02}:{:02}", at.hour(), at.minute(), at.second())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_the_window_nothing_is_sent_and_the_wait_is_announced() {
    let env = RunEnv::new(config()).await;
    let path = env.write_job("night.csv", &telnyx_suspensions(20));
    let opens = Utc::now() + chrono::Duration::hours(2);
    let opens = opens.with_second(0).unwrap().with_nanosecond(0).unwrap();
    let closes = opens + chrono::Duration::hours(1);
    let window = format!(
        "{:02}:{:02}-{:02}:{:02}",
        opens.hour(),
        opens.minute(),
        closes.hour(),
        closes.minute()
    );
    let job = path.to_str().unwrap();
    let mut child = env
        .command(&["run", "--window", &window, "--tz", "UTC", job], TOKEN)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The run says until when it waits, then keeps waiting (Ctrl-C ends the wait).
    let stderr = child.stderr.take().unwrap();
    let (announced, stderr) = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut seen = String::new();
        let mut stderr = std::io::BufReader::new(stderr);
        let mut line = String::new();
        while stderr.read_line(&mut line).unwrap() > 0 {
            let line = std::mem::take(&mut line);
            seen.push_str(&line);
            if line.contains("waiting until") {
                break;
            }
        }
        (seen, stderr)
    })
    .await
    .unwrap();
    assert!(
        announced.contains(&format!("waiting until {}", opens.to_rfc3339())),
        "the wait is not announced with its end:\n{announced}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(child.try_wait().unwrap().is_none(), "the run did not wait");
    std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(3));
    drop(stderr); // kept open until the run ended, so its last words had somewhere to go
    assert_eq!(
        env.sb.stats().await["requests_total"].as_u64(),
        Some(0),
        "a request was sent outside the window"
    );
    // A window that would only open after --until: the run says so and ends at once.
    let output = env
        .run(&[
            "run", "--window", &window, "--tz", "UTC", "--until", "1h", job,
        ])
        .await;
    assert_eq!(output.status.code(), Some(3), "{}", show(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("after --until; nothing will be sent"),
        "{stderr}"
    );
    assert_eq!(env.sb.stats().await["requests_total"].as_u64(), Some(0));
    // Held rows are not failed: the same job without the window completes them all.
    let output = env.run(&["run", job]).await;
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let results = env.results();
    assert_eq!(results.len(), 20);
    assert!(results.iter().all(|r| r["outcome"] == "succeeded"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_that_closes_mid_run_stops_at_the_close_and_resumes() {
    let env = RunEnv::new(config()).await;
    let rows = 300;
    let path = env.write_job("maintenance.csv", &telnyx_suspensions(rows));
    let job = path.to_str().unwrap();
    // Opened a minute ago, closes in three seconds; at 50 rows/s the job needs six.
    let now = Utc::now();
    let close = (now + chrono::Duration::seconds(3))
        .with_nanosecond(0)
        .unwrap();
    let window = format!(
        "{}-{}",
        hh_mm_ss(now - chrono::Duration::minutes(1)),
        hh_mm_ss(close)
    );
    let output = env
        .run(&[
            "run", "--rate", "50", "--window", &window, "--tz", "UTC", job,
        ])
        .await;
    assert_eq!(output.status.code(), Some(3), "{}", show(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("closed"), "{stderr}");
    let journal = env.sb.journal().await;
    assert!(
        !journal.is_empty() && journal.len() < rows as usize,
        "{} of {rows} changed before the close",
        journal.len()
    );
    // Dispatch ended at the close: only requests already under way may land after it.
    let late: Vec<_> = journal
        .iter()
        .filter(|e| {
            let at = chrono::DateTime::parse_from_rfc3339(e["at"].as_str().unwrap()).unwrap();
            at > close + chrono::Duration::seconds(2)
        })
        .collect();
    assert!(late.is_empty(), "changes long after the close: {late:?}");

    let output = env.run(&["run", "--rate", "200", job]).await;
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let results = env.results();
    assert_eq!(results.len(), rows as usize);
    let mut changes: HashMap<String, usize> = HashMap::new();
    for e in env.sb.journal().await {
        *changes
            .entry(e["target"].as_str().unwrap().into())
            .or_default() += 1;
    }
    for r in &results {
        assert_eq!(r["outcome"], "succeeded", "{r:?}");
        assert_eq!(changes.get(&r["iccid"]), Some(&1), "{}", r["iccid"]);
    }
}
