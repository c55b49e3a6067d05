//! Deterministic tests of the core: chosen `now`s, events fed by hand, assertions on
//! the outbox and the state, and `sanity_check()` after every step.

use std::time::{Duration, Instant};

use super::*;
use crate::error::Error;

struct Env {
    core: Core,
    now: Instant,
    out: Outbox,
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn pool_spec(name: &str, provider: Provider, nodes: u32, fill: Fill) -> PoolSpec {
    PoolSpec { name: PoolName::parse("name", name).unwrap(), slots_per_node: 2, provider, target_nodes: nodes, fill }
}

fn job_spec(pool: &str, tasks: u32, priority: i32, max_retries: u32) -> JobSpec {
    JobSpec {
        pool: PoolName::parse("pool", pool).unwrap(),
        name: String::new(),
        priority,
        task: TaskSpec { max_retries, ..TaskSpec::command(vec!["true".into()]) },
        first_index: 0,
        last_index: tasks - 1,
        graph: None,
        open: false,
    }
}

/// A graph job on pool `p` of single tasks, given as `(id, depends_on)`.
fn graph_spec(tasks: &[(&str, &[&str])]) -> JobSpec {
    let groups: Vec<crate::graph::TaskGroup> = tasks
        .iter()
        .map(|(id, deps)| crate::graph::TaskGroup {
            id: id.to_string(),
            spec: job_spec("p", 1, 0, 0).task,
            array: None,
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
        })
        .collect();
    let graph = crate::graph::resolve(groups).unwrap();
    JobSpec { last_index: graph.len() as u32 - 1, graph: Some(std::sync::Arc::new(graph)), ..job_spec("p", 1, 0, 0) }
}

impl Env {
    fn new() -> Self {
        let now = Instant::now();
        let config = CoreConfig { retry_backoff: ms(100), ..CoreConfig::default() };
        Env { core: Core::new(config, (now, 1_000_000)), now, out: Outbox::default() }
    }

    fn with_pool(fill: Fill) -> Self {
        let mut env = Env::new();
        env.core.create_pool(env.now, pool_spec("p", Provider::Static, 0, fill), &mut env.out).unwrap();
        env.check();
        env
    }

    fn check(&self) {
        self.core.sanity_check();
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
    }

    fn take(&mut self) -> Outbox {
        std::mem::take(&mut self.out)
    }

    /// Registers a static node with `slots` and opens its stream.
    fn node(&mut self, slots: u32) -> NodeId {
        self.join(slots, None)
    }

    /// Registers an agent (of a local pool, with `launch_id`) and opens its stream.
    fn join(&mut self, slots: u32, launch_id: Option<NodeId>) -> NodeId {
        let reg = Registration {
            pool: PoolName::parse("pool", "p").unwrap(),
            hostname: "h".into(),
            slots,
            cpus: 2,
            memory_bytes: 1 << 30,
            pid: 0,
            launch_id,
        };
        let id = self.core.register_node(self.now, reg, &mut self.out).unwrap();
        self.core.on_hello(self.now, &id, vec![], vec![], &mut self.out).unwrap();
        self.check();
        id
    }

    fn submit(&mut self, tasks: u32, priority: i32, retries: u32) -> JobId {
        let id = self.core.submit_job(self.now, job_spec("p", tasks, priority, retries), &mut self.out).unwrap();
        self.check();
        id
    }

    /// Runs the scheduler; returns the assignments in order.
    fn schedule(&mut self) -> Vec<(NodeId, AttemptRef)> {
        let mut out = Outbox::default();
        self.core.schedule(self.now, &mut out);
        self.check();
        self.out.store.append(&mut out.store);
        out.agents
            .into_iter()
            .filter_map(|(n, m)| match m {
                ToAgent::Assign(a) => Some((n, a.attempt)),
                _ => None,
            })
            .collect()
    }

    fn report(&mut self, node: &NodeId, attempt: AttemptRef, outcome: Outcome) {
        let result = TaskResult {
            attempt,
            outcome,
            exit_code: Some(if outcome == Outcome::Succeeded { 0 } else { 1 }),
            signal: None,
            message: String::new(),
            started_at_ms: 0,
            ended_at_ms: 0,
        };
        self.core.on_task_results(self.now, node, vec![result], &mut self.out);
        self.check();
    }

    fn tick(&mut self) {
        self.core.on_tick(self.now, &mut self.out);
        self.check();
    }

