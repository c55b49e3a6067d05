//! The writer thread: group commit of the core's batches (on a backend that
//! pipelines, the next group is made and sent while the last one commits; each
//! group's follow-ups wait for its own commit), and what it does when a
//! write fails (a full disk, or any failure of the store's own, is waited out; a
//! batch with a value the store cannot hold is refused whole, its callers told, and
//! the event loop told to reload its state without it).

use std::sync::mpsc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::Durable;
use crate::core::StoreOp;
use crate::error::Result;

/// Writes the ops of several batches (`batches` says, in order, the generation of
/// each and how many ops it has) before returning, and says per batch whether it
/// was stored. Nothing is acknowledged until it is durable, so a failure that may
/// pass (disk full, I/O error, a lock) is retried, loudly, for as long as it takes.
/// A failure that will not pass (a value the store cannot hold) must not stop every
/// other change: the batches are then written one by one, and a batch the store
/// refuses is not written at all (a transaction); its callers are told, and so is
/// the event loop (`refused`), which undoes it in memory by reloading its state.
/// Every later batch of that generation was made from a state that holds the
/// refused change, so it is refused too ([`UNDONE`]).
fn write_durably(
    store: &mut dyn Durable,
    ops: &[StoreOp],
    batches: &[(u64, usize)],
    poisoned: &mut Option<u64>,
    health: &watch::Sender<Option<String>>,
    refused: &mut dyn FnMut(u64),
) -> Vec<Stored> {
    // A batch made before a refused one was undone is never written with the rest.
    let stale = batches.iter().any(|(generation, _)| poisoned.is_some_and(|p| *generation <= p));
    if !stale {
        let Err(err) = apply_retrying(store, ops, health) else { return vec![Ok(()); batches.len()] };
        if is_fenced(&err) {
            // Nothing this coordinator writes goes in any more: it is stepping down.
            return vec![Err(format!("not stored: {err}")); batches.len()];
        }
        tracing::error!(error = %err, "a change cannot be stored; writing the batches one at a time");
    }
    let mut results = Vec::with_capacity(batches.len());
    let mut at = 0;
    for &(generation, size) in batches {
        let batch = &ops[at..at + size];
        at += size;
        if poisoned.is_some_and(|p| generation <= p) {
            results.push(Err(UNDONE.into()));
            continue;
        }
        match apply_retrying(store, batch, health) {
            Ok(()) => results.push(Ok(())),
            Err(err) if is_fenced(&err) => results.push(Err(format!("not stored: {err}"))),
            Err(err) => {
                tracing::error!(error = %err, ops = ?batch, "the store refused a change: nothing of its batch was written, and the coordinator reloads its state without it");
                *poisoned = Some(generation);
                refused(generation);
                results.push(Err(format!("the store refused this change ({err}); nothing of it was saved")));
            }
        }
    }
    results
}

/// What the callers of a batch made after a refused one (and before the state
/// was reloaded) are told.
const UNDONE: &str =
    "the coordinator undid a change the store refused just before this one, and this one with it; nothing of it was saved, try again";

/// Applies `ops`, retrying failures that may pass (a full disk, a read-only or
/// unreadable database) for as long as they last, and saying so in `health`
/// meanwhile; returns only a refusal of a value ([`is_refusal`]) or the end of
/// this coordinator's lease ([`is_fenced`]).
fn apply_retrying(store: &mut dyn Durable, ops: &[StoreOp], health: &watch::Sender<Option<String>>) -> Result<()> {
    let mut delay = Duration::from_millis(50);
    loop {
        match store.apply(ops) {
            Ok(()) => {
                health.send_if_modified(|h| h.take().is_some());
                return Ok(());
            }
            Err(err) if is_fenced(&err) => {
                let cause = err.to_string();
                health.send_if_modified(|h| h.replace(cause.clone()).as_ref() != Some(&cause));
                return Err(err);
            }
            Err(err) if !is_refusal(&err) => {
                tracing::error!(error = %err, "could not write to the store; retrying in {delay:?} (is the disk full, or the database read-only or damaged?)");
                let cause = err.to_string();
                health.send_if_modified(|h| h.replace(cause.clone()).as_ref() != Some(&cause));
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(err) => return Err(err),
        }
    }
}

/// Whether the store refused a value of the batch (one it cannot hold, or a
/// duplicate where a key is unique): that batch never goes in, whatever is retried,
/// and the core must undo it. Any other failure is the store's own (a full disk, a
/// read-only or damaged file, a lock) and is waited out, never undone by a reload:
/// a store that cannot write at all would otherwise reload the state on every round.
fn is_refusal(err: &crate::error::Error) -> bool {
    matches!(err, crate::error::Error::Store(super::StoreError::Refused(_)))
}

/// Whether another coordinator took the lease: nothing is written any more.
fn is_fenced(err: &crate::error::Error) -> bool {
    matches!(err, crate::error::Error::Store(super::StoreError::Fenced(_)))
}

/// Under load, a group commit of fewer than [`GATHER_BELOW_OPS`] changes waits up
/// to this long after its first batch arrived for more: a couple of milliseconds buys
/// one fsync for many changes (DESIGN: group commit "every few milliseconds").
const GATHER: Duration = Duration::from_millis(2);
const GATHER_BELOW_OPS: usize = 64;

/// The most batches one commit takes.
const MAX_BATCHES: usize = 256;

/// A commit that ended this recently means the store is busy (with none, a change
/// is written at once).
const BUSY_WITHIN: Duration = Duration::from_millis(10);

/// Whether a batch was stored, or why not.
pub type Stored = std::result::Result<(), String>;

/// Something to do once a batch is durable (or was refused).
pub type FollowUp = Box<dyn FnOnce(&Stored) + Send>;

/// A group of changes and what to do once they are durable.
pub struct Batch {
    pub ops: Vec<StoreOp>,
    pub then: Vec<FollowUp>,
    /// Which state of the core made it: bumped each time the core is reloaded
    /// after a refused batch (see [`write_durably`]).
    pub generation: u64,
}

/// What the writer made durable in one commit, for those who watch it (the event
/// feed, the metrics).
pub struct Committed<'a> {
    pub ops: &'a [StoreOp],
    /// The events recorded with them, in order.
    pub events: &'a [crate::events::Event],
    /// The id of the newest event recorded, after this commit.
    pub last_event: u64,
    /// How long writing and committing took.
    pub took: Duration,
}

