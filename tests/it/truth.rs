//! Provider truth: outcomes the real providers document but a sandbox built from the same
//! reading never produced. Each test runs the real binary against the sandbox switched into
//! the documented behaviour.

use simbatch::sandbox::inventory::{iccid, EMNIFY_PREFIX, TELNYX_PREFIX, TWILIO_PREFIX};
use simbatch::sandbox::{Faults, Latency, LimitMode, SandboxConfig};

use crate::proxy::{is_change, Fault, Proxy};
use crate::run_support::{show, RunEnv};

/// 429s never cost a row its attempts: every Twilio change is answered 429 the first time it
/// is sent (by a proxy, so the flood does not depend on how many requests a loaded machine
/// happens to have in flight at once), on top of the sandbox's own in-flight limit scaled down
/// to 5; with `--max-attempts 1` each row still ends `succeeded` (or `skipped`), each change
/// applied once — with the provider's `Retry-After` and without one (neither Twilio nor emnify
/// documents that header: provider-apis.md sections 1.7 and 2.4; the lane then backs off on
/// its own).
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
        let refused_once = std::sync::Mutex::new(std::collections::HashSet::new());
        let first_send_refused: crate::proxy::Rule = std::sync::Arc::new(move |method, path| {
            let first =
                is_change(method, path) && refused_once.lock().unwrap().insert(path.to_string());
            match first {
                true => Fault::TooMany(retry_after.then_some(1)),
                false => Fault::Forward,
            }
        });
        let proxy = Proxy::start(env.sb.base.clone(), first_send_refused).await;
        env.point_at(&proxy.base);
        let rows: String = (1..=24)
            .map(|i| format!("suspend,twilio,{}\n", iccid(TWILIO_PREFIX, i)))
            .collect();
        let job = env.write_job("flood.csv", &format!("action,provider,iccid\n{rows}"));
        let output = env
            .run(&["run", "--yes", "--max-attempts", "1", job.to_str().unwrap()])
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
        let succeeded = results
            .iter()
            .filter(|r| r["outcome"] == "succeeded")
            .count();
        assert!(succeeded >= 20, "{context}");
        let changes = proxy.count(|s| is_change(&s.method, &s.path));
        assert!(
            changes >= 2 * succeeded,
            "each change was refused once and sent again: {changes} change requests for \
             {succeeded} changes\n{context}"
        );
        assert_eq!(env.sb.journal().await.len(), succeeded, "{context}");
    }
}

/// A Telnyx SIM in a status Telnyx sets itself (`data_limit_exceeded`, `unauthorized_imei`,
/// `blocked`, `abolished`: "the SIM cannot transition while in these states", Telnyx's SIM
/// lifecycle page) fails in pre-flight with the status as the reason; no request is sent for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telnyx_sims_in_system_statuses_fail_in_pre_flight() {
    let env = RunEnv::new(SandboxConfig {
        sims: 100,
        limits: LimitMode::Off,
        system_statuses: true,
        ..SandboxConfig::default()
    })
    .await;
    let rows: String = (91..=95)
        .map(|i| format!("suspend,telnyx,{}\n", iccid(TELNYX_PREFIX, i)))
        .collect();
    let job = env.write_job("system.csv", &format!("action,provider,iccid\n{rows}"));
    let output = env.run(&["run", "--yes", job.to_str().unwrap()]).await;
    assert_eq!(output.status.code(), Some(1), "{}", show(&output));
    let results = env.results();
    for (row, status) in results.iter().zip([
        "data_limit_exceeded",
        "unauthorized_imei",
        "blocked",
        "abolished",
    ]) {
        assert_eq!(row["outcome"], "failed", "{row:?}");
        assert!(row["reason"].contains(&format!("`{status}`")), "{row:?}");
        assert_eq!(row["http_status"], "", "a request was sent: {row:?}");
        assert_eq!(row["attempts"], "0", "{row:?}");
    }
    assert_eq!(results[4]["outcome"], "succeeded", "{:?}", results[4]);
    assert_eq!(env.sb.journal().await.len(), 1);
}

