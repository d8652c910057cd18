//! A provider lane's client and the per-action translation of a job row into that provider's
//! calls: observe the target, send the change, poll an asynchronous change. References to
//! asynchronous changes are strings the lane alone interprets (stored in the checkpoint).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use futures_util::StreamExt;
use tokio::sync::oneshot;

use crate::job::{JobRow, Operation, ProviderKind};
use crate::provider::emnify::{Emnify, OperationRequest};
use crate::provider::http::Http;
use crate::provider::telnyx::Telnyx;
use crate::provider::twilio::Twilio;
use crate::provider::{ErrorClass, Polled, ProviderError, Sent, SimState};

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
    /// The inventory as listed so far, and the rows waiting for their SIM's page.
    pub listing: Mutex<ListingState>,
}

/// Where a lane's inventory listing stands. Dispatch does not wait for the whole listing: a row
/// whose SIM is already listed goes at once, one whose SIM is not waits until the page with its
/// SIM is in, and only once the listing is complete does "not listed" mean the provider does
/// not have it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Listing {
    /// No listing: rows are read live.
    #[default]
    Off,
    /// Pages are arriving.
    Running,
    /// Every page is in.
    Complete,
}

/// A lane's listing: its phase, the pages in so far (on disk, see [`Snapshot`]), and the rows
/// waiting for a SIM not listed yet — each woken by the page that lists its SIM (or by the
/// listing's end), not by every page: with 1,000 rows waiting on a 4,000-page listing, waking
/// all of them per page was 4 million lookups.
#[derive(Default)]
pub struct ListingState {
    pub phase: Listing,
    snapshot: Option<Snapshot>,
    waiting: HashMap<String, Vec<oneshot::Sender<()>>>,
    /// The listing was refused for its credentials.
    refusal: Option<ProviderError>,
}

impl ListingState {
    /// Ends the listing (complete or given up): every waiting row looks again.
    fn end(&mut self, phase: Listing) {
        self.phase = phase;
        if phase == Listing::Off {
            self.snapshot = None;
        }
        self.waiting.clear();
    }
}

/// Turns a listing that did not complete (an error, a listing not worth finishing, a cancelled
/// task) into live reads, so that no row waits for pages that will not come.
///
/// A listing refused for its credentials hands the refusal to the rows that waited for it, so
/// that they stop the run as their own 401 would, without sending anything.
struct ListingGuard<'a> {
    lane: &'a Lane,
    complete: bool,
    refusal: Option<ProviderError>,
}

impl Drop for ListingGuard<'_> {
    fn drop(&mut self) {
        if !self.complete {
            let mut listing = self.lane.listing();
            listing.refusal = self.refusal.take();
            listing.end(Listing::Off);
        }
    }
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
/// Numbered inventory pages requested at once while listing.
const LISTING_PAGES_AT_ONCE: usize = 8;

