//! emnify device rows in bulk (`PATCH /api/v2/endpoint/multi`): a refused chunk is split until
//! its bad rows fail alone, whichever way the provider treats a request with bad items; a bulk
//! run SIGKILLed at random moments and resumed applies each change exactly once.

use std::collections::HashMap;
use std::time::Duration;

use simbatch::sandbox::inventory::{iccid, EMNIFY_PREFIX};
use simbatch::sandbox::{Faults, LimitMode, SandboxConfig};

use crate::run_support::{show, RunEnv};

fn disable_devices(range: std::ops::RangeInclusive<u64>) -> String {
    let rows: String = range
        .map(|i| format!("disable-device,emnify,{}\n", iccid(EMNIFY_PREFIX, i)))
        .collect();
    format!("action,provider,iccid\n{rows}")
}

/// 500 rows in one chunk, 3 of whose endpoints the provider refuses: exactly those 3 fail with
/// the provider's message, the other 497 succeed — whether one bad item fails the whole request
/// (the sandbox's default) or only itself (`bulk_partial`) — in a handful of requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_with_bad_rows_is_split_until_they_fail_alone() {
    for partial in [false, true] {
        let env = RunEnv::new(SandboxConfig {
            sims: 600,
            limits: LimitMode::Off,
            bulk_partial: partial,
            refused_endpoints: vec![17, 250, 433],
            ..SandboxConfig::default()
        })
        .await;
        let job = env.write_job("devices.csv", &disable_devices(1..=500));
        let output = env
            .run(&[
                "run",
                "--yes",
                "--json",
                "--rate",
                "1000",
                "--bulk-chunk",
                "500",
                job.to_str().unwrap(),
            ])
            .await;
        assert_eq!(output.status.code(), Some(1), "{}", show(&output));
        let results = env.results();
        let failed: Vec<&str> = results
            .iter()
            .filter(|r| r["outcome"] == "failed")
            .map(|r| r["iccid"].as_str())
            .collect();
        let bad: Vec<String> = [17, 250, 433]
            .iter()
            .map(|&i| iccid(EMNIFY_PREFIX, i))
            .collect();
        assert_eq!(failed, bad, "partial {partial}");
        for r in results.iter().filter(|r| r["outcome"] == "failed") {
            assert!(
                r["reason"].contains("locked against status changes"),
                "{r:?}"
            );
            assert_eq!(r["http_status"], "422", "{r:?}");
        }
        let count = |o: &str| results.iter().filter(|r| r["outcome"] == o).count();
        assert_eq!(count("succeeded"), 497, "partial {partial}");
        let journal = env.sb.journal().await;
        assert_eq!(journal.len(), 497, "each good row changed once");
        let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let bulk = summary["bulk_requests"]["emnify"].as_u64().unwrap();
        // One chunk; three bad items isolated by halving: at most 3 × 2 × log2(500) requests.
        assert!(bulk <= 60, "{bulk} bulk requests: {summary}");
        assert!(
            summary["requests_total"].as_u64().unwrap() < 80,
            "{summary}"
        );

        // The revert of a bulk run goes in bulk too.
        let undo = env.dir.path().join("undo.csv");
        std::fs::copy(env.report_dir().join("revert.csv"), &undo).unwrap();
        std::fs::remove_dir_all(env.dir.path().join("reports")).unwrap();
        let output = env
            .run(&[
                "run",
                "--yes",
                "--json",
                "--rate",
                "1000",
                undo.to_str().unwrap(),
            ])
            .await;
        assert_eq!(output.status.code(), Some(0), "{}", show(&output));
        let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(summary["outcomes"]["succeeded"], 497, "{summary}");
        assert_eq!(summary["bulk_requests"]["emnify"], 1, "{summary}");
    }
}

