//! emnify (provider-apis.md section 1): everything simbatch believes about it.
//!
//! [`EmnifyProvider`] holds the facts: SIM statuses `Issued`, `Activated`, `Suspended`,
//! `Deleted`, `Factory Test` with only Issued→Activated/Factory Test, Factory Test→Activated
//! and Activated↔Suspended allowed; endpoints (devices) `Enabled`/`Disabled`; organisation ids
//! as `move` targets; eUICC (SGP.32) operations 1 audit … 5 delete with statuses 1 Scheduled …
//! 5 Canceled, which operations contradict each other, and which one a resume adopts; 2,000
//! requests per 5 minutes per IP.
//!
//! [`Emnify`] is an account's client: it exchanges the application token for an auth token and
//! re-authenticates once when a token that worked before is refused (emnify tokens expire).
//! SIM and endpoint changes are synchronous (204); eUICC operations are scheduled and confirmed
//! by reading the operation. Wire structs here are the client's own reading of emnify's
//! format, independent of the sandbox.

use std::sync::atomic::{AtomicBool, Ordering};

use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::RwLock;

use super::account::{Account, Call, Cursor, Device, Page};
use super::error::{ErrorClass, ProviderError};
use super::facts::{CredentialEnv, Provider};
use super::http::{Answer, Http, Refused};
use super::limiter::LaneLimits;
use super::state::{
    Decision, EuiccState, Observed, OperationState, Polled, ProfileState, Sent, SimState,
};
use crate::job::model::{
    Action, JobRow, Operation, ProviderKind, TargetKind, DEFAULT_VALIDITY_PERIOD,
};

pub struct Emnify {
    http: Http,
    application_token: String,
    auth_token: RwLock<Option<String>>,
    authenticating: tokio::sync::Mutex<()>,
    token_worked: AtomicBool,
    /// Held by each single-endpoint change and each bulk request: emnify asks that they run
    /// one at a time ("Execute this operation sequentially", PATCH
    /// /api/v1/endpoint/{endpoint_id}; "execute bulk operations sequentially", the bulk
    /// endpoints; emnify-bulk-endpoint.json).
    endpoint_turn: tokio::sync::Mutex<()>,
}

#[derive(Deserialize)]
struct IdDesc {
    id: i64,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Deserialize)]
struct IdOnly {
    id: i64,
}

#[derive(Deserialize)]
struct Sim {
    id: i64,
    status: IdDesc,
    #[serde(default)]
    customer_org: Option<IdOnly>,
    #[serde(default)]
    endpoint: Option<IdOnly>,
}

#[derive(Deserialize)]
struct Endpoint {
    status: IdDesc,
}

#[derive(Deserialize)]
struct Profile {
    iccid_with_luhn: String,
    status: IdDesc,
    #[serde(default)]
    fallback_attribute: Option<bool>,
}

#[derive(Deserialize)]
struct Euicc {
    id: i64,
    #[serde(default)]
    profile: Vec<Profile>,
}

#[derive(Deserialize)]
struct OpError {
    message: String,
}

#[derive(Deserialize)]
struct OperationWire {
    id: String,
    action: IdDesc,
    status: IdDesc,
    #[serde(default)]
    iccid_with_luhn: Option<String>,
    #[serde(default)]
    error: Option<OpError>,
}

const SIM_STATUS: [&str; 5] = [
    "Issued",
    "Activated",
    "Suspended",
    "Deleted",
    "Factory Test",
];
const ENDPOINT_STATUS: [&str; 3] = ["Enabled", "Disabled", "Deleted"];

/// A listed SIM's 20-digit ICCID: older responses carry only the 19-digit `iccid`, completed
/// with its check digit.
fn full_iccid(with_luhn: Option<String>, short: Option<String>) -> Option<String> {
    with_luhn.or_else(|| short.map(|i| crate::job::ids::luhn_complete(&i)))
}

/// emnify's ids (SIM, endpoint, organisation) are integers.
fn is_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 18 && s.bytes().all(|b| b.is_ascii_digit())
}

/// An id as emnify writes it in a body: a number (an id that is not one is sent as text, for
/// emnify to refuse).
fn number_or_text(id: &str) -> Value {
    id.parse::<u64>().map_or_else(|_| json!(id), |n| json!(n))
}

/// The `after` of a delete row whose device was left without its SIM (see
/// [`Emnify::delete_sim`]), followed by the endpoint id; `revert.csv` turns it into `attach`.
const DETACHED_FROM: &str = "detached from endpoint ";

/// emnify's numeric SIM status id for a status wording.
pub fn sim_status_id(name: &str) -> Option<u8> {
    SIM_STATUS.iter().position(|s| *s == name).map(|i| i as u8)
}

fn describe(d: &IdDesc, names: &[&str]) -> String {
    d.description
        .clone()
        .or_else(|| names.get(d.id as usize).map(|s| s.to_string()))
        .unwrap_or_else(|| d.id.to_string())
}

