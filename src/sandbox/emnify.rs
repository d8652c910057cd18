//! The emnify stand-in under `/emnify` (provider-apis.md section 1; specs/emnify-sim-endpoint-euicc.json).
//!
//! - Auth: `POST /api/v1/authenticate {"application_token"}` → `{"auth_token"}` (a three-part,
//!   JWT-shaped token that expires after `token_ttl`); every other call needs `Bearer <auth_token>`.
//! - SIMs and endpoints: bare JSON arrays with `Link`/`X-*` paging headers; `PATCH`/`DELETE`
//!   answer 204; status objects `{id, description}`; only the documented SIM transitions
//!   (0→1, 0→4, 4→1, 1↔2) are accepted; a SIM attached to an endpoint cannot be deleted, nor an
//!   endpoint that still has a SIM.
//! - eUICCs: operations are scheduled with a JSON array (201), stay `Scheduled` for the
//!   asynchronous delay and then succeed, fail (fault dice, or an operation that cannot apply)
//!   or expire (validity shorter than the delay). Of two contradicting operations scheduled
//!   while both pending, only the first applies; the second fails.
//! - Errors: `{error_code, error_token, message}`; eUICC paths use `{status_code, message}`.
//!
//! The wire structs here are this module's own; the client side must not share them.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

use super::inventory::{self, EMNIFY_PREFIX};
use super::limits::{Limits, Refusal};
use super::paging::Page;
use super::shared::{bearer, origin, Admitted, Shared, StandIn};

mod bulk;

const PROVIDER: &str = "emnify";

// ---------------------------------------------------------------- errors

/// The standard emnify error body.
pub fn error(status: StatusCode, code: u32, token: &str, message: impl Into<String>) -> Response {
    let body = json!({"error_code": code, "error_token": token, "message": message.into()});
    (status, Json(body)).into_response()
}

/// The eUICC endpoints' error body.
fn euicc_error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"status_code": status.as_u16(), "message": message.into()})),
    )
        .into_response()
}

fn too_many_requests() -> Response {
    error(
        StatusCode::TOO_MANY_REQUESTS,
        1105,
        "TooManyRequests",
        "Too many requests, please slow down",
    )
}

fn server_error() -> Response {
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        1000,
        "InternalServerError",
        "Internal server error",
    )
}

fn not_found(what: &str, id: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        1201,
        "NotFound",
        format!("{what} with Id '{id}' not found."),
    )
}

fn bad_id(raw: &str) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        1000,
        "BadRequest",
        format!("Cannot parse parameter id as Long: For input string: \"{raw}\""),
    )
}

fn bad_body(e: impl std::fmt::Display) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        1000,
        "BadRequest",
        format!("Malformed request body: {e}"),
    )
}

fn validation(message: impl Into<String>) -> Response {
    error(
        StatusCode::UNPROCESSABLE_ENTITY,
        1400,
        "InputValidationFailed",
        message,
    )
}

// ---------------------------------------------------------------- auth

/// Issued auth tokens and their expiry (kept apart from the inventory lock: every request reads it).
#[derive(Default)]
pub struct Auth {
    tokens: RwLock<HashMap<String, Instant>>,
    issued: AtomicU64,
}

impl Auth {
    /// Checks `Authorization: Bearer <auth_token>`; the 401 to send otherwise.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), Response> {
        let Some(token) = bearer(headers) else {
            return Err(error(
                StatusCode::UNAUTHORIZED,
                1102,
                "InvalidToken",
                "Missing authorization token",
            ));
        };
        if token.split('.').count() != 3 {
            return Err((
                StatusCode::UNAUTHORIZED,
                Json(json!({"message": "token contains an invalid number of segments"})),
            )
                .into_response());
        }
        match self.tokens.read().expect("token lock").get(token) {
            Some(expiry) if *expiry > Instant::now() => Ok(()),
            Some(_) => Err(error(
                StatusCode::UNAUTHORIZED,
                1103,
                "TokenExpired",
                "Token expired",
            )),
            None => Err(error(
                StatusCode::UNAUTHORIZED,
                1102,
                "InvalidToken",
                "Invalid token",
            )),
        }
    }

    fn issue(&self, ttl: Duration) -> String {
        let n = self.issued.fetch_add(1, Ordering::Relaxed) + 1;
        let token = format!(
            "eyJhbGciOiJIUzUxMiJ9.eyJzYW5kYm94Ijp7{n:x}fQ.c2FuZGJveC1zaWduYXR1cmU{:x}",
            fastrand::u64(..)
        );
        self.tokens
            .write()
            .expect("token lock")
            .insert(token.clone(), Instant::now() + ttl);
        token
    }

    pub fn clear(&self) {
        self.tokens.write().expect("token lock").clear();
    }
}

#[derive(Deserialize)]
struct AuthenticateBody {
    application_token: Option<String>,
}

async fn authenticate(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let Ok(body) = serde_json::from_slice::<AuthenticateBody>(&body) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let accepted = match (&body.application_token, &shared.config.require_token) {
        (Some(t), Some(required)) => t == required,
        (Some(t), None) => !t.is_empty(),
        (None, _) => false, // user/password logins are not part of the sandbox
    };
    if !accepted {
        return StatusCode::UNAUTHORIZED.into_response(); // emnify answers most failures with an empty 401
    }
    let token = shared
        .stand_in::<Emnify>()
        .auth
        .issue(shared.config.token_ttl);
    Json(json!({"auth_token": token})).into_response()
}

// ---------------------------------------------------------------- state

const SIM_STATUS: [&str; 5] = [
    "Issued",
    "Activated",
    "Suspended",
    "Deleted",
    "Factory Test",
];
const ENDPOINT_STATUS: [&str; 3] = ["Enabled", "Disabled", "Deleted"];
const PROFILE_STATUS: [&str; 11] = [
    "",
    "Available",
    "Allocated",
    "Linked",
    "Confirmed",
    "Released",
    "Downloaded",
    "Installed",
    "Enabled",
    "Deleted",
    "Unknown",
];
const OP_STATUS: [&str; 6] = [
    "",
    "Scheduled",
    "Succeeded",
    "Failed",
    "Expired",
    "Canceled",
];
const OP_ACTION: [&str; 6] = [
    "",
    "Audit eUICC",
    "Download profile",
    "Enable profile",
    "Set fallback attribute",
    "Delete profile",
];
const PROFILE_ENABLED: u8 = 8;
const PROFILE_INSTALLED: u8 = 7;
const PROFILE_DELETED: u8 = 9;
/// Customer organisations that exist (targets of `move`).
const ORGANISATIONS: std::ops::RangeInclusive<u64> = 1..=10;

