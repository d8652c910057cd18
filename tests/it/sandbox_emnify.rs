//! The emnify stand-in over real HTTP: every endpoint the actions need, its error bodies,
//! pagination to the last page, asynchronous eUICC operations, all checked against emnify's
//! OpenAPI document.

use reqwest::Method;
use serde_json::{json, Value};
use simbatch::sandbox::inventory::{self, EMNIFY_PREFIX};

use simbatch::sandbox::{LimitMode, SandboxConfig};

use crate::sandbox_support::{assert_component, assert_response, Provider, Sb};

fn error_shape(body: &Value) {
    assert!(body["error_code"].is_u64(), "{body}");
    assert!(body["error_token"].is_string(), "{body}");
    assert!(body["message"].is_string(), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_tokens() {
    let sb = Sb::start(simbatch::sandbox::SandboxConfig {
        require_token: Some("right".into()),
        token_ttl: std::time::Duration::from_millis(3_000),
        limits: simbatch::sandbox::LimitMode::Off,
        sims: 10,
        ..Default::default()
    })
    .await;
    let auth = |token: &'static str| {
        sb.http
            .post(sb.url("/emnify/api/v1/authenticate"))
            .json(&json!({"application_token": token}))
            .send()
    };
    let wrong = auth("wrong").await.unwrap();
    assert_eq!(wrong.status(), 401);
    assert_eq!(
        wrong.text().await.unwrap(),
        "",
        "emnify answers a bad application token with an empty 401"
    );
    let ok = auth("right").await.unwrap();
    assert_eq!(ok.status(), 200);
    let body: Value = ok.json().await.unwrap();
    assert_response(Provider::Emnify, "/api/v1/authenticate", "post", 200, &body);
    let token = body["auth_token"].as_str().unwrap();
    assert_eq!(token.split('.').count(), 3, "JWT-shaped");

    let get = |t: String| {
        sb.http
            .get(sb.url("/emnify/api/v1/sim/1"))
            .bearer_auth(t)
            .send()
    };
    assert_eq!(get(token.to_string()).await.unwrap().status(), 200);
    let malformed = get("abc".into()).await.unwrap();
    assert_eq!(malformed.status(), 401);
    assert_eq!(
        malformed.json::<Value>().await.unwrap()["message"],
        "token contains an invalid number of segments"
    );
    let unknown: Value = get("a.b.c".into()).await.unwrap().json().await.unwrap();
    assert_eq!(unknown["error_code"], 1102);
    let none = sb
        .http
        .get(sb.url("/emnify/api/v1/sim/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(none.status(), 401);
    tokio::time::sleep(std::time::Duration::from_millis(3_100)).await;
    let expired = get(token.to_string()).await.unwrap();
    assert_eq!(expired.status(), 401);
    let body: Value = expired.json().await.unwrap();
    assert_eq!(
        (body["error_code"].as_u64(), body["error_token"].as_str()),
        (Some(1103), Some("TokenExpired"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_list_pages_to_the_last_page_with_link_headers() {
    let sb = Sb::plain(250).await;
    let token = sb.emnify_token().await;
    let mut url = Some(sb.url("/emnify/api/v1/sim?page=1&per_page=100"));
    let mut ids = Vec::new();
    let mut pages = 0;
    while let Some(u) = url.take() {
        let r = sb.http.get(&u).bearer_auth(&token).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let h = r.headers().clone();
        assert_eq!(h["x-total-count"], "250");
        assert_eq!(h["x-total-pages"], "3");
        assert_eq!(h["x-count-per-page"], "100");
        let body: Value = r.json().await.unwrap();
        assert_response(Provider::Emnify, "/api/v1/sim", "get", 200, &body);
        ids.extend(
            body.as_array()
                .unwrap()
                .iter()
                .map(|s| s["id"].as_u64().unwrap()),
        );
        pages += 1;
        let link = h["link"].to_str().unwrap().to_string();
        url = link
            .split(", ")
            .find(|l| l.ends_with("rel=\"next\""))
            .map(|l| {
                l.trim_start_matches('<')
                    .split('>')
                    .next()
                    .unwrap()
                    .to_string()
            });
        assert!(
            link.starts_with(&format!("<{}/emnify/api/v1/sim?page=1", sb.base)),
            "{link}"
        );
    }
    assert_eq!(pages, 3);
    assert_eq!(ids, (1..=250).collect::<Vec<_>>());
    // Past the last page gives the last page; per_page is capped at 2500.
    let r = sb
        .em(Method::GET, "/api/v1/sim?page=99&per_page=100", None)
        .await;
    assert_eq!(r.headers["x-current-page"], "3");
    assert_eq!(r.body.as_array().unwrap().len(), 50);
    let r = sb
        .em(Method::GET, "/api/v1/sim?per_page=100000", None)
        .await;
    assert_eq!(r.headers["x-count-per-page"], "2500");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_by_iccid_in_both_forms_and_by_status() {
    let sb = Sb::plain(100).await;
    let iccid = inventory::iccid(EMNIFY_PREFIX, 42);
    for q in [
        format!("iccid:{}", &iccid[..19]),
        format!("iccid_with_luhn:{iccid}"),
    ] {
        let r = sb
            .em(Method::GET, &format!("/api/v1/sim?q={q}"), None)
            .await;
        let sims = r.body.as_array().unwrap();
        assert_eq!(sims.len(), 1, "{q}");
        assert_eq!(sims[0]["id"], 42);
        assert_eq!(sims[0]["iccid_with_luhn"], iccid.as_str());
        assert_eq!(sims[0]["iccid"], &iccid[..19]);
    }
    let none = sb
        .em(Method::GET, "/api/v1/sim?q=iccid:8988303999999999999", None)
        .await;
    assert_eq!(none.body, json!([]));
    let suspended = sb
        .em(Method::GET, "/api/v1/sim?q=status:2&per_page=1000", None)
        .await;
    assert_eq!(
        suspended.body.as_array().unwrap().len(),
        10,
        "every tenth SIM starts suspended"
    );
    let bad = sb.em(Method::GET, "/api/v1/sim?q=colour:red", None).await;
    assert_eq!(bad.status, 422);
    assert_eq!(bad.body["error_code"], 1301);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_get_patch_transitions_and_errors() {
    let sb = Sb::plain(20).await;
    let sim = sb.em(Method::GET, "/api/v1/sim/3", None).await;
    assert_eq!(sim.status, 200);
    assert_response(
        Provider::Emnify,
        "/api/v1/sim/{sim_id}",
        "get",
        200,
        &sim.body,
    );
    assert_eq!(
        sim.body["status"],
        json!({"id": 1, "description": "Activated"})
    );
    assert_eq!(sim.body["endpoint"]["id"], 3);

    let missing = sb.em(Method::GET, "/api/v1/sim/999", None).await;
    assert_eq!(missing.status, 404);
    error_shape(&missing.body);
    let bad = sb.em(Method::GET, "/api/v1/sim/abc", None).await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.body["error_token"], "BadRequest");

    let suspend = sb
        .em(
            Method::PATCH,
            "/api/v1/sim/3",
            Some(json!({"status": {"id": 2, "description": "Suspended"}})),
        )
        .await;
    assert_eq!(suspend.status, 204);
    assert_eq!(suspend.text, "");
    assert_eq!(
        sb.em(Method::GET, "/api/v1/sim/3", None).await.body["status"]["id"],
        2
    );
    // The same status again changes nothing; a forbidden transition is refused with emnify's body.
    assert_eq!(
        sb.em(
            Method::PATCH,
            "/api/v1/sim/3",
            Some(json!({"status": {"id": 2}}))
        )
        .await
        .status,
        204
    );
    let forbidden = sb
        .em(
            Method::PATCH,
            "/api/v1/sim/3",
            Some(json!({"status": {"id": 0}})),
        )
        .await;
    assert_eq!(forbidden.status, 409);
    error_shape(&forbidden.body);
    assert_eq!(forbidden.body["error_token"], "NotAllowed");
    let activate = sb
        .em(
            Method::PATCH,
            "/api/v1/sim/3",
            Some(json!({"status": {"id": 1}})),
        )
        .await;
    assert_eq!(activate.status, 204);

    let moved = sb
        .em(
            Method::PATCH,
            "/api/v1/sim/4",
            Some(json!({"customer_org": {"id": 2}})),
        )
        .await;
    assert_eq!(moved.status, 204);
    assert_eq!(
        sb.em(Method::GET, "/api/v1/sim/4", None).await.body["customer_org"]["id"],
        2
    );
    let unknown_org = sb
        .em(
            Method::PATCH,
            "/api/v1/sim/4",
            Some(json!({"customer_org": {"id": 999}})),
        )
        .await;
    assert_eq!(unknown_org.status, 404);
    assert_eq!(unknown_org.body["error_code"], 1401);
    let garbage = sb
        .em(Method::PATCH, "/api/v1/sim/4", Some(json!("nope")))
        .await;
    assert_eq!(garbage.status, 400);

    let iccid3 = inventory::iccid(EMNIFY_PREFIX, 3);
    let changes: Vec<(String, String)> = sb
        .journal()
        .await
        .iter()
        .map(|e| {
            (
                e["target"].as_str().unwrap().to_string(),
                e["change"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        changes,
        [
            (iccid3.clone(), "status:Activated->Suspended".to_string()),
            (iccid3, "status:Suspended->Activated".to_string()),
            (
                inventory::iccid(EMNIFY_PREFIX, 4),
                "customer_org:1->2".to_string()
            ),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_and_deleting_a_sim() {
    let sb = Sb::plain(20).await;
    let ep = sb.em(Method::GET, "/api/v1/endpoint/5", None).await;
    assert_response(
        Provider::Emnify,
        "/api/v1/endpoint/{endpoint_id}",
        "get",
        200,
        &ep.body,
    );
    assert_eq!(ep.body["status"]["id"], 0);
    assert_eq!(ep.body["sim"]["id"], 5);
    let list = sb
        .em(Method::GET, "/api/v1/endpoint?per_page=5", None)
        .await;
    assert_response(Provider::Emnify, "/api/v1/endpoint", "get", 200, &list.body);

    assert_eq!(
        sb.em(
            Method::PATCH,
            "/api/v1/endpoint/5",
            Some(json!({"status": {"id": 1}}))
        )
        .await
        .status,
        204
    );
    assert_eq!(
        sb.em(Method::GET, "/api/v1/endpoint/5", None).await.body["status"]["description"],
        "Disabled"
    );
    let bad_status = sb
        .em(
            Method::PATCH,
            "/api/v1/endpoint/5",
            Some(json!({"status": {"id": 7}})),
        )
        .await;
    assert_eq!(bad_status.status, 422);

    // A SIM still on an endpoint cannot be deleted; an endpoint with a SIM cannot be deleted.
    let refused = sb.em(Method::DELETE, "/api/v1/sim/5", None).await;
    assert_eq!(refused.status, 409);
    error_shape(&refused.body);
    assert_eq!(
        sb.em(Method::DELETE, "/api/v1/endpoint/5", None)
            .await
            .status,
        409
    );
    // Release as emnify's SDK does, then delete.
    assert_eq!(
        sb.em(
            Method::PATCH,
            "/api/v1/endpoint/5",
            Some(json!({"sim": {"id": null}}))
        )
        .await
        .status,
        204
    );
    assert!(sb
        .em(Method::GET, "/api/v1/sim/5", None)
        .await
        .body
        .get("endpoint")
        .is_none());
    assert_eq!(
        sb.em(Method::DELETE, "/api/v1/sim/5", None).await.status,
        204
    );
    assert_eq!(sb.em(Method::GET, "/api/v1/sim/5", None).await.status, 404);
    let listed = sb
        .em(
            Method::GET,
            &format!(
                "/api/v1/sim?q=iccid_with_luhn:{}",
                inventory::iccid(EMNIFY_PREFIX, 5)
            ),
            None,
        )
        .await;
    assert_eq!(listed.body, json!([]));
    let missing = sb.em(Method::GET, "/api/v1/endpoint/999", None).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.body["error_code"], 1401);
    let changes: Vec<String> = sb
        .journal()
        .await
        .iter()
        .map(|e| e["change"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        changes,
        [
            "endpoint_status:Enabled->Disabled",
            "endpoint_sim:released-from:5",
            "delete"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn euicc_operations_are_scheduled_then_settle() {
    let sb = Sb::with_delay(100, std::time::Duration::from_secs(2)).await;
    let eid = inventory::eid(3);
    let found = sb
        .em(Method::GET, &format!("/api/v1/euicc?q=eid:{eid}"), None)
        .await;
    assert_response(Provider::Emnify, "/api/v1/euicc", "get", 200, &found.body);
    assert_eq!(found.body.as_array().unwrap().len(), 1);
    let euicc = sb.em(Method::GET, "/api/v1/euicc/3", None).await;
    assert_response(
        Provider::Emnify,
        "/api/v1/euicc/{euicc_id}",
        "get",
        200,
        &euicc.body,
    );
    let profiles = euicc.body["profile"].as_array().unwrap();
    assert_eq!(profiles.len(), 2);
    assert_eq!(
        profiles[0]["iccid_with_luhn"],
        inventory::bootstrap_profile(3).as_str()
    );
    assert_eq!(profiles[0]["fallback_attribute"], true);
    assert_eq!(profiles[1]["status"]["description"], "Enabled");

    let ops = sb
        .em(
            Method::POST,
            "/api/v1/euicc/3/operation",
            Some(json!([{"action": {"id": 2}, "activation_code": "1$smdp.example.com$M-3", "enable": true, "rollback": true}])),
        )
        .await;
    assert_eq!(ops.status, 201);
    assert_response(
        Provider::Emnify,
        "/api/v1/euicc/{euicc_id}/operation",
        "post",
        201,
        &ops.body,
    );
    assert_eq!(ops.body[0]["status"]["description"], "Scheduled");
    assert!(ops.headers["link"]
        .to_str()
        .unwrap()
        .contains("/api/v1/euicc/3/operation/"));
    let op_id = ops.body[0]["id"].as_str().unwrap().to_string();
    let pending = sb
        .em(Method::GET, "/api/v1/euicc/3/operation?q=status:1", None)
        .await;
    assert_eq!(pending.body.as_array().unwrap().len(), 1);

    sb.settle().await;
    let done = sb
        .em(
            Method::GET,
            &format!("/api/v1/euicc/3/operation/{op_id}"),
            None,
        )
        .await;
    assert_component(Provider::Emnify, "EuiccOperation", &done.body);
    assert_eq!(done.body["status"]["description"], "Succeeded");
    let after = sb.em(Method::GET, "/api/v1/euicc/3", None).await.body;
    let downloaded = inventory::downloaded_profile(3);
    let enabled: Vec<&str> = after["profile"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["status"]["id"] == 8)
        .map(|p| p["iccid_with_luhn"].as_str().unwrap())
        .collect();
    assert_eq!(enabled, [downloaded.as_str()]);

    // Fallback to the old operational profile, then delete it: both apply in order.
    let old = inventory::operational_profile(3);
    let r = sb
        .em(
            Method::POST,
            "/api/v1/euicc/3/operation",
            Some(json!([{"action": {"id": 4}, "iccid_with_luhn": old}])),
        )
        .await;
    assert_eq!(r.status, 201);
    sb.settle().await;
    // Deleting the enabled profile fails at the provider, with an error object.
    let r = sb
        .em(
            Method::POST,
            "/api/v1/euicc/3/operation",
            Some(json!([{"action": {"id": 5}, "iccid_with_luhn": downloaded}])),
        )
        .await;
    sb.settle().await;
    let failed = sb
        .em(
            Method::GET,
            &format!(
                "/api/v1/euicc/3/operation/{}",
                r.body[0]["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(failed.body["status"]["description"], "Failed");
    assert!(failed.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("enabled"));
    assert_component(Provider::Emnify, "EuiccOperation", &failed.body);

    let journal: Vec<(String, String)> = sb
        .journal()
        .await
        .iter()
        .map(|e| {
            (
                e["target"].as_str().unwrap().to_string(),
                e["change"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        journal,
        [
            (
                eid.clone(),
                format!("profile-download:{downloaded}:enabled")
            ),
            (eid, format!("profile-fallback:{old}"))
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contradicting_operations_only_the_first_applies() {
    let sb = Sb::plain(100).await;
    let boot = inventory::bootstrap_profile(1);
    let op = |body: Value| sb.em(Method::POST, "/api/v1/euicc/1/operation", Some(body));
    let first = op(json!([{"action": {"id": 3}, "iccid_with_luhn": boot}])).await;
    let second = op(
        json!([{"action": {"id": 2}, "activation_code": "1$smdp.example.com$M", "enable": true}]),
    )
    .await;
    assert_eq!(
        (first.status.as_u16(), second.status.as_u16()),
        (201, 201),
        "the API does not check conflicts"
    );
    sb.settle().await;
    // emnify states no order for this list unless `sort` asks for one.
    let ops = sb
        .em(
            Method::GET,
            "/api/v1/euicc/1/operation?sort=creation_date",
            None,
        )
        .await
        .body;
    let statuses: Vec<&str> = ops
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["status"]["description"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["Succeeded", "Failed"]);
    assert_eq!(sb.journal().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn euicc_errors_use_their_own_body() {
    let sb = Sb::plain(100).await;
    let missing = sb.em(Method::GET, "/api/v1/euicc/999", None).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.body["status_code"], 404);
    assert!(missing.body["message"].is_string());
    let bad = sb
        .em(
            Method::POST,
            "/api/v1/euicc/1/operation",
            Some(json!([{"action": {"id": 3}}])),
        )
        .await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.body["status_code"], 400);
    let not_array = sb
        .em(
            Method::POST,
            "/api/v1/euicc/1/operation",
            Some(json!({"action": {"id": 1}})),
        )
        .await;
    assert_eq!(not_array.status, 400);
    let r = sb
        .em(
            Method::POST,
            "/api/v1/euicc/1/operation",
            Some(json!([{"action": {"id": 1}, "validity_period": 0}])),
        )
        .await;
    assert_eq!(r.status, 400, "validity_period 0 is out of range");
    let lookup = sb
        .em(Method::GET, "/api/v1/euicc/operation/status", None)
        .await;
    assert_eq!(lookup.body[3], json!({"id": 4, "description": "Expired"}));
}

/// emnify's bulk requests (emnify-bulk-endpoint.json): 204 and every item applied and journaled
/// as its own change; more items than allowed, 422; a bad item fails the whole request by
/// default (nothing applied, every bad item named) or, with `bulk_partial`, only itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_endpoint_updates_and_sim_deletes() {
    let config = |partial| SandboxConfig {
        sims: 20,
        limits: LimitMode::Off,
        bulk_max_items: 5,
        bulk_partial: partial,
        refused_endpoints: vec![3],
        ..SandboxConfig::default()
    };
    let sb = Sb::start(config(false)).await;
    let disable = |ids: &[u64]| -> Value {
        ids.iter()
            .map(|id| json!({"id": id, "status": {"id": 1}}))
            .collect()
    };
    let ok = sb
        .em(
            Method::PATCH,
            "/api/v2/endpoint/multi",
            Some(disable(&[1, 2])),
        )
        .await;
    assert_eq!(ok.status, 204, "{}", ok.text);
    assert_eq!(
        (status(&sb, 1).await, status(&sb, 2).await),
        (json!(1), json!(1))
    );
    assert_eq!(sb.journal().await.len(), 2, "one change per item");

    let too_many = sb
        .em(
            Method::PATCH,
            "/api/v2/endpoint/multi",
            Some(disable(&[4, 5, 6, 7, 8, 9])),
        )
        .await;
    assert_eq!(too_many.status, 422);
    assert_response(
        Provider::EmnifyBulk,
        "/api/v2/endpoint/multi",
        "patch",
        422,
        &too_many.body,
    );

    // One bad item (endpoint 3 refuses status changes): nothing applied, the item named.
    let refused = sb
        .em(
            Method::PATCH,
            "/api/v2/endpoint/multi",
            Some(disable(&[4, 3])),
        )
        .await;
    assert_eq!(refused.status, 422);
    assert_response(
        Provider::EmnifyBulk,
        "/api/v2/endpoint/multi",
        "patch",
        422,
        &refused.body,
    );
    assert_eq!(refused.body["errors"].as_array().unwrap().len(), 1);
    assert!(refused.body["errors"][0]["message"]
        .as_str()
        .unwrap()
        .starts_with("endpoint 3:"));
    assert_eq!(status(&sb, 4).await, json!(0), "nothing applied");

    // Release two SIMs from their endpoints, then delete them in one request.
    let release: Value = [6, 7]
        .iter()
        .map(|id| json!({"id": id, "sim": {"id": null}}))
        .collect();
    assert_eq!(
        sb.em(Method::PATCH, "/api/v2/endpoint/multi", Some(release))
            .await
            .status,
        204
    );
    let delete: Value = [6, 7].iter().map(|id| json!({"id": id})).collect();
    let deleted = sb
        .em(Method::DELETE, "/api/v1/sim/multi", Some(delete))
        .await;
    assert_eq!(deleted.status, 204, "{}", deleted.text);
    assert_eq!(sb.em(Method::GET, "/api/v1/sim/6", None).await.status, 404);
    // An unknown SIM: 404, and the known one with it is not deleted.
    let unknown = sb
        .em(
            Method::DELETE,
            "/api/v1/sim/multi",
            Some(json!([{"id": 999}, {"id": 9}])),
        )
        .await;
    assert_eq!(unknown.status, 404);
    assert_response(
        Provider::EmnifyBulk,
        "/api/v1/sim/multi",
        "delete",
        404,
        &unknown.body,
    );

    // Partial mode: the good items apply, the bad one is still named.
    let sb = Sb::start(config(true)).await;
    let partial = sb
        .em(
            Method::PATCH,
            "/api/v2/endpoint/multi",
            Some(disable(&[4, 3])),
        )
        .await;
    assert_eq!(partial.status, 422);
    assert_eq!(
        (status(&sb, 4).await, status(&sb, 3).await),
        (json!(1), json!(0))
    );
}

/// The status id of emnify endpoint `id`.
async fn status(sb: &Sb, id: u64) -> Value {
    let path = format!("/api/v1/endpoint/{id}");
    sb.em(Method::GET, &path, None).await.body["status"]["id"].clone()
}
