//! Input that changes under a run or is not what it seems: a job file replaced after it was
//! validated, a second file whose short run id collides with an earlier run's, JSONL objects
//! with a repeated key, two spellings of one ICCID, a lone CR inside a line, the same change
//! twice, absurd numbers, and files that are not regular files at all. A run executes exactly
//! the rows it validated, once each, or refuses to start.

use std::collections::HashMap;
use std::time::Duration;

use sha2::{Digest, Sha256};
use simbatch::sandbox::inventory::{self, EMNIFY_PREFIX};
use simbatch::store::{CheckpointStore, SledStore};

use crate::run_support::{show, RunEnv, TOKEN};

/// `action` on emnify SIMs `numbers` (a job file).
fn emnify_job(action: &str, numbers: impl IntoIterator<Item = u64>) -> String {
    super::job_of(action, "emnify", EMNIFY_PREFIX, numbers)
}

async fn journal_targets(env: &RunEnv) -> HashMap<String, Vec<String>> {
    let mut by_target: HashMap<String, Vec<String>> = HashMap::new();
    for e in env.sb.journal().await {
        by_target
            .entry(e["target"].as_str().unwrap().to_string())
            .or_default()
            .push(e["change"].as_str().unwrap().to_string());
    }
    by_target
}

/// Case 3: the job file is replaced (a `delete` row among others) while the run waits for its
/// `--window` to open: the run executes and reports the rows it validated, from the copy it
/// stored, and the replacement's rows — never validated, the delete never allowed — are not
/// sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_03_a_run_executes_the_file_it_validated_not_what_the_path_holds_later() {
    let env = RunEnv::new(super::sandbox(100)).await;
    let validated = emnify_job("suspend", [1, 2, 3]);
    let path = env.write_job("job.csv", &validated);
    // A window that opens a few seconds from now (UTC, to the second) and lasts an hour.
    let now = chrono::Utc::now();
    let start = now + chrono::Duration::seconds(4);
    let end = start + chrono::Duration::hours(1);
    let window = format!("{}-{}", start.format("%H:%M:%S"), end.format("%H:%M:%S"));
    let child = env
        .command(
            &[
                "run",
                "-q",
                "--window",
                &window,
                "--tz",
                "UTC",
                path.to_str().unwrap(),
            ],
            TOKEN,
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Once the run has validated the file and recorded it (its copy is in the state
    // directory), the file at the path is replaced.
    let jobs = env.dir.path().join(".simbatch/jobs");
    for _ in 0..1000 {
        if std::fs::read_dir(&jobs).is_ok_and(|mut d| d.next().is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let swapped = format!(
        "{}delete,emnify,{}\n",
        emnify_job("activate", [10, 20]),
        inventory::iccid(EMNIFY_PREFIX, 5)
    );
    let replacement = env.write_job("replacement.csv", &swapped);
    std::fs::rename(&replacement, &path).unwrap();
    let output = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let changed = journal_targets(&env).await;
    let expected: Vec<String> = [1, 2, 3]
        .iter()
        .map(|i| inventory::iccid(EMNIFY_PREFIX, *i))
        .collect();
    let mut targets: Vec<&String> = changed.keys().collect();
    targets.sort();
    assert_eq!(targets, expected.iter().collect::<Vec<_>>(), "{changed:?}");
    assert!(changed.values().all(|c| c.len() == 1), "{changed:?}");
    let results = env.results();
    let reported: Vec<&str> = results.iter().map(|r| r["iccid"].as_str()).collect();
    assert_eq!(
        reported,
        expected.iter().map(String::as_str).collect::<Vec<_>>(),
        "the reports are of the validated rows"
    );
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Case 4: a file whose short run id (stem + 32 bits of its SHA-256) is that of an earlier run
/// of another file is not a resume of that run: the full hash decides. Here the earlier run
/// (another file's, all rows succeeded, validated without irreversible rows) sits under the
/// new file's short id; the new file, with a `delete`, must be validated and guarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_04_a_short_id_collision_is_a_new_run_not_a_resume() {
    let env = RunEnv::new(super::sandbox(100)).await;
    let earlier = emnify_job("suspend", [1, 2, 3]);
    let path = env.write_job("job.csv", &earlier);
    let output = env.run(&["run", "-q", path.to_str().unwrap()]).await;
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    env.sb.sandbox.shared.reset();

    // The new file: three other suspensions and a deletion.
    let new = format!(
        "{}delete,emnify,{}\n",
        emnify_job("suspend", [4, 6, 7]),
        inventory::iccid(EMNIFY_PREFIX, 8)
    );
    let short = format!("job-{}", &sha256_hex(new.as_bytes())[..8]);
    {
        // The earlier run copied under the new file's short id, as a brute-forced collision
        // would find it: same short id, another full hash.
        let state = env.dir.path().join(".simbatch");
        let store = SledStore::open(&state).unwrap();
        let ids = store.run_ids();
        assert_eq!(ids.len(), 1);
        let old = store.run(&ids[0]).unwrap();
        let mut manifest = old.manifest().unwrap().unwrap();
        assert_ne!(manifest.job_sha256, sha256_hex(new.as_bytes()));
        manifest.run_id = short.clone();
        let rows: Vec<_> = old.rows().map(Result::unwrap).collect();
        let colliding = store.run(&short).unwrap();
        colliding.write_manifest(&manifest).unwrap();
        colliding.commit(&rows).unwrap();
        std::fs::copy(
            store.job_copy(&ids[0], "csv"),
            store.job_copy(&short, "csv"),
        )
        .unwrap();
    }
    crate::run_support::wait_store_released(&env.dir.path().join(".simbatch"));
    std::fs::write(&path, &new).unwrap();
    let output = env.run(&["run", path.to_str().unwrap()]).await;
    assert_eq!(output.status.code(), Some(2), "{}", show(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--allow-irreversible"), "{stderr}");
    assert!(env.sb.journal().await.is_empty(), "nothing was sent");

    let output = env
        .run(&["run", "-q", "--allow-irreversible", path.to_str().unwrap()])
        .await;
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let changed = journal_targets(&env).await;
    for i in [4, 6, 7] {
        assert_eq!(
            changed
                .get(&inventory::iccid(EMNIFY_PREFIX, i))
                .map(Vec::len),
            Some(1),
            "SIM {i} changed once: {changed:?}"
        );
    }
    let deleted = &changed[&inventory::iccid(EMNIFY_PREFIX, 8)];
    assert_eq!(
        deleted.iter().filter(|c| *c == "delete").count(),
        1,
        "{deleted:?}"
    );
}

/// Runs `cmd` to its end, or kills it after `limit` (`None`).
pub async fn output_within(
    cmd: &mut std::process::Command,
    limit: Duration,
) -> Option<std::process::Output> {
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return Some(child.wait_with_output().unwrap());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    None
}

/// Also seen: a job "file" that is a device, a pipe or standard input is read once — the run
/// id no longer hashes it whole before validation looks at it — and refused at once when it is
/// not text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn special_files_are_read_once_and_refused_at_once_when_not_text() {
    let env = RunEnv::new(super::sandbox(100)).await;
    for device in ["/dev/zero", "/dev/urandom"] {
        let mut cmd = env.command(&["run", "--format", "csv", device], TOKEN);
        let output = output_within(&mut cmd, Duration::from_secs(60))
            .await
            .unwrap_or_else(|| panic!("`run {device}` did not end within a minute"));
        assert_eq!(output.status.code(), Some(2), "{device}: {}", show(&output));
    }

    // Standard input, read once.
    let job = emnify_job("suspend", [1, 2]);
    let mut cmd = env.command(&["run", "-q", "--format", "csv", "/dev/stdin"], TOKEN);
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(job.as_bytes()).unwrap();
    }
    let output = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "stdin: {}", show(&output));

    // A named pipe.
    let fifo = env.dir.path().join("job-fifo.csv");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let writer = {
        let (fifo, job) = (fifo.clone(), emnify_job("suspend", [3, 4]));
        std::thread::spawn(move || std::fs::write(fifo, job).unwrap())
    };
    let output = env.run(&["run", "-q", fifo.to_str().unwrap()]).await;
    writer.join().unwrap();
    assert_eq!(output.status.code(), Some(0), "fifo: {}", show(&output));
    assert_eq!(journal_targets(&env).await.len(), 4);
}

/// An emnify SIM whose 19-digit form (emnify's `iccid`, without the check digit) also passes
/// the Luhn check, so that both forms are valid in one job file.
fn sim_with_two_valid_forms() -> u64 {
    (1..100)
        .find(|i| {
            let short = format!("{EMNIFY_PREFIX}{i:012}");
            let (body, check) = short.split_at(18);
            simbatch::job::ids::luhn_check_digit(body) == Some(check.as_bytes()[0] - b'0')
        })
        .expect("one in ten numbers is Luhn-valid")
}

/// Case 5: a JSONL object that names a key twice (the last would silently win) is a
/// validation error naming the line; the 19- and 20-digit forms of one ICCID are one target
/// for the duplicate and conflict check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_05_repeated_keys_and_two_spellings_of_one_iccid_are_caught() {
    let env = RunEnv::new(super::sandbox(100)).await;
    let (a, b) = (
        inventory::iccid(EMNIFY_PREFIX, 1),
        inventory::iccid(EMNIFY_PREFIX, 2),
    );
    let path = env.write_job(
        "keys.jsonl",
        &format!(
            "{{\"action\":\"suspend\",\"provider\":\"emnify\",\"iccid\":\"{a}\"}}\n{{\"action\":\"suspend\",\"provider\":\"emnify\",\"iccid\":\"{a}\",\"iccid\":\"{b}\"}}\n"
        ),
    );
    for command in ["validate", "run"] {
        let line = format!("{}:2: key `iccid` appears more than once", path.display());
        super::refused(&env, &[command, path.to_str().unwrap()], &line).await;
    }

    let i = sim_with_two_valid_forms();
    let long = inventory::iccid(EMNIFY_PREFIX, i);
    let short = &long[..19];
    let path = env.write_job(
        "forms.csv",
        &format!("action,provider,iccid\nsuspend,emnify,{long}\nactivate,emnify,{short}\n"),
    );
    for command in ["validate", "run"] {
        let line = format!("{}:3: conflict", path.display());
        super::refused(&env, &[command, path.to_str().unwrap()], &line).await;
    }
    assert!(env.sb.journal().await.is_empty(), "nothing was sent");
}

async fn three_valid_rows(env: &RunEnv, job: &std::path::Path) {
    let output = env.run(&["validate", job.to_str().unwrap()]).await;
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("3 valid rows"), "{}", show(&output));
}

