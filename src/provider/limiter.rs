//! The rate gate of one provider lane: a GCRA limiter (governor) for request-rate limits, a
//! semaphore for in-flight caps (Twilio), and a lane-wide pause after a 429 so that one refusal
//! slows every worker of the lane, not just the request that got it.
//!
//! Defaults follow each provider's documented limits, set so that even the burst stays inside
//! a windowed limit: emnify allows 2,000 requests per 5 minutes per IP, so burst + rate × 300 s
//! must not exceed 2,000; Telnyx's 100 per 1-second window is met by spacing requests evenly.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::job::ProviderKind;

tokio::task_local! {
    /// Time the current row spent waiting at rate gates (set by the pipeline per row), so that
    /// provider latency can be reported apart from limiter waits.
    pub static GATE_WAIT: std::cell::Cell<Duration>;
}

/// A lane's limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LaneLimits {
    /// Requests per second, and how many may go at once before spacing applies.
    pub rate: Option<(f64, u32)>,
    /// Requests in flight at once.
    pub max_in_flight: Option<usize>,
}

impl LaneLimits {
    /// The documented limits of a provider kind.
    pub fn documented(kind: ProviderKind) -> LaneLimits {
        match kind {
            // 5 + 6.65/s × 300 s = 2,000: the 5-minute window is never exceeded.
            ProviderKind::Emnify => LaneLimits {
                rate: Some((1995.0 / 300.0, 5)),
                max_in_flight: None,
            },
            ProviderKind::Twilio => LaneLimits {
                rate: None,
                max_in_flight: Some(100),
            },
            // A little under 100/s with a burst of 2: any 1-second window holds at most 98 + 2, and
            // a timer that wakes late can catch up instead of losing the slot.
            ProviderKind::Telnyx => LaneLimits {
                rate: Some((98.0, 2)),
                max_in_flight: None,
            },
        }
    }

    /// `--rate N` (requests/s): replaces the rate, keeps any in-flight cap. The burst is 1% of
    /// the rate (at least 1): timers wake up to a millisecond late, and without a little credit
    /// every late wake-up is lost for good (measured: 440 of 500 requests/s with burst 1). Any
    /// one-second window then holds at most 1.01 × N requests.
    pub fn with_rate(self, rate: f64) -> LaneLimits {
        LaneLimits {
            rate: Some((rate, burst_for(rate))),
            ..self
        }
    }
}

/// The burst allowance for a rate: 10 ms worth of requests, at least 1.
pub fn burst_for(rate: f64) -> u32 {
    ((rate / 100.0).floor() as u32).max(1)
}

pub struct RateGate {
    limiter: Option<DefaultDirectRateLimiter>,
    /// One waiter at the limiter at a time, in arrival order: many tasks waking for the same
    /// slot made the winner late every time and cost ~5% of the rate (measured).
    turn: tokio::sync::Mutex<()>,
    in_flight: Option<Semaphore>,
    paused_until: Mutex<Option<Instant>>,
    slowdowns: AtomicU64,
}

impl RateGate {
    pub fn new(limits: LaneLimits) -> RateGate {
        let limiter = limits.rate.map(|(rate, burst)| {
            let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
            let quota = Quota::with_period(period)
                .expect("a positive period")
                .allow_burst(NonZeroU32::new(burst.max(1)).expect("burst is at least 1"));
            governor::RateLimiter::direct(quota)
        });
        RateGate {
            limiter,
            turn: tokio::sync::Mutex::new(()),
            in_flight: limits.max_in_flight.map(Semaphore::new),
            paused_until: Mutex::new(None),
            slowdowns: AtomicU64::new(0),
        }
    }

    /// Waits until a request may leave; hold the returned permit until its answer arrives.
    pub async fn acquire(&self) -> Option<SemaphorePermit<'_>> {
        let started = Instant::now();
        loop {
            let pause = *self.paused_until.lock().expect("pause lock");
            match pause {
                Some(until) if until > Instant::now() => {
                    tokio::time::sleep_until(until.into()).await
                }
                _ => break,
            }
        }
        let permit = match &self.in_flight {
            Some(s) => Some(s.acquire().await.expect("the semaphore is never closed")),
            None => None,
        };
        if let Some(limiter) = &self.limiter {
            let _turn = self.turn.lock().await;
            limiter.until_ready().await;
        }
        let _ = GATE_WAIT.try_with(|w| w.set(w.get() + started.elapsed()));
        permit
    }

    /// After a 429: no request of this lane leaves before `after` has passed.
    pub fn slow_down(&self, after: Duration) {
        self.slowdowns.fetch_add(1, Ordering::Relaxed);
        let until = Instant::now() + after;
        let mut pause = self.paused_until.lock().expect("pause lock");
        if pause.is_none_or(|p| p < until) {
            *pause = Some(until);
        }
    }

    pub fn slowdowns(&self) -> u64 {
        self.slowdowns.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rate_spaces_requests() {
        let gate = RateGate::new(LaneLimits {
            rate: Some((100.0, 1)),
            max_in_flight: None,
        });
        let started = Instant::now();
        for _ in 0..11 {
            gate.acquire().await;
        }
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(95), "{elapsed:?}");
    }

    #[tokio::test]
    async fn in_flight_cap_holds_permits() {
        let gate = RateGate::new(LaneLimits {
            rate: None,
            max_in_flight: Some(2),
        });
        let a = gate.acquire().await;
        let _b = gate.acquire().await;
        assert!(
            tokio::time::timeout(Duration::from_millis(50), gate.acquire())
                .await
                .is_err()
        );
        drop(a);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), gate.acquire())
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn slow_down_pauses_the_lane() {
        let gate = RateGate::new(LaneLimits {
            rate: None,
            max_in_flight: None,
        });
        gate.slow_down(Duration::from_millis(80));
        let started = Instant::now();
        gate.acquire().await;
        assert!(started.elapsed() >= Duration::from_millis(75));
        assert_eq!(gate.slowdowns(), 1);
    }
}