#[derive(Debug, Clone)]
struct Sim {
    status: u8,
    customer_org: u64,
    endpoint: Option<u64>,
    deleted: bool,
}

#[derive(Debug, Clone)]
struct Endpoint {
    status: u8,
    sim: Option<u64>,
    deleted: bool,
}

#[derive(Debug, Clone)]
struct Profile {
    iccid: String,
    status: u8,
    fallback_attribute: bool,
    name: &'static str,
}

#[derive(Debug, Clone)]
struct Operation {
    id: String,
    /// The order of creation (creation dates can tie).
    seq: u64,
    action: u8,
    status: u8,
    created: DateTime<Utc>,
    expiry: DateTime<Utc>,
    finalized: Option<DateTime<Utc>>,
    iccid: Option<String>,
    activation_code: Option<String>,
    enable: bool,
    /// Fault dice rolled at scheduling, so the outcome does not depend on when it is observed.
    will_fail: bool,
    expires: bool,
    /// An earlier pending operation this one contradicts: only the first applies.
    superseded_by: Option<String>,
    error: Option<(u32, String)>,
}

#[derive(Debug, Clone)]
struct Euicc {
    profiles: Vec<Profile>,
    operations: Vec<Operation>,
    last_audited: Option<DateTime<Utc>>,
}

/// The emnify account's inventory. SIM, endpoint and eUICC numbers are their ids (1-based).
pub struct Inventory {
    sims: Vec<Sim>,
    endpoints: Vec<Endpoint>,
    euiccs: Vec<Euicc>,
    pending: VecDeque<(Instant, usize, usize)>,
    operations_created: u64,
    created: DateTime<Utc>,
}

impl Inventory {
    pub fn new(n: u32) -> Self {
        let n = u64::from(n);
        let sims = (1..=n)
            .map(|i| Sim {
                status: if inventory::starts_suspended(i) { 2 } else { 1 },
                customer_org: 1,
                endpoint: Some(i),
                deleted: false,
            })
            .collect();
        let endpoints = (1..=n)
            .map(|i| Endpoint {
                status: 0,
                sim: Some(i),
                deleted: false,
            })
            .collect();
        let euiccs = (1..=n / 10)
            .map(|k| Euicc {
                profiles: vec![
                    Profile {
                        iccid: inventory::bootstrap_profile(k),
                        status: PROFILE_INSTALLED,
                        fallback_attribute: true,
                        name: "emnify bootstrap",
                    },
                    Profile {
                        iccid: inventory::operational_profile(k),
                        status: PROFILE_ENABLED,
                        fallback_attribute: false,
                        name: "operational",
                    },
                ],
                operations: Vec::new(),
                last_audited: None,
            })
            .collect();
        Inventory {
            sims,
            endpoints,
            euiccs,
            pending: VecDeque::new(),
            operations_created: 0,
            created: Utc::now(),
        }
    }

    fn sim(&self, id: u64) -> Option<&Sim> {
        let sim = self.sims.get(usize::try_from(id).ok()?.checked_sub(1)?)?;
        (!sim.deleted).then_some(sim)
    }

    fn endpoint(&self, id: u64) -> Option<&Endpoint> {
        let ep = self
            .endpoints
            .get(usize::try_from(id).ok()?.checked_sub(1)?)?;
        (!ep.deleted).then_some(ep)
    }

    fn euicc_index(&self, id: u64) -> Option<usize> {
        let index = usize::try_from(id).ok()?.checked_sub(1)?;
        (index < self.euiccs.len()).then_some(index)
    }

    /// Applies every operation whose time has come.
    fn settle(&mut self, now: Instant, shared: &Shared) {
        while self.pending.front().is_some_and(|(due, _, _)| *due <= now) {
            let (_, e, o) = self.pending.pop_front().expect("checked above");
            self.finish_operation(e, o, shared);
        }
    }

    fn finish_operation(&mut self, e: usize, o: usize, shared: &Shared) {
        let eid = inventory::eid(e as u64 + 1);
        let euicc = &mut self.euiccs[e];
        let op = euicc.operations[o].clone();
        let at =
            op.created + chrono::Duration::from_std(shared.config.async_delay).unwrap_or_default();
        let outcome: Result<String, (u32, String)> = if op.expires {
            let op = &mut euicc.operations[o];
            op.status = 4;
            op.finalized = Some(op.expiry);
            return;
        } else if let Some(first) = &op.superseded_by {
            Err((2, format!("Contradicts operation {first} scheduled earlier; only the first one is applied")))
        } else if op.will_fail {
            Err((
                1,
                format!("{} failed on the device", OP_ACTION[op.action as usize]),
            ))
        } else {
            apply_operation(euicc, &op, at, e as u64 + 1)
        };
        let op = &mut euicc.operations[o];
        op.finalized = Some(at);
        match outcome {
            Ok(change) => {
                op.status = 2;
                shared.journal.record(PROVIDER, eid, change, at);
            }
            Err(err) => {
                op.status = 3;
                op.error = Some(err);
            }
        }
    }
}

