//! `simbatch run` on a terminal (SPEC 3.4): it shows the accounts and the counts per provider
//! and action, then asks before the first change; "no" sends nothing; `--yes` skips the
//! question; while it goes, a line per provider lane and a total, a paused lane saying so, and
//! log lines that never leave stale copies of the bars. The binary runs on a pseudo-terminal
//! (`openpty`), so it sees what an operator's shell gives it; the progress test reads the
//! screen through a terminal emulator (`vt100`), as a person would see it.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::Stdio;

use simbatch::sandbox::inventory::{iccid, EMNIFY_PREFIX};

use crate::run_support::{RunEnv, TOKEN};

const PROMPT: &str = "Send these changes?";

fn pty() -> (File, OwnedFd) {
    pty_sized(None)
}

/// A terminal of `size` (rows, columns), or of no size.
fn pty_sized(size: Option<(u16, u16)>) -> (File, OwnedFd) {
    let (mut master, mut slave) = (-1, -1);
    let size = size.map(|(rows, cols)| libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    });
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            size.as_ref()
                .map_or(std::ptr::null(), |s| s as *const libc::winsize),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // Not inherited by the other tests' children (which would keep the terminal open, and
    // its reader waiting, after this test's child ended).
    for fd in [master, slave] {
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
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
    RunEnv::unlimited(20).await
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

/// The screen of a terminal of 50 × 200 on which the binary runs, rendered as it goes.
struct Screen {
    parser: std::sync::Arc<std::sync::Mutex<vt100::Parser>>,
    ended: Option<tokio::task::JoinHandle<i32>>,
    pid: libc::pid_t,
}

/// A test that fails mid-run does not leave the run going (nor wait for it).
impl Drop for Screen {
    fn drop(&mut self) {
        if self.ended.as_ref().is_some_and(|e| !e.is_finished()) {
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
        }
    }
}

impl Screen {
    fn start(env: &RunEnv, args: &[&str]) -> Screen {
        let (rows, cols) = (50, 200);
        let (mut master, slave) = pty_sized(Some((rows, cols)));
        let mut cmd = env.command(args, TOKEN);
        cmd.env("TERM", "xterm")
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave));
        let mut child = cmd.spawn().unwrap();
        let pid = child.id() as libc::pid_t;
        drop(cmd);
        let size = |n| std::num::NonZeroU16::new(n).unwrap();
        let parser = std::sync::Arc::new(std::sync::Mutex::new(vt100::Parser::new(
            size(rows),
            size(cols),
            0,
        )));
        let screen = parser.clone();
        let ended = tokio::task::spawn_blocking(move || {
            let mut buf = [0u8; 4096];
            loop {
                match master.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => screen.lock().unwrap().process(&buf[..n]),
                }
            }
            child.wait().unwrap().code().unwrap_or(-1)
        });
        Screen {
            parser,
            ended: Some(ended),
            pid,
        }
    }

    /// The screen's lines now.
    fn lines(&self) -> Vec<String> {
        let parser = self.parser.lock().unwrap();
        let (_, cols) = parser.screen().size();
        // Row by row: a bar padded to the full width wraps, and `contents` would join it to
        // the next row.
        parser
            .screen()
            .rows(0, cols.into())
            .map(|l| l.trim_end().to_string())
            .collect()
    }
}

/// Two lanes on a terminal, emnify's first changes answered 429 with `Retry-After: 6` and
/// `-v` logging: the screen shows a line per lane and a total, the paused lane says so and
/// when it resumes — and at no moment is there more than one copy of a lane's line (a log
/// line written through a bar leaves the old bar behind); once the run ends, none is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_shows_each_lane_and_a_paused_one_says_so() {
    let env = RunEnv::unlimited(100).await;
    let refused = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = refused.clone();
    let proxy = crate::proxy::Proxy::start(
        env.sb.base.clone(),
        std::sync::Arc::new(move |method: &axum::http::Method, path: &str| {
            let change = *method == axum::http::Method::PATCH && path.starts_with("/emnify/");
            if change && counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 2 {
                crate::proxy::Fault::TooMany(Some(6))
            } else {
                crate::proxy::Fault::Forward
            }
        }),
    )
    .await;
    env.point_at(&proxy.base);
    let mut rows = String::new();
    for i in 1..=60 {
        rows.push_str(&format!("suspend,emnify,{}\n", iccid(EMNIFY_PREFIX, i)));
        let twilio = iccid(simbatch::sandbox::inventory::TWILIO_PREFIX, i);
        rows.push_str(&format!("suspend,twilio,{twilio}\n"));
    }
    let job = env.write_job("two.csv", &format!("action,provider,iccid\n{rows}"));
    let mut screen = Screen::start(
        &env,
        &["run", "-v", "--yes", "--rate", "10", job.to_str().unwrap()],
    );
    let lane_line = |lines: &[String], lane: &str| {
        lines
            .iter()
            .filter(|l| l.starts_with(&format!("{lane} ")) && l.contains("changes/s"))
            .count()
    };
    let (mut saw_lanes, mut saw_pause) = (false, false);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    while !screen.ended.as_ref().unwrap().is_finished() {
        assert!(
            std::time::Instant::now() < deadline,
            "{:#?}",
            screen.lines()
        );
        let lines = screen.lines();
        for lane in ["emnify", "twilio", "total"] {
            assert!(
                lane_line(&lines, lane) <= 1,
                "stale copies of {lane}: {lines:#?}"
            );
        }
        saw_lanes |= lane_line(&lines, "emnify") == 1
            && lane_line(&lines, "twilio") == 1
            && lines
                .iter()
                .any(|l| l.starts_with("total ") && l.contains("ETA"));
        saw_pause |= lines
            .iter()
            .any(|l| l.starts_with("emnify ") && l.contains("paused by 429, resuming in"));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let lines = screen.lines();
    let code = screen.ended.take().unwrap().await.unwrap();
    assert_eq!(code, 0, "{lines:#?}");
    assert!(saw_lanes, "never a line per lane and a total: {lines:#?}");
    assert!(saw_pause, "the paused lane never said so: {lines:#?}");
    assert!(
        lines.iter().all(|l| !l.contains("changes/s")),
        "bars left behind: {lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains(" INFO ") && l.contains("listed the inventory")),
        "-v shows simbatch's events: {lines:#?}"
    );
}
