//! The agent-facing gRPC service (`corral.v1.Agent`): registration, and the one
//! bidirectional stream per node. Every message is validated here; a malformed one is
//! refused or dropped with a warning, never allowed to reach the core.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use corral_proto::v1 as pb;
use corral_proto::v1::agent_server::{Agent, AgentServer};
use tokio::sync::Semaphore;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{self, NodeCredential, Principal};
use crate::convert;
use crate::core::StoreOp;
use crate::model::*;
use crate::runtime::{AgentTx, AgentUpdate, Hello, Input, LogRoom};
use crate::shared::Shared;

/// Task output read from all agent streams and not yet written to disk: past it,
/// the coordinator reads no more output until some is written. Bounds what
/// output costs the coordinator's memory however fast agents send it.
const LOG_ROOM: u32 = 256 << 20;
/// The same for one stream, so one node printing gigabytes does not hold up the
/// output of the others.
const LOG_ROOM_PER_STREAM: u32 = 16 << 20;

pub fn server(shared: Arc<Shared>) -> AgentServer<AgentApi> {
    AgentServer::new(AgentApi {
        shared,
        next_conn: AtomicU64::new(1),
        log_room: Arc::new(Semaphore::new(LOG_ROOM as usize)),
    })
    .max_decoding_message_size(64 << 20)
    .max_encoding_message_size(64 << 20)
}

pub struct AgentApi {
    shared: Arc<Shared>,
    next_conn: AtomicU64,
    log_room: Arc<Semaphore>,
}

/// Waits for room for `bytes` of output in both budgets. While it waits, the
/// node is told alive every `every`: it is sending output, it is not silent.
async fn room_for(
    bytes: usize,
    all: &Arc<Semaphore>,
    stream: &Arc<Semaphore>,
    every: std::time::Duration,
    alive: impl Fn(),
) -> Option<LogRoom> {
    let n = bytes.min(LOG_ROOM_PER_STREAM as usize) as u32;
    let take = async {
        let stream = stream.clone().acquire_many_owned(n).await.ok()?;
        let all = all.clone().acquire_many_owned(n).await.ok()?;
        Some(LogRoom { all, stream })
    };
    tokio::pin!(take);
    loop {
        tokio::select! {
            room = &mut take => return room,
            _ = tokio::time::sleep(every) => alive(),
        }
    }
}

type SessionStream = Pin<Box<dyn Stream<Item = Result<pb::CoordinatorMessage, Status>> + Send>>;

/// Keeps the valid entries of a list and logs the others: one bad entry from an
/// agent must not cost the good ones.
fn valid<T, U>(node: &NodeId, what: &str, items: Vec<T>, f: impl Fn(T) -> Result<U, crate::error::Invalid>) -> Vec<U> {
    items
        .into_iter()
        .filter_map(|item| match f(item) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(node_id = %node, "dropping a malformed {what} from the agent: {e}");
                None
            }
        })
        .collect()
}

#[tonic::async_trait]
impl Agent for AgentApi {
    async fn register(&self, req: Request<pb::RegisterRequest>) -> Result<Response<pb::RegisterResponse>, Status> {
        let who = auth::caller(&req)?;
        let Principal::Token { id: token_id, name, pool: bound, .. } = who.clone() else {
            return Err(Status::permission_denied("Register needs an agent or admin token, not a node's secret"));
        };
        let reg = convert::registration(req.into_inner())?;
        if let Some(bound) = bound.filter(|b| *b != reg.pool) {
            return Err(Status::permission_denied(format!(
                "token '{name}' is bound to pool '{bound}' and cannot join pool '{}'",
                reg.pool
            )));
        }
        // The node's own secret: stored (as a hash) in the same transaction as the
        // node, and required on its stream and object calls from then on.
        let secret = auth::secret::Minted::new();
        let hash = secret.hash;
        let auth = self.shared.auth.clone();
        let (id, start_task) = self
            .shared
            .runtime
            .call_by(who.clone(), move |core, now, out| {
                let pool = reg.pool.clone();
                let id = core.register_node(now, reg, out)?;
                let cred = NodeCredential { node: id.clone(), pool, hash, token_id };
                auth.insert_node(cred.clone());
                out.store.push(StoreOp::PutNodeCredential(cred));
                let pool = core.nodes.get(&id).and_then(|n| core.pools.get(&n.record.pool));
                Ok::<_, crate::error::Error>((id, pool.and_then(|p| p.spec.start_task.clone())))
            })
            .await??;
        let config = &self.shared.core_config;
        Ok(Response::new(pb::RegisterResponse {
            node_secret: format!("{id}.{}", secret.secret),
            node_id: id.to_string(),
            start_task: start_task.unwrap_or_default(),
            heartbeat_interval_ms: config.heartbeat_interval.as_millis() as u64,
            heartbeat_timeout_ms: config.heartbeat_timeout.as_millis() as u64,
            epoch: self.shared.epoch,
            coordinators: self.shared.peers.borrow().clone(),
        }))
    }

    type SessionStream = SessionStream;