/// Carries out one eUICC operation on the profiles; the journal's change text, or why not.
fn apply_operation(
    euicc: &mut Euicc,
    op: &Operation,
    at: DateTime<Utc>,
    k: u64,
) -> Result<String, (u32, String)> {
    let find = |euicc: &Euicc, iccid: &str| {
        euicc
            .profiles
            .iter()
            .position(|p| p.iccid == iccid && p.status != PROFILE_DELETED)
    };
    match op.action {
        1 => {
            euicc.last_audited = Some(at);
            Ok("euicc-audit".into())
        }
        2 => {
            let iccid = inventory::downloaded_profile(k);
            if find(euicc, &iccid).is_some() {
                return Err((3, format!("Profile {iccid} is already installed")));
            }
            if op.enable {
                for p in &mut euicc.profiles {
                    if p.status == PROFILE_ENABLED {
                        p.status = PROFILE_INSTALLED;
                    }
                }
            }
            euicc.profiles.retain(|p| p.iccid != iccid);
            euicc.profiles.push(Profile {
                iccid: iccid.clone(),
                status: if op.enable {
                    PROFILE_ENABLED
                } else {
                    PROFILE_INSTALLED
                },
                fallback_attribute: false,
                name: "downloaded",
            });
            Ok(format!(
                "profile-download:{iccid}{}",
                if op.enable { ":enabled" } else { "" }
            ))
        }
        3 => {
            let iccid = op.iccid.as_deref().unwrap_or_default();
            let Some(i) = find(euicc, iccid) else {
                return Err((4, format!("Profile {iccid} is not installed on this eUICC")));
            };
            if euicc.profiles[i].status == PROFILE_ENABLED {
                return Ok(format!("profile-enable:{iccid}:already-enabled"));
            }
            for p in &mut euicc.profiles {
                if p.status == PROFILE_ENABLED {
                    p.status = PROFILE_INSTALLED;
                }
            }
            euicc.profiles[i].status = PROFILE_ENABLED;
            Ok(format!("profile-enable:{iccid}"))
        }
        4 => {
            let iccid = op.iccid.as_deref().unwrap_or_default();
            let Some(i) = find(euicc, iccid) else {
                return Err((4, format!("Profile {iccid} is not installed on this eUICC")));
            };
            if euicc.profiles[i].status == PROFILE_ENABLED {
                return Err((5, format!("Profile {iccid} is enabled; the fallback attribute needs a disabled profile")));
            }
            for p in &mut euicc.profiles {
                p.fallback_attribute = false;
            }
            euicc.profiles[i].fallback_attribute = true;
            Ok(format!("profile-fallback:{iccid}"))
        }
        5 => {
            let iccid = op.iccid.as_deref().unwrap_or_default();
            let Some(i) = find(euicc, iccid) else {
                return Err((4, format!("Profile {iccid} is not installed on this eUICC")));
            };
            if euicc.profiles[i].status == PROFILE_ENABLED {
                return Err((
                    6,
                    format!("Profile {iccid} is enabled and cannot be deleted"),
                ));
            }
            euicc.profiles[i].status = PROFILE_DELETED;
            euicc.profiles[i].fallback_attribute = false;
            Ok(format!("profile-delete:{iccid}"))
        }
        _ => Err((7, "Unknown action".into())),
    }
}

/// Whether two pending operations contradict (the provider would apply only the first).
fn contradicts(a: &Operation, b: &Operation) -> bool {
    let changes_enabled = |o: &Operation| o.action == 3 || (o.action == 2 && o.enable);
    (changes_enabled(a) && changes_enabled(b))
        || (a.action == 4 && b.action == 4)
        || (a.action == 2 && b.action == 2)
        || (a.iccid.is_some()
            && a.iccid == b.iccid
            && a.action != b.action
            && a.action != 1
            && b.action != 1)
}

// ---------------------------------------------------------------- rendering

fn ts(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string()
}

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn status_obj(id: u8, names: &[&str]) -> Value {
    json!({"id": id, "description": names[id as usize]})
}

fn org(id: u64) -> Value {
    let name = if id == 1 {
        "Sandbox Customer".to_string()
    } else {
        format!("Sandbox Customer {id}")
    };
    json!({"id": id, "name": name, "country": {"id": 205, "name": "Germany"}})
}

fn sim_json(inv: &Inventory, id: u64) -> Value {
    let sim = inv.sim(id).expect("caller checked");
    let iccid = inventory::iccid(EMNIFY_PREFIX, id);
    let mut v = json!({
        "id": id,
        "iccid": &iccid[..19],
        "iccid_with_luhn": iccid,
        "imsi": format!("29505{id:010}"),
        "msisdn": format!("4236639{id:08}"),
        "production_date": ts(inv.created),
        "status": status_obj(sim.status, &SIM_STATUS),
        "customer_org": org(sim.customer_org),
        "issuer_org": {"id": 2, "name": "emnify sandbox", "country": {"id": 205, "name": "Germany"}},
        "model": {"id": 1, "description": "Sandbox M2M SIM", "memory_size": 128,
                  "formfactor": {"id": 1, "name": "Triple-Cut"}, "manufacturer": {"id": 1, "name": "Sandbox"}},
    });
    if sim.status == 1 || sim.status == 2 {
        v["activation_date"] = json!(ts(inv.created));
    }
    if let Some(ep) = sim.endpoint {
        v["endpoint"] =
            json!({"id": ep, "name": format!("device-{ep}"), "organisation_id": sim.customer_org});
    }
    v
}

fn endpoint_json(inv: &Inventory, id: u64) -> Value {
    let ep = inv.endpoint(id).expect("caller checked");
    let mut v = json!({
        "id": id,
        "name": format!("device-{id}"),
        "tags": "sandbox",
        "created": ts(inv.created),
        "last_updated": ts(inv.created),
        "status": status_obj(ep.status, &ENDPOINT_STATUS),
        "service_profile": {"id": 1, "name": "Default Service Profile"},
        "tariff_profile": {"id": 1, "name": "Default Tariff Profile"},
        "ip_address": format!("10.{}.{}.{}", (id >> 16) & 255, (id >> 8) & 255, id & 255),
        "ip_address_space": {"id": 1},
        "imei_lock": false,
    });
    if let Some(sim_id) = ep.sim {
        if let Some(sim) = inv.sim(sim_id) {
            let iccid = inventory::iccid(EMNIFY_PREFIX, sim_id);
            v["sim"] = json!({"id": sim_id, "iccid": &iccid[..19], "iccid_with_luhn": iccid,
                "imsi": format!("29505{sim_id:010}"), "msisdn": format!("4236639{sim_id:08}"),
                "status": status_obj(sim.status, &SIM_STATUS)});
        }
    }
    v
}

fn euicc_json(inv: &Inventory, index: usize) -> Value {
    let e = &inv.euiccs[index];
    let k = index as u64 + 1;
    let profiles: Vec<Value> = e
        .profiles
        .iter()
        .map(|p| {
            json!({
                "iccid_with_luhn": p.iccid,
                "status": status_obj(p.status, &PROFILE_STATUS),
                "name": p.name,
                "customer_org": {"id": 1, "name": "Sandbox Customer"},
                "operator": {"id": 1, "name": "Sandbox Operator"},
                "preloaded": p.name != "downloaded",
                "fallback_allowed": true,
                "fallback_attribute": p.fallback_attribute,
                "profile_type": {"id": 5, "description": "IoT eUICC Profile"},
            })
        })
        .collect();
    json!({
        "id": k,
        "eid": inventory::eid(k),
        "created": iso(inv.created),
        "issuer_org": {"id": 2, "name": "emnify sandbox"},
        "customer_org": {"id": 1, "name": "Sandbox Customer"},
        "supported_profile_type": {"id": 5, "description": "IoT eUICC Profile"},
        "status": {"id": 1, "description": "Active"},
        "last_audited": e.last_audited.map(iso),
        "last_polled": null,
        "last_synced": null,
        "eim": {"id": 1, "description": "emnify eIM"},
        "profile": profiles,
    })
}

