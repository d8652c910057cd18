//! End-to-end benchmarks: the real `simbatch` binary against the in-process sandbox, one
//! 10,000-row job per provider, reporting in one run (see benches/README.md for the latest
//! figures and the machine):
//!
//! 1. `ceiling`  — rows/s and requests/s with limits and faults off, next to what `wrk` gets
//!    from the same sandbox (2 threads, 64 connections) on the provider's change endpoint the
//!    rows use (each request a real change) and on `GET` one emnify SIM, with the CPU time per
//!    request of the engine and of the sandbox;
//! 2. `fidelity` — wall time against the provider's bound under `--limits scaled:K`, and 429s
//!    (under Twilio's in-flight cap also against what `wrk` gets at that cap);
//! 3. `latency`  — with 100 ms ± 20 ms latency and a limit of 500 requests/s, the rate reached;
//! 4. `requests` — requests per row per provider (lookups, pre-flight, confirmation included),
//!    under each provider's documented limit shape (scaled so the run takes seconds);
//! 5. `rss`      — peak resident memory of `run` at 100,000 and 1,000,000 rows;
//! 6. `resume`   — time from start to the first new request with 999,000 of 1,000,000 rows done.
//!
//! `cargo bench --bench e2e` runs all; `cargo bench --bench e2e -- ceiling latency` some.
//! CI only builds it. The emnify fidelity run waits out one 5-minute window (its bound), the
//! Twilio one a 100-s bound.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use simbatch::sandbox::inventory::{self, EMNIFY_PREFIX, TELNYX_PREFIX, TWILIO_PREFIX};
use simbatch::sandbox::{Faults, Latency, LimitMode, RunningSandbox, SandboxConfig};

const BIN: &str = env!("CARGO_BIN_EXE_simbatch");
/// The credentials every run and load generator presents (the sandbox accepts any).
const TOKEN: &str = "bench";
const TWILIO_ACCOUNT: &str = "AC00000000000000000000000000000001";
const ROWS: u64 = 10_000;
const PROVIDERS: [(&str, &str); 3] = [
    ("emnify", EMNIFY_PREFIX),
    ("twilio", TWILIO_PREFIX),
    ("telnyx", TELNYX_PREFIX),
];

struct Run {
    exit: Option<i32>,
    wall: Duration,
    summary: Value,
    peak_rss_kb: u64,
    /// The process's CPU time (user + system), as last sampled before it ended.
    cpu: Duration,
}

/// CPU time (user + system) of process `pid` so far ("self" for this one), from `/proc`.
fn cpu_of(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at the closing parenthesis.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_secs_f64(ticks as f64 / per_second as f64))
}

/// A work directory with a config pointing every provider at `sandbox`.
fn workdir(sandbox: &RunningSandbox) -> tempfile::TempDir {
    workdir_capped(sandbox, None)
}

/// [`workdir`], with `max_in_flight` set for one provider when `cap` says so.
fn workdir_capped(sandbox: &RunningSandbox, cap: Option<(&str, usize)>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let toml: String = PROVIDERS
        .iter()
        .map(|(k, _)| {
            let tuning = match cap {
                Some((provider, n)) if provider == *k => format!("max_in_flight = {n}\n"),
                _ => String::new(),
            };
            format!(
                "[providers.{k}]\nkind = \"{k}\"\nbase_url = \"{}/{k}\"\n{tuning}",
                sandbox.base_url()
            )
        })
        .collect();
    std::fs::write(dir.path().join("simbatch.toml"), toml).expect("config");
    dir
}

/// `rows` real changes at `provider`: suspend, or activate the SIMs that start suspended.
fn write_job(path: &Path, provider: &str, prefix: &str, rows: u64) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).expect("job"));
    writeln!(out, "action,provider,iccid").unwrap();
    for i in 1..=rows {
        let action = if inventory::starts_suspended(i) {
            "activate"
        } else {
            "suspend"
        };
        writeln!(out, "{action},{provider},{}", inventory::iccid(prefix, i)).unwrap();
    }
}