    async fn session(&self, req: Request<Streaming<pb::AgentMessage>>) -> Result<Response<SessionStream>, Status> {
        let who = auth::caller(&req)?;
        let Principal::Node { node: proven, .. } = &who else {
            return Err(Status::permission_denied("Session needs the node's own secret, from its registration"));
        };
        let proven = proven.clone();
        let peer = req.remote_addr().map(|a| a.ip().to_canonical().to_string());
        let mut inbound = req.into_inner();
        let first =
            inbound.message().await?.ok_or_else(|| Status::invalid_argument("the stream closed before its hello"))?;
        let hello = first
            .hello
            .ok_or_else(|| Status::invalid_argument("hello: the first message of a session must be a hello"))?;
        let node = convert::node_id("hello.node_id", &hello.node_id)?;
        // Nothing this stream sends counts unless it is the node it proved to be.
        if node != proven {
            return Err(Status::permission_denied(format!(
                "hello.node_id: this stream proved it is node {proven}, not {node}"
            )));
        }
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = AgentTx::channel();
        let hello = Hello {
            start_task_running: hello.start_task_running,
            start_task_failed: Some(hello.start_task_failed).filter(|f| !f.is_empty()),
            running: valid(&node, "running task", hello.running, |r| convert::attempt_ref(Some(r))),
            queued: valid(&node, "queued task", hello.queued, |r| convert::attempt_ref(Some(r))),
            finished: valid(&node, "task result", hello.finished, convert::task_result),
            logs: valid(&node, "log chunk", hello.logs, convert::log_chunk),
            address: convert::advertised(&hello.address)?.or(peer),
        };
        // A revocation mid-stream ends the stream with UNAUTHENTICATED.
        let (revoked_tx, revoked_rx) = tokio::sync::oneshot::channel::<Status>();
        // Revoked while the hello was on its way: nothing of it is applied.
        if !self.shared.auth.still_valid(&who, auth::now_ms()) {
            return Err(Status::unauthenticated(auth::BAD_TOKEN));
        }
        self.shared.runtime.send(Input::Connected { node: node.clone(), conn, hello, tx })?;
        let shared = self.shared.clone();
        let auth = self.shared.auth.clone();
        let (log_room, stream_room) = (self.log_room.clone(), Arc::new(Semaphore::new(LOG_ROOM_PER_STREAM as usize)));
        let every = self.shared.core_config.heartbeat_interval;
        tokio::spawn(async move {
            let ended = auth.ended(&who);
            tokio::pin!(ended);
            loop {
                let message = tokio::select! {
                    m = inbound.message() => m,
                    _ = &mut ended => {
                        // Revoked (or expired) mid-stream: nothing more it sends is applied.
                        tracing::info!(node_id = %node, "the node's token was revoked; closing its stream");
                        let _ = revoked_tx.send(Status::unauthenticated(auth::BAD_TOKEN));
                        break;
                    }
                };
                match message {
                    Ok(Some(msg)) => {
                        let bytes: usize = msg.logs.iter().map(|c| c.data.len()).sum();
                        let room = if bytes == 0 {
                            None
                        } else {
                            let alive = || {
                                let update = AgentUpdate::default();
                                let _ = shared.runtime.send(Input::FromAgent { node: node.clone(), conn, update });
                            };
                            room_for(bytes, &log_room, &stream_room, every, alive).await
                        };
                        let update = AgentUpdate {
                            start_task_done: msg
                                .start_task_done
                                .map(|d| (d.ok, d.message.chars().take(4096).collect())),
                            heartbeat: msg.heartbeat.map(|h| (h.cpu_percent, h.memory_used_bytes)),
                            logs: valid(&node, "log chunk", msg.logs, convert::log_chunk),
                            started: valid(&node, "started task", msg.started, |s| {
                                Ok((convert::attempt_ref(s.task)?, s.started_at_ms))
                            }),
                            finished: valid(&node, "task result", msg.finished, convert::task_result),
                            room,
                            launches: valid(&node, "launch frame", msg.launches, convert::launch_frame),
                        };
                        if shared.runtime.send(Input::FromAgent { node: node.clone(), conn, update }).is_err() {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(status) => {
                        tracing::debug!(node_id = %node, %status, "agent stream ended with an error");
                        break;
                    }
                }
            }
            let _ = shared.runtime.send(Input::Disconnected { node, conn });
        });
        // The loop's messages, until the loop drops the stream or it fell too far
        // behind (then it ends with an error, and the agent connects again).
        let epoch = self.shared.epoch;
        // The coordinators on the database, when the stream opens and whenever they
        // change: an agent registered before a standby started learns of it too.
        let mut peers = self.shared.peers.clone();
        if !peers.borrow().is_empty() {
            peers.mark_changed();
        }
        let messages = futures::stream::unfold(Some((rx, peers)), move |state| async move {
            let (mut rx, mut peers) = state?;
            tokio::select! {
                biased;
                _ = rx.behind.notified() => Some((Err(Status::resource_exhausted(format!(
                    "this stream fell {} messages behind; connect again",
                    crate::runtime::AGENT_QUEUE
                ))), None)),
                msg = rx.messages.recv() => msg.map(|m| (Ok(pb::CoordinatorMessage { epoch, ..m }), Some((rx, peers)))),
                Ok(()) = peers.changed() => {
                    let coordinators = peers.borrow_and_update().clone();
                    let told = pb::CoordinatorMessage { epoch, coordinators, ..Default::default() };
                    Some((Ok(told), Some((rx, peers))))
                }
            }
        });
        let revoked = futures::stream::once(revoked_rx).filter_map(|revoked| revoked.ok().map(Err));
        Ok(Response::new(Box::pin(messages.merge(revoked))))
    }
}
