//! The rate gate of one provider lane: a GCRA limiter (governor) for request-rate limits, a
//! semaphore for in-flight caps (Twilio), the provider's own fixed windows once the answers
//! show where they start (Telnyx; see [`super::window`]), and a lane-wide pause after a 429 so
//! that one refusal slows every worker of the lane, not just the request that got it.
//!
//! Each provider's documented limits are its own (`Provider::documented_limits`), set so that
//! even the burst stays inside a windowed limit.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota};
use tokio::sync::{Semaphore, SemaphorePermit};

use super::error::header_number;
use super::window::{Decision, WindowFollower};

tokio::task_local! {
    /// Time the current row spent waiting at rate gates (set by the pipeline per row), so that
    /// provider latency can be reported apart from limiter waits.
    pub static GATE_WAIT: std::cell::Cell<Duration>;
}

/// The lane's first pause after a 429 without `Retry-After`, and the longest.
const BACK_OFF_FIRST: Duration = Duration::from_secs(1);
const BACK_OFF_CAP: Duration = Duration::from_secs(60);
/// The slowed pace of a lane without a rate of its own starts from this spacing; it never
/// exceeds the cap.
const SPACING_FLOOR: Duration = Duration::from_millis(10);
const SPACING_CAP: Duration = Duration::from_secs(5);

/// A lane's limits.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LaneLimits {
    /// Requests per second, and how many may go at once before spacing applies.
    pub rate: Option<(f64, u32)>,
    /// Requests in flight at once.
    pub max_in_flight: Option<usize>,
    /// The provider's fixed rate window, followed once its answers show where windows start,
    /// and at most how many requests to send in one (`--rate` × the window; else the limit the
    /// provider states).
    pub window: Option<(Duration, Option<u64>)>,
}

impl LaneLimits {
    /// `--rate N` (requests/s): replaces the rate, keeps any in-flight cap. The burst is 1% of
    /// the rate (at least 1): timers wake up to a millisecond late, and without a little credit
    /// every late wake-up is lost for good (measured: 440 of 500 requests/s with burst 1). Any
    /// one-second window then holds at most 1.01 × N requests.
    pub fn with_rate(self, rate: f64) -> LaneLimits {
        LaneLimits {
            rate: Some((rate, burst_for(rate))),
            window: self
                .window
                .map(|(len, _)| (len, Some((rate * len.as_secs_f64()).floor() as u64))),
            ..self
        }
    }
}

/// The burst allowance for a rate: 10 ms worth of requests, at least 1.
pub fn burst_for(rate: f64) -> u32 {
    ((rate / 100.0).floor() as u32).max(1)
}

/// A limiter of `rate` requests per second that lets `burst` go at once.
fn gcra(rate: f64, burst: u32) -> DefaultDirectRateLimiter {
    let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let quota = Quota::with_period(period)
        .expect("a positive period")
        .allow_burst(NonZeroU32::new(burst.max(1)).expect("burst is at least 1"));
    governor::RateLimiter::direct(quota)
}

/// A request's leave to go: holds its in-flight place (if the lane has a cap) until dropped.
pub struct Ticket<'a> {
    _permit: Option<SemaphorePermit<'a>>,
    /// A row's place among the rows (see [`RateGate::acquire`]), given up after `_permit`.
    _row: Option<SemaphorePermit<'a>>,
    /// When it left, and when the request before it did (see [`WindowFollower::observe`]).
    sent: Instant,
    before: Option<Instant>,
}

