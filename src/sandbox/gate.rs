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
use super::shared::{Shared, StandIn};

type HttpResponse = Response<axum::body::Body>;

/// Marks a response whose connection must be dropped instead of answered (the server does it).
#[derive(Debug, Clone, Copy)]
pub struct DropConnection;

/// Puts the gate in front of a provider's routes.
pub fn wrap(
    router: Router<Arc<Shared>>,
    stand_in: Arc<dyn StandIn>,
    shared: Arc<Shared>,
) -> Router<Arc<Shared>> {
    let (fallback_shared, fallback_stand_in) = (shared.clone(), stand_in.clone());
    router
        .route_layer(middleware::from_fn(move |req: Request, next: Next| {
            gate(shared.clone(), stand_in.clone(), req, next)
        }))
        .fallback(move |req: Request| {
            let (shared, stand_in) = (fallback_shared.clone(), fallback_stand_in.clone());
            async move {
                let response = stand_in.not_found(req.uri().path());
                shared.stats.count(
                    stand_in.name(),
                    format!("{} (unknown path)", req.method()),
                    response.status().as_u16(),
                );
                response
            }
        })
}

fn too_many(stand_in: &dyn StandIn, refusal: &Refusal, silent: bool) -> HttpResponse {
    let mut response = stand_in.too_many_requests();
    if silent {
        return response;
    }
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

async fn gate(
    shared: Arc<Shared>,
    stand_in: Arc<dyn StandIn>,
    req: Request,
    next: Next,
) -> HttpResponse {
    let _in_flight = shared.stats.enter();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| req.uri().path().to_string(), |m| m.as_str().to_string());
    let label = format!("{} {route}", req.method());
    let _route_in_flight = shared
        .stats
        .enter_route(format!("{} {label}", stand_in.name()));
    let response = guarded(&shared, stand_in.as_ref(), &route, req, next).await;
    shared
        .stats
        .count(stand_in.name(), label, response.status().as_u16());
    response
}

async fn guarded(
    shared: &Shared,
    stand_in: &dyn StandIn,
    route: &str,
    req: Request,
    next: Next,
) -> HttpResponse {
    let limits = shared.limits();
    let mut window = None;
    let mut _release = Release(None);
    if let Some(limits) = &limits {
        // The matched route includes the provider's prefix; its limits know it without.
        let prefix = format!("/{}", stand_in.name());
        let local = route.strip_prefix(&prefix).unwrap_or(route);
        match stand_in.admit(limits, req.method(), local, Instant::now()) {
            Ok(admitted) => {
                window = admitted.window;
                _release = Release(admitted.in_flight);
            }
            Err(refusal) => {
                return too_many(stand_in, &refusal, shared.config.faults.no_retry_after)
            }
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

    if let Err(response) = stand_in.authorize(shared, route, req.headers()) {
        return response;
    }

    let faults = &shared.config.faults;
    if shared.roll(faults.error_rate) {
        shared.stats.fault("error");
        return stand_in.server_error();
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