/// Registering at Telnyx enables the SIM (SIMCardRegistration `status` defaults to `enabled`
/// in telnyx-wireless.json) and billing starts, unlike Twilio's `new`: `plan` and the run's
/// banner say so before anything is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_and_run_say_that_telnyx_registration_enables_the_sims() {
    let env = RunEnv::unlimited(20).await;
    let row = |provider: &str, prefix: &str| {
        let sim = iccid(prefix, 21);
        let code = simbatch::sandbox::inventory::registration_code(&sim);
        format!("register,{provider},{sim},{code}\n")
    };
    let job = env.write_job(
        "register.csv",
        &format!(
            "action,provider,iccid,registration_code\n{}{}",
            row("telnyx", TELNYX_PREFIX),
            row("twilio", TWILIO_PREFIX)
        ),
    );
    let note = "registering at Telnyx enables the SIMs at once";
    let plan = env.run(&["plan", job.to_str().unwrap()]).await;
    let shown = String::from_utf8_lossy(&plan.stdout);
    assert!(
        shown.contains(&format!("note: telnyx: {note}")),
        "{}",
        show(&plan)
    );
    assert!(!shown.contains("note: twilio"), "{}", show(&plan));
    let run = env.run(&["run", "--yes", job.to_str().unwrap()]).await;
    assert_eq!(run.status.code(), Some(0), "{}", show(&run));
    let banner = String::from_utf8_lossy(&run.stderr);
    assert_eq!(banner.matches(note).count(), 1, "{}", show(&run));
}

/// Proving that Telnyx actions ended with their SIMs in the target status lists the SIMs in
/// that status — a listing that grows with a mass change. While dispatch is busy that proof
/// waits until it is shared by enough rows (a page per 250), so a 2,000-row suspension lists
/// the inventory about twice (before, for pre-flight; after, to confirm), not at every sweep:
/// measured before this, every 2-s sweep listed every SIM already suspended, and 10,000 rows
/// cost 1.053 requests each (benches/README.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_telnyx_confirmation_lists_the_sims_once_dispatch_is_quiet() {
    let env = RunEnv::unlimited(2_000).await;
    let rows: String = (1..=2_000)
        .filter(|i| i % 10 != 0)
        .map(|i| format!("suspend,telnyx,{}\n", iccid(TELNYX_PREFIX, i)))
        .collect();
    let job = env.write_job("suspend.csv", &format!("action,provider,iccid\n{rows}"));
    // About 6 s of dispatch: three sweeps or more while it is busy.
    let output = env
        .run(&["run", "--yes", "--rate", "300", job.to_str().unwrap()])
        .await;
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    assert!(env.results().iter().all(|r| r["outcome"] == "succeeded"));
    let stats = env.sb.stats().await;
    let listed = env.sb.requests_to("GET /telnyx/v2/sim_cards").await;
    // 8 pages of 250 for pre-flight, 8 to confirm, a few first pages to learn a size.
    assert!(
        listed <= 20,
        "{listed} listing pages: {}",
        stats["requests"]
    );
}

