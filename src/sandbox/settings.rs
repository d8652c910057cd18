//! The sandbox's knobs (SPEC 6): inventory size, limit mode, faults, asynchronous delay and
//! authentication, with the parsers for their command-line forms (`scaled:K`, `100±20`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// How provider rate limits are enforced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LimitMode {
    /// The providers' documented limits (see `limits`).
    Documented,
    /// No limits at all.
    Off,
    /// Every documented limit multiplied by K, same shape (for fast tests).
    Scaled(f64),
}

impl FromStr for LimitMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "documented" => Ok(LimitMode::Documented),
            "off" => Ok(LimitMode::Off),
            _ => {
                let k = s
                    .strip_prefix("scaled:")
                    .and_then(|k| k.parse::<f64>().ok())
                    .filter(|k| k.is_finite() && *k > 0.0 && *k <= 10_000.0)
                    .ok_or_else(|| {
                        format!("`{s}`: expected documented, off or scaled:K with 0 < K <= 10000")
                    })?;
                Ok(LimitMode::Scaled(k))
            }
        }
    }
}

impl LimitMode {
    /// The factor applied to documented limits, or `None` when limits are off.
    pub fn factor(self) -> Option<f64> {
        match self {
            LimitMode::Documented => Some(1.0),
            LimitMode::Off => None,
            LimitMode::Scaled(k) => Some(k),
        }
    }
}

impl fmt::Display for LimitMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitMode::Documented => f.write_str("documented"),
            LimitMode::Off => f.write_str("off"),
            LimitMode::Scaled(k) => write!(f, "scaled:{k}"),
        }
    }
}

/// Added response latency: `MS` or `MS±JITTER` (also `MS+-JITTER`), uniformly distributed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Latency {
    pub base_ms: u64,
    pub jitter_ms: u64,
}

impl FromStr for Latency {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (base, jitter) = match s.split_once('±').or_else(|| s.split_once("+-")) {
            Some((b, j)) => (b, Some(j)),
            None => (s, None),
        };
        let parse = |v: &str| {
            v.trim()
                .trim_end_matches("ms")
                .parse::<u64>()
                .map_err(|_| format!("`{s}`: expected milliseconds like 100 or 100±20"))
        };
        let base_ms = parse(base)?;
        let jitter_ms = jitter.map(parse).transpose()?.unwrap_or(0);
        if base_ms > 600_000 {
            return Err(format!("`{s}`: at most 600000 ms (ten minutes)"));
        }
        if jitter_ms > base_ms {
            return Err(format!("`{s}`: jitter may not exceed the base latency"));
        }
        Ok(Latency { base_ms, jitter_ms })
    }
}

/// Injected faults. Rates are probabilities per provider request, 0.0..=1.0.
#[derive(Debug, Clone, PartialEq)]
pub struct Faults {
    pub latency: Latency,
    /// Answer 5xx without doing anything.
    pub error_rate: f64,
    /// Hang past any sane client timeout, then drop the connection, without doing anything.
    pub timeout_rate: f64,
    /// Drop the connection without a response: half of them before the request is handled,
    /// half after (the change applied, the client never told).
    pub reset_rate: f64,
    /// Asynchronous operations end failed instead of succeeding.
    pub fail_async: f64,
    /// Telnyx SIM card actions end `interrupted` (the SIM keeps its status), a terminal status
    /// of `SIMCardAction` in telnyx-wireless.json that the actions list cannot filter on.
    pub interrupt_async: f64,
    /// How long a "hang" lasts.
    pub hang: Duration,
    /// Answer 429 without `Retry-After` or rate-window headers (neither Twilio nor emnify
    /// documents a `Retry-After`; provider-apis.md 1.7 and 2.4).
    pub no_retry_after: bool,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            latency: Latency::default(),
            error_rate: 0.0,
            timeout_rate: 0.0,
            reset_rate: 0.0,
            fail_async: 0.0,
            interrupt_async: 0.0,
            hang: Duration::from_secs(120),
            no_retry_after: false,
        }
    }
}

/// Parses a probability given as `0.1` or `10%`.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let value = match s.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|v| v / 100.0),
        None => s.trim().parse::<f64>(),
    }
    .map_err(|_| format!("`{s}`: expected a probability like 0.1 or 10%"))?;
    if !(0.0..=1.0).contains(&value) {
        return Err(format!(
            "`{s}`: a probability must be between 0 and 1 (0% and 100%)"
        ));
    }
    Ok(value)
}

/// Everything the sandbox needs to start.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// SIMs per provider (Twilio and Telnyx have as many again, not yet registered).
    pub sims: u32,
    pub limits: LimitMode,
    pub faults: Faults,
    /// How long asynchronous changes take to settle.
    pub async_delay: Duration,
    /// When set, the only credential accepted (emnify application token, Twilio auth token,
    /// Telnyx API key); otherwise any non-empty credential works.
    pub require_token: Option<String>,
    /// Lifetime of emnify auth tokens (emnify documents 240 minutes).
    pub token_ttl: Duration,
    /// Seed of the fault dice, so that a faulty run can be repeated.
    pub seed: u64,
    /// Telnyx SIMs in the statuses Telnyx sets itself (see `inventory::telnyx_system_status`).
    pub system_statuses: bool,
    /// Next-page links carry the provider's own host instead of the request's, as they do
    /// behind an API gateway or an egress proxy (see `shared::link_origin`).
    pub foreign_links: bool,
    /// emnify's bulk requests (`PATCH /api/v2/endpoint/multi`, `DELETE /api/v1/sim/multi`):
    /// at most this many items in one (emnify documents 2,000 only for the bulk create; more
    /// is answered 422).
    pub bulk_max_items: usize,
    /// A bulk request with bad items applies the good ones and names the bad ones in its 422;
    /// otherwise (the default) one bad item fails the whole request and nothing is applied.
    /// emnify's document says neither.
    pub bulk_partial: bool,
    /// emnify endpoints whose updates are refused (422 "Status is invalid"), single or in bulk:
    /// the bad items of a bulk request, for tests.
    pub refused_endpoints: Vec<u64>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            sims: 10_000,
            limits: LimitMode::Documented,
            faults: Faults::default(),
            async_delay: Duration::from_millis(200),
            require_token: None,
            token_ttl: Duration::from_secs(240 * 60),
            seed: 0x5EED,
            system_statuses: false,
            foreign_links: false,
            bulk_max_items: 2_000,
            bulk_partial: false,
            refused_endpoints: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_modes() {
        assert_eq!("documented".parse(), Ok(LimitMode::Documented));
        assert_eq!("off".parse(), Ok(LimitMode::Off));
        assert_eq!("scaled:50".parse(), Ok(LimitMode::Scaled(50.0)));
        assert!("scaled:0".parse::<LimitMode>().is_err());
        assert!("fast".parse::<LimitMode>().is_err());
    }

    #[test]
    fn latency_forms() {
        assert_eq!(
            "100".parse(),
            Ok(Latency {
                base_ms: 100,
                jitter_ms: 0
            })
        );
        assert_eq!(
            "100±20".parse(),
            Ok(Latency {
                base_ms: 100,
                jitter_ms: 20
            })
        );
        assert_eq!(
            "100+-20".parse(),
            Ok(Latency {
                base_ms: 100,
                jitter_ms: 20
            })
        );
        assert!("10±20".parse::<Latency>().is_err());
        assert!("abc".parse::<Latency>().is_err());
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("10%"), Ok(0.1));
        assert_eq!(parse_rate("0.02"), Ok(0.02));
        assert!(parse_rate("2").is_err());
        assert!(parse_rate("x").is_err());
    }
}
