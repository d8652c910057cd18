//! The Twilio Super SIM stand-in under `/twilio` (provider-apis.md section 2; specs/twilio-supersim-v1.json).
//!
//! - Auth: HTTP Basic (Account SID or API key SID + token/secret).
//! - Writes are form-encoded with PascalCase fields (unknown fields are ignored, as Twilio
//!   does); responses are snake_case JSON.
//! - `POST /v1/Sims` registers a SIM (201, status `new`, no Fleet); `POST /v1/Sims/{Sid}` with
//!   `Status` answers 202 `scheduled` and settles after the asynchronous delay (or, under the
//!   async-failure fault, returns to where it was); so does a `Fleet` change (Twilio changelog
//!   2020-07-21: Fleet updates are asynchronous), refused with 83009 while the Sim is
//!   `scheduled`.
//!   Transitions: `ready` only from `new`; `active` needs a Fleet (83007); nothing returns to
//!   `new` (83010).
//! - Lists: `{sims, meta}` with `meta.next_page_url` pointing back at this sandbox.
//! - Errors: `{code, message, more_info, status}`; 20429 when too many requests are in flight.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

use super::inventory::{self, TWILIO_PREFIX};
use super::limits::{Limits, Refusal};
use super::shared::{link_origin, origin, Admitted, Shared, StandIn};

const PROVIDER: &str = "twilio";
pub const ACCOUNT_SID: &str = "AC00000000000000000000000000000001";
const FLEETS: [(&str, &str); 3] = [
    ("HF00000000000000000000000000000001", "default"),
    ("HF00000000000000000000000000000002", "reserve"),
    ("HF00000000000000000000000000000003", "quarantine"),
];

pub fn error(status: StatusCode, code: u32, message: impl Into<String>) -> Response {
    let body = json!({
        "code": code,
        "message": message.into(),
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status.as_u16(),
    });
    (status, Json(body)).into_response()
}

fn too_many_requests() -> Response {
    error(StatusCode::TOO_MANY_REQUESTS, 20429, "Too Many Requests")
}

fn server_error() -> Response {
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        20500,
        "Internal Server Error",
    )
}

