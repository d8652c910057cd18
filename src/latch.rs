//! A latch: a flag that is set once, for good, and that tasks can wait on. The run's stop
//! signal and a rate gate's closing are both one: checked cheaply on every step, awaited by
//! anything that would otherwise sleep through them.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

#[derive(Default)]
pub struct Latch {
    set: AtomicBool,
    notify: Notify,
}

impl Latch {
    /// Sets the latch and wakes every task waiting on it.
    pub fn set(&self) {
        self.set.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    pub fn is_set(&self) -> bool {
        self.set.load(Ordering::SeqCst)
    }

    /// Resolves once the latch is set (at once if it already is).
    pub async fn wait(&self) {
        loop {
            // Registered before the check, so that a `set` between the two is not missed.
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_set() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_wake_when_set_and_later_waits_return_at_once() {
        let latch = std::sync::Arc::new(Latch::default());
        let waiter = {
            let latch = latch.clone();
            tokio::spawn(async move { latch.wait().await })
        };
        tokio::task::yield_now().await;
        assert!(!latch.is_set());
        latch.set();
        waiter.await.unwrap();
        latch.wait().await;
        assert!(latch.is_set());
    }
}