fn operation_json(op: &Operation) -> Value {
    let mut v = json!({
        "id": op.id,
        "action": status_obj(op.action, &OP_ACTION),
        "status": status_obj(op.status, &OP_STATUS),
        "creation_date": iso(op.created),
        "last_updated_at": iso(op.finalized.unwrap_or(op.created)),
        "expiry_date": iso(op.expiry),
        "user": {"id": 1, "name": "sandbox"},
    });
    if let Some(f) = op.finalized {
        v["finalization_date"] = json!(iso(f));
    }
    if let Some(iccid) = &op.iccid {
        v["iccid_with_luhn"] = json!(iccid);
    }
    if let Some((reason, message)) = &op.error {
        v["error"] = json!({"reason": reason, "message": message});
    }
    v
}

// ---------------------------------------------------------------- lists

#[derive(Deserialize, Default)]
struct ListQuery {
    q: Option<String>,
    page: Option<i64>,
    per_page: Option<i64>,
    #[serde(default)]
    sort: Option<String>,
}

/// Parses `q=field:value,field:value` against the allowed fields.
fn parse_q<'a>(q: Option<&'a str>, allowed: &[&str]) -> Result<Vec<(&'a str, &'a str)>, Response> {
    let Some(q) = q.filter(|q| !q.is_empty()) else {
        return Ok(Vec::new());
    };
    q.split(',')
        .map(|pair| {
            let (field, value) = pair.split_once(':').unwrap_or((pair, ""));
            if allowed.contains(&field) {
                Ok((field, value))
            } else {
                Err(error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    1301,
                    "InvalidQueryCriteria",
                    format!(
                        "Invalid query criteria '{field}'; allowed: {}",
                        allowed.join(", ")
                    ),
                ))
            }
        })
        .collect()
}

/// A bare JSON array with emnify's paging headers.
fn paged(
    headers: &HeaderMap,
    path: &str,
    page: Page,
    items: Vec<Value>,
    q: Option<&str>,
) -> Response {
    let base = format!("{}/emnify{path}", origin(headers));
    let q = q.map(|q| format!("&q={q}")).unwrap_or_default();
    let link =
        |p: usize, rel: &str| format!("<{base}?page={p}&per_page={}{q}>; rel=\"{rel}\"", page.size);
    let mut links = vec![link(1, "first")];
    if page.page > 1 {
        links.push(link(page.page - 1, "prev"));
    }
    if page.page < page.pages() {
        links.push(link(page.page + 1, "next"));
    }
    links.push(link(page.pages(), "last"));
    let mut response = Json(items).into_response();
    let h = response.headers_mut();
    let mut set = |name: &'static str, value: String| {
        h.insert(name, HeaderValue::from_str(&value).expect("ascii header"));
    };
    set("link", links.join(", "));
    set("x-count-per-page", page.size.to_string());
    set("x-current-page", page.page.to_string());
    set("x-total-count", page.total.to_string());
    set("x-total-pages", page.pages().to_string());
    set("x-sort", "id".into());
    response
}

fn number(s: &str) -> Option<u64> {
    s.parse().ok()
}

/// The eUICC addressed by a path id, or emnify's eUICC 404.
fn euicc_or_404(inv: &Inventory, raw: &str) -> Result<usize, Response> {
    number(raw)
        .and_then(|id| inv.euicc_index(id))
        .ok_or_else(|| {
            euicc_error(
                StatusCode::NOT_FOUND,
                format!("eUICC with id {raw} not found or not an IoT eUICC"),
            )
        })
}

/// A PATCH's SIM/endpoint id and JSON body, or emnify's 400.
fn id_and_body<T: serde::de::DeserializeOwned>(
    raw: &str,
    body: &[u8],
) -> Result<(u64, T), Response> {
    let id = number(raw).ok_or_else(|| bad_id(raw))?;
    let parsed = serde_json::from_slice(body).map_err(bad_body)?;
    Ok((id, parsed))
}

