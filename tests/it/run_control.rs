//! Run control through the real binary: a second process on the same state directory (exit 4),
//! Ctrl-C (exit 3, reports written, resumable), the failure threshold with its warm-up, and
//! changes left pending by `--no-wait` confirmed by the next run.

use std::time::Duration;

use simbatch::sandbox::inventory::{self, EMNIFY_PREFIX, TELNYX_PREFIX, TWILIO_PREFIX};
use simbatch::sandbox::{Faults, Latency, LimitMode, SandboxConfig};

use crate::run_support::{show, RunEnv, TOKEN};

fn slow() -> SandboxConfig {
    SandboxConfig {
        sims: 300,
        limits: LimitMode::Off,
        async_delay: Duration::from_millis(50),
        faults: Faults {
            latency: Latency {
                base_ms: 200,
                jitter_ms: 0,
            },
            ..Faults::default()
        },
        ..SandboxConfig::default()
    }
}

/// A job suspending the first `n` SIMs of `provider` that start active.
pub fn suspensions(provider: &str, prefix: &str, n: u64) -> String {
    let mut job = String::from("action,provider,iccid\n");
    for i in (1..=n * 2)
        .filter(|i| !inventory::starts_suspended(*i))
        .take(n as usize)
    {
        job.push_str(&format!(
            "suspend,{provider},{}\n",
            inventory::iccid(prefix, i)
        ));
    }
    job
}

pub fn telnyx_suspensions(n: u64) -> String {
    suspensions("telnyx", TELNYX_PREFIX, n)
}

async fn spawn_and_wait_for_requests(env: &RunEnv, args: &[&str]) -> std::process::Child {
    let child = env
        .command(args, TOKEN)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if env.sb.stats().await["requests_total"].as_u64().unwrap() > 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child
}

