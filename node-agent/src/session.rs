//! The agent's life: register, open the stream, run what is assigned, report, and
//! when the stream breaks keep the tasks running and reconnect with backoff.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use corral_proto::v1 as pb;
use corral_proto::v1::agent_client::AgentClient;
use tokio::sync::{mpsc, oneshot, watch};
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

use crate::runner::{self, RunContext, RunnerEvent, StopReason};
use crate::AgentConfig;

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Log bytes kept while disconnected; older chunks are dropped past this.
const MAX_PENDING_LOGS: usize = 64 << 20;

/// Why the agent stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the coordinator refused this agent: {0}")]
    Refused(String),
    #[error("invalid coordinator URL '{url}': {reason}")]
    BadUrl { url: String, reason: String },
    #[error("invalid slots: must be at least 1")]
    ZeroSlots,
}

type Key = (u64, u32);

struct Running {
    attempt: u32,
    slots: u32,
    stop: Option<oneshot::Sender<StopReason>>,
}

/// How a session ended.
enum End {
    /// The stream broke; `established` says whether it had opened.
    Disconnected {
        established: bool,
    },
    Reregister,
    Shutdown,
}

struct Agent {
    config: AgentConfig,
    endpoint: Endpoint,
    slots: u32,
    node_id: Option<String>,
    heartbeat_interval: Duration,
    used: u32,
    running: HashMap<Key, Running>,
    queue: VecDeque<(pb::Assignment, pb::TaskRef)>,
    /// Results sent (or to send) and not yet acknowledged as durable.
    unacked: HashMap<(u64, u32, u32), pb::TaskResult>,
    pending_logs: VecDeque<pb::LogChunk>,
    pending_bytes: usize,
    events: mpsc::UnboundedSender<RunnerEvent>,
    sys: sysinfo::System,
}

