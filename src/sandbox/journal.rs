//! What the sandbox remembers for inspection: the journal of every applied state change
//! (`/_sandbox/journal`) and request statistics (`/_sandbox/stats`). Not part of any
//! provider's API; tests use it to prove that nothing was applied twice.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// One applied state change.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct JournalEntry {
    pub seq: u64,
    pub provider: &'static str,
    /// The ICCID (SIM changes) or EID (eUICC changes) the change applies to.
    pub target: String,
    /// What changed, e.g. `status:Activated->Suspended`, `register`, `profile-enable:8901…`.
    pub change: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Default)]
pub struct Journal {
    entries: Mutex<Vec<JournalEntry>>,
}

impl Journal {
    pub fn record(
        &self,
        provider: &'static str,
        target: impl Into<String>,
        change: impl Into<String>,
        at: DateTime<Utc>,
    ) {
        let mut entries = self.entries.lock().expect("journal lock");
        let seq = entries.len() as u64 + 1;
        entries.push(JournalEntry {
            seq,
            provider,
            target: target.into(),
            change: change.into(),
            at,
        });
    }

    pub fn entries(&self) -> Vec<JournalEntry> {
        self.entries.lock().expect("journal lock").clone()
    }

    /// How many changes were applied (without copying them).
    pub fn len(&self) -> usize {
        self.entries.lock().expect("journal lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn clear(&self) {
        self.entries.lock().expect("journal lock").clear();
    }
}

/// Request counters. Keys use the matched route template, so their number stays bounded.
#[derive(Debug, Default)]
pub struct Stats {
    by_route: Mutex<BTreeMap<(String, String, u16), u64>>,
    in_flight: AtomicU64,
    peak_in_flight: AtomicU64,
    /// Per `provider METHOD /route`: requests in flight now, and the most at once.
    route_in_flight: Mutex<BTreeMap<String, (u64, u64)>>,
    too_many_requests: AtomicU64,
    faults: Mutex<BTreeMap<&'static str, u64>>,
}

/// The JSON body of `/_sandbox/stats` (limiter peaks are added by the server).
#[derive(Debug, Serialize)]
pub struct StatsSnapshot {
    pub requests_total: u64,
    pub requests: Vec<RouteCount>,
    pub per_provider: BTreeMap<String, u64>,
    pub too_many_requests: u64,
    pub peak_in_flight: u64,
    /// The most requests of one route in flight at once, per `provider METHOD /route`.
    pub peak_in_flight_by_route: BTreeMap<String, u64>,
    pub faults: BTreeMap<&'static str, u64>,
}

#[derive(Debug, Serialize)]
pub struct RouteCount {
    pub provider: String,
    /// `METHOD /route/{template}`.
    pub path: String,
    pub status: u16,
    pub count: u64,
}

/// Decrements the in-flight count when a request ends, however it ends.
pub struct InFlightGuard<'a>(&'a Stats);

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Ends one request of a route in flight, however it ends.
pub struct RouteGuard<'a>(&'a Stats, String);

impl Drop for RouteGuard<'_> {
    fn drop(&mut self) {
        let mut routes = self.0.route_in_flight.lock().expect("stats lock");
        if let Some((now, _)) = routes.get_mut(&self.1) {
            *now -= 1;
        }
    }
}

impl Stats {
    /// One more request of `route` (`provider METHOD /route`) in flight, until the guard drops.
    pub fn enter_route(&self, route: String) -> RouteGuard<'_> {
        let mut routes = self.route_in_flight.lock().expect("stats lock");
        let (now, peak) = routes.entry(route.clone()).or_default();
        *now += 1;
        *peak = (*peak).max(*now);
        drop(routes);
        RouteGuard(self, route)
    }

    pub fn enter(&self) -> InFlightGuard<'_> {
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak_in_flight.fetch_max(now, Ordering::Relaxed);
        InFlightGuard(self)
    }

    pub fn count(&self, provider: &str, path: String, status: u16) {
        if status == 429 {
            self.too_many_requests.fetch_add(1, Ordering::Relaxed);
        }
        *self
            .by_route
            .lock()
            .expect("stats lock")
            .entry((provider.to_string(), path, status))
            .or_default() += 1;
    }

    pub fn fault(&self, kind: &'static str) {
        *self
            .faults
            .lock()
            .expect("stats lock")
            .entry(kind)
            .or_default() += 1;
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let by_route = self.by_route.lock().expect("stats lock");
        let mut per_provider = BTreeMap::new();
        let mut total = 0;
        let requests = by_route
            .iter()
            .map(|((provider, path, status), count)| {
                *per_provider.entry(provider.clone()).or_default() += count;
                total += count;
                RouteCount {
                    provider: provider.clone(),
                    path: path.clone(),
                    status: *status,
                    count: *count,
                }
            })
            .collect();
        StatsSnapshot {
            requests_total: total,
            requests,
            per_provider,
            too_many_requests: self.too_many_requests.load(Ordering::Relaxed),
            peak_in_flight: self.peak_in_flight.load(Ordering::Relaxed),
            peak_in_flight_by_route: self
                .route_in_flight
                .lock()
                .expect("stats lock")
                .iter()
                .map(|(route, (_, peak))| (route.clone(), *peak))
                .collect(),
            faults: self.faults.lock().expect("stats lock").clone(),
        }
    }

    pub fn clear(&self) {
        self.by_route.lock().expect("stats lock").clear();
        self.faults.lock().expect("stats lock").clear();
        self.too_many_requests.store(0, Ordering::Relaxed);
        self.peak_in_flight
            .store(self.in_flight.load(Ordering::Relaxed), Ordering::Relaxed);
        for (now, peak) in self
            .route_in_flight
            .lock()
            .expect("stats lock")
            .values_mut()
        {
            *peak = *now;
        }
    }
}
