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
