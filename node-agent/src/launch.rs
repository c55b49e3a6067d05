//! What runs an attempt, behind one interface the session holds without asking
//! which: real processes under the warden ([`Processes`]), or nothing at all
//! (simulate mode, [`crate::simulate::Simulated`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use corral_proto::v1 as pb;
use tokio::sync::{mpsc, oneshot, watch};

use crate::runner::{self, Cancel, Lane, RunContext, RunnerEvent};
use crate::task_dirs::TaskDirs;

/// Where an attempt runs: this registration of the node, its stream's lane and
/// the coordinator's object store. Borrowed: a launcher takes what it needs (a
/// simulated node, at thousands of tasks a second, takes nearly nothing).
#[derive(Clone, Copy)]
pub struct Place<'a> {
    pub node_id: &'a str,
    pub pool: &'a str,
    pub dirs: &'a Arc<TaskDirs>,
    pub lane: &'a watch::Sender<Lane>,
    pub objects: &'a crate::objects::Client,
}

/// Runs attempts and the pool's start task.
pub trait Launch: Send + Sync {
    /// Starts an attempt; its end comes as a [`RunnerEvent`] on `events`. Returns
    /// what stops it (none for one that ends by itself at once).
    fn start(
        &self,
        assignment: pb::Assignment,
        task: pb::TaskRef,
        place: Place<'_>,
        events: &mpsc::UnboundedSender<RunnerEvent>,
    ) -> Option<Cancel>;

    /// Runs the pool's start task; answers whether it succeeded, and what it said.
    fn start_task(&self, script: String, place: Place<'_>) -> oneshot::Receiver<(bool, String)>;

    /// Removes a finished attempt's directory once its output is safe.
    fn retire(&self, dirs: &TaskDirs, dir: PathBuf);

    /// Whether heartbeats carry this host's CPU and memory use (a simulated node,
    /// one of thousands in a process, reads nothing of the host).
    fn reads_host(&self) -> bool;
}

/// Real processes, each attempt in its own process group that the warden kills
/// if the agent dies first.
pub struct Processes {
    pub warden: Arc<crate::warden::Warden>,
    /// Between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
    /// What multi-node ranks use; none where it could not be set up.
    pub gangs: Option<Arc<GangTools>>,
}

/// What a multi-node task's ranks use: the launcher (`corral-rsh`, a link to this
/// agent's binary in its work dir), the binary itself (a member rank's holder),
/// and the launch socket's server.
#[derive(Debug)]
pub struct GangTools {
    pub exe: PathBuf,
    pub rsh: PathBuf,
    pub launches: Arc<crate::launches::Launches>,
}

impl GangTools {
    pub fn start(work_dir: &std::path::Path, lane: watch::Receiver<Lane>) -> std::io::Result<GangTools> {
        let exe = std::env::current_exe()?;
        // Tasks run elsewhere (their own directories): the paths they get are whole.
        let work_dir = std::path::absolute(work_dir)?;
        let bin = work_dir.join("bin");
        std::fs::create_dir_all(&bin)?;
        let rsh = bin.join(crate::rsh::NAME);
        let _ = std::fs::remove_file(&rsh);
        std::os::unix::fs::symlink(&exe, &rsh)?;
        let launches = crate::launches::Launches::start(work_dir.join("launch.sock"), lane)?;
        Ok(GangTools { exe, rsh, launches })
    }
}

impl Processes {
    fn context(&self, place: Place<'_>) -> RunContext {
        RunContext {
            node_id: place.node_id.to_string(),
            pool: place.pool.to_string(),
            dirs: place.dirs.clone(),
            kill_grace: self.kill_grace,
            lane: place.lane.subscribe(),
            objects: place.objects.clone(),
            warden: self.warden.clone(),
            gangs: self.gangs.clone(),
        }
    }
}

impl Launch for Processes {
    fn start(
        &self,
        assignment: pb::Assignment,
        task: pb::TaskRef,
        place: Place<'_>,
        events: &mpsc::UnboundedSender<RunnerEvent>,
    ) -> Option<Cancel> {
        Some(runner::start(assignment, task, self.context(place), events.clone()))
    }

    fn start_task(&self, script: String, place: Place<'_>) -> oneshot::Receiver<(bool, String)> {
        crate::start_task::run(script, self.context(place))
    }

    fn retire(&self, dirs: &TaskDirs, dir: PathBuf) {
        dirs.retire(&dir);
    }

    fn reads_host(&self) -> bool {
        true
    }
}
