//! The HTTP plumbing every provider client shares: one reqwest client per provider (rustls,
//! pooled, with connect and request timeouts), the rate gate every request passes right before
//! it leaves (retries included), request counting, and the conversion of answers into bytes or
//! a classified [`ProviderError`]. Provider-specific error bodies are parsed by the caller.

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
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, ProviderError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            ProviderError::permanent(format!(
                "unexpected response body ({e}): {}",
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
}

impl Refused {
    pub fn retry_after(&self) -> Option<Duration> {
        retry_after(&self.headers)
    }
}

/// Timeouts: connecting should be quick; a whole request may take a while at a slow provider.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Http {
    client: reqwest::Client,
    pub base: String,
    pub gate: Arc<RateGate>,
    requests: AtomicU64,
}

impl Http {
    pub fn new(
        base: &url::Url,
        gate: Arc<RateGate>,
        request_timeout: Duration,
    ) -> Result<Http, ProviderError> {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(request_timeout)
            .pool_max_idle_per_host(512)
            .user_agent(concat!("simbatch/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ProviderError::permanent(format!("cannot build the HTTP client: {e}")))?;
        Ok(Http {
            client,
            base: base.as_str().trim_end_matches('/').to_string(),
            gate,
            requests: AtomicU64::new(0),
        })
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, format!("{}{path}", self.base))
    }

    /// The path of an absolute URL the provider handed back (a next-page link), refusing any
    /// URL outside the configured base: credentials must never follow a link elsewhere.
    pub fn path_of<'a>(&self, url: &'a str) -> Result<&'a str, ProviderError> {
        url.strip_prefix(self.base.as_str())
            .filter(|rest| rest.starts_with('/'))
            .ok_or_else(|| {
                ProviderError::permanent(format!(
                    "the provider's next-page link {url} points outside the configured base_url {}",
                    self.base
                ))
            })
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
        let ticket = self.gate.acquire().await;
        self.requests.fetch_add(1, Ordering::Relaxed);
        let response = request.send().await.map_err(|e| from_transport(&e))?;
        let status = response.status();
        let headers = response.headers().clone();
        if status != StatusCode::TOO_MANY_REQUESTS {
            self.gate.observe(&ticket, &headers);
        }
        let body = response.bytes().await.map_err(|e| from_transport(&e))?;
        if status == StatusCode::TOO_MANY_REQUESTS {
            self.gate
                .slow_down(retry_after(&headers).unwrap_or(Duration::from_secs(1)));
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
            })
        })
    }
}