pub struct RateGate {
    limiter: Option<DefaultDirectRateLimiter>,
    /// One waiter at the limiter at a time, in arrival order: many tasks waking for the same
    /// slot made the winner late every time and cost ~5% of the rate (measured).
    turn: tokio::sync::Mutex<()>,
    /// Rows take their turn among themselves before they queue at `turn` or `in_flight`, so
    /// that a listing page or a confirmation sweep waits behind one row at most, not behind
    /// every worker of the lane.
    row_turn: tokio::sync::Mutex<()>,
    in_flight: Option<Semaphore>,
    /// As many places as `in_flight` has, for rows only (see `row_turn`).
    row_slots: Option<Semaphore>,
    follower: Option<Mutex<WindowFollower>>,
    /// Paces the lane by the limit the provider states, until its windows are followed.
    stated: std::sync::OnceLock<DefaultDirectRateLimiter>,
    paused_until: Mutex<Option<Instant>>,
    /// 429s without a `Retry-After` since the last successful answer, counted once
    /// per pause (the lane's own backoff: see [`RateGate::back_off`]).
    unexplained: AtomicU64,
    /// After 429s, the lane's own pace: requests at least this far apart, and when the next
    /// may leave (see [`RateGate::widen`]).
    spacing: Mutex<Option<(Duration, Instant)>>,
    /// 1 / the lane's rate, where it has one: where the spacing starts from and returns to.
    pace: Option<Duration>,
    slowdowns: AtomicU64,
    /// Set once by [`RateGate::close`].
    closed: crate::latch::Latch,
}

impl RateGate {
    pub fn new(limits: LaneLimits) -> RateGate {
        let limiter = limits.rate.map(|(rate, burst)| gcra(rate, burst));
        RateGate {
            limiter,
            turn: tokio::sync::Mutex::new(()),
            row_turn: tokio::sync::Mutex::new(()),
            in_flight: limits.max_in_flight.map(Semaphore::new),
            row_slots: limits.max_in_flight.map(Semaphore::new),
            follower: limits
                .window
                .map(|(len, cap)| Mutex::new(WindowFollower::new(len, cap))),
            stated: std::sync::OnceLock::new(),
            paused_until: Mutex::new(None),
            unexplained: AtomicU64::new(0),
            spacing: Mutex::new(None),
            pace: limits
                .rate
                .map(|(rate, _)| Duration::from_secs_f64(1.0 / rate)),
            slowdowns: AtomicU64::new(0),
            closed: crate::latch::Latch::default(),
        }
    }

    /// Closes the gate for good: requests waiting at it give up at once (whatever they wait
    /// for: a `Retry-After` pause, the rate, an in-flight place), and none passes from now on.
    /// Requests already through finish normally.
    pub fn close(&self) {
        self.closed.set();
    }

    pub fn is_closed(&self) -> bool {
        self.closed.is_set()
    }