/// Runs the binary in `dir`, sampling its peak RSS; calls `watch` (time since start, pid)
/// every few ms while it runs.
fn run(dir: &Path, args: &[&str], mut watch: impl FnMut(Duration, u32)) -> Run {
    let started = Instant::now();
    let mut child = Command::new(BIN)
        .current_dir(dir)
        .args(["--json", "-q"])
        .args(args)
        .env("EMNIFY_APPLICATION_TOKEN", TOKEN)
        .env("TWILIO_ACCOUNT_SID", TWILIO_ACCOUNT)
        .env("TWILIO_AUTH_TOKEN", TOKEN)
        .env("TELNYX_API_KEY", TOKEN)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("simbatch runs");
    let status_file = format!("/proc/{}/status", child.id());
    let pid = child.id().to_string();
    let mut peak_rss_kb = 0;
    let mut cpu = Duration::ZERO;
    let status = loop {
        cpu = cpu_of(&pid).unwrap_or(cpu);
        if let Ok(text) = std::fs::read_to_string(&status_file) {
            if let Some(kb) = text
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
            {
                peak_rss_kb = peak_rss_kb.max(kb);
            }
        }
        watch(started.elapsed(), child.id());
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let wall = started.elapsed();
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).ok();
    Run {
        exit: status.code(),
        wall,
        summary: serde_json::from_str(&stdout).unwrap_or(Value::Null),
        peak_rss_kb,
        cpu,
    }
}

async fn sandbox(config: SandboxConfig) -> RunningSandbox {
    simbatch::sandbox::bind("127.0.0.1:0".parse().unwrap(), config)
        .await
        .expect("sandbox binds")
}

async fn stats(sb: &RunningSandbox) -> Value {
    reqwest::get(format!("{}/_sandbox/stats", sb.base_url()))
        .await
        .expect("stats")
        .json()
        .await
        .expect("stats json")
}

/// [`stats`] from inside `block_in_place`.
fn stats_now(sb: &RunningSandbox) -> Value {
    tokio::runtime::Handle::current().block_on(stats(sb))
}

/// The request each row of a `provider` job sends, as a `wrk` Lua script: SIMs 1..=ROWS split
/// between wrk's two threads, each SIM changed on every pass (suspended, then activated; the
/// ones that start suspended the other way round), so that every request is a real change.
fn change_script(provider: &str) -> String {
    let (method, path, bodies, content_type) = match provider {
        "emnify" => (
            "PATCH",
            "string.format('/emnify/api/v1/sim/%d', id)",
            [
                r#"'{"status":{"id":2,"description":"Suspended"}}'"#,
                r#"'{"status":{"id":1,"description":"Activated"}}'"#,
            ],
            "application/json",
        ),
        "twilio" => (
            "POST",
            "string.format('/twilio/v1/Sims/HS%032x', id)",
            ["'Status=inactive'", "'Status=active'"],
            "application/x-www-form-urlencoded",
        ),
        _ => (
            "POST",
            "string.format('/telnyx/v2/sim_cards/5e1c0000-0000-4000-8000-%012x/actions/' .. (suspend and 'disable' or 'enable'), id)",
            ["nil", "nil"],
            "application/json",
        ),
    };
    format!(
        r#"local counter, tid, threads = 0, 0, 0
function setup(thread) thread:set("tid", threads); threads = threads + 1 end
function init(args) wrk.method = "{method}"; wrk.headers["Content-Type"] = "{content_type}" end
function request()
  local k = counter
  counter = counter + 1
  local half = {half}
  local id = (k % half) * 2 + tid + 1
  local suspend = (math.floor(k / half) % 2 == 0) ~= (id % 10 == 0)
  local body = suspend and {suspend_body} or {activate_body}
  return wrk.format(nil, {path}, nil, body)
end
"#,
        half = ROWS / 2,
        suspend_body = bodies[0],
        activate_body = bodies[1],
    )
}

