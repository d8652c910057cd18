//! `simbatch sandbox`: serves the provider stand-ins until Ctrl-C, printing
//! `listening on http://ADDR` as the first line of stdout.

use std::io::Write;

use crate::cli::SandboxArgs;
use crate::exit_code::ExitCode;
use crate::sandbox::{Faults, SandboxConfig};

impl SandboxArgs {
    pub fn config(&self) -> SandboxConfig {
        SandboxConfig {
            sims: self.sims,
            limits: self.limits,
            faults: Faults {
                latency: self.latency.unwrap_or_default(),
                error_rate: self.error_rate,
                timeout_rate: self.timeout_rate,
                reset_rate: self.reset_rate,
                fail_async: self.fail_async,
                interrupt_async: self.interrupt_async,
                hang: self.hang,
                no_retry_after: self.no_retry_after,
            },
            async_delay: self.async_delay,
            require_token: self.require_token.clone(),
            token_ttl: self.token_ttl,
            seed: self.seed,
            system_statuses: self.system_statuses,
            foreign_links: self.foreign_links,
            bulk_max_items: self.bulk_max_items,
            bulk_partial: self.bulk_partial,
            refused_endpoints: self.refuse_endpoint_updates.clone(),
        }
    }
}

pub fn run(args: &SandboxArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let sandbox = crate::sandbox::bind(args.listen, args.config())
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
        // One write, and a reader that closes the pipe after the first line (to learn the
        // address) must not stop the sandbox: errors on stdout are ignored.
        let banner = format!(
            "listening on {0}\nproviders: {0}/emnify {0}/twilio {0}/telnyx; {1} SIMs each; limits {2}; inspect {0}/_sandbox/journal, /_sandbox/stats\n",
            sandbox.base_url(),
            args.sims,
            args.limits
        );
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(banner.as_bytes()).and_then(|()| out.flush());
        drop(out);
        tokio::signal::ctrl_c().await?;
        eprintln!("simbatch sandbox: stopping");
        sandbox.shutdown().await;
        Ok(ExitCode::Success)
    })
}
