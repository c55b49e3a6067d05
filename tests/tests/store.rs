//! The store has one owner: a second coordinator on a live data dir is refused and
//! names the first; the lock of one killed with SIGKILL is free at once.

use std::process::Command;
use std::time::Duration;

use corral_tests::{bin, Cluster};

const MINUTE: Duration = Duration::from_secs(60);

#[test]
fn a_second_coordinator_on_a_live_data_dir_is_refused_and_a_killed_ones_lock_is_free_at_once() {
    let mut c = Cluster::start(&[]);
    c.static_pool("cpu", 1, 1);
    let job = c.submit(&["--pool", "cpu"], &["sh", "-c", "sleep 1; echo done"]);
    let data = c.data_dir();
    let says =
        format!("data dir {} is in use by corral-coordinator PID {} (since ", data.display(), c.coordinator_pid());
    let second = Command::new(bin("corral-coordinator"))
        .args(["--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "{err}");
    assert!(err.contains(&says) && err.contains("); stop it or use another --data-dir"), "{err}");
    // `corral up` on it is refused the same way, before it binds anything.
    let up = Command::new(bin("corral"))
        .args(["up", "--listen", "127.0.0.1:0", "--http", "off", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&up.stderr);
    assert!(!up.status.success() && err.contains(&says), "{err}");
    // The first is untouched: its node stays, its task ran once and finished.
    let done = c.wait_job(job, MINUTE);
    assert_eq!(done["state"], "completed", "{done}");
    c.assert_each_succeeded_once(job);
    assert_eq!(c.nodes_in("cpu", "idle").len(), 1);
    // Killed with SIGKILL, its lock goes with it: a new coordinator starts at once.
    c.restart_coordinator();
    assert_eq!(c.job(job)["state"], "completed");
    let next = c.submit(&["--pool", "cpu"], &["true"]);
    assert_eq!(c.wait_job(next, MINUTE)["state"], "completed");
}
