//! A lane per configured provider a job uses: its limits (documented, `simbatch.toml` tuning,
//! `--rate`), its HTTP client and rate gate, its credentials (read from the environment, or
//! given in code), its workers. `run`, `plan` and `export` all build lanes here.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail};

use super::request::Credentials;
use crate::config::{ProviderConfig, Providers};
use crate::defaults;
use crate::pipeline::lane::Lane;
use crate::provider::http::{Http, REQUEST_TIMEOUT};
use crate::provider::limiter::{LaneLimits, RateGate};
use crate::provider::registry::{connect, provider_of, Secret};
use crate::provider::CredentialEnv;

/// What shapes a lane besides its provider's configuration.
#[derive(Clone)]
pub struct LaneSettings {
    /// `--rate`: requests per second, replacing the documented rate.
    pub rate: Option<f64>,
    /// `--concurrency`: rows in flight.
    pub concurrency: Option<usize>,
    pub credentials: Credentials,
}

/// The request latency the default worker count hides at the lane's full rate.
pub const LATENCY_TO_HIDE: Duration = Duration::from_millis(250);
/// The most workers a lane gets by default (`--concurrency` may set more).
const MAX_DEFAULT_CONCURRENCY: usize = 1024;

/// Builds a provider's lane.
pub fn build_lane(config: &ProviderConfig, settings: &LaneSettings) -> anyhow::Result<Lane> {
    let mut limits = provider_of(config.kind).documented_limits();
    if let Some(rate) = config.tuning.rate {
        limits = limits.with_rate(rate);
    }
    if let Some(cap) = config.tuning.max_in_flight {
        limits.max_in_flight = Some(cap);
    }
    if let Some(rate) = settings.rate {
        if !(rate.is_finite() && rate > 0.0) {
            bail!("--rate must be a positive number of requests per second");
        }
        limits = limits.with_rate(rate);
    }
    let gate = Arc::new(RateGate::new(limits));
    let http = Http::new(&config.base_url, gate, REQUEST_TIMEOUT)
        .map_err(|e| anyhow!("provider `{}`: {e}", config.name))?;
    let secret = read_secret(config, &settings.credentials)?;
    let account = connect(config.kind, http, secret).ok_or_else(|| {
        anyhow!(
            "provider `{}`: credentials do not match its kind",
            config.name
        )
    })?;
    Ok(Lane {
        name: config.name.clone(),
        account,
        concurrency: settings
            .concurrency
            .or(config.tuning.concurrency)
            .unwrap_or_else(|| default_concurrency(&limits)),
        listing: Default::default(),
        limits,
    })
}

/// The lanes of the providers `names` (as validated: every name is configured).
pub fn build_lanes<'a>(
    providers: &Providers,
    names: impl Iterator<Item = &'a str>,
    settings: &LaneSettings,
) -> anyhow::Result<BTreeMap<String, Arc<Lane>>> {
    let mut lanes = BTreeMap::new();
    for name in names {
        if !lanes.contains_key(name) {
            let config = providers
                .get(name)
                .expect("validation checked provider names");
            lanes.insert(name.to_string(), Arc::new(build_lane(config, settings)?));
        }
    }
    Ok(lanes)
}

/// An account's credentials, read where `credentials` says.
fn read_secret(config: &ProviderConfig, credentials: &Credentials) -> anyhow::Result<Secret> {
    let name = &config.name;
    Ok(match &config.credentials {
        CredentialEnv::Token(var) => Secret::Token(secret(credentials, name, var)?),
        CredentialEnv::Basic { username, password } => match credentials {
            Credentials::Environment => Secret::Basic(
                secret(credentials, name, username)?,
                secret(credentials, name, password)?,
            ),
            Credentials::Given(_) => {
                let both = secret(credentials, name, "credentials")?;
                let (u, p) = both.split_once(':').ok_or_else(|| {
                    anyhow!("provider `{name}`: give its credentials as USER:PASSWORD")
                })?;
                Secret::Basic(u.to_string(), p.to_string())
            }
        },
    })
}

fn secret(credentials: &Credentials, provider: &str, var: &str) -> anyhow::Result<String> {
    let value = match credentials {
        Credentials::Environment => std::env::var(var).ok(),
        Credentials::Given(map) => map.get(provider).cloned(),
    };
    match value {
        // A credential travels in an HTTP header: a line break or other control character
        // would fail every request of the run (the value is never echoed).
        Some(v) if v.chars().any(char::is_control) => bail!(
            "provider `{provider}`: the value of {var} holds a control character (a line break?); a credential cannot — check how the variable was set"
        ),
        Some(v) if !v.trim().is_empty() => Ok(v),
        _ => bail!("provider `{provider}`: set the environment variable {var} (credentials are read only from the environment)"),
    }
}

/// Workers of a lane when neither `--concurrency` nor the config says: enough to keep the
/// lane's limit busy while each request takes up to [`LATENCY_TO_HIDE`].
pub fn default_concurrency(limits: &LaneLimits) -> usize {
    match (limits.max_in_flight, limits.rate) {
        // Under an in-flight cap (Twilio), twice as many workers as slots: a row's own work
        // around its request (checkpoint marker, parsing) then overlaps other rows' requests
        // and the cap stays full (measured: 111.6 ms per row with 100 workers and 100 ms
        // latency; 2x workers reach the cap's bound).
        (Some(cap), _) => 2 * cap,
        // At a rate R, R × latency requests are in flight on average: 500/s at 100 ms ± 20 ms
        // needs ~60 (measured: 32 workers reached 64% of 500/s).
        (None, Some((rate, _))) => ((rate * LATENCY_TO_HIDE.as_secs_f64()).ceil() as usize)
            .clamp(defaults::CONCURRENCY, MAX_DEFAULT_CONCURRENCY),
        (None, None) => defaults::CONCURRENCY,
    }
}