    fn task(&self, job: JobId, index: u32) -> Task {
        *self.core.jobs[&job].task(index).unwrap()
    }
}

#[test]
fn higher_priority_first_then_submission_order() {
    let mut env = Env::with_pool(Fill::Spread);
    let low = env.submit(2, 0, 0);
    let high = env.submit(2, 10, 0);
    let later_high = env.submit(1, 10, 0);
    let _n = env.node(4);
    let order: Vec<TaskKey> = env.schedule().into_iter().map(|(_, a)| a.task).collect();
    assert_eq!(
        order,
        vec![
            TaskKey { job: high, index: 0 },
            TaskKey { job: high, index: 1 },
            TaskKey { job: later_high, index: 0 },
            TaskKey { job: low, index: 0 },
        ]
    );
    assert_eq!(env.core.jobs[&low].counts.ready, 1);
}

#[test]
fn spread_and_pack_choose_nodes() {
    let a = NodeId::from_seq(1);
    let b = NodeId::from_seq(2);
    let free = vec![(1, a.clone()), (3, b.clone())];
    assert_eq!(schedule::pick(&free, 1, Fill::Spread), Some(1));
    assert_eq!(schedule::pick(&free, 1, Fill::Pack), Some(0));
    assert_eq!(schedule::pick(&free, 2, Fill::Pack), Some(1));
    assert_eq!(schedule::pick(&free, 4, Fill::Spread), None);
    let tie = vec![(2, a), (2, b)];
    assert_eq!(schedule::pick(&tie, 1, Fill::Spread), Some(0), "ties go to the first node");

    for (fill, expect_on_second) in [(Fill::Spread, 1), (Fill::Pack, 0)] {
        let mut env = Env::with_pool(fill);
        let n1 = env.node(2);
        let n2 = env.node(2);
        env.submit(2, 0, 0);
        let placed = env.schedule();
        let on_second = placed.iter().filter(|(n, _)| *n == n2).count();
        assert_eq!(on_second, expect_on_second, "{fill}: {placed:?}");
        assert!(placed.iter().all(|(n, _)| *n == n1 || *n == n2));
    }
}

#[test]
fn assignments_never_exceed_free_slots() {
    let mut env = Env::with_pool(Fill::Spread);
    let n = env.node(3);
    let job = env.submit(10, 0, 0);
    let first = env.schedule();
    assert_eq!(first.len(), 3);
    assert!(env.schedule().is_empty(), "no free slot left");
    env.report(&n, first[0].1, Outcome::Succeeded);
    let next = env.schedule();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].1.task, TaskKey { job, index: 3 });
}

#[test]
fn silent_node_is_lost_and_its_tasks_requeued_without_using_retries() {
    let mut env = Env::with_pool(Fill::Spread);
    let n1 = env.node(2);
    let job = env.submit(2, 0, 0);
    let placed = env.schedule();
    assert_eq!(placed.len(), 2);

    env.advance(ms(5000));
    env.tick();
    assert_eq!(env.core.nodes[&n1].state(), NodeState::Running, "exactly the timeout is not yet silence");

    env.advance(ms(1));
    env.take();
    env.tick();
    assert_eq!(env.core.nodes[&n1].state(), NodeState::Lost);
    assert_eq!(env.core.nodes[&n1].record.reason, Some(NodeReason::HeartbeatTimeout));
    let t = env.task(job, 0);
    assert_eq!((t.state, t.failures, t.node_losses, t.attempt), (TaskState::Ready, 0, 1, 1));
    let out = env.take();
    let lost_attempts =
        out.store.iter().filter(|op| matches!(op, StoreOp::EndAttempt { outcome: Outcome::NodeLost, .. })).count();
    assert_eq!(lost_attempts, 2);

    // A new node picks the work up as attempt 2.
    let n2 = env.node(2);
    let again = env.schedule();
    assert_eq!(again.len(), 2);
    assert!(again.iter().all(|(n, a)| *n == n2 && a.attempt == 2));
}

#[test]
fn heartbeats_keep_a_node_alive() {
    let mut env = Env::with_pool(Fill::Spread);
    let n = env.node(1);
    for _ in 0..10 {
        env.advance(ms(1000));
        assert!(env.core.on_node_message(env.now, &n, &mut env.out));
        env.tick();
    }
    assert_eq!(env.core.nodes[&n].state(), NodeState::Idle);
}

#[test]
fn results_for_other_attempts_or_nodes_are_ignored_but_acknowledged() {
    let mut env = Env::with_pool(Fill::Spread);
    let n1 = env.node(1);
    let job = env.submit(1, 0, 0);
    let (_, first) = env.schedule()[0].clone();
    env.advance(ms(5001));
    env.tick(); // n1 lost
    let n2 = env.node(1);
    let (_, second) = env.schedule()[0].clone();
    assert_eq!(second.attempt, 2);

    // The frozen node wakes up: it is told to register again, its result ignored.
    env.take();
    assert!(!env.core.on_node_message(env.now, &n1, &mut env.out));
    assert!(matches!(env.take().agents.as_slice(), [(n, ToAgent::Reregister(_))] if *n == n1));
    env.report(&n1, first, Outcome::Succeeded);
    assert_eq!(env.task(job, 0).state, TaskState::Running);
    assert!(env.take().agents.contains(&(n1.clone(), ToAgent::Ack(first))));
    // Even on the right node, an old attempt does not count.
    env.report(&n2, first, Outcome::Succeeded);
    assert_eq!(env.task(job, 0).state, TaskState::Running);

    env.report(&n2, second, Outcome::Succeeded);
    assert_eq!(env.task(job, 0).state, TaskState::Succeeded);
    assert_eq!(env.core.jobs[&job].state, JobState::Completed);
    // A duplicate report after completion changes nothing.
    env.report(&n2, second, Outcome::Failed);
    assert_eq!(env.task(job, 0).state, TaskState::Succeeded);
    assert_eq!(env.core.jobs[&job].counts.succeeded, 1);
}

