//! What is stored per run and per row: the run manifest and each row's progress record. These
//! are the durable shapes behind resume and `simbatch report`; they carry a schema version so
//! that a state directory written by another version is recognised, not misread.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use crate::job::model::ProviderKind;
use crate::job::source::JobFormat;
use crate::job::Action;

/// Bumped whenever a stored shape changes incompatibly.
/// 2: row records in the binary form of `store::codec` (1: JSON).
/// 3: each run counts its commits, checked against the commit ledger beside the database.
/// 4: a "sending" marker keeps the operations its target showed as a field of its own (it was
/// smuggled through `provider_ref` as `ops-before:N`).
/// 6: a delete's "sending" marker names the device its SIM is released from.
pub const SCHEMA_VERSION: u32 = 6;

/// A row's outcome (SPEC 3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Succeeded,
    Skipped,
    Failed,
    Pending,
    Unknown,
    Blocked,
    Invalid,
}

impl Outcome {
    pub const ALL: [Outcome; 7] = [
        Outcome::Succeeded,
        Outcome::Skipped,
        Outcome::Failed,
        Outcome::Pending,
        Outcome::Unknown,
        Outcome::Blocked,
        Outcome::Invalid,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Skipped => "skipped",
            Outcome::Failed => "failed",
            Outcome::Pending => "pending",
            Outcome::Unknown => "unknown",
            Outcome::Blocked => "blocked",
            Outcome::Invalid => "invalid",
        }
    }

    /// Final outcomes are never touched again on resume; `pending` is polled.
    pub fn is_final(self) -> bool {
        self != Outcome::Pending
    }

    /// A row that did not succeed and is worth another try: it goes to `failed.csv`, its
    /// reason counts among the failure reasons.
    pub fn did_not_succeed(self) -> bool {
        matches!(self, Outcome::Failed | Outcome::Unknown | Outcome::Blocked)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a row stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// A change request may have left: on resume, read the target's state before sending again.
    Sending,
    /// The row has an outcome (final, or `pending` awaiting confirmation).
    Done,
}

/// One row's durable progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowRecord {
    pub phase: Phase,
    pub outcome: Option<Outcome>,
    pub reason: Option<String>,
    pub before: Option<String>,
    pub after: Option<String>,
    pub attempts: u32,
    pub http_status: Option<u16>,
    pub provider_code: Option<String>,
    /// The provider's handle on an asynchronous change (Twilio SID, Telnyx action id, emnify operation id).
    pub provider_ref: Option<String>,
    /// In a "sending" marker for an eUICC: the id of the newest operation it showed (by
    /// creation date) before the change left, or `""` when it showed none — so that after a
    /// lost answer or a crash the operation this row scheduled is told from older ones by id,
    /// never by its position in a list.
    pub operations_before: Option<String>,
    /// In a "sending" marker for a change that first takes the SIM off its device (an emnify
    /// delete: [`crate::provider::Provider::releases_from`]): that device. A resume that finds
    /// the SIM on no device knows where it was, and puts it back if the change is refused.
    pub released_from: Option<String>,
    pub queued_ms: Option<u64>,
    pub latency_ms: Option<u64>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl RowRecord {
    /// The durable marker written before a change request leaves.
    pub fn sending(started_at: DateTime<Utc>, attempts: u32) -> Self {
        RowRecord {
            phase: Phase::Sending,
            outcome: None,
            reason: None,
            before: None,
            after: None,
            attempts,
            http_status: None,
            provider_code: None,
            provider_ref: None,
            operations_before: None,
            released_from: None,
            queued_ms: None,
            latency_ms: None,
            started_at: Some(started_at),
            finished_at: None,
        }
    }

    /// Ends the row with `outcome` (final, or `pending`) and its reason, now; `latency` is the
    /// time the provider took, when it took part. Every way a row ends comes through here.
    pub fn finish(&mut self, outcome: Outcome, reason: Option<String>, latency: Option<u64>) {
        self.phase = Phase::Done;
        self.outcome = Some(outcome);
        self.reason = reason;
        self.finished_at = Some(Utc::now());
        if latency.is_some() {
            self.latency_ms = latency;
        }
    }

    /// A row decided without a request (blocked by its group, a repeat of another row): final
    /// at once, with its reason.
    pub fn decided(outcome: Outcome, reason: String) -> Self {
        let mut record = RowRecord::sending(Utc::now(), 0);
        record.finish(outcome, Some(reason), None);
        record.finished_at = record.started_at;
        record
    }

    /// A change an earlier invocation left `pending` with the provider's reference: the next
    /// run confirms it by that reference and sends nothing (nor looks its target up).
    pub fn awaits_confirmation(&self) -> bool {
        self.phase == Phase::Done
            && self.outcome == Some(Outcome::Pending)
            && self.provider_ref.is_some()
    }

    /// The row's final outcome, if it has one (a resumed run leaves such rows alone).
    pub fn final_outcome(&self) -> Option<Outcome> {
        self.outcome
            .filter(|o| self.phase == Phase::Done && o.is_final())
    }
}