async fn list_sims(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Response {
    let filters = match parse_q(
        query.q.as_deref(),
        &[
            "id",
            "iccid",
            "iccid_with_luhn",
            "status",
            "customer_org",
            "endpoint",
            "imsi",
            "msisdn",
            "eid",
        ],
    ) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let inv = inventory(&shared, Instant::now());
    let n = inv.sims.len() as u64;
    // Exact identifier filters resolve to one id without scanning.
    let mut candidates: Box<dyn Iterator<Item = u64>> = Box::new(1..=n);
    for (field, value) in &filters {
        let one = match *field {
            "id" => Some(number(value)),
            "iccid" if value.len() == 19 => Some(inventory::sim_number(EMNIFY_PREFIX, value)),
            "iccid" | "iccid_with_luhn" => Some(inventory::sim_number(EMNIFY_PREFIX, value)),
            _ => None,
        };
        if let Some(one) = one {
            let ok = one.filter(|&i| {
                (1..=n).contains(&i) && {
                    // `iccid` holds the 19-digit form, `iccid_with_luhn` the 20-digit one.
                    (*field != "iccid" || value.len() == 19)
                        && (*field != "iccid_with_luhn" || value.len() == 20)
                }
            });
            candidates = Box::new(ok.into_iter());
        }
    }
    let matches = |id: u64| -> bool {
        let Some(sim) = inv.sim(id) else { return false };
        filters.iter().all(|(field, value)| match *field {
            "status" => number(value) == Some(u64::from(sim.status)),
            "customer_org" => number(value) == Some(sim.customer_org),
            "endpoint" => match *value {
                "null" => sim.endpoint.is_none(),
                v => number(v) == sim.endpoint,
            },
            "imsi" => *value == format!("29505{id:010}"),
            "msisdn" => *value == format!("4236639{id:08}"),
            "eid" => false,
            _ => true,
        })
    };
    let ids: Vec<u64> = if filters.is_empty() {
        // Unfiltered: pages are index ranges over the live SIMs (deleted ones are rare).
        candidates.filter(|&id| inv.sim(id).is_some()).collect()
    } else {
        candidates.filter(|&id| matches(id)).collect()
    };
    let page = Page::clamp(query.page, query.per_page, 2000, 2500, ids.len());
    let items = ids[page.range()]
        .iter()
        .map(|&id| sim_json(&inv, id))
        .collect();
    paged(&headers, "/api/v1/sim", page, items, query.q.as_deref())
}

async fn get_sim(State(shared): State<Arc<Shared>>, Path(raw): Path<String>) -> Response {
    let Some(id) = number(&raw) else {
        return bad_id(&raw);
    };
    let inv = inventory(&shared, Instant::now());
    match inv.sim(id) {
        Some(_) => Json(sim_json(&inv, id)).into_response(),
        None => not_found("SIM", &raw),
    }
}

#[derive(Deserialize)]
struct IdRef {
    id: Option<u64>,
}

#[derive(Deserialize)]
struct SimPatch {
    status: Option<IdRef>,
    customer_org: Option<IdRef>,
    issuer_org: Option<Value>,
    reseller_org: Option<Value>,
}

async fn patch_sim(
    State(shared): State<Arc<Shared>>,
    Path(raw): Path<String>,
    body: Bytes,
) -> Response {
    let (id, patch): (u64, SimPatch) = match id_and_body(&raw, &body) {
        Ok(parsed) => parsed,
        Err(r) => return r,
    };
    if patch.issuer_org.is_some() || patch.reseller_org.is_some() {
        return error(
            StatusCode::FORBIDDEN,
            1104,
            "Forbidden",
            "A customer organisation may only change status and customer_org",
        );
    }
    let mut inv = inventory(&shared, Instant::now());
    let Some(sim) = inv.sim(id).cloned() else {
        return not_found("SIM", &raw);
    };
    let iccid = inventory::iccid(EMNIFY_PREFIX, id);
    let new_status = match patch.status {
        Some(IdRef { id: Some(s) }) if s <= 4 => Some(s as u8),
        Some(_) => return validation("status.id must be one of 0, 1, 2, 4"),
        None => None,
    };
    if let Some(to) = new_status {
        let allowed = matches!((sim.status, to), (0, 1) | (0, 4) | (4, 1) | (1, 2) | (2, 1))
            || sim.status == to;
        if !allowed {
            return error(
                StatusCode::CONFLICT,
                1406,
                "NotAllowed",
                format!(
                    "SIM status transition from {} to {} is not allowed",
                    SIM_STATUS[sim.status as usize], SIM_STATUS[to as usize]
                ),
            );
        }
    }
    let new_org = match patch.customer_org {
        Some(IdRef { id: Some(org) }) if ORGANISATIONS.contains(&org) => Some(org),
        Some(IdRef { id }) => {
            return error(
                StatusCode::NOT_FOUND,
                1401,
                "InvalidReference",
                format!(
                    "Organisation with Id '{}' not found.",
                    id.map_or("null".into(), |i| i.to_string())
                ),
            )
        }
        None => None,
    };
    let now = Utc::now();
    let sim_mut = &mut inv.sims[id as usize - 1];
    if let Some(to) = new_status.filter(|to| *to != sim.status) {
        sim_mut.status = to;
        shared.journal.record(
            PROVIDER,
            &iccid,
            format!(
                "status:{}->{}",
                SIM_STATUS[sim.status as usize], SIM_STATUS[to as usize]
            ),
            now,
        );
    }
    if let Some(org) = new_org.filter(|org| *org != sim.customer_org) {
        sim_mut.customer_org = org;
        shared.journal.record(
            PROVIDER,
            &iccid,
            format!("customer_org:{}->{org}", sim.customer_org),
            now,
        );
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn delete_sim(State(shared): State<Arc<Shared>>, Path(raw): Path<String>) -> Response {
    let Some(id) = number(&raw) else {
        return bad_id(&raw);
    };
    let mut inv = inventory(&shared, Instant::now());
    if let Some(refused) = sim_delete_problem(&inv, id) {
        return refused.response();
    }
    delete_sim_now(&shared, &mut inv, id, Utc::now());
    StatusCode::NO_CONTENT.into_response()
}

/// Why deleting SIM `id` would be refused: unknown, still attached to an endpoint, or sold to
/// a customer organisation (a reseller cannot delete it: 403, for SIMs 99, 199, …).
fn sim_delete_problem(inv: &Inventory, id: u64) -> Option<Refused> {
    let Some(sim) = inv.sim(id) else {
        return Some(Refused {
            status: StatusCode::NOT_FOUND,
            code: 1401,
            token: "InvalidReference",
            message: format!("SIM with Id '{id}' not found."),
        });
    };
    if let Some(ep) = sim.endpoint {
        return Some(Refused {
            status: StatusCode::CONFLICT,
            code: 1406,
            token: "NotAllowed",
            message: format!("SIM {id} is assigned to endpoint {ep}; release it from the endpoint before deleting"),
        });
    }
    if inventory::emnify_delete_refused(id) {
        return Some(Refused {
            status: StatusCode::FORBIDDEN,
            code: 1104,
            token: "Forbidden",
            message: format!(
                "SIM {id} was sold to a customer organisation; a reseller cannot delete it"
            ),
        });
    }
    None
}

fn delete_sim_now(shared: &Shared, inv: &mut Inventory, id: u64, now: DateTime<Utc>) {
    inv.sims[id as usize - 1].deleted = true;
    shared
        .journal
        .record(PROVIDER, inventory::iccid(EMNIFY_PREFIX, id), "delete", now);
}

async fn list_endpoints(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Response {
    let filters = match parse_q(query.q.as_deref(), &["id", "status", "name"]) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let inv = inventory(&shared, Instant::now());
    let ids: Vec<u64> = (1..=inv.endpoints.len() as u64)
        .filter(|&id| {
            inv.endpoint(id).is_some_and(|ep| {
                filters.iter().all(|(f, v)| match *f {
                    "id" => number(v) == Some(id),
                    "status" => number(v) == Some(u64::from(ep.status)),
                    "name" => *v == format!("device-{id}"),
                    _ => true,
                })
            })
        })
        .collect();
    let page = Page::clamp(query.page, query.per_page, 1000, 2500, ids.len());
    let items = ids[page.range()]
        .iter()
        .map(|&id| endpoint_json(&inv, id))
        .collect();
    paged(
        &headers,
        "/api/v1/endpoint",
        page,
        items,
        query.q.as_deref(),
    )
}

async fn get_endpoint(State(shared): State<Arc<Shared>>, Path(raw): Path<String>) -> Response {
    let Some(id) = number(&raw) else {
        return bad_id(&raw);
    };
    let inv = inventory(&shared, Instant::now());
    match inv.endpoint(id) {
        Some(_) => Json(endpoint_json(&inv, id)).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            1401,
            "InvalidReference",
            format!("Endpoint with Id '{raw}' not found."),
        ),
    }
}

/// The fields of an endpoint update the sandbox acts on; others (`name`, `tags`…) are
/// accepted and ignored (names are derived from ids in the sandbox).
#[derive(Deserialize)]
struct EndpointPatch {
    status: Option<IdRef>,
    /// `{"id": null}` releases the SIM; `{"id": N}` assigns SIM N.
    sim: Option<IdRef>,
}

async fn patch_endpoint(
    State(shared): State<Arc<Shared>>,
    Path(raw): Path<String>,
    body: Bytes,
) -> Response {
    let (id, patch): (u64, EndpointPatch) = match id_and_body(&raw, &body) {
        Ok(parsed) => parsed,
        Err(r) => return r,
    };
    let mut inv = inventory(&shared, Instant::now());
    if let Some(refused) = endpoint_update_problem(&shared, &inv, id, &patch) {
        return refused.response();
    }
    apply_endpoint_update(&shared, &mut inv, id, &patch, Utc::now());
    StatusCode::NO_CONTENT.into_response()
}

/// Why the platform refuses an item: an error answer not yet sent (bulk requests gather them).
struct Refused {
    status: StatusCode,
    code: u32,
    token: &'static str,
    message: String,
}

impl Refused {
    fn response(&self) -> Response {
        error(self.status, self.code, self.token, self.message.clone())
    }
}

/// Why an update of endpoint `id` would be refused, checked before anything is applied.
fn endpoint_update_problem(
    shared: &Shared,
    inv: &Inventory,
    id: u64,
    patch: &EndpointPatch,
) -> Option<Refused> {
    let invalid = |code, token, message: String| {
        Some(Refused {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code,
            token,
            message,
        })
    };
    if inv.endpoint(id).is_none() {
        return Some(Refused {
            status: StatusCode::NOT_FOUND,
            code: 1401,
            token: "InvalidReference",
            message: format!("Endpoint with Id '{id}' not found."),
        });
    }
    if let Some(status) = &patch.status {
        if status.id.filter(|s| *s <= 1).is_none() {
            return invalid(
                1400,
                "InputValidationFailed",
                "Update endpoint validation error: status.id must be 0 (Enabled) or 1 (Disabled)"
                    .into(),
            );
        }
        if shared.config.refused_endpoints.contains(&id) {
            return invalid(
                1400,
                "InputValidationFailed",
                format!("Status is invalid: endpoint {id} is locked against status changes"),
            );
        }
    }
    if let Some(new) = patch.sim.as_ref().and_then(|s| s.id) {
        match inv.sim(new) {
            None => {
                return invalid(
                    1401,
                    "InvalidReference",
                    format!("SIM with Id '{new}' not found."),
                )
            }
            Some(s) if s.endpoint.is_some_and(|e| e != id) => {
                return Some(Refused {
                    status: StatusCode::CONFLICT,
                    code: 1405,
                    token: "Duplicated",
                    message: format!("SIM {new} is already assigned to another endpoint"),
                })
            }
            Some(_) => {}
        }
    }
    None
}

/// Applies an update [`endpoint_update_problem`] found nothing wrong with, journaling each
/// change.
fn apply_endpoint_update(
    shared: &Shared,
    inv: &mut Inventory,
    id: u64,
    patch: &EndpointPatch,
    now: DateTime<Utc>,
) {
    let Some(ep) = inv.endpoint(id).cloned() else {
        return;
    };
    if let Some(to) = patch.status.as_ref().and_then(|s| s.id).map(|s| s as u8) {
        if to != ep.status {
            let t = endpoint_target(inv, id);
            inv.endpoints[id as usize - 1].status = to;
            shared.journal.record(
                PROVIDER,
                t,
                format!(
                    "endpoint_status:{}->{}",
                    ENDPOINT_STATUS[ep.status as usize], ENDPOINT_STATUS[to as usize]
                ),
                now,
            );
        }
    }
    if let Some(sim) = &patch.sim {
        // Checked above: it cannot be refused now.
        let _ = assign_endpoint_sim(shared, inv, id, &ep, sim.id, now);
    }
}

/// What the journal names an endpoint's change by: its SIM's ICCID, or the endpoint itself.
fn endpoint_target(inv: &Inventory, id: u64) -> String {
    inv.endpoints[id as usize - 1]
        .sim
        .map_or(format!("endpoint:{id}"), |s| {
            inventory::iccid(EMNIFY_PREFIX, s)
        })
}

/// Assigns SIM `sim` to endpoint `id`, or releases its SIM when `sim` is `None`; a SIM
/// unknown or held by another endpoint is refused as the platform refuses it.
fn assign_endpoint_sim(
    shared: &Shared,
    inv: &mut Inventory,
    id: u64,
    ep: &Endpoint,
    sim: Option<u64>,
    now: chrono::DateTime<Utc>,
) -> Result<(), Response> {
    match sim {
        None => {
            if let Some(old) = ep.sim {
                let t = endpoint_target(inv, id);
                inv.endpoints[id as usize - 1].sim = None;
                if let Some(s) = inv.sims.get_mut(old as usize - 1) {
                    s.endpoint = None;
                }
                shared
                    .journal
                    .record(PROVIDER, t, format!("endpoint_sim:released-from:{id}"), now);
            }
        }
        Some(new) => {
            let Some(s) = inv.sim(new) else {
                return Err(error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    1401,
                    "InvalidReference",
                    format!("SIM with Id '{new}' not found."),
                ));
            };
            if s.endpoint.is_some_and(|e| e != id) {
                return Err(error(
                    StatusCode::CONFLICT,
                    1405,
                    "Duplicated",
                    format!("SIM {new} is already assigned to another endpoint"),
                ));
            }
            if ep.sim != Some(new) {
                if let Some(old) = ep.sim {
                    inv.sims[old as usize - 1].endpoint = None;
                }
                inv.endpoints[id as usize - 1].sim = Some(new);
                inv.sims[new as usize - 1].endpoint = Some(id);
                shared.journal.record(
                    PROVIDER,
                    inventory::iccid(EMNIFY_PREFIX, new),
                    format!("endpoint_sim:assigned-to:{id}"),
                    now,
                );
            }
        }
    }
    Ok(())
}

async fn delete_endpoint(State(shared): State<Arc<Shared>>, Path(raw): Path<String>) -> Response {
    let Some(id) = number(&raw) else {
        return bad_id(&raw);
    };
    let mut inv = inventory(&shared, Instant::now());
    let Some(ep) = inv.endpoint(id) else {
        return error(
            StatusCode::NOT_FOUND,
            1401,
            "InvalidReference",
            format!("Endpoint with Id '{raw}' not found."),
        );
    };
    if let Some(sim) = ep.sim {
        return error(
            StatusCode::CONFLICT,
            1406,
            "NotAllowed",
            format!("Endpoint {id} still has SIM {sim} assigned"),
        );
    }
    inv.endpoints[id as usize - 1].deleted = true;
    shared.journal.record(
        PROVIDER,
        format!("endpoint:{id}"),
        "endpoint_delete",
        Utc::now(),
    );
    StatusCode::NO_CONTENT.into_response()
}

// ---------------------------------------------------------------- eUICC

async fn list_euiccs(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Response {
    let filters = match parse_q(
        query.q.as_deref(),
        &["id", "eid", "supported_profile_type", "status", "eim"],
    ) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let inv = inventory(&shared, Instant::now());
    let count = inv.euiccs.len() as u64;
    let mut indexes: Vec<usize> = (0..inv.euiccs.len()).collect();
    for (field, value) in &filters {
        indexes = match *field {
            "eid" => inventory::euicc_number(value)
                .filter(|k| *k <= count)
                .map(|k| k as usize - 1)
                .into_iter()
                .collect(),
            "id" => number(value)
                .filter(|k| (1..=count).contains(k))
                .map(|k| k as usize - 1)
                .into_iter()
                .collect(),
            "status" => indexes.into_iter().filter(|_| *value == "1").collect(),
            _ => indexes,
        };
    }
    let page = Page::clamp(query.page, query.per_page, 100, 1000, indexes.len());
    let items = indexes[page.range()]
        .iter()
        .map(|&i| euicc_json(&inv, i))
        .collect();
    paged(&headers, "/api/v1/euicc", page, items, query.q.as_deref())
}

async fn get_euicc(State(shared): State<Arc<Shared>>, Path(raw): Path<String>) -> Response {
    let inv = inventory(&shared, Instant::now());
    match euicc_or_404(&inv, &raw) {
        Ok(i) => Json(euicc_json(&inv, i)).into_response(),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
struct OperationRequest {
    action: IdRef,
    validity_period: Option<i64>,
    iccid_with_luhn: Option<String>,
    activation_code: Option<String>,
    enable: Option<bool>,
    rollback: Option<bool>,
}

/// What is wrong with one requested eUICC operation, if anything. `rollback` is accepted
/// as is: the sandbox's profiles never fail to connect.
fn operation_problem(r: &OperationRequest) -> Option<String> {
    let action = r.action.id.unwrap_or(0);
    if !(1..=5).contains(&action) {
        Some("action.id must be 1..5".to_string())
    } else if r
        .validity_period
        .is_some_and(|v| !(1..=86_400).contains(&v))
    {
        Some("validity_period must be 1..86400".into())
    } else if action == 2
        && r.activation_code
            .as_deref()
            .is_none_or(|c| crate::job::model::ActivationCode::parse(c).is_err())
    {
        Some("activation_code `1$<SM-DP+ address>$<matching id>` is required for action 2".into())
    } else if (3..=5).contains(&action) && r.iccid_with_luhn.as_deref().is_none_or(str::is_empty) {
        Some(format!("iccid_with_luhn is required for action {action}"))
    } else {
        let _ = r.rollback;
        None
    }
}

async fn schedule_operations(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    body: Bytes,
) -> Response {
    let requests: Vec<OperationRequest> = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return euicc_error(
                StatusCode::BAD_REQUEST,
                format!("Request body must be a JSON array of operations: {e}"),
            )
        }
    };
    if requests.is_empty() {
        return euicc_error(
            StatusCode::BAD_REQUEST,
            "At least one operation is required",
        );
    }
    for (i, r) in requests.iter().enumerate() {
        if let Some(problem) = operation_problem(r) {
            return euicc_error(StatusCode::BAD_REQUEST, format!("operation {i}: {problem}"));
        }
    }
    let now = Instant::now();
    let mut inv = inventory(&shared, now);
    let e = match euicc_or_404(&inv, &raw) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let created = Utc::now();
    let delay = shared.config.async_delay;
    let mut out = Vec::new();
    let mut links = Vec::new();
    for r in requests {
        inv.operations_created += 1;
        let validity = r.validity_period.unwrap_or(86_400) as u64;
        let mut op = Operation {
            seq: inv.operations_created,
            // UUIDs whose order says nothing of when they were made, as emnify's.
            id: format!(
                "{:08x}-0000-4000-8000-{:012x}",
                (inv.operations_created as u32).wrapping_mul(0x9E37_79B9),
                inv.operations_created
            ),
            action: r.action.id.unwrap_or(0) as u8,
            status: 1,
            created,
            expiry: created + chrono::Duration::seconds(validity as i64),
            finalized: None,
            iccid: r.iccid_with_luhn,
            activation_code: r.activation_code,
            enable: r.enable.unwrap_or(false),
            will_fail: shared.roll(shared.config.faults.fail_async),
            expires: Duration::from_secs(validity) < delay,
            superseded_by: None,
            error: None,
        };
        let euicc = &inv.euiccs[e];
        op.superseded_by = euicc
            .operations
            .iter()
            .find(|earlier| {
                earlier.status == 1 && earlier.superseded_by.is_none() && contradicts(earlier, &op)
            })
            .map(|earlier| earlier.id.clone());
        let _ = &op.activation_code;
        links.push(format!(
            "<{}/emnify/api/v1/euicc/{}/operation/{}>",
            origin(&headers),
            e + 1,
            op.id
        ));
        out.push(operation_json(&op));
        let index = inv.euiccs[e].operations.len();
        inv.euiccs[e].operations.push(op);
        inv.pending.push_back((now + delay, e, index));
    }
    let mut response = (StatusCode::CREATED, Json(out)).into_response();
    response.headers_mut().insert(
        "link",
        HeaderValue::from_str(&links.join(", ")).expect("ascii"),
    );
    response
}

async fn list_operations(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    Query(query): Query<ListQuery>,
) -> Response {
    let filters = match parse_q(
        query.q.as_deref(),
        &["id", "action", "status", "iccid_with_luhn"],
    ) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let inv = inventory(&shared, Instant::now());
    let e = match euicc_or_404(&inv, &raw) {
        Ok(e) => e,
        Err(r) => return r,
    };
    // emnify states no order for this list, and its pages hold at most 100 (the default): in
    // id order (UUIDs, unrelated to time) unless `sort` asks for the creation date.
    let mut listed: Vec<&Operation> = inv.euiccs[e].operations.iter().collect();
    match query.sort.as_deref() {
        Some("creation_date") => listed.sort_by_key(|op| (op.created, op.seq)),
        Some("-creation_date") => listed.sort_by_key(|op| std::cmp::Reverse((op.created, op.seq))),
        _ => listed.sort_by(|a, b| a.id.cmp(&b.id)),
    }
    let ops: Vec<Value> = listed
        .into_iter()
        .filter(|op| {
            filters.iter().all(|(f, v)| match *f {
                "id" => op.id == *v,
                "action" => number(v) == Some(u64::from(op.action)),
                "status" => number(v) == Some(u64::from(op.status)),
                "iccid_with_luhn" => op.iccid.as_deref() == Some(*v),
                _ => true,
            })
        })
        .map(operation_json)
        .collect();
    let page = Page::clamp(query.page, query.per_page, 100, 100, ops.len());
    let items = ops[page.range()].to_vec();
    paged(
        &headers,
        &format!("/api/v1/euicc/{}/operation", e + 1),
        page,
        items,
        query.q.as_deref(),
    )
}

async fn get_operation(
    State(shared): State<Arc<Shared>>,
    Path((raw, op_id)): Path<(String, String)>,
) -> Response {
    let inv = inventory(&shared, Instant::now());
    let e = match euicc_or_404(&inv, &raw) {
        Ok(e) => e,
        Err(r) => return r,
    };
    match inv.euiccs[e].operations.iter().find(|op| op.id == op_id) {
        Some(op) => Json(operation_json(op)).into_response(),
        None => euicc_error(
            StatusCode::NOT_FOUND,
            format!("Operation {op_id} not found"),
        ),
    }
}

fn lookup(
    names: &'static [&'static str],
    skip_empty: bool,
) -> impl Fn() -> std::future::Ready<Json<Value>> + Clone {
    move || {
        let list: Vec<Value> = names
            .iter()
            .enumerate()
            .filter(|(_, n)| !(skip_empty && n.is_empty()))
            .map(|(id, n)| json!({"id": id, "description": n}))
            .collect();
        std::future::ready(Json(Value::Array(list)))
    }
}

/// The emnify routes, relative to `/emnify`.
fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/api/v1/authenticate", post(authenticate))
        .route("/api/v1/sim", get(list_sims))
        .route("/api/v1/sim/status", get(lookup(&SIM_STATUS, false)))
        .route(
            "/api/v1/sim/multi",
            axum::routing::delete(bulk::delete_sims),
        )
        .route(
            "/api/v2/endpoint/multi",
            axum::routing::patch(bulk::patch_endpoints),
        )
        .route(
            "/api/v1/sim/{sim_id}",
            get(get_sim).patch(patch_sim).delete(delete_sim),
        )
        .route("/api/v1/endpoint", get(list_endpoints))
        .route(
            "/api/v1/endpoint/status",
            get(lookup(&ENDPOINT_STATUS, false)),
        )
        .route(
            "/api/v1/endpoint/{endpoint_id}",
            get(get_endpoint)
                .patch(patch_endpoint)
                .delete(delete_endpoint),
        )
        .route("/api/v1/euicc", get(list_euiccs))
        .route(
            "/api/v1/euicc/operation/status",
            get(lookup(&OP_STATUS, true)),
        )
        .route(
            "/api/v1/euicc/operation/action",
            get(lookup(&OP_ACTION, true)),
        )
        .route(
            "/api/v1/euicc/profile/status",
            get(lookup(&PROFILE_STATUS, true)),
        )
        .route("/api/v1/euicc/{euicc_id}", get(get_euicc))
        .route(
            "/api/v1/euicc/{euicc_id}/operation",
            get(list_operations).post(schedule_operations),
        )
        .route(
            "/api/v1/euicc/{euicc_id}/operation/{operation_id}",
            get(get_operation),
        )
}

/// The emnify stand-in: its issued auth tokens and its inventory.
pub struct Emnify {
    auth: Auth,
    inventory: Mutex<Inventory>,
}

impl Emnify {
    pub fn new(sims: u32) -> Emnify {
        Emnify {
            auth: Auth::default(),
            inventory: Mutex::new(Inventory::new(sims)),
        }
    }
}

/// Locks the emnify inventory after settling whatever is due at `now`.
fn inventory(shared: &Shared, now: Instant) -> std::sync::MutexGuard<'_, Inventory> {
    let mut inv = shared
        .stand_in::<Emnify>()
        .inventory
        .lock()
        .expect("emnify lock");
    inv.settle(now, shared);
    inv
}

