//! Prometheus metrics, served as text at `/metrics` on the HTTP address.
//!
//! Two sources, so that the core stays free of them: counters and histograms are
//! taken from what the store writer commits ([`Metrics::on_commit`]: task outcomes,
//! run and queue times, store latency, node losses), and gauges are read from the
//! core when scraped ([`Metrics::render`]: queues, nodes, slots, autoscale targets).

use std::collections::HashMap;
use std::time::Instant;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::core::{Core, StoreOp};
use crate::events::{Event, Kind};
use crate::model::*;

/// Buckets for task times, 1 ms to about 4.5 hours.
fn task_time_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.001, 4.0, 12).unwrap_or_default()
}

/// Every metric the coordinator exports.
pub struct Metrics {
    registry: Registry,
    attempts: IntCounterVec,
    tasks_finished: IntCounterVec,
    scheduling_latency: HistogramVec,
    run_time: HistogramVec,
    heartbeat_timeouts: IntCounterVec,
    heartbeats: IntCounter,
    store_commit: Histogram,
    store_changes: IntCounter,
    events: IntCounter,
    queued: IntGaugeVec,
    running: IntGaugeVec,
    assigned: IntGaugeVec,
    nodes: IntGaugeVec,
    slots: IntGaugeVec,
    target_nodes: IntGaugeVec,
    late_heartbeats: IntGaugeVec,
    jobs: IntGaugeVec,
    last_event: IntGauge,
    store_can_write: IntGauge,
}

// The `expect`s below run once, in `Metrics::new`, on constant names and labels: no
// input reaches them, and the unit test at the end builds every metric.

