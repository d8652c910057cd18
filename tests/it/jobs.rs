//! The bundled job files in `jobs/` stay valid.

use crate::support::simbatch;

#[test]
fn every_bundled_job_validates() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs");
    let jobs: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("csv" | "jsonl")
            )
        })
        .map(|p| format!("jobs/{}", p.file_name().unwrap().to_str().unwrap()))
        .collect();
    assert!(!jobs.is_empty());
    let output = simbatch().arg("validate").args(&jobs).output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

/// `plan` predicts `run`: on every bundled job, each row's planned verdict is the outcome the
/// run then gives it (change → succeeded, skip → skipped, fail → failed, blocked → blocked),
/// grouped steps included — a step is judged against what the earlier steps of its group leave
/// (a SIM registered a step before, a profile disabled by the download before the delete).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_predicts_the_run_on_every_bundled_job() {
    use simbatch::sandbox::{LimitMode, SandboxConfig};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_str().unwrap().to_string())
        .filter(|n| n.ends_with(".csv") || n.ends_with(".jsonl"))
        .collect();
    names.sort();
    for name in names {
        let env = crate::run_support::RunEnv::new(SandboxConfig {
            // demo.csv is written for the demo's 2,000-SIM sandbox.
            sims: if name == "demo.csv" { 2_000 } else { 10_000 },
            limits: LimitMode::Off,
            ..SandboxConfig::default()
        })
        .await;
        let job = env.write_job(&name, &std::fs::read_to_string(dir.join(&name)).unwrap());
        let plan_csv = env.dir.path().join("plan.csv");
        let output = env
            .run(&[
                "plan",
                "-o",
                plan_csv.to_str().unwrap(),
                job.to_str().unwrap(),
            ])
            .await;
        assert_eq!(
            output.status.code(),
            Some(0),
            "{name}: {}",
            crate::run_support::show(&output)
        );
        let output = env
            .run(&[
                "run",
                "-q",
                "--yes",
                "--allow-irreversible",
                "--rate",
                "1000",
                job.to_str().unwrap(),
            ])
            .await;
        assert!(
            matches!(output.status.code(), Some(0 | 1)),
            "{name}: {}",
            crate::run_support::show(&output)
        );
        let planned: std::collections::HashMap<String, String> =
            crate::run_support::read_csv(&plan_csv)
                .into_iter()
                .map(|r| (r["line"].clone(), r["plan"].clone()))
                .collect();
        let results = env.results();
        assert_eq!(results.len(), planned.len(), "{name}");
        let mut wrong = Vec::new();
        for r in &results {
            let expected = match planned[&r["line"]].as_str() {
                "change" => "succeeded",
                "skip" => "skipped",
                "fail" => "failed",
                "blocked" => "blocked",
                other => other,
            };
            if r["outcome"] != expected {
                wrong.push(format!(
                    "line {}: planned {expected}, ran {} ({})",
                    r["line"], r["outcome"], r["reason"]
                ));
            }
        }
        assert!(
            wrong.is_empty(),
            "{name}: {} rows differ: {wrong:#?}",
            wrong.len()
        );
    }
}
