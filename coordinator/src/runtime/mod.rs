//! The runtime's leaf: what reaches the event loop ([`Input`]) and the [`Handle`]
//! that every other part (gRPC and HTTP handlers, providers, callbacks) reaches it
//! through. It knows the core and the store's follow-ups, nothing of tonic or axum:
//! its refusals are a [`RuntimeError`], which each edge turns into its own status.
//!
//! - [`dispatch`]: one event in, the core's entry points called (pure, unit-tested);
//! - [`event_loop`]: the one owner of the core, and how an outbox is carried out.
//!
//! The loop never waits on a peer. Its input channel is unbounded on purpose, and
//! bounded where it is fed: a client call waits for its answer before it sends
//! another (and connections and their streams are capped), an agent stream sends
//! one message per gRPC message it reads (at most 4 MiB, log bytes under
//! [`LogRoom`]). Each agent stream's channel is bounded ([`AGENT_QUEUE`]) and never
//! waited on: [`AgentTx`] ends a stream that stops reading.

use std::sync::Arc;
use std::time::{Duration, Instant};

use corral_proto::v1 as pb;
use tokio::sync::{mpsc, oneshot, watch, Notify, OwnedSemaphorePermit};

use crate::auth::{Auth, Principal};
use crate::core::{Core, Outbox, StoreOp};
use crate::model::{AttemptRef, LogChunk, NodeId, PoolName, TaskResult};
use crate::store::FollowUp;

pub mod dispatch;
pub mod event_loop;
pub mod launches;

/// A call into the core; it returns what to do once its changes are durable.
pub type Call = Box<dyn FnOnce(&mut Core, Instant, &mut Outbox) -> FollowUp + Send>;
/// How many messages one agent stream may fall behind before it is ended.
pub const AGENT_QUEUE: usize = 1024;

/// Where the event loop sends one agent stream's messages. It never waits: a
/// stream that is [`AGENT_QUEUE`] messages behind (an agent that stopped reading
/// what it is sent) is ended with RESOURCE_EXHAUSTED instead of queueing more, and
/// the agent's next hello reconciles what it missed.
#[derive(Clone)]
pub struct AgentTx {
    tx: mpsc::Sender<pb::CoordinatorMessage>,
    behind: Arc<Notify>,
}

/// The stream's end of an [`AgentTx`].
pub struct AgentRx {
    pub messages: mpsc::Receiver<pb::CoordinatorMessage>,
    /// Notified once the stream fell too far behind.
    pub behind: Arc<Notify>,
}

impl AgentTx {
    pub fn channel() -> (AgentTx, AgentRx) {
        let (tx, messages) = mpsc::channel(AGENT_QUEUE);
        let behind = Arc::new(Notify::new());
        (AgentTx { tx, behind: behind.clone() }, AgentRx { messages, behind })
    }

    /// Queues `msg`, or ends the stream if it is too far behind (a closed
    /// stream takes nothing).
    pub fn send(&self, msg: pb::CoordinatorMessage) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(msg) {
            self.behind.notify_one();
        }
    }
}

/// Everything that reaches the event loop.
pub enum Input {
    Call(Call),
    /// An agent stream opened with its hello.
    Connected {
        node: NodeId,
        conn: u64,
        hello: Hello,
        tx: AgentTx,
    },
    FromAgent {
        node: NodeId,
        conn: u64,
        update: AgentUpdate,
    },
    Disconnected {
        node: NodeId,
        conn: u64,
    },
    /// A local agent process exited.
    NodeExited {
        node: NodeId,
    },
    LaunchFailed {
        node: NodeId,
        error: String,
    },
    /// The provider could not remove a node's machine or container.
    RemoveFailed {
        node: NodeId,
        pool: PoolName,
        error: String,
    },
    /// The store refused a batch that the core of `generation` made: that state
    /// holds a change that was not saved, so it is reloaded from the store.
    StoreRefused {
        generation: u64,
    },
}

/// The opening message of an agent stream, validated.
pub struct Hello {
    pub start_task_running: bool,
    pub start_task_failed: Option<String>,
    pub running: Vec<AttemptRef>,
    /// Of `running`, those queued on the agent for a slot.
    pub queued: Vec<AttemptRef>,
    pub finished: Vec<TaskResult>,
    pub logs: Vec<LogChunk>,
    /// The address the agent connects from (a multi-node task's `CORRAL_HOSTS`).
    pub address: Option<String>,
}

/// One later message of an agent stream, validated.
#[derive(Default)]
pub struct AgentUpdate {
    /// The start task ended: whether it succeeded, and what it said.
    pub start_task_done: Option<(bool, String)>,
    pub heartbeat: Option<(f32, u64)>,
    pub logs: Vec<LogChunk>,
    /// Attempts sent ahead that started, and when (ms since the epoch).
    pub started: Vec<(AttemptRef, u64)>,
    pub finished: Vec<TaskResult>,
    /// The room its logs take in memory, given back once they are written.
    pub room: Option<LogRoom>,
    /// Frames of multi-node launches, relayed at once ([`launches`]).
    pub launches: Vec<pb::LaunchFrame>,
}

