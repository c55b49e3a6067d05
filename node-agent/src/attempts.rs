//! The agent's core: the attempts it holds (running, queued for a slot, finished and
//! not yet acknowledged) and its slots, as a plain state machine. Each entry point
//! changes the state and writes what the shell must do into an outbox of
//! [`Effect`]s (start a runner, cancel one, report a result, clear a task's
//! directory); it never touches a process, a socket or a file, so reconnects,
//! acknowledgements, abandonment and fencing are tested here without any.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;

use corral_proto::v1 as pb;
use corral_types::ids::{AttemptRef, JobId, TaskKey};

/// The attempt a wire reference names (the shell converts at the stream).
pub fn attempt_of(t: &pb::TaskRef) -> AttemptRef {
    AttemptRef { task: TaskKey { job: JobId(t.job_id), index: t.index }, attempt: t.attempt }
}

/// An attempt as the wire names it.
pub fn task_ref(a: AttemptRef) -> pb::TaskRef {
    pb::TaskRef { job_id: a.task.job.0, index: a.task.index, attempt: a.attempt }
}

/// A result the coordinator has not acknowledged yet, and where its output is.
#[derive(Debug, Clone, PartialEq)]
pub struct Unacked {
    pub result: pb::TaskResult,
    pub dir: PathBuf,
    pub max_output: u64,
    /// A multi-node task's rank here, whose output it is.
    pub rank: u32,
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Run this attempt (its slots are taken).
    Start(Box<pb::Assignment>, AttemptRef),
    /// Stop this running attempt.
    Cancel(AttemptRef),
    /// Report this result; `shipped` says whether all its output already went out
    /// on the current stream (else it is shipped again from its directory first).
    Report(Unacked, bool),
    /// The task's directory is no longer needed.
    RemoveDir(PathBuf),
}

struct Running {
    slots: u32,
    /// Killed because this agent registered anew: its slots stay taken until the
    /// process is gone, and its result is nobody's business.
    abandoned: bool,
}

/// Every attempt the agent holds, and its slots.
pub struct Attempts {
    slots: u32,
    used: u32,
    running: HashMap<AttemptRef, Running>,
    /// Assigned, waiting for a free slot (short tasks are sent ahead).
    queue: VecDeque<(pb::Assignment, AttemptRef)>,
    /// Results sent (or to send) and not yet acknowledged as durable.
    unacked: HashMap<AttemptRef, Unacked>,
}

impl Attempts {
    pub fn new(slots: u32) -> Self {
        Attempts { slots, used: 0, running: HashMap::new(), queue: VecDeque::new(), unacked: HashMap::new() }
    }

    /// Every attempt this agent answers for (running, queued, or finished and not
    /// acknowledged), for the hello that opens a stream. Abandoned ones are not.
    pub fn held(&self) -> Vec<AttemptRef> {
        let mut held: Vec<AttemptRef> = self
            .running
            .iter()
            .filter(|(_, r)| !r.abandoned)
            .map(|(k, _)| *k)
            .chain(self.queue.iter().map(|(_, t)| *t))
            .chain(self.unacked.keys().copied())
            .collect();
        held.sort();
        held
    }

    /// The attempts queued for a slot (a subset of [`Attempts::held`]).
    pub fn queued(&self) -> Vec<AttemptRef> {
        self.queue.iter().map(|(_, t)| *t).collect()
    }

    /// A new stream opened: every result not yet acknowledged is reported again
    /// (its output shipped again first).
    pub fn on_connected(&self, out: &mut Vec<Effect>) {
        let mut unacked: Vec<&Unacked> = self.unacked.values().collect();
        unacked.sort_by_key(|u| u.result.task.as_ref().map(attempt_of));
        out.extend(unacked.into_iter().map(|u| Effect::Report(u.clone(), false)));
    }

    /// The coordinator has made these results durable: they are forgotten.
    pub fn on_ack(&mut self, acks: &[AttemptRef], out: &mut Vec<Effect>) {
        for ack in acks {
            if let Some(u) = self.unacked.remove(ack) {
                out.push(Effect::RemoveDir(u.dir));
            }
        }
    }

