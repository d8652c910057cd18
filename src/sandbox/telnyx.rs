//! The Telnyx Wireless stand-in under `/telnyx` (provider-apis.md section 3; specs/telnyx-wireless.json).
//!
//! - Auth: `Authorization: Bearer <API key>`.
//! - `{data}` / `{data, meta}` envelopes; bracketed query keys (`filter[iccid]`, `page[number]`)
//!   with comma-joined arrays.
//! - `actions/enable|disable|set_standby` answer 202 with a SIM Card Action `in-progress`; the
//!   SIM shows `enabling`/`disabling`/`setting_standby` with `actions_in_progress` until the
//!   asynchronous delay passes, then the action is `completed` (or `failed`, under the fault,
//!   with the SIM back where it was). Enable and standby need a SIM card group; nothing changes
//!   while `data_limit_exceeded` or while another action is in progress.
//! - `POST /actions/register/sim_cards` registers many codes in one request (202, `registering`).
//! - `DELETE /sim_cards/{id}` answers 200 with the SIM `disabling`; it is gone after the delay.
//! - Errors: `{errors: [{code (string), title, detail, source}]}`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

use super::inventory::{self, TELNYX_PREFIX};
use super::limits::{Limits, Refusal};
use super::paging::Page;
use super::shared::{bearer, Admitted, Shared, StandIn};

const PROVIDER: &str = "telnyx";
const GROUPS: [&str; 3] = ["default", "reserve", "quarantine"];

pub fn error(status: StatusCode, code: &str, title: &str, detail: impl Into<String>) -> Response {
    let body = json!({"errors": [{"code": code, "title": title, "detail": detail.into()}]});
    (status, Json(body)).into_response()
}

fn error_at(
    status: StatusCode,
    code: &str,
    title: &str,
    detail: impl Into<String>,
    pointer: &str,
) -> Response {
    let body = json!({"errors": [{"code": code, "title": title, "detail": detail.into(), "source": {"pointer": pointer}}]});
    (status, Json(body)).into_response()
}

fn too_many_requests() -> Response {
    error(
        StatusCode::TOO_MANY_REQUESTS,
        "10011",
        "Too many requests",
        "You have exceeded the maximum number of allowed requests.",
    )
}

fn server_error() -> Response {
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "10007",
        "Unexpected error",
        "An unexpected error occurred.",
    )
}

/// Checks `Authorization: Bearer <key>`.
fn check_auth(headers: &HeaderMap, required: Option<&str>) -> Result<(), Response> {
    let key = bearer(headers);
    let ok = match (key, required) {
        (Some(k), Some(required)) => k == required,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if ok {
        Ok(())
    } else {
        Err(error(
            StatusCode::UNAUTHORIZED,
            "10009",
            "Authentication failed",
            "The API key is missing or invalid.",
        ))
    }
}

pub fn sim_id(number: u64) -> String {
    format!("5e1c0000-0000-4000-8000-{number:012x}")
}

fn sim_number(id: &str) -> Option<u64> {
    u64::from_str_radix(id.strip_prefix("5e1c0000-0000-4000-8000-")?, 16).ok()
}

pub fn group_id(index: usize) -> String {
    format!("6a000000-0000-4000-8000-{:012x}", index + 1)
}

fn group_index(id: &str) -> Option<usize> {
    (0..GROUPS.len()).find(|&i| group_id(i) == id)
}

fn action_id(n: usize) -> String {
    format!("ac000000-0000-4000-8000-{:012x}", n + 1)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Registering,
    Enabling,
    Enabled,
    Disabling,
    Disabled,
    DataLimitExceeded,
    UnauthorizedImei,
    Blocked,
    Abolished,
    SettingStandby,
    Standby,
}

impl Status {
    fn name(self) -> &'static str {
        match self {
            Status::Registering => "registering",
            Status::Enabling => "enabling",
            Status::Enabled => "enabled",
            Status::Disabling => "disabling",
            Status::Disabled => "disabled",
            Status::DataLimitExceeded => "data_limit_exceeded",
            Status::UnauthorizedImei => "unauthorized_imei",
            Status::Blocked => "blocked",
            Status::Abolished => "abolished",
            Status::SettingStandby => "setting_standby",
            Status::Standby => "standby",
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Status::Enabled => {
                "The SIM card is active, ready to connect to networks and consume data."
            }
            Status::Disabled => "The SIM card is disabled and cannot connect to networks.",
            Status::Standby => "The SIM card is in standby; its IP address is kept.",
            Status::DataLimitExceeded => "The SIM card has exceeded its data limit.",
            Status::UnauthorizedImei => {
                "The SIM card is in a device that is not on its list of authorized IMEIs."
            }
            Status::Blocked => "The SIM card has been blocked by Telnyx.",
            Status::Abolished => "The SIM card has been abolished.",
            _ => "The SIM card is changing status.",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Enable,
    Disable,
    SetStandby,
    Register,
    Delete,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Enable => "enable",
            Kind::Disable => "disable",
            Kind::SetStandby => "set_standby",
            Kind::Register => "register",
            Kind::Delete => "delete",
        }
    }
}

