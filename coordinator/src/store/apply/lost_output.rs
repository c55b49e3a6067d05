//! Output that could not be written is recorded as lost, not silently dropped.

use std::fs;
use std::path::Path;

use super::*;
use crate::store::log_path;

fn attempt(index: u32) -> AttemptRef {
    AttemptRef { task: TaskKey { job: JobId(1), index }, attempt: 1 }
}

fn chunk(index: u32, offset: u64, data: &[u8]) -> StoreOp {
    StoreOp::Log(LogChunk { attempt: attempt(index), rank: 0, stderr: false, offset, data: data.to_vec() })
}

fn message(dir: &Path, index: u32) -> String {
    let mut reader = Store::open_reader(dir).unwrap();
    reader.attempts(attempt(index).task).unwrap().pop().unwrap().message
}

/// Output that cannot be written (here: its log's place is taken by a
/// directory, as a full disk would refuse it) is said on the attempt, in the
/// same or a later transaction than the chunk, and its log gets a marker once
/// one can be written.
#[test]
fn output_that_could_not_be_written_is_said_on_the_attempt_and_marked_in_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let blocked = log_path(&dir.path().join("logs"), attempt(0), 0, false);
    fs::create_dir_all(&blocked).unwrap();
    let start = |index: u32| StoreOp::StartAttempt {
        attempt: attempt(index),
        node: NodeId("n-1".into()),
        members: vec![],
        started_at_ms: 10,
        queued_at_ms: 5,
        gpus: vec![],
    };
    let end = |index: u32, message: &str| StoreOp::EndAttempt {
        attempt: attempt(index),
        started_at_ms: Some(12),
        outcome: Outcome::Failed,
        exit_code: Some(1),
        signal: None,
        message: message.into(),
        ended_at_ms: 20,
        order: None,
    };
    store.apply(&[start(0), start(1)]).unwrap();
    store.apply(&[chunk(0, 0, &[b'x'; 2048]), chunk(1, 0, b"fine\n")]).unwrap();
    store.apply(&[chunk(0, 2048, b"more")]).unwrap();
    store.apply(&[end(0, "exited with code 1"), end(1, "")]).unwrap();
    assert_eq!(
        message(dir.path(), 0),
        "exited with code 1; 2.0 KiB of stdout not stored: the coordinator could not write its logs (is its disk full?); see its log"
    );
    assert_eq!(message(dir.path(), 1), "", "an attempt whose output was written says nothing");
    // The marker waits for room, and comes with the next transaction that has it.
    fs::remove_dir(&blocked).unwrap();
    store.apply(&[start(2)]).unwrap();
    let log = fs::read_to_string(&blocked).unwrap();
    assert!(log.contains("[corral: 2.0 KiB of stdout is missing from this log"), "{log:?}");
    // A chunk lost after its attempt ended is said too.
    fs::remove_file(&blocked).unwrap();
    fs::create_dir_all(&blocked).unwrap();
    store.apply(&[chunk(0, 4096, b"late")]).unwrap();
    assert!(message(dir.path(), 0).ends_with(
        "4 B of stdout not stored: the coordinator could not write its logs (is its disk full?); see its log"
    ));
    // What went missing while an attempt ran survives a restart of the store.
    let blocked = log_path(&dir.path().join("logs"), attempt(3), 0, true);
    fs::create_dir_all(&blocked).unwrap();
    let mut lost = chunk(3, 0, b"oops");
    if let StoreOp::Log(c) = &mut lost {
        c.stderr = true;
    }
    store.apply(&[start(3), lost]).unwrap();
    drop(store);
    let mut store = Store::open(dir.path()).unwrap();
    store.apply(&[end(3, "")]).unwrap();
    assert!(message(dir.path(), 3).starts_with("4 B of stderr not stored"), "{}", message(dir.path(), 3));
    // A deleted job's missing output is forgotten with it.
    store.apply(&[StoreOp::DeleteJob(JobId(1))]).unwrap();
    let conn = rusqlite::Connection::open(dir.path().join("corral.db")).unwrap();
    let left: u32 = conn.query_row("SELECT count(*) FROM lost_output", [], |r| r.get(0)).unwrap();
    assert_eq!(left, 0);
}
