//! Multi-step migrations through the real binary, each device a `group` whose steps run in
//! order, each only after the previous one was confirmed:
//! - eSIM profile migration of 1,000 eUICCs with 5% of asynchronous operations failing: every
//!   device ends fully migrated (download, then delete, in that order in the journal, with the
//!   fallback step checked in between) or with its failed step reported and the rest `blocked`,
//!   its old profile untouched; with SIGKILLs in the middle and resumes, the same holds and no
//!   step is applied twice.
//! - physical-SIM migration of 2,000 SIMs from emnify to Twilio and Telnyx: every old SIM is
//!   suspended only after its new SIM was confirmed active.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use simbatch::sandbox::inventory::{self, EMNIFY_PREFIX, TELNYX_PREFIX, TWILIO_PREFIX};
use simbatch::sandbox::{Faults, LimitMode, SandboxConfig};

use crate::run_support::{show, RunEnv, TOKEN};

const EUICCS: u64 = 1_000;

fn esim_job() -> String {
    let mut job =
        String::from("action,provider,eid,group,activation_code,enable,rollback,profile_iccid\n");
    for k in 1..=EUICCS {
        let eid = inventory::eid(k);
        job.push_str(&format!(
            "profile-download,emnify,{eid},euicc-{k},1$smdp.example.com$MIGRATE-{k},true,true,\n\
             profile-fallback,emnify,{eid},euicc-{k},,,,{}\n\
             profile-delete,emnify,{eid},euicc-{k},,,,{}\n",
            inventory::bootstrap_profile(k),
            inventory::operational_profile(k)
        ));
    }
    job
}

fn esim_env_config() -> SandboxConfig {
    SandboxConfig {
        sims: (EUICCS * 10) as u32,
        limits: LimitMode::Off,
        async_delay: Duration::from_millis(50),
        faults: Faults {
            fail_async: 0.05,
            ..Faults::default()
        },
        ..SandboxConfig::default()
    }
}

/// The sandbox journal per target: (when, what changed), in journal order.
async fn journal_by_target(env: &RunEnv) -> HashMap<String, Vec<(DateTime<Utc>, String)>> {
    let mut journal: HashMap<String, Vec<(DateTime<Utc>, String)>> = HashMap::new();
    for e in env.sb.journal().await {
        journal
            .entry(e["target"].as_str().unwrap().to_string())
            .or_default()
            .push((at(&e), e["change"].as_str().unwrap().to_string()));
    }
    journal
}

fn at(e: &serde_json::Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(e["at"].as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc)
}

