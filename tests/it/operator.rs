//! Operator workflows through the real binary: `plan` reads and never changes, `revert` brings
//! every SIM back to exactly where it was, `report` rebuilds the reports byte for byte from the
//! state store, `status` lists runs, and `demo` runs end to end.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Method;
use simbatch::sandbox::{LimitMode, SandboxConfig};

use crate::run_support::{read_csv, show, RunEnv};

fn config() -> SandboxConfig {
    SandboxConfig {
        sims: 100,
        limits: LimitMode::Off,
        async_delay: Duration::from_millis(50),
        ..SandboxConfig::default()
    }
}

fn bundled(name: &str) -> String {
    std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("jobs")
            .join(name),
    )
    .unwrap()
}

/// Every SIM's status at every provider, read through the providers' own list APIs.
async fn inventory_state(env: &RunEnv) -> BTreeMap<String, String> {
    let mut state = BTreeMap::new();
    for sim in env
        .sb
        .em(Method::GET, "/api/v1/sim?per_page=2500", None)
        .await
        .body
        .as_array()
        .unwrap()
    {
        state.insert(
            sim["iccid_with_luhn"].as_str().unwrap().to_string(),
            sim["status"]["description"].as_str().unwrap().to_string(),
        );
    }
    for sim in env
        .sb
        .tw(Method::GET, "/v1/Sims?PageSize=1000", &[])
        .await
        .body["sims"]
        .as_array()
        .unwrap()
    {
        state.insert(
            sim["iccid"].as_str().unwrap().to_string(),
            sim["status"].as_str().unwrap().to_string(),
        );
    }
    for sim in env
        .sb
        .tx(Method::GET, "/v2/sim_cards?page[size]=250", None)
        .await
        .body["data"]
        .as_array()
        .unwrap()
    {
        state.insert(
            sim["iccid"].as_str().unwrap().to_string(),
            sim["status"]["value"].as_str().unwrap().to_string(),
        );
    }
    state
}

