//! Telnyx Wireless (provider-apis.md section 3): everything simbatch believes about it.
//!
//! [`TelnyxProvider`] holds the facts: SIM statuses `enabled`, `disabled`, `standby` (and the
//! transitional `enabling`, `disabling`, `setting_standby`, `registering`); enabling and standby
//! need a SIM card group; nothing changes in the statuses Telnyx sets itself
//! (`data_limit_exceeded`, `unauthorized_imei`, `blocked`, `abolished`); SIM card group UUIDs as
//! `move` targets; a limit per one-second window, told back in `x-ratelimit-*`.
//!
//! [`Telnyx`] is an account's client: Bearer auth, `{data}` envelopes, bracketed query keys.
//! Status changes are SIM Card Actions (202); one that is no longer in progress is confirmed
//! by its SIM showing the target (a listing of the SIMs in that status, or a read of the action
//! and its SIM) — never by not being listed, since an action can end `interrupted`, which the
//! actions list cannot filter on; deletion is confirmed when the SIM is gone; registrations of
//! concurrent rows go out together. Wire structs here are the client's own reading of Telnyx's
//! format, independent of the sandbox.

use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Value};

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::account::{Account, Call, Cursor, Page};
use super::coalesce::Coalescer;
use super::error::ProviderError;
use super::facts::{CredentialEnv, Provider};
use super::http::{Http, Refused};
use super::limiter::LaneLimits;
use super::state::{Observed, Polled, Sent, SimState};
use crate::job::model::{Action, JobRow, Operation, ProviderKind};

pub struct Telnyx {
    http: Http,
    key: String,
    /// Registrations of concurrent rows, sent together: (ICCID, code) → the registered SIM.
    registrations: Coalescer<(String, String), SimState>,
    /// How many pages the last listing of the SIMs in each status had (see
    /// [`Telnyx::settled_with_status`]).
    status_pages: std::sync::Mutex<HashMap<String, u64>>,
}

/// When confirmation may wait (see [`Account::confirm_batch`]), a listing of the SIMs in a
/// status is taken only for at least this many rows per page — a page's worth, at most 0.4%
/// more requests than rows; in a mass change the listing grows with the job, so during
/// dispatch that rarely holds and the proof waits for dispatch to go quiet. Measured at Telnyx
/// scaled:2 on 10,000 rows (benches/README.md): listing whenever pages ≤ rows cost 1.053
/// requests per row and 1.064× the bound; at 100 rows per page, 1.0196 and 1.025×.
const PATIENT_ROWS_PER_PAGE: u64 = 250;

#[derive(Deserialize)]
struct Status {
    value: String,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize)]
struct SimCard {
    id: String,
    iccid: String,
    status: Status,
    #[serde(default)]
    sim_card_group_id: Option<String>,
    #[serde(default)]
    actions_in_progress: bool,
    #[serde(default)]
    eid: Option<String>,
}

#[derive(Deserialize)]
struct SimCardAction {
    id: String,
    status: Status,
    #[serde(default)]
    sim_card_id: Option<String>,
}

#[derive(Deserialize)]
struct Data<T> {
    data: T,
}

#[derive(Deserialize)]
struct Meta {
    total_pages: u64,
}

/// One page of a Telnyx list: its items and how many pages there are.
#[derive(Deserialize)]
struct Listed<T> {
    data: Vec<T>,
    meta: Meta,
}

fn refusal(r: Refused) -> ProviderError {
    let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    let first = &body["errors"][0];
    let code = first["code"].as_str().map(str::to_string);
    let message = match (first["title"].as_str(), first["detail"].as_str()) {
        (Some(t), Some(d)) => format!("{t}: {d}"),
        (Some(t), None) => t.to_string(),
        _ => r.status.to_string(),
    };
    let mut e = r.error(code, message);
    if r.status == 401 {
        e.message = "Telnyx refused the API key (check TELNYX_API_KEY or token_env)".into();
    }
    e
}

/// A status change's reference, `action@sim` (older ones carry the action's id alone).
fn action_and_sim(reference: &str) -> (&str, Option<&str>) {
    match reference.split_once('@') {
        Some((action, sim)) => (action, Some(sim)),
        None => (reference, None),
    }
}