#[derive(Debug, Clone)]
struct Sim {
    registered: bool,
    status: Status,
    group: Option<usize>,
    tags: Vec<String>,
    /// The action in progress, by index.
    in_progress: Option<usize>,
    updated: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
struct Action {
    sim: usize,
    kind: Kind,
    from: Status,
    to: Status,
    /// `in-progress`, `completed`, `failed` or `interrupted`.
    status: &'static str,
    reason: Option<String>,
    will_fail: bool,
    will_be_interrupted: bool,
    created: DateTime<Utc>,
    updated: DateTime<Utc>,
}

/// The Telnyx account: SIMs `1..=2N`, of which `1..=N` are registered.
pub struct Inventory {
    sims: Vec<Sim>,
    actions: Vec<Action>,
    pending: VecDeque<(Instant, usize)>,
    created: DateTime<Utc>,
}

impl Inventory {
    pub fn new(n: u32, system_statuses: bool) -> Self {
        let n = u64::from(n);
        let system = |i: u64| match inventory::telnyx_system_status(i) {
            Some("data_limit_exceeded") => Some(Status::DataLimitExceeded),
            Some("unauthorized_imei") => Some(Status::UnauthorizedImei),
            Some("blocked") => Some(Status::Blocked),
            Some(_) => Some(Status::Abolished),
            None => None,
        };
        let sims = (1..=2 * n)
            .map(|i| Sim {
                registered: i <= n,
                status: match system(i).filter(|_| system_statuses && i <= n) {
                    Some(status) => status,
                    None if inventory::starts_suspended(i) => Status::Disabled,
                    None => Status::Enabled,
                },
                group: (i <= n).then_some(0),
                tags: Vec::new(),
                in_progress: None,
                updated: None,
            })
            .collect();
        Inventory {
            sims,
            actions: Vec::new(),
            pending: VecDeque::new(),
            created: Utc::now(),
        }
    }

    fn settle(&mut self, now: Instant, shared: &Shared) {
        while self.pending.front().is_some_and(|(due, _)| *due <= now) {
            let (_, a) = self.pending.pop_front().expect("checked above");
            let action = &mut self.actions[a];
            let at = action.created
                + chrono::Duration::from_std(shared.config.async_delay).unwrap_or_default();
            let sim = &mut self.sims[action.sim];
            sim.in_progress = None;
            sim.updated = Some(at);
            action.updated = at;
            let iccid = inventory::iccid(TELNYX_PREFIX, action.sim as u64 + 1);
            let status_change = action.kind != Kind::Delete && action.kind != Kind::Register;
            if action.will_fail && status_change {
                action.status = "failed";
                action.reason = Some("The network did not confirm the change.".into());
                sim.status = action.from;
                continue;
            }
            if action.will_be_interrupted && status_change {
                action.status = "interrupted";
                action.reason = Some("The action was interrupted by another operation.".into());
                sim.status = action.from;
                continue;
            }
            action.status = "completed";
            match action.kind {
                Kind::Delete => {
                    sim.registered = false;
                    sim.status = Status::Disabled;
                    sim.group = None;
                    shared.journal.record(PROVIDER, iccid, "delete", at);
                }
                Kind::Register => sim.status = action.to,
                _ => {
                    sim.status = action.to;
                    if action.from != action.to {
                        shared.journal.record(
                            PROVIDER,
                            iccid,
                            format!("status:{}->{}", action.from.name(), action.to.name()),
                            at,
                        );
                    }
                }
            }
        }
    }

