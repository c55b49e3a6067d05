//! Relaying a multi-node task's launches between its ranks' agents.
//!
//! A process of a multi-node attempt runs `corral-rsh HOST CMD` (OpenMPI's remote
//! shell); its agent opens a launch on its stream; the coordinator lets it through
//! only if the attempt is the task's current one, the opening node is one of its
//! nodes and the rank named is too, and from then on passes the launch's frames
//! between the two agents (stdin one way; stdout, stderr and the exit the other).
//! Launch ids are the opening agent's on its side and the coordinator's on the
//! other (with the top bit set, [`THEIRS`], so an agent tells the two apart), so
//! neither agent can name another's launch.

use std::collections::HashMap;

use corral_proto::v1 as pb;

use crate::core::Core;
use crate::model::*;

/// The bit that marks the coordinator's launch ids (the side a launch runs on);
/// an opening agent's ids never have it.
pub const THEIRS: u64 = 1 << 63;

/// The most launches one node may have open at once.
pub const MAX_OPEN_PER_NODE: usize = 1024;

#[derive(Debug, Default)]
pub struct Launches {
    next: u64,
    /// By the coordinator's id: who opened it (and its id there), where it runs.
    routes: HashMap<u64, Route>,
    /// The coordinator's id of each (opening node, its id).
    by_origin: HashMap<(NodeId, u64), u64>,
}

#[derive(Debug)]
struct Route {
    origin: NodeId,
    origin_id: u64,
    target: NodeId,
}

/// A frame that ends a launch on the opening side, saying why.
fn refused(id: u64, why: String) -> pb::LaunchFrame {
    pb::LaunchFrame { id, exited: true, exit_code: 255, error: why, ..Default::default() }
}

impl Launches {
    /// Routes the frames node `from` sent: what to send to which node.
    pub fn route(
        &mut self,
        core: &Core,
        from: &NodeId,
        frames: Vec<pb::LaunchFrame>,
    ) -> Vec<(NodeId, pb::LaunchFrame)> {
        let mut out = Vec::new();
        for frame in frames {
            if let Some(open) = frame.open.clone() {
                match self.open(core, from, frame.id, open) {
                    Ok((id, target)) => out.push((target, pb::LaunchFrame { id, ..frame })),
                    Err(why) => {
                        tracing::warn!(node_id = %from, %why, "refused a launch");
                        out.push((from.clone(), refused(frame.id, why)));
                    }
                }
            } else if let Some(route) =
                self.by_origin.get(&(from.clone(), frame.id)).and_then(|id| Some((*id, self.routes.get(id)?)))
            {
                let (id, target) = (route.0, route.1.target.clone());
                // The opening side sends stdin and its end; nothing else of it counts.
                let (data, eof) = (frame.data, frame.eof || frame.exited);
                out.push((target, pb::LaunchFrame { id, data, eof, ..Default::default() }));
            } else if self.routes.get(&frame.id).is_some_and(|r| &r.target == from) {
                let Some(route) = self.routes.get(&frame.id) else { continue };
                let (origin, origin_id) = (route.origin.clone(), route.origin_id);
                if frame.exited {
                    self.close(frame.id);
                }
                out.push((origin, pb::LaunchFrame { id: origin_id, open: None, eof: false, ..frame }));
            } else {
                tracing::debug!(node_id = %from, id = frame.id, "dropping a frame of no launch of this node");
            }
        }
        out
    }

    fn open(&mut self, core: &Core, from: &NodeId, id: u64, open: pb::LaunchOpen) -> Result<(u64, NodeId), String> {
        let attempt = crate::convert::attempt_ref(open.task).map_err(|e| e.to_string())?;
        let run = core
            .running
            .get(&attempt.task)
            .filter(|r| r.attempt == attempt.attempt && !r.members.is_empty())
            .ok_or_else(|| {
                format!("task {} attempt {} is not a running multi-node attempt", attempt.task, attempt.attempt)
            })?;
        if !run.is_on(from) {
            return Err(format!("node {from} is not a node of task {} attempt {}", attempt.task, attempt.attempt));
        }
        let target = run
            .places()
            .nth(open.rank as usize)
            .ok_or_else(|| format!("rank {}: the attempt has {} nodes", open.rank, 1 + run.members.len()))?
            .clone();
        if id & THEIRS != 0 {
            return Err(format!("launch id {id} has the top bit set"));
        }
        if self.by_origin.contains_key(&(from.clone(), id)) {
            return Err(format!("launch {id} is open already"));
        }
        if self.by_origin.keys().filter(|(n, _)| n == from).count() >= MAX_OPEN_PER_NODE {
            return Err(format!("node {from} has {MAX_OPEN_PER_NODE} launches open"));
        }
        self.next += 1;
        let key = THEIRS | self.next;
        self.routes.insert(key, Route { origin: from.clone(), origin_id: id, target: target.clone() });
        self.by_origin.insert((from.clone(), id), key);
        Ok((key, target))
    }

