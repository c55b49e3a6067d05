//! The pool's start task: run with `sh -c` on the node as it joins, before it takes
//! work; a node on which it fails takes none.

use std::time::Duration;

use tokio::sync::oneshot;

use crate::runner::RunContext;

/// Where the pool's start task stands for this registration.
pub enum StartTask {
    None,
    Pending(String),
    Running,
    Done,
    /// Failed, and why: said again in every hello.
    Failed(String),
}

/// How long a start task may run.
const START_TASK_TIMEOUT: Duration = Duration::from_secs(3600);

/// Runs the start task (`sh -c`) in its own directory; the answer is whether it
/// succeeded and, if not, why.
pub fn run(script: String, ctx: RunContext) -> oneshot::Receiver<(bool, String)> {
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let dir = ctx.dirs.root().join("start-task");
        let result = async {
            tokio::fs::create_dir_all(&dir).await.map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
            let mut cmd = tokio::process::Command::new("sh");
            for var in crate::AGENT_SECRETS {
                cmd.env_remove(var);
            }
            cmd.arg("-c")
                .arg(&script)
                .current_dir(&dir)
                .env("CORRAL_NODE_ID", &ctx.node_id)
                .env("CORRAL_POOL", &ctx.pool)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .process_group(0)
                .kill_on_drop(true);
            ctx.warden.mark(&mut cmd);
            let child = cmd.spawn().map_err(|e| format!("cannot run the start task: {e}"))?;
            let pgid = child.id().map_or(0, |p| p as libc::pid_t);
            ctx.warden.watch(pgid);
            let output = tokio::time::timeout(START_TASK_TIMEOUT, child.wait_with_output()).await;
            // What it left running in its group goes with it.
            crate::warden::signal_group(pgid, libc::SIGKILL);
            ctx.warden.release(pgid);
            let output = output
                .map_err(|_| format!("the start task ran longer than {START_TASK_TIMEOUT:?}"))?
                .map_err(|e| format!("the start task: {e}"))?;
            if output.status.success() {
                return Ok(());
            }
            let said = String::from_utf8_lossy(if output.stderr.is_empty() { &output.stdout } else { &output.stderr })
                .trim()
                .chars()
                .take(1000)
                .collect::<String>();
            Err(format!("{} ({said})", output.status))
        }
        .await;
        let _ = tx.send(match result {
            Ok(()) => (true, String::new()),
            Err(why) => (false, why),
        });
    });
    rx
}

/// The start task's result, when there is one to wait for.
pub async fn result(done: &mut Option<oneshot::Receiver<(bool, String)>>) -> (bool, String) {
    match done {
        Some(rx) => rx.await.unwrap_or((false, "the start task was lost".into())),
        None => std::future::pending().await,
    }
}
