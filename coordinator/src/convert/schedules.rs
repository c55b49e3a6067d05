//! Schedules at the gRPC edge: a `CreateScheduleRequest` checked into a
//! [`ScheduleSpec`], and a schedule of the core as a `pb::Schedule`.

use std::time::Duration;

use corral_proto::v1 as pb;

use super::word;
use crate::core::cadence::Cadence;
use crate::core::schedules::Schedule;
use crate::core::Core;
use crate::error::Invalid;
use crate::model::*;

/// The catch-up window of a schedule that does not say.
pub const DEFAULT_CATCHUP: Duration = Duration::from_secs(60);
/// The longest catch-up window and jitter.
const MAX_WINDOW: Duration = Duration::from_secs(366 * 24 * 3600);
/// How many fire times `schedule show` lists.
pub const NEXT_SHOWN: usize = 5;

/// Checks a schedule request; `job` is its job, already checked as a submission
/// (with its owner), and `now_ms` anchors an interval with no start.
pub fn schedule_spec(req: &pb::CreateScheduleRequest, job: JobSpec, now_ms: u64) -> Result<ScheduleSpec, Invalid> {
    let name = ScheduleName::parse("name", &req.name)?;
    let time = |field, at_ms| match at_ms {
        0 => Ok(None),
        at => corral_types::duration::time_ms(field, at, now_ms).map(Some),
    };
    let start_at_ms = time("start_at_ms", req.start_at_ms)?;
    let end_at_ms = time("end_at_ms", req.end_at_ms)?;
    if let (Some(start), Some(end)) = (start_at_ms, end_at_ms) {
        if end <= start {
            return Err(Invalid::new("end_at", "is not after start_at: the schedule would never fire"));
        }
    }
    if end_at_ms.is_some_and(|end| end <= now_ms) {
        return Err(Invalid::new("end_at", "is in the past: the schedule would never fire"));
    }
    let cadence = match (req.cron.is_empty(), req.every_ms) {
        (false, 0) => Cadence::cron(&req.cron, if req.tz.is_empty() { "UTC" } else { &req.tz })?,
        (true, every) if every > 0 => {
            if !req.tz.is_empty() {
                return Err(Invalid::new("tz", "applies to --cron only; an interval is the same in every zone"));
            }
            corral_types::duration::from_ms("every", every)?;
            Cadence::every(every, start_at_ms.unwrap_or(now_ms))?
        }
        (true, _) => return Err(Invalid::new("cron", "give a cron expression (--cron) or an interval (--every)")),
        (false, _) => return Err(Invalid::new("every", "give either --cron or --every, not both")),
    };
    let catchup_window = match req.catchup_window_ms {
        None => DEFAULT_CATCHUP,
        Some(ms) => corral_types::duration::from_ms("catchup_window", ms)?,
    };
    let jitter = corral_types::duration::from_ms("jitter", req.jitter_ms)?;
    for (field, d) in [("catchup_window", catchup_window), ("jitter", jitter)] {
        if d > MAX_WINDOW {
            return Err(Invalid::new(field, "must be at most 366 days"));
        }
    }
    if let Cadence::Every { period_ms, .. } = cadence {
        if jitter.as_millis() as u64 >= period_ms {
            return Err(Invalid::new(
                "jitter",
                "must be shorter than the interval, or slots would overtake each other",
            ));
        }
    }
    Ok(ScheduleSpec {
        name,
        cadence,
        overlap: word("overlap", &req.overlap, Overlap::Skip)?,
        catchup_window,
        jitter,
        start_at_ms,
        end_at_ms,
        job,
    })
}

/// What a schedule's job may not be: things a slot cannot answer for.
pub fn check_schedule_job(req: &pb::SubmitJobRequest) -> Result<(), Invalid> {
    if !req.idempotency_key.is_empty() {
        return Err(Invalid::new("job.idempotency_key", "a schedule makes one job per slot already; leave it unset"));
    }
    if req.begin_at_ms != 0 {
        return Err(Invalid::new(
            "job.begin",
            "a schedule's jobs start at their slots; use --start-at for the schedule",
        ));
    }
    if req.open {
        return Err(Invalid::new("job.open", "a schedule's job cannot be open: nobody would close it"));
    }
    if req.policy.as_ref().is_some_and(|p| p.replicas > 0) {
        let why = "a schedule's jobs end before the next slot; a continuous job never does: submit it once";
        return Err(Invalid::new("job.continuous", why));
    }
    if req.mapreduce.is_some() {
        return Err(Invalid::new("job.mapreduce", "schedules do not run map/reduce jobs yet"));
    }
    Ok(())
}

/// A schedule as clients see it.
pub fn schedule_view(core: &Core, s: &Schedule, now_ms: u64) -> pb::Schedule {
    let spec = &s.spec;
    let (cron, tz, every_ms) = match &spec.cadence {
        Cadence::Cron { expr, zone, .. } => (expr.clone(), zone.clone(), 0),
        Cadence::Every { period_ms, .. } => (String::new(), String::new(), *period_ms),
    };
    let next_ms = s.next_slots(now_ms, NEXT_SHOWN);
    let runs = s
        .runs
        .iter()
        .map(|(slot, job)| pb::ScheduleRun {
            slot_ms: *slot,
            job_id: job.0,
            state: core.jobs.get(job).map_or(pb::JobState::Unspecified as i32, |j| pb::JobState::of(j.state)),
        })
        .collect();
    pb::Schedule {
        name: spec.name.to_string(),
        cron,
        tz,
        every_ms,
        overlap: spec.overlap.to_string(),
        catchup_window_ms: spec.catchup_window.as_millis() as u64,
        jitter_ms: spec.jitter.as_millis() as u64,
        start_at_ms: spec.start_at_ms.unwrap_or(0),
        end_at_ms: spec.end_at_ms.unwrap_or(0),
        pool: spec.job.pool.to_string(),
        job_name: spec.job.name.clone(),
        owner: spec.job.owner.clone(),
        paused: s.paused,
        ended: s.ended(),
        created_at_ms: s.created_at_ms,
        cursor_ms: s.cursor_ms,
        next: next_ms.iter().map(|&ms| spec.cadence.show(ms)).collect(),
        next_ms,
        missed: s.missed,
        skipped: s.skipped,
        buffered: s.buffered.len() as u32,
        last_error: s.last_error.clone().unwrap_or_default(),
        runs,
        active_jobs: s.active.iter().map(|j| j.0).collect(),
        task: Some(super::task_spec_to_pb(&spec.job.task)),
        priority: spec.job.priority,
    }
}