/// What `wrk` (2 threads, 64 connections, 5 s) gets from the sandbox: `GET` one emnify SIM
/// (its cheapest authenticated read), and `provider`'s change request — the endpoint the
/// engine's rows use.
async fn wrk(sb: &RunningSandbox, provider: &str) -> Option<(f64, f64)> {
    let client = reqwest::Client::new();
    let token: Value = client
        .post(format!("{}/emnify/api/v1/authenticate", sb.base_url()))
        .json(&serde_json::json!({"application_token": TOKEN}))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let token = token["auth_token"].as_str()?.to_string();
    let auth = match provider {
        "emnify" => format!("Authorization: Bearer {token}"),
        "twilio" => twilio_auth_header(),
        _ => format!("Authorization: Bearer {TOKEN}"),
    };
    let script = tempfile::NamedTempFile::new().ok()?;
    std::fs::write(script.path(), change_script(provider)).ok()?;
    let base = sb.base_url();
    let (get_auth, script_path) = (
        format!("Authorization: Bearer {token}"),
        script.path().to_owned(),
    );
    tokio::task::spawn_blocking(move || {
        let read = wrk_rate(
            64,
            &["-H", &get_auth, &format!("{base}/emnify/api/v1/sim/1")],
        )?;
        let change = wrk_rate(
            64,
            &["-s", &script_path.to_string_lossy(), "-H", &auth, &base],
        )?;
        Some((read, change))
    })
    .await
    .ok()?
}

/// Requests/s that `wrk` (2 threads, `connections` connections, 5 s) reports; `None` when it
/// is not installed.
fn wrk_rate(connections: u32, args: &[&str]) -> Option<f64> {
    let output = Command::new("wrk")
        .args(["-t2", &format!("-c{connections}"), "-d5s"])
        .args(args)
        .output()
        .ok()?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find(|l| l.starts_with("Requests/sec:"))?
        .split_whitespace()
        .nth(1)?
        .parse::<f64>()
        .ok()
}

fn requests(summary: &Value) -> f64 {
    summary["requests_total"].as_f64().unwrap_or(0.0)
}

async fn ceiling(table: &mut Vec<String>) {
    for (provider, prefix) in PROVIDERS {
        let sb = sandbox(SandboxConfig {
            sims: ROWS as u32,
            limits: LimitMode::Off,
            async_delay: Duration::from_millis(10),
            ..SandboxConfig::default()
        })
        .await;
        let dir = workdir(&sb);
        let job = dir.path().join("job.csv");
        write_job(&job, provider, prefix, ROWS);
        // This process is the sandbox (and the run's watcher, a /proc read every 2 ms, little
        // else): its CPU time per request, beside the engine's, shows where the two cores went.
        let sandbox_before = cpu_of("self");
        let r = tokio::task::block_in_place(|| {
            run(
                dir.path(),
                &["run", "--rate", "1000000", job.to_str().unwrap()],
                |_, _| {},
            )
        });
        let sandbox_cpu = cpu_of("self")
            .zip(sandbox_before)
            .map(|(after, before)| after.saturating_sub(before));
        let elapsed = r.summary["elapsed_s"].as_f64().unwrap_or(f64::NAN);
        let rps = requests(&r.summary) / elapsed;
        let per_request = |cpu: Duration, requests: f64| cpu.as_secs_f64() * 1e6 / requests;
        let wrk_before = cpu_of("self");
        let wrk = wrk(&sb, provider).await;
        let sandbox_under_wrk =
            wrk.zip(cpu_of("self").zip(wrk_before))
                .map(|((read, change), (after, before))| {
                    // Two 5-s wrk runs, at their own rates.
                    let served = (read + change) * 5.0;
                    per_request(after.saturating_sub(before), served)
                });
        table.push(format!(
            "| ceiling | {provider} | {:.0} rows/s, {rps:.0} req/s (exit {:?}, {:.2} s); CPU per request: engine {:.0} µs, sandbox {} µs (under wrk {} µs) | wrk {} | {} |",
            ROWS as f64 / elapsed,
            r.exit,
            elapsed,
            per_request(r.cpu, requests(&r.summary)),
            sandbox_cpu.map_or("?".into(), |c| format!(
                "{:.0}",
                per_request(c, requests(&r.summary))
            )),
            sandbox_under_wrk.map_or("?".into(), |c| format!("{c:.0}")),
            wrk.map_or("not installed".into(), |(read, change)| format!(
                "{change:.0} req/s on the change endpoint, {read:.0} on GET one SIM"
            )),
            wrk.map_or("—".into(), |(read, change)| format!(
                "{:.0}% of wrk's changes, {:.0}% of its reads",
                100.0 * rps / change,
                100.0 * rps / read
            )),
        ));
        sb.shutdown().await;
    }
}

