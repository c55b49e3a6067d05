//! The event loop: the one owner of the core. It drains whatever events are
//! waiting into the core ([`super::dispatch`]), schedules once, and hands the outbox
//! to the store writer, whose follow-ups send replies, agent messages, provider
//! orders and callbacks only once the batch is durable.
//!
//! The core's memory never holds what the store did not commit: when the writer
//! refuses a batch (a value no edge check caught), it says so
//! ([`Input::StoreRefused`]) and refuses every later batch of the same generation;
//! the loop then rebuilds the core and the gate's tables from the store, as a
//! restart would, ends every agent stream (their agents say hello again), and
//! goes on with the next generation ([`reload`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use corral_proto::v1 as pb;
use tokio::sync::{mpsc, watch};

use super::dispatch::{self, Streams};
use super::Input;
use crate::auth::{self, bootstrap, Auth};
use crate::convert;
use crate::core::{Core, Credential, Notification, Outbox, ProviderOp, StoreOp, ToAgent};
use crate::metrics::Metrics;
use crate::model::NodeId;
use crate::store::{Batch, FollowUp, Writer};

/// Where the event loop sends what the core decided.
pub struct Effects {
    pub writer: Writer,
    pub provider: mpsc::UnboundedSender<ProviderOp>,
    pub notify: mpsc::UnboundedSender<Notification>,
    /// Forgets the secrets of nodes that are gone.
    pub auth: Arc<Auth>,
    /// Where deleted jobs' outputs are removed from.
    pub objects: Arc<dyn object_store::ObjectStore>,
    /// Where the agent tokens of pools the coordinator starts nodes for are kept.
    pub data_dir: std::path::PathBuf,
    /// What those tokens are derived from.
    pub pool_key: auth::bootstrap::PoolKey,
    /// Where the state is loaded from again after a refused batch.
    pub backend: Arc<dyn crate::store::Backend>,
}

/// The event loop: the one owner of the core.
pub async fn run(
    mut core: Core,
    mut events: mpsc::UnboundedReceiver<Input>,
    effects: Effects,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let mut streams = Streams::default();
    let mut generation = 0u64;
    let mut reloads = std::collections::VecDeque::new();
    let period = (core.config.heartbeat_interval / 4).clamp(Duration::from_millis(20), Duration::from_millis(250));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut out = Outbox::default();
        let mut then: Vec<FollowUp> = Vec::new();
        let mut refused = false;
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else { break };
                let mut next = Some(event);
                // Take what else is waiting, so one transaction covers it all.
                for _ in 0..4096 {
                    let Some(event) = next.take().or_else(|| events.try_recv().ok()) else { break };
                    if let Input::StoreRefused { generation: of } = event {
                        // Once per generation: later refusals of it are its own undone batches.
                        refused = of == generation;
                        if refused {
                            break;
                        }
                        continue;
                    }
                    if dispatch::handle(&mut core, Instant::now(), event, &mut streams, &mut out, &mut then).heartbeat {
                        metrics.on_heartbeat();
                    }
                }
            }
            _ = tick.tick() => core.on_tick(Instant::now(), &mut out),
            _ = stop.wait_for(|s| *s) => break,
        }
        if refused {
            // What this round did was done to the old state: its batch is refused
            // unwritten, and its callers told to try again.
            flush(out, then, &streams, &effects, generation);
            generation += 1;
            reload(&mut core, &mut streams, &effects, generation, &mut reloads);
            continue;
        }
        core.schedule(Instant::now(), &mut out);
        flush(out, then, &streams, &effects, generation);
    }
    // Stop the agents this coordinator started; static agents keep running and
    // reconnect when a coordinator is back.
    let mut out = Outbox::default();
    core.stop_local_nodes(Instant::now(), &mut out);
    flush(out, Vec::new(), &streams, &effects, generation);
}

/// Rebuilds the core and the gate's tables from the store, after the writer
/// refused a batch of the previous generation: what the store holds is the truth,
/// and the refused change (and whatever was built on it) is gone from memory, as
/// after a restart. Agents connect again; a store that cannot be read now leaves
/// no state to trust, so the coordinator stops (and its supervisor restarts it), as
/// it does when reloads come so often that something keeps making refused changes.
fn reload(
    core: &mut Core,
    streams: &mut Streams,
    effects: &Effects,
    generation: u64,
    reloads: &mut std::collections::VecDeque<Instant>,
) {
    let started = Instant::now();
    reloads.retain(|at| started.duration_since(*at) < RELOADS_WITHIN);
    reloads.push_back(started);
    if reloads.len() > MAX_RELOADS {
        tracing::error!(
            "the store refused changes {} times within {RELOADS_WITHIN:?}; stopping, so that a restart starts clean (the log above names each change)",
            reloads.len()
        );
        std::process::exit(1);
    }
    // Sign-ins stay as they are in memory: a refused sign-in was never answered.
    let (snapshot, tokens, nodes, _sessions) = match effects.backend.load() {
        Ok(loaded) => loaded,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the store back after it refused a change; stopping, so that a restart reloads it");
            std::process::exit(1);
        }
    };
    let now = Instant::now();
    let wall = auth::now_ms();
    let mut fresh = Core::new(core.config.clone(), (now, wall));
    let mut out = Outbox::default();
    fresh.restore(snapshot, now, &mut out);
    // Callbacks of jobs that ended are with the notifier already (a refused batch's
    // were never sent): posting them again would post them twice.
    out.notify.clear();
    effects.auth.reload(tokens, nodes, |node| fresh.nodes.get(node).is_some_and(|n| n.status().is_live()));
    *core = fresh;
    streams.end_all();
    tracing::warn!(
        generation,
        took_ms = started.elapsed().as_millis() as u64,
        jobs = core.jobs.len(),
        "reloaded the state from the store without the refused change; agents connect again"
    );
    flush(out, Vec::new(), streams, effects, generation);
}

