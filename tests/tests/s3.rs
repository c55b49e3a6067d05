//! The object store on S3: a real S3-compatible server (moto, from PyPI; `.ci/run`
//! installs it) stands in for AWS. Task inputs and outputs, `corral file` and a
//! map/reduce job all go through the bucket, and nothing lands in the data dir.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use corral_tests::{wait_until, Cluster};

const MINUTE: Duration = Duration::from_secs(60);

/// A moto S3 server on a free loopback port, with bucket `corral`; killed on drop.
struct S3 {
    child: Child,
    endpoint: String,
}

impl S3 {
    fn start() -> S3 {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("python3")
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 is missing");
        let endpoint = format!("http://127.0.0.1:{port}");
        let mut child = child;
        wait_until(MINUTE, "the S3 server (moto) to listen", || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("moto exited ({status}): pip install \"moto[server]\" (.ci/run does)");
            }
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        let s3 = S3 { child, endpoint };
        s3.boto("s3.create_bucket(Bucket='corral')");
        s3
    }

    /// Runs a line of Python with `s3`, a boto3 client of this server; returns stdout.
    fn boto(&self, code: &str) -> String {
        let script = format!(
            "import boto3\ns3 = boto3.client('s3', endpoint_url='{}', aws_access_key_id='test', aws_secret_access_key='test', region_name='us-east-1')\n{code}\n",
            self.endpoint
        );
        let out = Command::new("python3").arg("-c").arg(script).output().expect("python3");
        assert!(out.status.success(), "boto3: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self) -> Vec<String> {
        let listed = self.boto(
            "for page in s3.get_paginator('list_objects_v2').paginate(Bucket='corral'):\n    [print(o['Key']) for o in page.get('Contents', [])]",
        );
        listed.lines().map(str::to_string).collect()
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn inputs_outputs_files_and_map_reduce_through_an_s3_bucket() {
    let s3 = S3::start();
    let env = s3.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut c = Cluster::start_with_env(&["--store-url", "s3://corral/prod"], &env);
    c.static_pool("cpu", 2, 2);

    // 12 MB: more than one 5 MB part of a multipart upload.
    let big = c.dir.path().join("big.bin");
    let data: Vec<u8> = (0..12_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    std::fs::write(&big, &data).unwrap();
    c.json(&["file", "put", big.to_str().unwrap(), "in/big.bin"]);
    let text = c.dir.path().join("words.txt");
    std::fs::write(&text, "b a c a\nc a\n").unwrap();
    c.json(&["file", "put", text.to_str().unwrap(), "in/words.txt"]);

    let job = c.submit(
        &["--pool", "cpu", "--input", "in/big.bin", "--outputs", "sum.txt"],
        &["sh", "-c", "wc -c < big.bin > sum.txt"],
    );
    assert_eq!(c.wait_job(job, MINUTE)["state"], "completed");
    let dest = c.dir.path().join("out");
    c.json(&["job", "output", &job.to_string(), "--dest", dest.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(dest.join("0/sum.txt")).unwrap().trim(), "12000000");

    let mr_out = c.dir.path().join("counts");
    let run = c.corral(&[
        "job",
        "mapreduce",
        "--pool",
        "cpu",
        "--input",
        "store:in/words.txt",
        "--map-tasks",
        "2",
        "--reduce-tasks",
        "1",
        "--mapper",
        r#"tr -s ' ' '\n' | awk 'NF { print $1 "\t1" }'"#,
        "--reducer",
        r#"awk -F'\t' '{ c[$1] += $2 } END { for (k in c) print k "\t" c[k] }'"#,
        "--output-dir",
        mr_out.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let mut lines: Vec<String> =
        std::fs::read_to_string(mr_out.join("part-00000")).unwrap().lines().map(String::from).collect();
    lines.sort();
    assert_eq!(lines, ["a\t3", "b\t1", "c\t2"]);

    let keys = s3.keys();
    for expected in
        ["prod/in/big.bin", "prod/jobs/1/0/sum.txt", "prod/jobs/2/output/part-00000", "prod/shuffle/2/0/part-0"]
    {
        assert!(keys.iter().any(|k| k == expected), "{expected} not in the bucket: {keys:?}");
    }
    assert!(!c.data_dir().join("objects").exists(), "nothing was stored in the data dir");
    let back = c.dir.path().join("back.bin");
    c.json(&["file", "get", "in/big.bin", back.to_str().unwrap()]);
    assert!(std::fs::read(&back).unwrap() == data);
}

#[test]
fn a_bad_store_url_stops_the_coordinator_with_the_reason() {
    let out = Command::new(corral_tests::bin("corral-coordinator"))
        .args(["--listen", "127.0.0.1:0", "--store-url", "ftp://nowhere/x", "--data-dir"])
        .arg(tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid --store-url 'ftp://nowhere/x'"), "{err}");
}

/// Trigger `name` as `trigger show` has it.
fn trigger(c: &Cluster, name: &str) -> serde_json::Value {
    c.json(&["trigger", "show", name])
}

/// Waits until two polls of trigger `name` began after `after_ms`: the first of
/// them has finished by then.
fn two_polls_after(c: &Cluster, name: &str, after_ms: u64) {
    wait_until(MINUTE, "two more polls", || trigger(c, name)["last_poll_ms"].as_u64().unwrap_or(0) >= after_ms + 2000);
}

#[test]
fn a_polling_trigger_dispatches_each_new_object_version_in_the_bucket_once() {
    let s3 = S3::start();
    let env = s3.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut c = Cluster::start_with_env(&["--store-url", "s3://corral/prod"], &env);
    c.static_pool("cpu", 1, 2);
    c.json(&["template", "create", "size", "--pool", "cpu", "--", "sh", "-c", r#"wc -c < "$CORRAL_TRIGGER_OBJECT""#]);
    let made = c.json(&[
        "trigger",
        "create",
        "drops",
        "--prefix",
        "drop/",
        "--glob",
        "*.csv",
        "--template",
        "size",
        "--poll",
        "1s",
    ]);
    assert_eq!(made["poll_ms"], 1000, "{made}");
    // Written to the bucket directly, by someone else: the poll finds them.
    s3.boto("s3.put_object(Bucket='corral', Key='prod/drop/a.csv', Body=b'abc')");
    s3.boto("s3.put_object(Bucket='corral', Key='prod/drop/notes.txt', Body=b'x')");
    s3.boto("s3.put_object(Bucket='corral', Key='prod/elsewhere/b.csv', Body=b'x')");
    wait_until(MINUTE, "a.csv to fire", || trigger(&c, "drops")["fired"] == 1);
    // A job reads its object when it runs: let this one finish before a.csv changes.
    let first = trigger(&c, "drops")["recent"][0]["job_id"].as_u64().unwrap();
    assert_eq!(c.wait_job(first, MINUTE)["state"], "completed");
    s3.boto("s3.put_object(Bucket='corral', Key='prod/drop/sub/b.csv', Body=b'abcdef')");
    // A new version of a.csv is a new object to the trigger.
    s3.boto("s3.put_object(Bucket='corral', Key='prod/drop/a.csv', Body=b'abcdefghij')");
    wait_until(MINUTE, "b.csv and a.csv again to fire", || trigger(&c, "drops")["fired"] == 3);
    let shown = trigger(&c, "drops");
    two_polls_after(&c, "drops", shown["last_poll_ms"].as_u64().unwrap());
    assert_eq!(trigger(&c, "drops")["fired"], 3, "an object version fired twice");
    let mut outputs: Vec<(String, String)> = shown["recent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let job = f["job_id"].as_u64().unwrap();
            assert_eq!(c.wait_job(job, MINUTE)["state"], "completed");
            (f["object"].as_str().unwrap().to_string(), c.logs(job, 0, false).trim().to_string())
        })
        .collect();
    outputs.sort();
    assert_eq!(
        outputs,
        [("drop/a.csv".into(), "10".into()), ("drop/a.csv".into(), "3".into()), ("drop/sub/b.csv".into(), "6".into())]
    );
    // The cursor is durable: after a SIGKILL nothing seen fires again.
    c.kill_coordinator();
    c.restart_coordinator();
    let restarted = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    two_polls_after(&c, "drops", restarted);
    let shown = trigger(&c, "drops");
    assert_eq!((shown["fired"].as_u64(), shown["seen"].as_u64()), (Some(3), Some(2)), "{shown}");
    assert_eq!(c.json(&["job", "list"]).as_array().unwrap().len(), 3);
}
