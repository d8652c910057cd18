//! The Telnyx stand-in over real HTTP: `{data, meta}` envelopes, bracketed query keys, SIM Card
//! Actions with transitional statuses, batched registration, delete, error bodies — checked
//! against Telnyx's OpenAPI document.

use reqwest::Method;
use serde_json::{json, Value};
use simbatch::sandbox::inventory::{self, TELNYX_PREFIX};
use simbatch::sandbox::telnyx::{group_id, sim_id};

use crate::sandbox_support::{assert_component, assert_response, Provider, Sb};

fn telnyx_error(body: &Value, code: &str) {
    let e = &body["errors"][0];
    assert_eq!(e["code"], code, "{body}");
    assert!(e["title"].is_string() && e["detail"].is_string(), "{body}");
    assert_component(Provider::Telnyx, "wireless_Errors", body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pages_to_the_last_page() {
    let sb = Sb::plain(60).await;
    let mut page = 1;
    let mut iccids = Vec::new();
    loop {
        let r = sb
            .tx(
                Method::GET,
                &format!("/v2/sim_cards?page[number]={page}&page[size]=25"),
                None,
            )
            .await;
        assert_eq!(r.status, 200);
        assert_response(Provider::Telnyx, "/sim_cards", "get", 200, &r.body);
        iccids.extend(
            r.body["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["iccid"].as_str().unwrap().to_string()),
        );
        let meta = &r.body["meta"];
        assert_eq!(
            (meta["total_results"].as_u64(), meta["total_pages"].as_u64()),
            (Some(60), Some(3))
        );
        if meta["page_number"].as_u64() >= meta["total_pages"].as_u64() {
            break;
        }
        page += 1;
    }
    assert_eq!(
        iccids,
        (1..=60)
            .map(|i| inventory::iccid(TELNYX_PREFIX, i))
            .collect::<Vec<_>>()
    );
    let disabled = sb
        .tx(
            Method::GET,
            "/v2/sim_cards?filter[status]=disabled,standby&page[size]=250",
            None,
        )
        .await;
    assert_eq!(disabled.body["meta"]["total_results"], 6);
    let full = inventory::iccid(TELNYX_PREFIX, 33);
    let one = sb
        .tx(
            Method::GET,
            &format!("/v2/sim_cards?filter[iccid]={full}"),
            None,
        )
        .await;
    assert_eq!(one.body["data"][0]["id"], sim_id(33).as_str());
    let part = "000000000005";
    let expected = (1..=60)
        .filter(|&i| inventory::iccid(TELNYX_PREFIX, i).contains(part))
        .count();
    assert!(expected > 1);
    let partial = sb
        .tx(
            Method::GET,
            &format!("/v2/sim_cards?filter[iccid]={part}&page[size]=250"),
            None,
        )
        .await;
    assert_eq!(
        partial.body["meta"]["total_results"], expected,
        "filter[iccid] is a partial match"
    );
    let too_big = sb
        .tx(Method::GET, "/v2/sim_cards?page[size]=1000", None)
        .await;
    assert_eq!(too_big.status, 400);
    telnyx_error(&too_big.body, "10015");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_go_through_transitional_statuses() {
    let sb = Sb::with_delay(10, std::time::Duration::from_secs(2)).await;
    let id = sim_id(1);
    let r = sb
        .tx(
            Method::POST,
            &format!("/v2/sim_cards/{id}/actions/disable"),
            None,
        )
        .await;
    assert_eq!(r.status, 202);
    assert_response(
        Provider::Telnyx,
        "/sim_cards/{id}/actions/disable",
        "post",
        202,
        &r.body,
    );
    assert_eq!(r.body["data"]["status"]["value"], "in-progress");
    let action_id = r.body["data"]["id"].as_str().unwrap().to_string();
    let during = sb
        .tx(Method::GET, &format!("/v2/sim_cards/{id}"), None)
        .await;
    assert_response(
        Provider::Telnyx,
        "/sim_cards/{id}",
        "get",
        200,
        &during.body,
    );
    assert_eq!(during.body["data"]["status"]["value"], "disabling");
    assert_eq!(during.body["data"]["actions_in_progress"], true);
    let busy = sb
        .tx(
            Method::POST,
            &format!("/v2/sim_cards/{id}/actions/enable"),
            None,
        )
        .await;
    assert_eq!(busy.status, 422);
    telnyx_error(&busy.body, "10015");
    let in_progress = sb
        .tx(
            Method::GET,
            "/v2/sim_card_actions?filter[status]=in-progress",
            None,
        )
        .await;
    assert_response(
        Provider::Telnyx,
        "/sim_card_actions",
        "get",
        200,
        &in_progress.body,
    );
    assert_eq!(in_progress.body["meta"]["total_results"], 1);

    sb.settle().await;
    let after = sb
        .tx(Method::GET, &format!("/v2/sim_cards/{id}"), None)
        .await;
    assert_eq!(after.body["data"]["status"]["value"], "disabled");
    assert_eq!(after.body["data"]["actions_in_progress"], false);
    let action = sb
        .tx(
            Method::GET,
            &format!("/v2/sim_card_actions/{action_id}"),
            None,
        )
        .await;
    assert_response(
        Provider::Telnyx,
        "/sim_card_actions/{id}",
        "get",
        200,
        &action.body,
    );
    assert_eq!(action.body["data"]["status"]["value"], "completed");

    let standby = sb
        .tx(
            Method::POST,
            &format!("/v2/sim_cards/{}/actions/set_standby", sim_id(2)),
            None,
        )
        .await;
    assert_eq!(standby.status, 202);
    let enable = sb
        .tx(
            Method::POST,
            &format!("/v2/sim_cards/{}/actions/enable", sim_id(10)),
            None,
        )
        .await;
    assert_eq!(enable.status, 202);
    sb.settle().await;
    let completed = sb
        .tx(
            Method::GET,
            &format!("/v2/sim_card_actions?filter[sim_card_id]={}", sim_id(2)),
            None,
        )
        .await;
    assert_eq!(completed.body["data"][0]["action_type"], "set_standby");
    let changes: Vec<String> = sb
        .journal()
        .await
        .iter()
        .map(|e| e["change"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        changes,
        [
            "status:enabled->disabled",
            "status:enabled->standby",
            "status:disabled->enabled"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_is_batched_and_reports_bad_codes() {
    let sb = Sb::plain(10).await;
    let codes: Vec<String> = [11u64, 12]
        .iter()
        .map(|&n| inventory::registration_code(&inventory::iccid(TELNYX_PREFIX, n)))
        .collect();
    let r = sb
        .tx(
            Method::POST,
            "/v2/actions/register/sim_cards",
            Some(json!({"registration_codes": [codes[0], codes[1], "RC12345678"], "sim_card_group_id": group_id(1)})),
        )
        .await;
    assert_eq!(r.status, 202);
    assert_response(
        Provider::Telnyx,
        "/actions/register/sim_cards",
        "post",
        202,
        &r.body,
    );
    assert_eq!(r.body["data"].as_array().unwrap().len(), 2);
    assert_eq!(r.body["data"][0]["status"]["value"], "registering");
    assert_eq!(r.body["errors"].as_array().unwrap().len(), 1);
    sb.settle().await;
    let sim = sb
        .tx(Method::GET, &format!("/v2/sim_cards/{}", sim_id(11)), None)
        .await;
    assert_eq!(sim.body["data"]["status"]["value"], "enabled");
    assert_eq!(sim.body["data"]["sim_card_group_id"], group_id(1).as_str());
    let again = sb
        .tx(
            Method::POST,
            "/v2/actions/register/sim_cards",
            Some(json!({"registration_codes": [codes[0]]})),
        )
        .await;
    assert_eq!(again.body["errors"][0]["title"], "Already registered");
    assert_eq!(sb.journal().await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn move_delete_and_errors() {
    let sb = Sb::plain(10).await;
    let id = sim_id(4);
    let moved = sb
        .tx(
            Method::PATCH,
            &format!("/v2/sim_cards/{id}"),
            Some(json!({"sim_card_group_id": group_id(2)})),
        )
        .await;
    assert_eq!(moved.status, 200);
    assert_response(
        Provider::Telnyx,
        "/sim_cards/{id}",
        "patch",
        200,
        &moved.body,
    );
    assert_eq!(
        moved.body["data"]["sim_card_group_id"],
        group_id(2).as_str()
    );
    let bad_group = sb
        .tx(
            Method::PATCH,
            &format!("/v2/sim_cards/{id}"),
            Some(json!({"sim_card_group_id": "00000000-0000-4000-8000-000000000009"})),
        )
        .await;
    assert_eq!(bad_group.status, 422);
    telnyx_error(&bad_group.body, "10015");
    let groups = sb.tx(Method::GET, "/v2/sim_card_groups", None).await;
    assert_response(
        Provider::Telnyx,
        "/sim_card_groups",
        "get",
        200,
        &groups.body,
    );

    let deleted = sb
        .tx(
            Method::DELETE,
            &format!("/v2/sim_cards/{id}?report_lost=false"),
            None,
        )
        .await;
    assert_eq!(deleted.status, 200);
    assert_response(
        Provider::Telnyx,
        "/sim_cards/{id}",
        "delete",
        200,
        &deleted.body,
    );
    assert_eq!(deleted.body["data"]["status"]["value"], "disabling");
    sb.settle().await;
    let gone = sb
        .tx(Method::GET, &format!("/v2/sim_cards/{id}"), None)
        .await;
    assert_eq!(gone.status, 404);
    telnyx_error(&gone.body, "10005");
    let malformed = sb.tx(Method::GET, "/v2/sim_cards/not-a-uuid", None).await;
    assert_eq!(malformed.status, 400);
    telnyx_error(&malformed.body, "10006");
    let unauth = sb
        .http
        .get(sb.url("/telnyx/v2/sim_cards"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauth.status(), 401);
    telnyx_error(&unauth.json().await.unwrap(), "10009");
    let changes: Vec<String> = sb
        .journal()
        .await
        .iter()
        .map(|e| e["change"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        changes,
        [
            format!("group:{}->{}", group_id(0), group_id(2)),
            "delete".to_string()
        ]
    );
}
