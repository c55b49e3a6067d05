//! Applying store ops: rows written as if each change had its own transaction.

use std::path::Path;

use super::*;
use crate::core::TaskRecord;
use crate::events::Filter;

fn put(index: u32, state: TaskState) -> StoreOp {
    let key = TaskKey { job: JobId(1), index };
    StoreOp::PutTask(TaskRecord { key, state, attempt: 1, failures: 0, node_losses: 0, reason: None })
}

fn start(index: u32) -> StoreOp {
    let attempt = AttemptRef { task: TaskKey { job: JobId(1), index }, attempt: 1 };
    StoreOp::StartAttempt {
        attempt,
        node: NodeId("n-1".into()),
        members: vec![],
        started_at_ms: 10,
        queued_at_ms: 5,
        gpus: vec![],
    }
}

fn end(index: u32) -> StoreOp {
    StoreOp::EndAttempt {
        attempt: AttemptRef { task: TaskKey { job: JobId(1), index }, attempt: 1 },
        started_at_ms: Some(12),
        outcome: Outcome::Succeeded,
        exit_code: Some(0),
        signal: None,
        message: String::new(),
        ended_at_ms: 20,
        order: None,
    }
}

/// What the store holds of task `index` of job 1: (state, attempts).
fn stored(dir: &Path, index: u32) -> (String, Vec<crate::store::AttemptRow>) {
    let mut reader = Store::open_reader(dir).unwrap();
    let key = TaskKey { job: JobId(1), index };
    let conn = rusqlite::Connection::open(dir.join("corral.db")).unwrap();
    let state = conn.query_row("SELECT state FROM tasks WHERE job_id = 1 AND idx = ?1", [index], |r| r.get(0)).unwrap();
    (state, reader.attempts(key).unwrap())
}

#[test]
fn a_task_that_starts_and_ends_in_one_transaction_is_stored_as_if_each_change_had_its_own() {
    let (one, apart) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ops = vec![
        put(0, TaskState::Running),
        start(0),
        put(1, TaskState::Running),
        start(1),
        put(0, TaskState::Succeeded),
        end(0),
    ];
    let mut together = Store::open(one.path()).unwrap();
    together.apply(&ops).unwrap();
    let mut separately = Store::open(apart.path()).unwrap();
    for op in &ops {
        separately.apply(std::slice::from_ref(op)).unwrap();
    }
    for index in [0, 1] {
        assert_eq!(stored(one.path(), index), stored(apart.path(), index), "task {index}");
    }
    let (state, attempts) = stored(one.path(), 0);
    assert_eq!((state.as_str(), attempts[0].started_at_ms, attempts[0].ended_at_ms), ("succeeded", 12, Some(20)));
    assert_eq!(stored(one.path(), 1).1[0].ended_at_ms, None, "an attempt still running has no end");
    // Every change still makes its event.
    let events = |dir: &Path| Store::open_reader(dir).unwrap().events(0, &Filter::default(), 100).unwrap().len();
    assert_eq!(events(one.path()), events(apart.path()));
}

#[test]
fn the_order_of_an_attempts_output_is_kept_whether_it_ended_in_the_transaction_that_started_it_or_later() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let order = corral_types::order::Runs::checked(vec![4, 5, 6], [10, 5]).unwrap();
    let with_order = |index: u32| {
        let mut op = end(index);
        if let StoreOp::EndAttempt { order: o, .. } = &mut op {
            *o = Some(order.clone());
        }
        op
    };
    // Task 0 starts and ends in one transaction (one row written whole); task 1 ends later.
    store.apply(&[put(0, TaskState::Running), start(0), with_order(0), put(1, TaskState::Running), start(1)]).unwrap();
    store.apply(&[with_order(1), end(2)]).unwrap();
    let mut reader = Store::open_reader(dir.path()).unwrap();
    let at = |index: u32| AttemptRef { task: TaskKey { job: JobId(1), index }, attempt: 1 };
    assert_eq!(reader.output_order(at(0)).unwrap(), Some(order.clone()));
    assert_eq!(reader.output_order(at(1)).unwrap(), Some(order));
    assert_eq!(reader.output_order(at(2)).unwrap(), None, "no order recorded, or no such attempt");
}

#[test]
fn a_multi_node_attempts_other_nodes_are_stored_and_loaded_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let members = vec![NodeId("n-2".into()), NodeId("n-3".into())];
    let gang = match start(0) {
        StoreOp::StartAttempt { attempt, node, started_at_ms, queued_at_ms, gpus, .. } => {
            StoreOp::StartAttempt { attempt, node, members: members.clone(), started_at_ms, queued_at_ms, gpus }
        }
        other => other,
    };
    store.apply(&[put(0, TaskState::Running), gang, put(1, TaskState::Running), start(1)]).unwrap();
    let (snapshot, ..) = Store::load_again(dir.path()).unwrap();
    let open: Vec<(u32, Vec<NodeId>)> =
        snapshot.open_attempts.iter().map(|a| (a.attempt.task.index, a.members.clone())).collect();
    assert_eq!(open, [(0, members), (1, vec![])]);
}