/// Case 6: a lone CR inside a file (mixed line endings) is a line break, as spreadsheets and
/// the csv crate read it: three rows are three rows, in CSV and in JSONL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_06_a_lone_cr_is_a_line_break_and_no_row_is_dropped() {
    let env = RunEnv::new(super::sandbox(100)).await;
    let [a, b, c] = [1, 2, 3].map(|i| inventory::iccid(EMNIFY_PREFIX, i));
    let csv = env.write_job(
        "mixed.csv",
        &format!("action,provider,iccid\r\nsuspend,emnify,{a}\rsuspend,emnify,{b}\nsuspend,emnify,{c}\r\n"),
    );
    three_valid_rows(&env, &csv).await;
    let output = env.run(&["run", "-q", csv.to_str().unwrap()]).await;
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    assert_eq!(env.results().len(), 3);
    assert_eq!(journal_targets(&env).await.len(), 3);

    let [d, e, f] = [4, 6, 7].map(|i| inventory::iccid(EMNIFY_PREFIX, i));
    let line = |iccid: &str| {
        format!("{{\"action\":\"suspend\",\"provider\":\"emnify\",\"iccid\":\"{iccid}\"}}")
    };
    let jsonl = env.write_job(
        "mixed.jsonl",
        &format!("{}\r{}\n{}\r\n", line(&d), line(&e), line(&f)),
    );
    three_valid_rows(&env, &jsonl).await;
}