    /// Kill these attempts: a running one is cancelled (its result still comes), a
    /// queued one never starts.
    pub fn on_kill(&mut self, kills: &[AttemptRef], out: &mut Vec<Effect>) {
        for &key in kills {
            if self.running.contains_key(&key) {
                out.push(Effect::Cancel(key));
            } else {
                self.queue.retain(|(_, t)| *t != key);
            }
        }
    }

    /// New work. An attempt it already holds (sent again after a reconnect) is
    /// not taken twice.
    pub fn on_assign(&mut self, assignments: Vec<pb::Assignment>, out: &mut Vec<Effect>) {
        for assignment in assignments {
            let Some(task) = &assignment.task else { continue };
            let key = attempt_of(task);
            let known = self.running.contains_key(&key)
                || self.unacked.contains_key(&key)
                || self.queue.iter().any(|(_, t)| *t == key);
            if !known {
                self.queue.push_back((assignment, key));
            }
        }
        self.start_queued(out);
    }

    /// A runner ended. Its slots are free again; its result is kept until
    /// acknowledged and reported, with `shipped` as the runner says, unless the
    /// attempt was abandoned (then only its directory goes).
    pub fn on_finished(
        &mut self,
        result: pb::TaskResult,
        dir: PathBuf,
        max_output: u64,
        rank: u32,
        shipped: bool,
        out: &mut Vec<Effect>,
    ) {
        let Some(task) = &result.task else { return };
        let key = attempt_of(task);
        let Some(r) = self.running.remove(&key) else { return };
        self.used = self.used.saturating_sub(r.slots);
        if r.abandoned {
            out.push(Effect::RemoveDir(dir));
        } else {
            let unacked = Unacked { result, dir, max_output, rank };
            self.unacked.insert(key, unacked.clone());
            out.push(Effect::Report(unacked, shipped));
        }
        self.start_queued(out);
    }

    /// Starts queued attempts while slots are free (one bigger than the node
    /// still runs, alone).
    fn start_queued(&mut self, out: &mut Vec<Effect>) {
        while let Some((a, _)) = self.queue.front() {
            let slots = a.slots.max(1);
            if self.used > 0 && self.used + slots > self.slots {
                break;
            }
            let Some((assignment, task)) = self.queue.pop_front() else { break };
            self.used += slots;
            self.running.insert(task, Running { slots, abandoned: false });
            out.push(Effect::Start(Box::new(assignment), task));
        }
    }

    /// Forgets this registration (the coordinator no longer knows the node, or the
    /// agent stops): every running attempt is cancelled and abandoned (it keeps its
    /// slots until its process is gone), the queue is dropped, and unacknowledged
    /// results are forgotten.
    pub fn abandon_all(&mut self, out: &mut Vec<Effect>) {
        let mut keys: Vec<AttemptRef> = self.running.keys().copied().collect();
        keys.sort();
        for key in keys {
            if let Some(r) = self.running.get_mut(&key) {
                if !r.abandoned {
                    r.abandoned = true;
                    out.push(Effect::Cancel(key));
                }
            }
        }
        self.queue.clear();
        let mut gone: Vec<Unacked> = self.unacked.drain().map(|(_, u)| u).collect();
        gone.sort_by_key(|u| u.dir.clone());
        out.extend(gone.into_iter().map(|u| Effect::RemoveDir(u.dir)));
    }

    /// Whether any attempt's process may still be alive.
    pub fn any_running(&self) -> bool {
        !self.running.is_empty()
    }

    /// Slots taken by running attempts (abandoned ones included, until they end).
    pub fn used(&self) -> u32 {
        self.used
    }

    /// Checks the invariants: slots used are the running attempts' slots, and no
    /// attempt is in two places.
    pub fn sanity_check(&self) {
        let slots: u32 = self.running.values().map(|r| r.slots).sum();
        assert_eq!(self.used, slots, "slots used are the running attempts' slots");
        for &(_, key) in &self.queue {
            assert!(!self.running.contains_key(&key) && !self.unacked.contains_key(&key), "{key:?} is in two places");
        }
        for key in self.unacked.keys() {
            assert!(!self.running.contains_key(key), "{key:?} is both running and finished");
        }
    }
}

#[cfg(test)]
mod tests;
