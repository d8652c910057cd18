//! The job that undoes a run (SPEC 1.2's inverse column): for every `succeeded` row, the row that
//! restores its `before` state. Skipped rows are not reverted — a SIM that was already suspended
//! before a mass suspension stays suspended. Rows without an inverse are counted as not
//! revertible, with the reason.

use crate::job::ids::Iccid;
use crate::job::{JobRow, Operation};
use crate::provider::registry::provider_of;
use crate::store::{Outcome, RowRecord};

/// What reverting one row means.
#[derive(Debug, Clone, PartialEq)]
pub enum Inverse {
    Row(Box<JobRow>),
    NotRevertible(String),
}

/// The inverse of a row that ran; `None` unless it succeeded, or failed leaving something to
/// repair (an emnify device without its SIM after a refused delete).
pub fn inverse(row: &JobRow, record: &RowRecord) -> Option<Inverse> {
    if record.outcome == Some(Outcome::Failed) {
        let operation = provider_of(row.kind).repairs(record.after.as_deref()?)?;
        return Some(Inverse::Row(Box::new(JobRow {
            id: format!("revert-{}", row.id),
            operation,
            ..row.clone()
        })));
    }
    if record.outcome != Some(Outcome::Succeeded) {
        return None;
    }
    let before = record.before.as_deref().unwrap_or_default();
    let not = |why: String| Some(Inverse::NotRevertible(why));
    let operation = match &row.operation {
        Operation::Activate | Operation::Suspend | Operation::Standby => match provider_of(row.kind).returns_to(before) {
            Some(op) => op,
            None => return not(format!("{} cannot return a SIM to `{before}`", row.kind)),
        },
        Operation::EnableDevice => Operation::DisableDevice,
        Operation::DisableDevice => Operation::EnableDevice,
        Operation::Move { .. } if before.is_empty() || before == "none" => {
            return not("it had no group/Fleet/organisation before".into())
        }
        Operation::Move { .. } => Operation::Move { target: before.to_string() },
        Operation::ProfileEnable { rollback, validity_period, .. } => match Iccid::parse(before, crate::job::IdStrictness::Lenient) {
            Ok(previous) => Operation::ProfileEnable { profile_iccid: previous.value, rollback: *rollback, validity_period: *validity_period },
            Err(_) => return not("no profile was enabled before".into()),
        },
        Operation::ProfileFallback { validity_period, .. } => match Iccid::parse(before, crate::job::IdStrictness::Lenient) {
            Ok(previous) => Operation::ProfileFallback { profile_iccid: previous.value, validity_period: *validity_period },
            Err(_) => return not("no profile had the fallback attribute before".into()),
        },
        Operation::ProfileDownload { .. } => {
            return not("the provider does not report the downloaded profile's ICCID; delete it with a profile-delete row".into())
        }
        Operation::Delete { .. } | Operation::ProfileDelete { .. } => return not("irreversible".into()),
        Operation::Register { .. } => return not("a registration cannot be undone by the API".into()),
        Operation::EuiccAudit { .. } => return not("an audit changes nothing".into()),
        Operation::Attach { .. } => return not("taking a SIM off its device is not a job action".into()),
    };
    Some(Inverse::Row(Box::new(JobRow {
        id: format!("revert-{}", row.id),
        operation,
        ..row.clone()
    })))
}
