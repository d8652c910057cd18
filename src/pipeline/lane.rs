//! A provider lane's client and the per-action translation of a job row into that provider's
//! calls: observe the target, send the change, poll an asynchronous change. References to
//! asynchronous changes are strings the lane alone interprets (stored in the checkpoint).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use crate::job::{JobRow, Operation, ProviderKind};
use crate::provider::emnify::{Emnify, OperationRequest};
use crate::provider::http::Http;
use crate::provider::telnyx::Telnyx;
use crate::provider::twilio::Twilio;
use crate::provider::{Polled, ProviderError, Sent, SimState};

use super::preflight::{operation_code, Observed};
use super::snapshot::{Lookup, Snapshot};

pub enum Client {
    Emnify(Emnify),
    Twilio(Twilio),
    Telnyx(Telnyx),
}

/// One configured provider: its name in job files, its kind and its client.
pub struct Lane {
    pub name: String,
    pub kind: ProviderKind,
    pub client: Client,
    /// Workers of this lane (requests in flight at once, at most).
    pub concurrency: usize,
    /// The inventory as listed before dispatch, if it was. Each entry is used once: a second
    /// row for the same SIM reads live.
    pub snapshot: Mutex<Option<Snapshot>>,
}

/// Where a walk over the inventory stands: numbered pages (emnify, Telnyx) or the next
/// page's path (Twilio).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cursor {
    First,
    Number(u64),
    Path(String),
}

/// Fewer rows than this in a lane are looked up one by one: listing would not pay.
pub const SNAPSHOT_MIN_ROWS: usize = 50;
/// Confirmations are swept in batches once at least this many are waiting.
const BATCH_SWEEP_MIN: usize = 4;

/// The ICCID under which a lane's listing and its job rows meet (emnify's 19-digit form gets
/// its Luhn digit).
pub fn snapshot_key(iccid: &str) -> String {
    if iccid.len() == 19 {
        crate::job::ids::luhn_complete(iccid)
    } else {
        iccid.to_string()
    }
}

impl Lane {
    pub fn http(&self) -> &Http {
        match &self.client {
            Client::Emnify(c) => c.http(),
            Client::Twilio(c) => c.http(),
            Client::Telnyx(c) => c.http(),
        }
    }

    /// Whether a row may be resolved from the snapshot (rows in groups, device rows and rows
    /// being reconciled always read live: the snapshot is stale once the job itself acts).
    pub fn snapshot_eligible(&self, row: &JobRow) -> bool {
        row.group.is_none()
            && row.action().target_kind() == crate::job::TargetKind::Sim
            && !matches!(
                row.operation,
                Operation::EnableDevice | Operation::DisableDevice
            )
    }

    /// Lists the inventory page by page when that costs fewer requests than looking `rows`
    /// rows up one by one, and keeps it (on disk, see [`Snapshot`]) for [`Lane::take_listed`].
    /// Returns how many pages were read (0: not worth it).
    pub async fn prefetch(&self, rows: usize) -> Result<u64, ProviderError> {
        if rows < SNAPSHOT_MIN_ROWS {
            return Ok(0);
        }
        let budget = rows as u64;
        let on_disk = |e: std::io::Error| {
            ProviderError::permanent(format!("could not keep the inventory listing: {e}"))
        };
        let add = |snapshot: &mut Snapshot, sims: Vec<(String, SimState)>| {
            sims.iter()
                .try_for_each(|(iccid, state)| snapshot.insert(&snapshot_key(iccid), state))
                .map_err(on_disk)
        };
        let (mut snapshot, pages) = match &self.client {
            // Numbered pages with a known count: read the first, then the rest if that pays.
            Client::Emnify(_) | Client::Telnyx(_) => {
                let (first, pages) = self.sim_page(1).await?;
                if pages >= budget {
                    return Ok(0);
                }
                let mut snapshot = Snapshot::new(pages * first.len() as u64).map_err(on_disk)?;
                add(&mut snapshot, first)?;
                for page in 2..=pages {
                    add(&mut snapshot, self.sim_page(page).await?.0)?;
                }
                (snapshot, pages)
            }
            // Linked pages: list while that stays under half a request per row.
            Client::Twilio(c) => {
                let mut snapshot = Snapshot::new(budget).map_err(on_disk)?;
                let mut path = Twilio::first_page(None);
                let mut pages = 0;
                loop {
                    if pages >= budget / 2 {
                        return Ok(0);
                    }
                    let (sims, next) = c.sim_page(&path).await?;
                    pages += 1;
                    add(&mut snapshot, sims)?;
                    match next {
                        Some(next) => path = next,
                        None => break,
                    }
                }
                (snapshot, pages)
            }
        };
        snapshot.finish().map_err(on_disk)?;
        *self.snapshot.lock().expect("snapshot lock") = Some(snapshot);
        Ok(pages)
    }

