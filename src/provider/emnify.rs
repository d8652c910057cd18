//! emnify client (provider-apis.md section 1). Exchanges the application token for an auth
//! token, and re-authenticates once when a token that worked before is refused (emnify tokens
//! expire). SIM and endpoint changes are synchronous (204); eUICC operations are scheduled and
//! confirmed by reading the operation.
//!
//! Wire structs here are the client's own reading of emnify's format, independent of the sandbox.

use std::sync::atomic::{AtomicBool, Ordering};

use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::RwLock;

use super::error::{from_status, ErrorClass, ProviderError};
use super::http::{Answer, Http, Refused};
use super::state::{EuiccState, OperationState, Polled, ProfileState, SimState};

pub struct Emnify {
    http: Http,
    application_token: String,
    auth_token: RwLock<Option<String>>,
    authenticating: tokio::sync::Mutex<()>,
    token_worked: AtomicBool,
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
struct Operation {
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
    let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    let code = body["error_code"]
        .as_i64()
        .or_else(|| body["status_code"].as_i64())
        .map(|c| c.to_string());
    let message = body["message"]
        .as_str()
        .map(str::to_string)
        .or_else(|| body["error_token"].as_str().map(str::to_string))
        .unwrap_or_else(|| r.status.canonical_reason().unwrap_or("error").to_string());
    from_status(r.status.as_u16(), code, message, r.retry_after())
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
        let answered = self.http.send(request).await.map_err(|mut e| {
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
        let answer = self
            .call(
                Method::GET,
                &format!("/api/v1/sim?page={page}&per_page=2500"),
                None,
            )
            .await?;
        let pages = answer
            .headers
            .get("x-total-pages")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        let sims: Vec<Listed> = answer.json()?;
        let items = sims
            .into_iter()
            .filter_map(|s| {
                // Older responses carry only the 19-digit `iccid`; complete it.
                let iccid = s
                    .iccid_with_luhn
                    .or_else(|| s.iccid.map(|i| crate::job::ids::luhn_complete(&i)))?;
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
        self.call(
            Method::PATCH,
            &format!("/api/v1/endpoint/{endpoint_id}"),
            Some(&body),
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
            let body = json!({"sim": {"id": null}});
            self.call(
                Method::PATCH,
                &format!("/api/v1/endpoint/{ep}"),
                Some(&body),
            )
            .await?;
        }
        self.call(Method::DELETE, &format!("/api/v1/sim/{sim_id}"), None)
            .await
            .map(drop)
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

    async fn operations(&self, euicc_id: &str) -> Result<Vec<OperationState>, ProviderError> {
        let ops: Vec<Operation> = self
            .call(
                Method::GET,
                &format!("/api/v1/euicc/{euicc_id}/operation?per_page=1000"),
                None,
            )
            .await?
            .json()?;
        Ok(ops.into_iter().map(operation_state).collect())
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
        let created: Vec<Operation> = self
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
        let op: Operation = self
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

fn operation_state(op: Operation) -> OperationState {
    OperationState {
        id: op.id,
        action: op.action.id as u8,
        status: op.status.id as u8,
        iccid: op.iccid_with_luhn,
        error: op.error.map(|e| e.message),
    }
}