#[test]
fn retries_back_off_then_fail_the_task() {
    let mut env = Env::with_pool(Fill::Spread);
    let n = env.node(1);
    let job = env.submit(1, 0, 2);
    let mut delays = Vec::new();
    for attempt in 1..=3 {
        let placed = env.schedule();
        assert_eq!(placed.len(), 1, "attempt {attempt}");
        assert_eq!(placed[0].1.attempt, attempt);
        env.report(&n, placed[0].1, Outcome::Failed);
        if attempt < 3 {
            assert_eq!(env.task(job, 0).state, TaskState::Ready);
            assert!(env.schedule().is_empty(), "backing off");
            let (at, _) = *env.core.delayed.first().unwrap();
            delays.push(at - env.now);
            env.advance(at - env.now);
            env.tick();
        }
    }
    assert_eq!(delays, vec![ms(100), ms(200)]);
    let t = env.task(job, 0);
    assert_eq!((t.state, t.failures, t.attempt), (TaskState::Failed, 3, 3));
    assert_eq!(env.core.jobs[&job].state, JobState::Failed);
}

#[test]
fn timeouts_count_as_failures() {
    let mut env = Env::with_pool(Fill::Spread);
    let n = env.node(1);
    let job = env.submit(1, 0, 0);
    let (_, a) = env.schedule()[0].clone();
    env.report(&n, a, Outcome::TimedOut);
    assert_eq!(env.task(job, 0).state, TaskState::Failed);
}

#[test]
fn a_task_that_keeps_losing_nodes_is_stopped() {
    let mut env = Env::with_pool(Fill::Spread);
    let job = env.submit(1, 0, 10);
    for round in 1..=4 {
        let _n = env.node(1);
        assert_eq!(env.schedule().len(), 1, "round {round}");
        env.advance(ms(5001));
        env.tick();
    }
    let t = env.task(job, 0);
    assert_eq!((t.state, t.node_losses, t.failures), (TaskState::Failed, 4, 0));
    assert_eq!(env.core.jobs[&job].state, JobState::Failed);
}

#[test]
fn hello_reconciles_what_the_agent_runs() {
    let mut env = Env::with_pool(Fill::Spread);
    let n = env.node(2);
    let job = env.submit(2, 0, 0);
    let placed = env.schedule();
    let (a0, a1) = (placed[0].1, placed[1].1);
    env.core.on_disconnected(&n);
    env.check();
    assert!(env.schedule().is_empty(), "no work for a disconnected node");

    // The agent reconnects: it finished a0 meanwhile, never got a1, and runs a
    // stale attempt the coordinator no longer wants.
    let stale = AttemptRef { task: TaskKey { job, index: 0 }, attempt: 9 };
    let done = TaskResult {
        attempt: a0,
        outcome: Outcome::Succeeded,
        exit_code: Some(0),
        signal: None,
        message: String::new(),
        started_at_ms: 0,
        ended_at_ms: 0,
    };
    env.take();
    env.core.on_hello(env.now, &n, vec![stale], vec![done], &mut env.out).unwrap();
    env.check();
    let out = env.take();
    assert!(out.agents.contains(&(n.clone(), ToAgent::Kill(stale))));
    assert!(out.agents.contains(&(n.clone(), ToAgent::Ack(a0))));
    assert_eq!(env.task(job, 0).state, TaskState::Succeeded);
    let t1 = env.task(job, a1.task.index);
    assert_eq!((t1.state, t1.failures), (TaskState::Ready, 0));
    assert_eq!(env.schedule().len(), 1);
}

#[test]
fn a_lost_node_must_register_again() {
    let mut env = Env::with_pool(Fill::Spread);
    let n = env.node(1);
    env.advance(ms(5001));
    env.tick();
    let err = env.core.on_hello(env.now, &n, vec![], vec![], &mut env.out).unwrap_err();
    assert!(err.0.contains("lost"), "{err:?}");
    let unknown = NodeId::from_seq(99);
    assert!(env.core.on_hello(env.now, &unknown, vec![], vec![], &mut env.out).is_err());
}

