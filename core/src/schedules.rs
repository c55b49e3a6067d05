//! Schedules: a job per slot of a cadence, at most one per slot, ever.
//!
//! A schedule's cursor is the last slot it has dealt with (started, buffered,
//! skipped or missed). The tick deals with every slot after the cursor whose time
//! (plus its jitter) has come, and the cursor moves in the same store batch as the
//! job a slot makes and the slot's row (whose primary key is the slot): a crash
//! either keeps all three or none, so a restarted coordinator starts each slot
//! once. Slots older than the catch-up window when they are dealt with are
//! counted as missed, never started.

use std::collections::{BTreeSet, VecDeque};
use std::time::Instant;

use super::cadence::{self, Due};
use super::*;
use crate::error::{Error, Invalid, Result};

/// Runs a schedule remembers for `schedule show`.
pub const RUNS_KEPT: usize = 10;

/// The most slots one backfill may start.
pub const MAX_BACKFILL: usize = 10_000;

/// Past slots counted one by one as missed before the cursor jumps to the window.
const MAX_MISSED_WALK: u32 = 100_000;

/// A schedule as the core tracks it.
#[derive(Debug)]
pub struct Schedule {
    pub spec: ScheduleSpec,
    pub created_at_ms: u64,
    pub paused: bool,
    /// Every slot at or before this has been dealt with.
    pub cursor_ms: u64,
    /// The first slot after the cursor (`None`: none ever again).
    pub next_slot: Option<u64>,
    /// Runs waiting for the active one to end, oldest first: (time, whether it is a
    /// slot; a run started by hand is not).
    pub buffered: VecDeque<(u64, bool)>,
    /// Slots not started because they were older than the catch-up window.
    pub missed: u64,
    /// Slots not started because of the overlap policy (or because the job could
    /// not be made: then `last_error` says why).
    pub skipped: u64,
    pub last_error: Option<String>,
    /// Its jobs that are still active.
    pub active: BTreeSet<JobId>,
    /// Its last runs: (slot, job), oldest first.
    pub runs: VecDeque<(u64, JobId)>,
    /// A backfill is between its two steps: the slots started meanwhile.
    pub backfill: Option<BTreeSet<u64>>,
}

/// A schedule's durable state, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleRecord {
    pub spec: ScheduleSpec,
    pub created_at_ms: u64,
    pub paused: bool,
    pub cursor_ms: u64,
    pub buffered: Vec<(u64, bool)>,
    pub missed: u64,
    pub skipped: u64,
    pub last_error: Option<String>,
}

impl Schedule {
    pub fn record(&self) -> ScheduleRecord {
        ScheduleRecord {
            spec: self.spec.clone(),
            created_at_ms: self.created_at_ms,
            paused: self.paused,
            cursor_ms: self.cursor_ms,
            buffered: self.buffered.iter().copied().collect(),
            missed: self.missed,
            skipped: self.skipped,
            last_error: self.last_error.clone(),
        }
    }

    pub fn from_record(r: ScheduleRecord) -> Schedule {
        let next_slot = first_slot_after(&r.spec, r.cursor_ms);
        Schedule {
            spec: r.spec,
            created_at_ms: r.created_at_ms,
            paused: r.paused,
            cursor_ms: r.cursor_ms,
            next_slot,
            buffered: r.buffered.into_iter().collect(),
            missed: r.missed,
            skipped: r.skipped,
            last_error: r.last_error,
            active: BTreeSet::new(),
            runs: VecDeque::new(),
            backfill: None,
        }
    }

    /// Whether no slot will ever come again (past its end).
    pub fn ended(&self) -> bool {
        self.next_slot.is_none() && self.buffered.is_empty()
    }

    /// When the next slot fires (its time plus its jitter), if one will.
    pub fn next_fire_ms(&self) -> Option<u64> {
        let slot = self.next_slot?;
        Some(slot + cadence::jitter_ms(self.spec.name.as_str(), slot, self.spec.jitter.as_millis() as u64))
    }

    fn remember(&mut self, slot: u64, job: JobId) {
        self.runs.push_back((slot, job));
        while self.runs.len() > RUNS_KEPT {
            self.runs.pop_front();
        }
    }
}

impl Schedule {
    /// Its next `n` slots (ms since the Unix epoch) after `now_ms`, as every surface
    /// lists them.
    pub fn next_slots(&self, now_ms: u64, n: usize) -> Vec<u64> {
        let mut next = Vec::with_capacity(n);
        let mut at = self.cursor_ms.max(now_ms);
        while next.len() < n {
            let Some(slot) = first_slot_after(&self.spec, at) else { break };
            next.push(slot);
            at = slot;
        }
        next
    }
}

