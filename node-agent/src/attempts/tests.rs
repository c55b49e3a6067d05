//! The agent's attempts without processes or sockets: assignments, slots, kills,
//! results, acknowledgements, reconnects and abandonment, with `sanity_check()`
//! after every step.

use super::*;

fn assignment(job: u64, index: u32, slots: u32) -> pb::Assignment {
    pb::Assignment { task: Some(pb::TaskRef { job_id: job, index, attempt: 1 }), slots, ..Default::default() }
}

fn result(task: pb::TaskRef) -> pb::TaskResult {
    pb::TaskResult { task: Some(task), outcome: pb::Outcome::Succeeded.into(), ..Default::default() }
}

fn dir(task: pb::TaskRef) -> PathBuf {
    PathBuf::from(format!("/tasks/{}.{}.{}", task.job_id, task.index, task.attempt))
}

/// An attempt as (job, index, attempt), to read in assertions.
type Key = (u64, u32, u32);

fn key(a: AttemptRef) -> Key {
    (a.task.job.0, a.task.index, a.attempt)
}

fn attempt(job: u64, index: u32, attempt: u32) -> AttemptRef {
    attempt_of(&pb::TaskRef { job_id: job, index, attempt })
}

fn started(out: &[Effect]) -> Vec<Key> {
    out.iter()
        .filter_map(|e| match e {
            Effect::Start(_, t) => Some(key(*t)),
            _ => None,
        })
        .collect()
}

fn reported(out: &[Effect]) -> Vec<(Key, bool)> {
    out.iter()
        .filter_map(|e| match e {
            Effect::Report(u, shipped) => Some((key(attempt_of(&u.result.task.unwrap())), *shipped)),
            _ => None,
        })
        .collect()
}

struct Env {
    attempts: Attempts,
    out: Vec<Effect>,
}

impl Env {
    fn new(slots: u32) -> Self {
        Env { attempts: Attempts::new(slots), out: Vec::new() }
    }

    fn take(&mut self) -> Vec<Effect> {
        self.attempts.sanity_check();
        std::mem::take(&mut self.out)
    }

    fn assign(&mut self, assignments: Vec<pb::Assignment>) -> Vec<Effect> {
        self.attempts.on_assign(assignments, &mut self.out);
        self.take()
    }

    fn finish(&mut self, task: pb::TaskRef, shipped: bool) -> Vec<Effect> {
        self.attempts.on_finished(result(task), dir(task), 0, 0, shipped, &mut self.out);
        self.take()
    }
}

fn task(job: u64, index: u32) -> pb::TaskRef {
    pb::TaskRef { job_id: job, index, attempt: 1 }
}

#[test]
fn work_beyond_the_free_slots_waits_and_starts_as_slots_free() {
    let mut env = Env::new(2);
    let out = env.assign(vec![assignment(1, 0, 1), assignment(1, 1, 1), assignment(1, 2, 1)]);
    assert_eq!(started(&out), vec![(1, 0, 1), (1, 1, 1)]);
    assert_eq!(env.attempts.used(), 2);
    let out = env.finish(task(1, 0), true);
    assert_eq!(reported(&out), vec![((1, 0, 1), true)]);
    assert_eq!(started(&out), vec![(1, 2, 1)], "the freed slot takes the queued task");
    assert_eq!(env.attempts.used(), 2);
}

#[test]
fn a_task_bigger_than_the_node_runs_alone() {
    let mut env = Env::new(2);
    let out = env.assign(vec![assignment(1, 0, 4), assignment(1, 1, 1)]);
    assert_eq!(started(&out), vec![(1, 0, 1)]);
    let out = env.finish(task(1, 0), true);
    assert_eq!(started(&out), vec![(1, 1, 1)]);
}

#[test]
fn an_assignment_sent_again_after_a_reconnect_is_not_taken_twice() {
    let mut env = Env::new(1);
    env.assign(vec![assignment(1, 0, 1), assignment(1, 1, 1)]);
    // Sent again: one running, one queued; and once finished, unacknowledged.
    let out = env.assign(vec![assignment(1, 0, 1), assignment(1, 1, 1)]);
    assert!(started(&out).is_empty());
    env.finish(task(1, 0), true);
    env.finish(task(1, 1), true);
    let out = env.assign(vec![assignment(1, 0, 1)]);
    assert!(started(&out).is_empty(), "a finished, unacknowledged attempt does not run again");
    // A new attempt of the same task is new work.
    let out = env
        .assign(vec![pb::Assignment { task: Some(pb::TaskRef { attempt: 2, ..task(1, 0) }), ..assignment(1, 0, 1) }]);
    assert_eq!(started(&out), vec![(1, 0, 2)]);
}

