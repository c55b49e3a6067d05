//! Autoscaling: each evaluation (every tick, about once a second) sizes a pool to
//! its queue. The decision is a pure function of the pool's settings and a snapshot
//! of its queue and nodes ([`decide`]), so it is tested as a table; the core then
//! carries it out and records every decision that changes something, with its
//! inputs and reason, so `corral pool explain` can say why a pool has its size.

use std::time::{Duration, Instant};

use super::*;

/// What the autoscaler sees of a pool.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolLoad {
    /// Slots needed by the pool's ready and running tasks.
    pub needed_slots: u64,
    pub slots_per_node: u32,
    /// Registered nodes that count toward the size (not draining to go).
    pub up: u32,
    /// Nodes started but not registered yet: ordered, not to be ordered again.
    pub starting: u32,
    /// Idle nodes and how long they have been idle.
    pub idle: Vec<(NodeId, Duration)>,
    /// When the pool's size last changed.
    pub last_change: Option<Instant>,
    /// Nodes needed for the resources (GPUs, memory, counters) the tasks ask for,
    /// at what the pool's nodes have (0 when no node has said yet).
    pub resource_nodes: u32,
}

/// What to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Nothing changes.
    Hold { target: u32, reason: String },
    /// Start `add` nodes.
    Grow { target: u32, add: u32, reason: String },
    /// Remove these idle nodes.
    Shrink { target: u32, remove: Vec<NodeId>, reason: String },
}

impl Decision {
    pub fn reason(&self) -> &str {
        match self {
            Decision::Hold { reason, .. } | Decision::Grow { reason, .. } | Decision::Shrink { reason, .. } => reason,
        }
    }
}

/// The size the queue asks for: the slots it needs in whole nodes, within min..max.
pub fn wanted(auto: &Autoscale, needed_slots: u64, slots_per_node: u32) -> u32 {
    let nodes = needed_slots.div_ceil(u64::from(slots_per_node.max(1)));
    (nodes.min(u64::from(u32::MAX)) as u32).clamp(auto.min, auto.max)
}

/// Sizes a pool to its queue. Grows at once (at most `step` nodes an evaluation,
/// counting nodes still starting so none is ordered twice); shrinks only by nodes
/// idle for `idle_timeout`, never within `cooldown` of the last change, longest idle
/// first.
pub fn decide(auto: &Autoscale, s: &PoolLoad, now: Instant) -> Decision {
    let target = wanted(auto, s.needed_slots, s.slots_per_node).max(s.resource_nodes.clamp(auto.min, auto.max));
    let have = s.up + s.starting;
    let mut why = format!(
        "the queue needs {} slot(s) = {} node(s) of {}, within {}..{}; the pool has {} ({} up, {} starting)",
        s.needed_slots,
        s.needed_slots.div_ceil(u64::from(s.slots_per_node.max(1))),
        s.slots_per_node,
        auto.min,
        auto.max,
        have,
        s.up,
        s.starting
    );
    if s.resource_nodes > 0 {
        why = format!("{why}; their resources need {} node(s)", s.resource_nodes);
    }
    if target > have {
        let add = (target - have).min(auto.step.max(1));
        let reason = format!("{why}: starting {add}");
        return Decision::Grow { target: have + add, add, reason };
    }
    if target < have {
        if let Some(at) = s.last_change {
            let since = now.saturating_duration_since(at);
            if since < auto.cooldown {
                let reason = format!("{why}: not shrinking within the {:?} cooldown", auto.cooldown);
                return Decision::Hold { target: have, reason };
            }
        }
        let mut idle: Vec<&(NodeId, Duration)> = s.idle.iter().filter(|(_, d)| *d >= auto.idle_timeout).collect();
        idle.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let remove: Vec<NodeId> = idle.iter().take((have - target) as usize).map(|(id, _)| id.clone()).collect();
        if remove.is_empty() {
            let reason = format!("{why}: no node has been idle for {:?} yet", auto.idle_timeout);
            return Decision::Hold { target: have, reason };
        }
        let reason = format!("{why}: removing {} node(s) idle for {:?} or more", remove.len(), auto.idle_timeout);
        return Decision::Shrink { target: have - remove.len() as u32, remove, reason };
    }
    Decision::Hold { target, reason: format!("{why}: the size is right") }
}