/// A Telnyx SIM card action can end `interrupted` (`SIMCardAction.status` in
/// telnyx-wireless.json), leaving the SIM where it was; the actions list filters only on
/// in-progress, completed and failed. Exactly the rows whose change did not happen fail —
/// with the provider's reason — however their confirmation was batched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_telnyx_actions_fail_exactly_their_rows() {
    let env = RunEnv::new(SandboxConfig {
        sims: 100,
        limits: LimitMode::Off,
        faults: Faults {
            interrupt_async: 0.2,
            ..Faults::default()
        },
        ..SandboxConfig::default()
    })
    .await;
    let rows: String = (1..=100)
        .map(|i| format!("suspend,telnyx,{}\n", iccid(TELNYX_PREFIX, i)))
        .collect();
    let job = env.write_job("suspend.csv", &format!("action,provider,iccid\n{rows}"));
    let output = env.run(&["run", "--yes", job.to_str().unwrap()]).await;
    let results = env.results();
    let changed: std::collections::BTreeSet<String> = env
        .sb
        .journal()
        .await
        .iter()
        .map(|e| e["target"].as_str().unwrap().to_string())
        .collect();
    let with = |outcome: &str| -> std::collections::BTreeSet<String> {
        results
            .iter()
            .filter(|r| r["outcome"] == outcome)
            .map(|r| r["iccid"].clone())
            .collect()
    };
    let failed = with("failed");
    assert_eq!(with("succeeded"), changed, "{}", show(&output));
    assert_eq!(failed.len() + changed.len() + 10, 100, "{}", show(&output));
    assert!(
        failed.len() >= 5,
        "too few interrupted to show anything: {}",
        failed.len()
    );
    for r in results.iter().filter(|r| r["outcome"] == "failed") {
        assert!(r["reason"].contains("interrupted"), "{r:?}");
    }
    assert_eq!(output.status.code(), Some(1), "{}", show(&output));
}

/// A Fleet update is asynchronous like a status update (Twilio changelog 2020-07-21; error
/// 83009 refuses a Fleet update while the Sim is `scheduled`): 202 `scheduled`, then the Sim's
/// `fleet_sid` changes. Moves mixed with suspends are confirmed together — each by the field
/// it changed — and none ends `failed` or `unknown`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_fleet_moves_and_suspends_confirm_by_what_each_changed() {
    let env = RunEnv::unlimited(200).await;
    // Sims start in the first Fleet; SIMs 1-50 move to `reserve`, 51-100 are suspended.
    let moves: String = (1..=50)
        .map(|i| format!("move,twilio,{},reserve\n", iccid(TWILIO_PREFIX, i)))
        .collect();
    let suspends: String = (51..=100)
        .map(|i| format!("suspend,twilio,{},\n", iccid(TWILIO_PREFIX, i)))
        .collect();
    let job = env.write_job(
        "mixed.csv",
        &format!("action,provider,iccid,target\n{moves}{suspends}"),
    );
    let output = env.run(&["run", "--yes", job.to_str().unwrap()]).await;
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let results = env.results();
    let outcomes = |action: &str, outcome: &str| {
        results
            .iter()
            .filter(|r| r["action"] == action && r["outcome"] == outcome)
            .count()
    };
    assert_eq!(outcomes("move", "succeeded"), 50, "{}", show(&output));
    assert_eq!(outcomes("suspend", "succeeded"), 45, "{}", show(&output));
    assert_eq!(
        outcomes("suspend", "skipped"),
        5,
        "every tenth starts suspended"
    );
    for r in results.iter().filter(|r| r["action"] == "move") {
        assert_eq!(r["after"], "HF00000000000000000000000000000002", "{r:?}");
    }
    let fleet_changes = env
        .sb
        .journal()
        .await
        .iter()
        .filter(|e| e["change"].as_str().unwrap().starts_with("fleet:"))
        .count();
    assert_eq!(fleet_changes, 50);
}

/// Behind an API gateway or an egress proxy, Twilio's absolute `meta.next_page_url` names
/// Twilio's host, not the configured `base_url`'s. The link is re-rooted onto `base_url` (its
/// path from the version prefix on, its query) — nothing is ever sent to the other host — so
/// a listing of several pages completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_page_links_to_another_host_are_rerooted_onto_base_url() {
    let env = RunEnv::new(SandboxConfig {
        sims: 2500,
        limits: LimitMode::Off,
        foreign_links: true,
        ..SandboxConfig::default()
    })
    .await;
    let out = env.dir.path().join("inventory.csv");
    let output = env
        .run(&[
            "export",
            "--provider",
            "twilio",
            "-o",
            out.to_str().unwrap(),
        ])
        .await;
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let listed = std::fs::read_to_string(&out).unwrap().lines().count();
    assert_eq!(
        listed,
        1 + 2500,
        "header and every registered Sim, over three pages"
    );
}

