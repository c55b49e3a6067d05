//! `GET /api/schedules[/{name}]`: every schedule with its next slots and last runs;
//! `POST /api/schedules/{name}/pause`, `/resume` and `/run` change one, for its
//! owner or an admin, as `corral schedule pause|resume|trigger` do.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::{Extension, Json};
use serde::Serialize;

use super::actions::check;
use super::{read, Api};
use crate::auth::Principal;
use crate::core::cadence::Cadence;
use crate::core::schedules::Schedule;
use crate::core::Core;
use crate::error::Error;
use crate::model::*;
use crate::shared::Shared;

/// How many of a schedule's next slots are shown.
const NEXT_SHOWN: usize = 5;

#[derive(Serialize)]
pub(super) struct ScheduleView {
    name: String,
    /// `cron` with its zone, or `every` with its period.
    cron: Option<String>,
    tz: Option<String>,
    every_ms: Option<u64>,
    overlap: &'static str,
    catchup_window_ms: u64,
    pool: String,
    job_name: String,
    command: Vec<String>,
    owner: String,
    paused: bool,
    /// Past its end: no slot comes any more.
    ended: bool,
    created_at_ms: u64,
    /// The next slots, in ms and as the schedule's zone writes them.
    next: Vec<SlotView>,
    /// Its last runs, the newest first.
    runs: Vec<RunView>,
    active_jobs: Vec<u64>,
    missed: u64,
    skipped: u64,
    buffered: u32,
    last_error: Option<String>,
}

#[derive(Serialize)]
pub(super) struct SlotView {
    at_ms: u64,
    shown: String,
}

#[derive(Serialize)]
pub(super) struct RunView {
    slot_ms: u64,
    job: u64,
    /// The job's state, if the coordinator still holds it.
    state: Option<&'static str>,
}

fn view(core: &Core, s: &Schedule, now_ms: u64) -> ScheduleView {
    let spec = &s.spec;
    let (cron, tz, every_ms) = match &spec.cadence {
        Cadence::Cron { expr, zone, .. } => (Some(expr.clone()), Some(zone.clone()), None),
        Cadence::Every { period_ms, .. } => (None, None, Some(*period_ms)),
    };
    ScheduleView {
        name: spec.name.to_string(),
        cron,
        tz,
        every_ms,
        overlap: spec.overlap.as_str(),
        catchup_window_ms: spec.catchup_window.as_millis() as u64,
        pool: spec.job.pool.to_string(),
        job_name: spec.job.name.clone(),
        command: spec.job.task.argv.clone(),
        owner: spec.job.owner.clone(),
        paused: s.paused,
        ended: s.ended(),
        created_at_ms: s.created_at_ms,
        next: s
            .next_slots(now_ms, NEXT_SHOWN)
            .into_iter()
            .map(|at_ms| SlotView { at_ms, shown: spec.cadence.show(at_ms) })
            .collect(),
        runs: s
            .runs
            .iter()
            .rev()
            .map(|(slot, job)| RunView {
                slot_ms: *slot,
                job: job.0,
                state: core.jobs.get(job).map(|j| j.state.as_str()),
            })
            .collect(),
        active_jobs: s.active.iter().map(|j| j.0).collect(),
        missed: s.missed,
        skipped: s.skipped,
        buffered: s.buffered.len() as u32,
        last_error: s.last_error.clone(),
    }
}

pub(super) async fn schedules(State(shared): State<Arc<Shared>>) -> Api<Vec<ScheduleView>> {
    read(&shared, |core, now| {
        let now_ms = core.wall_ms(now);
        Ok(core.schedules.values().map(|s| view(core, s, now_ms)).collect())
    })
    .await
}

fn name_of(name: &str) -> Result<ScheduleName, Error> {
    Ok(ScheduleName::parse("name", name)?)
}

pub(super) async fn schedule(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Api<ScheduleView> {
    let name = name_of(&name)?;
    read(&shared, move |core, now| {
        let s = core.schedules.get(&name).ok_or_else(|| Error::not_found("schedule", &name))?;
        Ok(view(core, s, core.wall_ms(now)))
    })
    .await
}

async fn pause_or_resume(
    shared: Arc<Shared>,
    name: String,
    who: Principal,
    headers: HeaderMap,
    paused: bool,
) -> Api<ScheduleView> {
    check(&who, &headers, Role::Submit, if paused { "pausing a schedule" } else { "resuming a schedule" })?;
    let name = name_of(&name)?;
    Ok(Json(crate::app::schedules::pause(&shared, who, name, paused, view).await?))
}

pub(super) async fn pause(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
) -> Api<ScheduleView> {
    pause_or_resume(shared, name, who, headers, true).await
}

pub(super) async fn resume(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
) -> Api<ScheduleView> {
    pause_or_resume(shared, name, who, headers, false).await
}

#[derive(Serialize)]
pub(super) struct Ran {
    /// The job the run made; none if it waits for the active one or was skipped
    /// (by the schedule's overlap policy).
    job_id: Option<u64>,
}

pub(super) async fn run(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
) -> Api<Ran> {
    check(&who, &headers, Role::Submit, "running a schedule")?;
    let name = name_of(&name)?;
    let job = crate::app::schedules::run_now(&shared, who, name).await?;
    Ok(Json(Ran { job_id: job.map(|j| j.0) }))
}
