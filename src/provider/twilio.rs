//! Twilio Super SIM (provider-apis.md section 2): everything simbatch believes about it.
//!
//! [`TwilioProvider`] holds the facts: Sim statuses `new`, `ready`, `active`, `inactive`
//! (`scheduled` while a change settles); a Sim is activated only in a Fleet and never returns
//! to `new`; Fleets (SID `HF…` or unique name) as `move` targets; a cap on requests in flight.
//!
//! [`Twilio`] is an account's client: HTTP Basic auth, form-encoded PascalCase writes,
//! snake_case JSON answers. Status changes are asynchronous (202 `scheduled`) and confirmed by
//! listing the Sims by status (or reading each). Wire structs here are the client's own
//! reading of Twilio's format, independent of the sandbox.

use std::collections::{HashMap, HashSet};

use reqwest::Method;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::Mutex;

use super::account::{Account, Call, Cursor, Page};
use super::error::ProviderError;
use super::facts::{CredentialEnv, Provider};
use super::http::{Http, Refused};
use super::limiter::LaneLimits;
use super::state::{Observed, Polled, Sent, SimState};
use crate::job::model::{Action, JobRow, Operation, ProviderKind};

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
    let mut e = r.error(code, message);
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
        self.list_from(format!("/v1/Sims?Status={status}&PageSize=1000"))
            .await
    }

    /// Every Sim in one Fleet (`?Fleet=` takes its SID or unique name).
    pub async fn list_fleet(&self, fleet: &str) -> Result<Vec<(String, SimState)>, ProviderError> {
        self.list_from(Self::first_page(Some(fleet))).await
    }

    async fn list_from(&self, mut path: String) -> Result<Vec<(String, SimState)>, ProviderError> {
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
            Some(url) => Some(self.http.path_of(&url, "/v1/")?),
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

    /// Reads the Sim until its asynchronous change settles on `target`: a status, or — for a
    /// move — a Fleet SID, read from `fleet_sid` (a Fleet update is answered 202 `scheduled`
    /// like a status update: Twilio changelog 2020-07-21).
    pub async fn poll_status(&self, sid: &str, target: &str) -> Result<Polled, ProviderError> {
        let sim: Sim = self
            .call(Method::GET, &format!("/v1/Sims/{sid}"), None)
            .await?
            .json()?;
        let status = sim.status.unwrap_or_default();
        if status == "scheduled" {
            return Ok(Polled::Waiting);
        }
        let (field, shows) = match is_fleet(target) {
            true => ("Fleet", sim.fleet_sid.unwrap_or_else(|| "none".into())),
            false => ("status", status),
        };
        Ok(if shows == target {
            Polled::Done { after: shows }
        } else {
            Polled::Failed {
                reason: format!("Twilio settled the Sim's {field} on `{shows}`, not `{target}`"),
            }
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

/// Whether a change's target is a Fleet (a move) rather than a status: Fleet SIDs start `HF`.
fn is_fleet(target: &str) -> bool {
    target.starts_with("HF")
}

/// What simbatch believes about Twilio Super SIM.
pub struct TwilioProvider;

impl Provider for TwilioProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Twilio
    }

    fn default_base_url(&self) -> &'static str {
        "https://supersim.twilio.com"
    }

    fn default_credentials(&self) -> CredentialEnv {
        CredentialEnv::Basic {
            username: "TWILIO_ACCOUNT_SID".into(),
            password: "TWILIO_AUTH_TOKEN".into(),
        }
    }

    /// Twilio caps requests in flight (100, as third parties report; it publishes no number).
    fn documented_limits(&self) -> LaneLimits {
        LaneLimits {
            rate: None,
            max_in_flight: Some(100),
            window: None,
        }
    }

    fn supports(&self, action: Action) -> bool {
        matches!(
            action,
            Action::Activate | Action::Suspend | Action::Move | Action::Register
        )
    }

    /// A Fleet SID (`HF` + 32 hex digits) or a unique name.
    fn move_target_problem(&self, target: &str) -> Option<&'static str> {
        let looks_like_sid = target.len() >= 2 && target[..2].eq_ignore_ascii_case("HF");
        let valid_sid = target.len() == 34
            && target.starts_with("HF")
            && target[2..].bytes().all(|b| b.is_ascii_hexdigit());
        (looks_like_sid && target.len() == 34 && !valid_sid)
            .then_some("a Fleet SID is HF followed by 32 hex digits")
    }

    /// Twilio's registration codes are 10 letters or digits.
    fn registration_code_problem(&self, code: &str) -> Option<&'static str> {
        (!(code.len() == 10 && code.bytes().all(|b| b.is_ascii_alphanumeric())))
            .then_some("Twilio codes are 10 letters or digits")
    }

    fn target_status(&self, op: &Operation) -> Option<&'static str> {
        match op {
            Operation::Activate => Some("active"),
            Operation::Suspend => Some("inactive"),
            _ => None,
        }
    }

    /// A Super SIM registered to the account is `new` (twilio-supersim-v1.json, Sim `status`:
    /// "new" until it is activated).
    fn registered_status(&self) -> Option<&'static str> {
        Some("new")
    }

    /// Twilio only activates a Sim that belongs to a Fleet.
    fn refuses_transition(&self, sim: &SimState, want: &str) -> Option<String> {
        (want == "active" && sim.group.is_none()).then(|| {
            "the Super SIM has no Fleet: Twilio only activates SIMs in a Fleet (add a `move` row first)".to_string()
        })
    }

    fn returns_to(&self, status: &str) -> Option<Operation> {
        match status {
            "active" => Some(Operation::Activate),
            "inactive" => Some(Operation::Suspend),
            _ => None,
        }
    }
}

