//! The dispatch of events into the core, with chosen `now`s and real channels
//! standing in for agent streams.

use std::time::Duration;

use tokio::sync::mpsc;

use super::*;
use crate::core::{CoreConfig, StoreOp, ToAgent};
use crate::model::*;
use crate::runtime::{AgentTx, AgentUpdate, Hello, AGENT_QUEUE};

struct Env {
    core: Core,
    now: Instant,
    streams: Streams,
    out: Outbox,
    then: Vec<FollowUp>,
}

fn hello() -> Hello {
    Hello {
        start_task_running: false,
        start_task_failed: None,
        running: vec![],
        queued: vec![],
        finished: vec![],
        logs: vec![],
        address: None,
    }
}

fn chunk(attempt: AttemptRef) -> LogChunk {
    LogChunk { attempt, rank: 0, stderr: false, offset: 0, data: b"hi\n".to_vec() }
}

fn succeeded(attempt: AttemptRef) -> TaskResult {
    TaskResult {
        attempt,
        outcome: Outcome::Succeeded,
        exit_code: Some(0),
        signal: None,
        message: String::new(),
        started_at_ms: 1_000,
        ended_at_ms: 1_001,
        written: [3, 0],
        order: Default::default(),
    }
}

impl Env {
    /// A core with a static pool `p` and one registered node (no stream yet).
    fn new() -> (Env, NodeId) {
        let now = Instant::now();
        let mut core = Core::new(CoreConfig::default(), (now, 1_000_000));
        let mut out = Outbox::default();
        let spec = PoolSpec {
            name: PoolName::parse("name", "p").unwrap(),
            slots_per_node: 1,
            provider: Provider::Static,
            target_nodes: 0,
            fill: Fill::Spread,
            autoscale: None,
            removal: RemovalPolicy::TaskCompletion,
            commands: None,
            docker: None,
            start_task: None,
        };
        core.create_pool(now, spec, &mut out).unwrap();
        let reg = Registration {
            pool: PoolName::parse("pool", "p").unwrap(),
            hostname: "h".into(),
            slots: 1,
            cpus: 1,
            memory_bytes: 1 << 30,
            pid: 0,
            launch_id: None,
            resources: Resources::new(),
        };
        let node = core.register_node(now, reg, &mut out).unwrap();
        (Env { core, now, streams: Streams::default(), out: Outbox::default(), then: Vec::new() }, node)
    }

    fn handle(&mut self, event: Input) -> Handled {
        let handled = handle(&mut self.core, self.now, event, &mut self.streams, &mut self.out, &mut self.then);
        self.core.sanity_check();
        handled
    }

    /// Opens stream `conn` for `node`; returns what the loop would send down it.
    fn connect(&mut self, node: &NodeId, conn: u64, hello: Hello) -> mpsc::Receiver<pb::CoordinatorMessage> {
        let (tx, rx) = AgentTx::channel();
        self.handle(Input::Connected { node: node.clone(), conn, hello, tx });
        rx.messages
    }

    /// Submits a one-task job and schedules it onto the only node.
    fn run_one(&mut self) -> AttemptRef {
        let spec = JobSpec::new(PoolName::parse("pool", "p").unwrap(), TaskSpec::command(vec!["true".into()]));
        self.core.submit_job(self.now, spec, &mut self.out).unwrap();
        let mut out = Outbox::default();
        self.core.schedule(self.now, &mut out);
        out.agents
            .into_iter()
            .find_map(|(_, m)| match m {
                ToAgent::Assign(a) => Some(a.attempt),
                _ => None,
            })
            .expect("the task was assigned")
    }

    /// Runs the follow-ups as the writer does once the batch is durable.
    fn committed(&mut self) {
        for follow_up in self.then.drain(..) {
            follow_up(&Ok(()));
        }
    }

    fn logs_stored(&self) -> usize {
        self.out.store.iter().filter(|op| matches!(op, StoreOp::Log(_))).count()
    }
}

#[test]
fn an_accepted_hello_opens_the_stream_and_writes_its_logs() {
    let (mut env, node) = Env::new();
    let attempt = AttemptRef { task: TaskKey { job: JobId(1), index: 0 }, attempt: 1 };
    let mut rx = env.connect(&node, 1, hello());
    assert!(env.streams.get(&node).is_some());
    assert!(env.core.nodes[&node].connected);
    let ran = env.run_one();
    assert_eq!(ran, attempt);
    env.out = Outbox::default();
    // A reconnect that carries the attempt's log: the log is written.
    let _rx2 = env.connect(&node, 2, Hello { running: vec![attempt], logs: vec![chunk(attempt)], ..hello() });
    assert_eq!(env.logs_stored(), 1);
    env.committed();
    assert!(rx.try_recv().is_err(), "nothing is said on an accepted hello");
}