/// A 5,000-row job — 1,800 emnify device rows and 200 emnify deletes in bulk, 1,000
/// suspensions at each of the three providers one by one — SIGKILLed five times at random
/// moments and resumed, with connections dropped after the change was applied: every row ends
/// final and each change is applied once (each SIM deleted once; the two deletes emnify
/// refuses, SIMs 2,899 and 2,999, never).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_run_killed_and_resumed_applies_each_change_once() {
    let per = 1_000u64;
    let env = RunEnv::new(SandboxConfig {
        sims: 3_000,
        limits: LimitMode::Off,
        faults: Faults {
            reset_rate: 0.02,
            ..Faults::default()
        },
        ..SandboxConfig::default()
    })
    .await;
    let mut job = disable_devices(1_001..=2_800);
    for i in 2_801..=3_000 {
        job.push_str(&format!("delete,emnify,{}\n", iccid(EMNIFY_PREFIX, i)));
    }
    for i in 1..=per {
        for (provider, prefix) in [
            ("emnify", EMNIFY_PREFIX),
            ("twilio", simbatch::sandbox::inventory::TWILIO_PREFIX),
            ("telnyx", simbatch::sandbox::inventory::TELNYX_PREFIX),
        ] {
            job.push_str(&format!("suspend,{provider},{}\n", iccid(prefix, i)));
        }
    }
    let path = env.write_job("mixed.csv", &job);
    let args = [
        "run",
        "-v",
        "--allow-irreversible",
        "--rate",
        "300",
        "--bulk-chunk",
        "200",
        path.to_str().unwrap(),
    ];
    let mut rng = fastrand::Rng::new();
    for _ in 0..5 {
        let mut child = env
            .command(&args, crate::run_support::TOKEN)
            .spawn()
            .unwrap();
        let wait = Duration::from_millis(rng.u64(200..2_500));
        tokio::time::sleep(wait).await;
        let _ = child.kill();
        let _ = child.wait();
    }
    let output = env.run(&args).await;
    assert_eq!(output.status.code(), Some(1), "{}", show(&output));
    let results = env.results();
    assert_eq!(results.len(), 5_000);
    let mut changes: HashMap<String, usize> = HashMap::new();
    let mut deletes: HashMap<String, usize> = HashMap::new();
    // The last change of each SIM's place on its endpoint: the refused deletes' SIMs end back
    // on theirs, whenever the kills came.
    let mut on_endpoint: HashMap<String, String> = HashMap::new();
    for e in env.sb.journal().await {
        let target = e["target"].as_str().unwrap().to_string();
        match e["change"].as_str().unwrap() {
            "delete" => *deletes.entry(target).or_default() += 1,
            c if c.starts_with("endpoint_sim:") => {
                on_endpoint.insert(target, c.to_string());
            }
            _ => *changes.entry(target).or_default() += 1,
        }
    }
    let refused = [2_899, 2_999].map(|i| iccid(EMNIFY_PREFIX, i));
    for (sim, endpoint) in refused.iter().zip([2_899, 2_999]) {
        assert_eq!(
            on_endpoint.get(sim).map(String::as_str),
            Some(format!("endpoint_sim:assigned-to:{endpoint}").as_str()),
            "{sim}: {:?}\n{}",
            results.iter().find(|r| r["iccid"] == *sim),
            show(&output)
        );
    }
    for r in &results {
        let journaled = match r["action"].as_str() {
            "delete" => &deletes,
            _ => &changes,
        };
        let expected = match r["outcome"].as_str() {
            "succeeded" => 1,
            "skipped" => 0,
            "failed" if refused.contains(&r["iccid"]) => {
                assert!(r["reason"].contains("cannot delete"), "{r:?}");
                0
            }
            other => panic!("{other}: {r:?}"),
        };
        assert_eq!(
            journaled.get(&r["iccid"]).copied().unwrap_or(0),
            expected,
            "{r:?}"
        );
    }
    // Every SIM of every tenth number starts suspended: skipped; every device was enabled.
    let skipped = results.iter().filter(|r| r["outcome"] == "skipped").count();
    assert_eq!(skipped, 300);
    let failed = results.iter().filter(|r| r["outcome"] == "failed").count();
    assert_eq!(failed, 2);
    let single_deletes = env
        .sb
        .requests_to("DELETE /emnify/api/v1/sim/{sim_id}")
        .await;
    let bulk_deletes = env.sb.requests_to("DELETE /emnify/api/v1/sim/multi").await;
    assert!(bulk_deletes >= 1, "the deletes went in bulk");
    assert!(
        single_deletes < 20,
        "{single_deletes} single deletes\n{}",
        show(&output)
    );
}

