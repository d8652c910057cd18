//! What stands in front of every provider route, in order: request statistics, the provider's
//! rate limits (answered with its own 429 and `Retry-After`), latency, authentication, and the
//! injected faults. Faults never change state: a 5xx or a hang happens before the handler runs;
//! a reset happens before it or, for half of them, after it (the change applied, the answer lost).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, Response, StatusCode};
use axum::middleware::{self, Next};
use axum::response::IntoResponse;
use axum::Router;

use super::limits::{Refusal, WindowState};
use super::server::{DropConnection, Shared};
use super::{emnify, telnyx, twilio};
use crate::job::ProviderKind;

type HttpResponse = Response<axum::body::Body>;

/// Puts the gate in front of a provider's routes.
pub fn wrap(
    router: Router<Arc<Shared>>,
    kind: ProviderKind,
    shared: Arc<Shared>,
) -> Router<Arc<Shared>> {
    let fallback_shared = shared.clone();
    router
        .route_layer(middleware::from_fn(move |req: Request, next: Next| {
            gate(shared.clone(), kind, req, next)
        }))
        .fallback(move |req: Request| {
            let shared = fallback_shared.clone();
            async move {
                let response = not_found(kind, req.uri().path());
                shared.stats.count(
                    kind.name(),
                    format!("{} (unknown path)", req.method()),
                    response.status().as_u16(),
                );
                response
            }
        })
}

fn not_found(kind: ProviderKind, path: &str) -> HttpResponse {
    match kind {
        ProviderKind::Emnify => emnify::error(
            StatusCode::NOT_FOUND,
            1201,
            "NotFound",
            format!("No resource at {path}"),
        ),
        ProviderKind::Twilio => twilio::error(
            StatusCode::NOT_FOUND,
            20404,
            format!("The requested resource {path} was not found"),
        ),
        ProviderKind::Telnyx => telnyx::error(
            StatusCode::NOT_FOUND,
            "10005",
            "Resource not found",
            format!("No resource at {path}"),
        ),
    }
}

fn too_many(kind: ProviderKind, refusal: &Refusal) -> HttpResponse {
    let mut response = match kind {
        ProviderKind::Emnify => emnify::too_many_requests(),
        ProviderKind::Twilio => twilio::too_many_requests(),
        ProviderKind::Telnyx => telnyx::too_many_requests(),
    };
    let seconds = refusal.retry_after.as_secs_f64().ceil().max(1.0) as u64;
    response
        .headers_mut()
        .insert("retry-after", HeaderValue::from(seconds));
    if let Some(window) = refusal.window {
        set_window_headers(&mut response, window);
    }
    response
}

fn set_window_headers(response: &mut HttpResponse, window: WindowState) {
    let h = response.headers_mut();
    h.insert("x-ratelimit-limit", HeaderValue::from(window.limit));
    h.insert("x-ratelimit-remaining", HeaderValue::from(window.remaining));
    h.insert(
        "x-ratelimit-reset",
        HeaderValue::from(window.reset.as_secs_f64().ceil() as u64),
    );
}

/// Releases an in-flight admission when the request ends, however it ends.
struct Release<'a>(Option<&'a super::limits::Limiter>);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        if let Some(l) = self.0 {
            l.release();
        }
    }
}

async fn gate(shared: Arc<Shared>, kind: ProviderKind, req: Request, next: Next) -> HttpResponse {
    let _in_flight = shared.stats.enter();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| req.uri().path().to_string(), |m| m.as_str().to_string());
    let label = format!("{} {route}", req.method());
    let response = guarded(&shared, kind, &route, req, next).await;
    shared
        .stats
        .count(kind.name(), label, response.status().as_u16());
    response
}

async fn guarded(
    shared: &Shared,
    kind: ProviderKind,
    route: &str,
    req: Request,
    next: Next,
) -> HttpResponse {
    let limits = shared.limits();
    let mut window = None;
    let mut _release = Release(None);
    if let Some(limits) = &limits {
        let now = Instant::now();
        let admitted = match kind {
            ProviderKind::Emnify => {
                let local = route.strip_prefix("/emnify").unwrap_or(route);
                limits.emnify.per_ip.admit(now).and_then(|_| {
                    match limits.emnify.for_route(req.method(), local) {
                        Some(l) => l.admit(now),
                        None => Ok(None),
                    }
                })
            }
            ProviderKind::Twilio => limits
                .twilio_in_flight
                .admit(now)
                .inspect(|_| _release = Release(Some(&limits.twilio_in_flight))),
            ProviderKind::Telnyx => limits.telnyx.admit(now),
        };
        match admitted {
            Ok(w) => window = w,
            Err(refusal) => return too_many(kind, &refusal),
        }
    }

    let latency = shared.config.faults.latency;
    if latency.base_ms > 0 {
        let jitter = if latency.jitter_ms > 0 {
            shared.uniform(2 * latency.jitter_ms) as i64 - latency.jitter_ms as i64
        } else {
            0
        };
        tokio::time::sleep(Duration::from_millis(
            (latency.base_ms as i64 + jitter).max(0) as u64,
        ))
        .await;
    }

    let auth = match kind {
        ProviderKind::Emnify if route.ends_with("/api/v1/authenticate") => Ok(()),
        ProviderKind::Emnify => shared.emnify_auth.check(req.headers()),
        ProviderKind::Twilio => {
            twilio::check_auth(req.headers(), shared.config.require_token.as_deref())
        }
        ProviderKind::Telnyx => {
            telnyx::check_auth(req.headers(), shared.config.require_token.as_deref())
        }
    };
    if let Err(response) = auth {
        return response;
    }

    let faults = &shared.config.faults;
    if shared.roll(faults.error_rate) {
        shared.stats.fault("error");
        return match kind {
            ProviderKind::Emnify => emnify::server_error(),
            ProviderKind::Twilio => twilio::server_error(),
            ProviderKind::Telnyx => telnyx::server_error(),
        };
    }
    if shared.roll(faults.timeout_rate) {
        shared.stats.fault("hang");
        tokio::time::sleep(faults.hang).await;
        return dropped();
    }
    let reset_after = if shared.roll(faults.reset_rate) {
        if shared.roll(0.5) {
            shared.stats.fault("reset_before");
            return dropped();
        }
        true
    } else {
        false
    };

    let mut response = next.run(req).await;
    if reset_after {
        shared.stats.fault("reset_after");
        return dropped();
    }
    if let Some(w) = window {
        set_window_headers(&mut response, w);
    }
    response
}

fn dropped() -> HttpResponse {
    let mut response = StatusCode::SERVICE_UNAVAILABLE.into_response();
    response.extensions_mut().insert(DropConnection);
    response
}
