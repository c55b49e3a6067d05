//! One event in, the core's entry points called: which agent stream is current,
//! what a stale stream's messages are worth (nothing), and the order in which a
//! hello's parts reach the core. Pure: `now` is given, effects go to the outbox and
//! the follow-ups, so it is tested without sockets (below).

use std::collections::HashMap;
use std::time::Instant;

use corral_proto::v1 as pb;

use super::{AgentTx, Input};
use crate::core::{Core, Outbox};
use crate::model::NodeId;
use crate::store::FollowUp;

/// The open agent streams: each node's current connection and where its messages go.
/// A node that reconnects replaces its old stream; the old one's messages and its
/// closing are ignored from then on.
#[derive(Default)]
pub struct Streams {
    by_node: HashMap<NodeId, (u64, AgentTx)>,
    /// Multi-node launches between the streams' nodes.
    launches: super::launches::Launches,
    /// Streams ended by a reload of the core: what they still send counts for
    /// nothing (their agents connect again and say hello to the reloaded core).
    ended: std::collections::HashSet<u64>,
}

impl Streams {
    /// Sends launch frames to their nodes now: they carry no state to make durable.
    fn relay(&self, frames: Vec<(NodeId, pb::LaunchFrame)>) {
        for (node, frame) in frames {
            if let Some(tx) = self.get(&node) {
                tx.send(pb::CoordinatorMessage { launches: vec![frame], ..Default::default() });
            }
        }
    }

    /// Where `node`'s messages go, if it has a stream.
    pub fn get(&self, node: &NodeId) -> Option<&AgentTx> {
        self.by_node.get(node).map(|(_, tx)| tx)
    }

    /// Whether `conn` is not `node`'s current stream (a newer one replaced it, or
    /// a reload ended it).
    fn is_stale(&self, node: &NodeId, conn: u64) -> bool {
        self.ended.contains(&conn) || self.by_node.get(node).is_some_and(|(current, _)| *current != conn)
    }

    /// Ends every stream (dropping its sender closes it, and its agent connects
    /// again): after a reload, the core has heard no hello from anyone.
    pub fn end_all(&mut self) {
        for (_, (conn, _)) in self.by_node.drain() {
            self.ended.insert(conn);
        }
    }
}

/// What an event did that the loop counts.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Handled {
    pub heartbeat: bool,
}

/// Hands `event` to the core.
pub fn handle(
    core: &mut Core,
    now: Instant,
    event: Input,
    streams: &mut Streams,
    out: &mut Outbox,
    then: &mut Vec<FollowUp>,
) -> Handled {
    let mut handled = Handled::default();
    match event {
        Input::Call(call) => then.push(call(core, now, out)),
        Input::Connected { node, conn, hello, tx } => {
            let late = hello.finished.len();
            let held = crate::core::Held {
                running: hello.running,
                queued: hello.queued,
                finished: hello.finished,
                address: hello.address,
            };
            match core.on_hello(now, &node, held, hello.start_task_running, out) {
                Ok(()) => {
                    // Only a stream the core accepted may write logs.
                    core.on_logs(&node, hello.logs, out);
                    if let Some(why) = &hello.start_task_failed {
                        core.on_start_task_done(now, &node, false, why, out);
                    }
                    tracing::info!(node_id = %node, "agent connected");
                    streams.by_node.insert(node, (conn, tx));
                }
                Err(refused) => {
                    ignored_late_results(&node, late);
                    tracing::info!(node_id = %node, reason = %refused.0, "agent must register again");
                    let msg = pb::CoordinatorMessage { reregister: true, reason: refused.0, ..Default::default() };
                    // Said once the batch is durable, like every other message.
                    then.push(Box::new(move |_| {
                        tx.send(msg);
                    }));
                }
            }
        }
        Input::FromAgent { node, conn, mut update } => {
            if let Some(room) = update.room.take() {
                then.push(Box::new(move |_| drop(room)));
            }
            if streams.is_stale(&node, conn) {
                return handled;
            }
            if !core.on_node_message(now, &node, out) {
                ignored_late_results(&node, update.finished.len());
                return handled;
            }
            if let Some((cpu, mem)) = update.heartbeat {
                handled.heartbeat = true;
                core.on_heartbeat(now, &node, cpu, mem);
            }
            if let Some((ok, message)) = update.start_task_done {
                core.on_start_task_done(now, &node, ok, &message, out);
            }
            core.on_logs(&node, update.logs, out);
            // Before the results: an attempt may start and end within one message.
            core.on_tasks_started(&node, update.started);
            // Launches are opened before the results end an attempt, so one that
            // ends in the same message closes nothing it opened.
            if !update.launches.is_empty() {
                let frames = streams.launches.route(core, &node, update.launches);
                streams.relay(frames);
            }
            if !update.finished.is_empty() {
                core.on_task_results(now, &node, update.finished, out);
            }
        }
        Input::Disconnected { node, conn } => {
            streams.ended.remove(&conn);
            if streams.by_node.get(&node).is_some_and(|(current, _)| *current == conn) {
                streams.by_node.remove(&node);
                let frames = streams.launches.forget(&node);
                streams.relay(frames);
                core.on_disconnected(&node);
                tracing::info!(node_id = %node, "agent disconnected");
            }
        }
        Input::NodeExited { node } => core.on_node_exited(now, &node, out),
        Input::LaunchFailed { node, error } => core.on_launch_failed(now, &node, &error, out),
        Input::RemoveFailed { node, pool, error } => core.on_remove_failed(&node, &pool, &error),
        // The event loop reloads the core for it before it reaches here.
        Input::StoreRefused { .. } => {}
    }
    handled
}

/// Results from a node that was declared lost count for nothing: its tasks were
/// requeued when it was lost, and their new attempts own them now.
fn ignored_late_results(node: &NodeId, results: usize) {
    if results > 0 {
        tracing::info!(node_id = %node, results, "ignoring a late result: the node was declared lost and its tasks requeued");
    }
}

#[cfg(test)]
mod tests;
