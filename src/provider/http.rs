//! The HTTP plumbing every provider client shares: one reqwest client per provider (rustls,
//! pooled, with connect and request timeouts), the rate gate every request passes right before
//! it leaves (retries included), request counting, and the conversion of answers into bytes or
//! a classified [`ProviderError`]. Provider-specific error bodies are parsed by the caller.
//!
//! Two promises are kept here because every request passes here (SPEC 3.1): redirects are
//! never followed — emnify's token travels in a request body, and a redirect to another origin
//! would carry it there — but reported as an error naming the `Location`; and no answer is
//! buffered beyond a size cap ([`MAX_READ_BODY`] for reads, [`MAX_CHANGE_BODY`] for changes),
//! so that an endless or enormous body fails that request as a provider fault instead of the
//! process.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder, StatusCode};

use super::error::{from_transport, retry_after, ProviderError};
use super::limiter::RateGate;

/// A successful (2xx) answer.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
}

impl Answer {
    /// The body as `T`. A body that is cut short or of another shape "may mean applied" (see
    /// [`ProviderError::unexpected_body`]): the answer was a success.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, ProviderError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            ProviderError::unexpected_body(format!(
                "HTTP {} with an unexpected response body ({e}): {}",
                self.status.as_u16(),
                String::from_utf8_lossy(&self.body[..self.body.len().min(200)])
            ))
        })
    }
}

/// A non-2xx answer, for the provider to parse its own error body from.
#[derive(Debug)]
pub struct Refused {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
    /// No request of this account had succeeded when this answer came.
    pub nothing_worked: bool,
}

impl Refused {
    pub fn retry_after(&self) -> Option<Duration> {
        retry_after(&self.headers)
    }

    /// The error this answer is, with the provider's own `code` and `message` read from its
    /// body. A 403 refuses one resource (the row fails) — unless nothing of this account has
    /// worked yet: then the credentials lack the role the run needs, and the run stops rather
    /// than fail every row one by one.
    pub fn error(&self, code: Option<String>, message: String) -> ProviderError {
        let mut e =
            super::error::from_status(self.status.as_u16(), code, message, self.retry_after());
        if e.class == super::error::ErrorClass::Forbidden && self.nothing_worked {
            e.class = super::error::ErrorClass::Auth;
            e.message = format!(
                "{} (HTTP 403 before any request of this account succeeded: the credentials lack a role this needs)",
                e.message
            );
        }
        e
    }
}

/// The largest answer to a read: an inventory page (emnify's 2,500 SIMs, Twilio's 1,000,
/// Telnyx's 250) is a few megabytes at most.
pub const MAX_READ_BODY: usize = 16 << 20;
/// The largest answer to a change: one object, or a short list.
pub const MAX_CHANGE_BODY: usize = 1 << 20;

/// Timeouts: connecting should be quick; a whole request may take a while at a slow provider.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Http {
    client: reqwest::Client,
    pub base: String,
    /// `base` parsed once: each request's URL is this with its path and query set, which
    /// spares parsing (and IDNA-checking) the host again for every row (~6% of a run's CPU).
    base_url: url::Url,
    pub gate: Arc<RateGate>,
    requests: AtomicU64,
    /// Some request of this account succeeded (a 2xx came back).
    worked: std::sync::atomic::AtomicBool,
    /// Requests that never reached the provider (see [`Http::unreached`]).
    unreached: AtomicU64,
    /// Bulk requests (each counted in `requests` too).
    bulk: AtomicU64,
    /// Requests that failed on the way (connection, timeout, a cut body) or with a 5xx: each
    /// is retried, or its row ends `unknown` or `failed`.
    transient: AtomicU64,
    /// Requests in a row that never reached the provider (reset by any answer).
    unreached_streak: AtomicU64,
}

/// Requests that never reached the provider, with nothing of the account working, after which
/// it counts as unreachable and the run stops: a few rows' retries' worth (a refused connection
/// costs milliseconds), far fewer than the thousands a job would otherwise spend.
const UNREACHED_AFTER: u64 = 10;

/// Requests in a row that never reached a provider that had answered before, after which it
/// counts as gone (its port refuses connections, its name no longer resolves) and the run
/// stops, resumable: a lane's recent requests all failing so, not one bad connection.
const UNREACHED_IN_A_ROW: u64 = 10;

