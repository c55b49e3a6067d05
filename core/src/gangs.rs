//! Multi-node tasks (gangs): a task that takes N whole nodes of its pool at once,
//! never some of them.
//!
//! The scheduler ([`super::schedule`]) starts one when N of its pool's nodes are
//! wholly free. When one is the next to run in its pool's order and cannot start,
//! it *holds* the N nodes that will be free soonest ([`choose`]): they take no new
//! work, so they drain, and it starts once they have. Meanwhile a later task may
//! run on a held node only if its `--timeout` ends before the gang's
//! *reservation*, the time by which every held node is free at the latest
//! (backfill, as Slurm's); when that time cannot be known (a held node runs a task
//! without a timeout) nothing backfills. One gang holds at a time in a pool, so two
//! never hold parts of it against each other; a gang behind the holder starts only
//! on nodes nobody holds. Only work of a higher priority that is itself waiting for
//! nodes keeps a gang from holding: a stream of tasks of its own priority or lower
//! cannot starve it.

use std::collections::{BTreeMap, HashMap};

use super::*;

/// What each node of a started gang is told: its rank and where all ranks run
/// (`CORRAL_NODE_RANK`, `CORRAL_HOSTS`, the hostfile).
#[derive(Debug, Clone, PartialEq)]
pub struct Place {
    pub rank: u32,
    /// The nodes, rank 0 first.
    pub nodes: Vec<NodeId>,
    /// Their hosts, in the same order.
    pub hosts: Vec<String>,
    /// Their slots, in the same order.
    pub slots: Vec<u32>,
}

/// The nodes a waiting gang holds, recomputed at every scheduling pass.
#[derive(Debug, Clone, PartialEq)]
pub struct Hold {
    /// The gang, and its job's priority.
    pub task: TaskKey,
    pub priority: i32,
    /// How many nodes it needs.
    pub wants: u32,
    /// The nodes it holds, by id (fewer than `wants` when the pool has fewer
    /// usable nodes).
    pub held: Vec<NodeId>,
    /// When every held node is free at the latest (wall ms); `None` when that
    /// cannot be known, or when there are too few nodes.
    pub reservation_ms: Option<u64>,
}

impl Hold {
    pub fn holds(&self, node: &NodeId) -> bool {
        self.held.binary_search(node).is_ok()
    }

    /// Whether a task with `timeout` started at `now_ms` may use a held node: it
    /// ends before the gang's reservation.
    pub fn lets_backfill(&self, timeout: Option<std::time::Duration>, now_ms: u64) -> bool {
        match (self.reservation_ms, timeout) {
            (Some(by), Some(t)) => now_ms.saturating_add(t.as_millis() as u64) <= by,
            _ => false,
        }
    }
}

/// When `node` is free at the latest: `now_ms` if it is free now, `None` if a
/// task on it has no timeout (or waits there for a slot).
pub fn free_by(node: &Node, running: &HashMap<TaskKey, RunningAttempt>, now_ms: u64) -> Option<u64> {
    let mut by = now_ms;
    for key in &node.running {
        by = by.max(running.get(key)?.ends_by_ms()?);
    }
    Some(by)
}

/// The `wants` nodes among `usable` a waiting gang holds: wholly free ones first,
/// then those free soonest (a node whose end is unknown last), then by id; and
/// the reservation they give.
pub fn choose(
    nodes: &BTreeMap<NodeId, Node>,
    running: &HashMap<TaskKey, RunningAttempt>,
    usable: &[NodeId],
    task: TaskKey,
    wants: u32,
    now_ms: u64,
) -> Hold {
    let mut ranked: Vec<(bool, u64, &NodeId, Option<u64>)> = usable
        .iter()
        .filter_map(|id| {
            let node = nodes.get(id)?;
            let by = free_by(node, running, now_ms);
            Some((node.slots_used > 0, by.unwrap_or(u64::MAX), id, by))
        })
        .collect();
    ranked.sort();
    ranked.truncate(wants as usize);
    let reservation_ms = match ranked.len() == wants as usize {
        true => ranked.iter().try_fold(now_ms, |latest, (_, _, _, by)| by.map(|by| latest.max(by))),
        false => None,
    };
    let mut held: Vec<NodeId> = ranked.into_iter().map(|(_, _, id, _)| id.clone()).collect();
    held.sort();
    Hold { task, priority: 0, wants, held, reservation_ms }
}

