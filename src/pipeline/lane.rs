//! A provider lane: one configured account ([`Account`]), its workers, and its inventory
//! listing. The lane lists the inventory when that saves requests (and answers rows from the
//! pages as they arrive), and confirms asynchronous changes in batches where the account can
//! list them, one by one otherwise. What a row means at the provider — which call, which
//! status, which reference — is the account's and the provider's own; the lane never matches
//! on the provider. References to asynchronous changes are strings only the account
//! interprets (stored in the checkpoint).

use std::collections::HashMap;
use std::sync::Mutex;

use futures_util::StreamExt;
use tokio::sync::oneshot;

use crate::job::{Action, JobRow};
use crate::provider::http::Http;
use crate::provider::{
    Account, Cursor, ErrorClass, Observed, Polled, Provider, ProviderError, Sent, SimState,
};

use super::snapshot::{Lookup, Snapshot};
use crate::provider::retry::{with_retries, RetryPolicy};

/// One configured provider: its name in job files and its account.
pub struct Lane {
    pub name: String,
    pub account: Box<dyn Account>,
    /// Workers of this lane (requests in flight at once, at most).
    pub concurrency: usize,
    /// The limits its requests keep to (the provider's documented ones, or as configured).
    pub limits: crate::provider::limiter::LaneLimits,
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
        self.account.http()
    }

    /// What simbatch believes about this lane's provider.
    pub fn provider(&self) -> &'static dyn Provider {
        self.account.provider()
    }

    /// Whether a row may be resolved from the snapshot (rows in groups, rows whose change the
    /// listing does not show, and rows being reconciled always read live: the snapshot is
    /// stale once the job itself acts).
    pub fn snapshot_eligible(&self, row: &JobRow) -> bool {
        row.group.is_none() && self.listing_answers(row.action())
    }

    /// Whether the inventory listing can answer for an (ungrouped) row of this action.
    pub fn listing_answers(&self, action: Action) -> bool {
        action.target_kind() == crate::job::TargetKind::Sim && self.provider().listing_shows(action)
    }

    /// Whether the lane has no inventory listing (none was worth it, or it failed): rows are
    /// read live.
    pub fn listing_off(&self) -> bool {
        self.listing().phase == Listing::Off
    }

    fn listing(&self) -> std::sync::MutexGuard<'_, ListingState> {
        self.listing.lock().expect("listing lock")
    }

    /// Lists the inventory page by page when that costs fewer requests than looking `rows`
    /// rows up one by one, and keeps it (on disk, see [`Snapshot`]) for [`Lane::take_listed`],
    /// which may answer from the pages already in while the rest are read. Returns how many
    /// pages were read (0: not worth it). A page that fails on the way (a reset, a gateway's
    /// 5xx, a 429) is tried again by `policy`, as any read: one lost page would otherwise send
    /// every row to a lookup of its own (and a bulk lane to one request per row).
    pub async fn prefetch(&self, rows: usize, policy: &RetryPolicy) -> Result<u64, ProviderError> {
        let mut guard = ListingGuard {
            lane: self,
            complete: false,
            refusal: None,
        };
        match self.list(rows, policy).await {
            Ok(Some(pages)) => {
                guard.complete = true;
                self.listing().end(Listing::Complete);
                Ok(pages)
            }
            Ok(None) => Ok(0),
            Err(e) => {
                if e.stops_run() {
                    guard.refusal = Some(e.clone());
                }
                Err(e)
            }
        }
    }

    /// The listing itself: the pages read, or `None` when it is not worth it.
    async fn list(&self, rows: usize, policy: &RetryPolicy) -> Result<Option<u64>, ProviderError> {
        let page = |cursor: Cursor| async move {
            with_retries(policy, || self.account.sim_page(&cursor, None)).await
        };
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
        let first = page(Cursor::First).await?;
        match first.pages {
            // Numbered pages with a known count: the rest if that pays.
            Some(count) => {
                if count >= budget {
                    return Ok(None);
                }
                start(count * first.sims.len() as u64)?;
                add(first.sims)?;
                // The other pages a few at a time, kept in order (the rate gate still paces
                // them): one after the other, 100 ms of latency made the 4-page listing of
                // 10,000 emnify SIMs cost 0.4 s.
                let mut rest = futures_util::stream::iter(2..=count)
                    .map(|number| page(Cursor::Number(number)))
                    .buffered(LISTING_PAGES_AT_ONCE);
                while let Some(listed) = rest.next().await {
                    add(listed?.sims)?;
                }
                Ok(Some(count))
            }
            // Linked pages: list while that stays under half a request per row.
            None => {
                start(budget)?;
                let mut next = first.next.clone();
                add(first.sims)?;
                let mut pages = 1;
                while let Some(cursor) = next {
                    if pages >= budget / 2 {
                        return Ok(None);
                    }
                    let listed = page(cursor).await?;
                    add(listed.sims)?;
                    next = listed.next;
                    pages += 1;
                }
                Ok(Some(pages))
            }
        }
    }

    /// One page of the whole SIM inventory from `cursor` (the first: [`Cursor::First`]) and
    /// the cursor of the next page, if any; `group` narrows it where the provider can.
    pub async fn inventory_page(
        &self,
        cursor: &Cursor,
        group: Option<&str>,
    ) -> Result<(Vec<(String, SimState)>, Option<Cursor>), ProviderError> {
        let page = self.account.sim_page(cursor, group).await?;
        Ok((page.sims, page.next))
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

    /// Confirms many asynchronous changes at once where the account can list them; otherwise
    /// one read each. One result per `(reference, after)` in order. `patient`: see
    /// [`Account::confirm_batch`](crate::provider::account::Account::confirm_batch).
    pub async fn sweep(
        &self,
        waiting: &[(String, String)],
        patient: bool,
    ) -> Vec<Result<Polled, ProviderError>> {
        let batch: Vec<usize> = (0..waiting.len())
            .filter(|&i| self.account.batchable(&waiting[i].0))
            .collect();
        let mut results: Vec<Option<Result<Polled, ProviderError>>> = vec![None; waiting.len()];
        if batch.len() >= BATCH_SWEEP_MIN {
            let asked: Vec<(String, String)> = batch.iter().map(|&i| waiting[i].clone()).collect();
            match self.account.confirm_batch(&asked, patient).await {
                Ok(found) => {
                    for (i, r) in batch.iter().zip(found) {
                        results[*i] = Some(Ok(r));
                    }
                }
                // Credentials refused, or the run stopping: the same answer for every change.
                Err(e) if e.stops_run() || e.class == ErrorClass::Stopped => {
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
            self.account.poll(reference, after)
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

    /// What the provider shows for the row's target now, read live.
    pub async fn observe(&self, row: &JobRow) -> Result<Observed, ProviderError> {
        self.account.observe(row).await
    }

    /// The group id a `move` compares against (Twilio Fleet names resolve to SIDs).
    pub async fn move_target(&self, row: &JobRow) -> Result<Option<String>, ProviderError> {
        self.account.move_target(row).await
    }

    /// Sends the row's change; `after` is what pre-flight expects it to produce.
    pub async fn send(
        &self,
        row: &JobRow,
        observed: &Observed,
        after: &str,
    ) -> Result<Sent, ProviderError> {
        self.account.send(row, observed, after).await
    }

    /// Reads an asynchronous change by its reference.
    pub async fn poll(&self, reference: &str, after: &str) -> Result<Polled, ProviderError> {
        self.account.poll(reference, after).await
    }
}
