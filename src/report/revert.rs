//! The job that undoes a run (SPEC 1.2's inverse column): for every `succeeded` row, the row that
//! restores its `before` state. Skipped rows are not reverted — a SIM that was already suspended
//! before a mass suspension stays suspended. Rows without an inverse are counted as not
//! revertible, with the reason.

use crate::job::ids::Iccid;
use crate::job::{Action, JobRow, Operation, ProviderKind};
use crate::store::{Outcome, RowRecord};

/// Actions whose effect cannot be undone by another job row.
pub fn is_irreversible_action(action: Action) -> bool {
    matches!(
        action,
        Action::Delete
            | Action::ProfileDelete
            | Action::Register
            | Action::EuiccAudit
            | Action::ProfileDownload
    )
}

/// What reverting one row means.
#[derive(Debug, Clone, PartialEq)]
pub enum Inverse {
    Row(Box<JobRow>),
    NotRevertible(String),
}

/// The action that puts a SIM back into `status` at its provider.
fn status_action(kind: ProviderKind, status: &str) -> Option<Operation> {
    match (kind, status) {
        (ProviderKind::Emnify, "Activated")
        | (ProviderKind::Twilio, "active")
        | (ProviderKind::Telnyx, "enabled") => Some(Operation::Activate),
        (ProviderKind::Emnify, "Suspended")
        | (ProviderKind::Twilio, "inactive")
        | (ProviderKind::Telnyx, "disabled") => Some(Operation::Suspend),
        (ProviderKind::Telnyx, "standby") => Some(Operation::Standby),
        _ => None,
    }
}

/// The inverse of a row that ran; `None` unless it succeeded.
pub fn inverse(row: &JobRow, record: &RowRecord) -> Option<Inverse> {
    if record.outcome != Some(Outcome::Succeeded) {
        return None;
    }
    let before = record.before.as_deref().unwrap_or_default();
    let not = |why: String| Some(Inverse::NotRevertible(why));
    let operation = match &row.operation {
        Operation::Activate | Operation::Suspend | Operation::Standby => match status_action(row.kind, before) {
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
    };
    Some(Inverse::Row(Box::new(JobRow {
        id: format!("revert-{}", row.id),
        operation,
        ..row.clone()
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::Target;
    use crate::store::Phase;

    fn row(kind: ProviderKind, operation: Operation) -> JobRow {
        JobRow {
            line: 2,
            id: "7".into(),
            provider: kind.name().into(),
            kind,
            target: Target::Sim {
                iccid: Iccid::from_trusted("89883030000080139311".into()),
                eid: None,
            },
            operation,
            group: None,
            not_before: None,
            extra: vec![],
        }
    }

    fn done(outcome: Outcome, before: &str) -> RowRecord {
        let mut r = RowRecord::sending(chrono::Utc::now(), 1);
        r.phase = Phase::Done;
        r.outcome = Some(outcome);
        r.before = Some(before.into());
        r
    }

    fn op_of(i: Option<Inverse>) -> Operation {
        match i {
            Some(Inverse::Row(r)) => r.operation,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn status_changes_go_back_to_where_they_were() {
        assert_eq!(
            op_of(inverse(
                &row(ProviderKind::Emnify, Operation::Suspend),
                &done(Outcome::Succeeded, "Activated")
            )),
            Operation::Activate
        );
        assert_eq!(
            op_of(inverse(
                &row(ProviderKind::Telnyx, Operation::Activate),
                &done(Outcome::Succeeded, "standby")
            )),
            Operation::Standby
        );
        assert_eq!(
            op_of(inverse(
                &row(ProviderKind::Twilio, Operation::Suspend),
                &done(Outcome::Succeeded, "active")
            )),
            Operation::Activate
        );
        assert!(matches!(
            inverse(
                &row(ProviderKind::Twilio, Operation::Activate),
                &done(Outcome::Succeeded, "new")
            ),
            Some(Inverse::NotRevertible(_))
        ));
    }

    #[test]
    fn only_succeeded_rows_are_reverted() {
        for o in [
            Outcome::Skipped,
            Outcome::Failed,
            Outcome::Pending,
            Outcome::Blocked,
        ] {
            assert_eq!(
                inverse(
                    &row(ProviderKind::Emnify, Operation::Suspend),
                    &done(o, "Activated")
                ),
                None
            );
        }
    }

    #[test]
    fn moves_devices_and_profiles() {
        assert_eq!(
            op_of(inverse(
                &row(ProviderKind::Emnify, Operation::Move { target: "2".into() }),
                &done(Outcome::Succeeded, "1")
            )),
            Operation::Move { target: "1".into() }
        );
        assert_eq!(
            op_of(inverse(
                &row(ProviderKind::Emnify, Operation::DisableDevice),
                &done(Outcome::Succeeded, "Enabled")
            )),
            Operation::EnableDevice
        );
        let enable = Operation::ProfileEnable {
            profile_iccid: Iccid::from_trusted("89883030000080139311".into()),
            rollback: true,
            validity_period: 60,
        };
        let back = op_of(inverse(
            &row(ProviderKind::Emnify, enable),
            &done(Outcome::Succeeded, "89883030000000001294"),
        ));
        assert!(
            matches!(back, Operation::ProfileEnable { profile_iccid, .. } if profile_iccid.as_str() == "89883030000000001294")
        );
        assert!(matches!(
            inverse(
                &row(
                    ProviderKind::Telnyx,
                    Operation::Delete { report_lost: false }
                ),
                &done(Outcome::Succeeded, "enabled")
            ),
            Some(Inverse::NotRevertible(_))
        ));
    }
}