    /// Waits until a request may leave; hold the returned ticket until its answer arrives.
    /// `None` once the gate is closed (see [`RateGate::close`]): the request must not be sent.
    pub async fn acquire(&self) -> Option<Ticket<'_>> {
        let ticket = tokio::select! {
            biased;
            _ = self.closed.wait() => return None,
            ticket = self.wait_turn() => ticket,
        };
        // Closed while the last wait ended: it still does not leave.
        (!self.is_closed()).then_some(ticket)
    }

    /// The waits of [`RateGate::acquire`], in order.
    ///
    /// A row's own requests (those made within [`GATE_WAIT`]'s scope) queue behind the lane's
    /// listing and confirmation requests: rows cannot go on without the listing's pages, and
    /// with every worker queued ahead of it a page waited for hundreds of rows (measured at
    /// Twilio's cap of 100 with 400 workers: 10 listing pages took 3.6 s, a sweep 2–4 s).
    async fn wait_turn(&self) -> Ticket<'_> {
        let started = Instant::now();
        let for_row = GATE_WAIT.try_with(|_| ()).is_ok();
        loop {
            let pause = *self.paused_until.lock().expect("pause lock");
            match pause {
                Some(until) if until > Instant::now() => {
                    tokio::time::sleep_until(until.into()).await
                }
                _ => break,
            }
        }
        if let Some(slot) = self.slot() {
            tokio::time::sleep_until(slot.into()).await;
        }
        let row = match &self.row_slots {
            Some(s) if for_row => Some(s.acquire().await.expect("the semaphore is never closed")),
            _ => None,
        };
        let permit = match &self.in_flight {
            Some(s) => Some(s.acquire().await.expect("the semaphore is never closed")),
            None => None,
        };
        let (sent, before) = if self.limiter.is_some() || self.follower.is_some() {
            // Dropped in reverse order: `turn` passes to a waiting page before the next row
            // can queue for it.
            let _row_turn = match for_row {
                true => Some(self.row_turn.lock().await),
                false => None,
            };
            let _turn = self.turn.lock().await;
            if !self.follow_window().await {
                if let Some(limiter) = self.stated.get().or(self.limiter.as_ref()) {
                    limiter.until_ready().await;
                }
            }
            // One instant for the ticket and the follower's record of the send.
            let sent = Instant::now();
            let before = self
                .follower
                .as_ref()
                .and_then(|f| f.lock().expect("follower lock").sending(sent));
            (sent, before)
        } else {
            (Instant::now(), None)
        };
        let _ = GATE_WAIT.try_with(|w| w.set(w.get() + started.elapsed()));
        Ticket {
            _permit: permit,
            _row: row,
            sent,
            before,
        }
    }

    /// Waits for the request's place in the provider's window; false when windows are not
    /// followed (the rate limiter paces the request instead).
    async fn follow_window(&self) -> bool {
        let Some(follower) = &self.follower else {
            return false;
        };
        loop {
            let decision = follower
                .lock()
                .expect("follower lock")
                .decide(Instant::now());
            match decision {
                Decision::Go => return true,
                Decision::Unknown => return false,
                Decision::WaitUntil(at) => tokio::time::sleep_until(at.into()).await,
            }
        }
    }

    /// Reads the window an answer reports (`x-ratelimit-limit`, `x-ratelimit-remaining`).
    pub fn observe(&self, ticket: &Ticket<'_>, headers: &reqwest::header::HeaderMap) {
        let Some(follower) = &self.follower else {
            return;
        };
        let number = |name: &str| header_number::<u64>(headers, name);
        if let (Some(limit), Some(remaining)) =
            (number("x-ratelimit-limit"), number("x-ratelimit-remaining"))
        {
            let mut follower = follower.lock().expect("follower lock");
            follower.observe(
                (limit, remaining, number("x-ratelimit-reset")),
                ticket.sent,
                ticket.before,
                Instant::now(),
            );
            if let Some((limit, len)) = follower.stated_limit() {
                // The documented shape (a burst of 2 under the limit), at the stated limit.
                self.stated.get_or_init(|| {
                    let rate = (limit.saturating_sub(2).max(1)) as f64 / len.as_secs_f64();
                    gcra(rate, 2)
                });
            }
        }
    }

    /// Whether the provider's windows are being followed.
    pub fn following_window(&self) -> bool {
        self.follower
            .as_ref()
            .is_some_and(|f| f.lock().expect("follower lock").following())
    }

    /// After a 429: no request of this lane leaves before `after` has passed.
    pub fn slow_down(&self, after: Duration) {
        self.slowdowns.fetch_add(1, Ordering::Relaxed);
        if let Some(follower) = &self.follower {
            follower.lock().expect("follower lock").give_up();
        }
        let until = Instant::now() + after;
        let mut pause = self.paused_until.lock().expect("pause lock");
        if pause.is_none_or(|p| p < until) {
            *pause = Some(until);
        }
    }

    /// After a 429 that says nothing of when to come back (neither Twilio nor emnify documents
    /// a `Retry-After`: provider-apis.md 1.7, 2.4; Twilio advises exponential backoff): the
    /// lane pauses 1 s, doubling with each further 429 that follows a pause without a success
    /// in between, up to 60 s, with jitter (half to all of it). The 429s of
    /// requests that were already out when the pause began do not count again.
    pub fn back_off(&self) {
        let paused = self.paused();
        let streak = match paused {
            true => self.unexplained.load(Ordering::Relaxed).saturating_sub(1),
            false => self.unexplained.fetch_add(1, Ordering::Relaxed),
        };
        let ceiling = BACK_OFF_FIRST
            .saturating_mul(1u32 << streak.min(16))
            .min(BACK_OFF_CAP);
        self.slow_down(ceiling.mul_f64(0.5 + fastrand::f64() / 2.0));
    }

    /// A successful answer: the lane's own backoff starts again from its first step (a 5xx
    /// says nothing of the rate, so it does not), and its pace recovers a tenth.
    pub fn eased(&self) {
        self.unexplained.store(0, Ordering::Relaxed);
        let mut spacing = self.spacing.lock().expect("spacing lock");
        if let Some((interval, next)) = *spacing {
            let interval = interval.mul_f64(0.9);
            *spacing = (interval > self.pace.unwrap_or(SPACING_FLOOR)).then_some((interval, next));
        }
    }

    /// After a 429 (before its pause is set): a pause alone would let every waiting request
    /// leave at once when it ends, into the next 429 — and, at emnify, each refused request
    /// still counts against the 5-minute per-IP limit. So the lane also slows its pace: its
    /// requests at least twice its usual spacing apart, doubling with each 429 that comes
    /// after a pause has ended (up to 5 s), easing back a tenth with each success.
    pub fn widen(&self) {
        let paused = self.paused();
        let mut spacing = self.spacing.lock().expect("spacing lock");
        let interval = match *spacing {
            Some((_, _)) if paused => return,
            Some((interval, _)) => interval * 2,
            None => self.pace.unwrap_or(SPACING_FLOOR) * 2,
        };
        *spacing = Some((interval.min(SPACING_CAP), Instant::now()));
    }

    /// How long the pause after a 429 still lasts, if one is under way.
    pub fn paused_for(&self) -> Option<Duration> {
        let until = (*self.paused_until.lock().expect("pause lock"))?;
        until.checked_duration_since(Instant::now())
    }

    /// Whether a pause after a 429 is under way.
    fn paused(&self) -> bool {
        self.paused_until
            .lock()
            .expect("pause lock")
            .is_some_and(|p| p > Instant::now())
    }

    /// The instant this request may leave under the lane's slowed pace, if it is slowed.
    fn slot(&self) -> Option<Instant> {
        let mut spacing = self.spacing.lock().expect("spacing lock");
        let (interval, next) = spacing.as_mut()?;
        let slot = (*next).max(Instant::now());
        *next = slot + *interval;
        Some(slot)
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
            window: None,
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
            window: None,
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

    /// Five rows are queued at the gate before a listing page; the page waits for one of them at
    /// most (the one already in line for the slot), under an in-flight cap and under a rate.
    #[tokio::test]
    async fn a_listing_request_goes_before_the_rows_queued_ahead_of_it() {
        for limits in [
            LaneLimits {
                rate: None,
                max_in_flight: Some(1),
                window: None,
            },
            // A slot every 200 ms: all six are queued long before the second slot.
            LaneLimits {
                rate: Some((5.0, 1)),
                max_in_flight: None,
                window: None,
            },
        ] {
            let gate = std::sync::Arc::new(RateGate::new(limits));
            let order = std::sync::Arc::new(Mutex::new(Vec::new()));
            let first = gate.acquire().await;
            let mut tasks = Vec::new();
            for who in ["row 1", "row 2", "row 3", "row 4", "row 5", "page"] {
                let (gate, order) = (gate.clone(), order.clone());
                let go = async move {
                    let ticket = gate.acquire().await;
                    order.lock().unwrap().push(who);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    drop(ticket);
                };
                tasks.push(match who {
                    "page" => tokio::spawn(go),
                    _ => tokio::spawn(GATE_WAIT.scope(std::cell::Cell::new(Duration::ZERO), go)),
                });
                // Each is queued before the next one starts.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            drop(first);
            for t in tasks {
                t.await.unwrap();
            }
            let order = order.lock().unwrap().clone();
            assert_eq!(order.len(), 6, "{limits:?}");
            let page = order.iter().position(|w| *w == "page").unwrap();
            assert!(page <= 1, "{limits:?}: {order:?}");
        }
    }

    /// A request waiting out a long pause gives up as soon as the gate closes, and none passes
    /// afterwards.
    #[tokio::test]
    async fn closing_ends_every_wait_at_once() {
        let gate = std::sync::Arc::new(RateGate::new(LaneLimits {
            rate: Some((1.0, 1)),
            max_in_flight: Some(1),
            window: None,
        }));
        gate.slow_down(Duration::from_secs(300));
        let waiting = {
            let gate = gate.clone();
            tokio::spawn(async move { gate.acquire().await.is_some() })
        };
        tokio::task::yield_now().await;
        gate.close();
        let passed = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the wait ended at once")
            .unwrap();
        assert!(!passed);
        assert!(
            gate.acquire().await.is_none(),
            "nothing passes a closed gate"
        );
    }

    #[test]
    fn without_retry_after_the_lane_backs_off_by_pauses_not_by_answers() {
        let gate = RateGate::new(LaneLimits {
            rate: None,
            max_in_flight: None,
            window: None,
        });
        let pause = |gate: &RateGate| {
            let until = gate.paused_until.lock().unwrap().expect("paused");
            until.saturating_duration_since(Instant::now())
        };
        gate.back_off();
        let first = pause(&gate);
        assert!(first > Duration::from_millis(400) && first <= BACK_OFF_FIRST);
        // Twenty more 429s of requests that were out when the pause began: the same step.
        for _ in 0..20 {
            gate.back_off();
        }
        assert!(pause(&gate) <= BACK_OFF_FIRST);
        // A 429 after a pause has run out doubles it; any other answer starts again.
        *gate.paused_until.lock().unwrap() = None;
        gate.back_off();
        assert!(pause(&gate) > BACK_OFF_FIRST - Duration::from_millis(100));
        *gate.paused_until.lock().unwrap() = None;
        gate.eased();
        gate.back_off();
        assert!(pause(&gate) <= BACK_OFF_FIRST);
        for _ in 0..30 {
            *gate.paused_until.lock().unwrap() = None;
            gate.back_off();
        }
        assert!(pause(&gate) <= BACK_OFF_CAP);
        assert!(pause(&gate) >= BACK_OFF_CAP / 2 - Duration::from_millis(100));
    }

    #[test]
    fn after_a_429_requests_leave_spaced_and_the_pace_recovers_with_successes() {
        let gate = RateGate::new(LaneLimits {
            rate: Some((100.0, 1)),
            max_in_flight: None,
            window: None,
        });
        assert_eq!(gate.slot(), None, "not slowed before a 429");
        gate.widen();
        let first = gate.slot().unwrap();
        let second = gate.slot().unwrap();
        assert_eq!(
            second - first,
            Duration::from_millis(20),
            "twice the 10 ms pace"
        );
        gate.widen();
        let third = gate.slot().unwrap();
        let fourth = gate.slot().unwrap();
        assert_eq!(fourth - third, Duration::from_millis(40));
        for _ in 0..20 {
            gate.eased();
        }
        assert_eq!(gate.slot(), None, "back to the lane's own pace");
    }

    #[tokio::test]
    async fn slow_down_pauses_the_lane() {
        let gate = RateGate::new(LaneLimits {
            rate: None,
            max_in_flight: None,
            window: None,
        });
        gate.slow_down(Duration::from_millis(80));
        let started = Instant::now();
        gate.acquire().await;
        assert!(started.elapsed() >= Duration::from_millis(75));
        assert_eq!(gate.slowdowns(), 1);
    }
}
