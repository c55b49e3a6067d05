//! Map/reduce end to end: word counts checked against `sort | uniq -c` of the same
//! input, across shapes, with a combiner, with an empty mapper, with keys that
//! contain spaces, with spilling, and with an agent killed during the map phase.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use corral_tests::{wait_until, Cluster};

const MINUTE: Duration = Duration::from_secs(60);
const MAPPER: &str = r#"tr -s ' ' '\n' | awk 'NF { print $1 "\t1" }'"#;
const REDUCER: &str = r#"awk -F'\t' '{ c[$1] += $2 } END { for (k in c) print k "\t" c[k] }'"#;

/// Writes a corpus of `lines` lines, some long and some empty, into `dir`, split
/// over two files; returns the glob that names them.
fn corpus(dir: &Path, lines: usize) -> String {
    let words = ["lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit", "sed", "do"];
    let mut seed: u64 = 42;
    let mut next = || {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) as usize
    };
    for (f, n) in [(0, lines * 2 / 3), (1, lines - lines * 2 / 3)] {
        let mut text = String::new();
        for i in 0..n {
            let count = if i % 97 == 0 { 0 } else { 1 + next() % 12 };
            let line: Vec<&str> = (0..count).map(|_| words[next() % words.len()]).collect();
            text.push_str(&line.join(" "));
            text.push('\n');
        }
        if f == 1 {
            text.push_str("last line without a newline");
        }
        std::fs::write(dir.join(format!("part{f}.txt")), text).unwrap();
    }
    format!("{}/part*.txt", dir.display())
}

/// Word counts as `sort | uniq -c` would give them.
fn expected(pattern: &str) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for path in glob_files(pattern) {
        for word in std::fs::read_to_string(path).unwrap().split_whitespace() {
            *counts.entry(word.to_string()).or_insert(0) += 1;
        }
    }
    counts
}

fn glob_files(pattern: &str) -> Vec<std::path::PathBuf> {
    let dir = Path::new(pattern).parent().unwrap();
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name().unwrap().to_string_lossy().starts_with("part") && p.extension().is_some_and(|e| e == "txt")
        })
        .collect();
    files.sort();
    files
}

/// The `key<TAB>count` lines of every part file in `out`, and how many part files.
fn result(out: &Path) -> (BTreeMap<String, u64>, usize) {
    let mut counts = BTreeMap::new();
    let mut parts = 0;
    for entry in std::fs::read_dir(out).unwrap() {
        let path = entry.unwrap().path();
        parts += 1;
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let (k, v) = line.split_once('\t').unwrap_or_else(|| panic!("not key<TAB>value: {line:?}"));
            let old = counts.insert(k.to_string(), v.parse::<u64>().unwrap());
            assert!(old.is_none(), "key {k} came out of two reducers");
        }
    }
    (counts, parts)
}

fn mapreduce(c: &Cluster, input: &str, m: u32, r: u32, out: &Path, extra: &[&str]) -> std::process::Output {
    let (m, r) = (m.to_string(), r.to_string());
    let mut args = vec![
        "job",
        "mapreduce",
        "--pool",
        "cpu",
        "--input",
        input,
        "--map-tasks",
        &m,
        "--reduce-tasks",
        &r,
        "--mapper",
        MAPPER,
        "--reducer",
        REDUCER,
        "--output-dir",
    ];
    let out = out.to_str().unwrap();
    args.push(out);
    args.extend_from_slice(extra);
    c.corral(&args)
}

#[test]
fn word_count_matches_sort_uniq_for_every_shape() {
    let mut c = Cluster::start(&[]);
    c.static_pool("cpu", 2, 2);
    let input = corpus(c.dir.path(), 3000);
    let want = expected(&input);
    for (m, r) in [(1, 1), (2, 3), (7, 2), (3, 1)] {
        let out = c.dir.path().join(format!("out-{m}-{r}"));
        let run = mapreduce(&c, &input, m, r, &out, &[]);
        assert!(
            run.status.success(),
            "M={m} R={r}: {}{}",
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        );
        let (got, parts) = result(&out);
        assert_eq!(parts, r as usize, "one part file per reducer");
        assert_eq!(got, want, "M={m} R={r}");
    }
    // Every line of the input went to exactly one mapper: the record count matches.
    let total: u64 = want.values().sum();
    assert!(total > 10_000, "a corpus worth splitting: {total} words");
}