    fn find(&self, id: &str) -> Result<usize, Response> {
        let number = sim_number(id).ok_or_else(|| {
            if crate::job::ids::is_uuid(id) {
                not_found(id)
            } else {
                error(
                    StatusCode::BAD_REQUEST,
                    "10006",
                    "Invalid ID",
                    format!("`{id}` is not a valid SIM card id (a UUID)"),
                )
            }
        })?;
        usize::try_from(number)
            .ok()
            .and_then(|n| n.checked_sub(1))
            .filter(|&i| self.sims.get(i).is_some_and(|s| s.registered))
            .ok_or_else(|| not_found(id))
    }

    fn start(
        &mut self,
        shared: &Shared,
        now: Instant,
        sim: usize,
        kind: Kind,
        to: Status,
    ) -> usize {
        let at = Utc::now();
        let from = self.sims[sim].status;
        self.actions.push(Action {
            sim,
            kind,
            from,
            to,
            status: "in-progress",
            reason: None,
            will_fail: shared.roll(shared.config.faults.fail_async),
            will_be_interrupted: shared.roll(shared.config.faults.interrupt_async),
            created: at,
            updated: at,
        });
        let index = self.actions.len() - 1;
        let s = &mut self.sims[sim];
        s.in_progress = Some(index);
        s.updated = Some(at);
        s.status = match kind {
            Kind::Enable => Status::Enabling,
            Kind::Disable | Kind::Delete => Status::Disabling,
            Kind::SetStandby => Status::SettingStandby,
            Kind::Register => Status::Registering,
        };
        self.pending
            .push_back((now + shared.config.async_delay, index));
        index
    }
}

fn not_found(id: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "10005",
        "Resource not found",
        format!("The requested SIM card {id} could not be found."),
    )
}

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn sim_json(inv: &Inventory, index: usize, full: bool) -> Value {
    let sim = &inv.sims[index];
    let n = index as u64 + 1;
    let mut v = json!({
        "id": sim_id(n),
        "record_type": "sim_card",
        "iccid": inventory::iccid(TELNYX_PREFIX, n),
        "imsi": format!("31017{n:010}"),
        "msisdn": format!("+1310{n:07}"),
        "eid": null,
        // `esim_installation_status` is only for eSIMs (its enum has no null): absent here.
        "type": "physical",
        "status": {"value": sim.status.name(), "reason": sim.status.reason()},
        "tags": sim.tags,
        "authorized_imeis": [],
        "sim_card_group_id": sim.group.map(group_id),
        "data_limit": {"amount": "1024.0", "unit": "MB"},
        "current_billing_period_consumed_data": {"amount": "0.0", "unit": "MB"},
        "actions_in_progress": sim.in_progress.is_some(),
        "resources_with_in_progress_actions": [],
        "created_at": iso(inv.created),
        "updated_at": iso(sim.updated.unwrap_or(inv.created)),
        "version": "4.3",
        "voice_enabled": false,
    });
    if full {
        v["live_data_session"] = json!("disconnected");
        v["ipv4"] = json!(format!("100.64.{}.{}", (n >> 8) & 255, n & 255));
    }
    v
}

fn action_json(inv: &Inventory, index: usize) -> Value {
    let a = &inv.actions[index];
    let mut status = json!({"value": a.status});
    if let Some(reason) = &a.reason {
        status["reason"] = json!(reason);
    }
    json!({
        "id": action_id(index),
        "record_type": "sim_card_action",
        "sim_card_id": sim_id(a.sim as u64 + 1),
        "action_type": a.kind.name(),
        "status": status,
        "settings": {},
        "created_at": iso(a.created),
        "updated_at": iso(a.updated),
    })
}

