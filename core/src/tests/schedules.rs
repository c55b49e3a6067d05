//! Schedules with chosen `now`s: one job per slot, each overlap policy, catch-up
//! inside and outside the window, pause and resume, backfill, restore, `--begin`.

use std::collections::BTreeSet;

use super::*;
use crate::cadence::Cadence;

/// The core's wall clock at `Env::new()`'s `now`.
const T0: u64 = 1_000_000;

fn every(name: &str, period_s: u64, overlap: Overlap) -> ScheduleSpec {
    ScheduleSpec {
        name: ScheduleName::parse("name", name).unwrap(),
        cadence: Cadence::every(period_s * 1000, T0).unwrap(),
        overlap,
        catchup_window: Duration::from_secs(60),
        jitter: Duration::ZERO,
        start_at_ms: None,
        end_at_ms: None,
        job: job_spec("p", 1, 0, 0),
    }
}

impl Env {
    fn create(&mut self, spec: ScheduleSpec) -> ScheduleName {
        let name = spec.name.clone();
        self.core.create_schedule(self.now, spec, &mut self.out).unwrap();
        self.check();
        name
    }

    /// The jobs of `schedule`, by the slot they were made for.
    fn runs(&self, schedule: &ScheduleName) -> Vec<(u64, JobId)> {
        self.core
            .jobs
            .values()
            .filter_map(|j| j.spec.schedule.as_ref().filter(|r| &r.schedule == schedule).map(|r| (r.slot_ms, j.id)))
            .collect()
    }

    /// The slot rows written so far.
    fn slot_rows(&self) -> Vec<u64> {
        self.out
            .store
            .iter()
            .filter_map(|op| match op {
                StoreOp::InsertScheduleSlot { slot_ms, .. } => Some(*slot_ms),
                _ => None,
            })
            .collect()
    }

    fn finish(&mut self, job: JobId) {
        self.core.cancel_job(self.now, job, &mut self.out).unwrap();
        self.check();
    }
}

#[test]
fn each_slot_makes_one_job_and_ticking_again_makes_none() {
    let mut env = Env::with_pool(Fill::Spread);
    let name = env.create(every("s", 10, Overlap::Allow));
    env.tick();
    assert!(env.runs(&name).is_empty(), "the first slot is after the schedule was made");
    env.advance(ms(10_000));
    env.tick();
    env.tick();
    assert_eq!(env.runs(&name).iter().map(|r| r.0).collect::<Vec<_>>(), vec![T0 + 10_000]);
    env.advance(ms(25_000));
    env.tick();
    let slots: Vec<u64> = env.runs(&name).iter().map(|r| r.0).collect();
    assert_eq!(slots, vec![T0 + 10_000, T0 + 20_000, T0 + 30_000]);
    assert_eq!(env.slot_rows(), slots, "one slot row per job, none twice");
    let s = &env.core.schedules[&name];
    assert_eq!((s.cursor_ms, s.next_slot), (T0 + 30_000, Some(T0 + 40_000)));
    // Every job is an ordinary one, tagged with its schedule.
    let job = &env.core.jobs[&env.runs(&name)[0].1];
    assert_eq!(job.state, JobState::Active);
}

#[test]
fn skip_starts_nothing_while_the_last_run_is_active() {
    let mut env = Env::with_pool(Fill::Spread);
    let name = env.create(every("s", 10, Overlap::Skip));
    env.advance(ms(10_000));
    env.tick();
    env.advance(ms(10_000));
    env.tick();
    assert_eq!(env.runs(&name).len(), 1, "the first run is still active (no node runs it)");
    assert_eq!(env.core.schedules[&name].skipped, 1);
    let first = env.runs(&name)[0].1;
    env.finish(first);
    env.advance(ms(10_000));
    env.tick();
    assert_eq!(env.runs(&name).len(), 2);
}

