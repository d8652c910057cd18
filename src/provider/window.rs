//! Following a provider's fixed rate window (Telnyx: so many requests per one-second window,
//! told back in `x-ratelimit-limit` and `x-ratelimit-remaining` on every answer).
//!
//! A client that only spaces its requests evenly must stay a little under the limit, since its
//! own seconds do not line up with the provider's windows: any one-second span may then hold
//! its rate plus its burst. Once the client knows where the provider's windows start, it can
//! send the whole limit in each of them and never one more. The answers tell it: the request
//! that comes back with `remaining = limit − 1` was the first of a new window, so the window
//! started after the request sent just before it and before this one's answer arrived. From
//! such an interval (kept only when it is narrow) the follower opens each window a little after
//! the latest possible start, spaces the limit's requests over it, and stops a little before the
//! earliest possible end.
//!
//! What it does not know it does not guess: until a narrow interval is seen, the lane's own
//! rate limiter paces requests; a 429, or a window holding more requests than this client sent
//! in it (someone else shares the limit), puts the lane back on that limiter for good.

use std::time::{Duration, Instant};

/// Intervals wider than this say too little about where windows start to be followed.
pub const MAX_UNCERTAINTY: Duration = Duration::from_millis(30);
/// Kept clear at each end of a window, on top of the uncertainty and the one-way latency.
pub const MARGIN: Duration = Duration::from_millis(2);
/// At the end of a window, at least this share of it is kept clear as well: a request that
/// leaves late in its window and is delayed on the way — a busy machine, a busy provider — must
/// not arrive in the next one, which is already full. It costs no throughput: the window's
/// whole limit is spaced over the rest of it. (With 2 ms, a loaded 2-core machine saw 429s.)
pub const END_SHARE: u32 = 10;

/// What the follower says about the next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Windows are not known (yet, or any more): use the lane's rate limiter.
    Unknown,
    /// Send now (counted in the current window).
    Go,
    /// Ask again at this instant.
    WaitUntil(Instant),
}

/// The follower's state for one lane.
#[derive(Debug)]
pub struct WindowFollower {
    len: Duration,
    /// At most this many per window, whatever the provider allows (`--rate`).
    cap: Option<u64>,
    /// The provider's limit per window, as last told.
    limit: Option<u64>,
    /// Some window started within `[lo, hi]` (window 0; later windows follow every `len`).
    start: Option<(Instant, Instant)>,
    /// Windows before this one are paced by the lane's rate limiter: the one in which the start
    /// was learned already holds requests this follower did not count.
    follow_from: u64,
    /// Half the round trip of the answer that fixed `start`.
    one_way: Duration,
    /// The window the last request went in, and how many went in it.
    window: u64,
    sent: u64,
    /// When the previous request left.
    last_send: Option<Instant>,
    /// Set after a 429 or a sign of someone else's traffic: never follow again.
    given_up: bool,
}

impl WindowFollower {
    pub fn new(len: Duration, cap: Option<u64>) -> WindowFollower {
        WindowFollower {
            len,
            cap,
            limit: None,
            start: None,
            follow_from: 0,
            one_way: Duration::ZERO,
            window: 0,
            sent: 0,
            last_send: None,
            given_up: false,
        }
    }

    fn per_window(&self) -> Option<u64> {
        let limit = self.limit?;
        Some(self.cap.map_or(limit, |c| c.min(limit)).max(1))
    }

    /// Which window `at` falls in, with the instants sending opens and closes in it.
    fn window_at(&self, at: Instant) -> Option<(u64, Instant, Instant)> {
        let (lo, hi) = self.start?;
        let len = self.len.as_nanos();
        let index = (at.saturating_duration_since(hi).as_nanos() / len) as u64;
        let open = hi + MARGIN + self.len * index as u32;
        let end_margin = MARGIN.max(self.len / END_SHARE);
        let close = lo + self.len * (index + 1) as u32 - end_margin - self.one_way;
        Some((index, open, close))
    }