fn group_json(index: usize) -> Value {
    json!({
        "id": group_id(index), "record_type": "sim_card_group", "name": GROUPS[index], "default": index == 0,
        "data_limit": {"amount": "1024.0", "unit": "MB"}, "consumed_data": {"amount": "0.0", "unit": "MB"},
        "created_at": "2026-01-01T00:00:00.000Z", "updated_at": "2026-01-01T00:00:00.000Z",
    })
}

fn query(raw: Option<&str>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(raw.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

fn get_param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn page_of(params: &[(String, String)], total: usize) -> Result<Page, Response> {
    let parse = |key: &str| -> Result<Option<i64>, Response> {
        get_param(params, key)
            .map(|v| {
                v.parse::<i64>().map_err(|_| {
                    error_at(
                        StatusCode::BAD_REQUEST,
                        "10015",
                        "Bad Request",
                        format!("{key} must be a number"),
                        key,
                    )
                })
            })
            .transpose()
    };
    let size = parse("page[size]")?;
    if size.is_some_and(|s| !(1..=250).contains(&s)) {
        return Err(error_at(
            StatusCode::BAD_REQUEST,
            "10015",
            "Bad Request",
            "page[size] must be between 1 and 250",
            "page[size]",
        ));
    }
    Ok(Page::clamp(parse("page[number]")?, size, 20, 250, total))
}

fn list(page: Page, data: Vec<Value>) -> Response {
    Json(
        json!({"data": data, "meta": {"page_number": page.page, "page_size": page.size,
        "total_pages": page.pages(), "total_results": page.total}}),
    )
    .into_response()
}

async fn list_sims(State(shared): State<Arc<Shared>>, RawQuery(raw): RawQuery) -> Response {
    let params = query(raw.as_deref());
    let statuses: Option<Vec<&str>> =
        get_param(&params, "filter[status]").map(|s| s.split(',').collect());
    let group = match get_param(&params, "filter[sim_card_group_id]") {
        Some(g) => match group_index(g) {
            Some(i) => Some(Some(i)),
            None => Some(None), // a group that does not exist matches nothing
        },
        None => None,
    };
    let tags: Vec<&str> = get_param(&params, "filter[tags]")
        .map(|t| t.split(',').collect())
        .unwrap_or_default();
    let iccid = get_param(&params, "filter[iccid]");
    let inv = inventory(&shared, Instant::now());
    let matches = |i: usize| {
        let sim = &inv.sims[i];
        sim.registered
            && statuses
                .as_ref()
                .is_none_or(|s| s.contains(&sim.status.name()))
            && group.is_none_or(|g| g.is_some() && sim.group == g)
            && tags.iter().all(|t| sim.tags.iter().any(|have| have == t))
    };
    let indexes: Vec<usize> = match iccid {
        // A full ICCID resolves directly; anything shorter is a partial match over all SIMs.
        Some(full) if full.len() == 20 => inventory::sim_number(TELNYX_PREFIX, full)
            .and_then(|n| usize::try_from(n).ok()?.checked_sub(1))
            .filter(|&i| i < inv.sims.len() && matches(i))
            .into_iter()
            .collect(),
        Some(part) => (0..inv.sims.len())
            .filter(|&i| matches(i) && inventory::iccid(TELNYX_PREFIX, i as u64 + 1).contains(part))
            .collect(),
        None => (0..inv.sims.len()).filter(|&i| matches(i)).collect(),
    };
    let page = match page_of(&params, indexes.len()) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let data = indexes[page.range()]
        .iter()
        .map(|&i| sim_json(&inv, i, false))
        .collect();
    list(page, data)
}

async fn get_sim(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let inv = inventory(&shared, Instant::now());
    match inv.find(&id) {
        Ok(i) => Json(json!({"data": sim_json(&inv, i, true)})).into_response(),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
struct SimPatch {
    sim_card_group_id: Option<String>,
    tags: Option<Vec<String>>,
}

async fn patch_sim(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let patch: SimPatch = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "10015",
                "Bad Request",
                format!("Malformed JSON body: {e}"),
            )
        }
    };
    let mut inv = inventory(&shared, Instant::now());
    let index = match inv.find(&id) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let at = Utc::now();
    if let Some(g) = patch.sim_card_group_id {
        let Some(new) = group_index(&g) else {
            return error_at(
                StatusCode::UNPROCESSABLE_ENTITY,
                "10015",
                "Invalid SIM card group",
                format!("SIM card group {g} does not exist"),
                "/sim_card_group_id",
            );
        };
        let sim = &mut inv.sims[index];
        if sim.group != Some(new) {
            let old = sim.group.map_or("none".to_string(), group_id);
            sim.group = Some(new);
            sim.updated = Some(at);
            shared.journal.record(
                PROVIDER,
                inventory::iccid(TELNYX_PREFIX, index as u64 + 1),
                format!("group:{old}->{}", group_id(new)),
                at,
            );
        }
    }
    if let Some(tags) = patch.tags {
        inv.sims[index].tags = tags;
    }
    Json(json!({"data": sim_json(&inv, index, true)})).into_response()
}

#[derive(Deserialize, Default)]
struct DeleteQuery {
    report_lost: Option<bool>,
}

async fn delete_sim(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let params = query(raw.as_deref());
    let _report_lost = DeleteQuery {
        report_lost: get_param(&params, "report_lost").map(|v| v == "true"),
    }
    .report_lost;
    let now = Instant::now();
    let mut inv = inventory(&shared, now);
    let index = match inv.find(&id) {
        Ok(i) => i,
        Err(r) => return r,
    };
    if inv.sims[index].in_progress.is_some() {
        return in_progress(&id);
    }
    inv.start(&shared, now, index, Kind::Delete, Status::Disabled);
    Json(json!({"data": sim_json(&inv, index, true)})).into_response()
}

fn in_progress(id: &str) -> Response {
    error(
        StatusCode::UNPROCESSABLE_ENTITY,
        "10015",
        "Action in progress",
        format!("SIM card {id} has an action in progress; wait for it to finish"),
    )
}

async fn sim_action(shared: Arc<Shared>, id: String, kind: Kind) -> Response {
    let now = Instant::now();
    let mut inv = inventory(&shared, now);
    let index = match inv.find(&id) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let sim = &inv.sims[index];
    if sim.in_progress.is_some() {
        return in_progress(&id);
    }
    if sim.status == Status::DataLimitExceeded {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "10015",
            "Data limit exceeded",
            "The SIM card exceeded its data limit; raise the limit before changing its status",
        );
    }
    if matches!(
        sim.status,
        Status::UnauthorizedImei | Status::Blocked | Status::Abolished
    ) {
        let status = sim.status.name();
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "10015",
            "SIM card status does not allow this action",
            format!("The SIM card is {status}, a status set by Telnyx; it cannot change status"),
        );
    }
    if matches!(kind, Kind::Enable | Kind::SetStandby) && sim.group.is_none() {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "10015",
            "SIM card group required",
            "The SIM card must belong to a SIM card group to be enabled or set to standby",
        );
    }
    let to = match kind {
        Kind::Enable => Status::Enabled,
        Kind::Disable => Status::Disabled,
        _ => Status::Standby,
    };
    let action = inv.start(&shared, now, index, kind, to);
    (
        StatusCode::ACCEPTED,
        Json(json!({"data": action_json(&inv, action)})),
    )
        .into_response()
}