/// A few device rows on a large account: listing every device would cost more than looking
/// each row up, so after the first page (which tells the size) the rows go one by one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_few_rows_on_a_large_account_are_not_worth_the_device_listing() {
    let env = RunEnv::unlimited(30_000).await;
    let job = env.write_job("devices.csv", &disable_devices(1..=20));
    let output = env
        .run(&[
            "run",
            "--yes",
            "--json",
            "--rate",
            "1000",
            job.to_str().unwrap(),
        ])
        .await;
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    assert!(env.results().iter().all(|r| r["outcome"] == "succeeded"));
    let stats = env.sb.stats().await;
    let listed = env.sb.requests_to("GET /emnify/api/v1/endpoint").await;
    assert_eq!(listed, 1, "{}", stats["requests"]);
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(
        summary["bulk_requests"].get("emnify").is_none(),
        "{summary}"
    );
}

/// Rows the bulk path hands back (here 30 deletes: too few for the lane to list its SIMs, so
/// each is looked up alone) run side by side like any other rows, not one after another behind
/// the chunk: while a proxy holds the first row's delete unanswered, the other 29 go through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_the_bulk_path_hands_back_do_not_wait_for_each_other() {
    let env = RunEnv::unlimited(100).await;
    let proxy = crate::proxy::Proxy::start(
        env.sb.base.clone(),
        std::sync::Arc::new(|method: &axum::http::Method, path: &str| {
            match *method == axum::http::Method::DELETE && path == "/emnify/api/v1/sim/41" {
                true => crate::proxy::Fault::Hang,
                false => crate::proxy::Fault::Forward,
            }
        }),
    )
    .await;
    env.point_at(&proxy.base);
    let rows: String = (41..=70)
        .map(|i| format!("delete,emnify,{}\n", iccid(EMNIFY_PREFIX, i)))
        .collect();
    let job = env.write_job("delete.csv", &format!("action,provider,iccid\n{rows}"));
    let mut child = env
        .command(
            &[
                "run",
                "-q",
                "--yes",
                "--allow-irreversible",
                "--rate",
                "1000",
                job.to_str().unwrap(),
            ],
            crate::run_support::TOKEN,
        )
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let deleted = loop {
        let deleted = env
            .sb
            .journal()
            .await
            .iter()
            .filter(|e| e["change"] == "delete")
            .count();
        if deleted == 29 || std::time::Instant::now() > deadline {
            break deleted;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    let held = proxy.count(|s| s.method == axum::http::Method::DELETE && s.path.ends_with("/41"));
    assert!(held >= 1, "the first row's delete is out and held");
    assert_eq!(deleted, 29, "the other rows went through while it was held");
}

/// Credentials refused while the bulk rows are confirmed (the confirming listing answered 401,
/// after the one re-authentication): the run stops with exit 3 and the rows keep their markers
/// for the next run — it does not end as if they were done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_while_confirming_stop_the_run() {
    let env = RunEnv::unlimited(100).await;
    let proxy = crate::proxy::Proxy::start(
        env.sb.base.clone(),
        std::sync::Arc::new(|method: &axum::http::Method, path: &str| {
            if *method == axum::http::Method::GET
                && path.starts_with("/emnify/api/v1/endpoint?")
                && path.contains("q=status")
            {
                crate::proxy::Fault::Refuse(401)
            } else {
                crate::proxy::Fault::Forward
            }
        }),
    )
    .await;
    env.point_at(&proxy.base);
    let job = env.write_job("devices.csv", &disable_devices(1..=30));
    let output = env
        .run(&["run", "--yes", "--rate", "1000", job.to_str().unwrap()])
        .await;
    let text = show(&output);
    assert_eq!(output.status.code(), Some(3), "{text}");
    assert!(text.contains("refused the credentials"), "{text}");
    assert!(
        env.results().iter().all(|r| r["outcome"] == "not_started"),
        "{text}"
    );
}

