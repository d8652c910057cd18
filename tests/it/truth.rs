//! Provider truth: outcomes the real providers document but a sandbox built from the same
//! reading never produced. Each test runs the real binary against the sandbox switched into
//! the documented behaviour.

use simbatch::sandbox::inventory::{iccid, TWILIO_PREFIX};
use simbatch::sandbox::{Faults, Latency, LimitMode, SandboxConfig};

use crate::run_support::{show, RunEnv};

/// 429s never cost a row its attempts: a Twilio lane sending far more at once than the
/// account's in-flight limit (here 5) sees hundreds of 429s and still ends every row
/// `succeeded`, each change applied once — with the provider's `Retry-After` and without
/// one (neither Twilio nor emnify documents that header: provider-apis.md sections 1.7 and
/// 2.4; the lane then backs off on its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_429s_fails_no_row_with_or_without_retry_after() {
    for retry_after in [true, false] {
        let env = RunEnv::new(SandboxConfig {
            sims: 100,
            limits: LimitMode::Scaled(0.05),
            faults: Faults {
                latency: Latency {
                    base_ms: 30,
                    jitter_ms: 0,
                },
                no_retry_after: !retry_after,
                ..Faults::default()
            },
            ..SandboxConfig::default()
        })
        .await;
        let rows: String = (1..=24)
            .map(|i| format!("suspend,twilio,{}\n", iccid(TWILIO_PREFIX, i)))
            .collect();
        let job = env.write_job("flood.csv", &format!("action,provider,iccid\n{rows}"));
        let output = env
            .run(&["run", "--yes", "--max-attempts", "2", job.to_str().unwrap()])
            .await;
        let context = format!("Retry-After sent: {retry_after}\n{}", show(&output));
        assert_eq!(output.status.code(), Some(0), "{context}");
        let results = env.results();
        // Every tenth SIM starts suspended: those rows are skipped as no-ops.
        let not_succeeded: Vec<_> = results
            .iter()
            .filter(|r| r["outcome"] != "succeeded" && r["outcome"] != "skipped")
            .map(|r| format!("{} {}", r["outcome"], r["reason"]))
            .collect();
        assert!(not_succeeded.is_empty(), "{not_succeeded:?}\n{context}");
        let stats = env.sb.stats().await;
        assert!(
            stats["too_many_requests"].as_u64().unwrap() >= 10,
            "the flood was not refused: {stats}"
        );
        let succeeded = results
            .iter()
            .filter(|r| r["outcome"] == "succeeded")
            .count();
        assert!(succeeded >= 20, "{context}");
        assert_eq!(env.sb.journal().await.len(), succeeded, "{context}");
    }
}