async fn enable(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    sim_action(shared, id, Kind::Enable).await
}

async fn disable(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    sim_action(shared, id, Kind::Disable).await
}

async fn set_standby(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    sim_action(shared, id, Kind::SetStandby).await
}

#[derive(Deserialize)]
struct RegisterBody {
    registration_codes: Vec<String>,
    sim_card_group_id: Option<String>,
    status: Option<String>,
    tags: Option<Vec<String>>,
}

/// The not-yet-registered SIM whose code this is, if any (codes are `RC` + the ICCID's last 8 digits).
fn sim_for_code(inv: &Inventory, code: &str) -> Option<usize> {
    let tail: u64 = code
        .strip_prefix("RC")
        .filter(|t| t.len() == 8)?
        .parse()
        .ok()?;
    let low = tail / 10; // the SIM number's last 7 digits
    (0..)
        .map(|m| low + m * 10_000_000)
        .take_while(|&n| n as usize <= inv.sims.len())
        .filter(|&n| n >= 1)
        .find(|&n| inventory::registration_code(&inventory::iccid(TELNYX_PREFIX, n)) == code)
        .map(|n| n as usize - 1)
}

async fn register(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let body: RegisterBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "10004",
                "Missing required parameter",
                format!("registration_codes is required: {e}"),
            )
        }
    };
    let status = match body.status.as_deref() {
        None | Some("enabled") => Status::Enabled,
        Some("disabled") => Status::Disabled,
        Some("standby") => Status::Standby,
        Some(other) => {
            return error_at(
                StatusCode::UNPROCESSABLE_ENTITY,
                "10015",
                "Invalid status",
                format!("`{other}` is not one of enabled, disabled, standby"),
                "/status",
            )
        }
    };
    let group = match body.sim_card_group_id.as_deref() {
        None => 0,
        Some(g) => match group_index(g) {
            Some(i) => i,
            None => {
                return error_at(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "10015",
                    "Invalid SIM card group",
                    format!("SIM card group {g} does not exist"),
                    "/sim_card_group_id",
                )
            }
        },
    };
    let now = Instant::now();
    let mut inv = inventory(&shared, now);
    let mut data = Vec::new();
    let mut errors = Vec::new();
    for (i, code) in body.registration_codes.iter().enumerate() {
        match sim_for_code(&inv, code) {
            Some(index) if !inv.sims[index].registered => {
                let at = Utc::now();
                let sim = &mut inv.sims[index];
                sim.registered = true;
                sim.group = Some(group);
                sim.tags = body.tags.clone().unwrap_or_default();
                inv.start(&shared, now, index, Kind::Register, status);
                shared.journal.record(PROVIDER, inventory::iccid(TELNYX_PREFIX, index as u64 + 1), "register", at);
                data.push(sim_json(&inv, index, false));
            }
            Some(_) => errors.push(json!({"code": "10015", "title": "Already registered",
                "detail": format!("Registration code {code} belongs to a SIM card already on this account"),
                "source": {"pointer": format!("/registration_codes/{i}")}})),
            None => errors.push(json!({"code": "10015", "title": "Invalid registration code",
                "detail": format!("Registration code {code} is not valid"),
                "source": {"pointer": format!("/registration_codes/{i}")}})),
        }
    }
    (
        StatusCode::ACCEPTED,
        Json(json!({"data": data, "errors": errors})),
    )
        .into_response()
}

