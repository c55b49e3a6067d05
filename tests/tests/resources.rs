//! Resources beyond slots, end to end: an agent declaring `gpus=4` gives each task
//! its own devices (measured by the tasks, with lock directories per device),
//! memory and counters bound what runs together, and impossible requests are
//! refused at submit.

use std::time::Duration;

use corral_tests::Cluster;

const MINUTE: Duration = Duration::from_secs(60);

#[test]
fn gpu_ids_are_disjoint_across_concurrent_tasks() {
    let mut c = Cluster::start(&[]);
    let out = c.corral(&["pool", "create", "gpu", "--slots-per-node", "8"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    c.agent_with_env("gpu", 8, &[("CORRAL_RESOURCES", "gpus=4,licenses=3")]);
    c.wait_nodes("gpu", "idle", 1);
    let node = c.json(&["node", "list"])[0]["id"].as_str().unwrap().to_string();
    let shown = c.json(&["node", "show", &node]);
    assert_eq!(shown["resources"]["gpus"]["total"], 4, "{shown}");
    assert!(shown["resources"]["mem"]["total"].as_u64().unwrap() > 0, "mem defaults to the host's: {shown}");
    let locks = c.dir.path().join("locks");
    std::fs::create_dir(&locks).unwrap();
    // Each device is a lock directory: a task that finds its device taken says so.
    let script = format!(
        "d={}; for g in $(echo $CORRAL_GPUS | tr , ' '); do mkdir $d/gpu$g || echo CLASH $g; done; echo \"$CORRAL_GPUS|$CUDA_VISIBLE_DEVICES\"; sleep 0.4; for g in $(echo $CORRAL_GPUS | tr , ' '); do rmdir $d/gpu$g; done",
        locks.display()
    );
    let ones = c.submit(&["--pool", "gpu", "--array", "0-5", "--resource", "gpus=1"], &["sh", "-c", &script]);
    let twos = c.submit(&["--pool", "gpu", "--array", "0-2", "--resource", "gpus=2"], &["sh", "-c", &script]);
    let none = c.submit(&["--pool", "gpu"], &["sh", "-c", "echo \"[$CUDA_VISIBLE_DEVICES]\""]);
    for (job, count) in [(ones, 6), (twos, 3)] {
        assert_eq!(c.wait_job(job, MINUTE)["state"], "completed");
        for i in 0..count {
            let out = c.logs(job, i, false);
            assert!(!out.contains("CLASH"), "job {job} task {i} found its device taken: {out}");
            let (gpus, cuda) = out.trim().split_once('|').unwrap();
            assert_eq!(gpus, cuda, "CUDA_VISIBLE_DEVICES names the same devices");
            let ids: Vec<u32> = gpus.split(',').map(|g| g.parse().unwrap()).collect();
            assert_eq!(ids.len(), if job == ones { 1 } else { 2 }, "{out}");
            assert!(ids.iter().all(|&g| g < 4), "{out}");
        }
    }
    assert_eq!(c.wait_job(none, MINUTE)["state"], "completed");
    assert_eq!(c.logs(none, 0, false).trim(), "[]", "a task that asked for no GPU sees none");
    // Counters: three licences, never more than three tasks holding one.
    let dir = c.dir.path().join("lic");
    std::fs::create_dir(&dir).unwrap();
    let count = format!(
        "d={}; touch $d/run.$CORRAL_TASK_INDEX; ls $d | grep -c '^run' >> $d/seen; sleep 0.3; rm $d/run.$CORRAL_TASK_INDEX",
        dir.display()
    );
    let lic = c.submit(&["--pool", "gpu", "--array", "0-8", "--resource", "licenses=1"], &["sh", "-c", &count]);
    assert_eq!(c.wait_job(lic, MINUTE)["state"], "completed");
    let seen = std::fs::read_to_string(dir.join("seen")).unwrap();
    let most = seen.lines().map(|l| l.trim().parse::<u32>().unwrap()).max().unwrap();
    assert!(most <= 3, "at most three licences held at once, saw {most}");
    let shown = c.json(&["node", "show", &node]);
    assert_eq!(shown["resources"]["gpus"]["used"], 0, "everything was given back: {shown}");
}

#[test]
fn a_request_no_node_can_meet_is_refused_at_submit() {
    let mut c = Cluster::start(&[]);
    c.static_pool("cpu", 1, 2);
    let err = c.fails(&["job", "submit", "--pool", "cpu", "--resource", "gpus=1", "--", "true"]);
    assert!(err.contains("task.resources: a task needs gpus=1 but no node of pool 'cpu' has that"), "{err}");
    let err = c.fails(&["job", "submit", "--pool", "cpu", "--resource", "mem=100TiB", "--", "true"]);
    assert!(err.contains("mem=100.0 TiB"), "{err}");
    let err = c.fails(&["job", "submit", "--pool", "cpu", "--resource", "GPU=1", "--", "true"]);
    assert!(err.contains("not a resource name"), "{err}");
    // What fits is accepted and runs.
    let job = c.submit(&["--pool", "cpu", "--resource", "mem=1MiB"], &["true"]);
    assert_eq!(c.wait_job(job, MINUTE)["state"], "completed");
    assert_eq!(c.json(&["job", "list"]).as_array().unwrap().len(), 1);
}
