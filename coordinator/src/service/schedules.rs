//! Schedules: `CreateSchedule`, `ListSchedules`, `GetSchedule`, `PauseSchedule`,
//! `TriggerSchedule`, `BackfillSchedule`, `DeleteSchedule`. A schedule's jobs
//! belong to the token that created it; only that token (or an admin) changes it.

use corral_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::{job_from_request, ClientApi};
use crate::auth::{self, Principal};
use crate::convert::schedules::{check_schedule_job, schedule_spec, schedule_view};
use crate::core::Core;
use crate::error::{Error, Invalid};
use crate::model::*;

/// The most schedules one coordinator holds.
pub const MAX_SCHEDULES: usize = 10_000;

fn schedule_name(name: &str) -> Result<ScheduleName, Status> {
    Ok(ScheduleName::parse("name", name)?)
}

fn view(core: &Core, name: &ScheduleName, now: std::time::Instant) -> Result<pb::Schedule, Error> {
    let s = core.schedules.get(name).ok_or_else(|| Error::not_found("schedule", name))?;
    Ok(schedule_view(core, s, core.wall_ms(now)))
}

/// Refuses a change to a schedule created by someone else (the core's rule).
fn may_change(core: &Core, who: &Principal, name: &ScheduleName) -> Result<(), Error> {
    Ok(core.may_change_schedule(&who.caller(), name)?)
}

pub(super) async fn create(
    api: &ClientApi,
    req: Request<pb::CreateScheduleRequest>,
) -> Result<Response<pb::Schedule>, Status> {
    let who = auth::caller(&req)?;
    let mut req = req.into_inner();
    let job = req.job.take().ok_or_else(|| Invalid::new("job", "is required: what every slot runs"))?;
    check_schedule_job(&job)?;
    let job = job_from_request(&api.shared, job, &who).await?;
    let schedule = api
        .shared
        .runtime
        .call_by(who.clone(), move |core, now, out| {
            if core.schedules.len() >= MAX_SCHEDULES {
                return Err(Error::refused(format!(
                    "the coordinator holds {MAX_SCHEDULES} schedules, its most; delete some first"
                )));
            }
            let spec = schedule_spec(&req, job, core.wall_ms(now))?;
            let name = spec.name.clone();
            core.create_schedule(now, spec, out)?;
            view(core, &name, now)
        })
        .await??;
    tracing::info!(schedule = %schedule.name, "schedule created");
    Ok(Response::new(schedule))
}

pub(super) async fn list(
    api: &ClientApi,
    _: Request<pb::ListSchedulesRequest>,
) -> Result<Response<pb::ListSchedulesResponse>, Status> {
    let schedules = api
        .shared
        .runtime
        .call(|core, now, _| {
            let now_ms = core.wall_ms(now);
            core.schedules.values().map(|s| schedule_view(core, s, now_ms)).collect()
        })
        .await?;
    Ok(Response::new(pb::ListSchedulesResponse { schedules }))
}

pub(super) async fn get(
    api: &ClientApi,
    req: Request<pb::GetScheduleRequest>,
) -> Result<Response<pb::Schedule>, Status> {
    let name = schedule_name(&req.into_inner().name)?;
    let schedule = api.shared.runtime.call(move |core, now, _| view(core, &name, now)).await??;
    Ok(Response::new(schedule))
}

pub(super) async fn pause(
    api: &ClientApi,
    req: Request<pb::PauseScheduleRequest>,
) -> Result<Response<pb::Schedule>, Status> {
    let who = auth::caller(&req)?;
    let req = req.into_inner();
    let name = schedule_name(&req.name)?;
    let schedule = crate::app::schedules::pause(&api.shared, who, name, req.paused, schedule_view).await?;
    Ok(Response::new(schedule))
}

