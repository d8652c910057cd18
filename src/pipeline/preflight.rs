//! Pre-flight (SPEC 3.1) as a pure function of a row and what the provider shows now: skip
//! no-ops (`already <state>`), refuse transitions the provider forbids without sending, find
//! contradicting pending eUICC operations — or say exactly what to send and what `before` and
//! `after` will be. Reconciliation on resume uses the same function.

use crate::job::{JobRow, Operation, ProviderKind};
use crate::provider::{EuiccState, SimState};

/// What the provider shows for a row's target.
#[derive(Debug, Clone, PartialEq)]
pub enum Observed {
    /// No such SIM/eUICC at this provider (or not registered to the account).
    Missing,
    Sim(SimState),
    Euicc(EuiccState),
}

/// The pre-flight verdict.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Skip {
        reason: String,
        before: Option<String>,
    },
    Fail {
        reason: String,
        before: Option<String>,
    },
    /// Send the change; `before` is the state it replaces, `after` the state it should produce.
    Send {
        before: Option<String>,
        after: String,
    },
}

fn skip(reason: impl Into<String>, before: &str) -> Decision {
    Decision::Skip {
        reason: reason.into(),
        before: Some(before.to_string()),
    }
}

fn fail(reason: impl Into<String>, before: Option<&str>) -> Decision {
    Decision::Fail {
        reason: reason.into(),
        before: before.map(str::to_string),
    }
}

fn send(before: Option<&str>, after: impl Into<String>) -> Decision {
    Decision::Send {
        before: before.map(str::to_string),
        after: after.into(),
    }
}

/// The status wording an action aims at, per provider.
pub fn target_status(kind: ProviderKind, op: &Operation) -> Option<&'static str> {
    use Operation::*;
    match (kind, op) {
        (ProviderKind::Emnify, Activate) => Some("Activated"),
        (ProviderKind::Emnify, Suspend) => Some("Suspended"),
        (ProviderKind::Twilio, Activate) => Some("active"),
        (ProviderKind::Twilio, Suspend) => Some("inactive"),
        (ProviderKind::Telnyx, Activate) => Some("enabled"),
        (ProviderKind::Telnyx, Suspend) => Some("disabled"),
        (ProviderKind::Telnyx, Standby) => Some("standby"),
        _ => None,
    }
}

/// Decides what to do with a row. `move_target` is the resolved group id for `move` (a Twilio
/// Fleet unique name resolved to its SID); otherwise the row's own target.
pub fn decide(row: &JobRow, observed: &Observed, move_target: Option<&str>) -> Decision {
    match observed {
        Observed::Missing => missing(row),
        Observed::Sim(sim) => decide_sim(row, sim, move_target),
        Observed::Euicc(euicc) => decide_euicc(&row.operation, euicc),
    }
}

/// Whether the row's change is already in effect at the provider, as read back after an answer
/// that may mean applied (or after an interrupted attempt): pre-flight would skip it, or it was
/// a deletion and the target is gone.
pub fn in_effect(row: &JobRow, observed: &Observed, move_target: Option<&str>) -> bool {
    match observed {
        Observed::Missing => matches!(row.operation, Operation::Delete { .. }),
        _ => matches!(decide(row, observed, move_target), Decision::Skip { .. }),
    }
}

fn missing(row: &JobRow) -> Decision {
    match &row.operation {
        Operation::Register { .. } => send(Some("unregistered"), "registered"),
        _ => fail(
            format!(
                "no {} {} at {}",
                if row.target.eid().is_some() && row.target.iccid().is_none() {
                    "eUICC"
                } else {
                    "SIM"
                },
                row.target.primary(),
                row.provider
            ),
            None,
        ),
    }
}