/// The first slot of `spec` after `after_ms`, within its start and end.
pub fn first_slot_after(spec: &ScheduleSpec, after_ms: u64) -> Option<u64> {
    let after = match spec.start_at_ms {
        Some(start) if start > 0 && after_ms < start => start - 1,
        _ => after_ms,
    };
    spec.cadence.next_after(after).filter(|slot| spec.end_at_ms.is_none_or(|end| *slot <= end))
}

/// What became of a due run.
enum Dealt {
    Started(JobId),
    Buffered,
    Skipped,
    Failed(Error),
}

/// Why the put of a change to a schedule makes an event (none for the cursor's moves).
pub type Change = Option<&'static str>;

impl Core {
    fn schedule_mut(&mut self, name: &ScheduleName) -> Result<&mut Schedule> {
        self.schedules.get_mut(name).ok_or_else(|| Error::not_found("schedule", name))
    }

    fn put_schedule(&self, name: &ScheduleName, change: Change, out: &mut Outbox) {
        if let Some(s) = self.schedules.get(name) {
            out.store.push(StoreOp::PutSchedule { record: s.record(), change });
        }
    }

    /// Creates a schedule; its first slot is the first after `now` (or after its
    /// start). The job spec is checked as a submission would be, so a schedule
    /// that could never make its job is refused now rather than at every slot.
    pub fn create_schedule(&mut self, now: Instant, spec: ScheduleSpec, out: &mut Outbox) -> Result<()> {
        if self.schedules.contains_key(&spec.name) {
            return Err(Error::AlreadyExists { what: "schedule", id: spec.name.to_string() });
        }
        self.check_runnable(&spec.job)?;
        let now_ms = self.wall_ms(now);
        let record = ScheduleRecord {
            spec,
            created_at_ms: now_ms,
            paused: false,
            cursor_ms: now_ms,
            buffered: Vec::new(),
            missed: 0,
            skipped: 0,
            last_error: None,
        };
        let name = record.spec.name.clone();
        let mut schedule = Schedule::from_record(record);
        // Runs of an earlier schedule of this name that are still active count as its
        // own (as a restart would count them), so overlap sees them.
        schedule.active = self
            .jobs
            .values()
            .filter(|j| j.state == JobState::Active && j.spec.schedule.as_ref().is_some_and(|r| r.schedule == name))
            .map(|j| j.id)
            .collect();
        self.schedules.insert(name.clone(), schedule);
        self.put_schedule(&name, Some("created"), out);
        Ok(())
    }

    /// Deletes a schedule; the jobs it made stay, and so does the record of its slots
    /// until the schedule is gone (then with it).
    pub fn delete_schedule(&mut self, name: &ScheduleName, out: &mut Outbox) -> Result<()> {
        self.schedules.remove(name).ok_or_else(|| Error::not_found("schedule", name))?;
        out.store.push(StoreOp::DeleteSchedule(name.clone()));
        Ok(())
    }

    /// Pauses (no slot is dealt with while paused) or resumes a schedule. On resume,
    /// the slots that came while it was paused run if they are within the catch-up
    /// window, as after a restart.
    pub fn pause_schedule(&mut self, name: &ScheduleName, paused: bool, out: &mut Outbox) -> Result<()> {
        let s = self.schedule_mut(name)?;
        if s.paused == paused {
            return Ok(());
        }
        s.paused = paused;
        self.put_schedule(name, Some(if paused { "paused" } else { "resumed" }), out);
        Ok(())
    }

    /// Runs a schedule now, by its overlap policy (a `skip` schedule with an active
    /// run refuses). The job is recorded with the schedule and `now` as its time; it
    /// is no slot, so it never stands in for one.
    pub fn trigger_schedule(&mut self, now: Instant, name: &ScheduleName, out: &mut Outbox) -> Result<Option<JobId>> {
        let now_ms = self.wall_ms(now);
        let overlap = self.schedule_mut(name)?.spec.overlap;
        let dealt = self.deal(now, name, now_ms, false, overlap, out);
        self.put_schedule(name, None, out);
        match dealt {
            Dealt::Started(job) => Ok(Some(job)),
            Dealt::Buffered => Ok(None),
            Dealt::Failed(e) => Err(e),
            Dealt::Skipped => {
                let active = self.schedules[name].active.iter().map(|j| j.to_string()).collect::<Vec<_>>();
                Err(Error::Refused(format!(
                    "schedule '{name}' has an active run (job {}) and its overlap policy is {overlap}; nothing was started",
                    active.join(", ")
                )))
            }
        }
    }

