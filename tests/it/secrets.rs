//! Credentials never leak: a run at the highest verbosity with distinctive credentials, then
//! every artefact — stdout, stderr, reports, the state directory — is searched for them. Reports
//! and state are readable by their owner only.

use std::path::Path;
use std::time::Duration;

use simbatch::sandbox::inventory::{self, EMNIFY_PREFIX, TELNYX_PREFIX, TWILIO_PREFIX};
use simbatch::sandbox::{LimitMode, SandboxConfig};

use crate::run_support::{show, RunEnv};
use crate::support::{contains, files_under};

const SECRET: &str = "S3cr3t-Credential-0f-Test";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_appear_in_no_artefact() {
    let env = RunEnv::new(SandboxConfig {
        sims: 100,
        limits: LimitMode::Off,
        async_delay: Duration::from_millis(50),
        ..SandboxConfig::default()
    })
    .await;
    let mut job = String::from("action,provider,iccid\n");
    for i in 1..=60 {
        job.push_str(&format!(
            "suspend,emnify,{}\n",
            inventory::iccid(EMNIFY_PREFIX, i)
        ));
        job.push_str(&format!(
            "suspend,twilio,{}\n",
            inventory::iccid(TWILIO_PREFIX, i)
        ));
        job.push_str(&format!(
            "suspend,telnyx,{}\n",
            inventory::iccid(TELNYX_PREFIX, i)
        ));
    }
    job.push_str(&format!(
        "activate,twilio,{}\n",
        inventory::iccid(TWILIO_PREFIX, 150)
    )); // fails: error paths too
    let path = env.write_job("job.csv", &job);
    let output = env
        .run_with_token(
            &["run", "-vvv", "--rate", "2000", path.to_str().unwrap()],
            SECRET,
        )
        .await;
    assert_eq!(output.status.code(), Some(1), "{}", show(&output));
    assert!(output.stderr.len() > 1000, "-vvv logs plenty");
    assert!(
        !contains(&output.stdout, SECRET.as_bytes())
            && !contains(&output.stderr, SECRET.as_bytes()),
        "a credential was printed"
    );

    let mut files = Vec::new();
    files_under(&env.dir.path().join("reports"), &mut files);
    files_under(&env.dir.path().join(".simbatch"), &mut files);
    assert!(files.len() > 5);
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        assert!(
            !contains(&bytes, SECRET.as_bytes()),
            "a credential is in {}",
            file.display()
        );
    }

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let reports = env.report_dir();
        assert_eq!(mode(&reports), 0o700, "reports directory");
        for name in [
            "results.csv",
            "failed.csv",
            "pending.csv",
            "revert.csv",
            "summary.json",
        ] {
            assert_eq!(mode(&reports.join(name)), 0o600, "{name}");
        }
        assert_eq!(
            mode(&env.dir.path().join(".simbatch")),
            0o700,
            "state directory"
        );
    }
}