#[test]
fn cancel_kills_running_and_drops_queued() {
    let mut env = Env::with_pool(Fill::Spread);
    let n = env.node(1);
    let job = env.submit(3, 0, 0);
    let (_, a) = env.schedule()[0].clone();
    env.take();
    env.core.cancel_job(env.now, job, &mut env.out).unwrap();
    env.check();
    let out = env.take();
    assert!(out.agents.contains(&(n.clone(), ToAgent::Kill(a))));
    assert_eq!(env.core.jobs[&job].state, JobState::Cancelled);
    assert_eq!(env.core.jobs[&job].counts.cancelled, 3);
    assert!(env.schedule().is_empty());
    // The agent's report of the killed attempt changes nothing.
    env.report(&n, a, Outcome::Cancelled);
    assert_eq!(env.core.jobs[&job].counts.cancelled, 3);
}

#[test]
fn drained_nodes_take_no_new_work() {
    let mut env = Env::with_pool(Fill::Spread);
    let n = env.node(2);
    env.submit(4, 0, 0);
    let placed = env.schedule();
    assert_eq!(placed.len(), 2);
    env.core.drain_node(&n, &mut env.out).unwrap();
    env.check();
    env.report(&n, placed[0].1, Outcome::Succeeded);
    assert!(env.schedule().is_empty());
    assert_eq!(env.core.nodes[&n].state(), NodeState::Draining);
}

#[test]
fn bad_requests_change_nothing() {
    let mut env = Env::with_pool(Fill::Spread);
    env.take();
    let before = format!("{:?}", env.core.jobs);
    let err = env.core.submit_job(env.now, job_spec("nope", 1, 0, 0), &mut env.out).unwrap_err();
    assert!(err.to_string().contains("pool 'nope' does not exist"), "{err}");
    let mut big = job_spec("p", 1, 0, 0);
    big.task.slots = 3;
    let err = env.core.submit_job(env.now, big, &mut env.out).unwrap_err();
    assert!(err.to_string().contains("task.slots"), "{err}");
    let err =
        env.core.create_pool(env.now, pool_spec("p", Provider::Static, 0, Fill::Spread), &mut env.out).unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }));
    assert!(env.core.cancel_job(env.now, JobId(42), &mut env.out).is_err());
    assert!(env.core.drain_node(&NodeId::from_seq(42), &mut env.out).is_err());
    assert!(env.out.is_empty(), "refused requests write nothing: {:?}", env.out);
    assert_eq!(before, format!("{:?}", env.core.jobs));
    env.check();
}

#[test]
fn pool_delete_needs_force_with_active_jobs() {
    let mut env = Env::with_pool(Fill::Spread);
    let n = env.node(1);
    let job = env.submit(2, 0, 0);
    env.schedule();
    let name = PoolName::parse("name", "p").unwrap();
    let err = env.core.delete_pool(env.now, &name, false, &mut env.out).unwrap_err();
    assert!(err.to_string().contains("--force"), "{err}");
    assert!(env.core.pools.contains_key(&name));
    let deleted = env.core.delete_pool(env.now, &name, true, &mut env.out).unwrap();
    env.check();
    assert_eq!(deleted.cancelled_jobs, vec![job]);
    assert_eq!(env.core.jobs[&job].state, JobState::Cancelled);
    assert_eq!(env.core.nodes[&n].state(), NodeState::Removed);
    assert!(env.out.agents.iter().any(|(id, m)| *id == n && matches!(m, ToAgent::Shutdown(_))));
}

#[test]
fn local_pools_launch_replace_and_shrink() {
    let mut env = Env::new();
    env.core.create_pool(env.now, pool_spec("p", Provider::Local, 2, Fill::Spread), &mut env.out).unwrap();
    env.check();
    let launched: Vec<NodeId> = env
        .take()
        .provider
        .into_iter()
        .filter_map(|op| match op {
            ProviderOp::Launch { node, .. } => Some(node),
            _ => None,
        })
        .collect();
    assert_eq!(launched.len(), 2);
    env.tick();
    assert!(env.take().provider.is_empty(), "starting nodes count toward the size");

    // One registers; the other dies before it does and is replaced.
    env.join(2, Some(launched[0].clone()));
    env.core.on_node_exited(env.now, &launched[1], &mut env.out);
    env.tick();
    let replaced = env.take().provider.iter().filter(|op| matches!(op, ProviderOp::Launch { .. })).count();
    assert_eq!(replaced, 1);

    // Shrinking to 1 removes the starting node before the registered one.
    let name = PoolName::parse("name", "p").unwrap();
    env.core.resize_pool(env.now, &name, 1, &mut env.out).unwrap();
    env.check();
    assert_eq!(env.core.nodes[&launched[0]].state(), NodeState::Idle);
    assert_eq!(env.core.pools[&name].nodes.len(), 1);

    // A node that never registers is given up on after the start timeout.
    env.core.resize_pool(env.now, &name, 2, &mut env.out).unwrap();
    env.advance(env.core.config.start_timeout + ms(1));
    env.core.on_node_message(env.now, &launched[0], &mut env.out);
    env.tick();
    assert!(env.core.pools[&name].last_error.is_some());
    assert!(env.core.pools[&name].next_launch_at.is_some(), "launch failures back off");
}