/// Checks HTTP Basic credentials: an `AC…`/`SK…` username and a non-empty password (or exactly
/// the required token).
fn check_auth(headers: &HeaderMap, required: Option<&str>) -> Result<(), Response> {
    let unauthorized = || error(StatusCode::UNAUTHORIZED, 20003, "Authenticate");
    let encoded = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .ok_or_else(unauthorized)?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(unauthorized)?;
    let (user, password) = decoded.split_once(':').ok_or_else(unauthorized)?;
    let user_ok = (user.starts_with("AC") || user.starts_with("SK")) && user.len() == 34;
    let password_ok = match required {
        Some(required) => password == required,
        None => !password.is_empty(),
    };
    if user_ok && password_ok {
        Ok(())
    } else {
        Err(unauthorized())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    New,
    Ready,
    Active,
    Inactive,
}

impl Status {
    fn name(self) -> &'static str {
        match self {
            Status::New => "new",
            Status::Ready => "ready",
            Status::Active => "active",
            Status::Inactive => "inactive",
        }
    }

    fn settable(s: &str) -> Option<Status> {
        match s {
            "ready" => Some(Status::Ready),
            "active" => Some(Status::Active),
            "inactive" => Some(Status::Inactive),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
struct Scheduled {
    /// The status the Sim is moving to (its own while only the Fleet changes).
    to: Status,
    /// The Fleet it is moving to, when that changes too.
    fleet: Option<usize>,
    /// When the change was accepted; it takes effect one asynchronous delay later.
    requested: DateTime<Utc>,
    will_fail: bool,
    generation: u64,
}

#[derive(Debug, Clone)]
struct Sim {
    registered: bool,
    status: Status,
    fleet: Option<usize>,
    unique_name: Option<String>,
    scheduled: Option<Scheduled>,
    updated: Option<DateTime<Utc>>,
}

/// The Twilio account: SIMs `1..=2N`, of which `1..=N` are registered.
pub struct Inventory {
    sims: Vec<Sim>,
    pending: VecDeque<(Instant, usize, u64)>,
    generation: u64,
    created: DateTime<Utc>,
}

impl Inventory {
    pub fn new(n: u32) -> Self {
        let n = u64::from(n);
        let sims = (1..=2 * n)
            .map(|i| {
                let registered = i <= n;
                Sim {
                    registered,
                    status: match (registered, inventory::starts_suspended(i)) {
                        (false, _) => Status::New,
                        (true, true) => Status::Inactive,
                        (true, false) => Status::Active,
                    },
                    fleet: registered.then_some(0),
                    unique_name: None,
                    scheduled: None,
                    updated: None,
                }
            })
            .collect();
        Inventory {
            sims,
            pending: VecDeque::new(),
            generation: 0,
            created: Utc::now(),
        }
    }

    fn settle(&mut self, now: Instant, shared: &Shared) {
        while self.pending.front().is_some_and(|(due, _, _)| *due <= now) {
            let (_, index, generation) = self.pending.pop_front().expect("checked above");
            let sim = &mut self.sims[index];
            let Some(scheduled) = sim.scheduled.clone().filter(|s| s.generation == generation)
            else {
                continue; // replaced by a later update
            };
            sim.scheduled = None;
            let at = scheduled.requested
                + chrono::Duration::from_std(shared.config.async_delay).unwrap_or_default();
            sim.updated = Some(at);
            if let Some(f) = scheduled.fleet.filter(|_| !scheduled.will_fail) {
                let old = sim.fleet.map_or("none", |o| FLEETS[o].0);
                sim.fleet = Some(f);
                shared.journal.record(
                    PROVIDER,
                    inventory::iccid(TWILIO_PREFIX, index as u64 + 1),
                    format!("fleet:{old}->{}", FLEETS[f].0),
                    at,
                );
            }
            if !scheduled.will_fail && scheduled.to != sim.status {
                let change = format!("status:{}->{}", sim.status.name(), scheduled.to.name());
                sim.status = scheduled.to;
                shared.journal.record(
                    PROVIDER,
                    inventory::iccid(TWILIO_PREFIX, index as u64 + 1),
                    change,
                    at,
                );
            }
        }
    }

    /// The index of a registered SIM addressed by SID or unique name.
    fn find(&self, sid_or_name: &str) -> Option<usize> {
        let by_sid = sid_or_name
            .strip_prefix("HS")
            .filter(|hex| hex.len() == 32)
            .and_then(|hex| u64::from_str_radix(hex, 16).ok())
            .and_then(|i| usize::try_from(i).ok()?.checked_sub(1));
        let index = by_sid.or_else(|| {
            self.sims
                .iter()
                .position(|s| s.unique_name.as_deref() == Some(sid_or_name))
        })?;
        self.sims.get(index).filter(|s| s.registered).map(|_| index)
    }
}

fn sid(index: usize) -> String {
    format!("HS{:032x}", index + 1)
}

fn fleet_index(sid_or_name: &str) -> Option<usize> {
    FLEETS
        .iter()
        .position(|(sid, name)| *sid == sid_or_name || *name == sid_or_name)
}

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn sim_json(inv: &Inventory, index: usize, origin: &str) -> Value {
    let sim = &inv.sims[index];
    let sid = sid(index);
    let url = format!("{origin}/twilio/v1/Sims/{sid}");
    json!({
        "sid": sid,
        "unique_name": sim.unique_name,
        "account_sid": ACCOUNT_SID,
        "iccid": inventory::iccid(TWILIO_PREFIX, index as u64 + 1),
        "status": if sim.scheduled.is_some() { "scheduled" } else { sim.status.name() },
        "fleet_sid": sim.fleet.map(|f| FLEETS[f].0),
        "date_created": iso(inv.created),
        "date_updated": iso(sim.updated.unwrap_or(inv.created)),
        "url": url,
        "links": {
            "billing_periods": format!("{url}/BillingPeriods"),
            "sim_ip_addresses": format!("{url}/IpAddresses"),
        },
    })
}

fn form(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

async fn list_sims(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let params = form(raw.as_deref().unwrap_or("").as_bytes());
    let page_size = match param(&params, "PageSize").map(str::parse::<usize>) {
        None => 50,
        Some(Ok(s)) if (1..=1000).contains(&s) => s,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                20001,
                "PageSize must be between 1 and 1000",
            )
        }
    };
    let page: usize = param(&params, "Page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let start: usize = param(&params, "PageToken")
        .and_then(|t| t.strip_prefix("PT"))
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let status = param(&params, "Status");
    if status.is_some_and(|s| !["new", "ready", "active", "inactive", "scheduled"].contains(&s)) {
        return error(StatusCode::BAD_REQUEST, 20001, "Invalid Status");
    }
    let fleet = match param(&params, "Fleet") {
        Some(f) => match fleet_index(f) {
            Some(i) => Some(i),
            None => return Json(empty_page(&headers, &params, page_size)).into_response(),
        },
        None => None,
    };
    let inv = inventory(&shared, Instant::now());
    let matches = |i: usize| {
        let sim = &inv.sims[i];
        let shown = if sim.scheduled.is_some() {
            "scheduled"
        } else {
            sim.status.name()
        };
        sim.registered
            && status.is_none_or(|s| s == shown)
            && fleet.is_none_or(|f| sim.fleet == Some(f))
    };
    let origin = link_origin(&shared, &headers);
    let (sims, next): (Vec<Value>, Option<usize>) = if let Some(iccid) = param(&params, "Iccid") {
        let found = inventory::sim_number(TWILIO_PREFIX, iccid)
            .filter(|_| iccid.len() == 20)
            .and_then(|i| usize::try_from(i).ok()?.checked_sub(1))
            .filter(|&i| i < inv.sims.len() && matches(i));
        (
            found
                .map(|i| sim_json(&inv, i, &origin))
                .into_iter()
                .collect(),
            None,
        )
    } else {
        let mut out = Vec::with_capacity(page_size);
        let mut i = start;
        while i < inv.sims.len() && out.len() < page_size {
            if matches(i) {
                out.push(sim_json(&inv, i, &origin));
            }
            i += 1;
        }
        let more = (i..inv.sims.len()).any(matches);
        (out, more.then_some(i))
    };
    Json(json!({
        "sims": sims,
        "meta": page_meta(&origin, &params, page_size, page, start, next),
    }))
    .into_response()
}

/// A list page's `meta`: its own, first, previous and next page URLs, each keeping the
/// request's filters, as Twilio's list responses carry them.
fn page_meta(
    origin: &str,
    params: &[(String, String)],
    page_size: usize,
    page: usize,
    start: usize,
    next: Option<usize>,
) -> Value {
    let filters: String = params
        .iter()
        .filter(|(k, _)| matches!(k.as_str(), "Status" | "Fleet" | "Iccid"))
        .map(|(k, v)| {
            format!(
                "{k}={}&",
                url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>()
            )
        })
        .collect();
    let base = format!("{origin}/twilio/v1/Sims");
    let url = |page: usize, token: Option<usize>| {
        let token = token
            .map(|t| format!("&PageToken=PT{t}"))
            .unwrap_or_default();
        format!("{base}?{filters}PageSize={page_size}&Page={page}{token}")
    };
    json!({
        "first_page_url": url(0, None),
        "key": "sims",
        "next_page_url": next.map(|n| url(page + 1, Some(n))),
        "page": page,
        "page_size": page_size,
        "previous_page_url": if page > 0 { Some(url(page - 1, None)) } else { None },
        "url": url(page, (start > 0).then_some(start)),
    })
}

fn empty_page(headers: &HeaderMap, params: &[(String, String)], page_size: usize) -> Value {
    let url = format!(
        "{}/twilio/v1/Sims?PageSize={page_size}&Page=0",
        origin(headers)
    );
    let _ = params;
    json!({"sims": [], "meta": {"first_page_url": url, "key": "sims", "next_page_url": null, "page": 0,
        "page_size": page_size, "previous_page_url": null, "url": url}})
}

async fn get_sim(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(sid): Path<String>,
) -> Response {
    let inv = inventory(&shared, Instant::now());
    match inv.find(&sid) {
        Some(i) => Json(sim_json(&inv, i, &origin(&headers))).into_response(),
        None => not_found(&format!("/v1/Sims/{sid}")),
    }
}

fn not_found(path: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        20404,
        format!("The requested resource {path} was not found"),
    )
}

async fn register_sim(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = form(&body);
    let (Some(iccid), Some(code)) = (param(&params, "Iccid"), param(&params, "RegistrationCode"))
    else {
        return error(
            StatusCode::BAD_REQUEST,
            20001,
            "Missing required parameter Iccid or RegistrationCode in the post body",
        );
    };
    let mut inv = inventory(&shared, Instant::now());
    let index = inventory::sim_number(TWILIO_PREFIX, iccid)
        .filter(|_| iccid.len() == 20)
        .and_then(|i| usize::try_from(i).ok()?.checked_sub(1))
        .filter(|&i| i < inv.sims.len());
    let Some(index) = index else {
        return error(
            StatusCode::BAD_REQUEST,
            83002,
            "The ICCID and registration code combination cannot be registered",
        );
    };
    if inv.sims[index].registered {
        return error(
            StatusCode::CONFLICT,
            83003,
            "The Super SIM already belongs to this account",
        );
    }
    if code != inventory::registration_code(iccid) {
        return error(
            StatusCode::BAD_REQUEST,
            83002,
            "The ICCID and registration code combination cannot be registered",
        );
    }
    let at = Utc::now();
    let sim = &mut inv.sims[index];
    sim.registered = true;
    sim.status = Status::New;
    sim.fleet = None;
    sim.updated = Some(at);
    shared.journal.record(PROVIDER, iccid, "register", at);
    (
        StatusCode::CREATED,
        Json(sim_json(&inv, index, &origin(&headers))),
    )
        .into_response()
}

async fn update_sim(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(sid): Path<String>,
    body: Bytes,
) -> Response {
    let params = form(&body);
    let now = Instant::now();
    let mut inv = inventory(&shared, now);
    let Some(index) = inv.find(&sid) else {
        return not_found(&format!("/v1/Sims/{sid}"));
    };
    if param(&params, "AccountSid").is_some() {
        return error(
            StatusCode::BAD_REQUEST,
            20001,
            "Moving a Super SIM to another account is not supported by the sandbox",
        );
    }
    let new_fleet = match param(&params, "Fleet") {
        Some(f) => match fleet_index(f) {
            Some(i) => Some(i),
            None => {
                return error(
                    StatusCode::NOT_FOUND,
                    83006,
                    format!("The Fleet {f} was not found"),
                )
            }
        },
        None => None,
    };
    let new_status = match param(&params, "Status") {
        Some(s) => match Status::settable(s) {
            Some(s) => Some(s),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    20001,
                    format!("Invalid Status `{s}`: expected ready, active or inactive"),
                )
            }
        },
        None => None,
    };
    let sim = inv.sims[index].clone();
    let fleet_after = new_fleet.or(sim.fleet);
    if let Some(refused) = new_status.and_then(|to| refuse_status(&sim, to, fleet_after)) {
        return refused;
    }
    let at = Utc::now();
    if let Some(name) = param(&params, "UniqueName") {
        inv.sims[index].unique_name = Some(name.to_string());
    }
    // A Fleet change is asynchronous like a status change (Twilio changelog 2020-07-21): 202
    // `scheduled`, in effect after the delay; refused while the Sim is scheduled (83009).
    let fleet_change = new_fleet.filter(|f| Some(*f) != sim.fleet);
    if fleet_change.is_some() && sim.scheduled.is_some() {
        return error(
            StatusCode::CONFLICT,
            83009,
            "Unable to update your Super SIM's Fleet while it is in status scheduled",
        );
    }
    let effective = sim.scheduled.as_ref().map_or(sim.status, |s| s.to);
    let status_change = new_status.filter(|to| *to != effective || sim.scheduled.is_some());
    let mut code = StatusCode::OK;
    if fleet_change.is_some() || status_change.is_some() {
        inv.generation += 1;
        let generation = inv.generation;
        inv.sims[index].scheduled = Some(Scheduled {
            to: status_change.unwrap_or(effective),
            fleet: fleet_change.or(sim.scheduled.as_ref().and_then(|s| s.fleet)),
            requested: at,
            will_fail: shared.roll(shared.config.faults.fail_async),
            generation,
        });
        inv.sims[index].updated = Some(at);
        inv.pending
            .push_back((now + shared.config.async_delay, index, generation));
        code = StatusCode::ACCEPTED;
    }
    (code, Json(sim_json(&inv, index, &origin(&headers)))).into_response()
}

