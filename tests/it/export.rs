//! `simbatch export` through the real binary: each provider's whole sandbox inventory, paged
//! through the rate gate, becomes a job once an `action` column is added — and running that job
//! skips exactly the SIMs the export showed as already suspended and changes every other one
//! exactly once.

use std::collections::HashMap;
use std::time::Duration;

use simbatch::sandbox::{LimitMode, SandboxConfig};

use crate::run_support::{read_csv, show, RunEnv};

/// Each provider's word for a suspended SIM.
const SUSPENDED: [(&str, &str); 3] = [
    ("emnify", "Suspended"),
    ("twilio", "inactive"),
    ("telnyx", "disabled"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_with_an_action_column_is_a_job_that_does_exactly_what_it_shows() {
    let env = RunEnv::new(SandboxConfig {
        // More than one page at every provider (emnify 2,500, Twilio 1,000, Telnyx 250).
        sims: 2_600,
        limits: LimitMode::Off,
        async_delay: Duration::from_millis(20),
        ..SandboxConfig::default()
    })
    .await;
    let mut job = String::new();
    let mut exported: HashMap<String, (String, String)> = HashMap::new();
    for (provider, _) in SUSPENDED {
        let file = format!("{provider}-inventory.csv");
        let output = env
            .run(&["export", "--provider", provider, "-o", &file])
            .await;
        assert_eq!(output.status.code(), Some(0), "{}", show(&output));
        let rows = read_csv(&env.dir.path().join(&file));
        assert_eq!(rows.len(), 2_600, "{provider}: the whole inventory");
        let text = std::fs::read_to_string(env.dir.path().join(&file)).unwrap();
        let mut lines = text.lines();
        let header = lines.next().unwrap();
        assert_eq!(
            header,
            "provider,iccid,eid,provider_id,status,provider_group"
        );
        if job.is_empty() {
            job.push_str(&format!("action,{header}\n"));
        }
        for line in lines {
            job.push_str(&format!("suspend,{line}\n"));
        }
        for r in rows {
            assert_eq!(r["provider"], provider);
            let previous = exported.insert(
                r["iccid"].clone(),
                (provider.to_string(), r["status"].clone()),
            );
            assert!(previous.is_none(), "{} listed twice", r["iccid"]);
        }
    }
    let requests = env.sb.stats().await["requests_total"].as_u64().unwrap();
    assert!(
        requests <= 2 + 2 + 3 + 11 + 1,
        "export reads page by page: {requests} requests"
    );
    // Filters: only suspended SIMs, in any case of the provider's wording.
    let output = env
        .run(&[
            "export",
            "--provider",
            "telnyx",
            "--status",
            "DISABLED",
            "-o",
            "off.jsonl",
        ])
        .await;
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let off = std::fs::read_to_string(env.dir.path().join("off.jsonl")).unwrap();
    let expected_off = exported
        .values()
        .filter(|(p, s)| p == "telnyx" && s == "disabled")
        .count();
    assert_eq!(off.lines().count(), expected_off);
    assert!(off.lines().all(|l| l.contains(r#""status":"disabled""#)));

    let path = env.write_job("suspend-all.csv", &job);
    let output = env.run(&["validate", path.to_str().unwrap()]).await;
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let output = env
        .run(&["run", "-q", "--rate", "2000", path.to_str().unwrap()])
        .await;
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));

    let mut changes: HashMap<String, usize> = HashMap::new();
    for e in env.sb.journal().await {
        *changes
            .entry(e["target"].as_str().unwrap().into())
            .or_default() += 1;
    }
    let results = env.results();
    assert_eq!(results.len(), exported.len());
    for r in &results {
        let (provider, status) = &exported[&r["iccid"]];
        let suspended = SUSPENDED.iter().any(|(p, s)| p == provider && s == status);
        if suspended {
            assert_eq!(r["outcome"], "skipped", "{r:?}");
            assert!(r["reason"].starts_with("already"), "{r:?}");
            assert_eq!(changes.get(&r["iccid"]), None, "{r:?}");
        } else {
            assert_eq!(r["outcome"], "succeeded", "{r:?}");
            assert_eq!(changes.get(&r["iccid"]), Some(&1), "{r:?}");
        }
        // The carried columns are the export's own.
        assert_eq!(&r["status"], status);
    }
    let expected_changes = results
        .iter()
        .filter(|r| r["outcome"] == "succeeded")
        .count();
    assert_eq!(changes.len(), expected_changes, "no change outside the job");
    assert!(expected_changes > 0 && expected_changes < results.len());
}