impl Account for Twilio {
    fn provider(&self) -> &'static dyn Provider {
        &TwilioProvider
    }

    fn http(&self) -> &Http {
        &self.http
    }

    /// Linked pages; the listing can be narrowed to one Fleet.
    fn sim_page<'a>(&'a self, cursor: &'a Cursor, group: Option<&'a str>) -> Call<'a, Page> {
        Box::pin(async move {
            let path = match cursor {
                Cursor::First => Twilio::first_page(group),
                Cursor::Path(path) => path.clone(),
                Cursor::Number(_) => {
                    return Err(ProviderError::permanent(
                        "Twilio pages by link, not by number",
                    ))
                }
            };
            let (sims, next) = self.sim_page(&path).await?;
            Ok(Page {
                sims,
                next: next.map(Cursor::Path),
                pages: None,
            })
        })
    }

    fn observe<'a>(&'a self, row: &'a JobRow) -> Call<'a, Observed> {
        Box::pin(async move {
            let iccid = row.target.iccid().map(|i| i.as_str()).unwrap_or_default();
            Ok(self
                .find_sim(iccid)
                .await?
                .map_or(Observed::Missing, Observed::Sim))
        })
    }

    fn move_target<'a>(&'a self, row: &'a JobRow) -> Call<'a, Option<String>> {
        Box::pin(async move {
            match &row.operation {
                Operation::Move { target } => self.fleet_sid(target).await.map(Some),
                _ => Ok(None),
            }
        })
    }

    fn send<'a>(
        &'a self,
        row: &'a JobRow,
        observed: &'a Observed,
        after: &'a str,
    ) -> Call<'a, Sent> {
        Box::pin(async move {
            let sim_id = || match observed {
                Observed::Sim(s) => Ok(s.id.clone()),
                _ => Err(ProviderError::permanent("the SIM was not found")),
            };
            match &row.operation {
                Operation::Activate | Operation::Suspend => {
                    self.update(&sim_id()?, &[("Status", after)]).await
                }
                Operation::Move { .. } => self.update(&sim_id()?, &[("Fleet", after)]).await,
                Operation::Register { registration_code } => {
                    let iccid = row.target.iccid().expect("SIM rows have an ICCID").as_str();
                    let sim = self.register(iccid, registration_code).await?;
                    Ok(Sent::Done { after: sim.status })
                }
                op => Err(ProviderError::permanent(format!(
                    "`{}` is not supported by twilio",
                    op.action()
                ))),
            }
        })
    }

    fn poll<'a>(&'a self, reference: &'a str, after: &'a str) -> Call<'a, Polled> {
        Box::pin(self.poll_status(reference, after))
    }

    fn batchable(&self, _reference: &str) -> bool {
        true
    }

    /// Still `scheduled`: waiting. Otherwise it settled, on its target or elsewhere, which the
    /// field each change touched says: a status change by the listing of that status, a move
    /// by the listing of its Fleet (`?Fleet=`; `?Status=` takes statuses only, and a Fleet SID
    /// there is refused with 400). A listing that fails costs only its own rows a look of
    /// their own (one read per Sim), never the rest of the batch.
    fn confirm_batch<'a>(
        &'a self,
        waiting: &'a [(String, String)],
        _patient: bool,
    ) -> Call<'a, Vec<Polled>> {
        Box::pin(async move {
            let scheduled: HashSet<String> = self
                .list("scheduled")
                .await?
                .into_iter()
                .map(|(_, s)| s.id)
                .collect();
            let targets: HashSet<&String> = waiting
                .iter()
                .filter(|(reference, _)| !scheduled.contains(reference))
                .map(|(_, after)| after)
                .collect();
            let settled_on: HashMap<String, Option<HashSet<String>>> =
                futures_util::future::join_all(targets.into_iter().map(|after| async {
                    let listed = match is_fleet(after) {
                        true => self.list_fleet(after).await,
                        false => self.list(after).await,
                    };
                    let sids = listed
                        .ok()
                        .map(|sims| sims.into_iter().map(|(_, s)| s.id).collect());
                    (after.clone(), sids)
                }))
                .await
                .into_iter()
                .collect();
            let mut out = Vec::with_capacity(waiting.len());
            for (reference, after) in waiting {
                out.push(if scheduled.contains(reference) {
                    Polled::Waiting
                } else {
                    match settled_on.get(after).and_then(Option::as_ref) {
                        Some(sids) if sids.contains(reference) => Polled::Done {
                            after: after.clone(),
                        },
                        Some(_) => Polled::Failed {
                            reason: format!("Twilio settled the Sim elsewhere than `{after}`"),
                        },
                        None => self.poll_status(reference, after).await?,
                    }
                });
            }
            Ok(out)
        })
    }
}