/// emnify refuses some deletes with 403 (a reseller deleting a SIM it sold: the DELETE's 403 in
/// emnify-sim-endpoint-euicc.json). simbatch has already released the SIM from its endpoint
/// (emnify deletes only SIMs on no endpoint), so it puts the SIM back and fails the row with
/// both facts; the delete that is allowed goes through. A 403 on one resource fails that row
/// only: the run goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_emnify_delete_puts_the_sim_back_on_its_endpoint() {
    let env = RunEnv::unlimited(100).await;
    let rows: String = [98, 99]
        .iter()
        .map(|&i| format!("delete,emnify,{}\n", iccid(EMNIFY_PREFIX, i)))
        .collect();
    let job = env.write_job("delete.csv", &format!("action,provider,iccid\n{rows}"));
    let output = env
        .run(&[
            "run",
            "--yes",
            "--allow-irreversible",
            job.to_str().unwrap(),
        ])
        .await;
    assert_eq!(output.status.code(), Some(1), "{}", show(&output));
    let results = env.results();
    assert_eq!(results[0]["outcome"], "succeeded", "{:?}", results[0]);
    let refused = &results[1];
    assert_eq!(refused["outcome"], "failed", "{refused:?}");
    assert_eq!(refused["http_status"], "403", "{refused:?}");
    assert!(
        refused["reason"].contains("put back on endpoint"),
        "{refused:?}"
    );
    let changes = sim_99_on_its_endpoint(&env).await;
    assert_eq!(
        changes.last().map(String::as_str),
        Some("endpoint_sim:assigned-to:99"),
        "{changes:?}"
    );
}

/// A run killed after it released a SIM from its endpoint for a delete, with the delete out
/// and unanswered: the resumed run finds the SIM on no endpoint. The row's marker names the
/// endpoint the SIM was released from, so when emnify refuses the delete (403) the SIM goes
/// back on it and the row fails with both facts — never `unknown` (the SIM was read after the
/// interruption: the earlier delete did not land), never a device silently left without its
/// SIM. One row at a time and in bulk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_killed_after_the_release_puts_a_refused_sim_back_on_resume() {
    for bulk in [false, true] {
        let env = RunEnv::unlimited(100).await;
        // In bulk: enough rows for the lane to list its SIMs (lane::SNAPSHOT_MIN_ROWS).
        let first = if bulk { 41 } else { 98 };
        let rows: String = (first..=100)
            .map(|i| format!("delete,emnify,{}\n", iccid(EMNIFY_PREFIX, i)))
            .collect();
        let job = env.write_job("delete.csv", &format!("action,provider,iccid\n{rows}"));
        let mut args = vec!["run", "-q", "--yes", "--allow-irreversible"];
        if !bulk {
            args.push("--no-bulk");
        }
        args.push(job.to_str().unwrap());
        // The first run: every delete is out and never answered; killed once SIM 99's is.
        let hung = if bulk {
            "/emnify/api/v1/sim/multi"
        } else {
            "/emnify/api/v1/sim/99"
        };
        let hanging = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let hangs = hanging.clone();
        let proxy = Proxy::start(
            env.sb.base.clone(),
            std::sync::Arc::new(move |method: &axum::http::Method, _: &str| {
                let hang = hangs.load(std::sync::atomic::Ordering::SeqCst);
                match hang && *method == axum::http::Method::DELETE {
                    true => Fault::Hang,
                    false => Fault::Forward,
                }
            }),
        )
        .await;
        env.point_at(&proxy.base);
        let mut child = env
            .command(&args, crate::run_support::TOKEN)
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while proxy.count(|s| s.method == axum::http::Method::DELETE && s.path == hung) == 0 {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let seen: Vec<String> = proxy
                    .seen()
                    .iter()
                    .map(|s| format!("{} {}", s.method, s.path))
                    .collect();
                panic!("no delete of {hung}: {seen:#?}");
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let sim_99 = iccid(EMNIFY_PREFIX, 99);
        let released = sim_99_on_its_endpoint(&env).await;
        assert_eq!(released, ["endpoint_sim:released-from:99"], "bulk: {bulk}");

        // The resume: the provider answers again.
        hanging.store(false, std::sync::atomic::Ordering::SeqCst);
        let output = env.run(&args).await;
        let context = format!("bulk: {bulk}\n{}", show(&output));
        assert_eq!(output.status.code(), Some(1), "{context}");
        let results = env.results();
        for r in &results {
            let expected = if r["iccid"] == sim_99 {
                "failed"
            } else {
                "succeeded"
            };
            assert_eq!(r["outcome"], expected, "{r:?}\n{context}");
        }
        let refused = results.iter().find(|r| r["iccid"] == sim_99).unwrap();
        assert!(
            refused["reason"].contains("cannot delete")
                && refused["reason"].contains("put back on endpoint 99"),
            "{refused:?}\n{context}"
        );
        let changes = sim_99_on_its_endpoint(&env).await;
        assert_eq!(
            changes.last().map(String::as_str),
            Some("endpoint_sim:assigned-to:99"),
            "{changes:?}\n{context}"
        );
    }
}