#[test]
fn a_refused_hello_writes_nothing_and_is_told_to_register_only_once_durable() {
    let (mut env, _) = Env::new();
    let stranger = NodeId::from_seq(99);
    let attempt = AttemptRef { task: TaskKey { job: JobId(1), index: 0 }, attempt: 1 };
    let mut rx = env.connect(&stranger, 1, Hello { logs: vec![chunk(attempt)], ..hello() });
    assert_eq!(env.logs_stored(), 0, "a refused stream writes no log");
    assert!(env.streams.get(&stranger).is_none());
    assert!(rx.try_recv().is_err(), "nothing is said before the batch is durable");
    env.committed();
    let msg = rx.try_recv().expect("told to register again");
    assert!(msg.reregister);
}

#[test]
fn a_replaced_stream_counts_for_nothing() {
    let (mut env, node) = Env::new();
    let _old = env.connect(&node, 1, hello());
    let attempt = env.run_one();
    let _new = env.connect(&node, 2, Hello { running: vec![attempt], ..hello() });
    // The old stream's result and heartbeat are ignored...
    let update = AgentUpdate { heartbeat: Some((50.0, 1)), finished: vec![succeeded(attempt)], ..Default::default() };
    let handled = env.handle(Input::FromAgent { node: node.clone(), conn: 1, update });
    assert_eq!(handled, Handled::default());
    assert_eq!(env.core.jobs[&JobId(1)].task(0).unwrap().state, TaskState::Running);
    // ...and so is its closing: the new stream stays.
    env.handle(Input::Disconnected { node: node.clone(), conn: 1 });
    assert!(env.streams.get(&node).is_some() && env.core.nodes[&node].connected);
    // The current stream's result counts.
    env.now += Duration::from_millis(10);
    let update = AgentUpdate { heartbeat: Some((50.0, 1)), finished: vec![succeeded(attempt)], ..Default::default() };
    let handled = env.handle(Input::FromAgent { node: node.clone(), conn: 2, update });
    assert!(handled.heartbeat);
    assert_eq!(env.core.jobs[&JobId(1)].task(0).unwrap().state, TaskState::Succeeded);
    assert_eq!(env.core.nodes[&node].last_seen, env.now);
    env.handle(Input::Disconnected { node: node.clone(), conn: 2 });
    assert!(env.streams.get(&node).is_none() && !env.core.nodes[&node].connected);
}

#[test]
fn the_room_of_a_stale_streams_logs_is_given_back_after_the_commit() {
    let (mut env, node) = Env::new();
    let _old = env.connect(&node, 1, hello());
    let _new = env.connect(&node, 2, hello());
    let all = std::sync::Arc::new(tokio::sync::Semaphore::new(10));
    let stream = std::sync::Arc::new(tokio::sync::Semaphore::new(10));
    let room = crate::runtime::LogRoom {
        all: all.clone().try_acquire_many_owned(4).unwrap(),
        stream: stream.clone().try_acquire_many_owned(4).unwrap(),
    };
    let update = AgentUpdate { room: Some(room), ..Default::default() };
    env.handle(Input::FromAgent { node, conn: 1, update });
    assert_eq!(all.available_permits(), 6, "held until the batch is durable");
    env.committed();
    assert_eq!((all.available_permits(), stream.available_permits()), (10, 10));
}

#[tokio::test]
async fn a_stream_that_stops_reading_is_ended_instead_of_queueing_without_bound() {
    let (tx, rx) = AgentTx::channel();
    for _ in 0..AGENT_QUEUE {
        tx.send(pb::CoordinatorMessage::default());
    }
    let behind = rx.behind.clone();
    let told = tokio::time::timeout(Duration::from_millis(50), behind.notified()).await;
    assert!(told.is_err(), "a stream as far behind as allowed is not ended");
    tx.send(pb::CoordinatorMessage::default());
    tokio::time::timeout(Duration::from_secs(5), rx.behind.notified()).await.expect("one more ends the stream");
    assert_eq!(rx.messages.len(), AGENT_QUEUE, "nothing was queued beyond the bound");
}