#[test]
fn buffer_one_keeps_one_slot_and_runs_it_when_the_active_run_ends() {
    let mut env = Env::with_pool(Fill::Spread);
    let name = env.create(every("s", 10, Overlap::BufferOne));
    env.advance(ms(10_000));
    env.tick();
    env.advance(ms(20_000));
    env.tick();
    let s = &env.core.schedules[&name];
    assert_eq!((s.buffered.len(), s.skipped), (1, 1), "one kept, the next skipped");
    let first = env.runs(&name)[0].1;
    env.finish(first);
    let slots: Vec<u64> = env.runs(&name).iter().map(|r| r.0).collect();
    assert_eq!(slots, vec![T0 + 10_000, T0 + 20_000], "the buffered slot ran, as itself");
    assert_eq!(env.slot_rows(), slots);
}

#[test]
fn buffer_all_runs_every_slot_one_after_another() {
    let mut env = Env::with_pool(Fill::Spread);
    let name = env.create(every("s", 10, Overlap::BufferAll));
    env.advance(ms(40_000));
    env.tick();
    assert_eq!(env.runs(&name).len(), 1);
    assert_eq!(env.core.schedules[&name].buffered.len(), 3);
    for expected in 2..=4 {
        let active = *env.core.schedules[&name].active.iter().next().unwrap();
        env.finish(active);
        assert_eq!(env.runs(&name).len(), expected);
        assert_eq!(env.core.schedules[&name].active.len(), 1, "never two at once");
    }
    assert_eq!(env.slot_rows(), vec![T0 + 10_000, T0 + 20_000, T0 + 30_000, T0 + 40_000]);
}

#[test]
fn cancel_other_cancels_the_active_run_and_starts_the_new_one() {
    let mut env = Env::with_pool(Fill::Spread);
    let name = env.create(every("s", 10, Overlap::CancelOther));
    env.advance(ms(10_000));
    env.tick();
    let first = env.runs(&name)[0].1;
    env.advance(ms(10_000));
    env.tick();
    assert_eq!(env.core.jobs[&first].state, JobState::Cancelled);
    assert_eq!(env.runs(&name).len(), 2);
    assert_eq!(env.core.schedules[&name].active.len(), 1);
}

#[test]
fn allow_runs_slots_side_by_side() {
    let mut env = Env::with_pool(Fill::Spread);
    let name = env.create(every("s", 10, Overlap::Allow));
    env.advance(ms(30_000));
    env.tick();
    assert_eq!(env.core.schedules[&name].active.len(), 3);
}

#[test]
fn missed_slots_run_within_the_catch_up_window_and_are_counted_beyond_it() {
    let mut env = Env::with_pool(Fill::Spread);
    let name = env.create(every("s", 10, Overlap::Allow));
    // Five minutes without a tick (the coordinator was down): 30 slots came.
    env.advance(ms(300_000));
    env.tick();
    let now_ms = T0 + 300_000;
    let slots: Vec<u64> = env.runs(&name).iter().map(|r| r.0).collect();
    assert!(slots.iter().all(|slot| now_ms - slot <= 60_000), "only slots within the window: {slots:?}");
    assert_eq!(slots.len(), 7, "the slots of the last minute, both ends in");
    assert_eq!(env.core.schedules[&name].missed, 23, "the rest are counted, visibly");
    assert_eq!(slots.len() as u64 + env.core.schedules[&name].missed, 30);
}

#[test]
fn a_paused_schedule_deals_with_nothing_and_catches_up_on_resume() {
    let mut env = Env::with_pool(Fill::Spread);
    let name = env.create(every("s", 10, Overlap::Allow));
    env.core.pause_schedule(&name, true, &mut env.out).unwrap();
    env.advance(ms(120_000));
    env.tick();
    assert!(env.runs(&name).is_empty());
    assert_eq!(env.core.schedules[&name].cursor_ms, T0, "the cursor waits");
    env.core.pause_schedule(&name, false, &mut env.out).unwrap();
    env.tick();
    assert_eq!(env.runs(&name).len(), 7, "the last minute's slots");
    assert_eq!(env.core.schedules[&name].missed, 5);
}