impl StandIn for Emnify {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    fn router(&self) -> Router<Arc<Shared>> {
        router()
    }

    /// 2,000 requests per IP in any 5 minutes, then the per-path limits.
    fn admit<'a>(
        &self,
        limits: &'a Limits,
        method: &Method,
        route: &str,
        now: Instant,
    ) -> Result<Admitted<'a>, Refusal> {
        limits.emnify.per_ip.admit(now)?;
        let window = match limits.emnify.for_route(method, route) {
            Some(l) => l.admit(now)?,
            None => None,
        };
        Ok(Admitted {
            window,
            in_flight: None,
        })
    }

    /// `POST /authenticate` is open; everything else needs a current auth token.
    fn authorize(&self, _: &Shared, route: &str, headers: &HeaderMap) -> Result<(), Response> {
        if route.ends_with("/api/v1/authenticate") {
            return Ok(());
        }
        self.auth.check(headers)
    }

    fn not_found(&self, path: &str) -> Response {
        error(
            StatusCode::NOT_FOUND,
            1201,
            "NotFound",
            format!("No resource at {path}"),
        )
    }

    fn too_many_requests(&self) -> Response {
        too_many_requests()
    }

    fn server_error(&self) -> Response {
        server_error()
    }

    fn settle(&self, shared: &Shared, now: Instant) {
        drop(inventory(shared, now));
    }

    fn reset(&self, sims: u32) {
        *self.inventory.lock().expect("emnify lock") = Inventory::new(sims);
        self.auth.clear();
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