/// Twilio's refusal of a status change, if it refuses: `ready` only from `new`, and no
/// `active` without a Fleet. The status the change starts from is the one the SIM would have
/// once pending work settles.
fn refuse_status(sim: &Sim, to: Status, fleet_after: Option<usize>) -> Option<Response> {
    let from = sim.scheduled.as_ref().map_or(sim.status, |s| s.to);
    if to == Status::Ready && from != Status::New {
        return Some(error(
            StatusCode::BAD_REQUEST,
            83010,
            format!("Cannot change status from {} to ready", from.name()),
        ));
    }
    if to == Status::Active && fleet_after.is_none() {
        return Some(error(
            StatusCode::BAD_REQUEST,
            83007,
            "Cannot activate a Super SIM that has no Fleet; assign one with Fleet",
        ));
    }
    None
}

fn fleet_json(index: usize, origin: &str) -> Value {
    let (sid, name) = FLEETS[index];
    json!({
        "account_sid": ACCOUNT_SID, "sid": sid, "unique_name": name,
        "data_enabled": true, "data_limit": 1000, "data_metering": "payg",
        "date_created": "2026-01-01T00:00:00Z", "date_updated": "2026-01-01T00:00:00Z",
        "sms_commands_enabled": true, "sms_commands_url": null, "sms_commands_method": "POST",
        "network_access_profile_sid": "HA00000000000000000000000000000001",
        "ip_commands_url": null, "ip_commands_method": "POST",
        "url": format!("{origin}/twilio/v1/Fleets/{sid}"),
    })
}

