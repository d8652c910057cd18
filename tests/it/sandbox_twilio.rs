//! The Twilio Super SIM stand-in over real HTTP: form-encoded PascalCase writes, 202
//! `scheduled` status changes, registration, Fleets, `meta.next_page_url` paging back to the
//! sandbox, error bodies — checked against Twilio's OpenAPI document.

use reqwest::Method;
use serde_json::Value;
use simbatch::sandbox::inventory::{self, TWILIO_PREFIX};

use crate::sandbox_support::{assert_response, Provider, Sb, TWILIO_USER};

fn sid(i: u64) -> String {
    format!("HS{i:032x}")
}

fn twilio_error(body: &Value, code: u64, status: u64) {
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status, "{body}");
    assert!(body["message"].is_string());
    assert_eq!(
        body["more_info"],
        format!("https://www.twilio.com/docs/errors/{code}")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pages_through_next_page_url_to_the_end() {
    let sb = Sb::plain(120).await;
    let mut url = Some(sb.url("/twilio/v1/Sims?PageSize=50"));
    let mut iccids = Vec::new();
    let mut pages = 0;
    while let Some(u) = url.take() {
        let r = sb.tw(Method::GET, &u, &[]).await;
        assert_eq!(r.status, 200);
        assert_response(Provider::Twilio, "/v1/Sims", "get", 200, &r.body);
        assert_eq!(r.body["meta"]["key"], "sims");
        iccids.extend(
            r.body["sims"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["iccid"].as_str().unwrap().to_string()),
        );
        pages += 1;
        url = r.body["meta"]["next_page_url"].as_str().map(str::to_string);
        if let Some(next) = &url {
            assert!(
                next.starts_with(&sb.base),
                "next_page_url must point at the sandbox: {next}"
            );
        }
    }
    assert_eq!(pages, 3);
    let expected: Vec<String> = (1..=120)
        .map(|i| inventory::iccid(TWILIO_PREFIX, i))
        .collect();
    assert_eq!(iccids, expected, "only the registered SIMs, in order");
    let inactive = sb
        .tw(Method::GET, "/v1/Sims?Status=inactive&PageSize=1000", &[])
        .await;
    assert_eq!(inactive.body["sims"].as_array().unwrap().len(), 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iccid_filter_gives_zero_or_one() {
    let sb = Sb::plain(10).await;
    let iccid = inventory::iccid(TWILIO_PREFIX, 7);
    let one = sb
        .tw(Method::GET, &format!("/v1/Sims?Iccid={iccid}"), &[])
        .await;
    assert_eq!(one.body["sims"].as_array().unwrap().len(), 1);
    assert_eq!(one.body["sims"][0]["sid"], sid(7));
    let unregistered = inventory::iccid(TWILIO_PREFIX, 15);
    let none = sb
        .tw(Method::GET, &format!("/v1/Sims?Iccid={unregistered}"), &[])
        .await;
    assert_eq!(none.body["sims"].as_array().unwrap().len(), 0);
    let fetched = sb
        .tw(Method::GET, &format!("/v1/Sims/{}", sid(7)), &[])
        .await;
    assert_response(
        Provider::Twilio,
        "/v1/Sims/{Sid}",
        "get",
        200,
        &fetched.body,
    );
    let missing = sb
        .tw(Method::GET, &format!("/v1/Sims/{}", sid(15)), &[])
        .await;
    assert_eq!(missing.status, 404);
    twilio_error(&missing.body, 20404, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_changes_are_scheduled_then_settle() {
    let sb = Sb::with_delay(10, std::time::Duration::from_secs(2)).await;
    let r = sb
        .tw(
            Method::POST,
            &format!("/v1/Sims/{}", sid(1)),
            &[("Status", "inactive")],
        )
        .await;
    assert_eq!(r.status, 202);
    assert_response(Provider::Twilio, "/v1/Sims/{Sid}", "post", 202, &r.body);
    assert_eq!(r.body["status"], "scheduled");
    let scheduled = sb.tw(Method::GET, "/v1/Sims?Status=scheduled", &[]).await;
    assert_eq!(scheduled.body["sims"].as_array().unwrap().len(), 1);
    sb.settle().await;
    assert_eq!(
        sb.tw(Method::GET, &format!("/v1/Sims/{}", sid(1)), &[])
            .await
            .body["status"],
        "inactive"
    );
    // Same status again: 200, nothing scheduled. Back to new is not even a settable value.
    let same = sb
        .tw(
            Method::POST,
            &format!("/v1/Sims/{}", sid(1)),
            &[("Status", "inactive")],
        )
        .await;
    assert_eq!(same.status, 200);
    let back = sb
        .tw(
            Method::POST,
            &format!("/v1/Sims/{}", sid(1)),
            &[("Status", "new")],
        )
        .await;
    assert_eq!(back.status, 400);
    twilio_error(&back.body, 20001, 400);
    let ready = sb
        .tw(
            Method::POST,
            &format!("/v1/Sims/{}", sid(2)),
            &[("Status", "ready")],
        )
        .await;
    assert_eq!(ready.status, 400);
    twilio_error(&ready.body, 83010, 400);
    // snake_case fields are not Twilio's: ignored, nothing changes.
    let ignored = sb
        .tw(
            Method::POST,
            &format!("/v1/Sims/{}", sid(2)),
            &[("status", "inactive")],
        )
        .await;
    assert_eq!(
        (ignored.status.as_u16(), ignored.body["status"].as_str()),
        (200, Some("active"))
    );
    let journal = sb.journal().await;
    assert_eq!(journal.len(), 1);
    assert_eq!(journal[0]["change"], "status:active->inactive");
    assert_eq!(
        journal[0]["target"],
        inventory::iccid(TWILIO_PREFIX, 1).as_str()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_fleet_and_activation() {
    let sb = Sb::plain(10).await;
    let iccid = inventory::iccid(TWILIO_PREFIX, 14);
    let code = inventory::registration_code(&iccid);
    let wrong = sb
        .tw(
            Method::POST,
            "/v1/Sims",
            &[("Iccid", &iccid), ("RegistrationCode", "RC00000000")],
        )
        .await;
    twilio_error(&wrong.body, 83002, 400);
    let r = sb
        .tw(
            Method::POST,
            "/v1/Sims",
            &[("Iccid", &iccid), ("RegistrationCode", &code)],
        )
        .await;
    assert_eq!(r.status, 201);
    assert_response(Provider::Twilio, "/v1/Sims", "post", 201, &r.body);
    assert_eq!(
        (r.body["status"].as_str(), r.body["fleet_sid"].is_null()),
        (Some("new"), true)
    );
    let again = sb
        .tw(
            Method::POST,
            "/v1/Sims",
            &[("Iccid", &iccid), ("RegistrationCode", &code)],
        )
        .await;
    twilio_error(&again.body, 83003, 409);
    let registered_sid = r.body["sid"].as_str().unwrap().to_string();
    let no_fleet = sb
        .tw(
            Method::POST,
            &format!("/v1/Sims/{registered_sid}"),
            &[("Status", "active")],
        )
        .await;
    twilio_error(&no_fleet.body, 83007, 400);
    let bad_fleet = sb
        .tw(
            Method::POST,
            &format!("/v1/Sims/{registered_sid}"),
            &[("Fleet", "nope")],
        )
        .await;
    twilio_error(&bad_fleet.body, 83006, 404);
    let moved = sb
        .tw(
            Method::POST,
            &format!("/v1/Sims/{registered_sid}"),
            &[("Fleet", "reserve")],
        )
        .await;
    // A Fleet update is asynchronous (Twilio changelog 2020-07-21): 202 `scheduled`, the
    // Fleet in effect once it settles; another Fleet update meanwhile is refused (83009).
    assert_eq!(moved.status, 202);
    assert_response(Provider::Twilio, "/v1/Sims/{Sid}", "post", 202, &moved.body);
    assert_eq!(moved.body["status"], "scheduled");
    assert!(moved.body["fleet_sid"].is_null(), "{}", moved.body);
    let meanwhile = sb
        .tw(
            Method::POST,
            &format!("/v1/Sims/{registered_sid}"),
            &[("Fleet", "default")],
        )
        .await;
    twilio_error(&meanwhile.body, 83009, 409);
    sb.settle().await;
    let settled = sb
        .tw(Method::GET, &format!("/v1/Sims/{registered_sid}"), &[])
        .await;
    assert_eq!(
        (
            settled.body["status"].as_str(),
            settled.body["fleet_sid"].as_str()
        ),
        (Some("new"), Some("HF00000000000000000000000000000002"))
    );
    let active = sb
        .tw(
            Method::POST,
            &format!("/v1/Sims/{registered_sid}"),
            &[("Status", "active")],
        )
        .await;
    assert_eq!(active.status, 202);
    sb.settle().await;
    let fleets = sb.tw(Method::GET, "/v1/Fleets", &[]).await;
    assert_response(Provider::Twilio, "/v1/Fleets", "get", 200, &fleets.body);
    let fleet = sb.tw(Method::GET, "/v1/Fleets/reserve", &[]).await;
    assert_response(
        Provider::Twilio,
        "/v1/Fleets/{Sid}",
        "get",
        200,
        &fleet.body,
    );
    let changes: Vec<String> = sb
        .journal()
        .await
        .iter()
        .map(|e| e["change"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        changes,
        [
            "register",
            "fleet:none->HF00000000000000000000000000000002",
            "status:new->active"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_is_required() {
    let sb = Sb::plain(10).await;
    let none = sb.http.get(sb.url("/twilio/v1/Sims")).send().await.unwrap();
    assert_eq!(none.status(), 401);
    twilio_error(&none.json().await.unwrap(), 20003, 401);
    let not_account = sb
        .http
        .get(sb.url("/twilio/v1/Sims"))
        .basic_auth("bob", Some("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(not_account.status(), 401);
    let ok = sb
        .http
        .get(sb.url("/twilio/v1/Sims"))
        .basic_auth(TWILIO_USER, Some("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}
