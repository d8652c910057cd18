//! The sled-backed checkpoint store. One database per state directory, opened once per process
//! (sled's file lock turns a second process into a clear "busy" error, exit 4); one tree per
//! run; rows in blocks of [`codec::ROWS_PER_BLOCK`] under `b'b' + block number (u64,
//! big-endian)`, so key order is file order; the manifest under `b'm'` (JSON), the finished
//! prefix under `b'p'`, the last summary under `b's'`, the run's count of commits under `b'c'`.
//! Every durable write is one atomic batch (with the count) followed by a flush: sled's flush
//! protects against process crashes (kill -9), which is what resume needs, not against power
//! loss. After it, the commit ledger beside the database (`ledger`) records the count; on
//! open, a run holding fewer commits than recorded means the directory is damaged.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::checkpoint::CheckpointStore;
use super::codec;
use super::error::StoreError;
use super::ledger::{self, Ledger};
use super::record::{FinishedPrefix, Manifest, RowRecord, SCHEMA_VERSION};

const MANIFEST_KEY: &[u8] = b"m";
const SUMMARY_KEY: &[u8] = b"s";
const PREFIX_KEY: &[u8] = b"p";
const COMMITS_KEY: &[u8] = b"c";
const RUN_TREE_PREFIX: &str = "run:";
/// sled defaults to a 1 GiB cache; a progress store needs little, and sled's memory is a
/// multiple of this figure (measured with 1,000,000 rows of 80 bytes: peak RSS 75 MB with
/// 16 MiB, 51 MB with 4 MiB, at the same speed).
const CACHE_BYTES: u64 = 4 * 1024 * 1024;

/// The key of the block holding rows `block × ROWS_PER_BLOCK ..` (see [`codec::ROWS_PER_BLOCK`]).
fn block_key(block: u64) -> [u8; 9] {
    let mut key = [b'b'; 9];
    key[1..].copy_from_slice(&block.to_be_bytes());
    key
}

/// A row's block and its slot in it.
fn place(index: u64) -> (u64, usize) {
    (
        index / codec::ROWS_PER_BLOCK,
        (index % codec::ROWS_PER_BLOCK) as usize,
    )
}

/// An open state directory.
pub struct SledStore {
    db: sled::Db,
    dir: PathBuf,
    ledger: Arc<Ledger>,
}

/// State directories this process has closed (see [`SledStore::open`]).
fn closed_here() -> &'static Mutex<std::collections::HashSet<PathBuf>> {
    static CLOSED: std::sync::OnceLock<Mutex<std::collections::HashSet<PathBuf>>> =
        std::sync::OnceLock::new();
    CLOSED.get_or_init(Default::default)
}

impl Drop for SledStore {
    fn drop(&mut self) {
        let key = std::fs::canonicalize(&self.dir).unwrap_or_else(|_| self.dir.clone());
        closed_here().lock().expect("closed lock").insert(key);
    }
}

/// A tree's count of commits.
fn commits_of(tree: &sled::Tree, dir: &Path) -> Result<u64, StoreError> {
    Ok(tree
        .get(COMMITS_KEY)
        .map_err(|e| classify(dir, e))?
        .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map_or(0, u64::from_be_bytes))
}

