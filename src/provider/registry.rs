//! The one place that knows which providers there are: the facts of each kind
//! ([`provider_of`]) and the client built for a configured account ([`connect`]). Adding a
//! provider means a module implementing [`Provider`] and [`Account`], and a line in each
//! function here.

use crate::job::model::ProviderKind;

use super::account::Account;
use super::emnify::{Emnify, EmnifyProvider};
use super::facts::Provider;
use super::http::Http;
use super::telnyx::{Telnyx, TelnyxProvider};
use super::twilio::{Twilio, TwilioProvider};

/// What simbatch believes about a kind of provider.
pub fn provider_of(kind: ProviderKind) -> &'static dyn Provider {
    match kind {
        ProviderKind::Emnify => &EmnifyProvider,
        ProviderKind::Twilio => &TwilioProvider,
        ProviderKind::Telnyx => &TelnyxProvider,
    }
}

/// An account's credentials, as read.
pub enum Secret {
    /// An application token (emnify) or API key (Telnyx).
    Token(String),
    /// A user and password (Twilio's Account SID and Auth Token).
    Basic(String, String),
}

/// The client of an account of `kind` over `http`; `None` when the credentials are not of the
/// kind's form.
pub fn connect(kind: ProviderKind, http: Http, secret: Secret) -> Option<Box<dyn Account>> {
    Some(match (kind, secret) {
        (ProviderKind::Emnify, Secret::Token(token)) => Box::new(Emnify::new(http, token)),
        (ProviderKind::Telnyx, Secret::Token(key)) => Box::new(Telnyx::new(http, key)),
        (ProviderKind::Twilio, Secret::Basic(user, password)) => {
            Box::new(Twilio::new(http, user, password))
        }
        _ => return None,
    })
}