    /// One page of the whole SIM inventory from `cursor` (the first: [`Cursor::First`]) and
    /// the cursor of the next page, if any. Twilio's listing can be narrowed to one Fleet.
    pub async fn inventory_page(
        &self,
        cursor: &Cursor,
        fleet: Option<&str>,
    ) -> Result<(Vec<(String, SimState)>, Option<Cursor>), ProviderError> {
        match (&self.client, cursor) {
            (Client::Twilio(c), Cursor::First) => {
                let (sims, next) = c.sim_page(&Twilio::first_page(fleet)).await?;
                Ok((sims, next.map(Cursor::Path)))
            }
            (Client::Twilio(c), Cursor::Path(path)) => {
                let (sims, next) = c.sim_page(path).await?;
                Ok((sims, next.map(Cursor::Path)))
            }
            (_, Cursor::First) => self.numbered(1).await,
            (_, Cursor::Number(n)) => self.numbered(*n).await,
            (_, Cursor::Path(_)) => Err(ProviderError::permanent(
                "a page path is only meaningful for Twilio",
            )),
        }
    }

    async fn numbered(
        &self,
        page: u64,
    ) -> Result<(Vec<(String, SimState)>, Option<Cursor>), ProviderError> {
        let (sims, pages) = self.sim_page(page).await?;
        Ok((sims, (page < pages).then_some(Cursor::Number(page + 1))))
    }

    /// One numbered page of the SIM inventory (emnify, Telnyx) and the number of pages.
    async fn sim_page(&self, page: u64) -> Result<(Vec<(String, SimState)>, u64), ProviderError> {
        match &self.client {
            Client::Emnify(c) => c.sim_page(page).await,
            Client::Telnyx(c) => c.sim_page(page).await,
            Client::Twilio(_) => Err(ProviderError::permanent(
                "Twilio pages by link, not by number",
            )),
        }
    }

    /// The listed state of a row's SIM, once; `None` when it must be read live.
    pub fn take_listed(&self, row: &JobRow) -> Option<Observed> {
        if !self.snapshot_eligible(row) {
            return None;
        }
        let key = snapshot_key(row.target.iccid()?.as_str());
        let mut guard = self.snapshot.lock().expect("snapshot lock");
        match guard.as_mut()?.take(&key) {
            Ok(Lookup::Listed(state)) => Some(Observed::Sim(state)),
            Ok(Lookup::NotListed) => Some(Observed::Missing),
            Ok(Lookup::AlreadyTaken) => None,
            Err(e) => {
                tracing::warn!(lane = %self.name, error = %e, "could not read the inventory listing; reading live");
                None
            }
        }
    }

    /// What the provider shows for the row's target: from the snapshot when allowed, else live.
    pub async fn observe_first(&self, row: &JobRow) -> Result<Observed, ProviderError> {
        match self.take_listed(row) {
            Some(observed) => Ok(observed),
            None => self.observe(row).await,
        }
    }

    /// Confirms many asynchronous changes at once where the provider can list them (Telnyx
    /// actions by status, Twilio Sims by status); otherwise one read each. One result per
    /// `(reference, after)` in order.
    pub async fn sweep(&self, waiting: &[(String, String)]) -> Vec<Result<Polled, ProviderError>> {
        let batchable = |r: &str| match self.client {
            Client::Telnyx(_) => !r.contains(':'),
            Client::Twilio(_) => true,
            Client::Emnify(_) => false,
        };
        let batch: Vec<usize> = (0..waiting.len())
            .filter(|&i| batchable(&waiting[i].0))
            .collect();
        let mut results: Vec<Option<Result<Polled, ProviderError>>> = vec![None; waiting.len()];
        if batch.len() >= BATCH_SWEEP_MIN {
            match self.batch_sweep(waiting, &batch).await {
                Ok(found) => {
                    for (i, r) in batch.iter().zip(found) {
                        results[*i] = Some(Ok(r));
                    }
                }
                Err(e) => {
                    for i in &batch {
                        results[*i] = Some(Err(e.clone()));
                    }
                }
            }
        }
        // The rest are read one by one, all at once (the rate gate still paces them); only
        // they get a future each, the batch's answers are already in.
        let singles: Vec<usize> = (0..waiting.len())
            .filter(|&i| results[i].is_none())
            .collect();
        let read = futures_util::future::join_all(singles.iter().map(|&i| {
            let (reference, after) = &waiting[i];
            self.poll(reference, after)
        }))
        .await;
        for (i, r) in singles.into_iter().zip(read) {
            results[i] = Some(r);
        }
        results
            .into_iter()
            .map(|r| r.expect("every waiting change has an answer"))
            .collect()
    }