/// The places in `free` (slots free now, node) of `wants` wholly free nodes that
/// `held` does not take, by node id; `None` if there are not that many. `whole`
/// gives each node's slots.
pub fn whole_nodes(free: &[(u32, NodeId)], whole: &[u32], wants: u32, held: Option<&Hold>) -> Option<Vec<usize>> {
    let places: Vec<usize> = free
        .iter()
        .zip(whole)
        .enumerate()
        .filter(|(_, ((slots, id), whole))| slots == *whole && held.is_none_or(|h| !h.holds(id)))
        .map(|(i, _)| i)
        .take(wants as usize)
        .collect();
    (places.len() == wants as usize).then_some(places)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn a_gang_holds_the_free_nodes_then_those_free_soonest_and_its_reservation_is_the_latest() {
        let mut env = Env::with_pool(Fill::Spread);
        let (a, b, c) = (env.node(1), env.node(1), env.node(1));
        // b runs a task with a 60 s timeout, c one with none.
        let mut timed = job_spec("p", 1, 0, 0);
        timed.task.timeout = Some(std::time::Duration::from_secs(60));
        env.submit_spec(timed);
        env.submit(1, 0, 0);
        let placed = env.schedule();
        assert_eq!(placed.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(), [a.clone(), b.clone()]);
        let now_ms = env.core.wall_ms(env.now);
        let usable = [a.clone(), b.clone(), c.clone()];
        let key = TaskKey { job: JobId(99), index: 0 };
        let hold = choose(&env.core.nodes, &env.core.running, &usable, key, 2, now_ms);
        // a (60 s) and b (no timeout) are busy; c is free: c, then a (listed by id).
        assert_eq!(hold.held, [a.clone(), c.clone()]);
        let started = env.core.running[&placed[0].1.task].started_at_ms;
        assert_eq!(hold.reservation_ms, Some(started + 60_000));
        assert!(hold.lets_backfill(Some(std::time::Duration::from_secs(30)), now_ms));
        assert!(!hold.lets_backfill(Some(std::time::Duration::from_secs(61)), now_ms));
        assert!(!hold.lets_backfill(None, now_ms), "a task without a timeout never backfills");
        // All three: b's end is unknown, so is the reservation.
        let hold = choose(&env.core.nodes, &env.core.running, &usable, key, 3, now_ms);
        assert_eq!((hold.held.len(), hold.reservation_ms), (3, None));
        // More than the pool has: all of it held, no reservation.
        let hold = choose(&env.core.nodes, &env.core.running, &usable, key, 4, now_ms);
        assert_eq!((hold.held.len(), hold.reservation_ms), (3, None));
    }

    #[test]
    fn whole_nodes_skips_busy_and_held_ones() {
        let ids: Vec<NodeId> = (1..=4).map(|i| NodeId(format!("n-{i}"))).collect();
        let free: Vec<(u32, NodeId)> = [2, 1, 2, 2].into_iter().zip(ids.iter().cloned()).collect();
        let whole = [2, 2, 2, 2];
        assert_eq!(whole_nodes(&free, &whole, 2, None), Some(vec![0, 2]));
        assert_eq!(whole_nodes(&free, &whole, 4, None), None);
        let task = TaskKey { job: JobId(1), index: 0 };
        let hold = Hold { task, priority: 0, wants: 1, held: vec![ids[0].clone()], reservation_ms: None };
        assert_eq!(whole_nodes(&free, &whole, 2, Some(&hold)), Some(vec![2, 3]));
    }
}
