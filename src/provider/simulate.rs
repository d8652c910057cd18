//! What a change leaves behind, as `plan` assumes it for the later steps of a group: a run
//! confirms each step before the next one reads the target, so a plan that judged every step
//! against today's state would call a Fleet move of a SIM the group registers a step earlier
//! "no such SIM", or a delete of a profile the group's download disables "enabled". The facts
//! that differ by provider — the status a registration leaves, what an eUICC operation does to
//! its profiles — come from the [`Provider`].

use crate::job::Operation;

use super::facts::Provider;
use super::state::{Observed, SimState};

/// The state the row's change (aiming at `after`, as pre-flight said) leaves `observed` in.
pub fn after_change(
    provider: &dyn Provider,
    observed: &Observed,
    op: &Operation,
    after: &str,
) -> Observed {
    match (observed, op) {
        (_, Operation::Delete { .. }) => Observed::Missing,
        (Observed::Missing, Operation::Register { .. }) => match provider.registered_status() {
            Some(status) => Observed::Sim(SimState {
                id: String::new(),
                status: status.to_string(),
                settled: true,
                group: None,
                device: None,
                eid: None,
            }),
            None => Observed::Missing,
        },
        (Observed::Sim(sim), op) => Observed::Sim(sim_after(sim, op, after)),
        (Observed::Euicc(euicc), op) => Observed::Euicc(provider.euicc_after(euicc, op)),
        (Observed::Missing, _) => Observed::Missing,
    }
}

fn sim_after(sim: &SimState, op: &Operation, after: &str) -> SimState {
    let mut sim = sim.clone();
    match op {
        Operation::Move { .. } => sim.group = Some(after.to_string()),
        Operation::EnableDevice | Operation::DisableDevice => {
            if let Some(device) = sim.device.as_mut() {
                device.1 = after.to_string();
            }
        }
        Operation::Attach { target } => sim.device = Some((target.clone(), String::new())),
        _ => sim.status = after.to_string(),
    }
    sim
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::ProviderKind;
    use crate::provider::provider_of;

    #[test]
    fn a_registered_twilio_sim_is_new_and_a_move_puts_it_in_its_fleet() {
        let twilio = provider_of(ProviderKind::Twilio);
        let op = Operation::Register {
            registration_code: "RC1".into(),
        };
        let Observed::Sim(sim) = after_change(twilio, &Observed::Missing, &op, "registered") else {
            panic!("not registered");
        };
        assert_eq!(sim.status, "new");
        let moved = after_change(
            twilio,
            &Observed::Sim(sim),
            &Operation::Move {
                target: "default".into(),
            },
            "HF0001",
        );
        assert!(matches!(&moved, Observed::Sim(s) if s.group.as_deref() == Some("HF0001")));
        assert_eq!(
            after_change(
                twilio,
                &moved,
                &Operation::Delete { report_lost: false },
                "deleted"
            ),
            Observed::Missing
        );
    }
}