/// One decision that changed a pool's size, kept for `pool show` and `pool explain`.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub at_ms: u64,
    pub from: u32,
    pub to: u32,
    pub reason: String,
}

/// How many records a pool keeps in memory.
pub const KEEP: usize = 20;

impl Core {
    /// What the autoscaler sees of `pool` at `now`.
    pub fn autoscale_snapshot(&self, pool: &Pool, now: Instant) -> PoolLoad {
        let mut needed_slots = 0u64;
        let mut needed = Resources::new();
        let now_ms = self.wall_ms(now);
        for (_, id) in &pool.jobs {
            if let Some(job) = self.jobs.get(id).filter(|j| !j.held(now_ms)) {
                // A throttled job needs only the slots its limit lets it use.
                let room = super::schedule::room(job, &self.keyed) as usize;
                let delayed = self.delayed.iter().filter(|(_, k)| k.job == *id).map(|(_, k)| k.index);
                for index in job.ready.iter().copied().chain(delayed).take(room) {
                    let spec = job.spec.task_spec(index);
                    // A multi-node task needs its nodes whole.
                    needed_slots += match spec.is_multi_node() {
                        true => u64::from(spec.nodes) * u64::from(pool.spec.slots_per_node),
                        false => u64::from(spec.slots),
                    };
                    for (name, amount) in &spec.resources {
                        *needed.entry(name.clone()).or_default() += amount;
                    }
                }
            }
        }
        // What one node has of each resource: the most any registered node has.
        let mut per_node = Resources::new();
        let (mut up, mut starting, mut idle) = (0, 0, Vec::new());
        // The same nodes the reconciler counts; work finishing on nodes that are on
        // their way out is no reason to order more.
        for node in pool.nodes.iter().filter_map(|id| self.nodes.get(id)).filter(|n| n.counts_toward_size()) {
            needed_slots += u64::from(node.slots_used);
            for (name, amount) in &node.resources_used {
                *needed.entry(name.clone()).or_default() += amount;
            }
            for (name, &has) in &node.record.resources {
                let most = per_node.entry(name.clone()).or_default();
                *most = (*most).max(has);
            }
            match node.status() {
                NodeStatus::Starting => starting += 1,
                _ => {
                    up += 1;
                    if node.status() == NodeStatus::Up && node.usable && node.running.is_empty() {
                        idle.push((node.record.id.clone(), now.saturating_duration_since(node.idle_since)));
                    }
                }
            }
        }
        let resource_nodes = needed
            .iter()
            .filter_map(|(name, &amount)| per_node.get(name).filter(|&&has| has > 0).map(|&has| amount.div_ceil(has)))
            .max()
            .unwrap_or(0)
            .min(u64::from(u32::MAX)) as u32;
        PoolLoad {
            resource_nodes,
            needed_slots,
            slots_per_node: pool.spec.slots_per_node,
            up,
            starting,
            idle,
            last_change: pool.last_scale_at,
        }
    }

