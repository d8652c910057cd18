//! The single writer task: all checkpoint writes go through it, grouped into one atomic, flushed
//! batch every few milliseconds (group commit). A caller that needs durability before it goes
//! on — the "sending" marker before a change request leaves — waits for its batch's
//! acknowledgement; final outcomes are written without waiting and flushed by the same batches.
//!
//! Everything stored passes here, so provider text in a record (reason, code, states) is made
//! safe here too: credentials redacted, control characters removed (`provider::redact`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::provider::redact;
use crate::store::{CheckpointStore, RowRecord, StoreError};

/// Most records in one batch, and the longest a record waits for its batch to fill.
const BATCH_MAX: usize = 512;
const BATCH_WINDOW: Duration = Duration::from_millis(2);

struct Write {
    index: u64,
    record: RowRecord,
    ack: Option<oneshot::Sender<Result<(), String>>>,
}

#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Write>,
}

/// The record with its provider text made safe to store and print.
fn cleaned(mut record: RowRecord) -> RowRecord {
    for text in [
        &mut record.reason,
        &mut record.provider_code,
        &mut record.before,
        &mut record.after,
    ]
    .into_iter()
    .flatten()
    {
        *text = redact::clean(text);
    }
    record
}

/// Observes every committed record (progress, failure counting).
pub type OnCommit = Box<dyn FnMut(u64, &RowRecord) + Send>;

impl Writer {
    /// Starts the writer task; it ends when every `Writer` clone is dropped, after a last commit.
    pub fn start(
        store: Arc<dyn CheckpointStore>,
        mut on_commit: OnCommit,
    ) -> (Writer, tokio::task::JoinHandle<Result<(), StoreError>>) {
        let (tx, mut rx) = mpsc::channel::<Write>(4096);
        let task = tokio::spawn(async move {
            let mut batch: Vec<Write> = Vec::with_capacity(BATCH_MAX);
            while let Some(first) = rx.recv().await {
                batch.push(first);
                let deadline = tokio::time::Instant::now() + BATCH_WINDOW;
                while batch.len() < BATCH_MAX {
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(w)) => batch.push(w),
                        _ => break,
                    }
                }
                let rows: Vec<(u64, RowRecord)> =
                    batch.iter().map(|w| (w.index, w.record.clone())).collect();
                let store = store.clone();
                let started = std::time::Instant::now();
                let result =
                    tokio::task::spawn_blocking(move || store.commit(&rows).map(|()| rows))
                        .await
                        .expect("the commit task does not panic");
                tracing::trace!(rows = batch.len(), took = ?started.elapsed(), "checkpoint commit");
                match result {
                    Ok(rows) => {
                        for (index, record) in &rows {
                            on_commit(*index, record);
                        }
                        for w in batch.drain(..) {
                            if let Some(ack) = w.ack {
                                let _ = ack.send(Ok(()));
                            }
                        }
                    }
                    Err(e) => {
                        for w in batch.drain(..) {
                            if let Some(ack) = w.ack {
                                let _ = ack.send(Err(e.to_string()));
                            }
                        }
                        return Err(e);
                    }
                }
            }
            Ok(())
        });
        (Writer { tx }, task)
    }

    /// Writes and waits until the record is durable.
    pub async fn durable(&self, index: u64, record: RowRecord) -> Result<(), String> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Write {
                index,
                record: cleaned(record),
                ack: Some(ack),
            })
            .await
            .map_err(|_| "the checkpoint writer stopped".to_string())?;
        done.await
            .map_err(|_| "the checkpoint writer stopped".to_string())?
    }

    /// Writes without waiting (the next batch makes it durable).
    pub async fn put(&self, index: u64, record: RowRecord) {
        let _ = self
            .tx
            .send(Write {
                index,
                record: cleaned(record),
                ack: None,
            })
            .await;
    }
}
