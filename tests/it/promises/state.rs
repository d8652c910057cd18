//! The state directory is the run's memory: a damaged one is never taken for a fresh start or
//! a partial resume (exit 4, "state directory … is damaged"), and a resume never carries a run
//! over to another provider account than the one it started on.

use std::path::{Path, PathBuf};

use simbatch::sandbox::inventory::{self, EMNIFY_PREFIX, TWILIO_PREFIX};

use crate::run_support::{show, RunEnv};
use crate::sandbox_support::Sb;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let dest = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &dest);
        } else {
            std::fs::copy(&path, &dest).unwrap();
        }
    }
}

/// sled's log: the largest file of the database.
fn sled_log(state: &Path) -> PathBuf {
    let mut files: Vec<(u64, PathBuf)> = std::fs::read_dir(state.join("db"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| (std::fs::metadata(&p).unwrap().len(), p))
        .collect();
    files.sort();
    files.pop().unwrap().1
}

/// Case 7: the sled log deleted, emptied, zero-filled or cut to half after a finished run of
/// 300 rows: every later `run` of the job (and `status`) exits 4 naming the damaged state
/// directory and sends nothing — never a fresh start ("skipped: already …", an empty revert
/// job) nor a resume that forgot rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_07_a_damaged_state_store_is_exit_4_never_a_silent_restart() {
    let env = RunEnv::new(super::sandbox(1000)).await;
    let path = env.write_job(
        "job.csv",
        &super::job_of("suspend", "emnify", EMNIFY_PREFIX, super::active(300)),
    );
    let output = env
        .run(&[
            "run",
            "-q",
            "--rate",
            "2000",
            "--concurrency",
            "8",
            path.to_str().unwrap(),
        ])
        .await;
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let state = env.dir.path().join(".simbatch");
    let pristine = env.dir.path().join("pristine");
    copy_dir(&state, &pristine);

    type Damage = fn(&Path);
    let damages: [(&str, Damage); 4] = [
        ("log deleted", |log| std::fs::remove_file(log).unwrap()),
        ("log emptied", |log| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(log)
                .unwrap()
                .set_len(0)
                .unwrap()
        }),
        ("log zero-filled", |log| {
            let len = std::fs::metadata(log).unwrap().len();
            std::fs::write(log, vec![0u8; len as usize]).unwrap()
        }),
        ("log cut to half", |log| {
            let f = std::fs::OpenOptions::new().write(true).open(log).unwrap();
            f.set_len(f.metadata().unwrap().len() / 2).unwrap()
        }),
    ];
    for (what, damage) in damages {
        std::fs::remove_dir_all(&state).unwrap();
        copy_dir(&pristine, &state);
        damage(&sled_log(&state));
        let before = env.sb.stats().await["requests_total"].as_u64().unwrap();
        for args in [vec!["run", path.to_str().unwrap()], vec!["status"]] {
            let output = env.run(&args).await;
            let text = show(&output);
            assert_eq!(output.status.code(), Some(4), "{what}, {args:?}: {text}");
            assert!(
                text.contains("state directory") && text.contains("is damaged"),
                "{what}, {args:?}: {text}"
            );
            assert!(!text.contains("panicked"), "{what}: {text}");
        }
        let after = env.sb.stats().await["requests_total"].as_u64().unwrap();
        assert_eq!(before, after, "{what}: requests were sent");
    }
}

/// Case 8: a resume whose config points a provider name at another account (here another
/// sandbox, standing for another emnify/Twilio account) is refused, exit 2, naming both; with
/// `--allow-account-change` it goes on there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_08_a_resume_against_another_account_is_refused_naming_both() {
    let env = RunEnv::new(super::sandbox(1000)).await;
    let mut job = String::from("action,provider,iccid\n");
    for i in [1, 2, 3] {
        job.push_str(&format!(
            "suspend,emnify,{}\nsuspend,twilio,{}\n",
            inventory::iccid(EMNIFY_PREFIX, i),
            inventory::iccid(TWILIO_PREFIX, i)
        ));
    }
    let path = env.write_job("job.csv", &job);
    // --no-wait: Twilio's changes stay pending, so there is something to resume.
    let output = env
        .run(&["run", "-q", "--no-wait", path.to_str().unwrap()])
        .await;
    assert_eq!(output.status.code(), Some(5), "{}", show(&output));

    let other = Sb::start(super::sandbox(1000)).await;
    env.point_at(&other.base);
    let output = env.run(&["run", path.to_str().unwrap()]).await;
    let text = show(&output);
    assert_eq!(output.status.code(), Some(2), "{text}");
    assert!(
        text.contains(&format!("{}/twilio", env.sb.base))
            && text.contains(&format!("{}/twilio", other.base)),
        "both accounts are named: {text}"
    );
    assert_eq!(
        other.stats().await["requests_total"],
        0,
        "nothing went to the other account"
    );

    let output = env
        .run(&[
            "run",
            "-q",
            "--allow-account-change",
            path.to_str().unwrap(),
        ])
        .await;
    assert!(
        output.status.code().is_some_and(|c| c != 2),
        "{}",
        show(&output)
    );
    assert!(other.stats().await["requests_total"].as_u64().unwrap() > 0);
}