/// One limit-fidelity case.
struct FidelityCase {
    provider: &'static str,
    prefix: &'static str,
    /// The sandbox's `--limits scaled:K`.
    k: f64,
    args: Vec<&'static str>,
    latency: Option<Latency>,
    /// Twilio: the in-flight cap the client is told (`max_in_flight` in its config), as an
    /// operator whose account has that cap would set it.
    max_in_flight: Option<usize>,
}

async fn fidelity(table: &mut Vec<String>, on: impl Fn(&str) -> bool) {
    let cases = [
        // emnify: 2,000 × K per 5-minute sliding window. With K = 5, 10,000 requests fit one
        // window; the last few wait for the first to age out: the bound is one window, 300 s.
        FidelityCase {
            provider: "emnify",
            prefix: EMNIFY_PREFIX,
            k: 5.0,
            args: vec!["--rate", "33.3"],
            latency: None,
            max_in_flight: None,
        },
        // Twilio: 100 × K requests in flight, so with 100 ms latency the bound is
        // N × 0.1 s / 100K. K = 0.1 (10 in flight, bound 100 s) keeps the fixed costs a bound
        // cannot count — the first listing page, the settling time and the status listings
        // that confirm the last changes, about 1.5 s — to the share they have on the other
        // providers' bounds of 50 and 300 s. At K = 1 the bound is 10 s and they weigh 15%.
        FidelityCase {
            provider: "twilio",
            prefix: TWILIO_PREFIX,
            k: 0.1,
            args: vec![],
            latency: Some(Latency {
                base_ms: 100,
                jitter_ms: 0,
            }),
            max_in_flight: Some(10),
        },
        // Telnyx: 100 × K per fixed 1-second window; the bound is N / 100K. The client is told
        // nothing: it starts at the documented 98/s and learns the limit and where windows start
        // from the answers' x-ratelimit-* headers.
        FidelityCase {
            provider: "telnyx",
            prefix: TELNYX_PREFIX,
            k: 2.0,
            args: vec![],
            latency: None,
            max_in_flight: None,
        },
    ];
    for case in cases {
        let (provider, k) = (case.provider, case.k);
        if !on(provider) {
            continue;
        }
        let sb = sandbox(SandboxConfig {
            sims: ROWS as u32,
            limits: LimitMode::Scaled(k),
            faults: Faults {
                latency: case.latency.unwrap_or_default(),
                ..Faults::default()
            },
            ..SandboxConfig::default()
        })
        .await;
        let dir = workdir_capped(&sb, case.max_in_flight.map(|cap| (provider, cap)));
        let job = dir.path().join("job.csv");
        write_job(&job, provider, case.prefix, ROWS);
        let mut args = vec!["run"];
        args.extend(case.args);
        args.push(job.to_str().unwrap());
        let r = tokio::task::block_in_place(|| run(dir.path(), &args, |_, _| {}));
        let bound = match provider {
            "emnify" => 300.0,
            "twilio" => ROWS as f64 * 0.1 / (100.0 * k),
            _ => ROWS as f64 / (100.0 * k),
        };
        let s = stats(&sb).await;
        // Under an in-flight cap the bound assumes each request takes exactly the latency; what
        // the sandbox serves at that cap is measured too, by `wrk` with as many connections
        // reading one SIM (after the run: reads change nothing).
        let served = match case.max_in_flight {
            Some(cap) => {
                let (base, auth) = (sb.base_url(), twilio_auth_header());
                tokio::task::spawn_blocking(move || {
                    wrk_rate(
                        cap as u32,
                        &[
                            "-H",
                            &auth,
                            &format!("{base}/twilio/v1/Sims/HS{:032x}", 1),
                        ],
                    )
                })
                .await
                .ok()
                .flatten()
                .map(|rate| {
                    let measured = ROWS as f64 / rate;
                    format!(
                        "; wrk at {cap} connections: {rate:.1} req/s, bound {measured:.1} s = {:.3}×",
                        r.wall.as_secs_f64() / measured
                    )
                })
            }
            None => None,
        };
        table.push(format!(
            "| fidelity | {provider} (scaled:{k}) | {:.1} s vs bound {bound:.1} s = {:.3}×{} | {} 429s | {:.4} req/row, exit {:?} |",
            r.wall.as_secs_f64(),
            r.wall.as_secs_f64() / bound,
            served.unwrap_or_default(),
            s["too_many_requests"],
            requests(&r.summary) / ROWS as f64,
            r.exit
        ));
        sb.shutdown().await;
    }
}