    /// Deals with every schedule's due slots. Called on every tick.
    pub fn fire_schedules(&mut self, now: Instant, out: &mut Outbox) {
        let now_ms = self.wall_ms(now);
        let due: Vec<ScheduleName> = self
            .schedules
            .iter()
            .filter(|(_, s)| !s.paused && s.next_fire_ms().is_some_and(|at| at <= now_ms))
            .map(|(name, _)| name.clone())
            .collect();
        for name in due {
            self.fire_schedule(now, now_ms, &name, out);
        }
    }

    fn fire_schedule(&mut self, now: Instant, now_ms: u64, name: &ScheduleName, out: &mut Outbox) {
        let mut walked = 0u32;
        while let Some(s) = self.schedules.get_mut(name) {
            let Some(slot) = s.next_slot else { break };
            if s.next_fire_ms().is_none_or(|at| at > now_ms) {
                break;
            }
            s.cursor_ms = slot;
            s.next_slot = first_slot_after(&s.spec, slot);
            let window = s.spec.catchup_window.as_millis() as u64;
            if now_ms.saturating_sub(slot) > window {
                s.missed += 1;
                walked += 1;
                if walked >= MAX_MISSED_WALK {
                    // A schedule of seconds that was down for days: jump to the window.
                    let edge = now_ms.saturating_sub(window);
                    s.cursor_ms = s.cursor_ms.max(edge.saturating_sub(1));
                    s.next_slot = first_slot_after(&s.spec, s.cursor_ms);
                }
                continue;
            }
            self.on_slot(now, name, slot, out);
        }
        self.put_schedule(name, None, out);
    }

    /// A slot (from the cadence or a backfill) is due: start it, buffer it or skip
    /// it, by the overlap policy.
    fn on_slot(&mut self, now: Instant, name: &ScheduleName, slot: u64, out: &mut Outbox) {
        let Some(overlap) = self.schedules.get(name).map(|s| s.spec.overlap) else { return };
        if let Dealt::Skipped = self.deal(now, name, slot, true, overlap, out) {
            if let Some(s) = self.schedules.get_mut(name) {
                s.skipped += 1;
            }
        }
    }

    /// A run is due at `at_ms` (a slot, or now for a trigger): starts it, buffers it
    /// or skips it by `overlap`. A skip is the caller's to count or refuse.
    fn deal(
        &mut self,
        now: Instant,
        name: &ScheduleName,
        at_ms: u64,
        slot: bool,
        overlap: Overlap,
        out: &mut Outbox,
    ) -> Dealt {
        let Some(s) = self.schedules.get_mut(name) else { return Dealt::Skipped };
        match cadence::on_due(overlap, !s.active.is_empty(), s.buffered.len()) {
            Due::Skip => Dealt::Skipped,
            Due::Buffer => {
                s.buffered.push_back((at_ms, slot));
                Dealt::Buffered
            }
            due => {
                if due == Due::CancelThenStart {
                    self.cancel_runs(now, name, out);
                }
                match self.start_run(now, name, at_ms, slot, out) {
                    Ok(job) => Dealt::Started(job),
                    Err(e) => Dealt::Failed(e),
                }
            }
        }
    }

    fn cancel_runs(&mut self, now: Instant, name: &ScheduleName, out: &mut Outbox) {
        let active: Vec<JobId> =
            self.schedules.get(name).map(|s| s.active.iter().copied().collect()).unwrap_or_default();
        for job in active {
            let _ = self.cancel_job(now, job, out);
        }
    }

    /// Makes the job of one run. A slot's row goes with it (`slot`), taken in the same
    /// batch: the store refuses a second job for one slot.
    fn start_run(
        &mut self,
        now: Instant,
        name: &ScheduleName,
        at_ms: u64,
        slot: bool,
        out: &mut Outbox,
    ) -> Result<JobId> {
        let s = self.schedules.get(name).ok_or_else(|| Error::not_found("schedule", name))?;
        let mut spec =
            JobSpec { schedule: Some(ScheduledFor { schedule: name.clone(), slot_ms: at_ms }), ..s.spec.job.clone() };
        if spec.name.is_empty() {
            spec.name = name.to_string();
        }
        let made = self.submit_job(now, spec, out);
        let Some(s) = self.schedules.get_mut(name) else { return made };
        match made {
            Ok(job) => {
                s.active.insert(job);
                s.remember(at_ms, job);
                s.last_error = None;
                if let Some(started) = s.backfill.as_mut() {
                    started.insert(at_ms);
                }
                if slot {
                    out.store.push(StoreOp::InsertScheduleSlot { schedule: name.clone(), slot_ms: at_ms, job });
                }
                tracing::info!(schedule = %name, job_id = %job, slot_ms = at_ms, "schedule started a run");
                Ok(job)
            }
            Err(e) => {
                tracing::warn!(schedule = %name, error = %e, "schedule could not start its job");
                s.skipped += 1;
                s.last_error = Some(e.to_string());
                Err(e)
            }
        }
    }

