//! Registering with a coordinator: the node's identity and secret for this
//! session, and which refusals are worth another try.

use super::*;

pub(super) enum RegisterError {
    Fatal(Error),
    /// Worth trying again; `standby` if a standby answered, `leader` the one it
    /// named, if it did.
    Retry {
        why: String,
        standby: bool,
        leader: Option<String>,
    },
}

impl Agent {
    pub(super) async fn register(&mut self, mut client: Client, cpus: u32) -> Result<(), RegisterError> {
        let req = pb::RegisterRequest {
            pool: self.config.pool.clone(),
            hostname: self.config.hostname.clone().or_else(|| sysinfo::System::host_name().ok()).unwrap_or_default(),
            slots: self.slots,
            cpus,
            memory_bytes: self.sys.total_memory(),
            pid: std::process::id(),
            launch_id: self.config.launch_id.clone().unwrap_or_default(),
            resources: self.config.resources.clone().into_iter().collect(),
        };
        match client.register(req).await {
            Ok(resp) => {
                let resp = resp.into_inner();
                if let Err(newest) = self.coordinators.admit(resp.epoch) {
                    return Err(RegisterError::Retry {
                        why: format!(
                            "it leads in epoch {}, older than epoch {newest} this agent has heard from: it was deposed",
                            resp.epoch
                        ),
                        standby: false,
                        leader: None,
                    });
                }
                self.coordinators.learn(&resp.coordinators);
                self.heartbeat_interval = Duration::from_millis(resp.heartbeat_interval_ms.max(10));
                self.max_backoff =
                    (Duration::from_millis(resp.heartbeat_timeout_ms) / 3).clamp(MIN_BACKOFF, MAX_BACKOFF);
                self.coordinators.retune(
                    (Duration::from_millis(resp.heartbeat_timeout_ms) / 3)
                        .clamp(Duration::from_millis(200), Duration::from_secs(10)),
                );
                tracing::info!(
                    node_id = %resp.node_id,
                    pool = %self.config.pool,
                    slots = self.slots,
                    "registered; heartbeat every {:?}, lost after {:?} of silence",
                    self.heartbeat_interval,
                    Duration::from_millis(resp.heartbeat_timeout_ms)
                );
                if let Err(e) = self.node_secret.set(&resp.node_secret) {
                    return Err(RegisterError::Fatal(Error::Refused(format!(
                        "the node secret it sent is unusable: {e}"
                    ))));
                }
                self.node_id = Some(resp.node_id);
                self.start_task = if resp.start_task.trim().is_empty() {
                    StartTask::None
                } else {
                    StartTask::Pending(resp.start_task)
                };
                // A start task of an earlier registration is not this node's.
                self.start_done = None;
                Ok(())
            }
            Err(status) => match status.code() {
                Code::InvalidArgument
                | Code::NotFound
                | Code::FailedPrecondition
                | Code::AlreadyExists
                | Code::Unauthenticated
                | Code::PermissionDenied => Err(RegisterError::Fatal(Error::Refused(status.message().to_string()))),
                _ => {
                    // A certificate it does not trust will not become trusted by
                    // waiting: stop and say so. Anything else (the coordinator is
                    // down) is retried.
                    let root = corral_proto::tls::root_cause(&status);
                    if root.contains("is not trusted") {
                        return Err(RegisterError::Fatal(Error::Refused(root)));
                    }
                    let standby = corral_proto::leader::standing_by(&status);
                    Err(RegisterError::Retry {
                        why: status.message().to_string(),
                        standby: standby.is_some(),
                        leader: standby.flatten(),
                    })
                }
            },
        }
    }
}