#[test]
fn start_end_and_jitter_bound_when_slots_fire() {
    let mut env = Env::with_pool(Fill::Spread);
    let spec = ScheduleSpec {
        start_at_ms: Some(T0 + 30_000),
        end_at_ms: Some(T0 + 50_000),
        jitter: Duration::from_secs(5),
        ..every("s", 10, Overlap::Allow)
    };
    let name = env.create(spec);
    env.advance(ms(29_000));
    env.tick();
    assert!(env.runs(&name).is_empty(), "nothing before the start");
    let offset = cadence::jitter_ms("s", T0 + 30_000, 5000);
    env.advance(ms(1000 + offset));
    if offset > 0 {
        env.core.fire_schedules(env.now - ms(1), &mut env.out);
        assert!(env.runs(&name).is_empty(), "not before its jitter");
    }
    env.tick();
    assert_eq!(env.runs(&name).len(), 1);
    env.advance(ms(25_000));
    env.tick();
    env.advance(ms(100_000));
    env.tick();
    let slots: Vec<u64> = env.runs(&name).iter().map(|r| r.0).collect();
    assert_eq!(slots, vec![T0 + 30_000, T0 + 40_000, T0 + 50_000], "nothing after the end");
    assert!(env.core.schedules[&name].ended());
}

#[test]
fn a_restored_schedule_never_starts_a_slot_twice() {
    let mut env = Env::with_pool(Fill::Spread);
    let name = env.create(every("s", 10, Overlap::Allow));
    env.advance(ms(20_000));
    env.tick();
    assert_eq!(env.runs(&name).len(), 2);
    // What the store holds after that batch: the schedule with its cursor, its slots.
    let record = env.core.schedules[&name].record();
    let runs: Vec<(u64, JobId)> = env.runs(&name);
    let jobs: Vec<JobRecord> = env
        .out
        .store
        .iter()
        .filter_map(|op| match op {
            StoreOp::InsertJob(j) => Some(j.clone()),
            _ => None,
        })
        .collect();
    let pools = vec![(pool_spec("p", Provider::Static, 0, Fill::Spread), T0, false)];
    let snapshot = Snapshot { pools, jobs, schedules: vec![(record, runs)], ..Snapshot::default() };
    let mut core = Core::new(CoreConfig::default(), (env.now, T0 + 20_000));
    let mut out = Outbox::default();
    core.restore(snapshot, env.now, &mut out);
    core.sanity_check();
    assert_eq!(core.schedules[&name].active.len(), 2, "its active runs are known again");
    core.on_tick(env.now, &mut out);
    core.on_tick(env.now + ms(5_000), &mut out);
    assert!(!out.store.iter().any(|op| matches!(op, StoreOp::InsertScheduleSlot { .. })), "no slot again");
    core.on_tick(env.now + ms(10_000), &mut out);
    let again: Vec<u64> =
        out.store.iter().filter_map(|op| matches!(op, StoreOp::InsertScheduleSlot { .. }).then_some(0)).collect();
    assert_eq!(again.len(), 1, "the next slot, once");
    core.sanity_check();
}

#[test]
fn backfill_starts_each_past_slot_without_a_job_once() {
    let mut env = Env::with_pool(Fill::Spread);
    let name = env.create(every("s", 10, Overlap::Skip));
    env.core.pause_schedule(&name, true, &mut env.out).unwrap();
    env.advance(ms(300_000));
    env.core.pause_schedule(&name, false, &mut env.out).unwrap();
    env.tick();
    let started: BTreeSet<u64> = env.runs(&name).iter().map(|r| r.0).collect();
    assert_eq!(started.len(), 1, "skip: one run, the others skipped");
    let slots = env.core.begin_backfill(env.now, &name, T0, T0 + 100_000).unwrap();
    assert_eq!(slots.len(), 11, "T0 (the anchor) ..= T0+100s");
    // A second backfill waits for the first.
    assert!(matches!(env.core.begin_backfill(env.now, &name, T0, T0 + 100_000), Err(Error::Refused(_))));
    let taken: BTreeSet<u64> = [T0 + 50_000].into();
    let made = env.core.backfill(env.now, &name, slots, &taken, Overlap::Allow, &mut env.out).unwrap();
    assert_eq!(made.len(), 10, "all but the one the store already has");
    let all: Vec<u64> = env.slot_rows();
    let unique: BTreeSet<u64> = all.iter().copied().collect();
    assert_eq!(all.len(), unique.len(), "no slot twice");
    // The same backfill again starts nothing new for the slots that ran.
    let slots = env.core.begin_backfill(env.now, &name, T0, T0 + 100_000).unwrap();
    let taken: BTreeSet<u64> = unique.iter().copied().chain([T0 + 50_000]).collect();
    let made = env.core.backfill(env.now, &name, slots, &taken, Overlap::Allow, &mut env.out).unwrap();
    assert!(made.is_empty());
    // Refusals name their field.
    let err = env.core.begin_backfill(env.now, &name, T0 + 10, T0).unwrap_err();
    assert!(err.to_string().contains("to"), "{err}");
    env.core.config.retain = Duration::from_secs(100);
    let long_ago = env.core.wall_ms(env.now) - 100_001;
    let err = env.core.begin_backfill(env.now, &name, long_ago, T0).unwrap_err();
    assert!(err.to_string().contains("from"), "{err}");
}