/// Memory that log chunks on their way to the store hold: of all agents' streams,
/// and of this stream's. Dropped (given back) once the chunks are durable.
pub struct LogRoom {
    pub all: OwnedSemaphorePermit,
    pub stream: OwnedSemaphorePermit,
}

/// Why the event loop did not carry out a call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    #[error("the coordinator is shutting down; try again when it is back")]
    ShuttingDown,
    /// The store cannot write (a full disk). `in_flight`: the change was taken on
    /// and may still be saved.
    #[error("store cannot write: {cause}; {}", if *in_flight {
        "this change may still be saved when it can write again; retry with the same --idempotency-key to be sure"
    } else {
        "nothing was changed; try again when it can"
    })]
    StoreCannotWrite { cause: String, in_flight: bool },
    /// The store refused the batch the change was in.
    #[error("{0}")]
    NotSaved(String),
    /// The caller's token was revoked or expired before the change ran.
    #[error("{}", crate::auth::BAD_TOKEN)]
    Revoked,
}

/// How long a change waits for a store that cannot write before its caller is
/// told so.
pub const STORE_WAIT: Duration = Duration::from_secs(5);

/// The way into the event loop.
#[derive(Clone)]
pub struct Handle {
    events: mpsc::UnboundedSender<Input>,
    /// Why the store cannot write now (a full disk), while it cannot.
    store_failing: watch::Receiver<Option<String>>,
    /// Whether a caller's token still holds when its change runs.
    auth: Arc<Auth>,
}

impl Handle {
    pub fn new(
        events: mpsc::UnboundedSender<Input>,
        store_failing: watch::Receiver<Option<String>>,
        auth: Arc<Auth>,
    ) -> Self {
        Handle { events, store_failing, auth }
    }

    pub fn send(&self, event: Input) -> Result<(), RuntimeError> {
        self.events.send(event).map_err(|_| RuntimeError::ShuttingDown)
    }

    /// Runs `f` on the core; the answer comes once whatever `f` changed, and every
    /// change made before it, is durable. So a client never sees a state the store
    /// does not hold yet (a job shown completed, then read from the feed or the
    /// attempts without its last events). While the store cannot write, a call
    /// that changed nothing answers at once with what the core has.
    ///
    /// While the store cannot write, a change that has waited [`STORE_WAIT`] is
    /// answered [`RuntimeError::StoreCannotWrite`]: it may still be saved once the
    /// store can write again (which is what `--idempotency-key` is for).
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Core, Instant, &mut Outbox) -> T + Send + 'static,
    ) -> Result<T, RuntimeError> {
        let settle = self.store_failing.borrow().is_none();
        let (tx, rx) = oneshot::channel::<Result<T, String>>();
        let call: Call = Box::new(move |core, now, out| {
            let before = out.store.len();
            let value = f(core, now, out);
            if out.store.len() == before && !settle {
                let _ = tx.send(Ok(value));
                return Box::new(|_| {});
            }
            Box::new(move |stored| {
                let _ = tx.send(stored.clone().map(|()| value));
            })
        });
        let started = tokio::time::Instant::now();
        self.send(Input::Call(call))?;
        tokio::pin!(rx);
        let answered = |answer: Result<Result<T, String>, _>| match answer {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(refused)) => Err(RuntimeError::NotSaved(refused)),
            Err(_) => Err(RuntimeError::ShuttingDown),
        };
        let mut failing = self.store_failing.clone();
        let mut watching = true;
        loop {
            // While the store cannot write, wait only until STORE_WAIT has passed.
            let deadline = failing.borrow_and_update().is_some().then_some(started + STORE_WAIT);
            let give_up = async move {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                answer = &mut rx => return answered(answer),
                _ = give_up => {
                    if let Some(cause) = self.store_failing.borrow().clone() {
                        return Err(RuntimeError::StoreCannotWrite { cause, in_flight: true });
                    }
                }
                changed = failing.changed(), if watching => watching = changed.is_ok(),
            }
        }
    }

    /// [`Handle::call`] for a change `who` asked for: the events it makes name
    /// them, and it is refused if their token was revoked (or expired) before it
    /// ran (a revocation runs on the event loop too, so none slips past it).
    pub async fn call_by<T: Send + 'static>(
        &self,
        who: Principal,
        f: impl FnOnce(&mut Core, Instant, &mut Outbox) -> T + Send + 'static,
    ) -> Result<T, RuntimeError> {
        // While the store cannot write, no change is taken on (and nothing changes).
        if let Some(cause) = self.store_failing.borrow().clone() {
            return Err(RuntimeError::StoreCannotWrite { cause, in_flight: false });
        }
        let auth = self.auth.clone();
        let done = self
            .call(move |core, now, out| {
                if !auth.still_valid(&who, crate::auth::now_ms()) {
                    return None;
                }
                let before = out.store.len();
                out.store.push(StoreOp::Actor(Some(who.name())));
                let value = f(core, now, out);
                if out.store.len() == before + 1 {
                    // Nothing changed: no marker, and no commit for it.
                    out.store.pop();
                } else {
                    out.store.push(StoreOp::Actor(None));
                }
                Some(value)
            })
            .await?;
        done.ok_or(RuntimeError::Revoked)
    }
}