impl Http {
    pub fn new(
        base: &url::Url,
        gate: Arc<RateGate>,
        request_timeout: Duration,
    ) -> Result<Http, ProviderError> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(request_timeout)
            .pool_max_idle_per_host(512)
            .user_agent(concat!("simbatch/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ProviderError::permanent(format!("cannot build the HTTP client: {e}")))?;
        Ok(Http {
            client,
            base: base.as_str().trim_end_matches('/').to_string(),
            base_url: base.clone(),
            gate,
            requests: AtomicU64::new(0),
            worked: std::sync::atomic::AtomicBool::new(false),
            unreached: AtomicU64::new(0),
            bulk: AtomicU64::new(0),
            transient: AtomicU64::new(0),
            unreached_streak: AtomicU64::new(0),
        })
    }

    /// A request to `path` (which may carry a query) under the base URL.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let (path, query) = match path.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path, None),
        };
        let mut url = self.base_url.clone();
        url.set_path(&format!(
            "{}{path}",
            self.base_url.path().trim_end_matches('/')
        ));
        url.set_query(query);
        self.client.request(method, url)
    }

    /// The path (and query) to request for an absolute URL the provider handed back (a
    /// next-page link), always under the configured base: credentials never follow a link
    /// elsewhere. A link under `base_url` keeps its path; a link to another host — the
    /// provider's own behind an API gateway or egress proxy, where `base_url` is not the
    /// provider's host — is re-rooted: its path from the provider's `version` prefix (`/v1/`)
    /// on, and its query, under `base_url`.
    pub fn path_of(&self, url: &str, version: &str) -> Result<String, ProviderError> {
        if let Some(rest) = url
            .strip_prefix(self.base.as_str())
            .filter(|rest| rest.starts_with('/'))
        {
            return Ok(rest.to_string());
        }
        let unusable = || {
            ProviderError::permanent(format!(
                "the provider's next-page link {url} has no `{version}` path to follow under the configured base_url {}",
                self.base
            ))
        };
        let link = url::Url::parse(url).map_err(|_| unusable())?;
        let at = link.path().find(version).ok_or_else(unusable)?;
        let mut rest = link.path()[at..].to_string();
        if let Some(query) = link.query() {
            rest.push('?');
            rest.push_str(query);
        }
        Ok(rest)
    }

    /// Counts a bulk request (before it is sent).
    pub fn count_bulk(&self) {
        self.bulk.fetch_add(1, Ordering::Relaxed);
    }

    /// Bulk requests sent (or tried).
    pub fn bulk_requests(&self) -> u64 {
        self.bulk.load(Ordering::Relaxed)
    }

    /// Requests that failed on the way or with a 5xx (see `transient`).
    pub fn transient_failures(&self) -> u64 {
        self.transient.load(Ordering::Relaxed)
    }

    /// Requests sent so far (every attempt counts).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Waits for the rate gate, sends, and splits the answer into success and refusal.
    pub async fn send(
        &self,
        request: RequestBuilder,
    ) -> Result<Result<Answer, Refused>, ProviderError> {
        self.send_as(request, true).await
    }

    /// [`Http::send`] for a request that only obtains credentials (emnify's authenticate): its
    /// success says nothing of what the credentials may do, so it does not count as the
    /// account having worked.
    pub async fn send_for_credentials(
        &self,
        request: RequestBuilder,
    ) -> Result<Result<Answer, Refused>, ProviderError> {
        self.send_as(request, false).await
    }

    /// A transport failure; after [`UNREACHED_AFTER`] that never reached the provider while
    /// nothing of the account has worked, or [`UNREACHED_IN_A_ROW`] in a row after it had,
    /// the provider counts as unreachable.
    fn unreached(&self, mut e: ProviderError, never_reached: bool) -> ProviderError {
        if !never_reached {
            return e;
        }
        let streak = self.unreached_streak.fetch_add(1, Ordering::Relaxed) + 1;
        if !self.worked.load(Ordering::Relaxed) {
            let n = self.unreached.fetch_add(1, Ordering::Relaxed) + 1;
            if n >= UNREACHED_AFTER {
                e.class = super::error::ErrorClass::Unreachable;
                e.message = format!("{} ({n} attempts, none reached the provider)", e.message);
            }
        } else if streak >= UNREACHED_IN_A_ROW {
            e.class = super::error::ErrorClass::Unreachable;
            e.message = format!(
                "{} ({streak} attempts in a row reached nothing, after it had answered)",
                e.message
            );
        }
        e
    }

    async fn send_as(
        &self,
        request: RequestBuilder,
        counts: bool,
    ) -> Result<Result<Answer, Refused>, ProviderError> {
        let request = request.build().map_err(|e| from_transport(&e))?;
        let read = request.method() == Method::GET;
        let Some(ticket) = self.gate.acquire().await else {
            return Err(ProviderError::stopped());
        };
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut response = match self.client.execute(request).await {
            Ok(response) => response,
            Err(e) => {
                self.transient.fetch_add(1, Ordering::Relaxed);
                return Err(self.unreached(from_transport(&e), e.is_connect()));
            }
        };
        let status = response.status();
        self.unreached_streak.store(0, Ordering::Relaxed);
        if status.is_server_error() {
            self.transient.fetch_add(1, Ordering::Relaxed);
        }
        // Taken, not cloned: reading the body does not need them.
        let headers = std::mem::take(response.headers_mut());
        if status != StatusCode::TOO_MANY_REQUESTS {
            self.gate.observe(&ticket, &headers);
        }
        if status.is_success() {
            self.gate.eased();
        }
        if status.is_redirection() {
            return Err(redirected(status, &headers));
        }
        let cap = if read { MAX_READ_BODY } else { MAX_CHANGE_BODY };
        let body = read_capped(&mut response, cap, !read)
            .await
            .inspect_err(|_| {
                self.transient.fetch_add(1, Ordering::Relaxed);
            })?;
        if status == StatusCode::TOO_MANY_REQUESTS {
            self.gate.widen();
            match retry_after(&headers) {
                Some(after) => self.gate.slow_down(after),
                None => self.gate.back_off(),
            }
        }
        if status.is_success() && counts {
            self.worked.store(true, Ordering::Relaxed);
        }
        Ok(if status.is_success() {
            Ok(Answer {
                status,
                headers,
                body,
            })
        } else {
            Err(Refused {
                status,
                headers,
                body,
                nothing_worked: !self.worked.load(Ordering::Relaxed),
            })
        })
    }
}