/// More reloads than this within [`RELOADS_WITHIN`] stop the coordinator.
const MAX_RELOADS: usize = 5;
const RELOADS_WITHIN: Duration = Duration::from_secs(60);

/// Carries out the credentials the core decided on ([`Credential`]), in the same
/// batch as the changes that made them. The gate's tables change now: a new pool
/// token is accepted at once (a refused batch reloads them from the store), and a
/// retired node or revoked token is refused at once, the safe side. Files wait for
/// the batch: a pool's token file is written, or removed, only once the batch is
/// stored, and before the provider's orders run (returned first, to run first).
fn carry_out_credentials(out: &mut Outbox, effects: &Effects) -> Vec<FollowUp> {
    let auth = &effects.auth;
    let mut after: Vec<FollowUp> = Vec::new();
    for change in std::mem::take(&mut out.credentials) {
        match change {
            Credential::MintPoolToken(pool) => {
                if auth.token_named(&bootstrap::pool_token_name(&pool)).is_some() {
                    continue;
                }
                let token = bootstrap::mint_pool_token(&effects.pool_key, &pool, auth::now_ms());
                auth.insert_token(token.clone());
                out.store.push(StoreOp::PutToken(token.clone()));
                let (data_dir, key) = (effects.data_dir.clone(), effects.pool_key.clone());
                after.push(Box::new(move |stored| {
                    if stored.is_ok() {
                        if let Err(e) = bootstrap::write_pool_token(&data_dir, &key, &token) {
                            tracing::error!(%pool, error = %e, "cannot write the pool's agent token; the agents the coordinator starts for it cannot join");
                        }
                    }
                }));
            }
            // Stored as forgotten only if it had a secret.
            Credential::RetireNode(node) => {
                if auth.forget_node(&node) {
                    out.store.push(StoreOp::ForgetNodeCredential(node));
                }
            }
            Credential::RevokePoolToken(pool) => {
                if let Some(token) = auth.revoke(&bootstrap::pool_token_name(&pool)) {
                    out.store.push(StoreOp::DeleteToken { id: token.id, name: token.name });
                }
                // Auto pools would leave one file per job; undone, the agents need it.
                let path = bootstrap::pool_token_path(&effects.data_dir, &pool);
                after.push(Box::new(move |stored| {
                    if stored.is_ok() {
                        let _ = std::fs::remove_file(path);
                    }
                }));
            }
        }
    }
    after
}

/// Hands the outbox to the writer: store rows first, then (once durable) the replies,
/// one message per agent, and the provider's orders.
fn flush(mut out: Outbox, mut then: Vec<FollowUp>, streams: &Streams, effects: &Effects, generation: u64) {
    if out.is_empty() && then.is_empty() {
        return;
    }
    let mut files = carry_out_credentials(&mut out, effects);
    if !files.is_empty() {
        files.append(&mut then);
        then = files;
    }
    let mut messages: HashMap<NodeId, pb::CoordinatorMessage> = HashMap::new();
    for (node, msg) in out.agents {
        let m = messages.entry(node).or_default();
        match msg {
            ToAgent::Assign(a) => m.assign.push(convert::assignment_to_pb(*a)),
            ToAgent::Kill(a) => m.kill.push(convert::attempt_to_pb(a)),
            ToAgent::Ack(a) => m.ack.push(convert::attempt_to_pb(a)),
            ToAgent::Reregister(why) => {
                m.reregister = true;
                m.reason = why;
            }
            ToAgent::Shutdown(why) => {
                m.shutdown = true;
                m.reason = why;
            }
        }
    }
    for (node, msg) in messages {
        // A node without a stream gets nothing now; its hello reconciles later.
        if let Some(tx) = streams.get(&node) {
            let tx = tx.clone();
            then.push(Box::new(move |stored| {
                if stored.is_ok() {
                    tx.send(msg);
                }
            }));
        }
    }
    for op in out.provider {
        let provider = effects.provider.clone();
        then.push(Box::new(move |stored| {
            if stored.is_ok() {
                let _ = provider.send(op);
            }
        }));
    }
    // A deleted job's objects go once its deletion is durable.
    for prefix in out.delete_objects {
        let (objects, runtime) = (effects.objects.clone(), tokio::runtime::Handle::current());
        then.push(Box::new(move |stored| {
            if stored.is_ok() {
                runtime.spawn(crate::objects::delete_prefix(objects, prefix));
            }
        }));
    }
    for order in out.notify {
        let notify = effects.notify.clone();
        then.push(Box::new(move |stored| {
            if stored.is_ok() {
                let _ = notify.send(order);
            }
        }));
    }
    if !effects.writer.submit(Batch { ops: out.store, then, generation }) {
        tracing::error!("the store writer has stopped; changes are not being saved");
    }
}