    async fn batch_sweep(
        &self,
        waiting: &[(String, String)],
        batch: &[usize],
    ) -> Result<Vec<Polled>, ProviderError> {
        match &self.client {
            // In-progress first, then failed: an action that fails between the two reads shows
            // up in the second, so it can never pass for completed.
            Client::Telnyx(c) => {
                let in_progress: HashSet<String> = c
                    .actions_with_status("in-progress")
                    .await?
                    .into_iter()
                    .map(|(id, _)| id)
                    .collect();
                let failed: HashMap<String, Option<String>> =
                    c.actions_with_status("failed").await?.into_iter().collect();
                Ok(batch
                    .iter()
                    .map(|&i| {
                        let (reference, after) = &waiting[i];
                        if in_progress.contains(reference) {
                            Polled::Waiting
                        } else if let Some(reason) = failed.get(reference) {
                            Polled::Failed {
                                reason: format!(
                                    "SIM card action failed: {}",
                                    reason.clone().unwrap_or_else(|| "no reason given".into())
                                ),
                            }
                        } else {
                            Polled::Done {
                                after: after.clone(),
                            }
                        }
                    })
                    .collect())
            }
            // Still scheduled: waiting. Otherwise it settled: on its target, or back where it was.
            Client::Twilio(c) => {
                let scheduled: HashSet<String> = c
                    .list("scheduled")
                    .await?
                    .into_iter()
                    .map(|(_, s)| s.id)
                    .collect();
                let mut settled_on: HashMap<String, HashSet<String>> = HashMap::new();
                for &i in batch {
                    let (reference, after) = &waiting[i];
                    if !scheduled.contains(reference) && !settled_on.contains_key(after) {
                        let sids = c
                            .list(after)
                            .await?
                            .into_iter()
                            .map(|(_, s)| s.id)
                            .collect();
                        settled_on.insert(after.clone(), sids);
                    }
                }
                Ok(batch
                    .iter()
                    .map(|&i| {
                        let (reference, after) = &waiting[i];
                        if scheduled.contains(reference) {
                            Polled::Waiting
                        } else if settled_on.get(after).is_some_and(|s| s.contains(reference)) {
                            Polled::Done {
                                after: after.clone(),
                            }
                        } else {
                            Polled::Failed {
                                reason: format!("Twilio settled the Sim elsewhere than `{after}`"),
                            }
                        }
                    })
                    .collect())
            }
            Client::Emnify(_) => unreachable!("emnify operations are read one by one"),
        }
    }

    /// What the provider shows for the row's target now, read live.
    pub async fn observe(&self, row: &JobRow) -> Result<Observed, ProviderError> {
        let iccid = row.target.iccid().map(|i| i.as_str()).unwrap_or_default();
        let found = match (&self.client, row.action().target_kind()) {
            (Client::Emnify(c), crate::job::TargetKind::Euicc) => {
                let eid = row.target.eid().expect("eUICC rows have an EID").as_str();
                return Ok(c
                    .find_euicc(eid)
                    .await?
                    .map_or(Observed::Missing, Observed::Euicc));
            }
            (Client::Emnify(c), _) => {
                let with_device = matches!(
                    row.operation,
                    Operation::EnableDevice | Operation::DisableDevice
                );
                c.find_sim(iccid, with_device).await?
            }
            (Client::Twilio(c), _) => c.find_sim(iccid).await?,
            (Client::Telnyx(c), _) => c.find_sim(iccid).await?,
        };
        Ok(found.map_or(Observed::Missing, Observed::Sim))
    }

    /// The group id a `move` compares against (Twilio Fleet names resolve to SIDs).
    pub async fn move_target(&self, row: &JobRow) -> Result<Option<String>, ProviderError> {
        match (&self.client, &row.operation) {
            (Client::Twilio(c), Operation::Move { target }) => c.fleet_sid(target).await.map(Some),
            _ => Ok(None),
        }
    }