    /// A job ended: if a schedule made it, its buffer may start the next run.
    pub(super) fn on_run_finished(&mut self, now: Instant, job: JobId, out: &mut Outbox) {
        let Some(name) = self.jobs.get(&job).and_then(|j| j.spec.schedule.as_ref()).map(|r| r.schedule.clone()) else {
            return;
        };
        let Some(s) = self.schedules.get_mut(&name) else { return };
        s.active.remove(&job);
        if s.active.is_empty() {
            self.start_buffered(now, &name, out);
        }
    }

    /// Starts the first buffered run of a schedule with none active.
    pub(super) fn start_buffered(&mut self, now: Instant, name: &ScheduleName, out: &mut Outbox) {
        let Some((at_ms, slot)) = self.schedules.get_mut(name).and_then(|s| s.buffered.pop_front()) else { return };
        // It was dealt with when it came; this only starts it.
        let _ = self.start_run(now, name, at_ms, slot, out);
        self.put_schedule(name, None, out);
    }

    /// First step of a backfill: the past slots in `from..=to` (at most
    /// [`MAX_BACKFILL`]) that are not buffered; the caller then looks up which have
    /// a job already (in the store) and calls [`Core::backfill`]. No other backfill
    /// of this schedule runs in between.
    pub fn begin_backfill(&mut self, now: Instant, name: &ScheduleName, from_ms: u64, to_ms: u64) -> Result<Vec<u64>> {
        let now_ms = self.wall_ms(now);
        let horizon = now_ms.saturating_sub(self.config.retain.as_millis() as u64);
        let s = self.schedule_mut(name)?;
        if from_ms > to_ms {
            return Err(Invalid::new("to", "is before --from").into());
        }
        if from_ms < horizon {
            return Err(Invalid::new(
                "from",
                "is older than the retention period (--retain): the record of which of those slots ran is gone",
            )
            .into());
        }
        if s.backfill.is_some() {
            return Err(Error::Refused(format!(
                "schedule '{name}' is already being backfilled; try again when it is done"
            )));
        }
        // Only slots the cursor has passed: later ones are the cadence's to start.
        let to_ms = to_ms.min(s.cursor_ms);
        let mut slots = Vec::new();
        let mut at = from_ms.saturating_sub(1);
        while let Some(slot) = s.spec.cadence.next_after(at).filter(|slot| *slot <= to_ms) {
            if slots.len() == MAX_BACKFILL {
                return Err(Invalid::new(
                    "to",
                    format!("the range holds more than {MAX_BACKFILL} slots; backfill it in smaller pieces"),
                )
                .into());
            }
            if !s.buffered.contains(&(slot, true)) {
                slots.push(slot);
            }
            at = slot;
        }
        s.backfill = Some(BTreeSet::new());
        Ok(slots)
    }

    /// Second step: starts each slot of `slots` that has no job yet (`taken`: those
    /// the store has), by `overlap`. Returns the jobs made.
    pub fn backfill(
        &mut self,
        now: Instant,
        name: &ScheduleName,
        slots: Vec<u64>,
        taken: &BTreeSet<u64>,
        overlap: Overlap,
        out: &mut Outbox,
    ) -> Result<Vec<JobId>> {
        let s = self.schedule_mut(name)?;
        let started = s.backfill.take().unwrap_or_default();
        let recent: BTreeSet<u64> = s.runs.iter().map(|(slot, _)| *slot).collect();
        let mut made = Vec::new();
        for slot in slots {
            if taken.contains(&slot) || started.contains(&slot) || recent.contains(&slot) {
                continue;
            }
            match self.deal(now, name, slot, true, overlap, out) {
                Dealt::Started(job) => made.push(job),
                Dealt::Buffered => {}
                Dealt::Skipped => {
                    if let Some(s) = self.schedules.get_mut(name) {
                        s.skipped += 1;
                    }
                }
                Dealt::Failed(e) => {
                    self.put_schedule(name, None, out);
                    return Err(e);
                }
            }
        }
        self.put_schedule(name, None, out);
        Ok(made)
    }

    /// Ends a backfill whose second step will not come (the lookup failed).
    pub fn abandon_backfill(&mut self, name: &ScheduleName) {
        if let Some(s) = self.schedules.get_mut(name) {
            s.backfill = None;
        }
    }
}