#[test]
fn a_reconnect_says_what_it_holds_and_reports_every_unacknowledged_result_again() {
    let mut env = Env::new(1);
    env.assign(vec![assignment(1, 0, 1), assignment(1, 1, 1), assignment(1, 2, 1)]);
    env.finish(task(1, 0), true);
    // Running 1.1, queued 1.2, unacknowledged 1.0.
    let held: Vec<Key> = env.attempts.held().into_iter().map(key).collect();
    assert_eq!(held, vec![(1, 0, 1), (1, 1, 1), (1, 2, 1)]);
    let queued: Vec<Key> = env.attempts.queued().into_iter().map(key).collect();
    assert_eq!(queued, vec![(1, 2, 1)], "the hello says which still wait for a slot");
    env.attempts.on_connected(&mut env.out);
    let out = env.take();
    assert_eq!(reported(&out), vec![((1, 0, 1), false)], "its output goes again on the new stream");
}

#[test]
fn an_ack_forgets_the_result_and_clears_its_directory() {
    let mut env = Env::new(1);
    env.assign(vec![assignment(1, 0, 1)]);
    env.finish(task(1, 0), true);
    env.attempts.on_ack(&[attempt(1, 0, 1), attempt(9, 9, 1)], &mut env.out);
    let out = env.take();
    assert_eq!(out, vec![Effect::RemoveDir(dir(task(1, 0)))], "an ack for something unknown does nothing");
    assert!(env.attempts.held().is_empty());
    env.attempts.on_connected(&mut env.out);
    assert!(env.take().is_empty(), "nothing is reported again once acknowledged");
}

#[test]
fn a_kill_cancels_a_running_attempt_and_drops_a_queued_one() {
    let mut env = Env::new(1);
    env.assign(vec![assignment(1, 0, 1), assignment(1, 1, 1)]);
    env.attempts.on_kill(&[attempt(1, 0, 1), attempt(1, 1, 1)], &mut env.out);
    let out = env.take();
    assert_eq!(out, vec![Effect::Cancel(attempt(1, 0, 1))]);
    // The cancelled attempt's result still comes, and is reported (the coordinator
    // decides what it is worth); the dropped one never starts.
    let out = env.finish(task(1, 0), true);
    assert_eq!(reported(&out), vec![((1, 0, 1), true)]);
    assert!(started(&out).is_empty());
}

#[test]
fn abandoning_cancels_everything_and_reports_nothing_of_it() {
    let mut env = Env::new(2);
    env.assign(vec![assignment(1, 0, 1), assignment(1, 1, 1), assignment(1, 2, 1)]);
    env.finish(task(1, 1), true);
    env.take();
    env.attempts.abandon_all(&mut env.out);
    let out = env.take();
    assert!(out.contains(&Effect::Cancel(attempt(1, 0, 1))) && out.contains(&Effect::Cancel(attempt(1, 2, 1))));
    assert!(out.contains(&Effect::RemoveDir(dir(task(1, 1)))), "the unacknowledged result is forgotten");
    assert!(env.attempts.held().is_empty(), "a new registration answers for none of it");
    // Abandoned attempts keep their slots until their processes are gone.
    assert_eq!(env.attempts.used(), 2);
    let out = env.assign(vec![assignment(2, 0, 1)]);
    assert!(started(&out).is_empty(), "no slot is free while the killed tasks still run");
    let out = env.finish(task(1, 0), true);
    assert!(reported(&out).is_empty(), "an abandoned attempt's result is nobody's business");
    assert!(out.contains(&Effect::RemoveDir(dir(task(1, 0)))));
    assert_eq!(started(&out), vec![(2, 0, 1)]);
    // Abandoning again cancels nothing twice.
    env.attempts.abandon_all(&mut env.out);
    assert_eq!(env.take(), vec![Effect::Cancel(attempt(2, 0, 1))]);
}

#[test]
fn a_result_for_an_attempt_it_does_not_run_is_ignored() {
    let mut env = Env::new(1);
    let out = env.finish(task(5, 5), true);
    assert!(out.is_empty());
    assert!(env.attempts.held().is_empty());
}
