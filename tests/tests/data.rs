//! The data plane end to end: files through the coordinator's object store, task
//! inputs fetched before a task starts, outputs uploaded after, `job output`.

use std::time::Duration;

use corral_tests::Cluster;

const MINUTE: Duration = Duration::from_secs(60);

#[test]
fn a_200_mb_file_round_trips_without_the_coordinator_holding_it() {
    let c = Cluster::start(&[]);
    let big = c.dir.path().join("big.bin");
    // Not sparse, not all zeros: a repeating pattern of 1 MiB.
    let block: Vec<u8> = (0..1u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let mut data = Vec::with_capacity(200 << 20);
    for _ in 0..200 {
        data.extend_from_slice(&block);
    }
    std::fs::write(&big, &data).unwrap();
    let before = c.coordinator_rss();
    let put = c.json(&["file", "put", big.to_str().unwrap(), "data/big.bin"]);
    assert_eq!(put["size"], 200u64 << 20);
    let back = c.dir.path().join("back.bin");
    let got = c.json(&["file", "get", "data/big.bin", back.to_str().unwrap()]);
    assert_eq!(got["size"], 200u64 << 20);
    let after = c.coordinator_rss();
    assert!(std::fs::read(&back).unwrap() == data, "the file changed on the way");
    let grew = after.saturating_sub(before) >> 20;
    assert!(grew < 64, "the coordinator grew by {grew} MiB moving a 200 MiB file");

    let listing = c.json(&["file", "ls", "data"]);
    assert_eq!(listing[0]["path"], "data/big.bin");
    assert_eq!(listing[0]["size"], 200u64 << 20);
    let out = c.corral(&["file", "rm", "data/big.bin"]);
    assert!(out.status.success());
    assert!(c.fails(&["file", "get", "data/big.bin", back.to_str().unwrap()]).contains("does not exist"));
    assert!(c.fails(&["file", "put", big.to_str().unwrap(), "../escape"]).contains("not a valid object path"));
}

#[test]
fn tasks_fetch_inputs_and_upload_outputs() {
    let mut c = Cluster::start(&[]);
    c.static_pool("cpu", 2, 2);
    for i in 1..=3 {
        let local = c.dir.path().join(format!("in-{i}.txt"));
        std::fs::write(&local, format!("hello number {i}\n")).unwrap();
        c.json(&["file", "put", local.to_str().unwrap(), &format!("inputs/in-{i}.txt")]);
    }
    let job = c.submit(
        &["--pool", "cpu", "--array", "1-3", "--input", "inputs/in-{index}.txt=data/in.txt", "--outputs", "out/*.txt"],
        &["sh", "-c", "mkdir -p out && tr a-z A-Z < data/in.txt > out/upper.txt && echo skip > notme.log && ln -s /etc/hostname out/link.txt"],
    );
    assert_eq!(c.wait_job(job, MINUTE)["state"], "completed");
    let dest = c.dir.path().join("results");
    let got = c.json(&["job", "output", &job.to_string(), "--dest", dest.to_str().unwrap()]);
    assert_eq!(got.as_array().unwrap().len(), 3, "one file per task, symbolic links left out: {got}");
    for i in 1..=3 {
        let text = std::fs::read_to_string(dest.join(format!("{i}/out/upper.txt"))).unwrap();
        assert_eq!(text, format!("HELLO NUMBER {i}\n"));
    }
    let one = c.dir.path().join("one");
    c.json(&["job", "output", &job.to_string(), "--task", "2", "--dest", one.to_str().unwrap()]);
    assert!(one.join("2/out/upper.txt").is_file());
    assert!(!one.join("1").exists());

    // A missing input fails the attempt and says which.
    let missing = c.submit(&["--pool", "cpu", "--input", "inputs/nope.txt"], &["true"]);
    assert_eq!(c.wait_job(missing, MINUTE)["state"], "failed");
    let shown = c.json(&["task", "show", &missing.to_string(), "0"]);
    let message = shown["attempts"][0]["message"].as_str().unwrap();
    assert!(message.contains("input 'inputs/nope.txt'") && message.contains("does not exist"), "{message}");

    // Outputs of failures, when asked for.
    let failing = c.submit(
        &["--pool", "cpu", "--outputs", "why.txt", "--outputs-when", "failure"],
        &["sh", "-c", "echo disk on fire > why.txt; exit 1"],
    );
    assert_eq!(c.wait_job(failing, MINUTE)["state"], "failed");
    let why = c.dir.path().join("why");
    c.json(&["job", "output", &failing.to_string(), "--dest", why.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(why.join("0/why.txt")).unwrap(), "disk on fire\n");

    // An output the store refuses (a control character in its name) fails the
    // attempt, and the reason says which file.
    let refused = c
        .submit(&["--pool", "cpu", "--outputs", "*.txt"], &["sh", "-c", "printf x > \"$(printf 'bad\\001name').txt\""]);
    assert_eq!(c.wait_job(refused, MINUTE)["state"], "failed");
    let shown = c.json(&["task", "show", &refused.to_string(), "0"]);
    // The last attempt: under load a node may be lost under the first (which is
    // not the task's fault and is run again).
    let attempt = shown["attempts"].as_array().and_then(|a| a.last()).cloned().unwrap_or_default();
    let message = attempt["message"].as_str().unwrap_or_default();
    assert_eq!(attempt["exit_code"], 0, "the command itself succeeded: {shown}");
    assert!(message.contains("uploading output") && message.contains("name.txt"), "{message}");

    let err = c.fails(&["job", "submit", "--pool", "cpu", "--input", "x=../../etc/passwd", "--", "true"]);
    assert!(err.contains("inputs.path"), "{err}");
    let err = c.fails(&["job", "submit", "--pool", "cpu", "--outputs", "/etc/*", "--", "true"]);
    assert!(err.contains("outputs"), "{err}");
}

#[test]
fn an_output_pattern_does_not_follow_a_linked_directory_out_of_the_task() {
    let mut c = Cluster::start(&[]);
    c.static_pool("cpu", 1, 1);
    let secret = c.dir.path().join("elsewhere");
    std::fs::create_dir(&secret).unwrap();
    std::fs::write(secret.join("key.txt"), "not yours\n").unwrap();
    let job = c.submit(
        &["--pool", "cpu", "--outputs", "out/*.txt"],
        &["sh", "-c", &format!("ln -s {} out && ls out/key.txt", secret.display())],
    );
    assert_eq!(c.wait_job(job, MINUTE)["state"], "completed");
    let listed = c.json(&["file", "ls", &format!("jobs/{job}/")]);
    assert_eq!(listed.as_array().map(Vec::len), Some(0), "nothing from outside the task was uploaded: {listed}");
}
