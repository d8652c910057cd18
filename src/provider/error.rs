//! How a provider call failed, classified for the pipeline: retry it (transient, rate-limited),
//! stop the run (auth), record it against the row (permanent) with the provider's own code and
//! message, or leave the row for the next run (the run is stopping). Also whether a change
//! request may have been applied although its answer says otherwise or never came (SPEC 3.1,
//! "an answer that may mean applied"): a lost connection, a timeout, any 5xx (gateways answer
//! 502/503/504 after the provider applied the change), a 2xx whose body is cut or of another
//! shape. The pipeline reads the target back before it sends such a change again.

use std::fmt;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Connection errors, timeouts, 5xx: retry with backoff.
    Transient,
    /// 429: retry after the provider's `Retry-After` (or reset header), slowing the whole lane.
    RateLimited,
    /// 401 (and a 403 before anything of the account succeeded: credentials without the role
    /// a run needs): abort the run; thousands of doomed requests help nobody.
    Auth,
    /// 403 once the account has worked: this resource may not be changed by this account (a
    /// reseller deleting a SIM it sold, an endpoint it may not update); final for this row.
    Forbidden,
    /// Any other 4xx: final for this row.
    Permanent,
    /// The provider cannot be reached at all: every request of the account so far failed
    /// before reaching it (connection refused, DNS, TLS). Stops the run like [`ErrorClass::Auth`]
    /// — thousands of doomed attempts help nobody — and the rows stay for the next run.
    Unreachable,
    /// Not sent: the run is stopping (Ctrl-C, `--until`, the window's close, the failure
    /// threshold) and no request may leave any more. The row stays for the next run.
    Stopped,
}

#[derive(Debug, Clone)]
pub struct ProviderError {
    pub class: ErrorClass,
    pub http_status: Option<u16>,
    /// The provider's own error code (emnify `error_code`, Twilio `code`, Telnyx `code`).
    pub code: Option<String>,
    pub message: String,
    pub retry_after: Option<Duration>,
    /// The request may have been applied although its answer says otherwise or never came
    /// (reset, timeout, 5xx, a 2xx body that cannot be read).
    pub maybe_applied: bool,
    /// The target's state as the failed call left it, when that is neither its state before
    /// nor the one asked for (an emnify device left without its SIM by a refused delete); it
    /// becomes the row's `after`, and `revert.csv` undoes it.
    pub left: Option<String>,
}

impl ProviderError {
    /// Whether this error stops the whole run (credentials refused, provider unreachable),
    /// not just its row.
    pub fn stops_run(&self) -> bool {
        matches!(self.class, ErrorClass::Auth | ErrorClass::Unreachable)
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        ProviderError {
            class: ErrorClass::Permanent,
            http_status: None,
            code: None,
            message: message.into(),
            retry_after: None,
            maybe_applied: false,
            left: None,
        }
    }

    /// A 2xx answer whose body is cut short or not of the expected shape: whatever the request
    /// was meant to do was most likely done, so it counts as "may be applied", and is retried
    /// like a lost answer.
    pub fn unexpected_body(message: impl Into<String>) -> Self {
        ProviderError {
            class: ErrorClass::Transient,
            http_status: None,
            code: None,
            message: super::redact::clean(&message.into()),
            retry_after: None,
            maybe_applied: true,
            left: None,
        }
    }

    /// The request was not sent because the run is stopping.
    pub fn stopped() -> Self {
        ProviderError {
            class: ErrorClass::Stopped,
            http_status: None,
            code: None,
            message: "not sent: the run is stopping".into(),
            retry_after: None,
            maybe_applied: false,
            left: None,
        }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self.class, ErrorClass::Transient | ErrorClass::RateLimited)
    }
}

impl fmt::Display for ProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(status) = self.http_status {
            write!(f, "HTTP {status}")?;
            if let Some(code) = &self.code {
                write!(f, " ({code})")?;
            }
            write!(f, ": ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ProviderError {}

/// A header's value as a number, if it is one.
pub fn header_number<T: std::str::FromStr>(
    headers: &reqwest::header::HeaderMap,
    name: &str,
) -> Option<T> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// Parses `Retry-After` in seconds (HTTP dates are rare from these providers and are ignored).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let seconds = |name: &str| header_number::<f64>(headers, name);
    seconds("retry-after-ms")
        .map(|ms| ms / 1000.0)
        .or_else(|| seconds("retry-after"))
        .or_else(|| seconds("x-ratelimit-reset"))
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(300.0)))
}

/// Classifies a non-success HTTP answer given the provider's parsed code and message.
pub fn from_status(
    status: u16,
    code: Option<String>,
    message: String,
    retry_after: Option<Duration>,
) -> ProviderError {
    let class = match status {
        429 => ErrorClass::RateLimited,
        401 => ErrorClass::Auth,
        403 => ErrorClass::Forbidden,
        408 | 500..=599 => ErrorClass::Transient,
        _ => ErrorClass::Permanent,
    };
    ProviderError {
        class,
        http_status: Some(status),
        code: code.map(|c| super::redact::clean(&c)),
        message: super::redact::clean(&message),
        retry_after,
        // A 5xx may come from a gateway after the provider applied the change; 408 and 429
        // say the request was not processed.
        maybe_applied: (500..=599).contains(&status),
        left: None,
    }
}

/// Classifies a transport failure: refused connections never reached the provider; anything
/// after the request started may have.
pub fn from_transport(err: &reqwest::Error) -> ProviderError {
    let maybe_applied = !err.is_connect() && !err.is_builder();
    let message = if err.is_timeout() {
        "request timed out".to_string()
    } else if err.is_connect() {
        format!("cannot connect: {}", super::redact::clean(&root_cause(err)))
    } else {
        format!(
            "connection failed: {}",
            super::redact::clean(&root_cause(err))
        )
    };
    ProviderError {
        class: ErrorClass::Transient,
        http_status: None,
        code: None,
        message,
        retry_after: None,
        maybe_applied,
        left: None,
    }
}

fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_by_status() {
        assert_eq!(
            from_status(429, None, String::new(), None).class,
            ErrorClass::RateLimited
        );
        assert_eq!(
            from_status(401, None, String::new(), None).class,
            ErrorClass::Auth
        );
        let gateway = from_status(503, None, String::new(), None);
        assert_eq!(gateway.class, ErrorClass::Transient);
        assert!(gateway.maybe_applied, "a 5xx may follow an applied change");
        assert!(!from_status(429, None, String::new(), None).maybe_applied);
        assert!(!from_status(409, None, String::new(), None).maybe_applied);
        assert_eq!(
            from_status(409, Some("1406".into()), "no".into(), None).class,
            ErrorClass::Permanent
        );
        assert_eq!(
            from_status(409, Some("1406".into()), "no".into(), None).to_string(),
            "HTTP 409 (1406): no"
        );
    }

    #[test]
    fn retry_after_headers() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("x-ratelimit-reset", "2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert("retry-after", "1".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(1)));
        h.insert("retry-after-ms", "250".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_millis(250)));
    }
}