async fn list_actions(State(shared): State<Arc<Shared>>, RawQuery(raw): RawQuery) -> Response {
    let params = query(raw.as_deref());
    let sim = get_param(&params, "filter[sim_card_id]");
    let statuses: Option<Vec<&str>> =
        get_param(&params, "filter[status]").map(|s| s.split(',').collect());
    let types: Option<Vec<&str>> =
        get_param(&params, "filter[action_type]").map(|s| s.split(',').collect());
    let inv = inventory(&shared, Instant::now());
    let sim_index = sim.map(|s| sim_number(s).map(|n| n as usize - 1));
    let indexes: Vec<usize> = (0..inv.actions.len())
        .filter(|&i| {
            let a = &inv.actions[i];
            matches!(a.kind, Kind::Enable | Kind::Disable | Kind::SetStandby)
                && sim_index.is_none_or(|s| s == Some(a.sim))
                && statuses.as_ref().is_none_or(|s| s.contains(&a.status))
                && types.as_ref().is_none_or(|t| t.contains(&a.kind.name()))
        })
        .collect();
    let page = match page_of(&params, indexes.len()) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let data = indexes[page.range()]
        .iter()
        .map(|&i| action_json(&inv, i))
        .collect();
    list(page, data)
}

async fn get_action(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let inv = inventory(&shared, Instant::now());
    let index = id
        .strip_prefix("ac000000-0000-4000-8000-")
        .and_then(|h| usize::from_str_radix(h, 16).ok())
        .and_then(|n| n.checked_sub(1))
        .filter(|&i| {
            i < inv.actions.len()
                && matches!(
                    inv.actions[i].kind,
                    Kind::Enable | Kind::Disable | Kind::SetStandby
                )
        });
    match index {
        Some(i) => Json(json!({"data": action_json(&inv, i)})).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "10005",
            "Resource not found",
            format!("SIM card action {id} could not be found."),
        ),
    }
}