async fn list_fleets(headers: HeaderMap) -> Response {
    let origin = origin(&headers);
    let url = format!("{origin}/twilio/v1/Fleets?PageSize=50&Page=0");
    let fleets: Vec<Value> = (0..FLEETS.len()).map(|i| fleet_json(i, &origin)).collect();
    Json(json!({"fleets": fleets, "meta": {"first_page_url": url, "key": "fleets", "next_page_url": null,
        "page": 0, "page_size": 50, "previous_page_url": null, "url": url}}))
    .into_response()
}

async fn get_fleet(headers: HeaderMap, Path(sid): Path<String>) -> Response {
    match fleet_index(&sid) {
        Some(i) => Json(fleet_json(i, &origin(&headers))).into_response(),
        None => not_found(&format!("/v1/Fleets/{sid}")),
    }
}

/// The Twilio routes, relative to `/twilio`.
fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/v1/Sims", get(list_sims).post(register_sim))
        .route("/v1/Sims/{sid}", get(get_sim).post(update_sim))
        .route("/v1/Fleets", get(list_fleets))
        .route("/v1/Fleets/{sid}", get(get_fleet))
}

/// The Twilio stand-in: its inventory.
pub struct Twilio {
    inventory: Mutex<Inventory>,
}

impl Twilio {
    pub fn new(sims: u32) -> Twilio {
        Twilio {
            inventory: Mutex::new(Inventory::new(sims)),
        }
    }
}