#[test]
fn restore_from_the_store_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = crate::store::Store::open(dir.path()).unwrap();
    let mut env = Env::with_pool(Fill::Spread);
    let n = env.node(2);
    let job = env.submit(5, 3, 1);
    let placed = env.schedule();
    env.report(&n, placed[0].1, Outcome::Succeeded);
    env.report(&n, placed[1].1, Outcome::Failed);
    let mut ops = std::mem::take(&mut env.out.store);
    let mut out = Outbox::default();
    env.core.schedule(env.now, &mut out);
    ops.extend(out.store);
    store.apply(&ops).unwrap();

    let snapshot = store.load().unwrap();
    let mut restored = Core::new(env.core.config.clone(), (env.now, 1_000_000));
    restored.restore(snapshot, env.now, &mut Outbox::default());
    restored.sanity_check();
    let (a, b) = (&env.core.jobs[&job], &restored.jobs[&job]);
    assert_eq!(a.counts, b.counts);
    assert_eq!(a.tasks, b.tasks);
    assert_eq!(a.spec, b.spec);
    assert_eq!(env.core.running, restored.running);
    assert_eq!(restored.nodes[&n].slots_used, env.core.nodes[&n].slots_used);
    // New ids continue after the restored ones.
    let mut out = Outbox::default();
    let next = restored.submit_job(env.now, job_spec("p", 1, 0, 0), &mut out).unwrap();
    assert_eq!(next, JobId(job.0 + 1));
    // The node gets two timeouts to come back, then its tasks go back to the queue.
    restored.on_tick(env.now + ms(10_000), &mut out);
    assert_eq!(restored.nodes[&n].state(), NodeState::Running);
    restored.on_tick(env.now + ms(10_001), &mut out);
    restored.sanity_check();
    assert_eq!(restored.nodes[&n].state(), NodeState::Lost);
    assert!(restored.running.is_empty());
}

#[test]
fn restore_treats_unrecorded_tasks_of_a_cancelled_job_as_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = crate::store::Store::open(dir.path()).unwrap();
    let mut env = Env::with_pool(Fill::Spread);
    let job = env.submit(1000, 0, 0);
    env.core.cancel_job(env.now, job, &mut env.out).unwrap();
    store.apply(&env.out.store).unwrap();
    let mut restored = Core::new(env.core.config.clone(), (env.now, 1_000_000));
    restored.restore(store.load().unwrap(), env.now, &mut Outbox::default());
    restored.sanity_check();
    assert_eq!(restored.jobs[&job].counts.cancelled, 1000);
    assert_eq!(restored.jobs[&job].state, JobState::Cancelled);
}

#[test]
fn coordinator_shutdown_requeues_local_work_without_counting_a_loss() {
    let mut env = Env::new();
    env.core.create_pool(env.now, pool_spec("p", Provider::Local, 1, Fill::Spread), &mut env.out).unwrap();
    let node = match env.take().provider.first() {
        Some(ProviderOp::Launch { node, .. }) => node.clone(),
        other => panic!("expected a launch, got {other:?}"),
    };
    env.join(2, Some(node.clone()));
    let job = env.submit(1, 0, 0);
    assert_eq!(env.schedule().len(), 1);
    env.take();
    env.core.stop_local_nodes(env.now, &mut env.out);
    env.check();
    let t = env.task(job, 0);
    assert_eq!((t.state, t.node_losses, t.failures), (TaskState::Ready, 0, 0));
    assert_eq!(env.core.nodes[&node].record.reason, Some(NodeReason::CoordinatorShutdown));
    assert!(env.out.provider.contains(&ProviderOp::Stop { node: node.clone(), pid: 0 }));
}

/// Finishes `n` attempts of `job` on `node`, each reported to have run `run_ms`.
fn finish_runs(env: &mut Env, node: &NodeId, placed: &[(NodeId, AttemptRef)], run_ms: u64) {
    for (_, attempt) in placed {
        let result = TaskResult {
            attempt: *attempt,
            outcome: Outcome::Succeeded,
            exit_code: Some(0),
            signal: None,
            message: String::new(),
            started_at_ms: 1_000,
            ended_at_ms: 1_000 + run_ms,
        };
        env.core.on_task_results(env.now, node, vec![result], &mut env.out);
        env.check();
    }
}

