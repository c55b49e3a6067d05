//! The agent's life: register, open the stream, run what is assigned, report, and
//! when the stream breaks keep the tasks running and reconnect with backoff.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use corral_proto::credentials::Bearer;
use corral_proto::v1 as pb;
use corral_proto::v1::agent_client::AgentClient;
use tokio::sync::{mpsc, oneshot, watch};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::Code;

use crate::attempts::{attempt_of, task_ref, Attempts, Effect, Unacked};
use crate::coordinators::Coordinators;
use crate::launch::{Launch, Place, Processes};
use crate::runner::{self, Cancel, Lane, RunnerEvent};
use crate::start_task::{self, StartTask};
use crate::AgentConfig;
use corral_types::ids::AttemptRef;

const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between reconnection attempts, and at most a third of the
/// coordinator's heartbeat timeout, so that a restarted coordinator hears from
/// this node before it would declare it lost.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The longest wait between tries while a standby answers: a takeover is under
/// way, and the node must reach the new leader within its heartbeat timeout.
const TAKEOVER_RETRY: Duration = Duration::from_millis(300);

/// Why the agent stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the coordinator refused this agent: {0}")]
    Refused(String),
    #[error("invalid coordinator URL '{url}': {reason}")]
    BadUrl { url: String, reason: String },
    #[error("invalid slots: must be at least 1")]
    ZeroSlots,
    #[error("{0}")]
    Token(String),
    #[error("{0}")]
    Setup(String),
    #[error("gave up: no coordinator answered at {url} for {after:?} (--give-up-after)")]
    GaveUp { url: String, after: Duration },
}

/// How many messages of output (each at most one chunk) may wait for the stream.
const DATA_QUEUE: usize = 8;

/// How often the coordinator is told which attempts sent ahead have started.
const STARTED_EVERY: Duration = Duration::from_millis(50);

/// How a session ended.
enum End {
    /// The stream broke; `established` says whether it had opened.
    Disconnected {
        established: bool,
    },
    Reregister,
    /// The coordinator refused the node's secret.
    Refused(String),
    /// A standby answered, naming the leader (`None`: nobody leads now).
    Standby(Option<String>),
    Shutdown,
}

type Client = AgentClient<InterceptedService<Channel, Bearer>>;

mod lanes;
mod register;

use lanes::{report_results, AbortOnDrop, Lanes};
use register::RegisterError;

struct Agent {
    config: AgentConfig,
    coordinators: Coordinators,
    /// The agent token, for registering.
    token: Bearer,
    /// This node's own secret once registered: the stream and object calls carry it.
    node_secret: Bearer,
    slots: u32,
    node_id: Option<String>,
    heartbeat_interval: Duration,
    max_backoff: Duration,
    /// The attempts it holds and its slots: the agent's state machine.
    attempts: Attempts,
    /// How to stop each running attempt's runner.
    cancels: HashMap<AttemptRef, Cancel>,
    /// Attempts sent ahead that started since the coordinator was last told, and
    /// when (ms since the epoch).
    started: HashMap<AttemptRef, u64>,
    /// The current stream's output lane, which runners ship through.
    lane: watch::Sender<Lane>,
    /// Multi-node launches to and from this node's gang ranks (none when simulated).
    launches: Option<Arc<crate::launches::Launches>>,
    /// The pool's start task for this registration, and where it stands.
    start_task: StartTask,
    start_done: Option<oneshot::Receiver<(bool, String)>>,
    objects: crate::objects::Client,
    /// What runs the tasks: processes under the warden, or nothing (simulated).
    launch: Arc<dyn Launch>,
    /// The attempts' directories, recycled.
    dirs: Arc<crate::task_dirs::TaskDirs>,
    events: mpsc::UnboundedSender<RunnerEvent>,
    sys: sysinfo::System,
}

