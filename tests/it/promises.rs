//! The promises of README "Guarantees" — nothing doubled, nothing lost, nothing leaked — tried
//! against what the happy-path suites do not foresee: a gateway in front of the provider, a job
//! file that changes under a run, a damaged state directory, hostile report paths and values,
//! absurd numbers. One test per case of the issue that found them (`case_NN_…`), each through
//! the real binary against the sandbox, or a small proxy in front of it (`proxy`).

use std::time::Duration;

use simbatch::sandbox::{LimitMode, SandboxConfig};

use crate::run_support::{show, RunEnv};

mod gateway;
mod inputs;
mod leaks;
mod reports;
mod state;

/// The sandbox these tests run against: `sims` SIMs per provider, limits off (the client's own
/// documented limits still apply), changes settling in 50 ms.
fn sandbox(sims: u32) -> SandboxConfig {
    SandboxConfig {
        sims,
        limits: LimitMode::Off,
        async_delay: Duration::from_millis(50),
        ..SandboxConfig::default()
    }
}

/// `action` on `provider`'s SIMs `numbers` (under `prefix`), as a job file.
fn job_of(
    action: &str,
    provider: &str,
    prefix: &str,
    numbers: impl IntoIterator<Item = u64>,
) -> String {
    let mut job = String::from("action,provider,iccid\n");
    for i in numbers {
        job.push_str(&format!(
            "{action},{provider},{}\n",
            simbatch::sandbox::inventory::iccid(prefix, i)
        ));
    }
    job
}

/// The first `n` SIM numbers that start active (every tenth starts suspended).
fn active(n: usize) -> impl Iterator<Item = u64> {
    (1..)
        .filter(|i| !simbatch::sandbox::inventory::starts_suspended(*i))
        .take(n)
}

/// A proxy with `rule` in front of `env`'s sandbox, and `env`'s config pointed at it.
async fn behind_proxy(env: &RunEnv, rule: crate::proxy::Rule) -> crate::proxy::Proxy {
    let proxy = crate::proxy::Proxy::start(env.sb.base.clone(), rule).await;
    env.point_at(&proxy.base);
    proxy
}

/// Runs `args` and checks that it is refused with exit 2 and a message holding `needle`.
async fn refused(env: &RunEnv, args: &[&str], needle: &str) {
    let output = env.run(args).await;
    let text = show(&output);
    assert_eq!(output.status.code(), Some(2), "{args:?}: {text}");
    assert!(text.contains(needle), "{args:?}: `{needle}` not in {text}");
    assert!(!text.contains("panicked"), "{args:?}: {text}");
}
