//! Using simbatch as a library: start the sandbox in-process, describe providers and
//! credentials in code, run a job and read its outcome — the same path `simbatch run` takes.
//!
//! ```text
//! cargo run --example run_against_sandbox
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use simbatch::config::Providers;
use simbatch::job::{ParseOptions, ProviderKind};
use simbatch::run::{run_job, Credentials, RunRequest};
use simbatch::sandbox::inventory::{self, TELNYX_PREFIX};
use simbatch::sandbox::{LimitMode, SandboxConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // A sandbox with 100 SIMs per provider and no limits, on a free loopback port.
    let config = SandboxConfig {
        sims: 100,
        limits: LimitMode::Off,
        ..SandboxConfig::default()
    };
    let sandbox = simbatch::sandbox::bind("127.0.0.1:0".parse()?, config).await?;

    // Point the default `telnyx` provider at it.
    let mut providers = Providers::default();
    let mut telnyx = providers.get("telnyx").expect("a default provider").clone();
    telnyx.base_url = url::Url::parse(&format!("{}/telnyx", sandbox.base_url()))?;
    providers.insert(telnyx);

    // A job: put five Telnyx SIMs on standby.
    let dir = tempfile::tempdir()?;
    let job = dir.path().join("standby.csv");
    let mut rows = String::from("action,provider,iccid\n");
    for i in 1..=5 {
        rows.push_str(&format!(
            "standby,telnyx,{}\n",
            inventory::iccid(TELNYX_PREFIX, i)
        ));
    }
    std::fs::write(&job, rows)?;

    let parse = ParseOptions {
        providers,
        ..ParseOptions::default()
    };
    let request = RunRequest {
        state: dir.path().join("state"),
        reports: Some(dir.path().join("reports")),
        credentials: Credentials::Given(BTreeMap::from([(
            ProviderKind::Telnyx.name().to_string(),
            "example-key".to_string(),
        )])),
        quiet: true,
        ..RunRequest::new(PathBuf::from(&job), parse)
    };
    let outcome = run_job(request).await?;
    let summary = outcome.summary.expect("the run started");
    println!(
        "exit code {:?}; outcomes {}",
        outcome.exit, summary["outcomes"]
    );
    println!(
        "the sandbox journal shows {} changes",
        sandbox.shared.journal.entries().len()
    );
    sandbox.shutdown().await;
    Ok(())
}
