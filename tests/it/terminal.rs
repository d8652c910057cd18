//! `simbatch run` on a terminal (SPEC 3.4): it shows the accounts and the counts per provider
//! and action, then asks before the first change; "no" sends nothing; `--yes` skips the
//! question. The binary runs on a pseudo-terminal (`openpty`), so it sees what an operator's
//! shell gives it.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::Stdio;

use simbatch::sandbox::inventory::{iccid, EMNIFY_PREFIX};
use simbatch::sandbox::{LimitMode, SandboxConfig};

use crate::run_support::{RunEnv, TOKEN};

const PROMPT: &str = "Send these changes?";

fn pty() -> (File, OwnedFd) {
    let (mut master, mut slave) = (-1, -1);
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    unsafe { (File::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

/// Runs the binary with its stdin, stdout and stderr on a terminal. When `answer` is given, it
/// is typed once the question appears. Returns the exit code and everything the terminal
/// showed.
async fn on_terminal(env: &RunEnv, args: &[&str], answer: Option<&'static str>) -> (i32, String) {
    let (mut master, slave) = pty();
    let mut cmd = env.command(args, TOKEN);
    cmd.stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave));
    let mut child = cmd.spawn().unwrap();
    let pid = child.id() as libc::pid_t;
    drop(cmd); // the parent's copies of the terminal's end: reading ends when the child exits
    let session = tokio::task::spawn_blocking(move || {
        let mut shown = Vec::new();
        let mut typed = answer.is_none();
        let mut buf = [0u8; 4096];
        loop {
            match master.read(&mut buf) {
                Ok(0) | Err(_) => break, // EIO once the child has closed the terminal
                Ok(n) => shown.extend_from_slice(&buf[..n]),
            }
            if !typed && String::from_utf8_lossy(&shown).contains(PROMPT) {
                master.write_all(answer.unwrap().as_bytes()).unwrap();
                typed = true;
            }
        }
        let code = child.wait().unwrap().code().unwrap_or(-1);
        (code, String::from_utf8_lossy(&shown).into_owned())
    });
    tokio::pin!(session);
    // A run waiting for an answer nobody gives fails the test instead of hanging it.
    match tokio::time::timeout(std::time::Duration::from_secs(120), &mut session).await {
        Ok(ended) => ended.unwrap(),
        Err(_) => {
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let (_, shown) = session.await.unwrap();
            panic!("the run still waited after 120 s; the terminal showed:\n{shown}");
        }
    }
}

fn job(env: &RunEnv) -> String {
    let rows: String = (1..=3)
        .map(|i| format!("suspend,emnify,{}\n", iccid(EMNIFY_PREFIX, i)))
        .collect();
    let path = env.write_job("suspend.csv", &format!("action,provider,iccid\n{rows}"));
    path.to_str().unwrap().to_string()
}

async fn env() -> RunEnv {
    RunEnv::new(SandboxConfig {
        sims: 20,
        limits: LimitMode::Off,
        ..SandboxConfig::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_terminal_run_asks_and_no_sends_nothing() {
    let env = env().await;
    let job = job(&env);
    let (code, shown) = on_terminal(&env, &["run", &job], Some("n\n")).await;
    assert_eq!(code, 2, "{shown}");
    assert!(shown.contains(PROMPT), "{shown}");
    assert!(
        shown.contains("emnify (emnify, "),
        "the account is named: {shown}"
    );
    assert!(shown.contains("suspend 3"), "the counts are shown: {shown}");
    assert!(shown.contains("nothing was sent"), "{shown}");
    assert!(env.sb.journal().await.is_empty(), "a change was applied");

    // The same run, now confirmed, goes ahead.
    let (code, shown) = on_terminal(&env, &["run", &job], Some("y\n")).await;
    assert_eq!(code, 0, "{shown}");
    assert!(shown.contains(PROMPT), "{shown}");
    assert_eq!(env.sb.journal().await.len(), 3, "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yes_skips_the_question_on_a_terminal() {
    let env = env().await;
    let job = job(&env);
    let (code, shown) = on_terminal(&env, &["run", "--yes", &job], None).await;
    assert_eq!(code, 0, "{shown}");
    assert!(!shown.contains(PROMPT), "asked despite --yes: {shown}");
    assert!(
        shown.contains("suspend 3"),
        "the counts are still shown: {shown}"
    );
    assert_eq!(env.sb.journal().await.len(), 3, "{shown}");
}