/// Batches taken from the queue for one transaction.
struct Group {
    batches: Vec<Batch>,
    /// Per batch: made before the core undid a refused change, so refused
    /// unwritten (it was made from a state that held that change).
    undone: Vec<bool>,
    /// The generation and size of each batch that is written, in order.
    live: Vec<(u64, usize)>,
    /// Their ops, in order.
    ops: Vec<StoreOp>,
    /// Sent to the store ([`Durable::send`]), its answer not read yet.
    sent: bool,
    started: Instant,
}

impl Group {
    fn of(mut batches: Vec<Batch>, poisoned: Option<u64>) -> Group {
        let undone: Vec<bool> = batches.iter().map(|b| poisoned.is_some_and(|p| b.generation <= p)).collect();
        let live: Vec<(u64, usize)> = batches
            .iter()
            .zip(&undone)
            .filter(|(_, undone)| !**undone)
            .map(|(b, _)| (b.generation, b.ops.len()))
            .collect();
        // Sized once: ops are large, and growing the vector moves them all.
        let mut ops: Vec<StoreOp> = Vec::with_capacity(live.iter().map(|(_, n)| n).sum());
        for (batch, _) in batches.iter_mut().zip(&undone).filter(|(_, undone)| !**undone) {
            ops.append(&mut batch.ops);
        }
        Group { batches, undone, live, ops, sent: false, started: Instant::now() }
    }
}

fn ops_in(batches: &[Batch]) -> usize {
    batches.iter().map(|b| b.ops.len()).sum()
}

/// Takes the batches for the next transaction: those `carried` over, and what
/// waits in the queue (with `block`, the first is waited for; under load, a few
/// changes wait [`GATHER`] for more). `None` once the queue is closed and empty.
fn gather(rx: &mpsc::Receiver<Batch>, mut batches: Vec<Batch>, block: bool, busy: bool) -> Option<Vec<Batch>> {
    if batches.is_empty() {
        let first = match block {
            true => rx.recv().ok()?,
            false => match rx.try_recv() {
                Ok(first) => first,
                Err(mpsc::TryRecvError::Empty) => return Some(Vec::new()),
                Err(mpsc::TryRecvError::Disconnected) => return None,
            },
        };
        batches.push(first);
    }
    let arrived = Instant::now();
    loop {
        while batches.len() < MAX_BATCHES {
            let Ok(more) = rx.try_recv() else { break };
            batches.push(more);
        }
        // Under load, a commit of a few changes waits a moment for more: one
        // fsync then covers the results of several tasks. Plenty already waiting
        // (the store is the bottleneck), or a commit in flight: no wait.
        if !block || !busy || ops_in(&batches) >= GATHER_BELOW_OPS || batches.len() >= MAX_BATCHES {
            return Some(batches);
        }
        let Some(left) = (arrived + GATHER).checked_duration_since(Instant::now()) else { return Some(batches) };
        match rx.recv_timeout(left) {
            Ok(more) => batches.push(more),
            Err(_) => return Some(batches),
        }
    }
}

/// The writer thread's state.
struct Thread<'a> {
    store: &'a mut dyn Durable,
    health: &'a watch::Sender<Option<String>>,
    committed: &'a mut dyn FnMut(Committed),
    refused: &'a mut dyn FnMut(u64),
    /// The newest generation whose batch the store refused.
    poisoned: Option<u64>,
    last_commit: Instant,
}