fn run_id_of(env: &RunEnv) -> String {
    env.report_dir()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_reads_and_changes_nothing() {
    let env = RunEnv::new(config()).await;
    let path = env.write_job("mass.csv", &bundled("mass-suspension.csv"));
    let output = env
        .run(&[
            "plan",
            "--rate",
            "1000",
            "-o",
            "plan.csv",
            path.to_str().unwrap(),
        ])
        .await;
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("emnify       suspend                  90       10"),
        "{stdout}"
    );
    assert!(
        stdout.contains("10 × emnify: already Suspended (lines 13, 23, 33, 43, 53 and 5 more)"),
        "{stdout}"
    );
    assert!(env.sb.journal().await.is_empty(), "plan sent a change");
    for r in env.sb.stats().await["requests"].as_array().unwrap() {
        let path = r["path"].as_str().unwrap();
        assert!(
            path.starts_with("GET ") || path == "POST /emnify/api/v1/authenticate",
            "plan sent {path}"
        );
    }
    let plan = read_csv(&env.dir.path().join("plan.csv"));
    assert_eq!(plan.len(), 300);
    assert_eq!(plan.iter().filter(|r| r["plan"] == "change").count(), 270);
    assert_eq!(plan[0]["before"], "Activated");
    assert_eq!(plan[0]["after"], "Suspended");
    assert_eq!(plan[0]["ticket"], "INC-4711", "extra columns are carried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverting_a_mass_suspension_restores_the_exact_prior_state() {
    let env = RunEnv::new(config()).await;
    let before = inventory_state(&env).await;
    assert_eq!(
        before
            .values()
            .filter(|s| ["Suspended", "inactive", "disabled"].contains(&s.as_str()))
            .count(),
        30
    );
    let path = env.write_job("mass.csv", &bundled("mass-suspension.csv"));
    let output = env
        .run(&["run", "--rate", "1000", path.to_str().unwrap()])
        .await;
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let during = inventory_state(&env).await;
    assert_ne!(during, before);
    assert_eq!(
        during
            .values()
            .filter(|s| ["Activated", "active", "enabled"].contains(&s.as_str()))
            .count(),
        0
    );

    let id = run_id_of(&env);
    let output = env.run(&["revert", &id, "-o", "undo.csv"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let undo = read_csv(&env.dir.path().join("undo.csv"));
    assert_eq!(
        undo.len(),
        270,
        "only the rows that changed something are reverted"
    );
    assert!(undo.iter().all(|r| r["action"] == "activate"));
    let output = env.run(&["run", "--rate", "1000", "undo.csv"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    assert_eq!(
        inventory_state(&env).await,
        before,
        "every SIM is back exactly where it was, the pre-suspended ones still suspended"
    );
    // The revert.csv written with the run's reports is the same job.
    assert_eq!(read_csv(&env.report_dir().join("revert.csv")).len(), 270);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_rebuilds_the_reports_of_run_byte_for_byte() {
    let env = RunEnv::new(config()).await;
    // The bundled mass suspension plus one row for a SIM that is not on the account (fails).
    let missing =
        simbatch::sandbox::inventory::iccid(simbatch::sandbox::inventory::TWILIO_PREFIX, 150);
    let job = format!(
        "{}suspend,twilio,{missing},INC-1,meter-x\n",
        bundled("mass-suspension.csv")
    );
    let path = env.write_job("mass.csv", &job);
    let output = env
        .run(&["run", "--rate", "1000", path.to_str().unwrap()])
        .await;
    assert_eq!(
        output.status.code(),
        Some(1),
        "one row fails (no such SIM): {}",
        show(&output)
    );
    let dir = env.report_dir();
    let files = [
        "results.csv",
        "failed.csv",
        "pending.csv",
        "revert.csv",
        "summary.json",
    ];
    let written: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(dir.join(f)).unwrap())
        .collect();
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_file(&path).unwrap(); // the store keeps its own copy of the job
    let output = env.run(&["report", &run_id_of_dir(&dir)]).await;
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    for (f, bytes) in files.iter().zip(written) {
        assert_eq!(std::fs::read(dir.join(f)).unwrap(), bytes, "{f} differs");
    }
    assert_eq!(read_csv(&dir.join("failed.csv")).len(), 1);
}

fn run_id_of_dir(dir: &std::path::Path) -> String {
    dir.file_name().unwrap().to_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_lists_runs_and_what_is_left() {
    let env = RunEnv::new(config()).await;
    let empty = env.run(&["status"]).await;
    assert_eq!(
        empty.status.code(),
        Some(2),
        "no store yet: {}",
        show(&empty)
    );
    let path = env.write_job("mass.csv", &bundled("mass-suspension.csv"));
    env.run(&["run", "--rate", "1000", path.to_str().unwrap()])
        .await;
    let id = run_id_of(&env);
    let output = env.run(&["status"]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&id) && stdout.contains("succeeded 270") && stdout.contains("finished"),
        "{stdout}"
    );
    let json = env.run(&["status", "--json", &id[..6]]).await;
    let listing: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(listing[0]["rows"], 300);
    assert_eq!(listing[0]["resumable"], false);
    let missing = env.run(&["report", "nope"]).await;
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("simbatch status"));
}

#[test]
fn the_demo_runs_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("jobs")).unwrap();
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs/demo.csv"),
        dir.path().join("jobs/demo.csv"),
    )
    .unwrap();
    let output = std::process::Command::new(assert_cmd::cargo::cargo_bin!("simbatch"))
        .arg("demo")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let results = read_csv(&dir.path().join("reports/demo/results.csv"));
    assert_eq!(results.len(), 3150, "one results row per job row");
    let failed = results.iter().filter(|r| r["outcome"] == "failed").count();
    assert_eq!(failed, 20, "the rows pre-flight refuses on purpose");
    let reverted = read_csv(&dir.path().join("reports/demo-revert/results.csv"));
    assert!(reverted.iter().all(|r| r["outcome"] == "succeeded"));
}