async fn list_groups(RawQuery(raw): RawQuery) -> Response {
    let params = query(raw.as_deref());
    let page = match page_of(&params, GROUPS.len()) {
        Ok(p) => p,
        Err(r) => return r,
    };
    list(page, page.range().map(group_json).collect())
}

async fn get_group(Path(id): Path<String>) -> Response {
    match group_index(&id) {
        Some(i) => Json(json!({"data": group_json(i)})).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "10005",
            "Resource not found",
            format!("SIM card group {id} could not be found."),
        ),
    }
}

/// The Telnyx routes, relative to `/telnyx`.
fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/v2/sim_cards", get(list_sims))
        .route(
            "/v2/sim_cards/{id}",
            get(get_sim).patch(patch_sim).delete(delete_sim),
        )
        .route("/v2/sim_cards/{id}/actions/enable", post(enable))
        .route("/v2/sim_cards/{id}/actions/disable", post(disable))
        .route("/v2/sim_cards/{id}/actions/set_standby", post(set_standby))
        .route("/v2/actions/register/sim_cards", post(register))
        .route("/v2/sim_card_actions", get(list_actions))
        .route("/v2/sim_card_actions/{id}", get(get_action))
        .route("/v2/sim_card_groups", get(list_groups))
        .route("/v2/sim_card_groups/{id}", get(get_group))
}

/// The Telnyx stand-in: its inventory.
pub struct Telnyx {
    inventory: Mutex<Inventory>,
    system_statuses: bool,
}

impl Telnyx {
    pub fn new(sims: u32, system_statuses: bool) -> Telnyx {
        Telnyx {
            inventory: Mutex::new(Inventory::new(sims, system_statuses)),
            system_statuses,
        }
    }
}

/// Locks the Telnyx inventory after settling whatever is due at `now`.
fn inventory(shared: &Shared, now: Instant) -> std::sync::MutexGuard<'_, Inventory> {
    let mut inv = shared
        .stand_in::<Telnyx>()
        .inventory
        .lock()
        .expect("telnyx lock");
    inv.settle(now, shared);
    inv
}

impl StandIn for Telnyx {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    fn router(&self) -> Router<Arc<Shared>> {
        router()
    }

    /// Fixed one-second windows, told back in `x-ratelimit-*`.
    fn admit<'a>(
        &self,
        limits: &'a Limits,
        _: &Method,
        _: &str,
        now: Instant,
    ) -> Result<Admitted<'a>, Refusal> {
        Ok(Admitted {
            window: limits.telnyx.admit(now)?,
            in_flight: None,
        })
    }

    fn authorize(&self, shared: &Shared, _: &str, headers: &HeaderMap) -> Result<(), Response> {
        check_auth(headers, shared.config.require_token.as_deref())
    }

    fn not_found(&self, path: &str) -> Response {
        error(
            StatusCode::NOT_FOUND,
            "10005",
            "Resource not found",
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
        *self.inventory.lock().expect("telnyx lock") = Inventory::new(sims, self.system_statuses);
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_codes_find_their_sim() {
        let inv = Inventory::new(100, false);
        for n in [101u64, 150, 200] {
            let code = inventory::registration_code(&inventory::iccid(TELNYX_PREFIX, n));
            assert_eq!(sim_for_code(&inv, &code), Some(n as usize - 1));
        }
        assert_eq!(sim_for_code(&inv, "RC99999999"), None);
    }
}
