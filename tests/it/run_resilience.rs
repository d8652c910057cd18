//! `simbatch run` when things go wrong: SIGKILL at random moments and resume, connections reset
//! after changes were applied, server errors, and a wrong token — every row ends with a final
//! outcome and the sandbox journal proves no change was applied twice.

use std::collections::HashMap;
use std::time::Duration;

use simbatch::sandbox::inventory::{self, EMNIFY_PREFIX, TELNYX_PREFIX, TWILIO_PREFIX};
use simbatch::sandbox::{Faults, LimitMode, SandboxConfig};

use crate::run_support::{show, RunEnv};

/// `per_provider` rows at each provider, each a real change: suspend, or activate for the
/// SIMs that start suspended.
pub fn mixed_job(per_provider: u64) -> String {
    let mut job = String::from("action,provider,iccid\n");
    for i in 1..=per_provider {
        for (provider, prefix) in [
            ("emnify", EMNIFY_PREFIX),
            ("twilio", TWILIO_PREFIX),
            ("telnyx", TELNYX_PREFIX),
        ] {
            let action = if inventory::starts_suspended(i) {
                "activate"
            } else {
                "suspend"
            };
            job.push_str(&format!(
                "{action},{provider},{}\n",
                inventory::iccid(prefix, i)
            ));
        }
    }
    job
}