/// A refused delete's endpoint updates answered by a gateway's 502 after emnify applied them —
/// the release (the delete is then sent again after a read-back that finds the SIM on no
/// endpoint) or the put-back: either way the SIM ends back on its endpoint, and the row says
/// so, never that the device is detached. Both updates are safe to repeat (assigning a SIM
/// where it is, or releasing an endpoint without one, changes nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_updates_answered_by_a_gateway_error_still_put_a_refused_sim_back() {
    for failing in [0, 1] {
        let env = RunEnv::unlimited(100).await;
        let patches = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = patches.clone();
        let proxy = Proxy::start(
            env.sb.base.clone(),
            std::sync::Arc::new(move |method: &axum::http::Method, path: &str| {
                let endpoint =
                    *method == axum::http::Method::PATCH && path == "/emnify/api/v1/endpoint/99";
                if endpoint && counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == failing
                {
                    Fault::AppliedThenGateway(502)
                } else {
                    Fault::Forward
                }
            }),
        )
        .await;
        env.point_at(&proxy.base);
        let sim_99 = iccid(EMNIFY_PREFIX, 99);
        let job = env.write_job(
            "delete.csv",
            &format!("action,provider,iccid\ndelete,emnify,{sim_99}\n"),
        );
        let output = env
            .run(&[
                "run",
                "--yes",
                "--allow-irreversible",
                job.to_str().unwrap(),
            ])
            .await;
        let context = format!("502 on endpoint update {failing}\n{}", show(&output));
        assert_eq!(output.status.code(), Some(1), "{context}");
        let row = &env.results()[0];
        assert_eq!(row["outcome"], "failed", "{row:?}\n{context}");
        assert!(
            row["reason"].contains("put back on endpoint 99")
                && !row["reason"].contains("detached"),
            "{row:?}\n{context}"
        );
        let last = sim_99_on_its_endpoint(&env).await.pop();
        assert_eq!(
            last.as_deref(),
            Some("endpoint_sim:assigned-to:99"),
            "{context}"
        );
        assert_eq!(
            patches.load(std::sync::atomic::Ordering::SeqCst),
            3,
            "{context}"
        );
    }
}