/// The `Authorization` header for the sandbox's Twilio account.
fn twilio_auth_header() -> String {
    use base64::Engine;
    format!(
        "Authorization: Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{TWILIO_ACCOUNT}:{TOKEN}"))
    )
}

async fn latency(table: &mut Vec<String>) {
    let sb = sandbox(SandboxConfig {
        sims: ROWS as u32,
        limits: LimitMode::Off,
        faults: Faults {
            latency: Latency {
                base_ms: 100,
                jitter_ms: 20,
            },
            ..Faults::default()
        },
        ..SandboxConfig::default()
    })
    .await;
    let dir = workdir(&sb);
    let job = dir.path().join("job.csv");
    write_job(&job, "emnify", EMNIFY_PREFIX, ROWS);
    let r = tokio::task::block_in_place(|| {
        run(
            dir.path(),
            &["run", "--rate", "500", job.to_str().unwrap()],
            |_, _| {},
        )
    });
    let elapsed = r.summary["elapsed_s"].as_f64().unwrap_or(f64::NAN);
    let rate = requests(&r.summary) / elapsed;
    // Steady state: the changes' own timestamps in the journal, first to last (start-up,
    // the inventory listing and the last request's latency excluded).
    let mut times: Vec<chrono::DateTime<chrono::Utc>> =
        sb.shared.journal.entries().iter().map(|e| e.at).collect();
    times.sort();
    let steady = match (times.first(), times.last()) {
        (Some(first), Some(last)) if last > first => {
            (times.len() - 1) as f64 / (*last - *first).as_seconds_f64()
        }
        _ => f64::NAN,
    };
    table.push(format!(
        "| latency hiding | emnify, 100 ± 20 ms, --rate 500 | whole run {rate:.1} req/s = {:.1}% of 500; steady state {steady:.1} changes/s = {:.1}% | {:.2} s | exit {:?} |",
        rate / 5.0,
        steady / 5.0,
        elapsed,
        r.exit
    ));
    sb.shutdown().await;
}

