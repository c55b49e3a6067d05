//! The user-facing gRPC service (`corral.v1.Corral`): decode and validate, call the
//! core, encode. No decisions are made here.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use corral_proto::v1 as pb;
use corral_proto::v1::corral_server::{Corral, CorralServer};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::auth::{self, Principal};
use crate::convert;
use crate::core::keys::IdempotencyKey;
use crate::core::{Core, RetrySelection};
use crate::error::{Error, Invalid};
use crate::model::*;
use crate::shared::Shared;

mod jobs;
use jobs::job_from_request;
mod schedules;
mod tasks;
pub mod templates;
mod tokens;

/// The most tasks one gRPC `ListTasks` page returns (the CLI pages through larger
/// jobs; the dashboard's JSON pages are smaller: `http::api::MAX_ROWS_PER_PAGE`).
pub const MAX_TASKS_PER_PAGE: u32 = 100_000;

/// The least time between two updates of a watched job.
const WATCH_EVERY: Duration = Duration::from_millis(50);

pub fn server(shared: Arc<Shared>) -> CorralServer<ClientApi> {
    CorralServer::new(ClientApi { shared }).max_decoding_message_size(64 << 20).max_encoding_message_size(64 << 20)
}

pub struct ClientApi {
    shared: Arc<Shared>,
}

impl ClientApi {
    /// Makes `change` to job `id` for `who`, if they may (its owner, or an admin),
    /// and answers with the job as it is then.
    async fn change_job<F>(&self, who: Principal, id: u64, change: F) -> Result<pb::Job, Status>
    where
        F: FnOnce(&mut Core, std::time::Instant, JobId, &mut crate::core::Outbox) -> crate::core::Result<()>,
        F: Send + 'static,
    {
        let job = self
            .shared
            .runtime
            .call_by(who.clone(), move |core, now, out| {
                may_change(core, &who, id)?;
                change(core, now, JobId(id), out)?;
                job_of(core, id).map(convert::job_view)
            })
            .await??;
        Ok(job)
    }
}

fn pool_name(name: &str) -> Result<PoolName, Status> {
    Ok(PoolName::parse("name", name)?)
}

fn job_of(core: &Core, id: u64) -> Result<&crate::core::Job, Error> {
    core.jobs.get(&JobId(id)).ok_or_else(|| Error::not_found("job", id))
}

/// Refuses a change to someone else's job (the core's rule: its owner, or an admin).
pub(crate) fn may_change(core: &Core, who: &Principal, id: u64) -> Result<(), Error> {
    Ok(core.may_change_job(&who.caller(), JobId(id))?)
}

