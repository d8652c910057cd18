//! Retry timing: exponential backoff with full jitter, never sooner than the provider's own
//! `Retry-After`. Pure, so it is tested without waiting. It lives with the providers because
//! it reads only their error classes, and a client's own compensations (emnify's put-back
//! after a refused delete) retry by it too; the pipeline and `export` use it for rows and
//! listings.

use std::time::Duration;

use super::error::{ErrorClass, ProviderError};

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts per request, the first included (`--max-attempts`, default 5).
    pub max_attempts: u32,
    pub base: Duration,
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: crate::defaults::MAX_ATTEMPTS,
            base: Duration::from_millis(200),
            cap: Duration::from_secs(20),
        }
    }
}

impl RetryPolicy {
    /// How long to wait before attempt `attempt + 1` (attempt counts from 1), given a random
    /// fraction in `0.0..1.0` and the provider's `Retry-After`.
    pub fn delay(&self, attempt: u32, random: f64, retry_after: Option<Duration>) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.cap);
        let jittered = ceiling.mul_f64(random.clamp(0.0, 1.0));
        jittered.max(retry_after.unwrap_or_default())
    }

    /// After `e`: how long to wait before trying again, or `None` when the row (or listing)
    /// has used its attempts. `failures` counts the failures that spend an attempt. A 429
    /// spends none: the provider says "not now", not "no", and the lane's rate gate already
    /// holds every request back (by the provider's `Retry-After`, or its own backoff when
    /// there is none), so a row waits with its lane instead of failing for being early.
    pub fn again(&self, failures: &mut u32, e: &ProviderError) -> Option<Duration> {
        if e.class == ErrorClass::RateLimited {
            return Some(e.retry_after.unwrap_or_default());
        }
        if !e.is_retryable() {
            return None;
        }
        *failures += 1;
        (*failures < self.max_attempts)
            .then(|| self.delay(*failures, fastrand::f64(), e.retry_after))
    }
}

/// Calls `call` until it succeeds, fails for good, or `policy.max_attempts` are used up,
/// sleeping [`RetryPolicy::delay`] between attempts (for work outside a row: listings).
pub async fn with_retries<T, F, Fut>(policy: &RetryPolicy, mut call: F) -> Result<T, ProviderError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ProviderError>>,
{
    let mut failures = 0;
    loop {
        match call().await {
            Err(e) => match policy.again(&mut failures, &e) {
                Some(delay) => tokio::time::sleep(delay).await,
                None => return Err(e),
            },
            ok => return ok,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_caps_and_honours_retry_after() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay(1, 1.0, None), Duration::from_millis(400));
        assert_eq!(p.delay(3, 1.0, None), Duration::from_millis(1600));
        assert_eq!(p.delay(30, 1.0, None), Duration::from_secs(20));
        assert_eq!(p.delay(3, 0.0, None), Duration::ZERO);
        assert_eq!(
            p.delay(1, 0.5, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
    }

    #[test]
    fn a_429_never_spends_an_attempt() {
        let p = RetryPolicy {
            max_attempts: 2,
            ..RetryPolicy::default()
        };
        let limited = crate::provider::error::from_status(429, None, String::new(), None);
        let mut failures = 0;
        for _ in 0..100 {
            assert_eq!(p.again(&mut failures, &limited), Some(Duration::ZERO));
        }
        let transient = crate::provider::error::from_status(503, None, String::new(), None);
        assert!(p.again(&mut failures, &transient).is_some());
        assert_eq!(
            p.again(&mut failures, &transient),
            None,
            "two attempts in all"
        );
        let refused = crate::provider::error::from_status(404, None, String::new(), None);
        assert_eq!(p.again(&mut 0, &refused), None);
    }
}