async fn requests_per_row(table: &mut Vec<String>) {
    for (provider, prefix) in PROVIDERS {
        // The documented shape, scaled so that 10,000 rows take seconds; the client is told the
        // scaled limit the same way an operator would (`--rate`), Twilio keeps its in-flight cap.
        let (k, rate): (f64, Option<&str>) = match provider {
            "emnify" => (50.0, Some("330")),
            "twilio" => (1.0, None),
            _ => (10.0, Some("990")),
        };
        let sb = sandbox(SandboxConfig {
            sims: ROWS as u32,
            limits: LimitMode::Scaled(k),
            ..SandboxConfig::default()
        })
        .await;
        let dir = workdir(&sb);
        let job = dir.path().join("job.csv");
        write_job(&job, provider, prefix, ROWS);
        let mut args = vec!["run"];
        if let Some(rate) = rate {
            args.extend(["--rate", rate]);
        }
        args.push(job.to_str().unwrap());
        let r = tokio::task::block_in_place(|| run(dir.path(), &args, |_, _| {}));
        let s = stats(&sb).await;
        table.push(format!(
            "| requests/row | {provider} (scaled:{k}) | {:.4} | {} requests for {ROWS} rows | {} 429s, exit {:?} |",
            s["requests_total"].as_f64().unwrap_or(0.0) / ROWS as f64,
            s["requests_total"],
            s["too_many_requests"],
            r.exit
        ));
        sb.shutdown().await;
    }
}

/// Peak RSS of whole runs of 100,000 and 1,000,000 Telnyx rows (the sandbox holds as many SIMs).
async fn rss(table: &mut Vec<String>) {
    let mut figures = Vec::new();
    for rows in [100_000u64, 1_000_000] {
        let sb = sandbox(SandboxConfig {
            sims: rows as u32,
            limits: LimitMode::Off,
            async_delay: Duration::from_millis(10),
            ..SandboxConfig::default()
        })
        .await;
        let dir = workdir(&sb);
        let job = dir.path().join("job.csv");
        write_job(&job, "telnyx", TELNYX_PREFIX, rows);
        let r = tokio::task::block_in_place(|| {
            run(
                dir.path(),
                &["run", "--rate", "1000000", job.to_str().unwrap()],
                |_, _| {},
            )
        });
        figures.push(r.peak_rss_kb);
        table.push(format!(
            "| peak RSS | {rows} rows (telnyx) | {:.1} MB | {:.1} s | exit {:?} |",
            r.peak_rss_kb as f64 / 1024.0,
            r.wall.as_secs_f64(),
            r.exit
        ));
        sb.shutdown().await;
    }
    table.push(format!(
        "| peak RSS | 1M vs 100k | {:+.1}% | | |",
        100.0 * (figures[1] as f64 / figures[0] as f64 - 1.0)
    ));
}

async fn resume(table: &mut Vec<String>) {
    const TOTAL: u64 = 1_000_000;
    const DONE: u64 = 999_000;
    let sb = sandbox(SandboxConfig {
        sims: TOTAL as u32,
        limits: LimitMode::Off,
        async_delay: Duration::from_millis(10),
        ..SandboxConfig::default()
    })
    .await;
    let dir = workdir(&sb);
    let job = dir.path().join("job.csv");
    write_job(&job, "telnyx", TELNYX_PREFIX, TOTAL);
    // Run the whole job and interrupt it (Ctrl-C: finish what is in flight, commit) once
    // 999,000 changes are applied; then time the resume.
    let mut interrupted = false;
    let first = tokio::task::block_in_place(|| {
        run(
            dir.path(),
            &["run", "--rate", "1000000", job.to_str().unwrap()],
            |_, pid| {
                if !interrupted && sb.shared.journal.len() as u64 >= DONE {
                    interrupted = true;
                    let _ = Command::new("kill")
                        .args(["-INT", &pid.to_string()])
                        .status();
                }
            },
        )
    });
    let done_before = sb.shared.journal.len();
    let before = stats(&sb).await["requests_total"].as_u64().unwrap_or(0);
    let mut first_new: Option<Duration> = None;
    let r = tokio::task::block_in_place(|| {
        run(
            dir.path(),
            &["run", "--rate", "1000000", job.to_str().unwrap()],
            |elapsed, _| {
                if first_new.is_none()
                    && stats_now(&sb)["requests_total"].as_u64().unwrap_or(0) > before
                {
                    first_new = Some(elapsed);
                }
            },
        )
    });
    table.push(format!(
        "| resume | {done_before} of {TOTAL} done (first run exit {:?}) | first new request after {} | whole resume {:.1} s | exit {:?} |",
        first.exit,
        first_new.map_or("never".into(), |d| format!("{:.2} s", d.as_secs_f64())),
        r.wall.as_secs_f64(),
        r.exit
    ));
    sb.shutdown().await;
}

