//! Rate-limit enforcement for the sandbox, in each provider's documented shape, and the record
//! of the most requests any window ever admitted (so tests can prove no limit was exceeded).
//!
//! Documented shapes (provider-apis.md 1.7, 2.4, 3.4):
//! - emnify: 2,000 requests per IP in any 5-minute window (a sliding window); per-path token
//!   buckets (GET list of SIMs/endpoints 10/s burst 5, GET one SIM 100/s burst 50, GET one
//!   endpoint 50/s burst 25); `POST /authenticate` 100 per 5 minutes.
//! - Twilio: a cap on requests in flight at once. Twilio publishes no number; third-party
//!   pages say 100, which is used here.
//! - Telnyx: publishes no wireless numbers; this sandbox uses 100 requests per 1-second fixed
//!   window and reports it in `x-ratelimit-limit/remaining/reset`.
//!
//! `scaled:K` multiplies every count and rate by K and keeps the windows.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Why a request was refused, and when to come back.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub limiter: &'static str,
    pub retry_after: Duration,
    /// Telnyx-style `x-ratelimit-*` values, when the limiter has them.
    pub window: Option<WindowState>,
}

/// The state of a fixed window, for `x-ratelimit-*` headers.
#[derive(Debug, Clone, Copy)]
pub struct WindowState {
    pub limit: u64,
    pub remaining: u64,
    pub reset: Duration,
}

#[derive(Debug)]
enum Shape {
    /// At most `limit` admissions in any `window` (a log of admission times).
    Sliding {
        limit: u64,
        window: Duration,
        log: VecDeque<Instant>,
    },
    /// GCRA/token bucket: `rate` per second, `burst` at once.
    Bucket {
        rate: f64,
        burst: f64,
        tokens: f64,
        last: Instant,
        recent: VecDeque<Instant>,
    },
    /// At most `limit` admissions per aligned window starting at `start`.
    Fixed {
        limit: u64,
        window: Duration,
        start: Instant,
        count: u64,
    },
    /// At most `cap` requests in flight.
    InFlight { cap: u64, current: u64 },
}

/// One shape's answer to a request: admitted, with how many the window (or the in-flight
/// count) now holds; or refused, with when to retry. Both carry the window's state for
/// fixed windows, whose responses show it.
type ShapeAnswer = Result<(u64, Option<WindowState>), (Duration, Option<WindowState>)>;

impl Shape {
    fn admit(&mut self, now: Instant) -> ShapeAnswer {
        match self {
            Shape::Sliding { limit, window, log } => admit_sliding(*limit, *window, log, now),
            Shape::Bucket {
                rate,
                burst,
                tokens,
                last,
                recent,
            } => admit_bucket((*rate, *burst), tokens, last, recent, now),
            Shape::Fixed {
                limit,
                window,
                start,
                count,
            } => admit_fixed(*limit, *window, start, count, now),
            Shape::InFlight { cap, current } => {
                if *current < *cap {
                    *current += 1;
                    Ok((*current, None))
                } else {
                    Err((Duration::from_secs(1), None))
                }
            }
        }
    }
}

/// Drops the times a sliding log no longer covers.
fn forget_before(log: &mut VecDeque<Instant>, window: Duration, now: Instant) {
    while log
        .front()
        .is_some_and(|t| now.duration_since(*t) >= window)
    {
        log.pop_front();
    }
}

fn admit_sliding(
    limit: u64,
    window: Duration,
    log: &mut VecDeque<Instant>,
    now: Instant,
) -> ShapeAnswer {
    forget_before(log, window, now);
    if (log.len() as u64) < limit {
        log.push_back(now);
        Ok((log.len() as u64, None))
    } else {
        let oldest = *log.front().expect("full log is not empty");
        Err(((oldest + window).saturating_duration_since(now), None))
    }
}

fn admit_bucket(
    (rate, burst): (f64, f64),
    tokens: &mut f64,
    last: &mut Instant,
    recent: &mut VecDeque<Instant>,
    now: Instant,
) -> ShapeAnswer {
    *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * rate).min(burst);
    *last = now;
    if *tokens >= 1.0 {
        *tokens -= 1.0;
        forget_before(recent, Duration::from_secs(1), now);
        recent.push_back(now);
        Ok((recent.len() as u64, None))
    } else {
        Err((Duration::from_secs_f64((1.0 - *tokens) / rate), None))
    }
}

