//! `plan` for the rows of a `group`, step by step as a run takes them: each step is judged
//! against the state the earlier steps leave ([`crate::provider::simulate`]) — a run confirms
//! each step before the next reads its target — and once a step would fail, the rest of its
//! group is `blocked`, as in the run. Groups are planned a few at a time; their steps in order.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures_util::stream::StreamExt;

use super::{stopped_by, Planned};
use crate::job::JobRow;
use crate::pipeline::lane::Lane;
use crate::pipeline::preflight::decide;
use crate::provider::simulate::after_change;
use crate::provider::{Decision, Observed};

/// Groups planned at once.
const GROUPS_AT_ONCE: usize = 8;

/// Plans every group (its rows in file order).
pub(super) async fn plan_groups(
    lanes: &BTreeMap<String, Arc<Lane>>,
    groups: BTreeMap<String, Vec<(u64, JobRow)>>,
) -> Result<Vec<Planned>, String> {
    let planned: Vec<Result<Vec<Planned>, String>> =
        futures_util::stream::iter(groups.into_values().map(|rows| plan_group(lanes, rows)))
            .buffer_unordered(GROUPS_AT_ONCE)
            .collect()
            .await;
    let mut all = Vec::new();
    for group in planned {
        all.extend(group?);
    }
    Ok(all)
}

async fn plan_group(
    lanes: &BTreeMap<String, Arc<Lane>>,
    rows: Vec<(u64, JobRow)>,
) -> Result<Vec<Planned>, String> {
    // What the earlier steps leave, by provider and target.
    let mut state: HashMap<(String, String), Observed> = HashMap::new();
    let mut blocked_by: Option<u64> = None;
    let mut out = Vec::with_capacity(rows.len());
    for (index, row) in rows {
        if let Some(line) = blocked_by {
            let reason = format!(
                "an earlier row of group `{}` (line {line}) did not succeed",
                row.group.as_deref().unwrap_or_default()
            );
            out.push(Planned::new(index, row, "blocked", reason, None, None));
            continue;
        }
        let lane = lanes.get(&row.provider).expect("a lane per provider");
        let key = (row.provider.clone(), row.target.primary().to_string());
        let observed = match state.get(&key) {
            Some(observed) => Ok(observed.clone()),
            None => lane.observe(&row).await,
        };
        let target = lane.move_target(&row).await;
        let (observed, target) = match (observed, target) {
            (Err(e), _) | (_, Err(e)) if e.stops_run() => return Err(stopped_by(&lane.name, &e)),
            (Err(e), _) | (_, Err(e)) => {
                let reason = format!("could not read the current state: {e}");
                out.push(Planned::new(index, row, "error", reason, None, None));
                blocked_by = out.last().map(|p| p.row.line);
                continue;
            }
            (Ok(observed), Ok(target)) => (observed, target),
        };
        let decision = decide(lane.provider(), &row, &observed, target.as_deref());
        let planned = match decision {
            Decision::Send { before, after } => {
                let left = after_change(lane.provider(), &observed, &row.operation, &after);
                let releases = lane.provider().releases_from(&row, &observed).is_some();
                state.insert(key, left);
                let mut planned =
                    Planned::new(index, row, "change", String::new(), before, Some(after));
                planned.releases = releases;
                planned
            }
            Decision::Skip { reason, before } => {
                state.insert(key, observed);
                Planned::new(index, row, "skip", reason, before.clone(), before)
            }
            Decision::Fail { reason, before } => {
                blocked_by = Some(row.line);
                Planned::new(index, row, "fail", reason, before, None)
            }
        };
        out.push(planned);
    }
    Ok(out)
}