impl SledStore {
    /// Opens (creating if needed) the state directory, owner-only on Unix. A directory busy
    /// because this process itself has just closed it (sled lets go of its lock from a
    /// background thread, a moment after the drop: `demo` runs two jobs in a row) is waited
    /// for; one held by another process is refused at once.
    pub fn open(dir: &Path) -> Result<SledStore, StoreError> {
        let key = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match Self::open_once(dir) {
                Err(StoreError::Busy { .. })
                    if std::time::Instant::now() < deadline
                        && closed_here().lock().expect("closed lock").contains(&key) =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                other => {
                    closed_here().lock().expect("closed lock").remove(&key);
                    return other;
                }
            }
        }
    }

    fn open_once(dir: &Path) -> Result<SledStore, StoreError> {
        let fresh = !dir.exists();
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Io {
            dir: dir.to_path_buf(),
            source: e,
        })?;
        #[cfg(unix)]
        if fresh {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
        let db = sled::Config::new()
            .path(dir.join("db"))
            .cache_capacity(CACHE_BYTES)
            .flush_every_ms(None)
            .open()
            .map_err(|e| classify(dir, e))?;
        let mut store = SledStore {
            db,
            dir: dir.to_path_buf(),
            ledger: Arc::new(Ledger::new(dir)),
        };
        store.ledger = Arc::new(store.checked_ledger()?);
        Ok(store)
    }

    /// The directory's ledger, once every run it records is found whole in the database.
    fn checked_ledger(&self) -> Result<Ledger, StoreError> {
        let names = self.run_ids();
        let Some(ledger) = Ledger::read(&self.dir)? else {
            // No ledger: a new directory — or one whose ledger was lost, or one written by a
            // simbatch before ledgers (its manifests say so).
            for id in &names {
                let run = self.run(id)?;
                if run.manifest()?.is_some() {
                    return Err(StoreError::Corrupt {
                        dir: self.dir.clone(),
                        detail: format!(
                            "its commit ledger {} is missing, so the runs in it cannot be checked",
                            ledger::LEDGER_FILE
                        ),
                    });
                }
            }
            return Ok(Ledger::new(&self.dir));
        };
        for (id, recorded) in ledger.runs() {
            if !names.contains(&id) {
                return Err(ledger::lost(&self.dir, &id, None, recorded));
            }
            let tree = self
                .db
                .open_tree(format!("{RUN_TREE_PREFIX}{id}"))
                .map_err(|e| classify(&self.dir, e))?;
            let found = commits_of(&tree, &self.dir)?;
            if found < recorded {
                return Err(ledger::lost(&self.dir, &id, Some(found), recorded));
            }
        }
        Ok(ledger)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The run's tree (created empty if new).
    pub fn run(&self, run_id: &str) -> Result<SledRun, StoreError> {
        let tree = self
            .db
            .open_tree(format!("{RUN_TREE_PREFIX}{run_id}"))
            .map_err(|e| classify(&self.dir, e))?;
        let commits = commits_of(&tree, &self.dir)?;
        Ok(SledRun {
            tree,
            dir: self.dir.clone(),
            id: run_id.to_string(),
            ledger: self.ledger.clone(),
            commits: Mutex::new(commits),
        })
    }

    /// Where a run keeps its copy of the job file (so reports can be rebuilt from the state
    /// directory alone, even if the original file moved or changed).
    pub fn job_copy(&self, run_id: &str, extension: &str) -> PathBuf {
        self.dir.join("jobs").join(format!("{run_id}.{extension}"))
    }

    /// Ids of the runs in this store.
    pub fn run_ids(&self) -> Vec<String> {
        self.db
            .tree_names()
            .into_iter()
            .filter_map(|name| {
                String::from_utf8(name.to_vec())
                    .ok()?
                    .strip_prefix(RUN_TREE_PREFIX)
                    .map(str::to_string)
            })
            .collect()
    }
}

fn classify(dir: &Path, e: sled::Error) -> StoreError {
    match e {
        sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
            StoreError::Busy {
                dir: dir.to_path_buf(),
            }
        }
        sled::Error::Io(io) => StoreError::Io {
            dir: dir.to_path_buf(),
            source: io,
        },
        other => StoreError::Corrupt {
            dir: dir.to_path_buf(),
            detail: other.to_string(),
        },
    }
}

/// One run's rows.
pub struct SledRun {
    tree: sled::Tree,
    dir: PathBuf,
    id: String,
    ledger: Arc<Ledger>,
    /// Commits in the tree; every durable write adds one, under this lock.
    commits: Mutex<u64>,
}

impl SledRun {
    /// Applies `batch` atomically with the next commit count, flushes it, then records the
    /// count in the ledger.
    fn apply(&self, mut batch: sled::Batch) -> Result<(), StoreError> {
        let mut commits = self.commits.lock().expect("commits lock");
        let next = *commits + 1;
        batch.insert(COMMITS_KEY, &next.to_be_bytes());
        self.tree
            .apply_batch(batch)
            .map_err(|e| classify(&self.dir, e))?;
        self.tree.flush().map_err(|e| classify(&self.dir, e))?;
        *commits = next;
        self.ledger.record(&self.id, next)
    }
}

impl SledRun {
    fn decode<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        bytes: &[u8],
    ) -> Result<T, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
            dir: self.dir.clone(),
            detail: format!("unreadable {what}: {e}"),
        })
    }
}

impl SledRun {
    fn decode_row(&self, bytes: &[u8]) -> Result<RowRecord, StoreError> {
        codec::decode(bytes).map_err(|e| StoreError::Corrupt {
            dir: self.dir.clone(),
            detail: format!("unreadable row record: {e}"),
        })
    }

    fn block(&self, block: u64) -> Result<Option<sled::IVec>, StoreError> {
        self.tree
            .get(block_key(block))
            .map_err(|e| classify(&self.dir, e))
    }

