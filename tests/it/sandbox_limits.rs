//! The sandbox's rate limits in each provider's shape: bursts past a limit get the provider's
//! own 429 with `Retry-After` (and Telnyx's `x-ratelimit-*`), and `/_sandbox/stats` proves that
//! no window ever admitted more than its limit.

use std::time::Duration;

use futures_util::future::join_all;
use reqwest::Method;
use serde_json::{json, Value};
use simbatch::sandbox::{Faults, Latency, LimitMode, SandboxConfig};

use crate::sandbox_support::{limiter, Sb, TWILIO_USER};

fn config(limits: LimitMode) -> SandboxConfig {
    SandboxConfig {
        sims: 100,
        limits,
        async_delay: Duration::from_millis(50),
        ..SandboxConfig::default()
    }
}

/// No limiter ever admitted more than its limit in any window.
fn no_window_exceeded(stats: &Value) {
    for l in stats["limiters"].as_array().unwrap() {
        assert!(
            l["peak"].as_u64() <= l["limit"].as_u64(),
            "limiter exceeded: {l}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emnify_per_path_burst_gets_1105_with_retry_after() {
    // scaled:0.1: GET /sim/{id} allows 10/s with a burst of 5 (15 in any one second). 120
    // requests at once would have to be spread over seven seconds of a loaded machine before
    // fewer than 20 were refused.
    let sb = Sb::start(config(LimitMode::Scaled(0.1))).await;
    let token = sb.emnify_token().await;
    let replies = join_all((0..120).map(|i| {
        sb.http
            .get(sb.url(&format!("/emnify/api/v1/sim/{}", i % 100 + 1)))
            .bearer_auth(&token)
            .send()
    }))
    .await;
    let mut limited = 0;
    for r in replies {
        let r = r.unwrap();
        if r.status() == 429 {
            limited += 1;
            assert!(r.headers().contains_key("retry-after"));
            let body: Value = r.json().await.unwrap();
            assert_eq!(
                (body["error_code"].as_u64(), body["error_token"].as_str()),
                (Some(1105), Some("TooManyRequests"))
            );
        }
    }
    assert!(
        limited >= 20,
        "a burst of 120 against 10/s burst 5 must be refused in part ({limited})"
    );
    let stats = sb.stats().await;
    assert_eq!(stats["too_many_requests"], limited);
    let bucket = limiter(&stats, "emnify GET /sim/{id}");
    assert_eq!(
        bucket["limit"], 15,
        "10/s plus a burst of 5 in any one second"
    );
    no_window_exceeded(&stats);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emnify_per_ip_window_counts_every_request() {
    // scaled:0.01 keeps the shape: 20 requests per 5 minutes per IP.
    let sb = Sb::start(config(LimitMode::Scaled(0.01))).await;
    let token = sb.emnify_token().await; // 1 of 20
    let mut statuses = Vec::new();
    for i in 1..=30 {
        let r = sb
            .http
            .patch(sb.url(&format!("/emnify/api/v1/sim/{i}")))
            .bearer_auth(&token)
            .json(&json!({"status": {"id": 1}}))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 204).count(), 19);
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 11);
    let stats = sb.stats().await;
    let window = limiter(&stats, "emnify per-IP");
    assert_eq!(
        (
            window["limit"].as_u64(),
            window["peak"].as_u64(),
            window["window_ms"].as_u64()
        ),
        (Some(20), Some(20), Some(300_000))
    );
    no_window_exceeded(&stats);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_in_flight_cap_answers_20429() {
    let mut c = config(LimitMode::Documented);
    c.faults = Faults {
        latency: Latency {
            base_ms: 300,
            jitter_ms: 0,
        },
        ..Faults::default()
    };
    let sb = Sb::start(c).await;
    let replies = join_all((0..150).map(|_| {
        sb.http
            .get(sb.url("/twilio/v1/Sims/HS00000000000000000000000000000001"))
            .basic_auth(TWILIO_USER, Some("t"))
            .send()
    }))
    .await;
    let mut limited = 0;
    for r in replies {
        let r = r.unwrap();
        if r.status() == 429 {
            limited += 1;
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["code"], 20429);
        }
    }
    assert!(
        limited >= 50,
        "150 concurrent against a cap of 100: {limited} refused"
    );
    let stats = sb.stats().await;
    let cap = limiter(&stats, "twilio");
    assert_eq!(
        (cap["kind"].as_str(), cap["limit"].as_u64()),
        (Some("in_flight"), Some(100))
    );
    no_window_exceeded(&stats);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telnyx_window_sends_ratelimit_headers() {
    // scaled:0.1: 10 per 1-second window; 60 requests spread over even three windows of a
    // loaded machine leave at least 30 refused.
    let sb = Sb::start(config(LimitMode::Scaled(0.1))).await;
    let ok = sb.tx(Method::GET, "/v2/sim_card_groups", None).await;
    assert_eq!(ok.headers["x-ratelimit-limit"], "10");
    assert!(ok.headers.contains_key("x-ratelimit-remaining"));
    assert!(ok.headers.contains_key("x-ratelimit-reset"));
    let replies = join_all((0..60).map(|_| {
        sb.http
            .get(sb.url("/telnyx/v2/sim_card_groups"))
            .bearer_auth("k")
            .send()
    }))
    .await;
    let mut limited = 0;
    for r in replies {
        let r = r.unwrap();
        if r.status() == 429 {
            limited += 1;
            assert_eq!(r.headers()["x-ratelimit-remaining"], "0");
            assert!(r.headers().contains_key("retry-after"));
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["errors"][0]["code"], "10011");
        }
    }
    assert!(limited >= 20, "{limited}");
    no_window_exceeded(&sb.stats().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_off_never_refuse_and_scaled_multiplies() {
    let sb = Sb::start(config(LimitMode::Off)).await;
    let token = sb.emnify_token().await;
    let replies = join_all((0..300).map(|i| {
        sb.http
            .get(sb.url(&format!("/emnify/api/v1/sim/{}", i % 100 + 1)))
            .bearer_auth(&token)
            .send()
    }))
    .await;
    assert!(replies.into_iter().all(|r| r.unwrap().status() == 200));
    let stats = sb.stats().await;
    assert_eq!(stats["too_many_requests"], 0);
    assert_eq!(stats["limiters"], json!([]));

    let scaled = Sb::start(config(LimitMode::Scaled(2.0))).await;
    let stats = scaled.stats().await;
    assert_eq!(limiter(&stats, "twilio")["limit"], 200);
    assert_eq!(limiter(&stats, "telnyx")["limit"], 200);
    assert_eq!(limiter(&stats, "emnify per-IP")["limit"], 4000);
    assert_eq!(
        limiter(&stats, "emnify per-IP")["window_ms"],
        300_000,
        "same shape, K times the count"
    );
}