impl Thread<'_> {
    /// Whether a commit ended recently (the store is busy).
    fn busy(&self) -> bool {
        self.last_commit.elapsed() < BUSY_WITHIN
    }

    /// Makes a group durable (reading its answer if it was sent, else writing
    /// it), tells those who watch, and runs its batches' follow-ups. Returns
    /// false when a sent group's commit failed (so did every group sent after it).
    fn finish(&mut self, group: Group) -> bool {
        let Group { batches, undone, live, ops, sent, started } = group;
        let mut pipeline_held = true;
        let mut written = vec![Ok(()); live.len()];
        if !ops.is_empty() {
            let stored_ahead = sent
                && match self.store.settle() {
                    Ok(()) => true,
                    Err(err) => {
                        tracing::warn!(error = %err, "a group of changes sent ahead did not commit; writing it again");
                        pipeline_held = false;
                        false
                    }
                };
            if stored_ahead {
                self.health.send_if_modified(|h| h.take().is_some());
            } else {
                written =
                    write_durably(&mut *self.store, &ops, &live, &mut self.poisoned, self.health, &mut *self.refused);
            }
            let took = started.elapsed();
            let events = self.store.take_committed();
            // Only what was written is reported (the metrics count it).
            let kept: Vec<StoreOp>;
            let ops = if written.iter().all(Result::is_ok) {
                &ops[..]
            } else {
                let mut at = 0;
                let mut parts = Vec::new();
                for ((_, size), result) in live.iter().zip(&written) {
                    if result.is_ok() {
                        parts.extend(ops[at..at + size].iter().cloned());
                    }
                    at += size;
                }
                kept = parts;
                &kept[..]
            };
            (self.committed)(Committed { ops, events: &events, last_event: self.store.last_event(), took });
            self.last_commit = Instant::now();
        }
        let mut written = written.into_iter();
        let stored: Vec<Stored> = undone
            .iter()
            .map(|undone| match undone {
                true => Err(UNDONE.to_string()),
                false => written.next().unwrap_or(Ok(())),
            })
            .collect();
        for (batch, stored) in batches.into_iter().zip(&stored) {
            for f in batch.then {
                f(stored);
            }
        }
        pipeline_held
    }
}

/// The handle to the writer thread.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Batch>,
}

impl Writer {
    /// Starts the writer thread. It ends when every `Writer` clone is dropped, after
    /// writing what it was given. `committed` hears of each commit before the
    /// batches' follow-ups run; `refused` of each generation whose batch the store
    /// refused.
    pub fn spawn(
        mut store: Box<dyn Durable>,
        health: watch::Sender<Option<String>>,
        mut committed: impl FnMut(Committed) + Send + 'static,
        mut refused: impl FnMut(u64) + Send + 'static,
    ) -> (Writer, std::thread::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel::<Batch>();
        let handle = std::thread::Builder::new()
            .name("corral-store".into())
            .spawn(move || {
                let mut writer = Thread {
                    store: store.as_mut(),
                    health: &health,
                    committed: &mut committed,
                    refused: &mut refused,
                    poisoned: None,
                    last_commit: Instant::now() - BUSY_WITHIN,
                };
                let pipelines = writer.store.pipelines();
                // A group sent whose commit is not answered yet: while the database
                // commits it, the next group is gathered and sent behind it.
                let mut in_flight: Option<Group> = None;
                let mut carried = Vec::new();
                loop {
                    let Some(batches) = gather(&rx, std::mem::take(&mut carried), in_flight.is_none(), writer.busy())
                    else {
                        break;
                    };
                    // Behind a commit in flight, a few changes wait for it rather than
                    // make a transaction (and an fsync) of their own.
                    if in_flight.is_some() && ops_in(&batches) < GATHER_BELOW_OPS && batches.len() < MAX_BATCHES {
                        carried = batches;
                        if let Some(group) = in_flight.take() {
                            writer.finish(group);
                        }
                        continue;
                    }
                    let mut group = Group::of(batches, writer.poisoned);
                    if !group.ops.is_empty() && pipelines {
                        group.sent = match writer.store.send(&group.ops) {
                            Ok(()) => true,
                            Err(err) => {
                                tracing::warn!(error = %err, "could not send a group of changes; writing it once those before it are stored");
                                false
                            }
                        };
                    }
                    if let Some(older) = in_flight.take() {
                        // When the older one failed, so did this one: it goes again,
                        // after the older one is stored.
                        if !writer.finish(older) {
                            group.sent = false;
                        }
                    }
                    if group.sent {
                        in_flight = Some(group);
                    } else {
                        writer.finish(group);
                    }
                }
                // The queue is closed, and `gather` returned nothing carried.
                if let Some(group) = in_flight.take() {
                    writer.finish(group);
                }
            })
            .expect("spawning the store thread");
        (Writer { tx }, handle)
    }

    /// Queues a batch. Fails only when the writer has stopped.
    pub fn submit(&self, batch: Batch) -> bool {
        self.tx.send(batch).is_ok()
    }
}
