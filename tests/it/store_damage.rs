//! A damaged state directory — truncated or overwritten sled files, a record that is not
//! readable, a directory written by another schema version, a file where the directory should
//! be — gives exit 4 with a message naming the directory and what to do: never a panic, and
//! never a silent fresh start that would send every change again.

use simbatch::sandbox::inventory::{self, TELNYX_PREFIX};
use simbatch::sandbox::{LimitMode, SandboxConfig};
use simbatch::store::{CheckpointStore, SledStore};

use crate::run_support::{show, wait_store_released, RunEnv};

async fn finished_run() -> (RunEnv, std::path::PathBuf) {
    let env = RunEnv::new(SandboxConfig {
        sims: 100,
        limits: LimitMode::Off,
        async_delay: std::time::Duration::from_millis(20),
        ..SandboxConfig::default()
    })
    .await;
    let mut job = String::from("action,provider,iccid\n");
    for i in 1..=30 {
        job.push_str(&format!(
            "standby,telnyx,{}\n",
            inventory::iccid(TELNYX_PREFIX, i)
        ));
    }
    let path = env.write_job("job.csv", &job);
    let output = env
        .run(&["run", "-q", "--rate", "1000", path.to_str().unwrap()])
        .await;
    assert!(
        output.status.code().is_some_and(|c| c <= 1),
        "{}",
        show(&output)
    );
    (env, path)
}

/// Runs `args` and checks exit 4, the directory named, advice given, no panic, nothing sent.
async fn assert_refused(env: &RunEnv, args: &[&str], what: &str) {
    let before = env.sb.stats().await["requests_total"].as_u64().unwrap();
    let output = env.run(args).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "{what}: {}", show(&output));
    assert!(
        stderr.contains(".simbatch"),
        "{what}: directory not named: {stderr}"
    );
    assert!(
        stderr.contains("move it aside") || stderr.contains("different simbatch"),
        "{what}: no advice: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    let after = env.sb.stats().await["requests_total"].as_u64().unwrap();
    assert_eq!(before, after, "{what}: requests were sent");
}

fn sled_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in walk(dir) {
        if entry.is_file() {
            files.push(entry);
        }
    }
    files
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_sled_files_give_exit_4() {
    let (env, job) = finished_run().await;
    let db = env.dir.path().join(".simbatch/db");
    for file in sled_files(&db) {
        let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
        f.set_len(f.metadata().unwrap().len() / 3).unwrap();
    }
    assert_refused(&env, &["run", job.to_str().unwrap()], "run").await;
    assert_refused(&env, &["status"], "status").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overwritten_sled_files_give_exit_4() {
    let (env, job) = finished_run().await;
    let db = env.dir.path().join(".simbatch/db");
    let mut rng = fastrand::Rng::with_seed(7);
    for file in sled_files(&db) {
        let mut bytes = std::fs::read(&file).unwrap();
        for b in bytes.iter_mut().skip(16) {
            *b = rng.u8(..);
        }
        std::fs::write(&file, bytes).unwrap();
    }
    assert_refused(&env, &["run", job.to_str().unwrap()], "run").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_record_or_another_schema_version_gives_exit_4() {
    let (env, job) = finished_run().await;
    let state = env.dir.path().join(".simbatch");
    let run_id = {
        let store = SledStore::open(&state).unwrap();
        let ids = store.run_ids();
        assert_eq!(ids.len(), 1);
        let run = store.run(&ids[0]).unwrap();
        // A manifest from an older simbatch.
        let mut manifest = run.manifest().unwrap().unwrap();
        manifest.schema_version = 0;
        run.write_manifest(&manifest).unwrap();
        ids[0].clone()
    };
    wait_store_released(&state);
    assert_refused(&env, &["run", job.to_str().unwrap()], "older schema").await;
    assert_refused(&env, &["report", &run_id], "report, older schema").await;

    let (env, job) = finished_run().await;
    let state = env.dir.path().join(".simbatch");
    let run_id = SledStore::open(&state).unwrap().run_ids().remove(0);
    wait_store_released(&state);
    {
        // The block of rows 0-15 overwritten with bytes that are not a block (sled itself is
        // intact).
        let db = sled::open(state.join("db")).unwrap();
        let tree = db.open_tree(format!("run:{run_id}")).unwrap();
        let mut key = [b'b'; 9];
        key[1..].copy_from_slice(&0u64.to_be_bytes());
        assert!(
            tree.get(key).unwrap().is_some(),
            "row keys are as the store writes them"
        );
        tree.insert(key, &b"{not json"[..]).unwrap();
        db.flush().unwrap();
    }
    wait_store_released(&state);
    assert_refused(&env, &["run", job.to_str().unwrap()], "unreadable record").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_where_the_state_directory_should_be_gives_exit_4() {
    let (env, job) = finished_run().await;
    let state = env.dir.path().join(".simbatch");
    std::fs::rename(&state, env.dir.path().join("aside")).unwrap();
    std::fs::write(&state, b"not a directory").unwrap();
    let output = env.run(&["run", job.to_str().unwrap()]).await;
    assert_eq!(output.status.code(), Some(4), "{}", show(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains(".simbatch"));
}
