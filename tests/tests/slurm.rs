//! The one-host Slurm the Slurm provider's tests run on (issue 30): a two-node
//! allocation runs a step on each node, and cancelling ends it.

use std::time::Duration;

use corral_tests::slurm::Slurm;
use corral_tests::wait_until;

#[test]
fn a_two_node_allocation_runs_a_step_on_each_node_and_cancel_ends_it() {
    let slurm = Slurm::start(2, 2);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let script = format!("srun sh -c 'echo $SLURM_NODEID $SLURMD_NODENAME' > {}; sleep 600", out.display());
    let submitted = slurm.run("sbatch", &["--parsable", "-N", "2", "-t", "5", "-J", "pair", "--wrap", &script]);
    assert!(submitted.status.success(), "sbatch: {}", String::from_utf8_lossy(&submitted.stderr));
    let id: u64 = String::from_utf8_lossy(&submitted.stdout).trim().parse().expect("a job id");
    wait_until(Duration::from_secs(30), "both steps to write", || {
        std::fs::read_to_string(&out).is_ok_and(|s| s.lines().count() == 2)
    });
    let mut lines: Vec<String> = std::fs::read_to_string(&out).unwrap().lines().map(String::from).collect();
    lines.sort();
    assert_eq!(lines, ["0 n1", "1 n2"]);
    assert_eq!(slurm.jobs(), [(id, "RUNNING".to_string(), "pair".to_string())]);
    let cancelled = slurm.run("scancel", &[&id.to_string()]);
    assert!(cancelled.status.success());
    wait_until(Duration::from_secs(30), "the allocation gone", || slurm.jobs().is_empty());
}