#[test]
fn combiner_empty_mapper_and_keys_with_spaces() {
    let mut c = Cluster::start(&[]);
    c.static_pool("cpu", 2, 2);
    let input = corpus(c.dir.path(), 1000);
    let want = expected(&input);

    let out = c.dir.path().join("combined");
    let run = mapreduce(&c, &input, 4, 3, &out, &["--combiner", REDUCER]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(result(&out).0, want);

    // A mapper that emits nothing: the job completes with empty parts.
    let out = c.dir.path().join("empty");
    let run = c.corral(&[
        "job",
        "mapreduce",
        "--pool",
        "cpu",
        "--input",
        &input,
        "--map-tasks",
        "3",
        "--reduce-tasks",
        "2",
        "--mapper",
        "cat > /dev/null",
        "--reducer",
        "cat",
        "--output-dir",
        out.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let (got, parts) = result(&out);
    assert!(got.is_empty());
    assert_eq!(parts, 2);

    // Whole lines as keys, spaces and all: a line count per distinct line.
    let out = c.dir.path().join("lines");
    let run = c.corral(&[
        "job",
        "mapreduce",
        "--pool",
        "cpu",
        "--input",
        &input,
        "--map-tasks",
        "3",
        "--reduce-tasks",
        "2",
        "--mapper",
        r#"awk '{ print $0 "\t1" }'"#,
        "--reducer",
        REDUCER,
        "--output-dir",
        out.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let mut lines = BTreeMap::new();
    for path in glob_files(&input) {
        for line in std::fs::read_to_string(path).unwrap().lines() {
            *lines.entry(line.to_string()).or_insert(0u64) += 1;
        }
    }
    let (got, _) = result(&out);
    assert_eq!(got, lines);
    assert!(got.keys().any(|k| k.contains(' ')), "keys with spaces were tested");
}

#[test]
fn map_output_larger_than_memory_spills_and_still_counts_right() {
    let mut c = Cluster::start(&[]);
    c.json(&["pool", "create", "cpu", "--slots-per-node", "2"]);
    for _ in 0..2 {
        c.agent_with_env("cpu", 2, &[("CORRAL_MAP_SPILL_BYTES", "4096")]);
    }
    c.wait_nodes("cpu", "idle", 2);
    let input = corpus(c.dir.path(), 2000);
    let out = c.dir.path().join("out");
    let run = mapreduce(&c, &input, 2, 3, &out, &[]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(result(&out).0, expected(&input));
}

#[test]
fn an_agent_killed_during_the_map_phase_reruns_only_its_map_tasks() {
    let mut c = Cluster::start(&[]);
    let pids = c.static_pool("cpu", 2, 1);
    let input = corpus(c.dir.path(), 1000);
    let slow_mapper = format!("sleep 1; {MAPPER}");
    let out = c.dir.path().join("out");
    let (url, out_s, token) = (c.url.clone(), out.to_str().unwrap().to_string(), c.admin_token_file());
    let run = std::thread::spawn(move || {
        std::process::Command::new(corral_tests::bin("corral"))
            .env("CORRAL_TOKEN_FILE", token)
            .args(["--coordinator", &url, "job", "mapreduce", "--pool", "cpu", "--input", &input, "--map-tasks", "4"])
            .args(["--reduce-tasks", "2", "--mapper", &slow_mapper, "--reducer", REDUCER, "--output-dir", &out_s])
            .output()
            .unwrap()
    });
    wait_until(MINUTE, "the map phase to run on both agents", || {
        c.json(&["job", "list"]).as_array().is_some_and(|j| !j.is_empty()) && c.job(1)["counts"]["running"] == 2
    });
    c.signal(pids[0], libc::SIGKILL);
    let run = run.join().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let input = format!("{}/part*.txt", c.dir.path().display());
    assert_eq!(result(&out).0, expected(&input));
    let attempts = c.attempts(1);
    let lost: Vec<u64> =
        attempts.iter().filter(|(_, a)| a.iter().any(|x| x["outcome"] == "node_lost")).map(|(i, _)| *i).collect();
    assert!(!lost.is_empty() && lost.iter().all(|&i| i < 4), "only map tasks were lost: {lost:?}");
    for (index, a) in &attempts {
        let wins = a.iter().filter(|x| x["outcome"] == "succeeded").count();
        assert_eq!(wins, 1, "task {index}: {a:?}");
    }
}

#[test]
fn a_map_reduce_job_from_a_job_file() {
    let mut c = Cluster::start(&[]);
    c.static_pool("cpu", 2, 2);
    let input = corpus(c.dir.path(), 500);
    let want = expected(&input);
    c.json(&["file", "put", c.dir.path().join("part1.txt").to_str().unwrap(), "corpus/part1.txt"]);
    let file = c.dir.path().join("wc.yaml");
    let yaml = format!(
        "name: wc\nmapreduce:\n  inputs: [part0.txt, 'store:corpus/part1.txt']\n  map_tasks: 3\n  reduce_tasks: 2\n  mapper: {}\n  reducer: {}\n",
        serde_json::to_string(MAPPER).unwrap(),
        serde_json::to_string(REDUCER).unwrap()
    );
    std::fs::write(&file, yaml).unwrap();
    let out = c.corral(&["job", "submit", "--pool", "cpu", "--file", file.to_str().unwrap(), "--wait"]);
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let dest = c.dir.path().join("dest");
    c.json(&["job", "output", "1", "--dest", dest.to_str().unwrap()]);
    let (got, parts) = result(&dest.join("output"));
    assert_eq!(parts, 2);
    assert_eq!(got, want);
    let bad = c.dir.path().join("bad.yaml");
    std::fs::write(&bad, "mapreduce:\n  inputs: [nothing-here-*.txt]\n  map_tasks: 1\n  reduce_tasks: 1\n  mapper: cat\n  reducer: cat\n").unwrap();
    let err = c.fails(&["job", "submit", "--pool", "cpu", "--file", bad.to_str().unwrap()]);
    assert!(err.contains("matches no file"), "{err}");
}

#[test]
fn a_reduce_task_whose_node_dies_reruns_from_the_stored_map_outputs() {
    let mut c = Cluster::start(&[]);
    let pids = c.static_pool("cpu", 2, 1);
    let input = corpus(c.dir.path(), 600);
    let slow_reducer = format!("sleep 2; {REDUCER}");
    let out = c.dir.path().join("out");
    let (url, out_s, input_s) = (c.url.clone(), out.to_str().unwrap().to_string(), input.clone());
    let token = c.admin_token_file();
    let run = std::thread::spawn(move || {
        std::process::Command::new(corral_tests::bin("corral"))
            .env("CORRAL_TOKEN_FILE", token)
            .args(["--coordinator", &url, "job", "mapreduce", "--pool", "cpu", "--input", &input_s, "--map-tasks", "3"])
            .args(["--reduce-tasks", "2", "--mapper", MAPPER, "--reducer", &slow_reducer, "--output-dir", &out_s])
            .output()
            .unwrap()
    });
    // Both reducers running (maps are tasks 0-2, reducers 3-4): kill the first agent.
    wait_until(MINUTE, "the reduce phase", || {
        c.json(&["job", "list"]).as_array().is_some_and(|j| !j.is_empty())
            && c.json(&["task", "list", "1", "--state", "running"])
                .as_array()
                .is_some_and(|t| t.len() == 2 && t.iter().all(|t| t["id"].as_u64() >= Some(3)))
    });
    c.signal(pids[0], libc::SIGKILL);
    let run = run.join().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(result(&out).0, expected(&input));
    let attempts = c.attempts(1);
    for (index, a) in &attempts {
        if *index < 3 {
            assert_eq!(a.len(), 1, "map task {index} ran once: the reduce rerun used its stored output");
        }
    }
    assert!(attempts[3..].iter().any(|(_, a)| a.iter().any(|x| x["outcome"] == "node_lost")), "{attempts:?}");
}