/// When the SIM cannot be put back either (here a proxy refuses the second PATCH of the
/// endpoint: the release went through, the re-attach did not), the row says the device is
/// detached, its `after` names the endpoint, and `revert.csv` carries the `attach` row that
/// puts the SIM back — which, run against the provider, does (SPEC 3.1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_left_detached_is_reattached_by_the_revert_job() {
    let env = RunEnv::unlimited(100).await;
    let patches = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = patches.clone();
    let proxy = crate::proxy::Proxy::start(
        env.sb.base.clone(),
        std::sync::Arc::new(move |method: &axum::http::Method, path: &str| {
            let endpoint =
                *method == axum::http::Method::PATCH && path == "/emnify/api/v1/endpoint/99";
            if endpoint && counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst) > 0 {
                crate::proxy::Fault::Refuse(403)
            } else {
                crate::proxy::Fault::Forward
            }
        }),
    )
    .await;
    env.point_at(&proxy.base);
    let sim_99 = iccid(EMNIFY_PREFIX, 99);
    let job = env.write_job(
        "delete.csv",
        &format!("action,provider,iccid\ndelete,emnify,{sim_99}\n"),
    );
    let args = [
        "run",
        "--yes",
        "--allow-irreversible",
        job.to_str().unwrap(),
    ];
    let output = env.run(&args).await;
    assert_eq!(output.status.code(), Some(1), "{}", show(&output));
    let row = &env.results()[0];
    assert_eq!(row["outcome"], "failed", "{row:?}");
    assert!(row["reason"].contains("the device is detached"), "{row:?}");
    assert_eq!(row["after"], "detached from endpoint 99", "{row:?}");
    let revert = crate::run_support::read_csv(&env.report_dir().join("revert.csv"));
    assert_eq!(revert.len(), 1, "{revert:?}");
    assert_eq!(
        (
            revert[0]["action"].as_str(),
            revert[0]["provider"].as_str(),
            revert[0]["iccid"].as_str(),
            revert[0]["target"].as_str()
        ),
        ("attach", "emnify", sim_99.as_str(), "99"),
        "{revert:?}"
    );

    // The revert job, straight to the provider: the SIM is back on its endpoint.
    env.point_at(&env.sb.base);
    let revert_job = env.dir.path().join("revert.csv");
    std::fs::copy(env.report_dir().join("revert.csv"), &revert_job).unwrap();
    std::fs::remove_dir_all(env.dir.path().join("reports")).unwrap();
    let output = env
        .run(&["run", "--yes", revert_job.to_str().unwrap()])
        .await;
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let row = &env.results()[0];
    assert_eq!(
        (
            row["outcome"].as_str(),
            row["before"].as_str(),
            row["after"].as_str()
        ),
        ("succeeded", "none", "99"),
        "{row:?}"
    );
    let last = sim_99_on_its_endpoint(&env).await.pop();
    assert_eq!(last.as_deref(), Some("endpoint_sim:assigned-to:99"));
}

/// Credentials without the role a run needs: every request of the account is refused with 403
/// before any has succeeded. The run stops at once (exit 3) naming the provider, instead of
/// failing 300 rows one by one — a 403 on one resource fails only its row (see above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lane_refused_403_from_its_first_request_stops_the_run() {
    let env = RunEnv::unlimited(400).await;
    let proxy = crate::proxy::Proxy::start(
        env.sb.base.clone(),
        std::sync::Arc::new(|_: &axum::http::Method, path: &str| {
            if path.starts_with("/twilio/") {
                crate::proxy::Fault::Refuse(403)
            } else {
                crate::proxy::Fault::Forward
            }
        }),
    )
    .await;
    env.point_at(&proxy.base);
    let rows: String = (1..=300)
        .map(|i| format!("suspend,twilio,{}\n", iccid(TWILIO_PREFIX, i)))
        .collect();
    let job = env.write_job("role.csv", &format!("action,provider,iccid\n{rows}"));
    let output = env.run(&["run", "--yes", job.to_str().unwrap()]).await;
    let text = show(&output);
    assert_eq!(output.status.code(), Some(3), "{text}");
    assert!(text.contains("twilio") && text.contains("403"), "{text}");
    assert!(
        proxy.count(|s| s.path.starts_with("/twilio/")) < 50,
        "the run went on being refused: {} requests",
        proxy.count(|s| s.path.starts_with("/twilio/"))
    );
    assert!(
        !env.results().iter().any(|r| r["outcome"] == "failed"),
        "{text}"
    );
}