fn refusal(r: Refused) -> ProviderError {
    let envelope: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    // A bulk request refused for one item names it in `errors`
    // (BulkUpdateEndpointRequestUnprocessableEntityError): that item's own words.
    let body = match envelope["errors"].as_array().map(Vec::as_slice) {
        Some([only]) if only["message"].is_string() => only.clone(),
        _ => envelope,
    };
    let code = body["error_code"]
        .as_i64()
        .or_else(|| body["status_code"].as_i64())
        .map(|c| c.to_string());
    let message = body["message"]
        .as_str()
        .map(str::to_string)
        .or_else(|| body["error_token"].as_str().map(str::to_string))
        .unwrap_or_else(|| r.status.canonical_reason().unwrap_or("error").to_string());
    r.error(code, message)
}

/// An eUICC operation to schedule.
#[derive(Debug, Clone)]
pub struct OperationRequest {
    pub action: u8,
    pub validity_period: u32,
    pub iccid: Option<String>,
    pub activation_code: Option<String>,
    pub enable: Option<bool>,
    pub rollback: Option<bool>,
}

impl Emnify {
    pub fn new(http: Http, application_token: String) -> Emnify {
        super::redact::register(&application_token);
        Emnify {
            http,
            application_token,
            auth_token: RwLock::new(None),
            authenticating: tokio::sync::Mutex::new(()),
            token_worked: AtomicBool::new(false),
            endpoint_turn: tokio::sync::Mutex::new(()),
        }
    }

    pub fn http(&self) -> &Http {
        &self.http
    }

    async fn authenticate(&self) -> Result<String, ProviderError> {
        let request = self
            .http
            .request(Method::POST, "/api/v1/authenticate")
            .json(&json!({"application_token": self.application_token}));
        let answered = self
            .http
            .send_for_credentials(request)
            .await
            .map_err(|mut e| {
                // A redirect of the authentication (its body carries the application token) is
                // not followed; no request of this account can go on without a token.
                if e.http_status.is_some_and(|s| (300..400).contains(&s)) {
                    e.class = ErrorClass::Auth;
                }
                e
            })?;
        match answered {
            Ok(answer) => {
                let body: Value = answer.json()?;
                let token = body["auth_token"]
                    .as_str()
                    .ok_or_else(|| {
                        ProviderError::permanent("authenticate answered without auth_token")
                    })?
                    .to_string();
                super::redact::register(&token);
                *self.auth_token.write().await = Some(token.clone());
                Ok(token)
            }
            Err(r) => {
                let mut e = refusal(r);
                if e.class == ErrorClass::Auth {
                    e.message = "emnify refused the application token (check EMNIFY_APPLICATION_TOKEN or token_env)".into();
                }
                Err(e)
            }
        }
    }

    /// The current auth token; authenticates once however many workers ask at the same time.
    async fn token(&self) -> Result<String, ProviderError> {
        if let Some(t) = self.auth_token.read().await.clone() {
            return Ok(t);
        }
        let _single_flight = self.authenticating.lock().await;
        if let Some(t) = self.auth_token.read().await.clone() {
            return Ok(t);
        }
        self.authenticate().await
    }