    /// Whether a request may leave at `now`; counts it when it may.
    pub fn decide(&mut self, now: Instant) -> Decision {
        if self.given_up {
            return Decision::Unknown;
        }
        let (Some(per_window), Some((index, open, close))) =
            (self.per_window(), self.window_at(now))
        else {
            return Decision::Unknown;
        };
        if index < self.follow_from {
            if now < close {
                return Decision::Unknown;
            }
            let (_, next_open, _) = self.window_at(open + self.len).expect("the start is known");
            return Decision::WaitUntil(next_open);
        }
        if index != self.window {
            self.window = index;
            self.sent = 0;
        }
        if now < open {
            return Decision::WaitUntil(open);
        }
        if self.sent >= per_window || now >= close {
            let (_, next_open, _) = self.window_at(open + self.len).expect("the start is known");
            return Decision::WaitUntil(next_open);
        }
        // The k-th request of a window has its own slot, so a late wake-up is caught up on
        // within the window instead of being lost.
        let spacing = close.saturating_duration_since(open) / per_window as u32;
        let slot = open + spacing * self.sent as u32;
        if now < slot {
            return Decision::WaitUntil(slot);
        }
        self.sent += 1;
        Decision::Go
    }

    /// Notes that a request is leaving now (whichever way it was paced): the next answer that
    /// opens a window is bounded by it.
    pub fn sending(&mut self, now: Instant) -> Option<Instant> {
        self.last_send.replace(now)
    }

    /// Reads an answer's `x-ratelimit-*` values (limit, remaining, reset in seconds if given):
    /// `sent` is when its request left, `before` when the request before it left (see
    /// [`WindowFollower::sending`]), `answered` when the answer came back.
    pub fn observe(
        &mut self,
        (limit, remaining, reset): (u64, u64, Option<u64>),
        sent: Instant,
        before: Option<Instant>,
        answered: Instant,
    ) {
        if self.given_up || limit == 0 {
            return;
        }
        // A window that resets later than one window from now is longer than the one assumed:
        // its limit is not a per-window rate this follower may send at.
        if reset.is_some_and(|r| r > self.len.as_secs_f64().ceil() as u64) {
            self.give_up();
            return;
        }
        self.limit = Some(limit);
        let used = limit.saturating_sub(remaining);
        if let Some((index, open, close)) = self.window_at(sent) {
            // More counted in a window this client paced alone than it sent in it: the limit
            // is shared.
            let paced = index >= self.follow_from && index == self.window;
            if paced && (open..close).contains(&sent) && used > self.sent {
                self.give_up();
                return;
            }
        }
        let Some(before) = before else { return };
        if used != 1 || answered.saturating_duration_since(before) > MAX_UNCERTAINTY {
            return;
        }
        // This request opened a window: it started after `before` left and before `answered`.
        self.one_way = answered.saturating_duration_since(sent) / 2;
        let narrowed = self.start.and_then(|(old_lo, old_hi)| {
            // The same phase as window 0 sees it: keep what both say.
            let windows = ((before.saturating_duration_since(old_lo).as_nanos()
                + self.len.as_nanos() / 2)
                / self.len.as_nanos()) as u32;
            let (lo, hi) = (before - self.len * windows, answered - self.len * windows);
            let (a, b) = (old_lo.max(lo), old_hi.min(hi));
            (a <= b).then_some((a, b))
        });
        match narrowed {
            Some(start) => self.start = Some(start),
            None => {
                // First seen, or the old reckoning was wrong: start over from this window, and
                // follow from the next one.
                self.start = Some((before, answered));
                self.window = 0;
                self.sent = 0;
                self.follow_from = 1;
            }
        }
    }

    /// After a 429 (or a shared limit): back to the lane's rate limiter for the rest of the run.
    pub fn give_up(&mut self) {
        self.given_up = true;
        self.start = None;
    }