fn admit_fixed(
    limit: u64,
    window: Duration,
    start: &mut Instant,
    count: &mut u64,
    now: Instant,
) -> ShapeAnswer {
    if now.duration_since(*start) >= window {
        // Windows stay aligned to the first one, as a wall-clock window would.
        let elapsed = now.duration_since(*start).as_nanos() / window.as_nanos().max(1);
        *start += window * elapsed as u32;
        *count = 0;
    }
    let reset = (*start + window).saturating_duration_since(now);
    if *count < limit {
        *count += 1;
        let state = WindowState {
            limit,
            remaining: limit - *count,
            reset,
        };
        Ok((*count, Some(state)))
    } else {
        let state = WindowState {
            limit,
            remaining: 0,
            reset,
        };
        Err((reset, Some(state)))
    }
}

/// One limiter with its peak.
#[derive(Debug)]
pub struct Limiter {
    pub name: &'static str,
    inner: Mutex<(Shape, u64, u64)>, // shape, peak, refused
}

/// What `/_sandbox/stats` reports per limiter.
#[derive(Debug, Clone, Serialize)]
pub struct LimiterStats {
    pub name: &'static str,
    /// `window` for window limits; `in_flight` for concurrency caps.
    pub kind: &'static str,
    pub window_ms: u64,
    /// The most any window (or the in-flight count) may hold.
    pub limit: u64,
    /// The most it ever held.
    pub peak: u64,
    pub refused: u64,
}

impl Limiter {
    pub fn sliding(name: &'static str, limit: u64, window: Duration) -> Self {
        Self::new(
            name,
            Shape::Sliding {
                limit,
                window,
                log: VecDeque::new(),
            },
        )
    }

    pub fn bucket(name: &'static str, rate: f64, burst: f64) -> Self {
        Self::new(
            name,
            Shape::Bucket {
                rate,
                burst,
                tokens: burst,
                last: Instant::now(),
                recent: VecDeque::new(),
            },
        )
    }

    pub fn fixed(name: &'static str, limit: u64, window: Duration) -> Self {
        Self::new(
            name,
            Shape::Fixed {
                limit,
                window,
                start: Instant::now(),
                count: 0,
            },
        )
    }

    pub fn in_flight(name: &'static str, cap: u64) -> Self {
        Self::new(name, Shape::InFlight { cap, current: 0 })
    }

    fn new(name: &'static str, shape: Shape) -> Self {
        Limiter {
            name,
            inner: Mutex::new((shape, 0, 0)),
        }
    }

    /// Admits one request now, or says why not. For in-flight caps, `release` must follow.
    pub fn admit(&self, now: Instant) -> Result<Option<WindowState>, Refusal> {
        let mut guard = self.inner.lock().expect("limiter lock");
        let (shape, peak, refused) = &mut *guard;
        match shape.admit(now) {
            Ok((held, window)) => {
                *peak = (*peak).max(held);
                Ok(window)
            }
            Err((retry_after, window)) => {
                *refused += 1;
                Err(Refusal {
                    limiter: self.name,
                    retry_after,
                    window,
                })
            }
        }
    }

    /// Ends an in-flight request admitted by `admit` (no-op for other shapes).
    pub fn release(&self) {
        let mut guard = self.inner.lock().expect("limiter lock");
        if let Shape::InFlight { current, .. } = &mut guard.0 {
            *current = current.saturating_sub(1);
        }
    }

    pub fn stats(&self) -> LimiterStats {
        let guard = self.inner.lock().expect("limiter lock");
        let (shape, peak, refused) = &*guard;
        let (kind, window_ms, limit) = match shape {
            Shape::Sliding { limit, window, .. } => ("window", window.as_millis() as u64, *limit),
            // In any one second a bucket admits at most its burst plus a second's refill.
            Shape::Bucket { rate, burst, .. } => ("window", 1000, (rate + burst).floor() as u64),
            Shape::Fixed { limit, window, .. } => ("window", window.as_millis() as u64, *limit),
            Shape::InFlight { cap, .. } => ("in_flight", 0, *cap),
        };
        LimiterStats {
            name: self.name,
            kind,
            window_ms,
            limit,
            peak: *peak,
            refused: *refused,
        }
    }
}

fn scaled(count: f64, factor: f64) -> u64 {
    (count * factor).round().max(1.0) as u64
}

/// The emnify limiters.
pub struct EmnifyLimits {
    pub per_ip: Limiter,
    pub authenticate: Limiter,
    pub sim_list: Limiter,
    pub sim_get: Limiter,
    pub endpoint_list: Limiter,
    pub endpoint_get: Limiter,
}