#[test]
fn short_tasks_are_queued_ahead_on_nodes_and_long_ones_are_not() {
    let mut env = Env::with_pool(Fill::Spread);
    let n = env.node(2);
    let short = env.submit(100, 0, 0);
    // No run times yet: only the free slots are used.
    let placed = env.schedule();
    assert_eq!(placed.len(), 2);
    finish_runs(&mut env, &n, &placed, 5);
    let placed = env.schedule();
    assert_eq!(placed.len(), 2);
    finish_runs(&mut env, &n, &placed, 5);
    // Four short runs seen: two running plus two queued per slot.
    let want = 2 * (1 + schedule::PREFETCH_PER_SLOT);
    assert_eq!(env.schedule().len(), want as usize);
    assert_eq!(env.core.nodes[&n].slots_used, want);
    assert_eq!(env.core.jobs[&short].counts.running, want);

    let mut env = Env::with_pool(Fill::Spread);
    let n = env.node(2);
    env.submit(100, 0, 0);
    for _ in 0..2 {
        let placed = env.schedule();
        finish_runs(&mut env, &n, &placed, 5_000);
    }
    assert_eq!(env.schedule().len(), 2, "long tasks are never queued behind others");
}

#[test]
fn prefetch_never_lets_a_lower_priority_job_jump_ahead() {
    let mut env = Env::with_pool(Fill::Spread);
    let n = env.node(1);
    let low = env.submit(100, 0, 0);
    for _ in 0..3 {
        let placed = env.schedule();
        finish_runs(&mut env, &n, &placed, 1);
    }
    let high = env.submit(5, 10, 0);
    let placed = env.schedule();
    assert_eq!(placed.len(), 1, "the high-priority job has no run times: no prefetch for anyone");
    assert_eq!(placed[0].1.task.job, high);
    assert_eq!(env.core.jobs[&low].counts.running, 0);
}

#[test]
fn shrinking_a_busy_local_pool_drains_then_removes_even_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = crate::store::Store::open(dir.path()).unwrap();
    let mut env = Env::new();
    env.core.create_pool(env.now, pool_spec("p", Provider::Local, 2, Fill::Spread), &mut env.out).unwrap();
    let launched: Vec<NodeId> = env
        .out
        .provider
        .iter()
        .filter_map(|op| match op {
            ProviderOp::Launch { node, .. } => Some(node.clone()),
            _ => None,
        })
        .collect();
    let a = env.join(2, Some(launched[0].clone()));
    let b = env.join(2, Some(launched[1].clone()));
    let job = env.submit(4, 0, 0);
    let placed = env.schedule();
    assert_eq!(placed.len(), 4);
    let name = PoolName::parse("name", "p").unwrap();
    env.core.resize_pool(env.now, &name, 1, &mut env.out).unwrap();
    env.check();
    assert_eq!(env.core.nodes[&a].state(), NodeState::Draining, "busy nodes are drained, not killed");
    assert_eq!(env.core.nodes[&b].state(), NodeState::Running);
    assert!(!env.out.provider.iter().any(|op| matches!(op, ProviderOp::Stop { .. })));

    // The coordinator restarts: the node is still to be removed once idle.
    store.apply(&env.out.store).unwrap();
    let mut core = Core::new(env.core.config.clone(), (env.now, 1_000_000));
    core.restore(store.load().unwrap(), env.now, &mut Outbox::default());
    core.sanity_check();
    assert!(core.nodes[&a].remove_when_idle());
    let mut out = Outbox::default();
    core.on_hello(env.now, &a, placed.iter().filter(|(n, _)| *n == a).map(|(_, at)| *at).collect(), vec![], &mut out)
        .unwrap();
    core.on_hello(env.now, &b, placed.iter().filter(|(n, _)| *n == b).map(|(_, at)| *at).collect(), vec![], &mut out)
        .unwrap();
    for (node, attempt) in &placed {
        let result = TaskResult {
            attempt: *attempt,
            outcome: Outcome::Succeeded,
            exit_code: Some(0),
            signal: None,
            message: String::new(),
            started_at_ms: 0,
            ended_at_ms: 0,
        };
        core.on_task_results(env.now, node, vec![result], &mut out);
    }
    core.on_tick(env.now, &mut out);
    core.sanity_check();
    assert_eq!(core.nodes[&a].state(), NodeState::Removed);
    assert_eq!(core.jobs[&job].state, JobState::Completed, "scaling down lost no task");
    assert!(out.provider.contains(&ProviderOp::Stop { node: a.clone(), pid: 0 }));
}