/// Deleting 300 emnify SIMs in bulk — each released from its endpoint by one
/// `PATCH /api/v2/endpoint/multi`, then deleted by `DELETE /api/v1/sim/multi` — where the
/// provider refuses three (a reseller's sold SIMs, 403, as the DELETE's 403 in
/// emnify-bulk-endpoint.json allows): the compensation of a refused single delete holds in bulk.
/// Exactly those three fail with the provider's message and are put back on their endpoints, the
/// other 297 are deleted once each — whether one bad item fails the whole request or only
/// itself — in a handful of requests instead of three per row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_delete_puts_the_refused_sims_back_on_their_endpoints() {
    for partial in [false, true] {
        let env = RunEnv::new(SandboxConfig {
            sims: 400,
            limits: LimitMode::Off,
            bulk_partial: partial,
            ..SandboxConfig::default()
        })
        .await;
        let rows: String = (1..=300)
            .map(|i| format!("delete,emnify,{}\n", iccid(EMNIFY_PREFIX, i)))
            .collect();
        let job = env.write_job("delete.csv", &format!("action,provider,iccid\n{rows}"));
        let output = env
            .run(&[
                "run",
                "--yes",
                "--json",
                "--allow-irreversible",
                "--rate",
                "1000",
                "--bulk-chunk",
                "300",
                job.to_str().unwrap(),
            ])
            .await;
        assert_eq!(output.status.code(), Some(1), "{}", show(&output));
        let results = env.results();
        let refused: Vec<String> = [99, 199, 299]
            .iter()
            .map(|&i| iccid(EMNIFY_PREFIX, i))
            .collect();
        let failed: Vec<&HashMap<String, String>> = results
            .iter()
            .filter(|r| r["outcome"] == "failed")
            .collect();
        assert_eq!(
            failed
                .iter()
                .map(|r| r["iccid"].clone())
                .collect::<Vec<_>>(),
            refused,
            "partial {partial}"
        );
        for r in &failed {
            assert_eq!(r["http_status"], "403", "{r:?}");
            assert!(r["reason"].contains("a reseller cannot delete it"), "{r:?}");
            assert!(r["reason"].contains("put back on endpoint"), "{r:?}");
        }
        let deleted: Vec<&HashMap<String, String>> = results
            .iter()
            .filter(|r| r["outcome"] == "succeeded")
            .collect();
        assert_eq!(deleted.len(), 297, "partial {partial}");
        assert!(deleted.iter().all(|r| r["after"] == "deleted"));
        let journal = env.sb.journal().await;
        let mut deletes: HashMap<String, usize> = HashMap::new();
        for e in journal.iter().filter(|e| e["change"] == "delete") {
            *deletes
                .entry(e["target"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
        assert_eq!(deletes.len(), 297, "partial {partial}");
        assert!(deletes.values().all(|n| *n == 1), "{deletes:?}");
        for (sim, iccid) in [99, 199, 299].iter().zip(&refused) {
            let endpoint = format!("endpoint:{sim}");
            let last = journal
                .iter()
                .rev()
                .find(|e| e["target"] == iccid.as_str() || e["target"] == endpoint.as_str())
                .map(|e| e["change"].as_str().unwrap().to_string());
            assert_eq!(
                last.as_deref(),
                Some(format!("endpoint_sim:assigned-to:{sim}").as_str()),
                "partial {partial}"
            );
        }
        let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let bulk = summary["bulk_requests"]["emnify"].as_u64().unwrap();
        assert!(bulk >= 3, "{summary}");
        let text = String::from_utf8_lossy(&output.stderr);
        assert!(text.contains(&format!(" ({bulk} of them bulk)")), "{text}");
        assert!(
            summary["requests_total"].as_u64().unwrap() < 80,
            "partial {partial}: {summary}"
        );
    }
}

/// `plan` reads device rows as a bulk run does (one device listing, not two lookups per row)
/// and tells, per provider, the bulk requests and the time at the provider's documented limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_counts_bulk_requests_and_the_time_at_the_limit() {
    let env = RunEnv::new(SandboxConfig {
        sims: 3_000,
        ..SandboxConfig::default()
    })
    .await;
    let job = env.write_job("devices.csv", &disable_devices(1..=2_500));
    let output = env.run(&["plan", job.to_str().unwrap()]).await;
    let text = show(&output);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(
        text.contains("emnify: 2,500 disable-device (2,500 to change) in 3 bulk requests"),
        "{text}"
    );
    assert!(text.contains("at 6.65 requests/s"), "{text}");
    let listed = env.sb.requests_to("GET /emnify/api/v1/endpoint").await;
    let looked_up = env.sb.requests_to("GET /emnify/api/v1/sim").await;
    assert_eq!(
        (listed, looked_up),
        (3, 0),
        "three pages of devices, no lookups"
    );
}

/// `plan`'s count of requests is the run's: an emnify delete of a SIM on a device costs two
/// requests (the release from the endpoint, then the delete) — one by one (30 rows: too few to
/// list the SIMs, each looked up) and in bulk (60 rows: the listing, a release and a delete
/// per chunk, the confirming listing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_counts_the_requests_a_delete_run_sends() {
    for (rows, bulk) in [(30, false), (60, true)] {
        let env = RunEnv::unlimited(100).await;
        let job: String = (1..=rows)
            .map(|i| format!("delete,emnify,{}\n", iccid(EMNIFY_PREFIX, i)))
            .collect();
        let job = env.write_job("delete.csv", &format!("action,provider,iccid\n{job}"));
        let plan = env.run(&["plan", job.to_str().unwrap()]).await;
        let text = show(&plan);
        assert_eq!(plan.status.code(), Some(0), "{text}");
        let planned: u64 = text
            .split("; ≈ ")
            .nth(1)
            .and_then(|rest| rest.split(" requests").next())
            .and_then(|n| n.replace(',', "").parse().ok())
            .unwrap_or_else(|| panic!("no request estimate: {text}"));
        let output = env
            .run(&[
                "run",
                "--yes",
                "--json",
                "--allow-irreversible",
                "--rate",
                "1000",
                job.to_str().unwrap(),
            ])
            .await;
        assert_eq!(output.status.code(), Some(0), "{}", show(&output));
        let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let sent = summary["requests_total"].as_u64().unwrap();
        let in_bulk = summary["bulk_requests"]["emnify"].as_u64().unwrap_or(0);
        assert_eq!(in_bulk > 0, bulk, "{summary}");
        let stats = env.sb.stats().await;
        assert_eq!(
            planned, sent,
            "plan said ≈ {planned}, the run sent {sent}\n{text}\n{}",
            stats["requests"]
        );
    }
}