    fn slots<'a>(&self, bytes: &'a [u8]) -> Result<codec::Slots<'a>, StoreError> {
        codec::decode_block(bytes).map_err(|e| StoreError::Corrupt {
            dir: self.dir.clone(),
            detail: format!("unreadable block of rows: {e}"),
        })
    }

    /// The row records from row `start` on, in row order, read block by block with `get`:
    /// sled's iterators keep the nodes they pass in memory (a full scan of 1,000,000 rows
    /// grew the process by 24 MB), lookups by key do not.
    fn rows_from(
        &self,
        start: u64,
    ) -> impl Iterator<Item = Result<(u64, RowRecord), StoreError>> + '_ {
        let last = self
            .tree
            .get_lt(block_key(u64::MAX))
            .map_err(|e| classify(&self.dir, e))
            .map(|found| {
                found
                    .filter(|(key, _)| key.len() == 9 && key[0] == b'b')
                    .map(|(key, _)| u64::from_be_bytes(key[1..].try_into().expect("9 bytes")))
            });
        let blocks: Box<dyn Iterator<Item = Result<u64, StoreError>>> = match last {
            Ok(Some(last)) => Box::new((place(start).0..=last).map(Ok)),
            Ok(None) => Box::new(std::iter::empty()),
            Err(e) => Box::new(std::iter::once(Err(e))),
        };
        blocks.flat_map(move |block| {
            let rows: Vec<Result<(u64, RowRecord), StoreError>> = match block
                .and_then(|b| Ok((b, self.block(b)?)))
            {
                Err(e) => vec![Err(e)],
                Ok((_, None)) => Vec::new(),
                Ok((block, Some(bytes))) => match self.slots(&bytes) {
                    Err(e) => vec![Err(e)],
                    Ok(slots) => slots
                        .iter()
                        .enumerate()
                        .filter_map(|(slot, record)| {
                            let index = block * codec::ROWS_PER_BLOCK + slot as u64;
                            let record = (*record)?;
                            (index >= start).then(|| self.decode_row(record).map(|r| (index, r)))
                        })
                        .collect(),
                },
            };
            rows
        })
    }
}

impl CheckpointStore for SledRun {
    fn manifest(&self) -> Result<Option<Manifest>, StoreError> {
        let Some(bytes) = self
            .tree
            .get(MANIFEST_KEY)
            .map_err(|e| classify(&self.dir, e))?
        else {
            return Ok(None);
        };
        let version: serde_json::Value = self.decode("manifest", &bytes)?;
        let found = version["schema_version"].as_u64().unwrap_or(0) as u32;
        if found != SCHEMA_VERSION {
            return Err(StoreError::Schema {
                dir: self.dir.clone(),
                found,
                expected: SCHEMA_VERSION,
            });
        }
        self.decode("manifest", &bytes).map(Some)
    }

