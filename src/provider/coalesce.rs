//! Coalescing of single requests into batch calls, for APIs that take many items in one
//! request (Telnyx registers up to [`MAX_BATCH`] registration codes at once). The first caller
//! to arrive becomes the leader: it waits [`LINGER`] for others to join, then makes the batch
//! calls for everyone and hands each caller its own answer. Callers never wait longer than one
//! linger plus their batch's request; a batch that fails as a whole gives every caller the same
//! error (which the row's own retry then handles, in a new batch).

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::oneshot;

use super::error::{ErrorClass, ProviderError};

/// How long a leader waits for more callers.
pub const LINGER: Duration = Duration::from_millis(15);
/// Items per batch call.
pub const MAX_BATCH: usize = 100;

type Waiter<I, O> = (I, oneshot::Sender<Result<O, ProviderError>>);

pub struct Coalescer<I, O> {
    waiting: Mutex<Vec<Waiter<I, O>>>,
}

impl<I, O> Default for Coalescer<I, O> {
    fn default() -> Self {
        Coalescer {
            waiting: Mutex::new(Vec::new()),
        }
    }
}

impl<I: Clone, O> Coalescer<I, O> {
    /// Submits `item`; `call` turns a batch of items into one answer per item, in order (or one
    /// error for the whole batch).
    pub async fn submit<F, Fut>(&self, item: I, call: F) -> Result<O, ProviderError>
    where
        F: Fn(Vec<I>) -> Fut,
        Fut: Future<Output = Result<Vec<Result<O, ProviderError>>, ProviderError>>,
    {
        let (tx, rx) = oneshot::channel();
        let leader = {
            let mut waiting = self.waiting.lock().expect("coalescer lock");
            waiting.push((item, tx));
            waiting.len() == 1
        };
        if leader {
            tokio::time::sleep(LINGER).await;
            let batch = std::mem::take(&mut *self.waiting.lock().expect("coalescer lock"));
            let mut batch = batch.into_iter().peekable();
            while batch.peek().is_some() {
                let chunk: Vec<Waiter<I, O>> = batch.by_ref().take(MAX_BATCH).collect();
                let items = chunk.iter().map(|(i, _)| i.clone()).collect();
                match call(items).await {
                    Ok(answers) => {
                        let mut answers = answers.into_iter();
                        for (_, tx) in chunk {
                            let _ = tx.send(answers.next().unwrap_or_else(|| {
                                Err(ProviderError::permanent("no answer for this item"))
                            }));
                        }
                    }
                    Err(e) => {
                        for (_, tx) in chunk {
                            let _ = tx.send(Err(e.clone()));
                        }
                    }
                }
            }
        }
        rx.await.unwrap_or_else(|_| {
            let mut e = ProviderError::permanent("the batch this item was in was abandoned");
            e.class = ErrorClass::Transient;
            e.maybe_applied = true;
            Err(e)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[tokio::test]
    async fn concurrent_callers_share_one_call_and_get_their_own_answers() {
        let coalescer = Arc::new(Coalescer::<u32, u32>::default());
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for i in 0..250u32 {
            let (coalescer, calls) = (coalescer.clone(), calls.clone());
            tasks.push(tokio::spawn(async move {
                coalescer
                    .submit(i, |items: Vec<u32>| {
                        let calls = calls.clone();
                        async move {
                            calls.fetch_add(1, Ordering::SeqCst);
                            assert!(items.len() <= MAX_BATCH);
                            Ok(items
                                .into_iter()
                                .map(|i| {
                                    if i % 7 == 0 {
                                        Err(ProviderError::permanent(format!("refused {i}")))
                                    } else {
                                        Ok(i * 10)
                                    }
                                })
                                .collect())
                        }
                    })
                    .await
            }));
        }
        for (i, task) in tasks.into_iter().enumerate() {
            match task.await.unwrap() {
                Ok(v) => assert_eq!(v, i as u32 * 10),
                Err(e) => {
                    assert_eq!(i % 7, 0);
                    assert_eq!(e.message, format!("refused {i}"));
                }
            }
        }
        // 250 callers within one linger: three calls of at most 100 (a slow scheduler may
        // split them into more, never fewer).
        let n = calls.load(Ordering::SeqCst);
        assert!((3..=250).contains(&n), "{n} calls");
    }

    fn unavailable() -> ProviderError {
        ProviderError {
            class: crate::provider::ErrorClass::Transient,
            ..ProviderError::permanent("503")
        }
    }

    #[tokio::test]
    async fn a_failed_batch_fails_each_of_its_callers() {
        let coalescer = Arc::new(Coalescer::<u32, u32>::default());
        let a = {
            let c = coalescer.clone();
            tokio::spawn(async move { c.submit(1, |_| async { Err(unavailable()) }).await })
        };
        let b = coalescer.submit(2, |_| async { Err(unavailable()) }).await;
        assert!(a.await.unwrap().is_err());
        assert!(b.is_err());
    }
}