    /// Sends with the auth token; a 401 on a token that worked before re-authenticates once.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, ProviderError> {
        let mut reauthenticated = false;
        loop {
            let token = self.token().await?;
            let mut request = self.http.request(method.clone(), path).bearer_auth(&token);
            if let Some(body) = body {
                request = request.json(body);
            }
            match self.http.send(request).await? {
                Ok(answer) => {
                    self.token_worked.store(true, Ordering::Relaxed);
                    return Ok(answer);
                }
                Err(r)
                    if r.status == 401
                        && !reauthenticated
                        && self.token_worked.load(Ordering::Relaxed) =>
                {
                    reauthenticated = true;
                    let mut current = self.auth_token.write().await;
                    if current.as_deref() == Some(token.as_str()) {
                        *current = None; // another worker may already have renewed it
                    }
                }
                Err(r) => return Err(refusal(r)),
            }
        }
    }

    /// The SIM with this ICCID (19 digits without, or 20 with the Luhn digit), if any.
    pub async fn find_sim(
        &self,
        iccid: &str,
        with_device: bool,
    ) -> Result<Option<SimState>, ProviderError> {
        let field = if iccid.len() == 20 {
            "iccid_with_luhn"
        } else {
            "iccid"
        };
        let answer = self
            .call(Method::GET, &format!("/api/v1/sim?q={field}:{iccid}"), None)
            .await?;
        let sims: Vec<Sim> = answer.json()?;
        let Some(sim) = sims.into_iter().next() else {
            return Ok(None);
        };
        let device = match (&sim.endpoint, with_device) {
            (Some(ep), true) => {
                let e: Endpoint = self
                    .call(Method::GET, &format!("/api/v1/endpoint/{}", ep.id), None)
                    .await?
                    .json()?;
                Some((ep.id.to_string(), describe(&e.status, &ENDPOINT_STATUS)))
            }
            (Some(ep), false) => Some((ep.id.to_string(), String::new())),
            (None, _) => None,
        };
        Ok(Some(SimState {
            id: sim.id.to_string(),
            status: describe(&sim.status, &SIM_STATUS),
            settled: true,
            group: sim.customer_org.map(|o| o.id.to_string()),
            device,
            eid: None,
        }))
    }

    /// One page of the SIM inventory (emnify allows 2,500 per page): (ICCID with Luhn, state)
    /// pairs and the number of pages.
    pub async fn sim_page(
        &self,
        page: u64,
    ) -> Result<(Vec<(String, SimState)>, u64), ProviderError> {
        #[derive(Deserialize)]
        struct Listed {
            id: i64,
            iccid: Option<String>,
            iccid_with_luhn: Option<String>,
            status: IdDesc,
            #[serde(default)]
            customer_org: Option<IdOnly>,
            #[serde(default)]
            endpoint: Option<IdOnly>,
        }
        let (sims, pages) = self
            .numbered_page::<Listed>(&format!("/api/v1/sim?page={page}&per_page=2500"))
            .await?;
        let items = sims
            .into_iter()
            .filter_map(|s| {
                let iccid = full_iccid(s.iccid_with_luhn, s.iccid)?;
                let state = SimState {
                    id: s.id.to_string(),
                    status: describe(&s.status, &SIM_STATUS),
                    settled: true,
                    group: s.customer_org.map(|o| o.id.to_string()),
                    device: s.endpoint.map(|e| (e.id.to_string(), String::new())),
                    eid: None,
                };
                Some((iccid, state))
            })
            .collect();
        Ok((items, pages))
    }

    pub async fn set_sim_status(&self, sim_id: &str, status: &str) -> Result<(), ProviderError> {
        let id = sim_status_id(status)
            .ok_or_else(|| ProviderError::permanent(format!("unknown emnify status {status}")))?;
        let body = json!({"status": {"id": id, "description": status}});
        self.call(Method::PATCH, &format!("/api/v1/sim/{sim_id}"), Some(&body))
            .await
            .map(drop)
    }

    pub async fn set_customer_org(&self, sim_id: &str, org: &str) -> Result<(), ProviderError> {
        let org: i64 = org.parse().map_err(|_| {
            ProviderError::permanent(format!("organisation id `{org}` is not a number"))
        })?;
        let body = json!({"customer_org": {"id": org}});
        self.call(Method::PATCH, &format!("/api/v1/sim/{sim_id}"), Some(&body))
            .await
            .map(drop)
    }

    pub async fn set_endpoint_status(
        &self,
        endpoint_id: &str,
        enabled: bool,
    ) -> Result<(), ProviderError> {
        let (id, name) = if enabled {
            (0, "Enabled")
        } else {
            (1, "Disabled")
        };
        let body = json!({"status": {"id": id, "description": name}});
        self.patch_endpoint(endpoint_id, &body).await
    }

    /// One page of a paged list and the number of pages (`X-Total-Pages`; 1 when absent).
    async fn numbered_page<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<(Vec<T>, u64), ProviderError> {
        let answer = self.call(Method::GET, path, None).await?;
        let pages = answer
            .headers
            .get("x-total-pages")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        Ok((answer.json()?, pages))
    }

    /// Page `page` of the endpoints (1,000 per page, by id), those in `status` when given.
    pub async fn endpoint_page(
        &self,
        page: u64,
        status: Option<&str>,
    ) -> Result<(Vec<Device>, u64), ProviderError> {
        #[derive(Deserialize)]
        struct ListedSim {
            #[serde(default)]
            iccid: Option<String>,
            #[serde(default)]
            iccid_with_luhn: Option<String>,
        }
        #[derive(Deserialize)]
        struct Listed {
            id: i64,
            status: IdDesc,
            #[serde(default)]
            sim: Option<ListedSim>,
        }
        let filter = match status {
            Some(s) => {
                let id = ENDPOINT_STATUS
                    .iter()
                    .position(|n| *n == s)
                    .ok_or_else(|| ProviderError::permanent(format!("no endpoint status `{s}`")))?;
                format!("&q=status:{id}")
            }
            None => String::new(),
        };
        let (listed, pages) = self
            .numbered_page::<Listed>(&format!(
                "/api/v1/endpoint?page={page}&per_page=1000&sort=id{filter}"
            ))
            .await?;
        let devices = listed
            .into_iter()
            .filter_map(|e| {
                let sim = e.sim?;
                let iccid = full_iccid(sim.iccid_with_luhn, sim.iccid)?;
                Some(Device {
                    iccid,
                    id: e.id.to_string(),
                    status: describe(&e.status, &ENDPOINT_STATUS),
                })
            })
            .collect();
        Ok((devices, pages))
    }

    /// One bulk update of endpoint statuses.
    pub async fn set_endpoint_statuses(
        &self,
        ids: &[String],
        enabled: bool,
    ) -> Result<(), ProviderError> {
        let status = if enabled { 0 } else { 1 };
        let items = ids
            .iter()
            .map(|id| json!({"id": number_or_text(id), "status": {"id": status}}))
            .collect();
        self.patch_endpoints(items).await
    }

    /// One bulk update of endpoints' SIMs: `(endpoint, SIM)` puts the SIM on the endpoint,
    /// `(endpoint, None)` releases the endpoint's SIM.
    pub async fn assign_sims(
        &self,
        pairs: &[(String, Option<String>)],
    ) -> Result<(), ProviderError> {
        let items = pairs
            .iter()
            .map(|(ep, sim)| {
                let sim = sim.as_deref().map_or(Value::Null, number_or_text);
                json!({"id": number_or_text(ep), "sim": {"id": sim}})
            })
            .collect();
        self.patch_endpoints(items).await
    }

    /// `PATCH /api/v2/endpoint/multi`, one at a time for the account with every other endpoint
    /// update (emnify: "Execute bulk operations sequentially").
    async fn patch_endpoints(&self, items: Vec<Value>) -> Result<(), ProviderError> {
        let _turn = self.endpoint_turn.lock().await;
        self.http().count_bulk();
        self.call(
            Method::PATCH,
            "/api/v2/endpoint/multi",
            Some(&Value::Array(items)),
        )
        .await
        .map(drop)
    }

    /// `DELETE /api/v1/sim/multi`: the SIMs `ids`, each already released from its endpoint;
    /// one bulk operation at a time for the account, as emnify asks of every bulk request.
    pub async fn delete_sims(&self, ids: &[String]) -> Result<(), ProviderError> {
        let items = ids
            .iter()
            .map(|id| json!({"id": number_or_text(id)}))
            .collect();
        let _turn = self.endpoint_turn.lock().await;
        self.http().count_bulk();
        self.call(
            Method::DELETE,
            "/api/v1/sim/multi",
            Some(&Value::Array(items)),
        )
        .await
        .map(drop)
    }

    /// One single-endpoint update, one at a time for the account (see `endpoint_turn`).
    async fn patch_endpoint(&self, endpoint_id: &str, body: &Value) -> Result<(), ProviderError> {
        let _turn = self.endpoint_turn.lock().await;
        self.call(
            Method::PATCH,
            &format!("/api/v1/endpoint/{endpoint_id}"),
            Some(body),
        )
        .await
        .map(drop)
    }

    /// Deletes a SIM, first releasing it from its endpoint as emnify's own SDK does.
    pub async fn delete_sim(
        &self,
        sim_id: &str,
        endpoint_id: Option<&str>,
    ) -> Result<(), ProviderError> {
        if let Some(ep) = endpoint_id {
            self.assign(ep, None).await?;
        }
        let refused = match self
            .call(Method::DELETE, &format!("/api/v1/sim/{sim_id}"), None)
            .await
        {
            Ok(_) => return Ok(()),
            // Perhaps deleted: the row reads the SIM back, and the device stays released.
            Err(e) if e.maybe_applied || e.is_retryable() => return Err(e),
            Err(e) => e,
        };
        // Refused (a reseller deleting a SIM it sold gets 403): the SIM goes back on its
        // endpoint, and the row says what happened to the device either way. Putting it back
        // is tried again after a failure on the way (a gateway's 5xx may come after emnify
        // applied it: assigning the SIM to the endpoint it is on changes nothing), so that
        // the row never calls a device detached that has its SIM.
        let Some(ep) = endpoint_id else {
            return Err(refused);
        };
        let back = crate::provider::retry::with_retries(&Default::default(), || {
            self.assign(ep, Some(sim_id))
        })
        .await;
        Err(EmnifyProvider.delete_refused(&refused, ep, sim_id, back.as_ref().map(drop)))
    }

    /// Puts `sim` on endpoint `ep`, or releases its SIM (`None`).
    async fn assign(&self, ep: &str, sim: Option<&str>) -> Result<(), ProviderError> {
        let id = sim.map_or(Value::Null, number_or_text);
        self.patch_endpoint(ep, &json!({"sim": {"id": id}})).await
    }

    /// The eUICC with this EID and its operations, if any.
    pub async fn find_euicc(&self, eid: &str) -> Result<Option<EuiccState>, ProviderError> {
        let list: Vec<Euicc> = self
            .call(Method::GET, &format!("/api/v1/euicc?q=eid:{eid}"), None)
            .await?
            .json()?;
        let Some(euicc) = list.into_iter().next() else {
            return Ok(None);
        };
        let operations = self.operations(&euicc.id.to_string()).await?;
        let profiles = euicc
            .profile
            .into_iter()
            .map(|p| ProfileState {
                enabled: p.status.id == 8,
                deleted: p.status.id == 9,
                fallback: p.fallback_attribute.unwrap_or(false),
                status: p
                    .status
                    .description
                    .unwrap_or_else(|| p.status.id.to_string()),
                iccid: p.iccid_with_luhn,
            })
            .collect();
        Ok(Some(EuiccState {
            id: euicc.id.to_string(),
            profiles,
            operations,
        }))
    }

    /// The eUICC's whole operation history, oldest first. emnify pages it (100 per page by
    /// default, with a cap it does not state) and states no order unless asked: so every page,
    /// sorted by creation date, until one comes back short.
    async fn operations(&self, euicc_id: &str) -> Result<Vec<OperationState>, ProviderError> {
        let mut all = Vec::new();
        for page in 1..=MAX_OPERATION_PAGES {
            let ops: Vec<OperationWire> = self
                .call(
                    Method::GET,
                    &format!(
                        "/api/v1/euicc/{euicc_id}/operation?sort=creation_date&page={page}&per_page={OPERATION_PAGE}"
                    ),
                    None,
                )
                .await?
                .json()?;
            let short = ops.len() < OPERATION_PAGE;
            all.extend(ops.into_iter().map(operation_state));
            if short {
                return Ok(all);
            }
        }
        Err(ProviderError::permanent(format!(
            "eUICC {euicc_id} lists more than {} operations; simbatch cannot see them all",
            MAX_OPERATION_PAGES as usize * OPERATION_PAGE
        )))
    }

    /// Schedules one operation; its id.
    pub async fn schedule(
        &self,
        euicc_id: &str,
        op: &OperationRequest,
    ) -> Result<String, ProviderError> {
        let mut item = json!({"action": {"id": op.action}, "validity_period": op.validity_period});
        if let Some(i) = &op.iccid {
            item["iccid_with_luhn"] = json!(i);
        }
        if let Some(c) = &op.activation_code {
            item["activation_code"] = json!(c);
        }
        if let Some(e) = op.enable {
            item["enable"] = json!(e);
        }
        if let Some(r) = op.rollback {
            item["rollback"] = json!(r);
        }
        let created: Vec<OperationWire> = self
            .call(
                Method::POST,
                &format!("/api/v1/euicc/{euicc_id}/operation"),
                Some(&json!([item])),
            )
            .await?
            .json()?;
        created
            .into_iter()
            .next()
            .map(|o| o.id)
            .ok_or_else(|| ProviderError::permanent("emnify scheduled no operation"))
    }

    /// Reads a scheduled operation.
    pub async fn poll_operation(
        &self,
        euicc_id: &str,
        op_id: &str,
    ) -> Result<Polled, ProviderError> {
        let op: OperationWire = self
            .call(
                Method::GET,
                &format!("/api/v1/euicc/{euicc_id}/operation/{op_id}"),
                None,
            )
            .await?
            .json()?;
        let state = operation_state(op);
        Ok(match state.status {
            1 => Polled::Waiting,
            2 => Polled::Done {
                after: "Succeeded".into(),
            },
            4 => Polled::Failed {
                reason: "operation expired before the device carried it out (validity_period)"
                    .into(),
            },
            5 => Polled::Failed {
                reason: "operation canceled".into(),
            },
            _ => Polled::Failed {
                reason: state.error.unwrap_or_else(|| "operation failed".into()),
            },
        })
    }
}