/// Case 9: the same change twice (validation warns "it will be done once") is done once: the
/// later rows are `skipped` as duplicates of the first, for a suspension and for three
/// identical profile downloads on one eUICC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_09_the_same_change_twice_is_done_once() {
    let env = RunEnv::new(super::sandbox(100)).await;
    let sim = inventory::iccid(EMNIFY_PREFIX, 1);
    let eid = inventory::eid(1);
    let download = format!("profile-download,emnify,,{eid},1$smdp.example.com$M-1,true,false\n");
    let job = format!(
        "action,provider,iccid,eid,activation_code,enable,rollback\nsuspend,emnify,{sim},,,,\n{download}suspend,emnify,{sim},,,,\n{download}{download}"
    );
    let path = env.write_job("twice.csv", &job);
    let output = env
        .run(&["run", "--wait-timeout", "60s", path.to_str().unwrap()])
        .await;
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let results = env.results();
    let outcomes: Vec<(&str, &str)> = results
        .iter()
        .map(|r| (r["outcome"].as_str(), r["reason"].as_str()))
        .collect();
    assert_eq!(outcomes[0].0, "succeeded", "{outcomes:?}");
    assert_eq!(outcomes[1].0, "succeeded", "{outcomes:?}");
    assert_eq!(
        outcomes[2],
        ("skipped", "duplicate of line 2"),
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes[3],
        ("skipped", "duplicate of line 3"),
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes[4],
        ("skipped", "duplicate of line 3"),
        "{outcomes:?}"
    );
    let stats = env.sb.stats().await;
    let sent = |label: &str| -> u64 {
        stats["requests"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["path"].as_str().is_some_and(|l| l == label))
            .map(|r| r["count"].as_u64().unwrap())
            .sum()
    };
    assert_eq!(sent("PATCH /emnify/api/v1/sim/{sim_id}"), 1, "{stats}");
    assert_eq!(
        sent("POST /emnify/api/v1/euicc/{euicc_id}/operation"),
        1,
        "{stats}"
    );
}