/// Runs the agent until `shutdown` resolves (then it stops its tasks) or the
/// coordinator refuses or removes it.
pub async fn run(
    config: AgentConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    // Made once, so a bad URL or CA file stops the agent at once; each session
    // gets a fresh connection.
    let coordinators = Coordinators::new(&config.coordinator, &config.tls)?;
    let mut sys =
        sysinfo::System::new().map_err(|e| Error::Refused(format!("cannot read this host's resources: {e}")))?;
    let lane = watch::Sender::new(Lane::default());
    let (launch, launches): (Arc<dyn Launch>, _) = match config.simulate {
        true => (Arc::new(crate::simulate::Simulated), None),
        false => {
            let warden = Arc::new(start_warden(&config)?);
            // Without its launcher the agent still runs every task on one node.
            let gangs = match crate::launch::GangTools::start(&config.work_dir, lane.subscribe()) {
                Ok(gangs) => Some(Arc::new(gangs)),
                Err(e) => {
                    let dir = config.work_dir.display();
                    tracing::warn!(
                        "multi-node tasks cannot run on this agent: cannot set up their launcher in {dir}: {e}"
                    );
                    None
                }
            };
            let launches = gangs.as_ref().map(|g| g.launches.clone());
            (Arc::new(Processes { warden, kill_grace: config.kill_grace, gangs }) as Arc<dyn Launch>, launches)
        }
    };
    if launch.reads_host() {
        sys.refresh_cpu_usage();
        sys.refresh_memory();
    }
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
    let token = Bearer::new(config.token.as_deref()).map_err(Error::Token)?;
    let node_secret = Bearer::default();
    let objects = crate::objects::client(coordinators.objects(), node_secret.clone());
    let dirs = Arc::new(crate::task_dirs::TaskDirs::new(config.work_dir.join("tasks")));
    let mut agent = Agent {
        config,
        dirs,
        coordinators,
        token,
        node_secret,
        slots,
        node_id: None,
        heartbeat_interval: Duration::from_secs(1),
        max_backoff: MAX_BACKOFF,
        attempts: Attempts::new(slots),
        cancels: HashMap::new(),
        started: HashMap::new(),
        lane,
        launches,
        start_task: StartTask::None,
        start_done: None,
        objects,
        launch,
        events: events_tx,
        sys,
    };
    let mut backoff = MIN_BACKOFF;
    // Since when no coordinator has answered (None while one does).
    let mut alone_since: Option<tokio::time::Instant> = None;
    // Standbys' directions followed in a row without getting through: a few are
    // followed at once, then only after the usual wait.
    let mut hops = 0;
    // A standby answered since the last coordinator that led did: a takeover is
    // under way, so it tries often (see TAKEOVER_RETRY).
    let mut takeover = false;
    loop {
        if let (Some(after), Some(since)) = (agent.config.give_up_after, alone_since) {
            if since.elapsed() >= after {
                tracing::error!("no coordinator answered at {} for {after:?}; stopping", agent.config.coordinator);
                agent.stop_all(&mut events).await;
                return Err(Error::GaveUp { url: agent.config.coordinator.clone(), after });
            }
        }
        let client = |agent: &Agent, bearer: &Bearer| {
            AgentClient::with_interceptor(agent.coordinators.connect(), bearer.clone())
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20)
        };
        if agent.node_id.is_none() {
            match agent.register(client(&agent, &agent.token), cpus).await {
                Ok(()) => {
                    backoff = MIN_BACKOFF;
                    alone_since = None;
                    hops = 0;
                    takeover = false;
                }
                Err(RegisterError::Fatal(e)) => {
                    agent.stop_all(&mut events).await;
                    return Err(e);
                }
                Err(RegisterError::Retry { why, standby, leader }) => {
                    alone_since.get_or_insert_with(tokio::time::Instant::now);
                    takeover |= standby;
                    if agent.moved_on(leader.as_ref(), &mut hops) {
                        continue;
                    }
                    let failed = agent.coordinators.url().to_string();
                    agent.coordinators.next();
                    let wait = if takeover { backoff.min(TAKEOVER_RETRY) } else { backoff };
                    tracing::warn!(
                        "cannot register with {failed}: {why}; trying {} in {wait:?}",
                        agent.coordinators.url()
                    );
                    if agent.pause(wait, &mut events, &mut stop).await {
                        break;
                    }
                    backoff = (backoff * 2).min(agent.max_backoff);
                    continue;
                }
            }
        }
        // A connection of its own, tuned to the heartbeat timeout registering told.
        match agent.session(client(&agent, &agent.node_secret), &mut events, &mut stop).await {
            End::Shutdown => break,
            End::Standby(leader) => {
                alone_since.get_or_insert_with(tokio::time::Instant::now);
                takeover = true;
                if agent.moved_on(leader.as_ref(), &mut hops) {
                    continue;
                }
                let standby = agent.coordinators.url().to_string();
                agent.coordinators.next();
                let wait = backoff.min(TAKEOVER_RETRY);
                tracing::info!(
                    "{standby} stands by and no leader it names answers; trying {} in {wait:?}",
                    agent.coordinators.url()
                );
                if agent.pause(wait, &mut events, &mut stop).await {
                    break;
                }
                backoff = (backoff * 2).min(agent.max_backoff);
            }
            End::Reregister => backoff = MIN_BACKOFF,
            End::Refused(why) => {
                // The node's secret no longer opens a stream (its token was revoked,
                // or the coordinator forgot it): register again, which fails for
                // good if the agent's own token is no longer accepted either.
                tracing::warn!("the coordinator refused this node's secret ({why}); registering again");
                agent.abandon_all();
            }
            End::Disconnected { established } => {
                if established {
                    backoff = MIN_BACKOFF;
                    alone_since = Some(tokio::time::Instant::now());
                    hops = 0;
                    takeover = false;
                } else {
                    alone_since.get_or_insert_with(tokio::time::Instant::now);
                }
                let lost = agent.coordinators.url().to_string();
                // Another listed coordinator may lead now (a failover).
                agent.coordinators.next();
                let wait = if takeover { backoff.min(TAKEOVER_RETRY) } else { backoff };
                tracing::warn!(
                    held = agent.attempts.held().len(),
                    "lost the coordinator at {lost}; tasks keep running; reconnecting to {} in {wait:?}",
                    agent.coordinators.url()
                );
                if agent.pause(wait, &mut events, &mut stop).await {
                    break;
                }
                backoff = (backoff * 2).min(agent.max_backoff);
            }
        }
    }
    agent.stop_all(&mut events).await;
    Ok(())
}