const TRANSITIONAL: [&str; 4] = ["registering", "enabling", "disabling", "setting_standby"];

fn state(sim: SimCard) -> SimState {
    let settled = !sim.actions_in_progress && !TRANSITIONAL.contains(&sim.status.value.as_str());
    SimState {
        id: sim.id,
        status: sim.status.value,
        settled,
        group: sim.sim_card_group_id,
        device: None,
        eid: sim.eid,
    }
}

impl Telnyx {
    pub fn new(http: Http, key: String) -> Telnyx {
        super::redact::register(&key);
        Telnyx {
            http,
            key,
            registrations: Coalescer::default(),
            status_pages: Default::default(),
        }
    }

    pub fn http(&self) -> &Http {
        &self.http
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<super::http::Answer, ProviderError> {
        let mut request = self.http.request(method, path).bearer_auth(&self.key);
        if let Some(body) = body {
            request = request.json(body);
        }
        self.http.send(request).await?.map_err(refusal)
    }

    /// The SIM card with exactly this ICCID (`filter[iccid]` is a partial match).
    pub async fn find_sim(&self, iccid: &str) -> Result<Option<SimState>, ProviderError> {
        let list: Data<Vec<SimCard>> = self
            .call(
                Method::GET,
                &format!("/v2/sim_cards?filter[iccid]={iccid}&page[size]=250"),
                None,
            )
            .await?
            .json()?;
        Ok(list.data.into_iter().find(|s| s.iccid == iccid).map(state))
    }

    /// One page of a list at `path` (which carries the page number and size).
    async fn listed<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<Listed<T>, ProviderError> {
        self.call(Method::GET, path, None).await?.json()
    }

    /// One page of SIM cards (250 each): (ICCID, state) pairs and the number of pages.
    pub async fn sim_page(
        &self,
        page: u64,
    ) -> Result<(Vec<(String, SimState)>, u64), ProviderError> {
        let p: Listed<SimCard> = self
            .listed(&format!("/v2/sim_cards?page[number]={page}&page[size]=250"))
            .await?;
        Ok((
            p.data
                .into_iter()
                .map(|s| (s.iccid.clone(), state(s)))
                .collect(),
            p.meta.total_pages,
        ))
    }

    /// The ids of the SIM card actions still in progress.
    pub async fn actions_in_progress(&self) -> Result<HashSet<String>, ProviderError> {
        let mut out = HashSet::new();
        let mut page = 1;
        loop {
            let p: Listed<SimCardAction> = self
                .listed(&format!(
                    "/v2/sim_card_actions?filter[status]=in-progress&page[number]={page}&page[size]=250"
                ))
                .await?;
            out.extend(p.data.into_iter().map(|a| a.id));
            if page >= p.meta.total_pages {
                return Ok(out);
            }
            page += 1;
        }
    }

    /// Starts `enable`, `disable` or `set_standby`; the action's id.
    pub async fn action(&self, sim_id: &str, action: &str) -> Result<Sent, ProviderError> {
        let created: Data<SimCardAction> = self
            .call(
                Method::POST,
                &format!("/v2/sim_cards/{sim_id}/actions/{action}"),
                None,
            )
            .await?
            .json()?;
        // The SIM's id travels with the action's, so that confirmation can read the SIM.
        Ok(Sent::Accepted {
            reference: format!("{}@{sim_id}", created.data.id),
        })
    }

    /// A SIM card action's end, read from the action and then from its SIM: `completed` counts
    /// only when the SIM shows `target`; `failed`, `interrupted` and any status simbatch does
    /// not know fail the row with Telnyx's reason (`SIMCardAction.status` in
    /// telnyx-wireless.json: in-progress, completed, failed, interrupted).
    pub async fn poll_action(
        &self,
        reference: &str,
        target: &str,
    ) -> Result<Polled, ProviderError> {
        let (action_id, _) = action_and_sim(reference);
        let action: Data<SimCardAction> = self
            .call(
                Method::GET,
                &format!("/v2/sim_card_actions/{action_id}"),
                None,
            )
            .await?
            .json()?;
        let action = action.data;
        match action.status.value.as_str() {
            "in-progress" => Ok(Polled::Waiting),
            "completed" => match action.sim_card_id.as_deref() {
                Some(sim_id) => self.shows(sim_id, target).await,
                None => Ok(Polled::Failed {
                    reason: "SIM card action completed, but it names no SIM card to check".into(),
                }),
            },
            other => Ok(Polled::Failed {
                reason: format!(
                    "SIM card action {other}: {}",
                    action
                        .status
                        .reason
                        .unwrap_or_else(|| "no reason given".into())
                ),
            }),
        }
    }

    /// One SIM card, by id.
    async fn sim(&self, sim_id: &str) -> Result<SimState, ProviderError> {
        let sim: Data<SimCard> = self
            .call(Method::GET, &format!("/v2/sim_cards/{sim_id}"), None)
            .await?
            .json()?;
        Ok(state(sim.data))
    }

    /// Whether the SIM shows `target` now that its action completed.
    async fn shows(&self, sim_id: &str, target: &str) -> Result<Polled, ProviderError> {
        let sim = self.sim(sim_id).await?;
        Ok(if !sim.settled {
            Polled::Waiting
        } else if sim.status == target {
            Polled::Done { after: sim.status }
        } else {
            Polled::Failed {
                reason: format!(
                    "SIM card action completed, but the SIM shows `{}`, not `{target}`",
                    sim.status
                ),
            }
        })
    }

    /// Whether, were every change of `waiting` ended, a patient sweep would list the SIMs of
    /// some target status (see [`PATIENT_ROWS_PER_PAGE`]), by what the last listings showed.
    fn any_listing_affordable(&self, waiting: &[(String, String)]) -> bool {
        let mut rows: HashMap<&str, u64> = HashMap::new();
        for (_, after) in waiting {
            *rows.entry(after.as_str()).or_default() += 1;
        }
        let pages = self.status_pages.lock().expect("pages lock");
        rows.into_iter().any(|(status, rows)| {
            let budget = rows / PATIENT_ROWS_PER_PAGE;
            budget > 0 && pages.get(status).is_none_or(|&p| p <= budget)
        })
    }

    /// The ids of the settled SIMs showing `status`, when that takes at most `budget` pages
    /// (the first one included); `None` when listing would cost more than reading each. The
    /// number of pages the last listing of a status had decides without a request when it is
    /// over budget (a listing that has grown since costs its first page to find out).
    async fn settled_with_status(
        &self,
        status: &str,
        budget: u64,
    ) -> Result<Option<HashSet<String>>, ProviderError> {
        let known = self
            .status_pages
            .lock()
            .expect("pages lock")
            .get(status)
            .copied();
        if budget == 0 || known.is_some_and(|pages| pages > budget) {
            return Ok(None);
        }
        let mut ids = HashSet::new();
        let mut page = 1;
        loop {
            let p: Listed<SimCard> = self
                .listed(&format!(
                    "/v2/sim_cards?filter[status]={status}&page[number]={page}&page[size]=250"
                ))
                .await?;
            self.status_pages
                .lock()
                .expect("pages lock")
                .insert(status.to_string(), p.meta.total_pages);
            if p.meta.total_pages > budget {
                return Ok(None);
            }
            ids.extend(
                p.data
                    .into_iter()
                    .map(state)
                    .filter(|s| s.settled && s.status == status)
                    .map(|s| s.id),
            );
            if page >= p.meta.total_pages {
                return Ok(Some(ids));
            }
            page += 1;
        }
    }

    pub async fn set_group(&self, sim_id: &str, group: &str) -> Result<Sent, ProviderError> {
        let sim: Data<SimCard> = self
            .call(
                Method::PATCH,
                &format!("/v2/sim_cards/{sim_id}"),
                Some(&json!({"sim_card_group_id": group})),
            )
            .await?
            .json()?;
        Ok(Sent::Done {
            after: sim.data.sim_card_group_id.unwrap_or_default(),
        })
    }

    pub async fn delete(&self, sim_id: &str, report_lost: bool) -> Result<Sent, ProviderError> {
        self.call(
            Method::DELETE,
            &format!("/v2/sim_cards/{sim_id}?report_lost={report_lost}"),
            None,
        )
        .await?;
        Ok(Sent::Accepted {
            reference: sim_id.to_string(),
        })
    }

    /// A deleted SIM is confirmed once it is gone.
    pub async fn poll_deleted(&self, sim_id: &str) -> Result<Polled, ProviderError> {
        match self
            .call(Method::GET, &format!("/v2/sim_cards/{sim_id}"), None)
            .await
        {
            Ok(_) => Ok(Polled::Waiting),
            Err(e) if e.http_status == Some(404) => Ok(Polled::Done {
                after: "deleted".into(),
            }),
            Err(e) => Err(e),
        }
    }

    /// Registers the SIM `iccid` by its code, in one request together with the registrations
    /// of other rows under way (Telnyx takes a list of codes).
    pub async fn register_one(&self, iccid: &str, code: &str) -> Result<SimState, ProviderError> {
        self.registrations
            .submit((iccid.to_string(), code.to_string()), |batch| async move {
                let codes: Vec<&str> = batch.iter().map(|(_, c)| c.as_str()).collect();
                let (registered, refused) = self.register(&codes).await?;
                Ok(batch
                    .iter()
                    .enumerate()
                    .map(|(i, (iccid, _))| {
                        if let Some((_, message)) = refused.iter().find(|(at, _)| *at == Some(i)) {
                            return Err(ProviderError::permanent(message.clone()));
                        }
                        registered
                            .iter()
                            .find(|(listed, _)| listed == iccid)
                            .map(|(_, sim)| sim.clone())
                            .ok_or_else(|| {
                                let all: Vec<&str> =
                                    refused.iter().map(|(_, m)| m.as_str()).collect();
                                ProviderError::permanent(if all.is_empty() {
                                    format!(
                                        "the code was accepted but no SIM {iccid} was registered"
                                    )
                                } else {
                                    all.join("; ")
                                })
                            })
                    })
                    .collect())
            })
            .await
    }

    /// Registers SIM cards by code. Returns the registered SIMs (ICCID, state) and, per refused
    /// code, its position in `codes` (from the error's JSON pointer) and the provider's message.
    #[allow(clippy::type_complexity)]
    pub async fn register(
        &self,
        codes: &[&str],
    ) -> Result<(Vec<(String, SimState)>, Vec<(Option<usize>, String)>), ProviderError> {
        #[derive(Deserialize)]
        struct Registered {
            data: Vec<SimCard>,
            #[serde(default)]
            errors: Vec<Value>,
        }
        let r: Registered = self
            .call(
                Method::POST,
                "/v2/actions/register/sim_cards",
                Some(&json!({"registration_codes": codes})),
            )
            .await?
            .json()?;
        let errors = r
            .errors
            .iter()
            .map(|e| {
                let at = e["source"]["pointer"]
                    .as_str()
                    .and_then(|p| p.strip_prefix("/registration_codes/"))
                    .and_then(|i| i.parse().ok());
                let message = e["detail"]
                    .as_str()
                    .or(e["title"].as_str())
                    .unwrap_or("refused")
                    .to_string();
                (at, message)
            })
            .collect();
        Ok((
            r.data
                .into_iter()
                .map(|s| (s.iccid.clone(), state(s)))
                .collect(),
            errors,
        ))
    }

    /// Reads a SIM until it settles; its status.
    pub async fn poll_settled(&self, sim_id: &str) -> Result<Polled, ProviderError> {
        let s = self.sim(sim_id).await?;
        Ok(if s.settled {
            Polled::Done { after: s.status }
        } else {
            Polled::Waiting
        })
    }
}

/// What simbatch believes about Telnyx Wireless.
pub struct TelnyxProvider;

impl Provider for TelnyxProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Telnyx
    }

    fn default_base_url(&self) -> &'static str {
        "https://api.telnyx.com"
    }

    fn default_credentials(&self) -> CredentialEnv {
        CredentialEnv::Token("TELNYX_API_KEY".into())
    }

    /// A little under 100/s with a burst of 2: any 1-second window holds at most 98 + 2, and a
    /// timer that wakes late can catch up instead of losing the slot. Once the answers'
    /// `x-ratelimit-*` headers show where the provider's windows start, each is filled to the
    /// limit they state.
    fn documented_limits(&self) -> LaneLimits {
        LaneLimits {
            rate: Some((98.0, 2)),
            max_in_flight: None,
            window: Some((Duration::from_secs(1), None)),
        }
    }

    /// Registration sets the status the request names, `enabled` by default (SIMCardRegistration
    /// `status`, default `enabled`, telnyx-wireless.json); simbatch sends none.
    fn action_note(&self, action: Action) -> Option<&'static str> {
        (action == Action::Register)
            .then_some("registering at Telnyx enables the SIMs at once (status `enabled`): they are billed from then on")
    }

    /// The registration's status defaults to `enabled` (see `action_note`).
    fn registered_status(&self) -> Option<&'static str> {
        Some("enabled")
    }

    /// Telnyx's delete takes `report_lost` (a lost or stolen SIM is reported as such).
    fn delete_reports_lost(&self) -> bool {
        true
    }

    fn supports(&self, action: Action) -> bool {
        matches!(
            action,
            Action::Activate
                | Action::Suspend
                | Action::Standby
                | Action::Delete
                | Action::Move
                | Action::Register
        )
    }

    fn move_target_problem(&self, target: &str) -> Option<&'static str> {
        (!crate::job::ids::is_uuid(target)).then_some("a Telnyx SIM card group id is a UUID")
    }

    fn target_status(&self, op: &Operation) -> Option<&'static str> {
        match op {
            Operation::Activate => Some("enabled"),
            Operation::Suspend => Some("disabled"),
            Operation::Standby => Some("standby"),
            _ => None,
        }
    }

    /// The statuses Telnyx sets itself, in which "the SIM cannot transition" (Telnyx's SIM
    /// lifecycle page, developers.telnyx.com/docs/iot-sim/sim-lifecycle, "System-Imposed").
    fn refuses_any_change(&self, sim: &SimState) -> Option<String> {
        let way_out = match sim.status.as_str() {
            "data_limit_exceeded" => "raise its data limit first",
            "unauthorized_imei" => "add the device's IMEI to its authorized_imeis first",
            "blocked" => "Telnyx blocked it; only Telnyx support can lift that",
            "abolished" => "it is permanently out of service",
            _ => return None,
        };
        Some(format!(
            "Telnyx refuses changes while the SIM is `{}`; {way_out}",
            sim.status
        ))
    }

    fn refuses_transition(&self, sim: &SimState, want: &str) -> Option<String> {
        (matches!(want, "enabled" | "standby") && sim.group.is_none()).then(|| {
            "Telnyx needs the SIM in a SIM card group to enable it or set it to standby".to_string()
        })
    }

    fn returns_to(&self, status: &str) -> Option<Operation> {
        match status {
            "enabled" => Some(Operation::Activate),
            "disabled" => Some(Operation::Suspend),
            "standby" => Some(Operation::Standby),
            _ => None,
        }
    }
}