#[test]
fn a_value_the_store_cannot_hold_is_skipped_not_retried_forever() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = crate::store::Store::open(dir.path()).unwrap();
    let pool = pool_spec("p", Provider::Static, 0, Fill::Spread);
    let bad = NodeRecord {
        id: NodeId::from_seq(1),
        pool: pool.name.clone(),
        hostname: "h".into(),
        slots: 1,
        cpus: 1,
        memory_bytes: u64::MAX,
        pid: 0,
        status: NodeStatus::Up,
        reason: None,
        registered_at_ms: 0,
    };
    let ops = vec![StoreOp::PutPool { spec: pool, created_at_ms: 1 }, StoreOp::PutNode(bad)];
    assert!(store.apply(&ops).is_err(), "u64::MAX does not fit SQLite's integers");
    let (writer, thread) = crate::store::Writer::spawn(store);
    let (tx, rx) = std::sync::mpsc::channel();
    writer.submit(crate::store::Batch { ops, then: vec![Box::new(move || tx.send(()).unwrap())] });
    rx.recv_timeout(Duration::from_secs(10)).expect("the writer went on");
    drop(writer);
    thread.join().unwrap();
    let snapshot = crate::store::Store::open(dir.path()).unwrap().load().unwrap();
    assert_eq!(snapshot.pools.len(), 1, "the good change was written");
    assert!(snapshot.nodes.is_empty());
}

#[test]
fn graph_tasks_wait_for_their_upstream() {
    let mut env = Env::with_pool(Fill::Spread);
    let n = env.node(4);
    let spec = graph_spec(&[("a", &[]), ("b", &["a"]), ("c", &["a"]), ("d", &["b", "c"])]);
    let job = env.core.submit_job(env.now, spec, &mut env.out).unwrap();
    env.check();
    assert_eq!(env.core.jobs[&job].counts.waiting, 3);
    let order = |placed: Vec<(NodeId, AttemptRef)>| placed.into_iter().map(|(_, a)| a).collect::<Vec<_>>();
    let first = order(env.schedule());
    assert_eq!(first.iter().map(|a| a.task.index).collect::<Vec<_>>(), vec![0]);
    env.report(&n, first[0], Outcome::Succeeded);
    let middle = order(env.schedule());
    assert_eq!(middle.iter().map(|a| a.task.index).collect::<Vec<_>>(), vec![1, 2]);
    env.report(&n, middle[0], Outcome::Succeeded);
    assert!(env.schedule().is_empty(), "d still waits for c");
    env.report(&n, middle[1], Outcome::Succeeded);
    let last = order(env.schedule());
    assert_eq!(last.iter().map(|a| a.task.index).collect::<Vec<_>>(), vec![3]);
    env.report(&n, last[0], Outcome::Succeeded);
    assert_eq!(env.core.jobs[&job].state, JobState::Completed);
}