/// emnify asks that single-endpoint updates run one at a time ("Execute this operation
/// sequentially", PATCH /api/v1/endpoint/{endpoint_id} in emnify-bulk-endpoint.json): 40
/// `disable-device` rows at `--rate 500` with 20 ms of latency never have two such PATCHes in
/// flight at once, while their lookups run side by side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emnify_endpoint_updates_go_one_at_a_time() {
    let env = RunEnv::new(SandboxConfig {
        sims: 100,
        limits: LimitMode::Off,
        faults: Faults {
            latency: Latency {
                base_ms: 20,
                jitter_ms: 0,
            },
            ..Faults::default()
        },
        ..SandboxConfig::default()
    })
    .await;
    let rows: String = (1..=40)
        .map(|i| format!("disable-device,emnify,{}\n", iccid(EMNIFY_PREFIX, i)))
        .collect();
    let job = env.write_job("devices.csv", &format!("action,provider,iccid\n{rows}"));
    let output = env
        .run(&[
            "run",
            "--yes",
            "--no-bulk",
            "--rate",
            "500",
            job.to_str().unwrap(),
        ])
        .await;
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let stats = env.sb.stats().await;
    let route = "emnify PATCH /emnify/api/v1/endpoint/{endpoint_id}";
    let peak = &stats["peak_in_flight_by_route"][route];
    assert_eq!(peak.as_u64(), Some(1), "{stats}");
}

/// An eUICC's operation history is read whole: emnify pages it (100 by default, with a cap it
/// does not state) and states no order. With 120 audits on record, a profile download whose
/// answer is lost (a 502 page after emnify scheduled it) is found on read-back as the one
/// operation after those the row saw before sending — never sent a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_operation_history_is_read_whole_before_anything_is_sent_again() {
    let env = RunEnv::unlimited(100).await;
    let audit = serde_json::json!([{"action": {"id": 1}, "validity_period": 86400}]);
    for _ in 0..120 {
        let r = env
            .sb
            .em(
                axum::http::Method::POST,
                "/api/v1/euicc/4/operation",
                Some(audit.clone()),
            )
            .await;
        assert!(r.status.is_success(), "{}", r.text);
    }
    env.sb.settle().await;
    let _proxy = crate::proxy::Proxy::start(
        env.sb.base.clone(),
        crate::proxy::on_changes(|| crate::proxy::Fault::AppliedThenGateway(502)),
    )
    .await;
    env.point_at(&_proxy.base);
    let job = env.write_job(
        "download.csv",
        &format!(
            "action,provider,eid,activation_code,enable,rollback\n\
             profile-download,emnify,{},1$smdp.example.com$M-4,true,false\n",
            simbatch::sandbox::inventory::eid(4)
        ),
    );
    let output = env
        .run(&[
            "run",
            "--yes",
            "--wait-timeout",
            "60s",
            job.to_str().unwrap(),
        ])
        .await;
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    assert_eq!(
        env.results()[0]["outcome"],
        "succeeded",
        "{}",
        show(&output)
    );
    assert_eq!(
        env.sb.downloads(4).await,
        1,
        "the download was scheduled more than once"
    );
}

/// The journal's changes of SIM 99 and of its endpoint 99 (emnify), in order: where the SIM of
/// a refused delete ended up.
async fn sim_99_on_its_endpoint(env: &RunEnv) -> Vec<String> {
    let sim_99 = iccid(EMNIFY_PREFIX, 99);
    env.sb
        .journal()
        .await
        .iter()
        .filter(|e| e["target"] == sim_99.as_str() || e["target"] == "endpoint:99")
        .map(|e| e["change"].as_str().unwrap().to_string())
        .collect()
}