impl Account for Telnyx {
    fn provider(&self) -> &'static dyn Provider {
        &TelnyxProvider
    }

    fn http(&self) -> &Http {
        &self.http
    }

    fn sim_page<'a>(&'a self, cursor: &'a Cursor, _group: Option<&'a str>) -> Call<'a, Page> {
        Box::pin(async move {
            let number = cursor.number("Telnyx")?;
            let (sims, pages) = self.sim_page(number).await?;
            Ok(Page::numbered(sims, number, pages))
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
                Operation::Activate => self.action(&sim_id()?, "enable").await,
                Operation::Suspend => self.action(&sim_id()?, "disable").await,
                Operation::Standby => self.action(&sim_id()?, "set_standby").await,
                Operation::Move { .. } => self.set_group(&sim_id()?, after).await,
                Operation::Delete { report_lost } => {
                    let id = sim_id()?;
                    self.delete(&id, *report_lost).await?;
                    Ok(Sent::Accepted {
                        reference: format!("delete:{id}"),
                    })
                }
                Operation::Register { registration_code } => {
                    let iccid = row.target.iccid().expect("SIM rows have an ICCID").as_str();
                    let sim = self.register_one(iccid, registration_code).await?;
                    Ok(Sent::Accepted {
                        reference: format!("settle:{}", sim.id),
                    })
                }
                op => Err(ProviderError::permanent(format!(
                    "`{}` is not supported by telnyx",
                    op.action()
                ))),
            }
        })
    }

    /// `delete:<id>` waits for the SIM to be gone, `settle:<id>` for a registered SIM to
    /// settle; anything else is a SIM Card Action's id.
    fn poll<'a>(&'a self, reference: &'a str, after: &'a str) -> Call<'a, Polled> {
        Box::pin(async move {
            match reference.split_once(':') {
                Some(("delete", id)) => self.poll_deleted(id).await,
                Some(("settle", id)) => self.poll_settled(id).await,
                _ => self.poll_action(reference, after).await,
            }
        })
    }

    /// SIM Card Actions can be listed by status; deletions and registrations cannot.
    fn batchable(&self, reference: &str) -> bool {
        !reference.contains(':')
    }

    /// Actions still in progress are listed (one filter); every other action has ended, and
    /// "not listed" does not say how: the list cannot filter on `interrupted`. Those are
    /// confirmed by the SIMs themselves — by listing the SIMs in the target status when that
    /// takes fewer pages than there are rows, else one by one ([`Telnyx::poll_action`]) — and
    /// a row whose SIM does not show the target is read one by one, for Telnyx's reason.
    /// Actions still in progress wait (one short listing). An action that ended is proven by
    /// its SIM showing the target: by listing the SIMs in that status when that costs fewer
    /// pages than there are such rows, else by reading each SIM (and, when it does not show
    /// the target, its action, for the reason). When `patient`, a listing is taken only when
    /// it costs at most one page per [`PATIENT_ROWS_PER_PAGE`] rows, and one read per row is
    /// never spent: the rows wait for a later sweep to share a listing with more.
    fn confirm_batch<'a>(
        &'a self,
        waiting: &'a [(String, String)],
        patient: bool,
    ) -> Call<'a, Vec<Polled>> {
        Box::pin(async move {
            // Patient, and no status would be listed even if every change had ended: asking
            // which have ended could lead to no outcome.
            if patient && !self.any_listing_affordable(waiting) {
                return Ok(vec![Polled::Waiting; waiting.len()]);
            }
            let in_progress = self.actions_in_progress().await?;
            let ended = |reference: &str| {
                let (action, _) = action_and_sim(reference);
                !in_progress.contains(action)
            };
            let mut shown: HashMap<&str, Option<HashSet<String>>> = HashMap::new();
            for (_, after) in waiting.iter().filter(|(r, _)| ended(r)) {
                if !shown.contains_key(after.as_str()) {
                    let rows = waiting
                        .iter()
                        .filter(|(r, a)| a == after && ended(r))
                        .count() as u64;
                    let budget = match patient {
                        true => rows / PATIENT_ROWS_PER_PAGE,
                        false => rows,
                    };
                    let listed = self.settled_with_status(after, budget).await?;
                    shown.insert(after.as_str(), listed);
                }
            }
            let mut out = Vec::with_capacity(waiting.len());
            for (reference, after) in waiting {
                if !ended(reference) {
                    out.push(Polled::Waiting);
                    continue;
                }
                let (_, sim) = action_and_sim(reference);
                let listed = shown.get(after.as_str()).and_then(Option::as_ref);
                out.push(match (sim, listed) {
                    (Some(sim), Some(ids)) if ids.contains(sim) => Polled::Done {
                        after: after.clone(),
                    },
                    // Listed, and not among the SIMs in the target status; or not listed.
                    (_, Some(_)) => self.poll_action(reference, after).await?,
                    (_, None) if patient => Polled::Waiting,
                    (Some(sim), None) => match self.shows(sim, after).await? {
                        Polled::Done { after } => Polled::Done { after },
                        _ => self.poll_action(reference, after).await?,
                    },
                    (None, None) => self.poll_action(reference, after).await?,
                });
            }
            Ok(out)
        })
    }
}