/// Case 15: absurd numbers on the command line or in the config — a rate of 1e308 or 5e9
/// requests/s, hundreds of millions of workers, a wait of a hundred million years — are
/// refused with a message naming the value's place (exit 2, nothing sent), by `validate` too
/// for the config; never a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_15_absurd_numbers_are_refused_clearly() {
    let env = RunEnv::new(super::sandbox(100)).await;
    let path = env.write_job("job.csv", &emnify_job("suspend", [1]));
    let job = path.to_str().unwrap();
    for (args, needle) in [
        (vec!["run", "--rate", "1e308", job], "--rate"),
        (vec!["run", "--rate", "NaN", job], "--rate"),
        (
            vec!["run", "--wait-timeout", "100000000years", job],
            "--wait-timeout",
        ),
        (
            vec![
                "export",
                "--provider",
                "emnify",
                "--rate",
                "1e300",
                "-o",
                "x.csv",
            ],
            "--rate",
        ),
        (vec!["plan", "--rate", "1e300", job], "--rate"),
    ] {
        super::refused(&env, &args, needle).await;
    }
    let base = env.sb.base.clone();
    for (setting, needle) in [
        ("rate = 5e9", "`rate`"),
        ("rate = 1e308", "`rate`"),
        ("concurrency = 100000000", "`concurrency`"),
        ("max_in_flight = 100000000", "`max_in_flight`"),
    ] {
        let config = env.write_job(
            "absurd.toml",
            &format!(
                "[providers.emnify]\nkind = \"emnify\"\nbase_url = \"{base}/emnify\"\n{setting}\n"
            ),
        );
        for command in ["validate", "run"] {
            let args = [command, "--config", config.to_str().unwrap(), job];
            super::refused(&env, &args, needle).await;
        }
    }
    assert_eq!(
        env.sb.stats().await["requests_total"],
        0,
        "nothing was sent"
    );
}