#[test]
fn trigger_runs_now_by_the_overlap_policy_and_takes_no_slot() {
    let mut env = Env::with_pool(Fill::Spread);
    let name = env.create(every("s", 3600, Overlap::Skip));
    let job = env.core.trigger_schedule(env.now, &name, &mut env.out).unwrap();
    assert!(job.is_some());
    assert!(env.slot_rows().is_empty(), "a run by hand is no slot");
    let err = env.core.trigger_schedule(env.now, &name, &mut env.out).unwrap_err();
    assert!(err.to_string().contains("overlap policy is skip"), "{err}");
    env.check();
}

#[test]
fn a_schedule_whose_job_cannot_be_made_is_refused_and_a_slot_that_fails_is_counted() {
    let mut env = Env::with_pool(Fill::Spread);
    let spec = ScheduleSpec { job: job_spec("nope", 1, 0, 0), ..every("s", 10, Overlap::Allow) };
    assert!(matches!(env.core.create_schedule(env.now, spec, &mut env.out), Err(Error::NotFound { .. })));
    let name = env.create(every("s", 10, Overlap::Allow));
    env.core.delete_pool(env.now, &PoolName::parse("p", "p").unwrap(), false, &mut env.out).unwrap();
    env.advance(ms(10_000));
    env.tick();
    let s = &env.core.schedules[&name];
    assert_eq!(s.skipped, 1);
    assert!(s.last_error.as_deref().unwrap_or("").contains("pool"), "{:?}", s.last_error);
}

#[test]
fn a_job_with_a_begin_time_starts_nothing_before_it() {
    let mut env = Env::with_pool(Fill::Spread);
    let node = env.node(2);
    let spec = JobSpec { begin_at_ms: Some(T0 + 60_000), ..job_spec("p", 2, 0, 0) };
    let job = env.core.submit_job(env.now, spec, &mut env.out).unwrap();
    assert!(env.schedule().is_empty());
    env.advance(ms(59_999));
    assert!(env.schedule().is_empty());
    let pool = &env.core.pools[&PoolName::parse("p", "p").unwrap()];
    assert_eq!(env.core.autoscale_snapshot(pool, env.now).needed_slots, 0, "asks no pool to grow");
    env.advance(ms(1));
    let assigned = env.schedule();
    assert_eq!(assigned.len(), 2);
    assert!(assigned.iter().all(|(n, a)| n == &node && a.task.job == job));
}

#[test]
fn a_schedule_made_again_under_its_name_counts_the_old_runs_still_active() {
    let mut env = Env::with_pool(Fill::Spread);
    let name = env.create(every("s", 10, Overlap::Skip));
    env.advance(ms(10_000));
    env.tick();
    env.core.delete_schedule(&name, &mut env.out).unwrap();
    env.check();
    env.create(every("s", 10, Overlap::Skip));
    assert_eq!(env.core.schedules[&name].active.len(), 1);
    env.advance(ms(10_000));
    env.tick();
    assert_eq!(env.runs(&name).len(), 1, "skip: the old run is still active");
}
