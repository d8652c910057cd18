//! `simbatch run` through the real binary against the in-process sandbox, for every provider ×
//! action of SPEC 1.2: each row's outcome, its before/after in `results.csv`, and the sandbox
//! journal showing exactly the expected changes — no more, no fewer.

use std::collections::BTreeMap;
use std::time::Duration;

use simbatch::sandbox::inventory::{self, EMNIFY_PREFIX, TELNYX_PREFIX, TWILIO_PREFIX};
use simbatch::sandbox::telnyx::group_id;
use simbatch::sandbox::{LimitMode, SandboxConfig};

use crate::run_support::{show, RunEnv};

fn config() -> SandboxConfig {
    SandboxConfig {
        sims: 100,
        limits: LimitMode::Off,
        async_delay: Duration::from_millis(100),
        ..SandboxConfig::default()
    }
}

struct Case {
    row: String,
    outcome: &'static str,
    before: String,
    after: String,
    /// (target, change) the journal must show for this row.
    journal: Vec<(String, String)>,
}

fn case(
    row: String,
    outcome: &'static str,
    before: &str,
    after: &str,
    journal: Vec<(String, String)>,
) -> Case {
    Case {
        row,
        outcome,
        before: before.into(),
        after: after.into(),
        journal,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_provider_and_action() {
    let env = RunEnv::new(config()).await;
    let em = |i| inventory::iccid(EMNIFY_PREFIX, i);
    let tw = |i| inventory::iccid(TWILIO_PREFIX, i);
    let tx = |i| inventory::iccid(TELNYX_PREFIX, i);
    let eid = inventory::eid;
    let j = |t: String, c: &str| (t, c.to_string());
    let header = "action,provider,iccid,eid,group,target,registration_code,profile_iccid,activation_code,enable,rollback,report_lost,note";
    let cases = vec![
        case(
            format!("activate,emnify,{},,,,,,,,,,a", em(10)),
            "succeeded",
            "Suspended",
            "Activated",
            vec![j(em(10), "status:Suspended->Activated")],
        ),
        case(
            format!("suspend,emnify,{},,,,,,,,,,b", em(1)),
            "succeeded",
            "Activated",
            "Suspended",
            vec![j(em(1), "status:Activated->Suspended")],
        ),
        case(
            format!("delete,emnify,{},,,,,,,,,,c", em(2)),
            "succeeded",
            "Activated",
            "deleted",
            vec![j(em(2), "endpoint_sim:released-from:2"), j(em(2), "delete")],
        ),
        case(
            format!("disable-device,emnify,{},,dev3,,,,,,,,d", em(3)),
            "succeeded",
            "Enabled",
            "Disabled",
            vec![j(em(3), "endpoint_status:Enabled->Disabled")],
        ),
        case(
            format!("enable-device,emnify,{},,dev3,,,,,,,,e", em(3)),
            "succeeded",
            "Disabled",
            "Enabled",
            vec![j(em(3), "endpoint_status:Disabled->Enabled")],
        ),
        case(
            format!("move,emnify,{},,,2,,,,,,,f", em(5)),
            "succeeded",
            "1",
            "2",
            vec![j(em(5), "customer_org:1->2")],
        ),
        case(
            format!("euicc-audit,emnify,,{},,,,,,,,,g", eid(1)),
            "succeeded",
            &inventory::operational_profile(1),
            "Succeeded",
            vec![j(eid(1), "euicc-audit")],
        ),
        case(
            format!(
                "profile-download,emnify,,{},,,,,1$smdp.example.com$M-2,true,true,,h",
                eid(2)
            ),
            "succeeded",
            &inventory::operational_profile(2),
            "Succeeded",
            vec![j(
                eid(2),
                &format!(
                    "profile-download:{}:enabled",
                    inventory::downloaded_profile(2)
                ),
            )],
        ),
        case(
            format!(
                "profile-enable,emnify,,{},,,,{},,,false,,i",
                eid(3),
                inventory::bootstrap_profile(3)
            ),
            "succeeded",
            &inventory::operational_profile(3),
            "Succeeded",
            vec![j(
                eid(3),
                &format!("profile-enable:{}", inventory::bootstrap_profile(3)),
            )],
        ),
        case(
            format!(
                "profile-enable,emnify,,{},esim5,,,{},,,,,j",
                eid(5),
                inventory::bootstrap_profile(5)
            ),
            "succeeded",
            &inventory::operational_profile(5),
            "Succeeded",
            vec![j(
                eid(5),
                &format!("profile-enable:{}", inventory::bootstrap_profile(5)),
            )],
        ),
        case(
            format!(
                "profile-fallback,emnify,,{},esim5,,,{},,,,,k",
                eid(5),
                inventory::operational_profile(5)
            ),
            "succeeded",
            &inventory::bootstrap_profile(5),
            "Succeeded",
            vec![j(
                eid(5),
                &format!("profile-fallback:{}", inventory::operational_profile(5)),
            )],
        ),
        case(
            format!(
                "profile-delete,emnify,,{},,,,{},,,,,l",
                eid(6),
                inventory::bootstrap_profile(6)
            ),
            "succeeded",
            "Installed",
            "Succeeded",
            vec![j(
                eid(6),
                &format!("profile-delete:{}", inventory::bootstrap_profile(6)),
            )],
        ),
        case(
            format!("activate,twilio,{},,,,,,,,,,m", tw(20)),
            "succeeded",
            "inactive",
            "active",
            vec![j(tw(20), "status:inactive->active")],
        ),
        case(
            format!("suspend,twilio,{},,,,,,,,,,n", tw(21)),
            "succeeded",
            "active",
            "inactive",
            vec![j(tw(21), "status:active->inactive")],
        ),
        case(
            format!("move,twilio,{},,,reserve,,,,,,,o", tw(22)),
            "succeeded",
            "HF00000000000000000000000000000001",
            "HF00000000000000000000000000000002",
            vec![j(
                tw(22),
                "fleet:HF00000000000000000000000000000001->HF00000000000000000000000000000002",
            )],
        ),
        case(
            format!(
                "register,twilio,{},,,,{},,,,,,p",
                tw(101),
                inventory::registration_code(&tw(101))
            ),
            "succeeded",
            "unregistered",
            "new",
            vec![j(tw(101), "register")],
        ),
        case(
            format!("activate,telnyx,{},,,,,,,,,,q", tx(30)),
            "succeeded",
            "disabled",
            "enabled",
            vec![j(tx(30), "status:disabled->enabled")],
        ),
        case(
            format!("suspend,telnyx,{},,,,,,,,,,r", tx(31)),
            "succeeded",
            "enabled",
            "disabled",
            vec![j(tx(31), "status:enabled->disabled")],
        ),
        case(
            format!("standby,telnyx,{},,,,,,,,,,s", tx(32)),
            "succeeded",
            "enabled",
            "standby",
            vec![j(tx(32), "status:enabled->standby")],
        ),
        case(
            format!("delete,telnyx,{},,,,,,,,,true,t", tx(33)),
            "succeeded",
            "enabled",
            "deleted",
            vec![j(tx(33), "delete")],
        ),
        case(
            format!("move,telnyx,{},,,{},,,,,,,u", tx(34), group_id(1)),
            "succeeded",
            &group_id(0),
            &group_id(1),
            vec![j(
                tx(34),
                &format!("group:{}->{}", group_id(0), group_id(1)),
            )],
        ),
        case(
            format!(
                "register,telnyx,{},,,,{},,,,,,v",
                tx(102),
                inventory::registration_code(&tx(102))
            ),
            "succeeded",
            "unregistered",
            "enabled",
            vec![j(tx(102), "register")],
        ),
    ];
    let mut job = format!("{header}\n");
    for c in &cases {
        job.push_str(&c.row);
        job.push('\n');
    }
    let path = env.write_job("all.csv", &job);
    let output = env
        .run(&[
            "run",
            "--allow-irreversible",
            "--rate",
            "500",
            path.to_str().unwrap(),
        ])
        .await;
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));

    let results = env.results();
    assert_eq!(results.len(), cases.len());
    let combos: std::collections::BTreeSet<(String, String)> = results
        .iter()
        .map(|r| (r["provider"].clone(), r["action"].clone()))
        .collect();
    assert_eq!(combos.len(), 21, "every provider × action of SPEC 1.2");
    for (c, r) in cases.iter().zip(&results) {
        assert_eq!(r["outcome"], c.outcome, "{}: {r:?}", c.row);
        assert_eq!(r["before"], c.before, "before of {}", c.row);
        assert_eq!(r["after"], c.after, "after of {}", c.row);
        assert_eq!(
            r["note"],
            c.row.rsplit(',').next().unwrap(),
            "extra columns are carried"
        );
    }

    let mut expected: BTreeMap<(String, String), usize> = BTreeMap::new();
    for c in &cases {
        for e in &c.journal {
            *expected.entry(e.clone()).or_default() += 1;
        }
    }
    let mut actual: BTreeMap<(String, String), usize> = BTreeMap::new();
    for e in env.sb.journal().await {
        *actual
            .entry((
                e["target"].as_str().unwrap().to_string(),
                e["change"].as_str().unwrap().to_string(),
            ))
            .or_default() += 1;
    }
    assert_eq!(
        actual, expected,
        "the journal shows exactly the expected changes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_ops_are_skipped_and_forbidden_changes_fail_without_a_request() {
    let env = RunEnv::new(config()).await;
    let job = format!(
        "action,provider,iccid,eid,profile_iccid\n\
         suspend,emnify,{},,\n\
         suspend,twilio,{},,\n\
         standby,telnyx,{},,\n\
         activate,twilio,{},,\n\
         profile-delete,emnify,,{},{}\n",
        inventory::iccid(EMNIFY_PREFIX, 20),
        inventory::iccid(TWILIO_PREFIX, 30),
        inventory::iccid(TELNYX_PREFIX, 40),
        inventory::iccid(TWILIO_PREFIX, 150),
        inventory::eid(4),
        inventory::operational_profile(4),
    );
    let path = env.write_job("mixed.csv", &job);
    let output = env
        .run(&[
            "run",
            "--allow-irreversible",
            "--rate",
            "500",
            path.to_str().unwrap(),
        ])
        .await;
    assert_eq!(
        output.status.code(),
        Some(1),
        "failures exit 1: {}",
        show(&output)
    );
    let results = env.results();
    let outcome = |i: usize| {
        (
            results[i]["outcome"].as_str(),
            results[i]["reason"].as_str(),
        )
    };
    assert_eq!(outcome(0), ("skipped", "already Suspended"));
    assert_eq!(outcome(1), ("skipped", "already inactive"));
    assert_eq!(results[2]["outcome"], "succeeded");
    assert_eq!(outcome(3).0, "failed");
    assert!(outcome(3).1.contains("no SIM"), "{:?}", outcome(3));
    assert_eq!(outcome(4).0, "failed");
    assert!(
        outcome(4)
            .1
            .contains("cannot be deleted while it is enabled"),
        "{:?}",
        outcome(4)
    );
    let journal = env.sb.journal().await;
    assert_eq!(
        journal.len(),
        1,
        "only the standby changed anything: {journal:?}"
    );
    let failed = crate::run_support::read_csv(&env.report_dir().join("failed.csv"));
    assert_eq!(
        failed.len(),
        2,
        "failed.csv holds the failed rows as a job file"
    );
    crate::support::simbatch()
        .arg("validate")
        .arg(env.report_dir().join("failed.csv"))
        .assert()
        .code(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn irreversible_actions_need_permission_and_send_nothing_without_it() {
    let env = RunEnv::new(config()).await;
    let path = env.write_job(
        "del.csv",
        &format!(
            "action,provider,iccid\ndelete,telnyx,{}\n",
            inventory::iccid(TELNYX_PREFIX, 1)
        ),
    );
    let output = env.run(&["run", path.to_str().unwrap()]).await;
    assert_eq!(output.status.code(), Some(2), "{}", show(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--allow-irreversible"));
    assert_eq!(env.sb.stats().await["requests_total"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_job_sends_nothing_and_skip_invalid_runs_the_rest() {
    let env = RunEnv::new(config()).await;
    let job = format!(
        "action,provider,iccid\nsuspend,emnify,{}\nsuspend,emnify,123\n",
        inventory::iccid(EMNIFY_PREFIX, 1)
    );
    let path = env.write_job("bad.csv", &job);
    let output = env.run(&["run", path.to_str().unwrap()]).await;
    assert_eq!(output.status.code(), Some(2), "{}", show(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("bad.csv:3: iccid"),
        "{}",
        show(&output)
    );
    assert_eq!(env.sb.stats().await["requests_total"], 0);
    let output = env
        .run(&[
            "run",
            "--skip-invalid",
            "--rate",
            "500",
            path.to_str().unwrap(),
        ])
        .await;
    assert_eq!(output.status.code(), Some(1), "{}", show(&output));
    let results = env.results();
    assert_eq!(
        (
            results[0]["outcome"].as_str(),
            results[1]["outcome"].as_str()
        ),
        ("succeeded", "invalid")
    );
}