fn decide_sim(row: &JobRow, sim: &SimState, move_target: Option<&str>) -> Decision {
    let status = sim.status.as_str();
    if !sim.settled {
        return fail(format!("another change is in progress at {} (status `{status}`); try again once it settles", row.provider), Some(status));
    }
    if row.kind == ProviderKind::Telnyx && status == "data_limit_exceeded" {
        return fail("Telnyx refuses changes while the SIM is `data_limit_exceeded`; raise its data limit first", Some(status));
    }
    match &row.operation {
        Operation::Register { .. } => skip("already registered", status),
        Operation::Move { target } => {
            let target = move_target.unwrap_or(target);
            let before = sim.group.as_deref().unwrap_or("none");
            if sim.group.as_deref() == Some(target) {
                skip(format!("already in {target}"), before)
            } else {
                send(Some(before), target)
            }
        }
        Operation::EnableDevice | Operation::DisableDevice => {
            let want = if matches!(row.operation, Operation::EnableDevice) {
                "Enabled"
            } else {
                "Disabled"
            };
            match &sim.device {
                None => fail("the SIM is not attached to an endpoint (device)", None),
                Some((_, device_status)) if device_status == want => {
                    skip(format!("already {want}"), device_status)
                }
                Some((_, device_status)) => send(Some(device_status), want),
            }
        }
        Operation::Delete { .. } => {
            if status == "Deleted" {
                skip("already deleted", status)
            } else {
                send(Some(status), "deleted")
            }
        }
        op => {
            let Some(want) = target_status(row.kind, op) else {
                return fail(
                    format!("`{}` is not supported for {}", op.action(), row.kind),
                    Some(status),
                );
            };
            if status == want {
                return skip(format!("already {want}"), status);
            }
            match (row.kind, want) {
                // emnify allows only Issued→Activated/Factory Test, Factory Test→Activated, Activated↔Suspended.
                (ProviderKind::Emnify, "Activated") if !matches!(status, "Issued" | "Factory Test" | "Suspended") => {
                    fail(format!("emnify does not allow {status} → Activated"), Some(status))
                }
                (ProviderKind::Emnify, "Suspended") if status != "Activated" => {
                    fail(format!("emnify does not allow {status} → Suspended"), Some(status))
                }
                (ProviderKind::Twilio, "active") if sim.group.is_none() => fail(
                    "the Super SIM has no Fleet: Twilio only activates SIMs in a Fleet (add a `move` row first)",
                    Some(status),
                ),
                (ProviderKind::Telnyx, "enabled" | "standby") if sim.group.is_none() => {
                    fail("Telnyx needs the SIM in a SIM card group to enable it or set it to standby", Some(status))
                }
                _ => send(Some(status), want),
            }
        }
    }
}

/// Whether a pending eUICC operation contradicts the one a row would schedule (the provider
/// would silently apply only the first).
fn contradicts(pending_action: u8, pending_iccid: Option<&str>, op: &Operation) -> bool {
    let changes_enabled = |action: u8, enable: bool| action == 3 || (action == 2 && enable);
    let (action, iccid, enable) = operation_code(op);
    (changes_enabled(pending_action, true) && changes_enabled(action, enable))
        || (pending_action == 4 && action == 4)
        || (pending_action == 2 && action == 2)
        || (pending_iccid.is_some()
            && pending_iccid == iccid
            && pending_action != action
            && pending_action != 1
            && action != 1)
}

/// emnify's action id, profile ICCID and enable flag of an eUICC operation.
pub fn operation_code(op: &Operation) -> (u8, Option<&str>, bool) {
    match op {
        Operation::EuiccAudit { .. } => (1, None, false),
        Operation::ProfileDownload { enable, .. } => (2, None, *enable),
        Operation::ProfileEnable { profile_iccid, .. } => (3, Some(profile_iccid.as_str()), true),
        Operation::ProfileFallback { profile_iccid, .. } => {
            (4, Some(profile_iccid.as_str()), false)
        }
        Operation::ProfileDelete { profile_iccid, .. } => (5, Some(profile_iccid.as_str()), false),
        _ => (0, None, false),
    }
}

fn decide_euicc(op: &Operation, euicc: &EuiccState) -> Decision {
    let enabled = euicc.enabled_profile().map(|p| p.iccid.as_str());
    if let Some(conflict) = euicc
        .operations
        .iter()
        .find(|o| o.status == 1 && contradicts(o.action, o.iccid.as_deref(), op))
    {
        return fail(
            format!("conflicting pending operation {}", conflict.id),
            enabled,
        );
    }
    match op {
        Operation::EuiccAudit { .. } => send(enabled, "audited"),
        Operation::ProfileDownload { .. } => send(enabled, "downloaded"),
        Operation::ProfileEnable { profile_iccid, .. } => {
            match euicc.profile(profile_iccid.as_str()) {
                None => fail(
                    format!("profile {profile_iccid} is not installed on this eUICC"),
                    enabled,
                ),
                Some(p) if p.enabled => skip("already enabled", &p.iccid),
                Some(_) => send(enabled, profile_iccid.as_str()),
            }
        }
        Operation::ProfileFallback { profile_iccid, .. } => {
            let previous = euicc
                .fallback_profile()
                .map(|p| p.iccid.as_str())
                .unwrap_or("none");
            match euicc.profile(profile_iccid.as_str()) {
                None => fail(
                    format!("profile {profile_iccid} is not installed on this eUICC"),
                    Some(previous),
                ),
                Some(p) if p.enabled => fail(
                    "a fallback must be a disabled profile, and this one is enabled",
                    Some(previous),
                ),
                Some(p) if p.fallback => skip("already the fallback profile", previous),
                Some(_) => send(Some(previous), profile_iccid.as_str()),
            }
        }
        Operation::ProfileDelete { profile_iccid, .. } => {
            match euicc.profile(profile_iccid.as_str()) {
                None => skip("already deleted (not on this eUICC)", "absent"),
                Some(p) if p.enabled => fail(
                    "a profile cannot be deleted while it is enabled; enable another first",
                    Some(&p.status),
                ),
                Some(p) => send(Some(&p.status), "deleted"),
            }
        }
        other => fail(
            format!("`{}` does not apply to an eUICC", other.action()),
            None,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::ids::Iccid;
    use crate::job::Target;
    use crate::provider::state::{OperationState, ProfileState};

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
}