fn operation_state(op: OperationWire) -> OperationState {
    OperationState {
        id: op.id,
        action: op.action.id as u8,
        status: op.status.id as u8,
        iccid: op.iccid_with_luhn,
        error: op.error.map(|e| e.message),
    }
}

/// What simbatch believes about emnify.
pub struct EmnifyProvider;

impl Provider for EmnifyProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Emnify
    }

    fn default_base_url(&self) -> &'static str {
        "https://cdn.emnify.net"
    }

    fn default_credentials(&self) -> CredentialEnv {
        CredentialEnv::Token("EMNIFY_APPLICATION_TOKEN".into())
    }

    /// 2,000 requests per 5 minutes per IP: 5 + 6.65/s × 300 s = 2,000, so even the burst
    /// stays inside the window.
    fn documented_limits(&self) -> LaneLimits {
        LaneLimits {
            rate: Some((1995.0 / 300.0, 5)),
            max_in_flight: None,
            window: None,
        }
    }

    fn supports(&self, action: Action) -> bool {
        !matches!(action, Action::Standby | Action::Register)
    }

    /// `PATCH /api/v2/endpoint/multi` (emnify-bulk-endpoint.json), which emnify recommends
    /// over single-endpoint updates, for device rows; that PATCH's `sim: {id: null}` and
    /// `DELETE /api/v1/sim/multi` for deletes.
    fn bulk(&self, action: Action) -> bool {
        matches!(
            action,
            Action::EnableDevice | Action::DisableDevice | Action::Delete
        )
    }

    fn move_target_problem(&self, target: &str) -> Option<&'static str> {
        (!is_id(target)).then_some("an emnify organisation id is a number")
    }

    fn device_id_problem(&self, target: &str) -> Option<&'static str> {
        (!is_id(target)).then_some("an emnify endpoint id is a number")
    }

    /// Says both facts: the refusal, and whether the SIM is back on its endpoint or the device
    /// is detached (then `left` names the endpoint for [`Provider::repairs`]).
    fn delete_refused(
        &self,
        refused: &ProviderError,
        device: &str,
        sim: &str,
        back: Result<(), &ProviderError>,
    ) -> ProviderError {
        let mut e = refused.clone();
        match back {
            Ok(()) => {
                e.message = format!(
                    "{}; the SIM was released from endpoint {device} for the delete and put back on endpoint {device}",
                    refused.message
                )
            }
            Err(back) => {
                e.message = format!(
                    "{}; the device is detached: endpoint {device} has no SIM (it was released for the delete, and putting SIM {sim} back failed: {back}); revert.csv re-attaches it",
                    refused.message
                );
                e.left = Some(format!("{DETACHED_FROM}{device}"));
            }
        }
        e
    }

    /// A device that a refused delete left without its SIM gets it back.
    fn repairs(&self, left: &str) -> Option<Operation> {
        let endpoint = left.strip_prefix(DETACHED_FROM).filter(|e| is_id(e))?;
        Some(Operation::Attach {
            target: endpoint.to_string(),
        })
    }

    fn target_status(&self, op: &Operation) -> Option<&'static str> {
        match op {
            Operation::Activate => Some("Activated"),
            Operation::Suspend => Some("Suspended"),
            _ => None,
        }
    }

    fn device_status(&self, enabled: bool) -> Option<&'static str> {
        Some(if enabled { "Enabled" } else { "Disabled" })
    }

    /// Only Issued→Activated/Factory Test, Factory Test→Activated and Activated↔Suspended.
    fn refuses_transition(&self, sim: &SimState, want: &str) -> Option<String> {
        let status = sim.status.as_str();
        let allowed = match want {
            "Activated" => matches!(status, "Issued" | "Factory Test" | "Suspended"),
            "Suspended" => status == "Activated",
            _ => true,
        };
        (!allowed).then(|| format!("emnify does not allow {status} → {want}"))
    }

    fn shows_deleted(&self, sim: &SimState) -> bool {
        sim.status == "Deleted"
    }

    /// The SIM listing does not show an endpoint's status: device rows are read live.
    fn listing_shows(&self, action: Action) -> bool {
        !matches!(
            action,
            Action::EnableDevice | Action::DisableDevice | Action::Attach
        )
    }

    fn decide_euicc(&self, op: &Operation, euicc: &EuiccState) -> Decision {
        decide_euicc(op, euicc)
    }

    /// A download with `enable` installs a profile (its ICCID is the SM-DP+'s, unknown
    /// before) and enables it, disabling the one enabled before; an enable switches; a
    /// fallback moves the fallback mark; a delete removes the profile.
    fn euicc_after(&self, euicc: &EuiccState, op: &Operation) -> EuiccState {
        let mut after = euicc.clone();
        let enable_only = |after: &mut EuiccState, iccid: &str| {
            for p in &mut after.profiles {
                p.enabled = p.iccid == iccid;
            }
        };
        match op {
            Operation::ProfileDownload { enable, .. } => {
                if *enable {
                    enable_only(&mut after, "");
                }
                after.profiles.push(ProfileState {
                    iccid: String::new(),
                    status: if *enable { "Enabled" } else { "Installed" }.into(),
                    enabled: *enable,
                    fallback: false,
                    deleted: false,
                });
            }
            Operation::ProfileEnable { profile_iccid, .. } => {
                enable_only(&mut after, profile_iccid.as_str())
            }
            Operation::ProfileFallback { profile_iccid, .. } => {
                for p in &mut after.profiles {
                    p.fallback = p.iccid == profile_iccid.as_str();
                }
            }
            Operation::ProfileDelete { profile_iccid, .. } => {
                after.profiles.retain(|p| p.iccid != profile_iccid.as_str())
            }
            _ => {}
        }
        after
    }

    /// A delete releases the SIM from its endpoint first ([`Emnify::delete_sim`]).
    fn releases_from(&self, row: &JobRow, observed: &Observed) -> Option<String> {
        match (&row.operation, observed) {
            (Operation::Delete { .. }, Observed::Sim(sim)) => {
                sim.device.as_ref().map(|(id, _)| id.clone())
            }
            _ => None,
        }
    }

    /// The operations are read whole and oldest first ([`Emnify::find_euicc`]): the last is
    /// the newest.
    fn operations_before(&self, observed: &Observed) -> Option<String> {
        match observed {
            Observed::Euicc(e) => Some(e.operations.last().map_or(String::new(), |o| o.id.clone())),
            _ => None,
        }
    }

    /// An operation created after `before` (by id, in the whole history oldest first) that
    /// matches the row and is Scheduled or Succeeded. When `before` is no longer in the
    /// history (emnify expired it), every operation counts as newer.
    fn adopted_operation(
        &self,
        row: &JobRow,
        observed: &Observed,
        before: Option<&str>,
    ) -> Option<String> {
        let (Observed::Euicc(e), Some(before)) = (observed, before) else {
            return None;
        };
        let (action, iccid, _) = operation_code(&row.operation);
        let newer = e
            .operations
            .iter()
            .position(|o| o.id == before)
            .map_or(0, |at| at + 1);
        e.operations
            .iter()
            .skip(newer)
            .find(|o| {
                o.action == action
                    && o.iccid.as_deref() == iccid
                    && matches!(o.status, OP_SCHEDULED | OP_SUCCEEDED)
            })
            .map(|o| format!("{}/{}", e.id, o.id))
    }

    fn returns_to(&self, status: &str) -> Option<Operation> {
        match status {
            "Activated" => Some(Operation::Activate),
            "Suspended" => Some(Operation::Suspend),
            _ => None,
        }
    }
}

