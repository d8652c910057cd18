//! emnify's bulk requests (specs/emnify-bulk-endpoint.json): `PATCH /api/v2/endpoint/multi`
//! updates a list of endpoints (status, SIM assignment) and `DELETE /api/v1/sim/multi` deletes a
//! list of SIMs; each answers 204 with no body. One request counts once against the limits,
//! whatever its size.
//!
//! The document states no maximum for these two (only the bulk create's 2,000) and not whether
//! one bad item fails the whole request. The sandbox takes at most `bulk_max_items` items
//! (more: 422) and, by default, refuses the whole request when any item is bad — nothing is
//! applied, the answer names every bad item (`errors`, the shape of
//! `BulkUpdateEndpointRequestUnprocessableEntityError`); with `bulk_partial` it applies the good
//! items and still answers with the bad ones. Each applied item is journaled as its own change.

use super::*;

/// One item of `PATCH /api/v2/endpoint/multi`: the endpoint's id and the fields to change.
#[derive(Deserialize)]
struct EndpointItem {
    id: u64,
    #[serde(flatten)]
    patch: EndpointPatch,
}

/// One item of `DELETE /api/v1/sim/multi`.
#[derive(Deserialize)]
struct SimItem {
    id: u64,
}

/// The answer to a bulk request with bad items: the status of the first refusal, one entry per
/// bad item.
fn refused_items(refusals: &[(u64, Refused)], what: &str) -> Response {
    let status = refusals[0].1.status;
    let errors: Vec<Value> = refusals
        .iter()
        .map(|(id, r)| {
            json!({"error_code": r.code, "error_token": r.token, "message": format!("{what} {id}: {}", r.message)})
        })
        .collect();
    let body = json!({
        "error_code": refusals[0].1.code,
        "error_token": refusals[0].1.token,
        "message": format!("{} of the {what}s in the request could not be processed", refusals.len()),
        "errors": errors,
    });
    (status, Json(body)).into_response()
}

/// Parses a bulk body and checks its size.
fn items<T: serde::de::DeserializeOwned>(shared: &Shared, body: &[u8]) -> Result<Vec<T>, Response> {
    let items: Vec<T> = serde_json::from_slice(body).map_err(bad_body)?;
    let max = shared.config.bulk_max_items;
    if items.len() > max {
        let body = json!({
            "error_code": 1400,
            "error_token": "InputValidationFailed",
            "message": format!("Too many items: {} in one request, at most {max}", items.len()),
            "errors": [],
        });
        return Err((StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response());
    }
    Ok(items)
}

pub(super) async fn patch_endpoints(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let items: Vec<EndpointItem> = match items(&shared, &body) {
        Ok(items) => items,
        Err(r) => return r,
    };
    let mut inv = inventory(&shared, Instant::now());
    let refusals: Vec<(u64, Refused)> = items
        .iter()
        .filter_map(|i| endpoint_update_problem(&shared, &inv, i.id, &i.patch).map(|r| (i.id, r)))
        .collect();
    if !refusals.is_empty() && !shared.config.bulk_partial {
        return refused_items(&refusals, "endpoint");
    }
    let now = Utc::now();
    for item in &items {
        if !refusals.iter().any(|(id, _)| *id == item.id) {
            apply_endpoint_update(&shared, &mut inv, item.id, &item.patch, now);
        }
    }
    match refusals.is_empty() {
        true => StatusCode::NO_CONTENT.into_response(),
        false => refused_items(&refusals, "endpoint"),
    }
}

pub(super) async fn delete_sims(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let items: Vec<SimItem> = match items(&shared, &body) {
        Ok(items) => items,
        Err(r) => return r,
    };
    let mut inv = inventory(&shared, Instant::now());
    let refusals: Vec<(u64, Refused)> = items
        .iter()
        .filter_map(|i| sim_delete_problem(&inv, i.id).map(|r| (i.id, r)))
        .collect();
    if !refusals.is_empty() && !shared.config.bulk_partial {
        return refused_items(&refusals, "SIM");
    }
    let now = Utc::now();
    for item in &items {
        if !refusals.iter().any(|(id, _)| *id == item.id) {
            delete_sim_now(&shared, &mut inv, item.id, now);
        }
    }
    match refusals.is_empty() {
        true => StatusCode::NO_CONTENT.into_response(),
        false => refused_items(&refusals, "SIM"),
    }
}
