//! Fault soak: the same mixed job (all three providers) against every sandbox fault kind on
//! its own and all of them at once, rate limits included. Every row must end with a final
//! outcome that explains itself, the process must never panic, retries must stay within
//! `--max-attempts`, and no change may be applied twice.

use std::collections::HashMap;
use std::time::Duration;

use simbatch::sandbox::{Faults, Latency, LimitMode, SandboxConfig};

use crate::run_resilience::mixed_job;
use crate::run_support::{show, RunEnv};

const MAX_ATTEMPTS: u64 = 4;
const PER_PROVIDER: u64 = 60;

fn faults(f: impl FnOnce(&mut Faults)) -> Faults {
    let mut faults = Faults {
        hang: Duration::from_millis(800),
        ..Faults::default()
    };
    f(&mut faults);
    faults
}

async fn soak(name: &str, limits: LimitMode, faults: Faults) {
    let env = RunEnv::new(SandboxConfig {
        sims: 200,
        limits,
        async_delay: Duration::from_millis(100),
        faults,
        seed: fastrand::u64(..),
        ..SandboxConfig::default()
    })
    .await;
    let path = env.write_job("soak.csv", &mixed_job(PER_PROVIDER));
    let max_attempts = MAX_ATTEMPTS.to_string();
    let output = env
        .run(&[
            "run",
            "--rate",
            "400",
            "--max-attempts",
            &max_attempts,
            "--wait-timeout",
            "20s",
            path.to_str().unwrap(),
        ])
        .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{name}: {}", show(&output));
    assert!(
        matches!(output.status.code(), Some(0 | 1 | 5)),
        "{name}: {}",
        show(&output)
    );
    let results = env.results();
    assert_eq!(results.len() as u64, 3 * PER_PROVIDER, "{name}");
    let mut changes: HashMap<String, usize> = HashMap::new();
    for e in env.sb.journal().await {
        *changes
            .entry(e["target"].as_str().unwrap().into())
            .or_default() += 1;
    }
    let mut outcomes: HashMap<String, usize> = HashMap::new();
    for r in &results {
        let outcome = r["outcome"].as_str();
        *outcomes.entry(outcome.to_string()).or_default() += 1;
        assert!(
            ["succeeded", "failed", "unknown", "pending"].contains(&outcome),
            "{name}: {r:?}"
        );
        if outcome != "succeeded" {
            assert!(
                !r["reason"].is_empty(),
                "{name}: unexplained {outcome}: {r:?}"
            );
        }
        let attempts: u64 = r["attempts"].parse().unwrap_or(0);
        assert!(
            attempts <= MAX_ATTEMPTS,
            "{name}: {attempts} attempts: {r:?}"
        );
        let applied = changes.get(&r["iccid"]).copied().unwrap_or(0);
        assert!(
            applied <= 1,
            "{name}: {} changed {applied} times",
            r["iccid"]
        );
        if outcome == "succeeded" {
            assert_eq!(applied, 1, "{name}: succeeded without a change: {r:?}");
        }
    }
    // Retries are bounded: per row at most MAX_ATTEMPTS sends, plus reads and confirmations.
    let requests = env.sb.stats().await["requests_total"].as_u64().unwrap();
    assert!(
        requests <= 3 * PER_PROVIDER * (MAX_ATTEMPTS * 4),
        "{name}: {requests} requests for {} rows",
        3 * PER_PROVIDER
    );
    assert!(
        outcomes.get("succeeded").copied().unwrap_or(0) > 0,
        "{name}: {outcomes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_kind_alone_and_all_together() {
    let cases: Vec<(&str, LimitMode, Faults)> = vec![
        (
            "latency",
            LimitMode::Off,
            faults(|f| {
                f.latency = Latency {
                    base_ms: 80,
                    jitter_ms: 40,
                }
            }),
        ),
        (
            "server errors",
            LimitMode::Off,
            faults(|f| f.error_rate = 0.3),
        ),
        ("hangs", LimitMode::Off, faults(|f| f.timeout_rate = 0.05)),
        ("resets", LimitMode::Off, faults(|f| f.reset_rate = 0.15)),
        (
            "async failures",
            LimitMode::Off,
            faults(|f| f.fail_async = 0.2),
        ),
        ("rate limits", LimitMode::Scaled(0.5), faults(|_| {})),
        (
            "429s without Retry-After",
            LimitMode::Scaled(0.5),
            faults(|f| f.no_retry_after = true),
        ),
        (
            "interrupted Telnyx actions",
            LimitMode::Off,
            faults(|f| f.interrupt_async = 0.2),
        ),
        (
            "everything at once",
            LimitMode::Scaled(0.5),
            faults(|f| {
                f.latency = Latency {
                    base_ms: 30,
                    jitter_ms: 20,
                };
                f.error_rate = 0.1;
                f.timeout_rate = 0.02;
                f.reset_rate = 0.05;
                f.fail_async = 0.1;
                f.interrupt_async = 0.1;
            }),
        ),
    ];
    for (name, limits, faults) in cases {
        soak(name, limits, faults).await;
    }
}