/// Operations per page of an eUICC's history (emnify's default), and how many pages simbatch
/// reads at most (a history longer than that is an error, not a guess).
const OPERATION_PAGE: usize = 100;
const MAX_OPERATION_PAGES: u32 = 1000;

/// eUICC operation statuses (emnify's ids).
const OP_SCHEDULED: u8 = 1;
const OP_SUCCEEDED: u8 = 2;

/// emnify's action id, profile ICCID and enable flag of an eUICC operation.
pub fn operation_code(op: &Operation) -> (u8, Option<&str>, bool) {
    match op {
        Operation::EuiccAudit { .. } => (1, None, false),
        Operation::ProfileDownload { enable, .. } => (2, None, *enable),
        Operation::ProfileEnable { profile_iccid, .. } => (3, Some(profile_iccid.as_str()), true),
        Operation::ProfileFallback { profile_iccid, .. } => {
            (4, Some(profile_iccid.as_str()), false)
        }
        Operation::ProfileDelete { profile_iccid, .. } => (5, Some(profile_iccid.as_str()), false),
        _ => (0, None, false),
    }
}

/// Whether a pending eUICC operation contradicts the one a row would schedule (emnify would
/// silently apply only the first).
fn contradicts(pending_action: u8, pending_iccid: Option<&str>, op: &Operation) -> bool {
    let changes_enabled = |action: u8, enable: bool| action == 3 || (action == 2 && enable);
    let (action, iccid, enable) = operation_code(op);
    (changes_enabled(pending_action, true) && changes_enabled(action, enable))
        || (pending_action == 4 && action == 4)
        || (pending_action == 2 && action == 2)
        || (pending_iccid.is_some()
            && pending_iccid == iccid
            && pending_action != action
            && pending_action != 1
            && action != 1)
}

