//! Checking what a submission asks for.

use corral_proto::v1 as pb;
use tonic::Status;

use crate::auth::Principal;
use crate::convert;
use crate::error::Invalid;
use crate::model::*;
use crate::shared::Shared;

/// The job a submission asks for, checked, owned by `owner` (a schedule's job is
/// checked the same way).
pub(super) async fn job_from_request(
    shared: &Shared,
    mut req: pb::SubmitJobRequest,
    who: &Principal,
) -> Result<JobSpec, Status> {
    let owner = who.name();
    if req.auto_pool.is_some() && !who.is_admin() {
        return Err(Status::permission_denied(
            "an auto pool needs an admin token: its nodes are started by a provider on the coordinator's host (an admin can make a template with it for you to dispatch)",
        ));
    }
    // Fixed at submission: a later change of the default leaves the job alone.
    let max_output = match convert::max_output(req.max_output_bytes)? {
        0 => shared.core_config.max_output,
        bytes => bytes,
    };
    let spec = match req.mapreduce.take() {
        Some(mr) => {
            if req.task.is_some() || req.is_array || !req.tasks.is_empty() || req.open {
                let why = "a map/reduce job has no other tasks: leave task, tasks and open unset";
                return Err(Invalid::new("mapreduce", why).into());
            }
            let (pool, auto_pool) = convert::pool_or_auto(&mut req)?;
            let notify = convert::notify_url(&req.notify_url)?;
            let begin_at_ms = (req.begin_at_ms > 0).then_some(req.begin_at_ms);
            let policy = convert::policy::job_policy(req.policy.take())?;
            let spec = crate::mapreduce::job_spec(pool, req.name, req.priority, mr, &shared.objects).await?;
            JobSpec { notify, begin_at_ms, policy, auto_pool, ..spec }
        }
        None => {
            let notify = req.notify_url.clone();
            let spec = convert::job_spec(req)?;
            JobSpec { notify: convert::notify_url(&notify)?, ..spec }
        }
    };
    if let Some(url) = &spec.notify {
        crate::notify::resolve(url, shared.notify.allow_private)
            .await
            .map_err(|why| Invalid::new("notify_url", why))?;
    }
    let spec = convert::policy::continuous(spec)?;
    Ok(JobSpec { owner, max_output, ..spec })
}