    fn close(&mut self, id: u64) {
        if let Some(route) = self.routes.remove(&id) {
            self.by_origin.remove(&(route.origin, route.origin_id));
        }
    }

    /// Forgets the launches of a node whose stream ended; what the other side of
    /// each must be told.
    pub fn forget(&mut self, node: &NodeId) -> Vec<(NodeId, pb::LaunchFrame)> {
        let ids: Vec<u64> =
            self.routes.iter().filter(|(_, r)| &r.origin == node || &r.target == node).map(|(id, _)| *id).collect();
        let mut out = Vec::new();
        for id in ids {
            let Some(route) = self.routes.remove(&id) else { continue };
            self.by_origin.remove(&(route.origin.clone(), route.origin_id));
            if &route.origin == node {
                out.push((route.target, pb::LaunchFrame { id, eof: true, ..Default::default() }));
            } else {
                out.push((route.origin, refused(route.origin_id, format!("node {node} went away"))));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_core::testing::*;

    fn open(task: AttemptRef, rank: u32) -> pb::LaunchFrame {
        let task = Some(crate::convert::attempt_to_pb(task));
        pb::LaunchFrame {
            id: 7,
            open: Some(pb::LaunchOpen { task, rank, command: "orted".into(), own_output: false }),
            ..Default::default()
        }
    }

    #[test]
    fn a_launch_goes_only_between_the_nodes_of_a_running_attempt() {
        let mut env = Env::with_pool(Fill::Spread);
        let (a, b, c) = (env.node(1), env.node(1), env.node(1));
        let mut spec = job_spec("p", 1, 0, 0);
        spec.task.nodes = 2;
        env.submit_spec(spec);
        let placed = env.schedule();
        let attempt = placed[0].1;
        let (primary, member) = (placed[0].0.clone(), placed[1].0.clone());
        let outsider = [a, b, c].into_iter().find(|n| *n != primary && *n != member).unwrap();
        let mut l = Launches::default();
        // Rank 0 opens on rank 1: it reaches the member under the coordinator's id.
        let sent = l.route(&env.core, &primary, vec![open(attempt, 1)]);
        assert_eq!(sent.len(), 1);
        let theirs = sent[0].1.id;
        assert_eq!((&sent[0].0, theirs, sent[0].1.open.is_some()), (&member, THEIRS | 1, true));
        // Stdin follows it; the member's output and exit go back under the opener's id.
        let stdin = pb::LaunchFrame { id: 7, data: b"in".to_vec(), ..Default::default() };
        assert_eq!(l.route(&env.core, &primary, vec![stdin])[0].0, member);
        let out = pb::LaunchFrame { id: theirs, data: b"out".to_vec(), ..Default::default() };
        let back = l.route(&env.core, &member, vec![out]);
        assert_eq!((&back[0].0, back[0].1.id, back[0].1.data.as_slice()), (&primary, 7, &b"out"[..]));
        // Another node cannot speak for the launch, nor open one on the attempt.
        let forged = pb::LaunchFrame { id: theirs, exited: true, ..Default::default() };
        assert!(l.route(&env.core, &outsider, vec![forged]).is_empty());
        let refused = l.route(&env.core, &outsider, vec![open(attempt, 1)]);
        assert_eq!(refused[0].0, outsider);
        assert!(refused[0].1.error.contains("is not a node of task"), "{:?}", refused[0].1);
        // A rank the attempt does not have, and an attempt that is not current.
        assert!(l.route(&env.core, &primary, vec![open(attempt, 5)])[0].1.error.contains("rank 5"));
        let old = AttemptRef { attempt: attempt.attempt + 1, ..attempt };
        assert!(l.route(&env.core, &primary, vec![open(old, 1)])[0].1.error.contains("not a running multi-node"));
        // The exit closes it; frames after it go nowhere.
        let exit = pb::LaunchFrame { id: theirs, exited: true, exit_code: 0, ..Default::default() };
        assert_eq!(l.route(&env.core, &member, vec![exit]).len(), 1);
        assert!(l.route(&env.core, &member, vec![pb::LaunchFrame { id: theirs, ..Default::default() }]).is_empty());
        assert!(l.routes.is_empty() && l.by_origin.is_empty());
    }

    #[test]
    fn a_node_that_goes_away_ends_its_launches_on_the_other_side() {
        let mut env = Env::with_pool(Fill::Spread);
        env.node(1);
        env.node(1);
        let mut spec = job_spec("p", 1, 0, 0);
        spec.task.nodes = 2;
        env.submit_spec(spec);
        let placed = env.schedule();
        let (primary, member) = (placed[0].0.clone(), placed[1].0.clone());
        let mut l = Launches::default();
        l.route(&env.core, &primary, vec![open(placed[0].1, 1)]);
        let told = l.forget(&member);
        assert_eq!((&told[0].0, told[0].1.id, told[0].1.exited), (&primary, 7, true));
        assert!(told[0].1.error.contains("went away"));
        assert!(l.routes.is_empty());
    }
}