/// Kills what an earlier agent in the same work dir left running, then starts this
/// agent's warden, so that what it starts dies with it.
fn start_warden(config: &AgentConfig) -> Result<crate::warden::Warden, Error> {
    let leftovers = crate::warden::kill_leftovers(&config.work_dir);
    if leftovers > 0 {
        tracing::warn!(
            groups = leftovers,
            "killed task processes an earlier agent on {} left running",
            config.work_dir.display()
        );
    }
    crate::warden::Warden::start(&config.work_dir)
        .map_err(|e| Error::Setup(format!("cannot start the task warden in {}: {e}", config.work_dir.display())))
}

impl Agent {
    /// Follows a standby's direction to the leader at once, a few times in a row;
    /// true if it did (the caller tries there now).
    fn moved_on(&mut self, leader: Option<&String>, hops: &mut u32) -> bool {
        let Some(leader) = leader else { return false };
        if *hops >= 3 {
            return false;
        }
        let from = self.coordinators.url().to_string();
        if !self.coordinators.follow(leader) {
            return false;
        }
        *hops += 1;
        tracing::info!("{from} stands by; following it to the leader at {leader}");
        true
    }

    /// Where this registration's attempts run.
    fn place(&self) -> Place<'_> {
        Place {
            node_id: self.node_id.as_deref().unwrap_or_default(),
            pool: &self.config.pool,
            dirs: &self.dirs,
            lane: &self.lane,
            objects: &self.objects,
        }
    }

    /// The opening message: every attempt this agent holds (running, queued, or
    /// finished and not acknowledged), so the coordinator can reconcile. Results and
    /// their output follow in the next messages.
    fn hello(&self) -> pb::AgentMessage {
        let hello = pb::Hello {
            node_id: self.node_id.clone().unwrap_or_default(),
            running: self.attempts.held().into_iter().map(task_ref).collect(),
            queued: self.attempts.queued().into_iter().map(task_ref).collect(),
            start_task_running: matches!(self.start_task, StartTask::Pending(_) | StartTask::Running),
            start_task_failed: match &self.start_task {
                StartTask::Failed(why) => why.clone(),
                _ => String::new(),
            },
            address: self.config.advertise_address.clone().unwrap_or_default(),
            ..Default::default()
        };
        pb::AgentMessage { hello: Some(hello), ..Default::default() }
    }

    async fn session(
        &mut self,
        client: Client,
        events: &mut mpsc::UnboundedReceiver<RunnerEvent>,
        stop: &mut watch::Receiver<bool>,
    ) -> End {
        let end = self.stream(client, events, stop).await;
        // No stream: runners stop shipping, and ship it all again on the next.
        self.lane.send_modify(|lane| lane.tx = None);
        end
    }

    async fn stream(
        &mut self,
        mut client: Client,
        events: &mut mpsc::UnboundedReceiver<RunnerEvent>,
        stop: &mut watch::Receiver<bool>,
    ) -> End {
        // Two lanes: heartbeats and the like go first, output and results (in
        // the order they were produced) when there is room.
        let (out, control) = mpsc::unbounded_channel();
        let (data, data_rx) = mpsc::channel(DATA_QUEUE);
        // The hello says what is still queued: starts not yet told are in it.
        self.started.clear();
        let _ = out.send(self.hello());
        let lanes = Lanes { control, data: data_rx };
        let mut inbound = match client.session(lanes).await {
            Ok(resp) => resp.into_inner(),
            Err(status) if matches!(status.code(), Code::Unauthenticated | Code::PermissionDenied) => {
                return End::Refused(status.message().to_string());
            }
            Err(status) if corral_proto::leader::standing_by(&status).is_some() => {
                return End::Standby(corral_proto::leader::named_by(&status));
            }
            Err(status) => {
                tracing::debug!(%status, "could not open the session");
                return End::Disconnected { established: false };
            }
        };
        // Output shipped on the old stream may be lost: running tasks ship theirs
        // again from the start, finished ones from their directories.
        let generation = self.lane.borrow().generation + 1;
        self.lane.send_replace(Lane { generation, tx: Some(data.clone()) });
        let (report, reports) = mpsc::unbounded_channel();
        let reporter = AbortOnDrop(tokio::spawn(report_results(reports, data, self.lane.subscribe())));
        let mut effects = Vec::new();
        self.attempts.on_connected(&mut effects);
        self.carry(effects, Some(&report));
        if let StartTask::Pending(script) = &self.start_task {
            self.start_done = Some(self.launch.start_task(script.clone(), self.place()));
            self.start_task = StartTask::Running;
        }
        let mut heartbeat = tokio::time::interval(self.heartbeat_interval);
        // Starts are told in batches, every STARTED_EVERY: a short task that ends
        // sooner is told by its result alone (which says that it started).
        let mut started_every = tokio::time::interval(STARTED_EVERY);
        started_every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = inbound.message() => match msg {
                    Ok(Some(msg)) => {
                        let mut effects = Vec::new();
                        let end = self.on_message(msg, &mut effects);
                        self.carry(effects, Some(&report));
                        if let Some(end) = end {
                            return end;
                        }
                    }
                    Err(status) if status.code() == Code::Unauthenticated => {
                        return End::Refused(status.message().to_string())
                    }
                    Ok(None) | Err(_) => return End::Disconnected { established: true },
                },
                Some(event) = events.recv() => {
                    let mut effects = Vec::new();
                    for event in std::iter::once(event).chain(std::iter::from_fn(|| events.try_recv().ok())) {
                        self.on_event(event, Some(generation), &mut effects);
                    }
                    self.carry(effects, Some(&report));
                    if reporter.0.is_finished() {
                        return End::Disconnected { established: true };
                    }
                }
                _ = heartbeat.tick() => {
                    if self.launch.reads_host() {
                        self.sys.refresh_cpu_usage();
                        self.sys.refresh_memory();
                    }
                    let beat = pb::Heartbeat { cpu_percent: self.sys.global_cpu_usage(), memory_used_bytes: self.sys.used_memory() };
                    if out.send(pb::AgentMessage { heartbeat: Some(beat), ..Default::default() }).is_err() {
                        return End::Disconnected { established: true };
                    }
                }
                done = start_task::result(&mut self.start_done) => {
                    self.start_done = None;
                    let (ok, message) = done;
                    self.start_task = if ok { StartTask::Done } else { StartTask::Failed(message.clone()) };
                    if !ok {
                        tracing::error!(%message, "the pool's start task failed; this node will take no work");
                    }
                    let done = pb::StartTaskDone { ok, message };
                    if out.send(pb::AgentMessage { start_task_done: Some(done), ..Default::default() }).is_err() {
                        return End::Disconnected { established: true };
                    }
                }
                _ = started_every.tick(), if !self.started.is_empty() => {
                    let started = self.started.drain().map(|(key, started_at_ms)| pb::TaskStarted { task: Some(task_ref(key)), started_at_ms }).collect();
                    if out.send(pb::AgentMessage { started, ..Default::default() }).is_err() {
                        return End::Disconnected { established: true };
                    }
                }
                _ = stop.wait_for(|s| *s) => return End::Shutdown,
            }
        }
    }

    fn on_message(&mut self, msg: pb::CoordinatorMessage, out: &mut Vec<Effect>) -> Option<End> {
        if let Err(newest) = self.coordinators.admit(msg.epoch) {
            // A deposed leader that has not noticed yet: nothing of it is obeyed.
            tracing::warn!(
                epoch = msg.epoch,
                newest,
                "{} speaks for an older epoch than one this agent has heard from; leaving it",
                self.coordinators.url()
            );
            return Some(End::Disconnected { established: false });
        }
        self.coordinators.learn(&msg.coordinators);
        let attempts = |refs: &[pb::TaskRef]| refs.iter().map(attempt_of).collect::<Vec<_>>();
        self.attempts.on_ack(&attempts(&msg.ack), out);
        self.attempts.on_kill(&attempts(&msg.kill), out);
        if msg.shutdown {
            tracing::info!(reason = %msg.reason, "the coordinator removed this node; stopping");
            return Some(End::Shutdown);
        }
        if msg.reregister {
            tracing::warn!(reason = %msg.reason, "the coordinator no longer knows this node; killing its tasks and registering again");
            self.attempts.abandon_all(out);
            self.node_id = None;
            return Some(End::Reregister);
        }
        self.attempts.on_assign(msg.assign, out);
        if let Some(launches) = self.launches.as_ref().filter(|_| !msg.launches.is_empty()) {
            launches.on_frames(msg.launches);
        }
        None
    }

    /// A runner's news. `generation` is the current stream's, if one is open: a
    /// result whose output all went out on it is not shipped again.
    fn on_event(&mut self, event: RunnerEvent, generation: Option<u64>, out: &mut Vec<Effect>) {
        let RunnerEvent::Finished { result, dir, max_output, rank, shipped_on } = event;
        if let Some(task) = &result.task {
            self.cancels.remove(&attempt_of(task));
            // Its result says it started: no need to tell that apart.
            self.started.remove(&attempt_of(task));
        }
        let shipped = generation.is_some() && shipped_on == generation;
        self.attempts.on_finished(result, dir, max_output, rank, shipped, out);
    }

    /// Carries out what the attempts decided. Without a stream (`report` is None)
    /// results wait: they are reported when the next stream opens.
    fn carry(&mut self, effects: Vec<Effect>, report: Option<&mpsc::UnboundedSender<(Unacked, bool)>>) {
        for effect in effects {
            match effect {
                Effect::Start(assignment, attempt) => {
                    // The coordinator shows a task sent ahead as assigned until
                    // it hears that it started.
                    if assignment.sent_ahead {
                        self.started.insert(attempt, runner::now_ms());
                    }
                    let task = task_ref(attempt);
                    if let Some(cancel) = self.launch.start(*assignment, task, self.place(), &self.events) {
                        self.cancels.insert(attempt, cancel);
                    }
                }
                Effect::Cancel(key) => {
                    if let Some(cancel) = self.cancels.remove(&key) {
                        let _ = cancel.send(());
                    }
                }
                Effect::Report(unacked, shipped) => {
                    if let Some(report) = report {
                        let _ = report.send((unacked, shipped));
                    }
                }
                Effect::RemoveDir(dir) => self.launch.retire(&self.dirs, dir),
            }
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
                // Results are kept until acknowledged; output is shipped again from
                // the start on the next stream, so chunks can go now.
                Some(event) = events.recv() => {
                    let mut out = Vec::new();
                    self.on_event(event, None, &mut out);
                    self.carry(out, None);
                }
            }
        }
    }

    /// Kills every task and forgets this registration. The killed tasks keep their
    /// slots until their processes are gone.
    fn abandon_all(&mut self) {
        let mut out = Vec::new();
        self.attempts.abandon_all(&mut out);
        self.carry(out, None);
        self.node_id = None;
    }

    /// Stops every task and waits (up to the kill grace and a little) for them.
    async fn stop_all(&mut self, events: &mut mpsc::UnboundedReceiver<RunnerEvent>) {
        self.abandon_all();
        let deadline = tokio::time::Instant::now() + self.config.kill_grace + Duration::from_secs(1);
        while self.attempts.any_running() {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Some(event)) => {
                    let mut out = Vec::new();
                    self.on_event(event, None, &mut out);
                    self.carry(out, None);
                }
                _ => break,
            }
        }
    }
}
