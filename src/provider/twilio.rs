//! Twilio Super SIM client (provider-apis.md section 2): HTTP Basic auth, form-encoded
//! PascalCase writes, snake_case JSON answers. Status changes are asynchronous (202
//! `scheduled`) and confirmed by reading the Sim until it leaves `scheduled`.
//!
//! Wire structs here are the client's own reading of Twilio's format, independent of the sandbox.

use std::collections::HashMap;

use reqwest::Method;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::Mutex;

use super::error::{from_status, ProviderError};
use super::http::{Http, Refused};
use super::state::{Polled, Sent, SimState};

pub struct Twilio {
    http: Http,
    username: String,
    password: String,
    /// Fleet unique names resolved to SIDs.
    fleets: Mutex<HashMap<String, String>>,
}

#[derive(Deserialize)]
struct Sim {
    #[serde(default)]
    iccid: Option<String>,
    sid: String,
    status: Option<String>,
    fleet_sid: Option<String>,
}

#[derive(Deserialize)]
struct SimList {
    sims: Vec<Sim>,
    #[serde(default)]
    meta: Option<Meta>,
}

#[derive(Deserialize)]
struct Meta {
    next_page_url: Option<String>,
}

#[derive(Deserialize)]
struct Fleet {
    sid: String,
}

fn refusal(r: Refused) -> ProviderError {
    let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    let code = body["code"].as_i64().map(|c| c.to_string());
    let message = body["message"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| r.status.to_string());
    let mut e = from_status(r.status.as_u16(), code, message, r.retry_after());
    if r.status == 401 {
        e.message =
            "Twilio refused the credentials (check TWILIO_ACCOUNT_SID / TWILIO_AUTH_TOKEN)".into();
    }
    e
}

fn state(sim: Sim) -> SimState {
    let status = sim.status.unwrap_or_default();
    SimState {
        id: sim.sid,
        settled: status != "scheduled",
        status,
        group: sim.fleet_sid,
        device: None,
        eid: None,
    }
}

impl Twilio {
    pub fn new(http: Http, username: String, password: String) -> Twilio {
        use base64::Engine as _;
        super::redact::register(&password);
        // As it travels in the Authorization header.
        super::redact::register(
            &base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}")),
        );
        Twilio {
            http,
            username,
            password,
            fleets: Mutex::new(HashMap::new()),
        }
    }

    pub fn http(&self) -> &Http {
        &self.http
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        form: Option<&[(&str, &str)]>,
    ) -> Result<super::http::Answer, ProviderError> {
        let mut request = self
            .http
            .request(method, path)
            .basic_auth(&self.username, Some(&self.password));
        if let Some(form) = form {
            request = request.form(form);
        }
        self.http.send(request).await?.map_err(refusal)
    }

    /// The registered Sim with this ICCID, if any (`Iccid=` gives zero or one).
    pub async fn find_sim(&self, iccid: &str) -> Result<Option<SimState>, ProviderError> {
        let list: SimList = self
            .call(Method::GET, &format!("/v1/Sims?Iccid={iccid}"), None)
            .await?
            .json()?;
        Ok(list.sims.into_iter().next().map(state))
    }

    /// Every registered Sim with `status`, page by page (1,000 each), following
    /// `meta.next_page_url`.
    pub async fn list(&self, status: &str) -> Result<Vec<(String, SimState)>, ProviderError> {
        let mut path = format!("/v1/Sims?Status={status}&PageSize=1000");
        let mut out = Vec::new();
        loop {
            let (sims, next) = self.sim_page(&path).await?;
            out.extend(sims);
            match next {
                Some(next) => path = next,
                None => return Ok(out),
            }
        }
    }

    /// The first page of the Sim listing (1,000 per page), optionally only one Fleet.
    pub fn first_page(fleet: Option<&str>) -> String {
        match fleet {
            Some(f) => format!("/v1/Sims?Fleet={f}&PageSize=1000"),
            None => "/v1/Sims?PageSize=1000".to_string(),
        }
    }

    /// One page of the Sim listing at `path`: (ICCID, state) pairs and the next page's path.
    pub async fn sim_page(
        &self,
        path: &str,
    ) -> Result<(Vec<(String, SimState)>, Option<String>), ProviderError> {
        let list: SimList = self.call(Method::GET, path, None).await?.json()?;
        let next = match list.meta.and_then(|m| m.next_page_url) {
            Some(url) => Some(self.http.path_of(&url)?.to_string()),
            None => None,
        };
        let sims = list
            .sims
            .into_iter()
            .filter_map(|s| Some((s.iccid.clone()?, state(s))))
            .collect();
        Ok((sims, next))
    }

    /// Registers a Super SIM to the account.
    pub async fn register(&self, iccid: &str, code: &str) -> Result<SimState, ProviderError> {
        let sim: Sim = self
            .call(
                Method::POST,
                "/v1/Sims",
                Some(&[("Iccid", iccid), ("RegistrationCode", code)]),
            )
            .await?
            .json()?;
        Ok(state(sim))
    }

    /// Updates a Sim: 202 (asynchronous, confirm by SID) or 200 (done).
    pub async fn update(&self, sid: &str, form: &[(&str, &str)]) -> Result<Sent, ProviderError> {
        let answer = self
            .call(Method::POST, &format!("/v1/Sims/{sid}"), Some(form))
            .await?;
        let sim: Sim = answer.json()?;
        Ok(if answer.status == 202 {
            Sent::Accepted { reference: sim.sid }
        } else {
            Sent::Done {
                after: sim
                    .fleet_sid
                    .filter(|_| form.iter().any(|(k, _)| *k == "Fleet"))
                    .or(sim.status)
                    .unwrap_or_default(),
            }
        })
    }

    /// Reads the Sim until its asynchronous change settles on `target`.
    pub async fn poll_status(&self, sid: &str, target: &str) -> Result<Polled, ProviderError> {
        let sim: Sim = self
            .call(Method::GET, &format!("/v1/Sims/{sid}"), None)
            .await?
            .json()?;
        let status = sim.status.unwrap_or_default();
        Ok(match status.as_str() {
            "scheduled" => Polled::Waiting,
            s if s == target => Polled::Done { after: status },
            _ => Polled::Failed {
                reason: format!("Twilio settled the Sim on `{status}`, not `{target}`"),
            },
        })
    }

    /// The SID of a Fleet given by SID or unique name (one request per name, then cached).
    pub async fn fleet_sid(&self, target: &str) -> Result<String, ProviderError> {
        if target.len() == 34 && target.starts_with("HF") {
            return Ok(target.to_string());
        }
        if let Some(sid) = self.fleets.lock().await.get(target) {
            return Ok(sid.clone());
        }
        let fleet: Fleet = self
            .call(Method::GET, &format!("/v1/Fleets/{target}"), None)
            .await?
            .json()?;
        self.fleets
            .lock()
            .await
            .insert(target.to_string(), fleet.sid.clone());
        Ok(fleet.sid)
    }
}