/// Pre-flight of an eUICC row: a contradicting pending operation fails it; enable, fallback
/// and delete check the profiles.
fn decide_euicc(op: &Operation, euicc: &EuiccState) -> Decision {
    use Decision as D;
    let enabled = euicc.enabled_profile().map(|p| p.iccid.as_str());
    if let Some(conflict) = euicc
        .operations
        .iter()
        .find(|o| o.status == OP_SCHEDULED && contradicts(o.action, o.iccid.as_deref(), op))
    {
        return D::fail(
            format!("conflicting pending operation {}", conflict.id),
            enabled,
        );
    }
    match op {
        Operation::EuiccAudit { .. } => D::send(enabled, "audited"),
        Operation::ProfileDownload { .. } => D::send(enabled, "downloaded"),
        Operation::ProfileEnable { profile_iccid, .. } => {
            match euicc.profile(profile_iccid.as_str()) {
                None => D::fail(
                    format!("profile {profile_iccid} is not installed on this eUICC"),
                    enabled,
                ),
                Some(p) if p.enabled => D::skip("already enabled", &p.iccid),
                Some(_) => D::send(enabled, profile_iccid.as_str()),
            }
        }
        Operation::ProfileFallback { profile_iccid, .. } => {
            let previous = euicc
                .fallback_profile()
                .map(|p| p.iccid.as_str())
                .unwrap_or("none");
            match euicc.profile(profile_iccid.as_str()) {
                None => D::fail(
                    format!("profile {profile_iccid} is not installed on this eUICC"),
                    Some(previous),
                ),
                Some(p) if p.enabled => D::fail(
                    "a fallback must be a disabled profile, and this one is enabled",
                    Some(previous),
                ),
                Some(p) if p.fallback => D::skip("already the fallback profile", previous),
                Some(_) => D::send(Some(previous), profile_iccid.as_str()),
            }
        }
        Operation::ProfileDelete { profile_iccid, .. } => {
            match euicc.profile(profile_iccid.as_str()) {
                None => D::skip("already deleted (not on this eUICC)", "absent"),
                Some(p) if p.enabled => D::fail(
                    "a profile cannot be deleted while it is enabled; enable another first",
                    Some(&p.status),
                ),
                Some(p) => D::send(Some(&p.status), "deleted"),
            }
        }
        other => D::fail(
            format!("`{}` does not apply to an eUICC", other.action()),
            None,
        ),
    }
}

