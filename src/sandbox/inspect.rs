//! The sandbox's own endpoints under `/_sandbox` (not part of any provider's API):
//! `GET /journal` (JSON lines of applied changes), `GET /stats` (requests, 429s, peaks per
//! limiter window), `POST /reset` (back to the initial inventory).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use super::shared::Shared;

async fn journal(State(shared): State<Arc<Shared>>) -> Response {
    // Settle due asynchronous work first, so the journal shows every change applied by now.
    shared.settle_all();
    let mut body = String::new();
    for entry in shared.journal.entries() {
        body.push_str(&serde_json::to_string(&entry).expect("journal entries serialize"));
        body.push('\n');
    }
    ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}

async fn stats(State(shared): State<Arc<Shared>>) -> Response {
    let snapshot = shared.stats.snapshot();
    let limiters = shared.limits().map(|l| l.stats()).unwrap_or_default();
    Json(json!({
        "limits": shared.config.limits.to_string(),
        "requests_total": snapshot.requests_total,
        "per_provider": snapshot.per_provider,
        "requests": snapshot.requests,
        "too_many_requests": snapshot.too_many_requests,
        "peak_in_flight": snapshot.peak_in_flight,
        "peak_in_flight_by_route": snapshot.peak_in_flight_by_route,
        "faults": snapshot.faults,
        "limiters": limiters,
    }))
    .into_response()
}

async fn reset(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.reset();
    StatusCode::NO_CONTENT
}

pub fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/journal", get(journal))
        .route("/stats", get(stats))
        .route("/reset", post(reset))
}