/// The leading rows (from row 0 on) that were all final when an invocation ended, and their
/// outcomes: a resume neither reads nor re-checks them. Never more than the truth, because a
/// final row is never written again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FinishedPrefix {
    pub rows: u64,
    /// Rows per outcome, in the order of [`Outcome::ALL`].
    pub counts: [u64; 7],
}

impl FinishedPrefix {
    pub fn encode(&self) -> Vec<u8> {
        std::iter::once(self.rows)
            .chain(self.counts)
            .flat_map(u64::to_le_bytes)
            .collect()
    }

    pub fn decode(bytes: &[u8]) -> Option<FinishedPrefix> {
        if bytes.len() != 64 {
            return None;
        }
        let mut words = bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")));
        let rows = words.next()?;
        let mut counts = [0; 7];
        for c in &mut counts {
            *c = words.next()?;
        }
        Some(FinishedPrefix { rows, counts })
    }
}

/// What a run is: written once when the run starts, checked on every resume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub schema_version: u32,
    pub run_id: String,
    pub job_path: String,
    /// SHA-256 of the job file's bytes, hex.
    pub job_sha256: String,
    pub rows: u64,
    pub created_at: DateTime<Utc>,
    /// The settings the run started with (recorded for the audit trail), how to read its
    /// job, and the accounts it acts on.
    pub options: RunSettings,
    /// The clean validation the run started with; a resume of the same bytes, read the same
    /// way, uses it instead of reading the whole file again (absent in older manifests and
    /// for runs started with invalid rows).
    #[serde(default)]
    pub validated: Option<StoredValidation>,
}

/// What validating the job found, kept so that a resume need not validate it again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredValidation {
    /// How the file was read: a resume that would read it differently validates again.
    pub reading: Reading,
    pub valid_rows: u64,
    /// Valid rows per provider name and action.
    pub counts: Vec<(String, Action, u64)>,
    /// Rows that repeat an earlier row's change: (line, line of the first).
    #[serde(default)]
    pub duplicate_of: Vec<(u64, u64)>,
    /// Valid rows in a `group` (absent in older manifests).
    #[serde(default)]
    pub grouped_rows: Option<u64>,
}

/// How a run reads its job file: the configured provider names and their kinds, the default
/// provider, identifier strictness, the format. A resume that would read it differently
/// validates it again; `report` and `revert` read the run's copy this way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    pub providers: BTreeMap<String, ProviderKind>,
    pub provider: Option<String>,
    pub lenient_ids: bool,
    pub format: JobFormat,
}

/// One provider account a run acts on: a resume on another is refused (SPEC 3.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRecord {
    /// The provider's name in job files.
    pub name: String,
    pub kind: ProviderKind,
    pub base_url: String,
    /// The environment variables its credentials came from (never their values).
    #[serde(default)]
    pub credentials: String,
}

/// The settings a run started with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSettings {
    #[serde(flatten)]
    pub reading: Reading,
    pub accounts: Vec<AccountRecord>,
    pub results_format: JobFormat,
    pub rate: Option<f64>,
    pub concurrency: Option<usize>,
    pub max_attempts: u32,
    pub preflight: bool,
    /// `--wait-timeout` in seconds; `None` with `--no-wait`.
    pub wait_s: Option<u64>,
    pub skip_invalid: bool,
    /// `--window`/`--until`, described.
    pub schedule: Option<String>,
}
