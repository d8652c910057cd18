//! What a gateway between simbatch and the provider can do to an answer the provider gave:
//! replace it with a 5xx page after the change was applied, cut it short, replace it with a body
//! of another shape. SPEC 3.1: such an answer "may mean applied" — the target is read back (for
//! eUICC operations, the eUICC's operations are searched) before anything is sent again, and the
//! row ends `succeeded` (or `unknown` when it cannot be verified), never `failed` for a change
//! that was applied. AWS's SDKs treat a 5xx on a non-idempotent call the same way.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use simbatch::sandbox::inventory::{self, EMNIFY_PREFIX, TELNYX_PREFIX, TWILIO_PREFIX};

use crate::proxy::{is_change, on_changes, Fault, Proxy};
use crate::run_support::{show, RunEnv};

/// Three suspensions at each provider and three eUICC profile downloads.
fn job() -> String {
    let mut job = String::from("action,provider,iccid,eid,activation_code,enable,rollback\n");
    for i in [1, 2, 3] {
        for (provider, prefix) in [
            ("emnify", EMNIFY_PREFIX),
            ("twilio", TWILIO_PREFIX),
            ("telnyx", TELNYX_PREFIX),
        ] {
            job.push_str(&format!(
                "suspend,{provider},{},,,,\n",
                inventory::iccid(prefix, i)
            ));
        }
        job.push_str(&format!(
            "profile-download,emnify,,{},1$smdp.example.com$M-{i},true,false\n",
            inventory::eid(i)
        ));
    }
    job
}

