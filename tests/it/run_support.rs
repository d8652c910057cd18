//! Helpers for tests of `simbatch run`: an in-process sandbox, a temporary working directory
//! with a `simbatch.toml` pointing every provider at it, and the real binary run there with
//! credentials in its environment (never on its command line).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Output;

use simbatch::sandbox::SandboxConfig;

use crate::sandbox_support::Sb;

pub const TOKEN: &str = "test-token";

pub struct RunEnv {
    pub sb: Sb,
    pub dir: tempfile::TempDir,
}

impl RunEnv {
    pub async fn new(config: SandboxConfig) -> RunEnv {
        let sb = Sb::start(config).await;
        let dir = tempfile::tempdir().unwrap();
        let env = RunEnv { sb, dir };
        env.point_at(&env.sb.base.clone());
        env
    }

    /// A sandbox with `sims` SIMs per provider, its rate limits off, and no faults.
    pub async fn unlimited(sims: u32) -> RunEnv {
        RunEnv::new(SandboxConfig {
            sims,
            limits: simbatch::sandbox::LimitMode::Off,
            ..SandboxConfig::default()
        })
        .await
    }

    /// Rewrites `simbatch.toml` so that every provider is reached at `base` + `/<kind>` (the
    /// sandbox itself, or a proxy in front of it).
    pub fn point_at(&self, base: &str) {
        let toml: String = ["emnify", "twilio", "telnyx"]
            .iter()
            .map(|k| format!("[providers.{k}]\nkind = \"{k}\"\nbase_url = \"{base}/{k}\"\n"))
            .collect();
        std::fs::write(self.dir.path().join("simbatch.toml"), toml).unwrap();
    }

    pub fn write_job(&self, name: &str, content: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    pub fn command(&self, args: &[&str], token: &str) -> std::process::Command {
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin!("simbatch"));
        cmd.current_dir(self.dir.path())
            .args(args)
            .env_remove("RUST_LOG")
            .env("EMNIFY_APPLICATION_TOKEN", token)
            .env("TWILIO_ACCOUNT_SID", "AC00000000000000000000000000000001")
            .env("TWILIO_AUTH_TOKEN", token)
            .env("TELNYX_API_KEY", token);
        cmd
    }

    /// Runs the binary to completion off the async runtime (the sandbox keeps serving).
    pub async fn run(&self, args: &[&str]) -> Output {
        self.run_with_token(args, TOKEN).await
    }

    pub async fn run_with_token(&self, args: &[&str], token: &str) -> Output {
        let mut cmd = self.command(args, token);
        tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap()
    }

    /// The rows of the single run's `results.csv`, as maps from column to value.
    pub fn results(&self) -> Vec<HashMap<String, String>> {
        let reports = self.dir.path().join("reports");
        let run = std::fs::read_dir(&reports)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        read_csv(&run.join("results.csv"))
    }

    pub fn report_dir(&self) -> PathBuf {
        std::fs::read_dir(self.dir.path().join("reports"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path()
    }
}

/// Runs `cmd` to its end with one resource limited to `limit` (`RLIMIT_AS`, `RLIMIT_FSIZE`), the
/// way a machine short of memory or disk would; SIGXFSZ is ignored, so that a write past a file
/// size limit fails (EFBIG, as on a full disk) instead of killing the process.
pub async fn output_with_limit(
    mut cmd: std::process::Command,
    resource: libc::__rlimit_resource_t,
    limit: u64,
) -> Output {
    use std::os::unix::process::CommandExt;
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let rlimit = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            if libc::setrlimit(resource, &rlimit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

/// Waits until no database holds the state directory's lock (sled's `flock` on `db/db`). A store
/// opened in the test process lets go of it from a background thread a moment after it is
/// dropped — later on a busy machine — and the binary started next would find the directory
/// busy (exit 4). Call after every in-process use of a state directory.
pub fn wait_store_released(state: &std::path::Path) {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(state.join("db").join("db")).unwrap();
    for _ in 0..3000 {
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) };
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("{} stayed locked for 30 s", state.display());
}

pub fn read_csv(path: &std::path::Path) -> Vec<HashMap<String, String>> {
    let mut reader = csv::Reader::from_path(path).unwrap();
    let headers = reader.headers().unwrap().clone();
    reader
        .records()
        .map(|r| {
            headers
                .iter()
                .zip(r.unwrap().iter())
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

pub fn show(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