/// Sends the run SIGINT (as Ctrl-C does) and waits for it to end.
async fn ctrl_c(child: std::process::Child) -> std::process::Output {
    std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_on_the_same_state_directory_exits_4() {
    let env = RunEnv::new(slow()).await;
    let path = env.write_job("job.csv", &telnyx_suspensions(200));
    let args = ["run", "-q", "--rate", "50", path.to_str().unwrap()];
    let mut first = spawn_and_wait_for_requests(&env, &args).await;
    let second = env.run(&args).await;
    first.kill().unwrap();
    first.wait().unwrap();
    assert_eq!(second.status.code(), Some(4), "{}", show(&second));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("in use by another simbatch process"),
        "{stderr}"
    );
    assert!(
        stderr.contains(".simbatch"),
        "names the directory: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_cleanly_writes_reports_and_the_run_resumes() {
    let env = RunEnv::new(slow()).await;
    let path = env.write_job("job.csv", &telnyx_suspensions(200));
    let args = ["run", "--rate", "40", path.to_str().unwrap()];
    let child = spawn_and_wait_for_requests(&env, &args).await;
    let output = ctrl_c(child).await;
    assert_eq!(output.status.code(), Some(3), "{}", show(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(
        stderr.contains("run the same command again to resume"),
        "{stderr}"
    );
    let results = env.results();
    assert_eq!(results.len(), 200, "reports are written on interruption");
    assert!(
        results.iter().any(|r| r["outcome"] == "not_started"),
        "some rows had not started"
    );

    let output = env
        .run(&["run", "-q", "--rate", "1000", path.to_str().unwrap()])
        .await;
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let results = env.results();
    assert!(
        results.iter().all(|r| r["outcome"] == "succeeded"),
        "the resumed run finished every row"
    );
    assert_eq!(env.sb.journal().await.len(), 200, "each change once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_reuses_the_first_validation_and_skips_the_finished_rows() {
    let env = RunEnv::new(slow()).await;
    // emnify changes are synchronous: the rows done before the interruption are final.
    let path = env.write_job("job.csv", &suspensions("emnify", EMNIFY_PREFIX, 200));
    let args = ["run", "--rate", "40", path.to_str().unwrap()];
    let child = spawn_and_wait_for_requests(&env, &args).await;
    // Some rows applied, the first among them (an event, not a wait: on a busy machine 500 ms
    // was not always enough for the first row's change, and after Ctrl-C no new change
    // leaves). Counting changes alone was not enough either: the rows waiting for the
    // listing's page are woken in no particular order, so twenty changes did not always
    // include the first row's.
    let first_sim = inventory::iccid(EMNIFY_PREFIX, 1);
    for _ in 0..3000 {
        let journal = env.sb.journal().await;
        if journal.len() >= 20 && journal.iter().any(|e| e["target"] == first_sim.as_str()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let output = ctrl_c(child).await;
    assert_eq!(output.status.code(), Some(3), "{}", show(&output));
    let prefix = |env: &RunEnv| {
        let state = env.dir.path().join(".simbatch");
        let prefix = {
            let store = simbatch::store::SledStore::open(&state).unwrap();
            let id = store.run_ids().remove(0);
            simbatch::store::CheckpointStore::finished_prefix(&store.run(&id).unwrap()).unwrap()
        };
        crate::run_support::wait_store_released(&state);
        prefix
    };
    let first = prefix(&env);
    assert!(
        first.rows > 0 && first.rows < 200,
        "some leading rows finished: {first:?}"
    );
    assert_eq!(first.counts.iter().sum::<u64>(), first.rows);

    // Read differently (lenient identifiers): validated again.
    let mut lenient = args.to_vec();
    lenient.insert(1, "--lenient-ids");
    lenient.insert(1, "--until");
    lenient.insert(2, "0s");
    let output = env.run(&lenient).await;
    assert!(
        !String::from_utf8_lossy(&output.stderr).contains("validated when the run started"),
        "{}",
        show(&output)
    );
    // Read the same way: the first validation stands, and the finished rows are not re-read.
    let output = env
        .run(&["run", "--json", "--rate", "1000", path.to_str().unwrap()])
        .await;
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("validated when the run started (200 rows); not read again"),
        "{stderr}"
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["outcomes"]["succeeded"], 200, "{summary}");
    assert!(env.results().iter().all(|r| r["outcome"] == "succeeded"));
    assert_eq!(env.sb.journal().await.len(), 200, "each change once");
    let last = prefix(&env);
    assert_eq!((last.rows, last.counts[0]), (200, 200), "{last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_failures_stops_after_the_warm_up() {
    let env = RunEnv::unlimited(100).await;
    // Unregistered Twilio SIMs: every activation fails pre-flight (no such SIM on the account).
    let mut job = String::from("action,provider,iccid\n");
    for i in 101..=200 {
        job.push_str(&format!(
            "activate,twilio,{}\n",
            inventory::iccid(TWILIO_PREFIX, i)
        ));
    }
    let path = env.write_job("failing.csv", &job);
    let output = env
        .run(&[
            "run",
            "--concurrency",
            "1",
            "--rate",
            "1000",
            "--max-failures",
            "5",
            path.to_str().unwrap(),
        ])
        .await;
    assert_eq!(output.status.code(), Some(3), "{}", show(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("over --max-failures"),
        "{}",
        show(&output)
    );
    let finished = env
        .results()
        .iter()
        .filter(|r| r["outcome"] != "not_started")
        .count();
    assert!(
        (20..100).contains(&finished),
        "stopped after the 20-row warm-up, not at the end: {finished}"
    );
    let bad = env
        .run(&["run", "--max-failures", "lots", path.to_str().unwrap()])
        .await;
    assert_eq!(bad.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_wait_leaves_changes_pending_and_the_next_run_confirms_them() {
    let env = RunEnv::new(SandboxConfig {
        sims: 100,
        limits: LimitMode::Off,
        async_delay: Duration::from_millis(300),
        ..SandboxConfig::default()
    })
    .await;
    let path = env.write_job("job.csv", &telnyx_suspensions(20));
    let output = env
        .run(&["run", "--no-wait", "--rate", "1000", path.to_str().unwrap()])
        .await;
    assert_eq!(output.status.code(), Some(5), "{}", show(&output));
    let pending = crate::run_support::read_csv(&env.report_dir().join("pending.csv"));
    assert_eq!(pending.len(), 20);
    assert!(env
        .results()
        .iter()
        .all(|r| r["outcome"] == "pending" && !r["provider_ref"].is_empty()));
    tokio::time::sleep(Duration::from_millis(400)).await;
    let before = env.sb.stats().await["requests_total"].as_u64().unwrap();
    let output = env
        .run(&["run", "--rate", "1000", path.to_str().unwrap()])
        .await;
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    assert!(env.results().iter().all(|r| r["outcome"] == "succeeded"));
    let sends = env.sb.stats().await["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["path"].as_str().unwrap().contains("/actions/disable"))
        .map(|r| r["count"].as_u64().unwrap())
        .sum::<u64>();
    assert_eq!(sends, 20, "the second run confirmed, it did not send again");
    assert!(env.sb.stats().await["requests_total"].as_u64().unwrap() > before);
    assert_eq!(env.sb.journal().await.len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_provider_never_holds_up_another() {
    let env = RunEnv::new(SandboxConfig {
        sims: 300,
        limits: LimitMode::Off,
        async_delay: Duration::from_millis(50),
        ..SandboxConfig::default()
    })
    .await;
    // emnify paced at 2 requests/s: its 10 rows take about ten seconds.
    let toml = std::fs::read_to_string(env.dir.path().join("simbatch.toml")).unwrap();
    let toml = toml
        .replace("kind = \"emnify\"\n", "kind = \"emnify\"\nrate = 2\n")
        .replace("kind = \"telnyx\"\n", "kind = \"telnyx\"\nrate = 1000\n");
    std::fs::write(env.dir.path().join("simbatch.toml"), toml).unwrap();
    let mut job = suspensions("emnify", EMNIFY_PREFIX, 10);
    job.push_str(&telnyx_suspensions(200).replacen("action,provider,iccid\n", "", 1));
    let path = env.write_job("mixed.csv", &job);
    let output = env.run(&["run", "-q", path.to_str().unwrap()]).await;
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let results = env.results();
    let mut emnify_done: Vec<String> = results
        .iter()
        .filter(|r| r["provider"] == "emnify")
        .map(|r| r["finished_at"].clone())
        .collect();
    emnify_done.sort();
    let last_telnyx = results
        .iter()
        .filter(|r| r["provider"] == "telnyx")
        .map(|r| r["finished_at"].clone())
        .max()
        .unwrap();
    // emnify needs about a second per row (lookup + change at 2 requests/s); Telnyx about a
    // second for all 200, confirmation included. One must not wait for the other.
    assert!(
        last_telnyx < emnify_done[4],
        "all 200 Telnyx rows were done ({last_telnyx}) before emnify's fifth row was ({})",
        emnify_done[4]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_are_held_until_not_before() {
    let env = RunEnv::new(SandboxConfig {
        sims: 100,
        limits: LimitMode::Off,
        async_delay: Duration::from_millis(50),
        ..SandboxConfig::default()
    })
    .await;
    let written = (chrono::Utc::now() + chrono::Duration::seconds(2))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let at = chrono::DateTime::parse_from_rfc3339(&written).unwrap();
    let job = format!(
        "action,provider,iccid,not_before\nsuspend,telnyx,{},{}\nsuspend,telnyx,{},\n",
        inventory::iccid(TELNYX_PREFIX, 1),
        written,
        inventory::iccid(TELNYX_PREFIX, 2)
    );
    let path = env.write_job("held.csv", &job);
    let output = env
        .run(&["run", "--rate", "1000", path.to_str().unwrap()])
        .await;
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let results = env.results();
    let started = chrono::DateTime::parse_from_rfc3339(&results[0]["started_at"]).unwrap();
    assert!(
        started >= at,
        "the held row started at {started}, before its not_before {at}"
    );
    assert!(
        results[1]["started_at"] < results[0]["started_at"],
        "the other row was not held"
    );
}