/// Issue 17's mass cut-off: 40,000 emnify `disable-device` rows under the documented limits
/// (2,000 requests per 5 minutes per IP), in bulk; and a 2,000-row slice of it one request per
/// row (`--no-bulk`), whose time extrapolates to the whole job.
async fn bulk(table: &mut Vec<String>) {
    for (rows, args, case) in [
        (40_000u64, vec![], "bulk"),
        (2_000, vec!["--no-bulk"], "one request per row (--no-bulk)"),
    ] {
        let sb = sandbox(SandboxConfig {
            sims: 40_000,
            limits: LimitMode::Documented,
            ..SandboxConfig::default()
        })
        .await;
        let dir = workdir(&sb);
        let job = dir.path().join("job.csv");
        {
            let mut out = std::io::BufWriter::new(std::fs::File::create(&job).expect("job"));
            writeln!(out, "action,provider,iccid").unwrap();
            for i in 1..=rows {
                writeln!(
                    out,
                    "disable-device,emnify,{}",
                    inventory::iccid(EMNIFY_PREFIX, i)
                )
                .unwrap();
            }
        }
        let mut run_args = vec!["run"];
        run_args.extend(args);
        run_args.push(job.to_str().unwrap());
        let r = tokio::task::block_in_place(|| run(dir.path(), &run_args, |_, _| {}));
        let s = stats(&sb).await;
        let journal: Vec<Value> = reqwest::get(format!("{}/_sandbox/journal", sb.base_url()))
            .await
            .expect("journal")
            .text()
            .await
            .expect("journal text")
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let targets: std::collections::HashSet<&str> = journal
            .iter()
            .filter_map(|e| e["target"].as_str())
            .collect();
        let extrapolated = if rows < 40_000 {
            format!(
                "; 40,000 rows at this pace: {:.0} min",
                r.wall.as_secs_f64() * 40_000.0 / rows as f64 / 60.0
            )
        } else {
            String::new()
        };
        table.push(format!(
            "| bulk | emnify disable-device × {rows}, documented limits, {case} | {:.1} s{extrapolated} | {} 429s | {:.4} req/row ({} requests, {} bulk), journal {} changes of {} targets, exit {:?} |",
            r.wall.as_secs_f64(),
            s["too_many_requests"],
            requests(&r.summary) / rows as f64,
            requests(&r.summary),
            r.summary["bulk_requests"]["emnify"].as_u64().unwrap_or(0),
            journal.len(),
            targets.len(),
            r.exit
        ));
        sb.shutdown().await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let on = |name: &str| wanted.is_empty() || wanted.iter().any(|w| w == name);
    let mut table = vec![
        "| benchmark | case | result | | |".to_string(),
        "|---|---|---|---|---|".to_string(),
    ];
    if on("ceiling") {
        ceiling(&mut table).await;
    }
    if on("latency") {
        latency(&mut table).await;
    }
    if on("requests") {
        requests_per_row(&mut table).await;
    }
    if on("rss") {
        rss(&mut table).await;
    }
    if on("resume") {
        resume(&mut table).await;
    }
    if on("bulk") {
        bulk(&mut table).await;
    }
    // `fidelity` runs all three; `fidelity-telnyx` etc. one.
    if wanted.is_empty() || wanted.iter().any(|w| w.starts_with("fidelity")) {
        fidelity(&mut table, |p| {
            on("fidelity") || on(&format!("fidelity-{p}"))
        })
        .await;
    }
    println!("{}", table.join("\n"));
}
