//! What both edges may change of a schedule: pause or resume it, run it now. Each
//! answers with the schedule as the edge shows it (`view`), read in the same call.

use std::sync::Arc;

use super::Failed;
use crate::auth::Principal;
use crate::core::schedules::Schedule;
use crate::core::Core;
use crate::error::Error;
use crate::model::*;
use crate::shared::Shared;

/// How an edge shows a schedule: from the core, at a wall-clock time (ms).
pub type View<V> = fn(&Core, &Schedule, u64) -> V;

fn shown<V>(core: &Core, name: &ScheduleName, now: std::time::Instant, view: View<V>) -> Result<V, Error> {
    let s = core.schedules.get(name).ok_or_else(|| Error::not_found("schedule", name))?;
    Ok(view(core, s, core.wall_ms(now)))
}

/// Pauses (or resumes) schedule `name`, if `who` may change it. Resumed, the slots
/// that came meanwhile are dealt with now, not at the next tick.
pub async fn pause<V: Send + 'static>(
    shared: &Arc<Shared>,
    who: Principal,
    name: ScheduleName,
    paused: bool,
    view: View<V>,
) -> Result<V, Failed> {
    let caller = who.caller();
    let shown = shared
        .runtime
        .call_by(who, move |core, now, out| {
            core.may_change_schedule(&caller, &name)?;
            core.pause_schedule(&name, paused, out)?;
            core.fire_schedules(now, out);
            shown(core, &name, now, view)
        })
        .await??;
    Ok(shown)
}

/// Runs schedule `name` now, by its overlap policy; the job it made, if it made one
/// (else the run waits, or was skipped: the schedule says which).
pub async fn run_now(shared: &Arc<Shared>, who: Principal, name: ScheduleName) -> Result<Option<JobId>, Failed> {
    let caller = who.caller();
    let job = shared
        .runtime
        .call_by(who, move |core, now, out| {
            core.may_change_schedule(&caller, &name)?;
            Ok::<_, Error>(core.trigger_schedule(now, &name, out)?)
        })
        .await??;
    Ok(job)
}