fn pool_or_404(core: &Core, name: &PoolName, now: std::time::Instant) -> Result<pb::Pool, Error> {
    convert::pool_view(core, name, now).ok_or_else(|| Error::not_found("pool", name))
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::Job, Status>> + Send>>;
type EventStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;

#[tonic::async_trait]
impl Corral for ClientApi {
    async fn create_pool(&self, req: Request<pb::CreatePoolRequest>) -> Result<Response<pb::Pool>, Status> {
        let who = auth::caller(&req)?;
        let spec = convert::pool_spec(req.into_inner().spec)?;
        let name = spec.name.clone();
        // The agents a provider starts join with a token bound to their pool: the
        // core asks for it (`Credential::MintPoolToken`) in the same batch.
        let pool = self
            .shared
            .runtime
            .call_by(who.clone(), move |core, now, out| {
                core.create_pool(now, spec, out)?;
                pool_or_404(core, &name, now)
            })
            .await??;
        Ok(Response::new(pool))
    }

    async fn list_pools(&self, _: Request<pb::ListPoolsRequest>) -> Result<Response<pb::ListPoolsResponse>, Status> {
        let pools = self
            .shared
            .runtime
            .call(|core, now, _| core.pools.keys().filter_map(|name| convert::pool_view(core, name, now)).collect())
            .await?;
        Ok(Response::new(pb::ListPoolsResponse { pools }))
    }

    async fn get_pool(&self, req: Request<pb::GetPoolRequest>) -> Result<Response<pb::Pool>, Status> {
        let name = pool_name(&req.into_inner().name)?;
        Ok(Response::new(self.shared.runtime.call(move |core, now, _| pool_or_404(core, &name, now)).await??))
    }

    async fn resize_pool(&self, req: Request<pb::ResizePoolRequest>) -> Result<Response<pb::Pool>, Status> {
        let who = auth::caller(&req)?;
        let req = req.into_inner();
        let name = pool_name(&req.name)?;
        let target = convert::local_target(req.target_nodes)?;
        let pool = self
            .shared
            .runtime
            .call_by(who.clone(), move |core, now, out| {
                core.resize_pool(now, &name, target, out)?;
                pool_or_404(core, &name, now)
            })
            .await??;
        Ok(Response::new(pool))
    }

    async fn set_autoscale(&self, req: Request<pb::SetAutoscaleRequest>) -> Result<Response<pb::Pool>, Status> {
        let who = auth::caller(&req)?;
        let req = req.into_inner();
        let name = pool_name(&req.name)?;
        let auto = req.autoscale.map(convert::autoscale).transpose()?;
        let pool = self
            .shared
            .runtime
            .call_by(who.clone(), move |core, now, out| {
                core.set_autoscale(now, &name, auto, out)?;
                pool_or_404(core, &name, now)
            })
            .await??;
        Ok(Response::new(pool))
    }

    async fn delete_pool(
        &self,
        req: Request<pb::DeletePoolRequest>,
    ) -> Result<Response<pb::DeletePoolResponse>, Status> {
        let who = auth::caller(&req)?;
        let req = req.into_inner();
        let name = pool_name(&req.name)?;
        let deleted = self
            .shared
            .runtime
            .call_by(who.clone(), move |core, now, out| Ok::<_, Error>(core.delete_pool(now, &name, req.force, out)?))
            .await??;
        Ok(Response::new(pb::DeletePoolResponse {
            cancelled_jobs: deleted.cancelled_jobs.iter().map(|j| j.0).collect(),
            stopped_nodes: deleted.stopped_nodes,
            draining_nodes: deleted.draining_nodes,
        }))
    }

    async fn list_nodes(&self, req: Request<pb::ListNodesRequest>) -> Result<Response<pb::ListNodesResponse>, Status> {
        let pool = req.into_inner().pool;
        let pool = if pool.is_empty() { None } else { Some(PoolName::parse("pool", &pool)?) };
        let nodes = self
            .shared
            .runtime
            .call(move |core, now, _| {
                if let Some(pool) = &pool {
                    core.pool(pool)?;
                }
                let mut nodes: Vec<&crate::core::Node> =
                    core.nodes.values().filter(|n| pool.as_ref().is_none_or(|p| &n.record.pool == p)).collect();
                nodes.sort_by_key(|n| n.record.id.seq());
                Ok::<_, Error>(nodes.into_iter().map(|n| convert::node_view(core, n, now)).collect())
            })
            .await??;
        Ok(Response::new(pb::ListNodesResponse { nodes }))
    }

    async fn get_node(&self, req: Request<pb::GetNodeRequest>) -> Result<Response<pb::Node>, Status> {
        let id = convert::node_id("id", &req.into_inner().id)?;
        let node = self
            .shared
            .runtime
            .call(move |core, now, _| {
                let node = core.nodes.get(&id).ok_or_else(|| Error::not_found("node", &id))?;
                Ok::<_, Error>(convert::node_view(core, node, now))
            })
            .await??;
        Ok(Response::new(node))
    }

    async fn drain_node(&self, req: Request<pb::DrainNodeRequest>) -> Result<Response<pb::Node>, Status> {
        let who = auth::caller(&req)?;
        let id = convert::node_id("id", &req.into_inner().id)?;
        let node = self
            .shared
            .runtime
            .call_by(who.clone(), move |core, now, out| {
                core.drain_node(&id, out)?;
                Ok::<_, Error>(convert::node_view(core, &core.nodes[&id], now))
            })
            .await??;
        Ok(Response::new(node))
    }

    async fn remove_node(&self, req: Request<pb::RemoveNodeRequest>) -> Result<Response<pb::Node>, Status> {
        let who = auth::caller(&req)?;
        let req = req.into_inner();
        let id = convert::node_id("id", &req.id)?;
        let policy = if req.policy.is_empty() {
            None
        } else {
            Some(req.policy.parse::<RemovalPolicy>().map_err(|e| Invalid::new("policy", e))?)
        };
        let node = self
            .shared
            .runtime
            .call_by(who.clone(), move |core, now, out| {
                core.remove_node(now, &id, policy, out)?;
                Ok::<_, Error>(convert::node_view(core, &core.nodes[&id], now))
            })
            .await??;
        Ok(Response::new(node))
    }

    async fn submit_job(&self, req: Request<pb::SubmitJobRequest>) -> Result<Response<pb::SubmitJobResponse>, Status> {
        let who = auth::caller(&req)?;
        let req = req.into_inner();
        let key = convert::idempotency_key(&req.idempotency_key)?;
        let spec = job_from_request(&self.shared, req, &who).await?;
        let tasks = spec.task_count();
        let key =
            key.map(|key| IdempotencyKey { owner: spec.owner.clone(), key, digest: convert::request_digest(&spec) });
        let id = self
            .shared
            .runtime
            .call_by(who.clone(), move |core, now, out| Ok::<_, Error>(core.submit_job_once(now, spec, key, out)?))
            .await??;
        tracing::info!(job_id = %id, tasks, "job accepted");
        Ok(Response::new(pb::SubmitJobResponse { job_id: id.0, tasks }))
    }

    async fn list_jobs(&self, req: Request<pb::ListJobsRequest>) -> Result<Response<pb::ListJobsResponse>, Status> {
        let filter = convert::job_filter(req.into_inner())?;
        let jobs = self
            .shared
            .runtime
            .call(move |core, _, _| core.jobs_matching(&filter).into_iter().map(convert::job_view).collect())
            .await?;
        Ok(Response::new(pb::ListJobsResponse { jobs }))
    }

    async fn get_job(&self, req: Request<pb::GetJobRequest>) -> Result<Response<pb::Job>, Status> {
        let id = req.into_inner().job_id;
        let job = self.shared.runtime.call(move |core, _, _| job_of(core, id).map(convert::job_view)).await??;
        Ok(Response::new(job))
    }

    async fn cancel_job(&self, req: Request<pb::CancelJobRequest>) -> Result<Response<pb::Job>, Status> {
        let who = auth::caller(&req)?;
        let id = req.into_inner().job_id;
        Ok(Response::new(self.change_job(who, id, Core::cancel_job).await?))
    }

    async fn retry_job(&self, req: Request<pb::RetryJobRequest>) -> Result<Response<pb::RetryJobResponse>, Status> {
        let who = auth::caller(&req)?;
        let req = req.into_inner();
        if req.tasks.len() > 100_000 {
            return Err(Invalid::new("tasks", "names more than 100000 tasks; use --failed or --cancelled").into());
        }
        for task in &req.tasks {
            convert::text("tasks", task, 256)?;
        }
        let id = req.job_id;
        let (tasks, job) = self
            .shared
            .runtime
            .call_by(who.clone(), move |core, now, out| {
                may_change(core, &who, id)?;
                let indices = req
                    .tasks
                    .iter()
                    .map(|t| tasks::task_key(core, id, 0, t).map(|k| k.index))
                    .collect::<Result<Vec<u32>, Error>>()?;
                let selection = RetrySelection { failed: req.failed, cancelled: req.cancelled, tasks: indices };
                let tasks = core.retry_job(now, JobId(id), &selection, out)?;
                Ok::<_, Error>((tasks, job_of(core, id).map(convert::job_view)?))
            })
            .await??;
        tracing::info!(job_id = id, tasks, "job retried");
        Ok(Response::new(pb::RetryJobResponse { tasks, job: Some(job) }))
    }

    async fn delete_job(&self, req: Request<pb::DeleteJobRequest>) -> Result<Response<pb::DeleteJobResponse>, Status> {
        let who = auth::caller(&req)?;
        let id = req.into_inner().job_id;
        self.shared
            .runtime
            .call_by(who.clone(), move |core, now, out| {
                may_change(core, &who, id)?;
                Ok::<_, Error>(core.delete_job(now, JobId(id), out)?)
            })
            .await??;
        tracing::info!(job_id = id, "job deleted");
        Ok(Response::new(pb::DeleteJobResponse {}))
    }

    async fn add_tasks(
        &self,
        req: Request<tonic::Streaming<pb::AddTasksRequest>>,
    ) -> Result<Response<pb::AddTasksResponse>, Status> {
        let who = auth::caller(&req)?;
        let mut stream = req.into_inner();
        let mut job_id = 0;
        let mut groups = Vec::new();
        while let Some(msg) = stream.message().await? {
            if job_id == 0 {
                job_id = msg.job_id;
            } else if msg.job_id != 0 && msg.job_id != job_id {
                return Err(Invalid::new(
                    "job_id",
                    format!("one stream adds to one job ({job_id}), not also {}", msg.job_id),
                )
                .into());
            }
            groups.extend(convert::task_groups(msg.tasks)?);
            if groups.len() > corral_types::graph::MAX_GRAPH_TASKS {
                return Err(Invalid::new(
                    "tasks",
                    format!("more than {} in one stream", corral_types::graph::MAX_GRAPH_TASKS),
                )
                .into());
            }
        }
        let (first_index, tasks) = self
            .shared
            .runtime
            .call_by(who.clone(), move |core, now, out| {
                may_change(core, &who, job_id)?;
                Ok::<_, Error>(core.add_tasks(now, JobId(job_id), groups, out)?)
            })
            .await??;
        tracing::info!(job_id, tasks, "tasks added");
        Ok(Response::new(pb::AddTasksResponse { first_index, tasks }))
    }

    async fn update_job(&self, req: Request<pb::UpdateJobRequest>) -> Result<Response<pb::Job>, Status> {
        let (who, req) = (auth::caller(&req)?, req.into_inner());
        if req.priority.is_none() && req.replicas.is_none() {
            return Err(Invalid::new("priority", "nothing to change: give a priority or replicas").into());
        }
        let priority = req.priority.map(|p| convert::new_priority(Some(p))).transpose()?;
        let set = move |core: &mut Core, now, id, out: &mut _| {
            if let Some(replicas) = req.replicas {
                core.scale_job(now, id, replicas, out)?;
            }
            priority.map_or(Ok(()), |p| core.set_job_priority(id, p, out))
        };
        Ok(Response::new(self.change_job(who, req.job_id, set).await?))
    }

    async fn close_job(&self, req: Request<pb::CloseJobRequest>) -> Result<Response<pb::Job>, Status> {
        let who = auth::caller(&req)?;
        let id = req.into_inner().job_id;
        Ok(Response::new(self.change_job(who, id, Core::close_job).await?))
    }

    type WatchJobStream = WatchStream;

    async fn watch_job(&self, req: Request<pb::GetJobRequest>) -> Result<Response<WatchStream>, Status> {
        let who = auth::caller(&req)?;
        let id = req.into_inner().job_id;
        let shared = self.shared.clone();
        // Woken by each commit that recorded an event (every change of a task's or the
        // job's state makes one). Watched from before the first read, so a commit
        // between that read and the loop (the job's last, say) still wakes it.
        let mut recorded = shared.last_event.clone();
        recorded.borrow_and_update();
        // Fail fast on an unknown job, before the stream starts.
        let first = shared.runtime.call(move |core, _, _| job_of(core, id).map(convert::job_view)).await??;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut last = first;
            if tx.send(Ok(last.clone())).await.is_err() {
                return;
            }
            // At most every WATCH_EVERY, however fast the commits come.
            while last.state() == pb::JobState::Active {
                tokio::select! {
                    changed = recorded.changed() => if changed.is_err() { return },
                    _ = tx.closed() => return,
                }
                tokio::time::sleep(WATCH_EVERY).await;
                let Ok(Ok(job)) = shared.runtime.call(move |core, _, _| job_of(core, id).map(convert::job_view)).await
                else {
                    return;
                };
                if job != last {
                    if tx.send(Ok(job.clone())).await.is_err() {
                        return;
                    }
                    last = job;
                }
            }
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        Ok(Response::new(Box::pin(self.shared.auth.guard(who, stream))))
    }

    type WatchEventsStream = EventStream;

    async fn watch_events(&self, req: Request<pb::WatchEventsRequest>) -> Result<Response<EventStream>, Status> {
        let who = auth::caller(&req)?;
        let req = req.into_inner();
        let filter = crate::events::Filter {
            job: (req.job_id != 0).then_some(JobId(req.job_id)),
            pool: if req.pool.is_empty() { None } else { Some(PoolName::parse("pool", &req.pool)?) },
        };
        crate::feed::check_resume(&self.shared, req.after).await?;
        let events = crate::feed::subscribe(self.shared.clone(), req.after, filter, req.follow);
        let stream = tokio_stream::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(events), |e| {
            e.map(convert::event_pb).map_err(Status::from)
        });
        Ok(Response::new(Box::pin(self.shared.auth.guard(who, stream))))
    }

    async fn create_token(
        &self,
        req: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        tokens::create_token(self, req).await
    }

    async fn list_tokens(
        &self,
        req: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        tokens::list_tokens(self, req).await
    }

    async fn revoke_token(&self, req: Request<pb::RevokeTokenRequest>) -> Result<Response<pb::Token>, Status> {
        tokens::revoke_token(self, req).await
    }

    async fn get_notify_secret(
        &self,
        req: Request<pb::GetNotifySecretRequest>,
    ) -> Result<Response<pb::GetNotifySecretResponse>, Status> {
        tokens::get_notify_secret(self, req).await
    }

    async fn create_schedule(&self, req: Request<pb::CreateScheduleRequest>) -> Result<Response<pb::Schedule>, Status> {
        schedules::create(self, req).await
    }

    async fn list_schedules(
        &self,
        req: Request<pb::ListSchedulesRequest>,
    ) -> Result<Response<pb::ListSchedulesResponse>, Status> {
        schedules::list(self, req).await
    }

    async fn get_schedule(&self, req: Request<pb::GetScheduleRequest>) -> Result<Response<pb::Schedule>, Status> {
        schedules::get(self, req).await
    }

    async fn pause_schedule(&self, req: Request<pb::PauseScheduleRequest>) -> Result<Response<pb::Schedule>, Status> {
        schedules::pause(self, req).await
    }

    async fn update_schedule(&self, req: Request<pb::UpdateScheduleRequest>) -> Result<Response<pb::Schedule>, Status> {
        schedules::update(self, req).await
    }

    async fn update_template(&self, req: Request<pb::UpdateTemplateRequest>) -> Result<Response<pb::Template>, Status> {
        templates::update_template(self, req).await
    }

    async fn trigger_schedule(
        &self,
        req: Request<pb::TriggerScheduleRequest>,
    ) -> Result<Response<pb::TriggerScheduleResponse>, Status> {
        schedules::trigger(self, req).await
    }

    async fn backfill_schedule(
        &self,
        req: Request<pb::BackfillScheduleRequest>,
    ) -> Result<Response<pb::BackfillScheduleResponse>, Status> {
        schedules::backfill(self, req).await
    }

    async fn delete_schedule(
        &self,
        req: Request<pb::DeleteScheduleRequest>,
    ) -> Result<Response<pb::DeleteScheduleResponse>, Status> {
        schedules::delete(self, req).await
    }

    async fn create_template(&self, req: Request<pb::CreateTemplateRequest>) -> Result<Response<pb::Template>, Status> {
        templates::create_template(self, req).await
    }

    async fn list_templates(
        &self,
        req: Request<pb::ListTemplatesRequest>,
    ) -> Result<Response<pb::ListTemplatesResponse>, Status> {
        templates::list_templates(self, req).await
    }

    async fn get_template(&self, req: Request<pb::GetTemplateRequest>) -> Result<Response<pb::Template>, Status> {
        templates::get_template(self, req).await
    }

    async fn delete_template(
        &self,
        req: Request<pb::DeleteTemplateRequest>,
    ) -> Result<Response<pb::DeleteTemplateResponse>, Status> {
        templates::delete_template(self, req).await
    }

    async fn dispatch(&self, req: Request<pb::DispatchRequest>) -> Result<Response<pb::DispatchResponse>, Status> {
        templates::dispatch_rpc(self, req).await
    }

    async fn create_trigger(&self, req: Request<pb::CreateTriggerRequest>) -> Result<Response<pb::Trigger>, Status> {
        templates::create_trigger(self, req).await
    }

    async fn list_triggers(
        &self,
        req: Request<pb::ListTriggersRequest>,
    ) -> Result<Response<pb::ListTriggersResponse>, Status> {
        templates::list_triggers(self, req).await
    }

    async fn get_trigger(&self, req: Request<pb::GetTriggerRequest>) -> Result<Response<pb::Trigger>, Status> {
        templates::get_trigger(self, req).await
    }

    async fn pause_trigger(&self, req: Request<pb::PauseTriggerRequest>) -> Result<Response<pb::Trigger>, Status> {
        templates::pause_trigger(self, req).await
    }

    async fn delete_trigger(
        &self,
        req: Request<pb::DeleteTriggerRequest>,
    ) -> Result<Response<pb::DeleteTriggerResponse>, Status> {
        templates::delete_trigger(self, req).await
    }

    async fn who_am_i(&self, req: Request<pb::WhoAmIRequest>) -> Result<Response<pb::Token>, Status> {
        tokens::who_am_i(self, req).await
    }

    async fn list_tasks(&self, req: Request<pb::ListTasksRequest>) -> Result<Response<pb::ListTasksResponse>, Status> {
        tasks::list_tasks(self, req).await
    }

    async fn get_task(&self, req: Request<pb::GetTaskRequest>) -> Result<Response<pb::Task>, Status> {
        tasks::get_task(self, req).await
    }

    async fn cancel_task(&self, req: Request<pb::GetTaskRequest>) -> Result<Response<pb::Task>, Status> {
        tasks::cancel_task(self, req).await
    }

    async fn explain_task(&self, req: Request<pb::GetTaskRequest>) -> Result<Response<pb::TaskExplanation>, Status> {
        tasks::explain_task(self, req).await
    }

    async fn read_log(&self, req: Request<pb::ReadLogRequest>) -> Result<Response<pb::ReadLogResponse>, Status> {
        tasks::read_log(self, req).await
    }
}
