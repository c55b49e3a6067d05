//! The writer thread: group commit of the core's batches, and what it does when a
//! write fails (a full disk, or any failure of the store's own, is waited out; a
//! batch with a value the store cannot hold is refused whole, its callers told, and
//! the event loop told to reload its state without it).

use std::sync::mpsc;
use std::time::Duration;

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
    let Err(err) = apply_retrying(store, ops, health) else { return vec![Ok(()); batches.len()] };
    tracing::error!(error = %err, "a change cannot be stored; writing the batches one at a time");
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
/// meanwhile; returns only a refusal of a value ([`is_refusal`]).
fn apply_retrying(store: &mut dyn Durable, ops: &[StoreOp], health: &watch::Sender<Option<String>>) -> Result<()> {
    let mut delay = Duration::from_millis(50);
    loop {
        match store.apply(ops) {
            Ok(()) => {
                health.send_if_modified(|h| h.take().is_some());
                return Ok(());
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
                let mut last_commit = std::time::Instant::now() - BUSY_WITHIN;
                let mut poisoned: Option<u64> = None;
                while let Ok(first) = rx.recv() {
                    let arrived = std::time::Instant::now();
                    let busy = last_commit.elapsed() < BUSY_WITHIN;
                    let mut batches = vec![first];
                    loop {
                        while batches.len() < MAX_BATCHES {
                            let Ok(more) = rx.try_recv() else { break };
                            batches.push(more);
                        }
                        // Under load, a commit of a few changes waits a moment for
                        // more: one fsync then covers the results of several tasks.
                        // Plenty already waiting (the store is the bottleneck): no wait.
                        let small = batches.iter().map(|b| b.ops.len()).sum::<usize>() < GATHER_BELOW_OPS;
                        if !busy || !small || batches.len() >= MAX_BATCHES {
                            break;
                        }
                        let Some(left) = (arrived + GATHER).checked_duration_since(std::time::Instant::now()) else {
                            break;
                        };
                        match rx.recv_timeout(left) {
                            Ok(more) => batches.push(more),
                            Err(_) => break,
                        }
                    }
                    // Batches made before the core undid a refused change are refused
                    // unwritten: they were made from a state that held it.
                    let undone: Vec<bool> =
                        batches.iter().map(|b| poisoned.is_some_and(|p| b.generation <= p)).collect();
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
                    let mut written = vec![Ok(()); live.len()];
                    if !ops.is_empty() {
                        let started = std::time::Instant::now();
                        written = write_durably(store.as_mut(), &ops, &live, &mut poisoned, &health, &mut refused);
                        let took = started.elapsed();
                        let events = store.take_committed();
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
                        committed(Committed { ops, events: &events, last_event: store.last_event(), took });
                        last_commit = std::time::Instant::now();
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
