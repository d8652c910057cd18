//! Pre-flight (SPEC 3.1) as a pure function of a row, what the provider shows now and what
//! simbatch believes about the provider ([`Provider`]): skip no-ops (`already <state>`),
//! refuse transitions the provider forbids without sending, find contradicting pending eUICC
//! operations — or say exactly what to send and what `before` and `after` will be.
//! Reconciliation uses the same function. Nothing here knows a provider by name: statuses,
//! transitions and device wording come from the provider's facts.

use crate::job::{JobRow, Operation};
use crate::provider::{Decision, Observed, Provider, SimState};

/// Decides what to do with a row. `move_target` is the resolved group id for `move` (a Twilio
/// Fleet unique name resolved to its SID); otherwise the row's own target.
pub fn decide(
    provider: &dyn Provider,
    row: &JobRow,
    observed: &Observed,
    move_target: Option<&str>,
) -> Decision {
    match observed {
        Observed::Missing => missing(row),
        Observed::Sim(sim) => decide_sim(provider, row, sim, move_target),
        Observed::Euicc(euicc) => provider.decide_euicc(&row.operation, euicc),
    }
}

/// Whether the row's change is already in effect at the provider, as read back after an answer
/// that may mean applied (or after an interrupted attempt): pre-flight would skip it, or it was
/// a deletion and the target is gone.
pub fn in_effect(
    provider: &dyn Provider,
    row: &JobRow,
    observed: &Observed,
    move_target: Option<&str>,
) -> bool {
    match observed {
        Observed::Missing => matches!(row.operation, Operation::Delete { .. }),
        _ => matches!(
            decide(provider, row, observed, move_target),
            Decision::Skip { .. }
        ),
    }
}

fn missing(row: &JobRow) -> Decision {
    match &row.operation {
        Operation::Register { .. } => Decision::send(Some("unregistered"), "registered"),
        _ => Decision::fail(
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

fn decide_sim(
    provider: &dyn Provider,
    row: &JobRow,
    sim: &SimState,
    move_target: Option<&str>,
) -> Decision {
    let status = sim.status.as_str();
    if !sim.settled {
        return Decision::fail(format!("another change is in progress at {} (status `{status}`); try again once it settles", row.provider), Some(status));
    }
    if let Some(why) = provider.refuses_any_change(sim) {
        return Decision::fail(why, Some(status));
    }
    match &row.operation {
        Operation::Register { .. } => Decision::skip("already registered", status),
        Operation::Move { target } => {
            let target = move_target.unwrap_or(target);
            let before = sim.group.as_deref().unwrap_or("none");
            if sim.group.as_deref() == Some(target) {
                Decision::skip(format!("already in {target}"), before)
            } else {
                Decision::send(Some(before), target)
            }
        }
        Operation::EnableDevice | Operation::DisableDevice => {
            let enable = matches!(row.operation, Operation::EnableDevice);
            let Some(want) = provider.device_status(enable) else {
                return Decision::fail(
                    format!("`{}` is not supported for {}", row.action(), row.kind),
                    Some(status),
                );
            };
            match &sim.device {
                None => Decision::fail("the SIM is not attached to an endpoint (device)", None),
                Some((_, device_status)) if device_status == want => {
                    Decision::skip(format!("already {want}"), device_status)
                }
                Some((_, device_status)) => Decision::send(Some(device_status), want),
            }
        }
        Operation::Attach { target } => match &sim.device {
            None => Decision::send(Some("none"), target),
            Some((device, _)) if device == target => {
                Decision::skip(format!("already on device {target}"), device)
            }
            Some((device, _)) => Decision::fail(
                format!(
                    "the SIM is on device {device}, not {target}; it is not moved between devices"
                ),
                Some(device),
            ),
        },
        Operation::Delete { .. } => {
            if provider.shows_deleted(sim) {
                Decision::skip("already deleted", status)
            } else {
                Decision::send(Some(status), "deleted")
            }
        }
        op => {
            let Some(want) = provider.target_status(op) else {
                return Decision::fail(
                    format!("`{}` is not supported for {}", op.action(), row.kind),
                    Some(status),
                );
            };
            if status == want {
                return Decision::skip(format!("already {want}"), status);
            }
            match provider.refuses_transition(sim, want) {
                Some(why) => Decision::fail(why, Some(status)),
                None => Decision::send(Some(status), want),
            }
        }
    }
}