/// Locks the Twilio inventory after settling whatever is due at `now`.
fn inventory(shared: &Shared, now: Instant) -> std::sync::MutexGuard<'_, Inventory> {
    let mut inv = shared
        .stand_in::<Twilio>()
        .inventory
        .lock()
        .expect("twilio lock");
    inv.settle(now, shared);
    inv
}

impl StandIn for Twilio {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    fn router(&self) -> Router<Arc<Shared>> {
        router()
    }

    /// A cap on requests in flight; the place is given back when the request ends.
    fn admit<'a>(
        &self,
        limits: &'a Limits,
        _: &Method,
        _: &str,
        now: Instant,
    ) -> Result<Admitted<'a>, Refusal> {
        let window = limits.twilio_in_flight.admit(now)?;
        Ok(Admitted {
            window,
            in_flight: Some(&limits.twilio_in_flight),
        })
    }

    fn authorize(&self, shared: &Shared, _: &str, headers: &HeaderMap) -> Result<(), Response> {
        check_auth(headers, shared.config.require_token.as_deref())
    }

    fn not_found(&self, path: &str) -> Response {
        error(
            StatusCode::NOT_FOUND,
            20404,
            format!("The requested resource {path} was not found"),
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
        *self.inventory.lock().expect("twilio lock") = Inventory::new(sims);
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