#[test]
fn a_failed_task_cancels_what_depends_on_it_and_says_why() {
    let mut env = Env::with_pool(Fill::Spread);
    let n = env.node(4);
    let spec = graph_spec(&[("prep", &[]), ("other", &[]), ("use", &["prep"]), ("final", &["use", "other"])]);
    let job = env.core.submit_job(env.now, spec, &mut env.out).unwrap();
    let placed = env.schedule();
    assert_eq!(placed.len(), 2);
    env.report(&n, placed[0].1, Outcome::Failed);
    let j = &env.core.jobs[&job];
    assert_eq!(j.task(2).unwrap().state, TaskState::Cancelled);
    assert_eq!(j.task(3).unwrap().state, TaskState::Cancelled);
    assert_eq!(j.reasons[&3], "upstream_failed: task 'prep' failed");
    assert_eq!(j.state, JobState::Active, "'other' is still running");
    let reasons: Vec<Option<String>> = env
        .out
        .store
        .iter()
        .filter_map(|op| match op {
            StoreOp::PutTask(t) if t.state == TaskState::Cancelled => Some(t.reason.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(reasons.len(), 2, "the reasons are stored");
    env.report(&n, placed[1].1, Outcome::Succeeded);
    assert_eq!(env.core.jobs[&job].state, JobState::Failed);
}

#[test]
fn a_graph_job_is_restored_with_its_waiting_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = crate::store::Store::open(dir.path()).unwrap();
    let mut env = Env::with_pool(Fill::Spread);
    let n = env.node(4);
    let spec = graph_spec(&[("a", &[]), ("b", &["a"]), ("c", &["b"]), ("x", &[]), ("y", &["x"])]);
    let job = env.core.submit_job(env.now, spec, &mut env.out).unwrap();
    let placed = env.schedule();
    env.report(&n, placed[0].1, Outcome::Succeeded); // a
    env.report(&n, placed[1].1, Outcome::Failed); // x, so y is cancelled
    env.schedule(); // b starts
    store.apply(&env.out.store).unwrap();
    let mut restored = Core::new(env.core.config.clone(), (env.now, 1_000_000));
    restored.restore(store.load().unwrap(), env.now, &mut Outbox::default());
    restored.sanity_check();
    let (a, b) = (&env.core.jobs[&job], &restored.jobs[&job]);
    assert_eq!(a.tasks, b.tasks);
    assert_eq!(a.counts, b.counts);
    assert_eq!(a.waiting_on, b.waiting_on);
    assert_eq!(b.reasons[&4], "upstream_failed: task 'x' failed");
}

fn group(id: &str, deps: &[&str]) -> crate::graph::TaskGroup {
    crate::graph::TaskGroup {
        id: id.into(),
        spec: job_spec("p", 1, 0, 0).task,
        array: None,
        depends_on: deps.iter().map(|d| d.to_string()).collect(),
    }
}

#[test]
fn an_open_job_takes_tasks_until_closed() {
    let mut env = Env::with_pool(Fill::Spread);
    let n = env.node(2);
    let spec = JobSpec { open: true, ..graph_spec(&[("first", &[])]) };
    let job = env.core.submit_job(env.now, spec, &mut env.out).unwrap();
    let placed = env.schedule();
    env.report(&n, placed[0].1, Outcome::Succeeded);
    assert_eq!(env.core.jobs[&job].state, JobState::Active, "open jobs wait for more");

    // New tasks may depend on old ones (done or not) and on each other.
    let (first, added) = env
        .core
        .add_tasks(env.now, job, vec![group("second", &["first"]), group("third", &["second"])], &mut env.out)
        .unwrap();
    env.check();
    assert_eq!((first, added), (1, 2));
    assert_eq!(env.core.jobs[&job].task(1).unwrap().state, TaskState::Ready);
    assert_eq!(env.core.jobs[&job].task(2).unwrap().state, TaskState::Waiting);
    let err = env.core.add_tasks(env.now, job, vec![group("loop", &["loop"])], &mut env.out).unwrap_err();
    assert!(err.to_string().contains("depends on itself"), "{err}");
    let err = env.core.add_tasks(env.now, job, vec![group("second", &[])], &mut env.out).unwrap_err();
    assert!(err.to_string().contains("used twice"), "{err}");
    env.check();

    for _ in 0..2 {
        let placed = env.schedule();
        env.report(&n, placed[0].1, Outcome::Succeeded);
    }
    assert_eq!(env.core.jobs[&job].state, JobState::Active);
    env.core.close_job(env.now, job, &mut env.out).unwrap();
    env.check();
    assert_eq!(env.core.jobs[&job].state, JobState::Completed);
    let err = env.core.add_tasks(env.now, job, vec![group("late", &[])], &mut env.out).unwrap_err();
    assert!(err.to_string().contains("not open"), "{err}");
}

#[test]
fn tasks_added_after_their_upstream_failed_are_cancelled_at_once() {
    let mut env = Env::with_pool(Fill::Spread);
    let n = env.node(2);
    let spec = JobSpec { open: true, ..graph_spec(&[("flaky", &[])]) };
    let job = env.core.submit_job(env.now, spec, &mut env.out).unwrap();
    let placed = env.schedule();
    env.report(&n, placed[0].1, Outcome::Failed);
    env.core.add_tasks(env.now, job, vec![group("after", &["flaky"]), group("fine", &[])], &mut env.out).unwrap();
    env.check();
    let j = &env.core.jobs[&job];
    assert_eq!(j.task(1).unwrap().state, TaskState::Cancelled);
    assert_eq!(j.reasons[&1], "upstream_failed: task 'flaky' failed");
    assert_eq!(j.task(2).unwrap().state, TaskState::Ready);

    // Restored from the store, the job has all its tasks.
    let dir = tempfile::tempdir().unwrap();
    let mut store = crate::store::Store::open(dir.path()).unwrap();
    store.apply(&env.out.store).unwrap();
    let mut restored = Core::new(env.core.config.clone(), (env.now, 1_000_000));
    restored.restore(store.load().unwrap(), env.now, &mut Outbox::default());
    restored.sanity_check();
    assert_eq!(restored.jobs[&job].tasks, env.core.jobs[&job].tasks);
    assert!(restored.jobs[&job].spec.open);
}

#[test]
fn an_empty_open_job_completes_when_closed() {
    let mut env = Env::with_pool(Fill::Spread);
    let graph = crate::graph::resolve(vec![]).unwrap();
    let spec = JobSpec { open: true, last_index: 0, graph: Some(std::sync::Arc::new(graph)), ..job_spec("p", 1, 0, 0) };
    let job = env.core.submit_job(env.now, spec, &mut env.out).unwrap();
    env.check();
    assert_eq!(env.core.jobs[&job].tasks.len(), 0);
    env.core.close_job(env.now, job, &mut env.out).unwrap();
    assert_eq!(env.core.jobs[&job].state, JobState::Completed);
}