/// Checks the end state of the eSIM migration against the journal and the eUICCs themselves.
async fn assert_cleanly_migrated(env: &RunEnv) {
    let results = env.results();
    assert_eq!(results.len(), 3 * EUICCS as usize);
    let mut journal = journal_by_target(env).await;
    let (mut migrated, mut stopped) = (0, 0);
    for (k, steps) in (1..=EUICCS).zip(results.chunks(3)) {
        let eid = inventory::eid(k);
        let outcomes: Vec<&str> = steps.iter().map(|r| r["outcome"].as_str()).collect();
        let changes = journal.remove(&eid).unwrap_or_default();
        let kinds: Vec<&str> = changes
            .iter()
            .map(|(_, c)| c.split(':').next().unwrap())
            .collect();
        let euicc = env
            .sb
            .em(reqwest::Method::GET, &format!("/api/v1/euicc/{k}"), None)
            .await;
        let profiles = euicc.body["profile"].as_array().unwrap().clone();
        let status_of = |iccid: &str| {
            profiles
                .iter()
                .find(|p| p["iccid_with_luhn"] == iccid)
                .map(|p| p["status"]["description"].as_str().unwrap().to_string())
        };
        let old = inventory::operational_profile(k);
        match outcomes.as_slice() {
            ["succeeded", "skipped" | "succeeded", "succeeded"] => {
                migrated += 1;
                assert_eq!(kinds, ["profile-download", "profile-delete"], "{eid}");
                assert!(changes[0].0 < changes[1].0, "{eid}: delete before download");
                // The fallback step was read after the download was confirmed, and the delete
                // was sent only after that.
                assert!(steps[1]["started_at"] >= steps[0]["finished_at"], "{eid}");
                assert!(steps[2]["started_at"] >= steps[1]["finished_at"], "{eid}");
                assert_eq!(
                    status_of(&inventory::downloaded_profile(k)).as_deref(),
                    Some("Enabled"),
                    "{eid}"
                );
                assert_ne!(status_of(&old).as_deref(), Some("Enabled"), "{eid}");
            }
            ["failed", "blocked", "blocked"] => {
                stopped += 1;
                assert!(kinds.is_empty(), "{eid}: {kinds:?} after a failed download");
                assert_eq!(status_of(&old).as_deref(), Some("Enabled"), "{eid}");
                assert!(steps[0]["reason"].contains("failed"), "{:?}", steps[0]);
                assert!(
                    steps[1]["reason"].contains("did not succeed"),
                    "{:?}",
                    steps[1]
                );
            }
            ["succeeded", "succeeded" | "skipped", "failed"] => {
                // The delete failed on the device: the new profile works, the old one is still
                // installed (nothing half-done is reported as done).
                stopped += 1;
                assert_eq!(kinds, ["profile-download"], "{eid}");
                assert!(status_of(&old).is_some(), "{eid}: old profile gone");
            }
            other => panic!("{eid}: unexpected outcomes {other:?}"),
        }
    }
    assert!(journal.is_empty(), "changes outside the job: {journal:?}");
    assert!(migrated > 800, "{migrated} migrated");
    assert!(stopped > 0, "5% async failures produced no failed device");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn esim_migration_of_1000_euiccs_with_async_failures_never_half_migrates() {
    let env = RunEnv::new(esim_env_config()).await;
    let path = env.write_job("esim.csv", &esim_job());
    let output = env
        .run(&[
            "run",
            "-q",
            "--rate",
            "3000",
            "--allow-irreversible",
            path.to_str().unwrap(),
        ])
        .await;
    assert_eq!(output.status.code(), Some(1), "{}", show(&output));
    assert_cleanly_migrated(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn esim_migration_killed_mid_way_resumes_at_the_right_step_with_nothing_applied_twice() {
    let env = RunEnv::new(esim_env_config()).await;
    let path = env.write_job("esim.csv", &esim_job());
    let args = [
        "run",
        "-q",
        "--rate",
        "3000",
        "--allow-irreversible",
        path.to_str().unwrap(),
    ];
    let seed = fastrand::u64(..);
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut kills = 0;
    for _ in 0..3 {
        let mut child = env.command(&args, TOKEN).spawn().unwrap();
        let wait = Duration::from_millis(rng.u64(300..1_500));
        let killed = tokio::task::spawn_blocking(move || {
            std::thread::sleep(wait);
            let running = child.try_wait().unwrap().is_none();
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            running
        })
        .await
        .unwrap();
        kills += usize::from(killed);
    }
    assert!(kills >= 1, "seed {seed}: the run was never killed mid-way");
    let output = env.run(&args).await;
    assert_eq!(
        output.status.code(),
        Some(1),
        "seed {seed}: {}",
        show(&output)
    );
    assert_cleanly_migrated(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_migration_suspends_each_old_sim_only_after_its_new_one_is_active() {
    const DEVICES: u64 = 2_000;
    const SIMS: u64 = 2_300;
    let env = RunEnv::new(SandboxConfig {
        sims: SIMS as u32,
        limits: LimitMode::Off,
        async_delay: Duration::from_millis(50),
        ..SandboxConfig::default()
    })
    .await;
    let mut job = String::from("action,provider,iccid,group,registration_code,target\n");
    let old_sims: Vec<u64> = (1..)
        .filter(|i| !inventory::starts_suspended(*i))
        .take(DEVICES as usize)
        .collect();
    for (n, old) in old_sims.iter().enumerate() {
        let (provider, prefix) = if n % 2 == 0 {
            ("twilio", TWILIO_PREFIX)
        } else {
            ("telnyx", TELNYX_PREFIX)
        };
        let new = inventory::iccid(prefix, SIMS + 1 + n as u64);
        let code = inventory::registration_code(&new);
        job.push_str(&format!("register,{provider},{new},device-{n},{code},\n"));
        if provider == "twilio" {
            // Twilio activates only SIMs in a Fleet.
            job.push_str(&format!("move,twilio,{new},device-{n},,default\n"));
        }
        job.push_str(&format!(
            "activate,{provider},{new},device-{n},,\n\
             suspend,emnify,{},device-{n},,\n",
            inventory::iccid(EMNIFY_PREFIX, *old)
        ));
    }
    let path = env.write_job("migration.csv", &job);
    let output = env
        .run(&["run", "-q", "--rate", "3000", path.to_str().unwrap()])
        .await;
    let failed: Vec<String> = env
        .results()
        .iter()
        .filter(|r| r["outcome"] != "succeeded" && r["outcome"] != "skipped")
        .take(4)
        .map(|r| {
            format!(
                "{} {} {}: {} {}",
                r["action"], r["iccid"], r["outcome"], r["reason"], r["before"]
            )
        })
        .collect();
    let failed = failed.join("\n");
    assert_eq!(output.status.code(), Some(0), "{}\n{failed}", show(&output));

    let journal = journal_by_target(&env).await;
    let results = env.results();
    assert_eq!(results.len(), 3 * DEVICES as usize + DEVICES as usize / 2);
    let mut groups: Vec<Vec<&HashMap<String, String>>> = Vec::new();
    for r in &results {
        match groups.last_mut() {
            Some(g) if g[0]["group"] == r["group"] => g.push(r),
            _ => groups.push(vec![r]),
        }
    }
    assert_eq!(groups.len(), DEVICES as usize);
    for steps in groups {
        let (register, activate, suspend) =
            (steps[0], steps[steps.len() - 2], steps[steps.len() - 1]);
        assert!(
            steps
                .iter()
                .all(|r| r["outcome"] == "succeeded" || r["outcome"] == "skipped"),
            "{steps:?}"
        );
        assert_eq!(register["outcome"], "succeeded", "{register:?}");
        assert!(
            ["succeeded", "skipped"].contains(&activate["outcome"].as_str()),
            "{activate:?}"
        );
        assert_eq!(suspend["outcome"], "succeeded", "{suspend:?}");
        assert!(
            ["active", "enabled"].contains(&activate["after"].as_str()),
            "{activate:?}"
        );
        // Confirmed active (the activate row finished) before the suspension was sent …
        assert!(
            suspend["started_at"] >= activate["finished_at"],
            "{} suspended before {} was confirmed active",
            suspend["iccid"],
            activate["iccid"]
        );
        // … and in the providers' own records: every change to the new SIM happened before
        // the old SIM's suspension, each exactly once.
        let new_changes = &journal[&register["iccid"]];
        let old_changes = &journal[&suspend["iccid"]];
        assert_eq!(old_changes.len(), 1, "{old_changes:?}");
        assert!(new_changes.len() <= 3, "{new_changes:?}");
        assert!(
            new_changes.iter().all(|(t, _)| *t <= old_changes[0].0),
            "{}: {new_changes:?} vs {old_changes:?}",
            register["iccid"]
        );
    }
    // Telnyx registrations went out in batches, not one request per SIM.
    let stats = env.sb.stats().await;
    let registrations = stats["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["path"] == "POST /telnyx/v2/actions/register/sim_cards")
        .map(|r| r["count"].as_u64().unwrap())
        .sum::<u64>();
    assert!(
        registrations > 0 && registrations < DEVICES / 2 / 4,
        "{registrations} Telnyx registration requests for {} SIMs: {stats}",
        DEVICES / 2
    );
}