/// A redirect, refused: its `Location` (without any query, which may carry tokens) is named
/// so that the operator can check it and point `base_url` there if it is trusted.
fn redirected(status: StatusCode, headers: &HeaderMap) -> ProviderError {
    let location = headers
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(|l| match url::Url::parse(l) {
            Ok(mut url) => {
                let _ = url.set_username("");
                let _ = url.set_password(None);
                url.set_query(None);
                url.set_fragment(None);
                url.to_string()
            }
            Err(_) => l.split(['?', '#']).next().unwrap_or_default().to_string(),
        })
        .unwrap_or_else(|| "(no Location)".into());
    let mut e = ProviderError::permanent(format!(
        "the provider answered with a redirect to {location}; simbatch never follows a redirect with credentials (if the provider moved, point base_url there)"
    ));
    e.http_status = Some(status.as_u16());
    e
}

/// Reads an answer's body, refusing it as a provider fault once it exceeds `cap` bytes (by its
/// announced length or as it arrives). `change`: the request was a change, which may have been
/// applied although its answer cannot be read.
async fn read_capped(
    response: &mut reqwest::Response,
    cap: usize,
    change: bool,
) -> Result<bytes::Bytes, ProviderError> {
    let too_large = || {
        let mut e = ProviderError::unexpected_body(format!(
            "the answer's body is larger than {} MiB; treated as a provider fault",
            cap >> 20
        ));
        e.maybe_applied = change;
        e
    };
    if response
        .content_length()
        .is_some_and(|len| len > cap as u64)
    {
        return Err(too_large());
    }
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| from_transport(&e))? {
        if body.len() + chunk.len() > cap {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::limiter::LaneLimits;

    #[test]
    fn next_page_links_are_always_followed_under_the_base() {
        let base = url::Url::parse("https://gateway.internal/twilio").unwrap();
        let limits = LaneLimits {
            rate: None,
            max_in_flight: None,
            window: None,
        };
        let http = Http::new(
            &base,
            Arc::new(RateGate::new(limits)),
            Duration::from_secs(5),
        )
        .unwrap();
        let path = |url: &str| http.path_of(url, "/v1/");
        assert_eq!(
            path("https://gateway.internal/twilio/v1/Sims?Page=1").unwrap(),
            "/v1/Sims?Page=1"
        );
        // Twilio's own host, as it names itself behind the gateway: same path and query.
        assert_eq!(
            path("https://supersim.twilio.com/v1/Sims?PageSize=1000&Page=1&PageToken=PT1000")
                .unwrap(),
            "/v1/Sims?PageSize=1000&Page=1&PageToken=PT1000"
        );
        // Credentials in a link, another scheme or port: only the path is ever used.
        assert_eq!(
            path("http://user:pw@evil.example:81/x/v1/Sims").unwrap(),
            "/v1/Sims"
        );
        assert!(path("https://supersim.twilio.com/Sims?Page=1").is_err());
        assert!(path("not a url").is_err());
    }

    /// Setting the path and query on the parsed base gives the URL that parsing the joined
    /// string gave.
    #[test]
    fn request_urls_are_the_base_joined_with_the_path() {
        let open = LaneLimits {
            rate: None,
            max_in_flight: None,
            window: None,
        };
        for base in [
            "http://127.0.0.1:8080/telnyx",
            "https://api.example.com/v1/",
        ] {
            let parsed = url::Url::parse(base).unwrap();
            let http = Http::new(
                &parsed,
                Arc::new(RateGate::new(open)),
                Duration::from_secs(1),
            )
            .unwrap();
            for path in [
                "/v2/sim_cards?filter[iccid]=89012600000000000013&page[size]=250",
                "/v1/Sims?Status=inactive&PageSize=1000&Page=1&PageToken=PAHS%3D00",
                "/api/v1/sim/7",
                "/v2/sim_card_actions?filter[status]=in-progress&page[number]=2&page[size]=250",
            ] {
                let built = http.request(Method::GET, path).build().unwrap();
                let joined = url::Url::parse(&format!("{}{path}", http.base)).unwrap();
                assert_eq!(built.url(), &joined, "{base} + {path}");
            }
        }
    }
}
