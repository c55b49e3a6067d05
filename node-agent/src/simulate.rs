//! A test mode that runs nothing: `corral-agent --simulate` registers, keeps its
//! stream, heartbeats and takes assignments like any agent, but reports every
//! assigned task as succeeded at once, with exit code 0 and no output. It measures
//! what the coordinator costs on its own (scheduling, the store, the stream), and
//! `--nodes N` stands in for N machines from one process, each with its own
//! registration, secret, connection, session and heartbeats.
//!
//! It is off by default, and it cannot make a real pool lie: a simulated node
//! registers like any other and needs an agent token for its pool.

use std::path::PathBuf;

use corral_proto::v1 as pb;
use corral_types::Outcome;
use tokio::sync::{mpsc, oneshot, watch};

use crate::launch::{Launch, Place};
use crate::runner::{Cancel, RunnerEvent};
use crate::session::Error;
use crate::task_dirs::TaskDirs;
use crate::AgentConfig;

/// Runs nothing: every attempt succeeds at once, with exit code 0 and no output.
pub struct Simulated;

impl Launch for Simulated {
    fn start(
        &self,
        _: pb::Assignment,
        task: pb::TaskRef,
        place: Place<'_>,
        events: &mpsc::UnboundedSender<RunnerEvent>,
    ) -> Option<Cancel> {
        // Its output counts as shipped on the current stream (there is none to ship).
        let generation = place.lane.borrow().generation;
        let dir = place.dirs.root().join(crate::runner::dir_name(&task));
        let now = crate::runner::now_ms();
        let result = pb::TaskResult {
            task: Some(task),
            outcome: pb::Outcome::of(Outcome::Succeeded),
            has_exit_code: true,
            exit_code: 0,
            started_at_ms: now,
            ended_at_ms: now,
            ..Default::default()
        };
        let _ =
            events.send(RunnerEvent::Finished { result, dir, max_output: 0, rank: 0, shipped_on: Some(generation) });
        None
    }

    fn start_task(&self, _: String, _: Place<'_>) -> oneshot::Receiver<(bool, String)> {
        let (tx, rx) = oneshot::channel();
        let _ = tx.send((true, "simulated: the start task was not run".to_string()));
        rx
    }

    /// A simulated attempt never made its directory.
    fn retire(&self, _: &TaskDirs, _: PathBuf) {}

    fn reads_host(&self) -> bool {
        false
    }
}

/// Runs `nodes` agents from `config` in this process until `shutdown` resolves or
/// all of them have stopped; the first error any of them stopped with is returned.
/// With more than one, each registers as `HOST-sim-I`.
pub async fn run_many(
    config: AgentConfig,
    nodes: u32,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let host = config.hostname.clone().or_else(|| sysinfo::System::host_name().ok()).unwrap_or_else(|| "node".into());
    let mut agents = tokio::task::JoinSet::new();
    for i in 0..nodes {
        let mut config = config.clone();
        if nodes > 1 {
            config.hostname = Some(format!("{host}-sim-{i}"));
        }
        let mut stop = stop.clone();
        agents.spawn(crate::run(config, async move {
            let _ = stop.wait_for(|s| *s).await;
        }));
    }
    let mut first = Ok(());
    while let Some(ended) = agents.join_next().await {
        let ended = ended.map_err(|e| Error::Setup(format!("a simulated node stopped: {e}"))).and_then(|r| r);
        if let (Err(e), Ok(())) = (ended, &first) {
            first = Err(e);
        }
    }
    first
}