    /// Evaluates every autoscaled pool and carries out what it decides.
    pub(super) fn autoscale(&mut self, now: Instant, out: &mut Outbox) {
        let names: Vec<PoolName> = self
            .pools
            .values()
            .filter(|p| p.spec.autoscale.is_some() && !p.deleting)
            .map(|p| p.spec.name.clone())
            .collect();
        for name in names {
            let Some(pool) = self.pools.get(&name) else { continue };
            let Some(auto) = pool.spec.autoscale.clone() else { continue };
            let snapshot = self.autoscale_snapshot(pool, now);
            let from = snapshot.up + snapshot.starting;
            let decision = decide(&auto, &snapshot, now);
            let to = match &decision {
                Decision::Hold { .. } => continue,
                // Already ordered (the launch may be backing off): nothing new to record.
                Decision::Grow { target, .. } if *target == pool.spec.target_nodes => continue,
                Decision::Grow { target, .. } => *target,
                Decision::Shrink { target, remove, .. } => {
                    for id in remove {
                        self.retire_node(now, id, NodeStatus::Removed, NodeReason::ScaledDown, out);
                    }
                    *target
                }
            };
            let at_ms = self.wall_ms(now);
            let record = Record { at_ms, from, to, reason: decision.reason().to_string() };
            tracing::info!(pool = %name, from, to, reason = %record.reason, "autoscaled");
            let Some(pool) = self.pools.get_mut(&name) else { continue };
            pool.spec.target_nodes = to;
            pool.last_scale_at = Some(now);
            pool.scale_log.push_back(record.clone());
            while pool.scale_log.len() > KEEP {
                pool.scale_log.pop_front();
            }
            out.store.push(pool.stored());
            out.store.push(StoreOp::ScaleRecord { pool: name.clone(), record });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auto() -> Autoscale {
        Autoscale { min: 0, max: 3, idle_timeout: Duration::from_secs(10), step: 2, cooldown: Duration::from_secs(5) }
    }

    fn snap(needed: u64, up: u32, starting: u32, idle: &[(u64, u64)]) -> PoolLoad {
        PoolLoad {
            needed_slots: needed,
            slots_per_node: 2,
            up,
            starting,
            idle: idle.iter().map(|&(n, secs)| (NodeId::from_seq(n), Duration::from_secs(secs))).collect(),
            last_change: None,
            resource_nodes: 0,
        }
    }

    fn summary(d: &Decision) -> (char, u32, usize) {
        match d {
            Decision::Hold { target, .. } => ('=', *target, 0),
            Decision::Grow { target, add, .. } => ('+', *target, *add as usize),
            Decision::Shrink { target, remove, .. } => ('-', *target, remove.len()),
        }
    }

    #[test]
    fn the_table() {
        let now = Instant::now();
        // (what, snapshot, expected (kind, target, count))
        let cases: Vec<(&str, PoolLoad, (char, u32, usize))> = vec![
            ("empty stays empty", snap(0, 0, 0, &[]), ('=', 0, 0)),
            ("a burst grows by the step", snap(120, 0, 0, &[]), ('+', 2, 2)),
            ("starting nodes are counted", snap(120, 0, 2, &[]), ('+', 3, 1)),
            ("capped at max", snap(120, 3, 0, &[]), ('=', 3, 0)),
            ("rounded up to whole nodes", snap(3, 0, 0, &[]), ('+', 2, 2)),
            ("one slot needs one node", snap(1, 0, 0, &[]), ('+', 1, 1)),
            ("idle but not for long", snap(0, 2, 0, &[(1, 3), (2, 9)]), ('=', 2, 0)),
            ("idle long enough, longest first", snap(0, 2, 0, &[(1, 30), (2, 12)]), ('-', 0, 2)),
            ("only as many as the queue allows", snap(2, 2, 0, &[(1, 30), (2, 40)]), ('-', 1, 1)),
            ("busy nodes are never removed", snap(4, 3, 0, &[(3, 60)]), ('-', 2, 1)),
        ];
        for (what, s, expected) in cases {
            let d = decide(&auto(), &s, now);
            assert_eq!(summary(&d), expected, "{what}: {}", d.reason());
        }
        let d = decide(&auto(), &snap(0, 2, 0, &[(1, 30), (2, 12)]), now);
        let Decision::Shrink { remove, .. } = d else { panic!() };
        assert_eq!(remove[0], NodeId::from_seq(1), "the longest idle goes first");
    }

    #[test]
    fn min_and_cooldown() {
        let now = Instant::now();
        let floor = Autoscale { min: 1, ..auto() };
        assert_eq!(summary(&decide(&floor, &snap(0, 0, 0, &[]), now)), ('+', 1, 1));
        assert_eq!(summary(&decide(&floor, &snap(0, 1, 0, &[(1, 600)]), now)), ('=', 1, 0));
        let mut recent = snap(0, 2, 0, &[(1, 60), (2, 60)]);
        recent.last_change = Some(now - Duration::from_secs(2));
        let d = decide(&auto(), &recent, now);
        assert_eq!(summary(&d), ('=', 2, 0));
        assert!(d.reason().contains("cooldown"), "{}", d.reason());
        recent.last_change = Some(now - Duration::from_secs(6));
        assert_eq!(summary(&decide(&auto(), &recent, now)), ('-', 0, 2));
    }

    #[test]
    fn reasons_say_what_was_seen() {
        let d = decide(&auto(), &snap(7, 1, 0, &[]), Instant::now());
        assert_eq!(
            d.reason(),
            "the queue needs 7 slot(s) = 4 node(s) of 2, within 0..3; the pool has 1 (1 up, 0 starting): starting 2"
        );
    }
}