/// Runs the job through a proxy that plays `fault` on every change request after forwarding
/// it, then checks that each change was applied exactly once and every row says so.
async fn applied_exactly_once(fault: fn(usize) -> Fault, what: &str) {
    let env = RunEnv::new(super::sandbox(100)).await;
    let changes = Arc::new(AtomicUsize::new(0));
    let counter = changes.clone();
    let proxy = super::behind_proxy(
        &env,
        on_changes(move || fault(counter.fetch_add(1, Ordering::SeqCst))),
    )
    .await;
    let path = env.write_job("job.csv", &job());
    let output = env
        .run(&["run", "-q", "--wait-timeout", "60s", path.to_str().unwrap()])
        .await;
    let results = env.results();
    assert_eq!(results.len(), 12, "{what}: {}", show(&output));
    for r in &results {
        assert_eq!(
            r["outcome"],
            "succeeded",
            "{what}: a change the provider applied must not be reported otherwise: {r:?}\n{}",
            show(&output)
        );
    }
    assert_eq!(output.status.code(), Some(0), "{what}: {}", show(&output));

    // Each SIM changed once, each eUICC got one profile (the journal), and each eUICC was sent
    // one download (its operations: the sandbox applies only the first of contradicting ones,
    // so the journal alone would hide a second).
    let mut by_target: HashMap<String, usize> = HashMap::new();
    for e in env.sb.journal().await {
        *by_target
            .entry(e["target"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(by_target.len(), 12, "{what}: {by_target:?}");
    assert!(by_target.values().all(|n| *n == 1), "{what}: {by_target:?}");
    for k in [1, 2, 3] {
        let downloads = env.sb.downloads(k).await;
        assert_eq!(downloads, 1, "{what}: eUICC {k}");
    }
    assert!(
        proxy.count(|s| is_change(&s.method, &s.path)) >= 12,
        "{what}: the proxy saw the changes"
    );
}

/// Case 1: a 502/503/504 page after the change was applied, a 2xx body cut short, a 2xx body
/// of another shape: read back, found applied, `succeeded`; never sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_01_an_answer_that_may_mean_applied_is_read_back_not_sent_again() {
    applied_exactly_once(
        |n| Fault::AppliedThenGateway([502, 503, 504][n % 3]),
        "gateway page",
    )
    .await;
    applied_exactly_once(|_| Fault::AppliedThenCutBody, "cut body").await;
    applied_exactly_once(|_| Fault::AppliedThenWrongShape, "wrong shape").await;
}

/// Case 2: rows wait out a long `Retry-After` at the lane's gate when the operator presses
/// Ctrl-C: the waits end at once and no change request leaves after it (SPEC 3.3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_02_after_the_first_ctrl_c_no_change_leaves_and_waits_end() {
    let env = RunEnv::new(super::sandbox(100)).await;
    // Every change is refused with a five-minute Retry-After: the lane pauses.
    let proxy = super::behind_proxy(&env, on_changes(|| Fault::TooMany(Some(300)))).await;
    let path = env.write_job(
        "job.csv",
        &super::job_of("suspend", "emnify", EMNIFY_PREFIX, super::active(36)),
    );
    let child = env
        .command(&["run", path.to_str().unwrap()], crate::run_support::TOKEN)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let changes = |p: &Proxy| p.count(|s| is_change(&s.method, &s.path));
    // The first refusal, then until no more change requests arrive: the lane is paused.
    let mut stable = 0;
    let mut last = 0;
    for _ in 0..3000 {
        let now = changes(&proxy);
        if now > 0 && now == last {
            stable += 1;
            if stable == 50 {
                break;
            }
        } else {
            stable = 0;
        }
        last = now;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(last > 0, "the run never sent a change");
    let at_interrupt = changes(&proxy);
    std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let pid = child.id();
    let waited = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap());
    // Five minutes of Retry-After are left; the run must not sit them out.
    let output = match tokio::time::timeout(Duration::from_secs(60), waited).await {
        Ok(output) => output.unwrap(),
        Err(_) => {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("the run was still waiting 60 s after Ctrl-C");
        }
    };
    assert_eq!(output.status.code(), Some(3), "{}", show(&output));
    assert_eq!(
        changes(&proxy),
        at_interrupt,
        "a change request left after Ctrl-C: {:?}",
        proxy.seen()
    );
    assert!(
        env.sb.journal().await.is_empty(),
        "every change was refused"
    );
    let results = env.results();
    assert!(
        results.iter().all(|r| r["outcome"] == "not_started"),
        "no row has an outcome it did not get: {results:?}"
    );
}

/// Case 14: an endless answer (here to every emnify read and every Telnyx change) fails that
/// request as a provider fault at a size cap instead of being buffered whole: the run ends
/// normally with reasons, under an address-space limit that whole buffering would break.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_14_response_bodies_are_size_capped() {
    let env = RunEnv::new(super::sandbox(100)).await;
    let _proxy = super::behind_proxy(
        &env,
        Arc::new(|method, path| {
            let emnify_read = *method == Method::GET && path.starts_with("/emnify/api/v1/sim");
            let telnyx_change = is_change(method, path) && path.starts_with("/telnyx");
            if emnify_read || telnyx_change {
                Fault::EndlessBody
            } else {
                Fault::Forward
            }
        }),
    )
    .await;
    let mut job = String::from("action,provider,iccid\n");
    for i in [1, 2] {
        job.push_str(&format!(
            "suspend,emnify,{}\nsuspend,telnyx,{}\n",
            inventory::iccid(EMNIFY_PREFIX, i),
            inventory::iccid(TELNYX_PREFIX, i)
        ));
    }
    let path = env.write_job("job.csv", &job);
    let cmd = env.command(
        &["run", "--max-attempts", "2", path.to_str().unwrap()],
        crate::run_support::TOKEN,
    );
    // 2 GiB of address space: ample for a run, far from what buffering these bodies takes.
    let output = crate::run_support::output_with_limit(cmd, libc::RLIMIT_AS, 2 << 30).await;
    assert_eq!(output.status.code(), Some(1), "{}", show(&output));
    let results = env.results();
    assert_eq!(results.len(), 4);
    for r in &results {
        assert_eq!(r["outcome"], "failed", "{r:?}");
        assert!(r["reason"].contains("larger than"), "{r:?}");
    }
    assert!(env.sb.journal().await.is_empty());
}

/// Also seen: with every batched confirmation listing refused (Twilio answers 400 to a
/// listing it does not accept), the changes were left `unknown` though each could be read on
/// its own: a listing that fails for a reason other than credentials falls back to one read
/// per change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_confirmation_listings_fall_back_to_reading_each_change() {
    let env = RunEnv::new(super::sandbox(100)).await;
    let proxy = super::behind_proxy(
        &env,
        Arc::new(|method, path| {
            let status_listing = *method == Method::GET
                && path.starts_with("/twilio/v1/Sims?")
                && path.contains("Status=");
            if status_listing {
                Fault::Refuse(400)
            } else {
                Fault::Forward
            }
        }),
    )
    .await;
    let path = env.write_job(
        "job.csv",
        &super::job_of("suspend", "twilio", TWILIO_PREFIX, super::active(60)),
    );
    let output = env
        .run(&["run", "-q", "--wait-timeout", "60s", path.to_str().unwrap()])
        .await;
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    assert!(env.results().iter().all(|r| r["outcome"] == "succeeded"));
    assert!(
        proxy.count(|s| s.path.contains("Status=")) > 0,
        "the batched listing was tried"
    );
}
