//! Retry timing: exponential backoff with full jitter, never sooner than the provider's own
//! `Retry-After`. Pure, so it is tested without waiting.

use std::time::Duration;

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
}

/// Calls `call` until it succeeds, fails for good, or `policy.max_attempts` are used up,
/// sleeping [`RetryPolicy::delay`] between attempts (for work outside a row: listings).
pub async fn with_retries<T, F, Fut>(
    policy: &RetryPolicy,
    mut call: F,
) -> Result<T, crate::provider::ProviderError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, crate::provider::ProviderError>>,
{
    let mut attempt = 1;
    loop {
        match call().await {
            Err(e) if e.is_retryable() && attempt < policy.max_attempts => {
                tokio::time::sleep(policy.delay(attempt, fastrand::f64(), e.retry_after)).await;
                attempt += 1;
            }
            other => return other,
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
}