    fn write_manifest(&self, manifest: &Manifest) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        batch.insert(
            MANIFEST_KEY,
            serde_json::to_vec(manifest).expect("manifests serialize"),
        );
        self.apply(batch)
    }

    fn get(&self, index: u64) -> Result<Option<RowRecord>, StoreError> {
        let (block, slot) = place(index);
        let Some(bytes) = self.block(block)? else {
            return Ok(None);
        };
        match self.slots(&bytes)?[slot] {
            Some(record) => self.decode_row(record).map(Some),
            None => Ok(None),
        }
    }

    /// Rewrites each block the rows fall in (one committer at a time: the pipeline's writer;
    /// a block is read, changed and written back within one atomic batch).
    fn commit(&self, rows: &[(u64, RowRecord)]) -> Result<(), StoreError> {
        let mut changes: std::collections::BTreeMap<u64, Vec<(usize, Vec<u8>)>> =
            std::collections::BTreeMap::new();
        for (index, record) in rows {
            let (block, slot) = place(*index);
            changes
                .entry(block)
                .or_default()
                .push((slot, codec::encode(record)));
        }
        let mut batch = sled::Batch::default();
        for (block, updates) in changes {
            let stored = self.block(block)?;
            let mut slots = match &stored {
                Some(bytes) => self.slots(bytes)?,
                None => [None; codec::ROWS_PER_BLOCK as usize],
            };
            // Later updates of a row in the same commit win.
            for (slot, record) in &updates {
                slots[*slot] = Some(record);
            }
            batch.insert(&block_key(block), codec::encode_block(&slots));
        }
        self.apply(batch)
    }

    fn put_summary(&self, summary: &[u8]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        batch.insert(SUMMARY_KEY, summary);
        self.apply(batch)
    }

    fn summary(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .tree
            .get(SUMMARY_KEY)
            .map_err(|e| classify(&self.dir, e))?
            .map(|b| b.to_vec()))
    }

    fn finished_prefix(&self) -> Result<FinishedPrefix, StoreError> {
        match self
            .tree
            .get(PREFIX_KEY)
            .map_err(|e| classify(&self.dir, e))?
        {
            None => Ok(FinishedPrefix::default()),
            Some(bytes) => FinishedPrefix::decode(&bytes).ok_or_else(|| StoreError::Corrupt {
                dir: self.dir.clone(),
                detail: "unreadable finished-prefix record".into(),
            }),
        }
    }

    fn advance_finished_prefix(&self) -> Result<FinishedPrefix, StoreError> {
        let before = self.finished_prefix()?;
        let mut prefix = before;
        for item in self.rows_from(prefix.rows) {
            let (index, record) = item?;
            if index != prefix.rows {
                break; // a row never reached
            }
            match record.final_outcome() {
                Some(outcome) => {
                    prefix.rows += 1;
                    prefix.counts[outcome as usize] += 1;
                }
                None => break,
            }
        }
        if prefix != before {
            let mut batch = sled::Batch::default();
            batch.insert(PREFIX_KEY, prefix.encode());
            self.apply(batch)?;
        }
        Ok(prefix)
    }

    fn rows(&self) -> Box<dyn Iterator<Item = Result<(u64, RowRecord), StoreError>> + '_> {
        Box::new(self.rows_from(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::record::{Outcome, Phase};
    use chrono::Utc;

    fn manifest(run_id: &str) -> Manifest {
        Manifest {
            schema_version: SCHEMA_VERSION,
            run_id: run_id.into(),
            job_path: "jobs/x.csv".into(),
            job_sha256: "ab".repeat(32),
            rows: 3,
            created_at: Utc::now(),
            options: crate::store::RunSettings {
                reading: crate::store::Reading {
                    providers: Default::default(),
                    provider: None,
                    lenient_ids: false,
                    format: crate::job::JobFormat::Csv,
                },
                accounts: Vec::new(),
                results_format: crate::job::JobFormat::Csv,
                rate: None,
                concurrency: None,
                max_attempts: 5,
                preflight: true,
                wait_s: Some(600),
                skip_invalid: false,
                schedule: None,
            },
            validated: None,
        }
    }

    #[test]
    fn rows_round_trip_in_file_order_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path()).unwrap();
            let run = store.run("x-12345678").unwrap();
            run.write_manifest(&manifest("x-12345678")).unwrap();
            let mut done = RowRecord::sending(Utc::now(), 1);
            done.phase = Phase::Done;
            done.outcome = Some(Outcome::Succeeded);
            run.commit(&[(300, done.clone()), (2, RowRecord::sending(Utc::now(), 1))])
                .unwrap();
            run.commit(&[(2, done)]).unwrap();
        }
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.run_ids(), ["x-12345678"]);
        let run = store.run("x-12345678").unwrap();
        assert_eq!(run.manifest().unwrap().unwrap().rows, 3);
        let indexes: Vec<u64> = run.rows().map(|r| r.unwrap().0).collect();
        assert_eq!(indexes, [2, 300], "big-endian keys iterate in row order");
        assert_eq!(
            run.get(2).unwrap().unwrap().outcome,
            Some(Outcome::Succeeded)
        );
        assert!(run.get(7).unwrap().is_none());
    }

    #[test]
    fn the_finished_prefix_stops_at_the_first_unfinished_or_missing_row() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let run = store.run("p").unwrap();
        let done = |outcome| {
            let mut r = RowRecord::sending(Utc::now(), 1);
            r.phase = Phase::Done;
            r.outcome = Some(outcome);
            r
        };
        assert_eq!(run.advance_finished_prefix().unwrap().rows, 0);
        run.commit(&[
            (0, done(Outcome::Succeeded)),
            (1, done(Outcome::Failed)),
            (2, RowRecord::sending(Utc::now(), 1)),
            (3, done(Outcome::Skipped)),
            (5, done(Outcome::Succeeded)),
        ])
        .unwrap();
        let p = run.advance_finished_prefix().unwrap();
        assert_eq!((p.rows, p.counts[0], p.counts[2]), (2, 1, 1));
        run.commit(&[(2, done(Outcome::Pending))]).unwrap();
        assert_eq!(
            run.advance_finished_prefix().unwrap().rows,
            2,
            "pending is not final"
        );
        run.commit(&[(2, done(Outcome::Succeeded))]).unwrap();
        let p = run.advance_finished_prefix().unwrap();
        assert_eq!(p.rows, 4, "row 4 was never reached");
        assert_eq!(p.counts, [2, 1, 1, 0, 0, 0, 0]);
        assert_eq!(run.finished_prefix().unwrap(), p, "recorded");
    }

    #[test]
    fn blocks_hold_every_row_whatever_the_commit_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let run = store.run("blocks").unwrap();
        let mut model = std::collections::BTreeMap::new();
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..40 {
            let batch: Vec<(u64, RowRecord)> = (0..rng.usize(1..30))
                .map(|_| {
                    (
                        rng.u64(0..200),
                        RowRecord::sending(Utc::now(), rng.u32(0..9)),
                    )
                })
                .collect();
            run.commit(&batch).unwrap();
            for (i, r) in batch {
                model.insert(i, r); // the later record of a row wins, in the store too
            }
        }
        let stored: Vec<(u64, RowRecord)> = run.rows().map(Result::unwrap).collect();
        let expected: Vec<(u64, RowRecord)> = model.clone().into_iter().collect();
        assert_eq!(stored, expected);
        for i in 0..210 {
            assert_eq!(run.get(i).unwrap(), model.get(&i).cloned(), "row {i}");
        }
        let from_37: Vec<u64> = run.rows_from(37).map(|r| r.unwrap().0).collect();
        assert_eq!(
            from_37,
            model.range(37..).map(|(i, _)| *i).collect::<Vec<_>>()
        );
    }

    /// A store this process closed opens again at once, though sled lets go of the lock from a
    /// background thread (seen failing on a loaded machine before `open` waited for it).
    #[test]
    fn a_store_closed_here_opens_again() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..20 {
            let store = SledStore::open(dir.path()).unwrap();
            let run = store.run("r").unwrap();
            run.commit(&[(i, RowRecord::sending(Utc::now(), 1))])
                .unwrap();
        }
    }

    #[test]
    fn a_second_open_is_busy() {
        let dir = tempfile::tempdir().unwrap();
        let _first = SledStore::open(dir.path()).unwrap();
        match SledStore::open(dir.path()) {
            Err(StoreError::Busy { dir: d }) => assert_eq!(d, dir.path()),
            Err(other) => panic!("expected busy, got {other}"),
            Ok(_) => panic!("expected busy, opened twice"),
        }
    }

    /// A run whose tree lost commits (here: rolled back to an older copy of the database)
    /// makes the directory damaged; so does a lost ledger beside runs that have manifests.
    #[test]
    fn lost_commits_and_a_lost_ledger_are_damage() {
        let dir = tempfile::tempdir().unwrap();
        let older = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path()).unwrap();
            let run = store.run("r").unwrap();
            run.write_manifest(&manifest("r")).unwrap();
            run.commit(&[(0, RowRecord::sending(Utc::now(), 1))])
                .unwrap();
        }
        copy(dir.path(), older.path());
        {
            let store = SledStore::open(dir.path()).unwrap();
            let run = store.run("r").unwrap();
            run.commit(&[(1, RowRecord::sending(Utc::now(), 1))])
                .unwrap();
        }
        // The database as it was two commits ago, with today's ledger.
        std::fs::remove_dir_all(dir.path().join("db")).unwrap();
        copy(&older.path().join("db"), &dir.path().join("db"));
        match SledStore::open(dir.path()) {
            Err(StoreError::Corrupt { detail, .. }) => {
                assert!(detail.contains("2 of its 3"), "{detail}")
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("opened a store that lost commits"),
        }
        std::fs::remove_file(dir.path().join(super::ledger::LEDGER_FILE)).unwrap();
        assert!(matches!(
            SledStore::open(dir.path()),
            Err(StoreError::Corrupt { .. })
        ));
    }

    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                copy(&p, &to.join(p.file_name().unwrap()));
            } else {
                std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
            }
        }
    }

    #[test]
    fn another_schema_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let run = store.run("old").unwrap();
        let mut m = manifest("old");
        m.schema_version = SCHEMA_VERSION + 7;
        run.write_manifest(&m).unwrap();
        let err = run.manifest().unwrap_err();
        assert!(
            matches!(err, StoreError::Schema { found, .. } if found == SCHEMA_VERSION + 7),
            "{err}"
        );
        assert!(err.to_string().contains(&dir.path().display().to_string()));
    }
}