/// The ICCID under which a lane's listing and its job rows meet (emnify's 19-digit form gets
/// its Luhn digit).
pub fn snapshot_key(iccid: &str) -> String {
    crate::job::ids::canonical_iccid(iccid)
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

    fn listing(&self) -> std::sync::MutexGuard<'_, ListingState> {
        self.listing.lock().expect("listing lock")
    }

    /// Lists the inventory page by page when that costs fewer requests than looking `rows`
    /// rows up one by one, and keeps it (on disk, see [`Snapshot`]) for [`Lane::take_listed`],
    /// which may answer from the pages already in while the rest are read. Returns how many
    /// pages were read (0: not worth it).
    pub async fn prefetch(&self, rows: usize) -> Result<u64, ProviderError> {
        let mut guard = ListingGuard {
            lane: self,
            complete: false,
            refusal: None,
        };
        match self.list(rows).await {
            Ok(Some(pages)) => {
                guard.complete = true;
                self.listing().end(Listing::Complete);
                Ok(pages)
            }
            Ok(None) => Ok(0),
            Err(e) => {
                if e.class == ErrorClass::Auth {
                    guard.refusal = Some(e.clone());
                }
                Err(e)
            }
        }
    }

    /// The listing itself: the pages read, or `None` when it is not worth it.
    async fn list(&self, rows: usize) -> Result<Option<u64>, ProviderError> {
        if rows < SNAPSHOT_MIN_ROWS {
            return Ok(None);
        }
        self.listing().phase = Listing::Running;
        let budget = rows as u64;
        let on_disk = |e: std::io::Error| {
            ProviderError::permanent(format!("could not keep the inventory listing: {e}"))
        };
        // Adds a page and wakes the rows waiting for its SIMs.
        let add = |sims: Vec<(String, SimState)>| -> Result<(), ProviderError> {
            let mut listing = self.listing();
            let ListingState {
                snapshot, waiting, ..
            } = &mut *listing;
            let snapshot = snapshot
                .as_mut()
                .expect("the snapshot exists while listing");
            let keys: Vec<String> = sims.iter().map(|(iccid, _)| snapshot_key(iccid)).collect();
            keys.iter()
                .zip(&sims)
                .try_for_each(|(key, (_, state))| snapshot.insert(key, state))
                .and_then(|()| snapshot.flush())
                .map_err(on_disk)?;
            if !waiting.is_empty() {
                for key in &keys {
                    for row in waiting.remove(key).into_iter().flatten() {
                        let _ = row.send(());
                    }
                }
            }
            Ok(())
        };
        let start = |expected: u64| -> Result<(), ProviderError> {
            self.listing().snapshot = Some(Snapshot::new(expected).map_err(on_disk)?);
            Ok(())
        };
        match &self.client {
            // Numbered pages with a known count: read the first, then the rest if that pays.
            Client::Emnify(_) | Client::Telnyx(_) => {
                let (first, count) = self.sim_page(1).await?;
                if count >= budget {
                    return Ok(None);
                }
                start(count * first.len() as u64)?;
                add(first)?;
                // The other pages a few at a time, kept in order (the rate gate still paces
                // them): one after the other, 100 ms of latency made the 4-page listing of
                // 10,000 emnify SIMs cost 0.4 s.
                let mut rest = futures_util::stream::iter(2..=count)
                    .map(|page| self.sim_page(page))
                    .buffered(LISTING_PAGES_AT_ONCE);
                while let Some(page) = rest.next().await {
                    add(page?.0)?;
                }
                Ok(Some(count))
            }
            // Linked pages: list while that stays under half a request per row.
            Client::Twilio(c) => {
                start(budget)?;
                let mut path = Twilio::first_page(None);
                let mut pages = 0;
                loop {
                    if pages >= budget / 2 {
                        return Ok(None);
                    }
                    let (sims, next) = c.sim_page(&path).await?;
                    add(sims)?;
                    pages += 1;
                    match next {
                        Some(next) => path = next,
                        None => return Ok(Some(pages)),
                    }
                }
            }
        }
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

    /// The listed state of a row's SIM, once; `None` when it must be read live. While the
    /// listing is still running, a SIM not listed yet waits for the next page.
    pub async fn take_listed(&self, row: &JobRow) -> Result<Option<Observed>, ProviderError> {
        let (true, Some(iccid)) = (self.snapshot_eligible(row), row.target.iccid()) else {
            return Ok(None);
        };
        let key = snapshot_key(iccid.as_str());
        loop {
            let woken = {
                let mut listing = self.listing();
                let complete = match listing.phase {
                    Listing::Off => return listing.refusal.clone().map_or(Ok(None), Err),
                    Listing::Running => false,
                    Listing::Complete => true,
                };
                let lookup = match listing.snapshot.as_mut() {
                    Some(snapshot) => snapshot.take(&key, complete),
                    None if complete => return Ok(None),
                    None => Ok(Lookup::NotYet),
                };
                match lookup {
                    Ok(Lookup::Listed(state)) => return Ok(Some(Observed::Sim(state))),
                    Ok(Lookup::NotListed) => return Ok(Some(Observed::Missing)),
                    Ok(Lookup::AlreadyTaken) => return Ok(None),
                    Ok(Lookup::NotYet) => {
                        let (tx, rx) = oneshot::channel();
                        listing.waiting.entry(key.clone()).or_default().push(tx);
                        rx
                    }
                    Err(e) => {
                        tracing::warn!(lane = %self.name, error = %e, "could not read the inventory listing; reading live");
                        return Ok(None);
                    }
                }
            };
            // Told when its page is in; dropped unsent when the listing ends. Either way: look again.
            let _ = woken.await;
        }
    }

    /// What the provider shows for the row's target: from the snapshot when allowed, else live.
    pub async fn observe_first(&self, row: &JobRow) -> Result<Observed, ProviderError> {
        match self.take_listed(row).await? {
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
                // Credentials refused, or the run stopping: the same answer for every change.
                Err(e) if matches!(e.class, ErrorClass::Auth | ErrorClass::Stopped) => {
                    for i in &batch {
                        results[*i] = Some(Err(e.clone()));
                    }
                }
                // The listing failed (refused, cut, of another shape): the changes are still
                // there to be read, each on its own, below.
                Err(e) => {
                    tracing::warn!(lane = %self.name, error = %e, changes = batch.len(), "could not list the changes under way; reading each one")
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
                // Then each status they may have settled on, those listings side by side (a Sim
                // seen settled before stays settled; the scheduled list must come first).
                let statuses: HashSet<&String> = batch
                    .iter()
                    .map(|&i| &waiting[i])
                    .filter(|(reference, _)| !scheduled.contains(reference))
                    .map(|(_, after)| after)
                    .collect();
                let settled_on: HashMap<String, HashSet<String>> =
                    futures_util::future::try_join_all(statuses.into_iter().map(|after| async {
                        let sids = c
                            .list(after)
                            .await?
                            .into_iter()
                            .map(|(_, s)| s.id)
                            .collect();
                        Ok::<_, ProviderError>((after.clone(), sids))
                    }))
                    .await?
                    .into_iter()
                    .collect();
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