    /// The limit the provider states per window and the window's length, when no cap was
    /// set: until windows are followed, the lane may pace itself by it instead of by the
    /// documented default.
    pub fn stated_limit(&self) -> Option<(u64, Duration)> {
        match (self.cap, self.limit, self.given_up) {
            (None, Some(limit), false) => Some((limit, self.len)),
            _ => None,
        }
    }

    pub fn following(&self) -> bool {
        !self.given_up && self.start.is_some() && self.limit.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// A follower that saw the window open between t0 + 500 ms and t0 + 504 ms (limit 10).
    fn learned(t0: Instant) -> WindowFollower {
        learned_with_cap(t0, None)
    }

    fn learned_with_cap(t0: Instant, cap: Option<u64>) -> WindowFollower {
        let mut f = WindowFollower::new(Duration::from_secs(1), cap);
        f.observe(
            (10, 9, None),
            t0 + 502 * MS,
            Some(t0 + 500 * MS),
            t0 + 504 * MS,
        );
        f
    }

    #[test]
    fn nothing_is_followed_before_a_narrow_window_start_is_seen() {
        let t0 = Instant::now();
        let mut f = WindowFollower::new(Duration::from_secs(1), None);
        assert_eq!(f.decide(t0), Decision::Unknown);
        // A first answer without a request before it, and one that is not first in its window.
        f.observe((10, 9, None), t0, None, t0 + MS);
        f.observe((10, 5, None), t0 + 10 * MS, Some(t0 + 9 * MS), t0 + 11 * MS);
        assert_eq!(f.decide(t0 + 20 * MS), Decision::Unknown);
        // First in a window, but the interval is too wide to act on.
        f.observe(
            (10, 9, None),
            t0 + 100 * MS,
            Some(t0 + 40 * MS),
            t0 + 101 * MS,
        );
        assert_eq!(f.decide(t0 + 120 * MS), Decision::Unknown);
        assert!(!f.following());
    }

    /// Simulates a server with windows starting at t0 + 503 ms + k s and asks the follower for
    /// as many requests as it allows: never more than the limit in a server window, and the
    /// whole limit in every window after the first.
    #[test]
    fn sends_the_whole_limit_in_each_window_and_never_more() {
        let t0 = Instant::now();
        let mut f = learned(t0);
        assert!(f.following());
        let server_start = t0 + 503 * MS;
        let mut per_window = std::collections::BTreeMap::<u64, u64>::new();
        let mut now = t0 + 504 * MS;
        let end = t0 + Duration::from_millis(5_600);
        while now < end {
            match f.decide(now) {
                Decision::Go => {
                    // Arrives 0.5 ms later.
                    let arrival = now + MS / 2;
                    let w = (arrival - server_start).as_millis() as u64 / 1000;
                    *per_window.entry(w).or_default() += 1;
                }
                // Wake up to 1.5 ms late, as timers do.
                Decision::WaitUntil(t) => now = t.max(now) + MS * 3 / 2,
                // The window the start was learned in is the rate limiter's.
                Decision::Unknown => now += MS,
            }
        }
        assert!(per_window.values().all(|&n| n <= 10), "{per_window:?}");
        let full: Vec<_> = per_window.range(1..5).map(|(_, n)| *n).collect();
        assert_eq!(full, vec![10, 10, 10, 10], "{per_window:?}");
    }

    /// The same server, but every request takes 90 ms more to arrive (a busy machine or a busy
    /// provider): the end of each window is kept clear long enough that none arrives in the
    /// next one, and the whole limit still goes in each window.
    #[test]
    fn requests_delayed_on_the_way_still_arrive_in_their_window() {
        let t0 = Instant::now();
        // Telnyx's 100 per second: 10 ms between slots, so the last is close to the end.
        let mut f = WindowFollower::new(Duration::from_secs(1), None);
        f.observe(
            (100, 99, None),
            t0 + 502 * MS,
            Some(t0 + 500 * MS),
            t0 + 504 * MS,
        );
        let server_start = t0 + 503 * MS;
        let mut per_window = std::collections::BTreeMap::<u64, u64>::new();
        let mut now = t0 + 504 * MS;
        while now < t0 + Duration::from_millis(5_600) {
            match f.decide(now) {
                Decision::Go => {
                    let arrival = now + 90 * MS;
                    let w = (arrival - server_start).as_millis() as u64 / 1000;
                    *per_window.entry(w).or_default() += 1;
                }
                Decision::WaitUntil(t) => now = t.max(now) + MS,
                Decision::Unknown => now += MS,
            }
        }
        assert!(per_window.values().all(|&n| n <= 100), "{per_window:?}");
        let full: Vec<_> = per_window.range(1..5).map(|(_, n)| *n).collect();
        assert_eq!(full, vec![100, 100, 100, 100], "{per_window:?}");
    }

    #[test]
    fn a_window_longer_than_one_second_is_not_followed() {
        let t0 = Instant::now();
        let mut f = WindowFollower::new(Duration::from_secs(1), None);
        // 6,000 per minute, say: resets in 42 s.
        f.observe((6_000, 5_999, Some(42)), t0 + 2 * MS, Some(t0), t0 + 4 * MS);
        assert_eq!(f.stated_limit(), None);
        assert!(!f.following());
        // Within a one-second window the reset is at most 1.
        let mut g = WindowFollower::new(Duration::from_secs(1), None);
        g.observe((100, 99, Some(1)), t0 + 2 * MS, Some(t0), t0 + 4 * MS);
        assert_eq!(g.stated_limit(), Some((100, Duration::from_secs(1))));
    }

    #[test]
    fn a_cap_below_the_limit_is_kept() {
        let t0 = Instant::now();
        let mut f = learned_with_cap(t0, Some(4));
        assert_eq!(f.decide(t0 + 505 * MS), Decision::Unknown);
        let mut now = t0 + 1_505 * MS;
        let mut sent = 0;
        while now < t0 + 2_500 * MS {
            match f.decide(now) {
                Decision::Go => sent += 1,
                Decision::WaitUntil(t) => now = t,
                Decision::Unknown => panic!("following"),
            }
        }
        assert_eq!(sent, 4);
    }

    #[test]
    fn a_shared_limit_or_a_refusal_ends_following() {
        let t0 = Instant::now();
        let mut f = learned(t0);
        assert_eq!(f.decide(t0 + 1_510 * MS), Decision::Go);
        // The server counted 5 in this window; this client sent 1.
        f.observe(
            (10, 5, None),
            t0 + 1_510 * MS,
            Some(t0 + 1_505 * MS),
            t0 + 1_511 * MS,
        );
        assert_eq!(f.decide(t0 + 1_600 * MS), Decision::Unknown);
        assert!(!f.following());
        let mut g = learned(t0);
        g.give_up();
        assert_eq!(g.decide(t0 + 600 * MS), Decision::Unknown);
        g.observe(
            (10, 9, None),
            t0 + 1_502 * MS,
            Some(t0 + 1_500 * MS),
            t0 + 1_504 * MS,
        );
        assert!(!g.following());
    }

    #[test]
    fn later_openings_narrow_the_start_and_a_contradiction_replaces_it() {
        let t0 = Instant::now();
        let mut f = learned(t0); // [500, 504]
        f.observe(
            (10, 9, None),
            t0 + 1_503 * MS,
            Some(t0 + 1_502 * MS),
            t0 + 1_506 * MS,
        );
        assert_eq!(f.start, Some((t0 + 502 * MS, t0 + 504 * MS)));
        f.observe(
            (10, 9, None),
            t0 + 2_701 * MS,
            Some(t0 + 2_700 * MS),
            t0 + 2_702 * MS,
        );
        assert_eq!(f.start, Some((t0 + 2_700 * MS, t0 + 2_702 * MS)));
        // Following starts with the window after the one the new reckoning was made in.
        assert_eq!(f.decide(t0 + 2_800 * MS), Decision::Unknown);
        assert_eq!(f.decide(t0 + 3_710 * MS), Decision::Go);
    }
}