/// Whether a lane goes in bulk is decided on all its bulk-capable rows, grouped ones included,
/// by `plan` as by `run`: 15 ungrouped and 10 grouped device rows make 25 (≥ 20), so the 15
/// go in one bulk request in both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_and_run_count_grouped_rows_when_choosing_bulk() {
    let env = RunEnv::unlimited(100).await;
    let mut job = String::from("action,provider,iccid,group\n");
    for i in 1..=25 {
        let group = if i > 15 {
            format!("g{i}")
        } else {
            String::new()
        };
        job.push_str(&format!(
            "disable-device,emnify,{},{group}\n",
            iccid(EMNIFY_PREFIX, i)
        ));
    }
    let path = env.write_job("devices.csv", &job);
    let plan = env.run(&["plan", path.to_str().unwrap()]).await;
    let text = show(&plan);
    assert_eq!(plan.status.code(), Some(0), "{text}");
    assert!(
        text.contains("25 disable-device (25 to change) in 1 bulk requests"),
        "{text}"
    );
    let run = env
        .run(&["run", "--yes", "--json", path.to_str().unwrap()])
        .await;
    assert_eq!(run.status.code(), Some(0), "{}", show(&run));
    let summary: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(summary["bulk_requests"]["emnify"], 1, "{summary}");
}