    /// Sends the row's change; `after` is what pre-flight expects it to produce.
    pub async fn send(
        &self,
        row: &JobRow,
        observed: &Observed,
        after: &str,
    ) -> Result<Sent, ProviderError> {
        let sim = match observed {
            Observed::Sim(s) => Some(s),
            _ => None,
        };
        let sim_id = || {
            sim.map(|s| s.id.clone())
                .ok_or_else(|| ProviderError::permanent("the SIM was not found"))
        };
        match (&self.client, &row.operation) {
            (Client::Emnify(c), Operation::Activate | Operation::Suspend) => {
                c.set_sim_status(&sim_id()?, after).await?;
                Ok(Sent::Done {
                    after: after.into(),
                })
            }
            (Client::Emnify(c), Operation::Move { target }) => {
                c.set_customer_org(&sim_id()?, target).await?;
                Ok(Sent::Done {
                    after: target.clone(),
                })
            }
            (Client::Emnify(c), Operation::EnableDevice | Operation::DisableDevice) => {
                let device = sim
                    .and_then(|s| s.device.clone())
                    .ok_or_else(|| ProviderError::permanent("no endpoint"))?;
                c.set_endpoint_status(&device.0, matches!(row.operation, Operation::EnableDevice))
                    .await?;
                Ok(Sent::Done {
                    after: after.into(),
                })
            }
            (Client::Emnify(c), Operation::Delete { .. }) => {
                let endpoint = sim.and_then(|s| s.device.as_ref().map(|d| d.0.clone()));
                c.delete_sim(&sim_id()?, endpoint.as_deref()).await?;
                Ok(Sent::Done {
                    after: "deleted".into(),
                })
            }
            (Client::Emnify(c), op) => {
                let Observed::Euicc(euicc) = observed else {
                    return Err(ProviderError::permanent("the eUICC was not found"));
                };
                let request = euicc_request(op);
                let id = c.schedule(&euicc.id, &request).await?;
                Ok(Sent::Accepted {
                    reference: format!("{}/{id}", euicc.id),
                })
            }
            (Client::Twilio(c), Operation::Activate | Operation::Suspend) => {
                c.update(&sim_id()?, &[("Status", after)]).await
            }
            (Client::Twilio(c), Operation::Move { .. }) => {
                c.update(&sim_id()?, &[("Fleet", after)]).await
            }
            (Client::Twilio(c), Operation::Register { registration_code }) => {
                let iccid = row.target.iccid().expect("SIM rows have an ICCID").as_str();
                let sim = c.register(iccid, registration_code).await?;
                Ok(Sent::Done { after: sim.status })
            }
            (Client::Telnyx(c), Operation::Activate) => c.action(&sim_id()?, "enable").await,
            (Client::Telnyx(c), Operation::Suspend) => c.action(&sim_id()?, "disable").await,
            (Client::Telnyx(c), Operation::Standby) => c.action(&sim_id()?, "set_standby").await,
            (Client::Telnyx(c), Operation::Move { .. }) => c.set_group(&sim_id()?, after).await,
            (Client::Telnyx(c), Operation::Delete { report_lost }) => {
                let id = sim_id()?;
                c.delete(&id, *report_lost).await?;
                Ok(Sent::Accepted {
                    reference: format!("delete:{id}"),
                })
            }
            (Client::Telnyx(c), Operation::Register { registration_code }) => {
                let iccid = row.target.iccid().expect("SIM rows have an ICCID").as_str();
                let sim = c.register_one(iccid, registration_code).await?;
                Ok(Sent::Accepted {
                    reference: format!("settle:{}", sim.id),
                })
            }
            (_, op) => Err(ProviderError::permanent(format!(
                "`{}` is not supported by {}",
                op.action(),
                self.kind
            ))),
        }
    }

    /// Reads an asynchronous change by its reference.
    pub async fn poll(&self, reference: &str, after: &str) -> Result<Polled, ProviderError> {
        match &self.client {
            Client::Emnify(c) => {
                let (euicc, op) = reference
                    .split_once('/')
                    .ok_or_else(|| ProviderError::permanent("malformed reference"))?;
                c.poll_operation(euicc, op).await
            }
            Client::Twilio(c) => c.poll_status(reference, after).await,
            Client::Telnyx(c) => match reference.split_once(':') {
                Some(("delete", id)) => c.poll_deleted(id).await,
                Some(("settle", id)) => c.poll_settled(id).await,
                _ => c.poll_action(reference, after).await,
            },
        }
    }
}

/// The emnify operation request for an eUICC row.
pub fn euicc_request(op: &Operation) -> OperationRequest {
    let (action, iccid, _) = operation_code(op);
    let mut request = OperationRequest {
        action,
        validity_period: crate::job::model::DEFAULT_VALIDITY_PERIOD,
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