/// Runs the agent until `shutdown` resolves (then it stops its tasks) or the
/// coordinator refuses or removes it.
pub async fn run(
    config: AgentConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let endpoint = Endpoint::from_shared(config.coordinator.clone())
        .map_err(|e| Error::BadUrl { url: config.coordinator.clone(), reason: e.to_string() })?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10));
    let mut sys =
        sysinfo::System::new().map_err(|e| Error::Refused(format!("cannot read this host's resources: {e}")))?;
    sys.refresh_cpu_usage();
    sys.refresh_memory();
    let cpus = sys.cpus().len().max(1) as u32;
    let slots = config.slots.unwrap_or(cpus);
    if slots == 0 {
        return Err(Error::ZeroSlots);
    }
    let (stop_tx, mut stop) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let mut agent = Agent {
        config,
        endpoint,
        slots,
        node_id: None,
        heartbeat_interval: Duration::from_secs(1),
        used: 0,
        running: HashMap::new(),
        queue: VecDeque::new(),
        unacked: HashMap::new(),
        pending_logs: VecDeque::new(),
        pending_bytes: 0,
        events: events_tx,
        sys,
    };
    let mut backoff = MIN_BACKOFF;
    loop {
        let client = AgentClient::new(agent.endpoint.connect_lazy())
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        if agent.node_id.is_none() {
            match agent.register(client.clone(), cpus).await {
                Ok(()) => backoff = MIN_BACKOFF,
                Err(RegisterError::Fatal(e)) => {
                    agent.stop_all(&mut events).await;
                    return Err(e);
                }
                Err(RegisterError::Retry(why)) => {
                    tracing::warn!("cannot register with {}: {why}; retrying in {backoff:?}", agent.config.coordinator);
                    if agent.pause(backoff, &mut events, &mut stop).await {
                        break;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            }
        }
        match agent.session(client, &mut events, &mut stop).await {
            End::Shutdown => break,
            End::Reregister => backoff = MIN_BACKOFF,
            End::Disconnected { established } => {
                if established {
                    backoff = MIN_BACKOFF;
                }
                tracing::warn!(
                    running = agent.running.len(),
                    "lost the coordinator at {}; tasks keep running; reconnecting in {backoff:?}",
                    agent.config.coordinator
                );
                if agent.pause(backoff, &mut events, &mut stop).await {
                    break;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    agent.stop_all(&mut events).await;
    Ok(())
}

enum RegisterError {
    Fatal(Error),
    Retry(String),
}

impl Agent {
    async fn register(&mut self, mut client: AgentClient<Channel>, cpus: u32) -> Result<(), RegisterError> {
        let req = pb::RegisterRequest {
            pool: self.config.pool.clone(),
            hostname: sysinfo::System::host_name().unwrap_or_default(),
            slots: self.slots,
            cpus,
            memory_bytes: self.sys.total_memory(),
            pid: std::process::id(),
            launch_id: self.config.launch_id.clone().unwrap_or_default(),
        };
        match client.register(req).await {
            Ok(resp) => {
                let resp = resp.into_inner();
                self.heartbeat_interval = Duration::from_millis(resp.heartbeat_interval_ms.max(10));
                tracing::info!(
                    node_id = %resp.node_id,
                    pool = %self.config.pool,
                    slots = self.slots,
                    "registered; heartbeat every {:?}, lost after {:?} of silence",
                    self.heartbeat_interval,
                    Duration::from_millis(resp.heartbeat_timeout_ms)
                );
                self.node_id = Some(resp.node_id);
                Ok(())
            }
            Err(status) => match status.code() {
                Code::InvalidArgument | Code::NotFound | Code::FailedPrecondition | Code::AlreadyExists => {
                    Err(RegisterError::Fatal(Error::Refused(status.message().to_string())))
                }
                _ => Err(RegisterError::Retry(status.message().to_string())),
            },
        }
    }

    fn context(&self) -> RunContext {
        RunContext {
            node_id: self.node_id.clone().unwrap_or_default(),
            pool: self.config.pool.clone(),
            tasks_dir: self.config.work_dir.join("tasks"),
            kill_grace: self.config.kill_grace,
        }
    }

    fn hello(&mut self) -> pb::AgentMessage {
        let running = self
            .running
            .iter()
            .map(|(&(job_id, index), r)| pb::TaskRef { job_id, index, attempt: r.attempt })
            .collect();
        self.pending_bytes = 0;
        pb::AgentMessage {
            hello: Some(pb::Hello {
                node_id: self.node_id.clone().unwrap_or_default(),
                running,
                finished: self.unacked.values().cloned().collect(),
                logs: self.pending_logs.drain(..).collect(),
            }),
            ..Default::default()
        }
    }

    async fn session(
        &mut self,
        mut client: AgentClient<Channel>,
        events: &mut mpsc::UnboundedReceiver<RunnerEvent>,
        stop: &mut watch::Receiver<bool>,
    ) -> End {
        let (out, out_rx) = mpsc::unbounded_channel();
        let _ = out.send(self.hello());
        let mut inbound = match client.session(tokio_stream::wrappers::UnboundedReceiverStream::new(out_rx)).await {
            Ok(resp) => resp.into_inner(),
            Err(status) => {
                tracing::debug!(%status, "could not open the session");
                return End::Disconnected { established: false };
            }
        };
        let mut heartbeat = tokio::time::interval(self.heartbeat_interval);
        loop {
            tokio::select! {
                msg = inbound.message() => match msg {
                    Ok(Some(msg)) => {
                        if let Some(end) = self.on_message(msg) {
                            return end;
                        }
                    }
                    Ok(None) | Err(_) => return End::Disconnected { established: true },
                },
                Some(event) = events.recv() => {
                    let mut msg = pb::AgentMessage::default();
                    self.on_event(event, &mut msg);
                    while let Ok(event) = events.try_recv() {
                        self.on_event(event, &mut msg);
                    }
                    self.start_queued();
                    if let Err(unsent) = out.send(msg) {
                        self.keep_logs(unsent.0.logs);
                        return End::Disconnected { established: true };
                    }
                }
                _ = heartbeat.tick() => {
                    self.sys.refresh_cpu_usage();
                    self.sys.refresh_memory();
                    let beat = pb::Heartbeat { cpu_percent: self.sys.global_cpu_usage(), memory_used_bytes: self.sys.used_memory() };
                    if out.send(pb::AgentMessage { heartbeat: Some(beat), ..Default::default() }).is_err() {
                        return End::Disconnected { established: true };
                    }
                }
                _ = stop.wait_for(|s| *s) => return End::Shutdown,
            }
        }
    }

    fn on_message(&mut self, msg: pb::CoordinatorMessage) -> Option<End> {
        for ack in msg.ack {
            self.unacked.remove(&(ack.job_id, ack.index, ack.attempt));
        }
        for kill in msg.kill {
            let key = (kill.job_id, kill.index);
            match self.running.get_mut(&key) {
                Some(r) if r.attempt == kill.attempt => {
                    if let Some(stop) = r.stop.take() {
                        let _ = stop.send(StopReason::Cancelled);
                    }
                }
                _ => self
                    .queue
                    .retain(|(_, t)| !(t.job_id == kill.job_id && t.index == kill.index && t.attempt == kill.attempt)),
            }
        }
        if msg.shutdown {
            tracing::info!(reason = %msg.reason, "the coordinator removed this node; stopping");
            return Some(End::Shutdown);
        }
        if msg.reregister {
            tracing::warn!(reason = %msg.reason, "the coordinator no longer knows this node; killing its tasks and registering again");
            self.abandon_all();
            return Some(End::Reregister);
        }
        for assignment in msg.assign {
            let Some(task) = assignment.task else { continue };
            let key = (task.job_id, task.index);
            let known = self.running.get(&key).is_some_and(|r| r.attempt == task.attempt)
                || self.queue.iter().any(|(_, t)| *t == task);
            if !known {
                self.queue.push_back((assignment, task));
            }
        }
        self.start_queued();
        None
    }

    fn on_event(&mut self, event: RunnerEvent, msg: &mut pb::AgentMessage) {
        match event {
            RunnerEvent::Log(chunk) => msg.logs.push(chunk),
            RunnerEvent::Finished(result) => {
                let Some(task) = result.task else { return };
                let key = (task.job_id, task.index);
                // A result of an attempt this agent abandoned is nobody's business.
                if self.running.get(&key).is_none_or(|r| r.attempt != task.attempt) {
                    return;
                }
                if let Some(r) = self.running.remove(&key) {
                    self.used = self.used.saturating_sub(r.slots);
                }
                self.unacked.insert((task.job_id, task.index, task.attempt), result.clone());
                msg.finished.push(result);
            }
        }
    }

    /// Starts queued tasks while slots are free (a task bigger than the node still
    /// runs, alone).
    fn start_queued(&mut self) {
        while let Some((a, _)) = self.queue.front() {
            let slots = a.slots.max(1);
            if self.used > 0 && self.used + slots > self.slots {
                break;
            }
            let Some((assignment, task)) = self.queue.pop_front() else { break };
            let stop = runner::start(assignment, task, self.context(), self.events.clone());
            self.used += slots;
            self.running.insert((task.job_id, task.index), Running { attempt: task.attempt, slots, stop: Some(stop) });
        }
    }

    fn keep_logs(&mut self, logs: Vec<pb::LogChunk>) {
        for chunk in logs {
            self.pending_bytes += chunk.data.len();
            self.pending_logs.push_back(chunk);
        }
        while self.pending_bytes > MAX_PENDING_LOGS {
            let Some(old) = self.pending_logs.pop_front() else { break };
            self.pending_bytes -= old.data.len();
        }
    }

    /// Waits out a backoff while still collecting what the tasks report.
    /// Returns true if the agent was told to stop.
    async fn pause(
        &mut self,
        delay: Duration,
        events: &mut mpsc::UnboundedReceiver<RunnerEvent>,
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return false,
                _ = stop.wait_for(|s| *s) => return true,
                Some(event) = events.recv() => {
                    let mut msg = pb::AgentMessage::default();
                    self.on_event(event, &mut msg);
                    self.keep_logs(msg.logs);
                    self.start_queued();
                }
            }
        }
    }

    /// Kills every task and forgets this registration.
    fn abandon_all(&mut self) {
        for r in self.running.values_mut() {
            if let Some(stop) = r.stop.take() {
                let _ = stop.send(StopReason::Cancelled);
            }
        }
        self.running.clear();
        self.queue.clear();
        self.unacked.clear();
        self.pending_logs.clear();
        self.pending_bytes = 0;
        self.used = 0;
        self.node_id = None;
    }

    /// Stops every task and waits (up to the kill grace and a little) for them.
    async fn stop_all(&mut self, events: &mut mpsc::UnboundedReceiver<RunnerEvent>) {
        self.queue.clear();
        for r in self.running.values_mut() {
            if let Some(stop) = r.stop.take() {
                let _ = stop.send(StopReason::Cancelled);
            }
        }
        let deadline = tokio::time::Instant::now() + self.config.kill_grace + Duration::from_secs(1);
        while !self.running.is_empty() {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Some(event)) => {
                    let mut msg = pb::AgentMessage::default();
                    self.on_event(event, &mut msg);
                }
                _ => break,
            }
        }
    }
}