impl EmnifyLimits {
    pub fn new(k: f64) -> Self {
        let five_minutes = Duration::from_secs(300);
        EmnifyLimits {
            per_ip: Limiter::sliding("emnify per-IP 2000/5min", scaled(2000.0, k), five_minutes),
            authenticate: Limiter::sliding(
                "emnify POST /authenticate 100/5min",
                scaled(100.0, k),
                five_minutes,
            ),
            sim_list: Limiter::bucket("emnify GET /sim 10/s burst 5", 10.0 * k, (5.0 * k).max(1.0)),
            sim_get: Limiter::bucket(
                "emnify GET /sim/{id} 100/s burst 50",
                100.0 * k,
                (50.0 * k).max(1.0),
            ),
            endpoint_list: Limiter::bucket(
                "emnify GET /endpoint 10/s burst 5",
                10.0 * k,
                (5.0 * k).max(1.0),
            ),
            endpoint_get: Limiter::bucket(
                "emnify GET /endpoint/{id} 50/s burst 25",
                50.0 * k,
                (25.0 * k).max(1.0),
            ),
        }
    }

    /// The per-path limiter for a matched route, if it has one.
    pub fn for_route(&self, method: &axum::http::Method, route: &str) -> Option<&Limiter> {
        if method == axum::http::Method::POST && route == "/api/v1/authenticate" {
            return Some(&self.authenticate);
        }
        if method != axum::http::Method::GET {
            return None;
        }
        match route {
            "/api/v1/sim" => Some(&self.sim_list),
            "/api/v1/sim/{sim_id}" => Some(&self.sim_get),
            "/api/v1/endpoint" => Some(&self.endpoint_list),
            "/api/v1/endpoint/{endpoint_id}" => Some(&self.endpoint_get),
            _ => None,
        }
    }

    pub fn all(&self) -> [&Limiter; 6] {
        [
            &self.per_ip,
            &self.authenticate,
            &self.sim_list,
            &self.sim_get,
            &self.endpoint_list,
            &self.endpoint_get,
        ]
    }
}

/// All limiters of the sandbox (`None` when limits are off).
pub struct Limits {
    pub emnify: EmnifyLimits,
    pub twilio_in_flight: Limiter,
    pub telnyx: Limiter,
}

impl Limits {
    pub fn new(k: f64) -> Self {
        Limits {
            emnify: EmnifyLimits::new(k),
            twilio_in_flight: Limiter::in_flight(
                "twilio concurrent requests 100",
                scaled(100.0, k),
            ),
            telnyx: Limiter::fixed("telnyx 100/s", scaled(100.0, k), Duration::from_secs(1)),
        }
    }

    pub fn stats(&self) -> Vec<LimiterStats> {
        self.emnify
            .all()
            .iter()
            .map(|l| l.stats())
            .chain([self.twilio_in_flight.stats(), self.telnyx.stats()])
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliding_window_admits_limit_then_refuses_until_the_oldest_expires() {
        let l = Limiter::sliding("t", 3, Duration::from_secs(10));
        let t0 = Instant::now();
        for i in 0..3 {
            assert!(l.admit(t0 + Duration::from_secs(i)).is_ok());
        }
        let refusal = l.admit(t0 + Duration::from_secs(5)).unwrap_err();
        assert_eq!(refusal.retry_after, Duration::from_secs(5));
        assert!(l.admit(t0 + Duration::from_secs(10)).is_ok());
        let s = l.stats();
        assert_eq!((s.limit, s.peak, s.refused), (3, 3, 1));
    }

    #[test]
    fn bucket_allows_burst_then_rate() {
        let l = Limiter::bucket("t", 10.0, 5.0);
        let t0 = Instant::now();
        let admitted = (0..20).filter(|_| l.admit(t0).is_ok()).count();
        assert_eq!(admitted, 5);
        assert!(l.admit(t0 + Duration::from_millis(100)).is_ok());
        assert!(l.admit(t0 + Duration::from_millis(100)).is_err());
    }

    #[test]
    fn fixed_window_reports_remaining_and_reset() {
        let l = Limiter::fixed("t", 2, Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(l.admit(t0).unwrap().unwrap().remaining, 1);
        assert_eq!(l.admit(t0).unwrap().unwrap().remaining, 0);
        let r = l.admit(t0 + Duration::from_millis(300)).unwrap_err();
        assert_eq!(r.window.unwrap().remaining, 0);
        assert!(r.retry_after <= Duration::from_millis(700));
        assert!(l.admit(t0 + Duration::from_millis(1000)).is_ok());
    }

    #[test]
    fn in_flight_cap() {
        let l = Limiter::in_flight("t", 2);
        let now = Instant::now();
        assert!(l.admit(now).is_ok());
        assert!(l.admit(now).is_ok());
        assert!(l.admit(now).is_err());
        l.release();
        assert!(l.admit(now).is_ok());
        assert_eq!(l.stats().peak, 2);
    }
}