pub(super) async fn update(
    api: &ClientApi,
    req: Request<pb::UpdateScheduleRequest>,
) -> Result<Response<pb::Schedule>, Status> {
    let who = auth::caller(&req)?;
    let req = req.into_inner();
    let name = schedule_name(&req.name)?;
    let priority = crate::convert::new_priority(req.priority)?;
    let caller = who.caller();
    let schedule = api
        .shared
        .runtime
        .call_by(who, move |core, now, out| {
            core.may_change_schedule(&caller, &name)?;
            core.set_schedule_priority(&name, priority, out)?;
            view(core, &name, now)
        })
        .await??;
    Ok(Response::new(schedule))
}

pub(super) async fn trigger(
    api: &ClientApi,
    req: Request<pb::TriggerScheduleRequest>,
) -> Result<Response<pb::TriggerScheduleResponse>, Status> {
    let who = auth::caller(&req)?;
    let name = schedule_name(&req.into_inner().name)?;
    let job = crate::app::schedules::run_now(&api.shared, who, name).await?;
    Ok(Response::new(pb::TriggerScheduleResponse { job_id: job.map_or(0, |j| j.0) }))
}

pub(super) async fn backfill(
    api: &ClientApi,
    req: Request<pb::BackfillScheduleRequest>,
) -> Result<Response<pb::BackfillScheduleResponse>, Status> {
    let who = auth::caller(&req)?;
    let req = req.into_inner();
    let name = schedule_name(&req.name)?;
    let overlap: Overlap = match req.overlap.as_str() {
        "" => Overlap::BufferAll,
        word => word.parse().map_err(|e| Invalid::new("overlap", e))?,
    };
    let now_ms = crate::auth::now_ms();
    let from = corral_types::duration::time_ms("from_ms", req.from_ms, now_ms)?;
    let to = corral_types::duration::time_ms("to_ms", req.to_ms, now_ms)?;
    // Step one: which past slots are in the range (and no other backfill of this
    // schedule may run until step two).
    let (who2, name2) = (who.clone(), name.clone());
    let slots = api
        .shared
        .runtime
        .call_by(who.clone(), move |core, now, _| {
            may_change(core, &who2, &name2)?;
            Ok::<_, Error>(core.begin_backfill(now, &name2, from, to)?)
        })
        .await??;
    // Which of them made a job already: the store knows every slot that did.
    let taken = match (slots.first(), slots.last()) {
        (Some(&first), Some(&last)) => {
            let (shared, name3) = (api.shared.clone(), name.clone());
            let read = tokio::task::spawn_blocking(move || shared.reader().schedule_slots(&name3, first, last)).await;
            match read {
                Ok(Ok(taken)) => taken,
                failed => {
                    let name4 = name.clone();
                    let _ = api.shared.runtime.call(move |core, _, _| core.abandon_backfill(&name4)).await;
                    return Err(match failed {
                        Ok(Err(e)) => e.into(),
                        _ => Status::internal("the store lookup of the schedule's slots failed"),
                    });
                }
            }
        }
        _ => Default::default(),
    };
    let jobs = api
        .shared
        .runtime
        .call_by(who.clone(), move |core, now, out| {
            Ok::<_, Error>(core.backfill(now, &name, slots, &taken, overlap, out)?)
        })
        .await??;
    Ok(Response::new(pb::BackfillScheduleResponse { job_ids: jobs.into_iter().map(|j| j.0).collect() }))
}

pub(super) async fn delete(
    api: &ClientApi,
    req: Request<pb::DeleteScheduleRequest>,
) -> Result<Response<pb::DeleteScheduleResponse>, Status> {
    let who = auth::caller(&req)?;
    let name = schedule_name(&req.into_inner().name)?;
    let shown = name.clone();
    api.shared
        .runtime
        .call_by(who.clone(), move |core, _, out| {
            may_change(core, &who, &name)?;
            Ok::<_, Error>(core.delete_schedule(&name, out)?)
        })
        .await??;
    tracing::info!(schedule = %shown, "schedule deleted");
    Ok(Response::new(pb::DeleteScheduleResponse {}))
}
