//! Injected faults: latency, 5xx, hangs, connection resets (some after the change was applied)
//! and asynchronous failures. A 5xx or a hang never changes state.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use simbatch::sandbox::{Faults, Latency, LimitMode, SandboxConfig};

use crate::sandbox_support::Sb;

fn faulty(faults: Faults) -> SandboxConfig {
    SandboxConfig {
        sims: 50,
        limits: LimitMode::Off,
        faults,
        async_delay: Duration::from_millis(50),
        ..SandboxConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_change_nothing() {
    let sb = Sb::start(faulty(Faults {
        error_rate: 1.0,
        ..Faults::default()
    }))
    .await;
    let em = sb
        .http
        .post(sb.url("/emnify/api/v1/authenticate"))
        .json(&json!({"application_token": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(em.status(), 500);
    assert!(em.json::<serde_json::Value>().await.unwrap()["error_code"].is_u64());
    let tw = sb
        .tw(
            Method::POST,
            "/v1/Sims/HS00000000000000000000000000000001",
            &[("Status", "inactive")],
        )
        .await;
    assert_eq!(
        (tw.status.as_u16(), tw.body["code"].as_u64()),
        (500, Some(20500))
    );
    let tx = sb
        .tx(
            Method::POST,
            &format!(
                "/v2/sim_cards/{}/actions/disable",
                simbatch::sandbox::telnyx::sim_id(1)
            ),
            None,
        )
        .await;
    assert_eq!(
        (tx.status.as_u16(), tx.body["errors"][0]["code"].as_str()),
        (500, Some("10007"))
    );
    sb.settle().await;
    assert!(
        sb.journal().await.is_empty(),
        "a 5xx means nothing happened"
    );
    assert_eq!(sb.stats().await["faults"]["error"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hangs_outlast_the_client_timeout_and_change_nothing() {
    let sb = Sb::start(faulty(Faults {
        timeout_rate: 1.0,
        hang: Duration::from_millis(2000),
        ..Faults::default()
    }))
    .await;
    let started = Instant::now();
    let r = sb
        .http
        .post(sb.url("/twilio/v1/Sims/HS00000000000000000000000000000001"))
        .basic_auth(crate::sandbox_support::TWILIO_USER, Some("t"))
        .form(&[("Status", "inactive")])
        .timeout(Duration::from_millis(200))
        .send()
        .await;
    assert!(r.unwrap_err().is_timeout());
    // The client gave up (200 ms) long before the hang ended; a busy machine has 1.8 s of slack.
    assert!(started.elapsed() < Duration::from_millis(1800));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(sb.journal().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_drop_connections_some_after_applying() {
    let sb = Sb::start(faulty(Faults {
        reset_rate: 1.0,
        ..Faults::default()
    }))
    .await;
    let mut errors = 0;
    // SIMs that start enabled, so every applied disable is a change the journal shows.
    for i in (1..=50u64).filter(|i| i % 10 != 0).take(40) {
        let r = sb
            .http
            .post(sb.url(&format!(
                "/telnyx/v2/sim_cards/{}/actions/disable",
                simbatch::sandbox::telnyx::sim_id(i)
            )))
            .bearer_auth("k")
            .send()
            .await;
        match r {
            Err(e) => {
                assert!(!e.is_timeout(), "a reset is not a timeout: {e}");
                errors += 1;
            }
            Ok(resp) => panic!("expected a dropped connection, got {}", resp.status()),
        }
    }
    assert_eq!(errors, 40);
    sb.settle().await;
    let stats = sb.stats().await;
    let after = stats["faults"]["reset_after"].as_u64().unwrap_or(0);
    let before = stats["faults"]["reset_before"].as_u64().unwrap_or(0);
    assert_eq!(after + before, 40);
    assert!(
        after > 0 && before > 0,
        "both kinds happen: {after} after, {before} before"
    );
    assert_eq!(
        sb.journal().await.len() as u64,
        after,
        "exactly the resets after applying changed state"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_with_jitter_delays_answers() {
    let sb = Sb::start(faulty(Faults {
        latency: Latency {
            base_ms: 100,
            jitter_ms: 20,
        },
        ..Faults::default()
    }))
    .await;
    for _ in 0..5 {
        let started = Instant::now();
        let r = sb.tx(Method::GET, "/v2/sim_card_groups", None).await;
        assert_eq!(r.status, 200);
        let ms = started.elapsed().as_millis();
        assert!((80..1000).contains(&ms), "{ms} ms");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_failures_end_failed_and_leave_state_unchanged() {
    let sb = Sb::start(faulty(Faults {
        fail_async: 1.0,
        ..Faults::default()
    }))
    .await;
    let tw = sb
        .tw(
            Method::POST,
            "/v1/Sims/HS00000000000000000000000000000001",
            &[("Status", "inactive")],
        )
        .await;
    assert_eq!(tw.status, 202);
    let tx = sb
        .tx(
            Method::POST,
            &format!(
                "/v2/sim_cards/{}/actions/disable",
                simbatch::sandbox::telnyx::sim_id(1)
            ),
            None,
        )
        .await;
    let action = tx.body["data"]["id"].as_str().unwrap().to_string();
    let em = sb
        .em(
            Method::POST,
            "/api/v1/euicc/1/operation",
            Some(json!([{"action": {"id": 1}}])),
        )
        .await;
    sb.settle().await;
    assert_eq!(
        sb.tw(
            Method::GET,
            "/v1/Sims/HS00000000000000000000000000000001",
            &[]
        )
        .await
        .body["status"],
        "active"
    );
    let a = sb
        .tx(Method::GET, &format!("/v2/sim_card_actions/{action}"), None)
        .await;
    assert_eq!(a.body["data"]["status"]["value"], "failed");
    assert!(a.body["data"]["status"]["reason"].is_string());
    assert_eq!(
        sb.tx(
            Method::GET,
            &format!("/v2/sim_cards/{}", simbatch::sandbox::telnyx::sim_id(1)),
            None
        )
        .await
        .body["data"]["status"]["value"],
        "enabled"
    );
    let op = sb
        .em(
            Method::GET,
            &format!(
                "/api/v1/euicc/1/operation/{}",
                em.body[0]["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(op.body["status"]["description"], "Failed");
    assert!(op.body["error"]["reason"].is_u64());
    assert!(sb.journal().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_token_is_enforced_everywhere() {
    let sb = Sb::start(SandboxConfig {
        require_token: Some("s3cret".into()),
        ..faulty(Faults::default())
    })
    .await;
    let tw = sb
        .http
        .get(sb.url("/twilio/v1/Sims"))
        .basic_auth(crate::sandbox_support::TWILIO_USER, Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(tw.status(), 401);
    let tw = sb
        .http
        .get(sb.url("/twilio/v1/Sims"))
        .basic_auth(crate::sandbox_support::TWILIO_USER, Some("s3cret"))
        .send()
        .await
        .unwrap();
    assert_eq!(tw.status(), 200);
    let tx = sb
        .http
        .get(sb.url("/telnyx/v2/sim_cards"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(tx.status(), 401);
    let tx = sb
        .http
        .get(sb.url("/telnyx/v2/sim_cards"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(tx.status(), 200);
    let em = sb
        .http
        .post(sb.url("/emnify/api/v1/authenticate"))
        .json(&json!({"application_token": "wrong"}))
        .send()
        .await
        .unwrap();
    assert_eq!(em.status(), 401);
}

#[test]
fn the_cli_prints_its_address_first_and_serves() {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin!("simbatch"))
        .args([
            "sandbox",
            "--listen",
            "127.0.0.1:0",
            "--sims",
            "10",
            "--limits",
            "off",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let addr = first
        .trim()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("{first:?}"))
        .to_string();
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    use std::io::{Read, Write};
    write!(
        stream,
        "GET /_sandbox/stats HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"requests_total\""));
}

/// The answers of the provider-truth switches, checked against the providers' documents: a
/// Telnyx action that ended `interrupted` (SIMCardAction in telnyx-wireless.json) leaves the
/// SIM where it was; an emnify delete refused with 403 (emnify-sim-endpoint-euicc.json); an
/// eUICC's operations listed 100 to a page, sorted by creation date when asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_truth_answers_follow_the_documents() {
    use crate::sandbox_support::{assert_response, Provider};
    let sb = Sb::start(faulty(Faults {
        interrupt_async: 1.0,
        ..Faults::default()
    }))
    .await;
    let sim = simbatch::sandbox::telnyx::sim_id(1);
    let started = sb
        .tx(
            Method::POST,
            &format!("/v2/sim_cards/{sim}/actions/disable"),
            None,
        )
        .await;
    assert_eq!(started.status.as_u16(), 202, "{}", started.text);
    let action = started.body["data"]["id"].as_str().unwrap().to_string();
    sb.settle().await;
    let ended = sb
        .tx(Method::GET, &format!("/v2/sim_card_actions/{action}"), None)
        .await;
    assert_response(
        Provider::Telnyx,
        "/sim_card_actions/{id}",
        "get",
        200,
        &ended.body,
    );
    assert_eq!(ended.body["data"]["status"]["value"], "interrupted");
    let card = sb
        .tx(Method::GET, &format!("/v2/sim_cards/{sim}"), None)
        .await;
    assert_eq!(card.body["data"]["status"]["value"], "enabled");
    assert!(
        sb.journal().await.is_empty(),
        "an interrupted action changes nothing"
    );

    // emnify SIM 99 was sold: its delete is refused with 403 in emnify's error body (after the
    // SIM is released from its endpoint, as emnify deletes only SIMs on none).
    let sb = Sb::plain(100).await;
    let released = sb
        .em(
            Method::PATCH,
            "/api/v1/endpoint/99",
            Some(json!({"sim": {"id": null}})),
        )
        .await;
    assert_eq!(released.status.as_u16(), 204, "{}", released.text);
    let refused = sb.em(Method::DELETE, "/api/v1/sim/99", None).await;
    assert_eq!(refused.status.as_u16(), 403, "{}", refused.text);
    assert_response(
        Provider::Emnify,
        "/api/v1/sim/{sim_id}",
        "delete",
        403,
        &refused.body,
    );

    // 120 operations: 100 on the first page however many are asked for; by creation date
    // when sorted so, and otherwise in an order unrelated to it.
    let audit = json!([{"action": {"id": 1}, "validity_period": 86400}]);
    for _ in 0..120 {
        sb.em(
            Method::POST,
            "/api/v1/euicc/2/operation",
            Some(audit.clone()),
        )
        .await;
    }
    let page = |query: &'static str| {
        let sb = &sb;
        async move {
            let r = sb
                .em(
                    Method::GET,
                    &format!("/api/v1/euicc/2/operation?{query}"),
                    None,
                )
                .await;
            assert_response(
                Provider::Emnify,
                "/api/v1/euicc/{euicc_id}/operation",
                "get",
                200,
                &r.body,
            );
            r.body.as_array().unwrap().clone()
        }
    };
    assert_eq!(page("per_page=1000").await.len(), 100);
    let sorted = page("sort=creation_date&page=1").await;
    let dates: Vec<&str> = sorted
        .iter()
        .map(|o| o["creation_date"].as_str().unwrap())
        .collect();
    assert!(dates.windows(2).all(|w| w[0] <= w[1]), "{dates:?}");
    let unsorted: Vec<Value> = page("page=1").await;
    assert_ne!(
        unsorted.iter().map(|o| &o["id"]).collect::<Vec<_>>(),
        sorted.iter().map(|o| &o["id"]).collect::<Vec<_>>(),
        "without `sort` the list is not in creation order"
    );
}