/// Registers `metric` and hands it back.
fn register<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: M) -> M {
    // Names are fixed and unique: registering cannot fail.
    let _ = registry.register(Box::new(metric.clone()));
    metric
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(r, IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(r, IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
}

fn histogram_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(task_time_buckets());
    register(r, HistogramVec::new(opts, labels).expect("valid metric"))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        Metrics {
            attempts: counter_vec(
                &r,
                "corral_task_attempts_total",
                "Task attempts that ended, by pool and outcome (succeeded, failed, timed_out, cancelled, node_lost, spawn_failed).",
                &["pool", "outcome"],
            ),
            tasks_finished: counter_vec(
                &r,
                "corral_tasks_finished_total",
                "Tasks that reached a final state, by pool and state (succeeded, failed, cancelled).",
                &["pool", "state"],
            ),
            scheduling_latency: histogram_vec(
                &r,
                "corral_task_scheduling_latency_seconds",
                "From a task being queued (submitted, retried, requeued, released by its upstream) to its assignment to a node.",
                &["pool"],
            ),
            run_time: histogram_vec(
                &r,
                "corral_task_run_time_seconds",
                "How long task attempts ran, by pool and outcome.",
                &["pool", "outcome"],
            ),
            heartbeat_timeouts: counter_vec(
                &r,
                "corral_heartbeats_missed_total",
                "Nodes declared lost because their heartbeats stopped for the heartbeat timeout.",
                &["pool"],
            ),
            heartbeats: register(
                &r,
                IntCounter::new("corral_heartbeats_received_total", "Heartbeats received from agents.")
                    .expect("valid metric"),
            ),
            store_commit: register(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "corral_store_commit_duration_seconds",
                        "How long one group commit to the store took (write and fsync).",
                    )
                    .buckets(prometheus::exponential_buckets(0.0001, 2.0, 16).unwrap_or_default()),
                )
                .expect("valid metric"),
            ),
            store_changes: register(
                &r,
                IntCounter::new("corral_store_changes_total", "Changes written to the store.").expect("valid metric"),
            ),
            events: register(
                &r,
                IntCounter::new("corral_events_recorded_total", "Events recorded in the event feed.")
                    .expect("valid metric"),
            ),
            queued: gauge_vec(&r, "corral_pool_queued_tasks", "Tasks ready and waiting for a slot.", &["pool"]),
            running: gauge_vec(&r, "corral_pool_running_tasks", "Tasks whose process runs now.", &["pool"]),
            assigned: gauge_vec(
                &r,
                "corral_pool_assigned_tasks",
                "Tasks sent ahead to a node and waiting there for a slot.",
                &["pool"],
            ),
            nodes: gauge_vec(
                &r,
                "corral_pool_nodes",
                "Live nodes by state (starting, idle, running, draining).",
                &["pool", "state"],
            ),
            slots: gauge_vec(&r, "corral_pool_slots", "Slots of the pool's up and draining nodes: total, used, and free (what a new task can take: up nodes only).", &["pool", "kind"]),
            target_nodes: gauge_vec(
                &r,
                "corral_pool_target_nodes",
                "The node count the pool is sized to (the autoscaler's target when it autoscales).",
                &["pool"],
            ),
            late_heartbeats: gauge_vec(
                &r,
                "corral_pool_nodes_heartbeat_late",
                "Up nodes whose last heartbeat is older than two heartbeat intervals.",
                &["pool"],
            ),
            jobs: gauge_vec(&r, "corral_jobs", "Jobs by state.", &["state"]),
            last_event: register(
                &r,
                IntGauge::new("corral_last_event_id", "The id of the newest event in the feed.").expect("valid metric"),
            ),
            store_can_write: register(
                &r,
                IntGauge::new(
                    "corral_store_can_write",
                    "1 while the store writes; 0 while it cannot (a full disk), when changes are refused.",
                )
                .expect("valid metric"),
            ),
            registry: r,
        }
    }

    /// Whether the store can write now.
    pub fn set_store_can_write(&self, can: bool) {
        self.store_can_write.set(i64::from(can));
    }

    /// The newest event at start (the store's, before any commit).
    pub fn set_last_event(&self, id: u64) {
        self.last_event.set(id as i64);
    }

    /// One heartbeat arrived.
    pub fn on_heartbeat(&self) {
        self.heartbeats.inc();
    }

    /// What one commit made durable.
    pub fn on_commit(&self, ops: &[StoreOp], events: &[Event], took: std::time::Duration) {
        self.store_commit.observe(took.as_secs_f64());
        self.store_changes.inc_by(ops.len() as u64);
        self.events.inc_by(events.len() as u64);
        if let Some(last) = events.last() {
            self.last_event.set(last.id as i64);
        }
        // Each task change in a commit has its event, which names the job's pool.
        let mut pools: HashMap<u64, &str> = HashMap::new();
        for e in events {
            if let (Kind::Task | Kind::Attempt, Some(job), Some(pool)) = (e.kind, e.job, e.pool.as_deref()) {
                pools.insert(job, pool);
            }
            let pool = e.pool.as_deref().unwrap_or("");
            match e.kind {
                Kind::Attempt => self.attempts.with_label_values(&[pool, e.state.as_str()]).inc(),
                Kind::Task if matches!(e.state.as_str(), "succeeded" | "failed" | "cancelled") => {
                    self.tasks_finished.with_label_values(&[pool, e.state.as_str()]).inc()
                }
                Kind::Node if e.state == "lost" && e.detail == NodeReason::HeartbeatTimeout.as_str() => {
                    self.heartbeat_timeouts.with_label_values(&[pool]).inc()
                }
                _ => {}
            }
        }
        for op in ops {
            match op {
                StoreOp::StartAttempt { attempt, started_at_ms, queued_at_ms, .. } => {
                    let pool = pools.get(&attempt.task.job.0).copied().unwrap_or("");
                    let waited = started_at_ms.saturating_sub(*queued_at_ms) as f64 / 1000.0;
                    self.scheduling_latency.with_label_values(&[pool]).observe(waited);
                }
                StoreOp::EndAttempt { attempt, started_at_ms: Some(started), outcome, ended_at_ms, .. } => {
                    let pool = pools.get(&attempt.task.job.0).copied().unwrap_or("");
                    let ran = ended_at_ms.saturating_sub(*started) as f64 / 1000.0;
                    self.run_time.with_label_values(&[pool, outcome.as_str()]).observe(ran);
                }
                _ => {}
            }
        }
    }

    /// Sets the gauges from the core as it is now.
    pub fn read_core(&self, core: &Core, now: Instant) {
        for gauge in [
            &self.queued,
            &self.running,
            &self.assigned,
            &self.nodes,
            &self.slots,
            &self.target_nodes,
            &self.late_heartbeats,
        ] {
            gauge.reset();
        }
        let late_after = core.config.heartbeat_interval * 2;
        for (name, pool) in &core.pools {
            let name = name.as_str();
            let summary = core.pool_summary(pool);
            self.queued.with_label_values(&[name]).set(summary.ready as i64);
            self.running.with_label_values(&[name]).set(summary.running as i64);
            self.assigned.with_label_values(&[name]).set(summary.assigned as i64);
            self.target_nodes.with_label_values(&[name]).set(i64::from(pool.spec.target_nodes));
            for state in ["starting", "idle", "running", "draining"] {
                self.nodes.with_label_values(&[name, state]).set(0);
            }
            for (state, n) in &summary.nodes {
                self.nodes.with_label_values(&[name, state.as_str()]).set(i64::from(*n));
            }
            let late = pool
                .nodes
                .iter()
                .filter_map(|id| core.nodes.get(id))
                .filter(|n| n.status() == NodeStatus::Up && now.saturating_duration_since(n.last_seen) > late_after)
                .count() as i64;
            self.slots.with_label_values(&[name, "used"]).set(i64::from(summary.slots.used));
            self.slots.with_label_values(&[name, "total"]).set(i64::from(summary.slots.total));
            self.slots.with_label_values(&[name, "free"]).set(i64::from(summary.slots.free));
            self.late_heartbeats.with_label_values(&[name]).set(late);
        }
        let mut jobs: HashMap<&str, i64> = HashMap::new();
        for job in core.jobs.values() {
            *jobs.entry(job.state.as_str()).or_default() += 1;
        }
        for state in ["active", "completed", "failed", "cancelled"] {
            self.jobs.with_label_values(&[state]).set(jobs.get(state).copied().unwrap_or(0));
        }
    }

    /// Everything, in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "could not encode the metrics");
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: Kind, state: &str, pool: &str, job: u64) -> Event {
        Event {
            id: 1,
            at_ms: 0,
            kind,
            pool: Some(pool.into()),
            job: Some(job),
            task: Some(0),
            attempt: Some(1),
            node: None,
            state: state.into(),
            detail: String::new(),
            actor: None,
        }
    }

    #[test]
    fn a_commit_counts_outcomes_and_times_by_pool() {
        let m = Metrics::new();
        let attempt = AttemptRef { task: TaskKey { job: JobId(7), index: 0 }, attempt: 1 };
        let ops = vec![
            StoreOp::StartAttempt {
                attempt,
                node: NodeId("n-1".into()),
                members: vec![],
                started_at_ms: 1_500,
                queued_at_ms: 1_000,
                gpus: vec![],
            },
            StoreOp::EndAttempt {
                attempt,
                started_at_ms: Some(1_500),
                outcome: Outcome::Succeeded,
                exit_code: Some(0),
                signal: None,
                message: String::new(),
                ended_at_ms: 3_500,
                order: None,
            },
        ];
        let events = vec![
            event(Kind::Task, "running", "cpu", 7),
            event(Kind::Attempt, "succeeded", "cpu", 7),
            event(Kind::Task, "succeeded", "cpu", 7),
        ];
        m.on_commit(&ops, &events, std::time::Duration::from_millis(3));
        let text = m.render();
        assert!(text.contains("corral_task_attempts_total{outcome=\"succeeded\",pool=\"cpu\"} 1"), "{text}");
        assert!(text.contains("corral_tasks_finished_total{pool=\"cpu\",state=\"succeeded\"} 1"), "{text}");
        assert!(text.contains("corral_task_scheduling_latency_seconds_sum{pool=\"cpu\"} 0.5"), "{text}");
        assert!(text.contains("corral_task_run_time_seconds_sum{outcome=\"succeeded\",pool=\"cpu\"} 2"), "{text}");
        assert!(text.contains("corral_store_commit_duration_seconds_count 1"), "{text}");
    }
}
