//! What every part of the sandbox shares: its settings, the journal and stats, the limiters,
//! the fault dice and the stand-ins it serves (each owning its own state, reached through
//! [`Shared::stand_in`]); what the gate and the server ask of a stand-in ([`StandIn`]), so that
//! they never match on the provider; and the HTTP helpers every stand-in uses alike.

use std::any::Any;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use axum::http::{HeaderMap, Method};
use axum::response::Response;
use axum::Router;

use super::journal::{Journal, Stats};
use super::limits::{Limiter, Limits, Refusal, WindowState};
use super::settings::SandboxConfig;

/// Everything the handlers share.
pub struct Shared {
    pub config: SandboxConfig,
    pub journal: Journal,
    pub stats: Stats,
    pub limits: RwLock<Option<Arc<Limits>>>,
    rng: Mutex<fastrand::Rng>,
    /// The providers served; each owns its state.
    stand_ins: Vec<Arc<dyn StandIn>>,
}

impl Shared {
    pub fn new(config: SandboxConfig, stand_ins: Vec<Arc<dyn StandIn>>) -> Self {
        Shared {
            limits: RwLock::new(config.limits.factor().map(|k| Arc::new(Limits::new(k)))),
            journal: Journal::default(),
            stats: Stats::default(),
            rng: Mutex::new(fastrand::Rng::with_seed(config.seed)),
            config,
            stand_ins,
        }
    }

    pub fn stand_ins(&self) -> &[Arc<dyn StandIn>] {
        &self.stand_ins
    }

    /// The stand-in of type `T` (a provider module reaching its own state).
    pub fn stand_in<T: StandIn>(&self) -> &T {
        self.stand_ins
            .iter()
            .find_map(|s| s.as_any().downcast_ref::<T>())
            .expect("every provider's stand-in is served")
    }

    /// True with probability `p` (seeded dice, so a faulty run can be repeated).
    pub fn roll(&self, p: f64) -> bool {
        p > 0.0 && self.rng.lock().expect("rng lock").f64() < p
    }

    /// A uniformly random number in `0..=max`.
    pub fn uniform(&self, max: u64) -> u64 {
        self.rng.lock().expect("rng lock").u64(0..=max)
    }

    pub fn limits(&self) -> Option<Arc<Limits>> {
        self.limits.read().expect("limits lock").clone()
    }

    /// Applies every asynchronous change that is due by now, at every provider.
    pub fn settle_all(&self) {
        let now = std::time::Instant::now();
        for stand_in in &self.stand_ins {
            stand_in.settle(self, now);
        }
    }

    /// Back to the initial inventory, with an empty journal, stats and limiter windows.
    pub fn reset(&self) {
        for stand_in in &self.stand_ins {
            stand_in.reset(self.config.sims);
        }
        *self.limits.write().expect("limits lock") = self
            .config
            .limits
            .factor()
            .map(|k| Arc::new(Limits::new(k)));
        self.journal.clear();
        self.stats.clear();
    }
}

/// `http://<Host header>`: lists and `next_page_url`s point back at whichever address the
/// client used to reach the sandbox.
pub fn origin(headers: &HeaderMap) -> String {
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    format!("http://{host}")
}

/// The origin of the next-page links a stand-in hands back: the request's own, or — with
/// `foreign_links`, as behind an API gateway or an egress proxy, where the provider names its
/// own host — a host this sandbox never serves (`.invalid` never resolves).
pub fn link_origin(shared: &Shared, headers: &HeaderMap) -> String {
    match shared.config.foreign_links {
        true => "https://provider.sandbox.invalid".to_string(),
        false => origin(headers),
    }
}

/// The token of an `Authorization: Bearer <token>` header, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// What admission by a stand-in's limits gave.
#[derive(Default)]
pub struct Admitted<'a> {
    /// The fixed window's state, for `x-ratelimit-*` headers.
    pub window: Option<WindowState>,
    /// An in-flight place to give back when the request ends.
    pub in_flight: Option<&'a Limiter>,
}

/// A provider stand-in: its routes, the shape its rate limits take, how it authenticates, its
/// own error bodies for the gate's answers (404, 429, 5xx), and its state (settling
/// asynchronous changes, starting over). Each provider module implements it and owns its state.
pub trait StandIn: Any + Send + Sync {
    /// The path prefix it is served under and its name in stats and the journal.
    fn name(&self) -> &'static str;

    /// Its routes, relative to its prefix.
    fn router(&self) -> Router<Arc<Shared>>;

    /// Admits a request by the provider's documented limits (`route` is the matched route
    /// template, relative to the prefix), or refuses it.
    fn admit<'a>(
        &self,
        limits: &'a Limits,
        method: &Method,
        route: &str,
        now: Instant,
    ) -> Result<Admitted<'a>, Refusal>;

    /// Checks a request's credentials; the provider's own refusal otherwise.
    fn authorize(&self, shared: &Shared, route: &str, headers: &HeaderMap) -> Result<(), Response>;

    /// The provider's answer to a path it does not have.
    fn not_found(&self, path: &str) -> Response;

    /// The provider's 429.
    fn too_many_requests(&self) -> Response;

    /// The provider's 5xx.
    fn server_error(&self) -> Response;

    /// Applies every asynchronous change due by `now`.
    fn settle(&self, shared: &Shared, now: Instant);

    /// Back to the initial inventory of `sims` SIMs.
    fn reset(&self, sims: u32);

    fn as_any(&self) -> &dyn Any;
}