/// The providers' facts as pre-flight and `revert` apply them to rows.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::ids::Iccid;
    use crate::job::model::{JobRow, Operation, Target};
    use crate::provider::state::{
        Decision, EuiccState, Observed, OperationState, ProfileState, SimState,
    };
    use crate::report::revert::{inverse, Inverse};
    use crate::store::{Outcome, Phase, RowRecord};

    /// Pre-flight with the row's provider's facts.
    fn decide(row: &JobRow, observed: &Observed, move_target: Option<&str>) -> Decision {
        crate::pipeline::preflight::decide(provider_of(row.kind), row, observed, move_target)
    }

    fn send(before: Option<&str>, after: &str) -> Decision {
        Decision::send(before, after)
    }

    fn row(kind: ProviderKind, operation: Operation) -> JobRow {
        JobRow {
            line: 2,
            id: "2".into(),
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

    fn sim(status: &str, group: Option<&str>) -> Observed {
        Observed::Sim(SimState {
            id: "1".into(),
            status: status.into(),
            settled: true,
            group: group.map(str::to_string),
            device: Some(("1".into(), "Enabled".into())),
            eid: None,
        })
    }

    #[test]
    fn no_ops_are_skipped_with_their_state() {
        let d = decide(
            &row(ProviderKind::Emnify, Operation::Suspend),
            &sim("Suspended", None),
            None,
        );
        assert_eq!(
            d,
            Decision::Skip {
                reason: "already Suspended".into(),
                before: Some("Suspended".into())
            }
        );
        let d = decide(
            &row(ProviderKind::Emnify, Operation::EnableDevice),
            &sim("Activated", None),
            None,
        );
        assert!(matches!(d, Decision::Skip { .. }));
        let d = decide(
            &row(
                ProviderKind::Twilio,
                Operation::Move {
                    target: "HF1".into(),
                },
            ),
            &sim("active", Some("HF1")),
            None,
        );
        assert!(matches!(d, Decision::Skip { .. }));
    }

    #[test]
    fn forbidden_transitions_fail_without_sending() {
        for (kind, op, observed) in [
            (
                ProviderKind::Emnify,
                Operation::Suspend,
                sim("Issued", None),
            ),
            (
                ProviderKind::Emnify,
                Operation::Activate,
                sim("Deleted", None),
            ),
            (ProviderKind::Twilio, Operation::Activate, sim("new", None)),
            (
                ProviderKind::Telnyx,
                Operation::Standby,
                sim("enabled", None),
            ),
            (
                ProviderKind::Telnyx,
                Operation::Suspend,
                sim("data_limit_exceeded", Some("g")),
            ),
        ] {
            assert!(
                matches!(
                    decide(&row(kind, op.clone()), &observed, None),
                    Decision::Fail { .. }
                ),
                "{kind} {op:?}"
            );
        }
        let busy = Observed::Sim(SimState {
            id: "1".into(),
            status: "scheduled".into(),
            settled: false,
            group: None,
            device: None,
            eid: None,
        });
        assert!(matches!(
            decide(&row(ProviderKind::Twilio, Operation::Suspend), &busy, None),
            Decision::Fail { .. }
        ));
    }

    #[test]
    fn changes_carry_before_and_after() {
        let d = decide(
            &row(ProviderKind::Telnyx, Operation::Standby),
            &sim("enabled", Some("g")),
            None,
        );
        assert_eq!(
            d,
            Decision::Send {
                before: Some("enabled".into()),
                after: "standby".into()
            }
        );
        let d = decide(
            &row(ProviderKind::Emnify, Operation::Move { target: "2".into() }),
            &sim("Activated", Some("1")),
            None,
        );
        assert_eq!(
            d,
            Decision::Send {
                before: Some("1".into()),
                after: "2".into()
            }
        );
        assert_eq!(
            decide(
                &row(
                    ProviderKind::Twilio,
                    Operation::Register {
                        registration_code: "RC".into()
                    }
                ),
                &Observed::Missing,
                None
            ),
            send(Some("unregistered"), "registered")
        );
        assert!(matches!(
            decide(
                &row(ProviderKind::Twilio, Operation::Suspend),
                &Observed::Missing,
                None
            ),
            Decision::Fail { .. }
        ));
    }

    fn euicc(ops: Vec<OperationState>) -> Observed {
        let p = |iccid: &str, enabled: bool, fallback: bool| ProfileState {
            iccid: iccid.into(),
            status: if enabled { "Enabled" } else { "Installed" }.into(),
            enabled,
            fallback,
            deleted: false,
        };
        Observed::Euicc(EuiccState {
            id: "1".into(),
            profiles: vec![p("A", false, true), p("B", true, false)],
            operations: ops,
        })
    }

    fn profile_op(make: fn(Iccid) -> Operation, iccid: &str) -> Operation {
        make(Iccid::from_trusted(iccid.into()))
    }

    #[test]
    fn euicc_rules() {
        let enable = |i: Iccid| Operation::ProfileEnable {
            profile_iccid: i,
            rollback: false,
            validity_period: 60,
        };
        let fallback = |i: Iccid| Operation::ProfileFallback {
            profile_iccid: i,
            validity_period: 60,
        };
        let delete = |i: Iccid| Operation::ProfileDelete {
            profile_iccid: i,
            validity_period: 60,
        };
        let r = |op| row(ProviderKind::Emnify, op);
        assert_eq!(
            decide(&r(profile_op(enable, "A")), &euicc(vec![]), None),
            send(Some("B"), "A")
        );
        assert!(matches!(
            decide(&r(profile_op(enable, "B")), &euicc(vec![]), None),
            Decision::Skip { .. }
        ));
        assert!(matches!(
            decide(&r(profile_op(enable, "Z")), &euicc(vec![]), None),
            Decision::Fail { .. }
        ));
        assert!(matches!(
            decide(&r(profile_op(fallback, "B")), &euicc(vec![]), None),
            Decision::Fail { .. }
        ));
        assert!(matches!(
            decide(&r(profile_op(fallback, "A")), &euicc(vec![]), None),
            Decision::Skip { .. }
        ));
        assert!(matches!(
            decide(&r(profile_op(delete, "B")), &euicc(vec![]), None),
            Decision::Fail { .. }
        ));
        assert!(matches!(
            decide(&r(profile_op(delete, "Z")), &euicc(vec![]), None),
            Decision::Skip { .. }
        ));
        let pending = OperationState {
            id: "op-1".into(),
            action: 3,
            status: 1,
            iccid: Some("B".into()),
            error: None,
        };
        let d = decide(
            &r(profile_op(enable, "A")),
            &euicc(vec![pending.clone()]),
            None,
        );
        assert_eq!(
            d,
            Decision::Fail {
                reason: "conflicting pending operation op-1".into(),
                before: Some("B".into())
            }
        );
        let audit = Operation::EuiccAudit {
            validity_period: 60,
        };
        assert!(matches!(
            decide(&r(audit), &euicc(vec![pending]), None),
            Decision::Send { .. }
        ));
    }

    fn revert_row(kind: ProviderKind, operation: Operation) -> JobRow {
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
                &revert_row(ProviderKind::Emnify, Operation::Suspend),
                &done(Outcome::Succeeded, "Activated")
            )),
            Operation::Activate
        );
        assert_eq!(
            op_of(inverse(
                &revert_row(ProviderKind::Telnyx, Operation::Activate),
                &done(Outcome::Succeeded, "standby")
            )),
            Operation::Standby
        );
        assert_eq!(
            op_of(inverse(
                &revert_row(ProviderKind::Twilio, Operation::Suspend),
                &done(Outcome::Succeeded, "active")
            )),
            Operation::Activate
        );
        assert!(matches!(
            inverse(
                &revert_row(ProviderKind::Twilio, Operation::Activate),
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
                    &revert_row(ProviderKind::Emnify, Operation::Suspend),
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
                &revert_row(ProviderKind::Emnify, Operation::Move { target: "2".into() }),
                &done(Outcome::Succeeded, "1")
            )),
            Operation::Move { target: "1".into() }
        );
        assert_eq!(
            op_of(inverse(
                &revert_row(ProviderKind::Emnify, Operation::DisableDevice),
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
            &revert_row(ProviderKind::Emnify, enable),
            &done(Outcome::Succeeded, "89883030000000001294"),
        ));
        assert!(
            matches!(back, Operation::ProfileEnable { profile_iccid, .. } if profile_iccid.as_str() == "89883030000000001294")
        );
        assert!(matches!(
            inverse(
                &revert_row(
                    ProviderKind::Telnyx,
                    Operation::Delete { report_lost: false }
                ),
                &done(Outcome::Succeeded, "enabled")
            ),
            Some(Inverse::NotRevertible(_))
        ));
    }
    #[test]
    fn support_table_matches_spec_1_2() {
        use ProviderKind::*;
        let supported = |kind| -> Vec<&str> {
            crate::job::model::Action::ALL
                .into_iter()
                .filter(|a| provider_of(kind).supports(*a))
                .map(crate::job::model::Action::name)
                .collect()
        };
        assert_eq!(
            supported(Emnify),
            [
                "activate",
                "suspend",
                "delete",
                "enable-device",
                "disable-device",
                "move",
                "euicc-audit",
                "profile-download",
                "profile-enable",
                "profile-fallback",
                "profile-delete",
                // SPEC 3.1: the row `revert.csv` writes to re-attach a device a refused
                // delete left without its SIM.
                "attach"
            ]
        );
        assert_eq!(
            supported(Twilio),
            ["activate", "suspend", "move", "register"]
        );
        assert_eq!(
            supported(Telnyx),
            ["activate", "suspend", "standby", "delete", "move", "register"]
        );
    }
}