/// Every row succeeded and each target changed exactly once.
pub async fn assert_exactly_once(env: &RunEnv, rows: usize) {
    let results = env.results();
    assert_eq!(results.len(), rows);
    let mut by_target: HashMap<String, usize> = HashMap::new();
    for e in env.sb.journal().await {
        *by_target
            .entry(e["target"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    for r in &results {
        assert_eq!(r["outcome"], "succeeded", "{r:?}");
        assert_eq!(
            by_target.get(&r["iccid"]).copied(),
            Some(1),
            "{} changed {:?} times",
            r["iccid"],
            by_target.get(&r["iccid"])
        );
    }
    assert_eq!(by_target.len(), rows, "no change outside the job");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_then_resume_applies_everything_exactly_once() {
    let per_provider = 1667; // 5,001 rows
    let env = RunEnv::new(SandboxConfig {
        sims: 2000,
        limits: LimitMode::Off,
        async_delay: Duration::from_millis(50),
        faults: Faults {
            reset_rate: 0.02,
            ..Faults::default()
        },
        ..SandboxConfig::default()
    })
    .await;
    let path = env.write_job("mixed.csv", &mixed_job(per_provider));
    let args = [
        "run",
        "-q",
        "--rate",
        "3000",
        "--wait-timeout",
        "60s",
        path.to_str().unwrap(),
    ];
    let seed = fastrand::u64(..);
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut kills = 0;
    let mut finished = false;
    for _ in 0..12 {
        let mut child = env
            .command(&args, crate::run_support::TOKEN)
            .spawn()
            .unwrap();
        let wait = Duration::from_millis(rng.u64(150..900));
        let exited = tokio::task::spawn_blocking(move || {
            let deadline = std::time::Instant::now() + wait;
            while std::time::Instant::now() < deadline {
                if let Some(status) = child.try_wait().unwrap() {
                    return Some(status);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            None
        })
        .await
        .unwrap();
        match exited {
            Some(status) => {
                assert!(status.success(), "seed {seed}: run ended with {status}");
                finished = true;
                break;
            }
            None => kills += 1,
        }
    }
    assert!(
        kills >= 5,
        "seed {seed}: only {kills} kills before the run finished; the job must be longer"
    );
    if !finished {
        let output = env.run(&args).await;
        assert_eq!(
            output.status.code(),
            Some(0),
            "seed {seed}: {}",
            show(&output)
        );
    }
    assert_exactly_once(&env, 3 * per_provider as usize).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_and_resets_end_in_final_outcomes_applied_once() {
    let env = RunEnv::new(SandboxConfig {
        sims: 400,
        limits: LimitMode::Off,
        async_delay: Duration::from_millis(50),
        faults: Faults {
            error_rate: 0.10,
            reset_rate: 0.02,
            ..Faults::default()
        },
        ..SandboxConfig::default()
    })
    .await;
    let path = env.write_job("faulty.csv", &mixed_job(300));
    let output = env
        .run(&[
            "run",
            "--rate",
            "3000",
            "--max-attempts",
            "8",
            path.to_str().unwrap(),
        ])
        .await;
    assert!(
        !String::from_utf8_lossy(&output.stderr).contains("panicked"),
        "{}",
        show(&output)
    );
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let stats = env.sb.stats().await;
    assert!(
        stats["faults"]["error"].as_u64().unwrap() > 50,
        "faults were injected: {}",
        stats["faults"]
    );
    assert_exactly_once(&env, 900).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_stops_after_the_first_401_and_the_right_one_completes() {
    let env = RunEnv::new(SandboxConfig {
        sims: 300,
        limits: LimitMode::Off,
        async_delay: Duration::from_millis(50),
        require_token: Some("right".into()),
        ..SandboxConfig::default()
    })
    .await;
    let path = env.write_job("job.csv", &mixed_job(200));
    let args = ["run", "--rate", "3000", path.to_str().unwrap()];
    let output = env.run_with_token(&args, "wrong").await;
    assert_eq!(output.status.code(), Some(3), "{}", show(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("refused the credentials"),
        "{}",
        show(&output)
    );
    let requests = env.sb.stats().await["requests_total"].as_u64().unwrap();
    assert!(
        requests <= 3 * 40,
        "a handful of requests per provider, not hundreds: {requests}"
    );
    assert!(env.sb.journal().await.is_empty());
    let output = env.run_with_token(&args, "right").await;
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    assert_exactly_once(&env, 600).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_jobs_list_the_inventory_and_confirm_in_batches() {
    let env = RunEnv::new(SandboxConfig {
        sims: 1500,
        limits: LimitMode::Off,
        async_delay: Duration::from_millis(50),
        ..SandboxConfig::default()
    })
    .await;
    let path = env.write_job("big.csv", &mixed_job(1500));
    let output = env
        .run(&["run", "-q", "--rate", "5000", path.to_str().unwrap()])
        .await;
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let stats = env.sb.stats().await;
    for provider in ["emnify", "twilio", "telnyx"] {
        let requests = stats["per_provider"][provider].as_u64().unwrap();
        assert!(
            requests as f64 <= 1500.0 * 1.1,
            "{provider}: {requests} requests for 1,500 rows"
        );
    }
    assert_exactly_once(&env, 4500).await;
}

/// One failed page of the inventory listing (here a gateway's 502 on emnify's first page) is
/// retried like any read, not taken as "the listing failed": a lane that fell back to looking
/// every row up sends a request more per row — and, with the bulk path, turns a mass change
/// that takes seconds into one that takes hours at emnify's limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_listing_page_is_retried_not_given_up() {
    let env = RunEnv::unlimited(300).await;
    let failed_once = std::sync::atomic::AtomicBool::new(false);
    let proxy = crate::proxy::Proxy::start(
        env.sb.base.clone(),
        std::sync::Arc::new(move |method: &axum::http::Method, path: &str| {
            let listing = *method == axum::http::Method::GET
                && path.starts_with("/emnify/api/v1/sim?")
                && !path.contains("q=");
            match listing && !failed_once.swap(true, std::sync::atomic::Ordering::SeqCst) {
                true => crate::proxy::Fault::AppliedThenGateway(502),
                false => crate::proxy::Fault::Forward,
            }
        }),
    )
    .await;
    env.point_at(&proxy.base);
    let rows: String = (1..=200)
        .map(|i| format!("suspend,emnify,{}\n", inventory::iccid(EMNIFY_PREFIX, i)))
        .collect();
    let path = env.write_job("suspend.csv", &format!("action,provider,iccid\n{rows}"));
    let output = env
        .run(&["run", "--rate", "1000", path.to_str().unwrap()])
        .await;
    let text = show(&output);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(!text.contains("could not list the inventory"), "{text}");
    let lookups = proxy.count(|s| s.path.contains("q=iccid"));
    assert_eq!(lookups, 0, "rows were looked up one by one\n{text}");
}