/// The emnify operation request for an eUICC row.
pub fn euicc_request(op: &Operation) -> OperationRequest {
    let (action, iccid, _) = operation_code(op);
    let mut request = OperationRequest {
        action,
        validity_period: DEFAULT_VALIDITY_PERIOD,
        iccid: iccid.map(str::to_string),
        activation_code: None,
        enable: None,
        rollback: None,
    };
    match op {
        Operation::EuiccAudit { validity_period }
        | Operation::ProfileFallback {
            validity_period, ..
        }
        | Operation::ProfileDelete {
            validity_period, ..
        } => request.validity_period = *validity_period,
        Operation::ProfileDownload {
            activation_code,
            enable,
            rollback,
            validity_period,
        } => {
            request.validity_period = *validity_period;
            request.activation_code = Some(activation_code.as_str().to_string());
            request.enable = Some(*enable);
            request.rollback = Some(*rollback);
        }
        Operation::ProfileEnable {
            rollback,
            validity_period,
            ..
        } => {
            request.validity_period = *validity_period;
            request.rollback = Some(*rollback);
        }
        _ => {}
    }
    request
}

impl Account for Emnify {
    fn provider(&self) -> &'static dyn Provider {
        &EmnifyProvider
    }

    fn http(&self) -> &Http {
        &self.http
    }

    fn sim_page<'a>(&'a self, cursor: &'a Cursor, _group: Option<&'a str>) -> Call<'a, Page> {
        Box::pin(async move {
            let number = cursor.number("emnify")?;
            let (sims, pages) = self.sim_page(number).await?;
            Ok(Page::numbered(sims, number, pages))
        })
    }

    fn devices_page<'a>(
        &'a self,
        page: u64,
        status: Option<&'a str>,
    ) -> Call<'a, (Vec<Device>, u64)> {
        Box::pin(self.endpoint_page(page, status))
    }

    fn set_devices<'a>(&'a self, ids: &'a [String], enabled: bool) -> Call<'a, ()> {
        Box::pin(self.set_endpoint_statuses(ids, enabled))
    }

    fn assign_devices<'a>(&'a self, pairs: &'a [(String, Option<String>)]) -> Call<'a, ()> {
        Box::pin(self.assign_sims(pairs))
    }

    fn delete_sims<'a>(&'a self, ids: &'a [String]) -> Call<'a, ()> {
        Box::pin(Emnify::delete_sims(self, ids))
    }

    fn observe<'a>(&'a self, row: &'a JobRow) -> Call<'a, Observed> {
        Box::pin(async move {
            if row.action().target_kind() == TargetKind::Euicc {
                let eid = row.target.eid().expect("eUICC rows have an EID").as_str();
                return Ok(self
                    .find_euicc(eid)
                    .await?
                    .map_or(Observed::Missing, Observed::Euicc));
            }
            let iccid = row.target.iccid().map(|i| i.as_str()).unwrap_or_default();
            let with_device = !EmnifyProvider.listing_shows(row.action());
            Ok(self
                .find_sim(iccid, with_device)
                .await?
                .map_or(Observed::Missing, Observed::Sim))
        })
    }

    fn send<'a>(
        &'a self,
        row: &'a JobRow,
        observed: &'a Observed,
        after: &'a str,
    ) -> Call<'a, Sent> {
        Box::pin(async move {
            let sim = match observed {
                Observed::Sim(s) => Some(s),
                _ => None,
            };
            let sim_id = || {
                sim.map(|s| s.id.clone())
                    .ok_or_else(|| ProviderError::permanent("the SIM was not found"))
            };
            match &row.operation {
                Operation::Activate | Operation::Suspend => {
                    self.set_sim_status(&sim_id()?, after).await?;
                    Ok(Sent::Done {
                        after: after.into(),
                    })
                }
                Operation::Move { target } => {
                    self.set_customer_org(&sim_id()?, target).await?;
                    Ok(Sent::Done {
                        after: target.clone(),
                    })
                }
                Operation::EnableDevice | Operation::DisableDevice => {
                    let device = sim
                        .and_then(|s| s.device.clone())
                        .ok_or_else(|| ProviderError::permanent("no endpoint"))?;
                    let enable = matches!(row.operation, Operation::EnableDevice);
                    self.set_endpoint_status(&device.0, enable).await?;
                    Ok(Sent::Done {
                        after: after.into(),
                    })
                }
                Operation::Attach { target } => {
                    self.assign(target, Some(&sim_id()?)).await?;
                    Ok(Sent::Done {
                        after: target.clone(),
                    })
                }
                Operation::Delete { .. } => {
                    let endpoint = sim.and_then(|s| s.device.as_ref().map(|d| d.0.clone()));
                    self.delete_sim(&sim_id()?, endpoint.as_deref()).await?;
                    Ok(Sent::Done {
                        after: "deleted".into(),
                    })
                }
                Operation::Standby | Operation::Register { .. } => Err(ProviderError::permanent(
                    format!("`{}` is not supported by emnify", row.action()),
                )),
                op => {
                    let Observed::Euicc(euicc) = observed else {
                        return Err(ProviderError::permanent("the eUICC was not found"));
                    };
                    let id = self.schedule(&euicc.id, &euicc_request(op)).await?;
                    Ok(Sent::Accepted {
                        reference: format!("{}/{id}", euicc.id),
                    })
                }
            }
        })
    }

    fn poll<'a>(&'a self, reference: &'a str, _after: &'a str) -> Call<'a, Polled> {
        Box::pin(async move {
            let (euicc, op) = reference
                .split_once('/')
                .ok_or_else(|| ProviderError::permanent("malformed reference"))?;
            self.poll_operation(euicc, op).await
        })
    }
}
