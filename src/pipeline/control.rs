//! What controls a run while it goes, shared by every part of the pipeline: the stop signal
//! and why it was given, and the failure limit (`--max-failures`; the counts it is judged on
//! are `super::live`). A leaf: it imports nothing of the pipeline, so the engine, the confirmer, the
//! schedule and the row executor can all use it without importing each other.

use std::sync::Mutex;

/// `--max-failures N` or `N%`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FailureLimit {
    Count(u64),
    Percent(f64),
}

/// Rows that must finish before the failure threshold applies.
pub const WARM_UP_ROWS: u64 = 20;

/// Why dispatch stopped early.
#[derive(Debug, Clone, PartialEq)]
pub enum StopReason {
    Auth {
        provider: String,
        message: String,
    },
    /// Nothing of the provider's account could be reached (see `ErrorClass::Unreachable`).
    Unreachable {
        provider: String,
        message: String,
    },
    FailureThreshold {
        failed: u64,
        finished: u64,
    },
    Interrupted,
    Store(String),
    /// `--until` was reached.
    Until {
        at: chrono::DateTime<chrono::Utc>,
    },
    /// The `--window` closed (or will not open again before `--until`).
    WindowClosed {
        window: String,
    },
}

impl StopReason {
    /// Why a provider's error stops the run (see `ProviderError::stops_run`).
    pub fn provider(provider: &str, e: &crate::provider::ProviderError) -> StopReason {
        let (provider, message) = (provider.to_string(), e.to_string());
        match e.class {
            crate::provider::ErrorClass::Unreachable => {
                StopReason::Unreachable { provider, message }
            }
            _ => StopReason::Auth { provider, message },
        }
    }
}

/// Whether `failed` of `finished` rows exceeds the limit, once the warm-up is over.
pub fn over_limit(limit: Option<FailureLimit>, failed: u64, finished: u64) -> bool {
    let over = match limit {
        Some(FailureLimit::Count(n)) => failed > n,
        Some(FailureLimit::Percent(p)) => failed as f64 > finished as f64 * p / 100.0,
        None => false,
    };
    over && finished >= WARM_UP_ROWS
}

/// Shared stop flag with the first reason given.
#[derive(Default)]
pub struct Stop {
    latch: crate::latch::Latch,
    reason: Mutex<Option<StopReason>>,
}

impl Stop {
    pub fn request(&self, reason: StopReason) {
        let mut r = self.reason.lock().expect("stop lock");
        if r.is_none() {
            *r = Some(reason);
        }
        self.latch.set();
    }

    /// Resolves once a stop is requested.
    pub async fn stopped(&self) {
        self.latch.wait().await
    }

    pub fn requested(&self) -> bool {
        self.latch.is_set()
    }

    pub fn reason(&self) -> Option<StopReason> {
        self.reason.lock().expect("stop lock").clone()
    }
}
