//! Templates, dispatch and triggers, end to end: a payload and meta values reach
//! the task through the CLI, gRPC and HTTP; one idempotency key makes one job
//! however many dispatches race; a trigger fires once per put, also for a put
//! acknowledged just before the coordinator was killed; refusals name their field.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use corral_proto::credentials::Bearer;
use corral_proto::v1 as pb;
use corral_tests::{wait_until, Cluster};

const MINUTE: Duration = Duration::from_secs(60);

/// What the template `echo` prints: its payload, then its `size` meta value.
const ECHO: &[&str] = &["sh", "-c", r#"cat "$CORRAL_PAYLOAD"; echo " size=$CORRAL_META_size""#];

fn template_echo(c: &Cluster) {
    let mut args = vec!["template", "create", "echo", "--pool", "cpu", "--meta-required", "size", "--"];
    args.extend_from_slice(ECHO);
    let made = c.json(&args);
    assert_eq!(made["meta_required"], serde_json::json!(["size"]), "{made}");
}

/// The objects under `prefix`.
fn objects(c: &Cluster, prefix: &str) -> Vec<String> {
    let listed = c.json(&["file", "ls", prefix]);
    listed.as_array().unwrap().iter().map(|o| o["path"].as_str().unwrap().to_string()).collect()
}

fn finished_stdout(c: &Cluster, job: u64) -> String {
    let done = c.wait_job(job, MINUTE);
    let task = c.json(&["task", "show", &job.to_string(), "0"]);
    assert_eq!(done["state"], "completed", "{done}\n{task}");
    c.logs(job, 0, false)
}

#[test]
fn dispatch_brings_the_payload_and_meta_to_the_task_through_cli_grpc_and_http() {
    let mut c = Cluster::start(&[]);
    c.static_pool("cpu", 1, 2);
    template_echo(&c);

    // The CLI, from a file.
    let file = c.dir.path().join("payload.txt");
    std::fs::write(&file, "from-cli").unwrap();
    let cli = c.json(&["dispatch", "echo", "--payload-file", file.to_str().unwrap(), "--meta", "size=64"]);
    let cli = cli["job_id"].as_u64().unwrap();
    assert_eq!(finished_stdout(&c, cli), "from-cli size=64\n");

    // The CLI, from standard input, waiting for the job's end.
    let mut cmd = std::process::Command::new(corral_tests::bin("corral"));
    cmd.env("CORRAL_TOKEN", c.admin_token()).env_remove("CORRAL_TOKEN_FILE").arg("--coordinator").arg(&c.url);
    cmd.args(["-o", "json", "dispatch", "echo", "--payload", "-", "--meta", "size=9", "--wait"]);
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"from-stdin").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let waited: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(waited["state"], "completed", "{waited}");
    assert_eq!(finished_stdout(&c, waited["id"].as_u64().unwrap()), "from-stdin size=9\n");

    // gRPC, as a submit token; the job is the dispatcher's.
    let submitter = c.token("webapp", "submit", &[]);
    let rt = corral_tests::grpc::runtime();
    let grpc = rt.block_on(async {
        let bearer = Bearer::new(Some(&submitter)).unwrap();
        let mut client = pb::corral_client::CorralClient::with_interceptor(c.channel().await, bearer);
        let req = pb::DispatchRequest {
            template: "echo".into(),
            payload: Some(b"from-grpc".to_vec()),
            meta: [("size".to_string(), "128".to_string())].into(),
            ..Default::default()
        };
        client.dispatch(req).await.unwrap().into_inner().job_id
    });
    assert_eq!(finished_stdout(&c, grpc), "from-grpc size=128\n");
    assert_eq!(c.job(grpc)["owner"], "webapp");

    // HTTP: body = payload, meta as query parameters, a bearer token.
    let http = c.http_client();
    let url = format!("{}/api/templates/echo/dispatch?size=256", c.http_url());
    let resp = http.post(&url).bearer_auth(&submitter).body("from-http").send().unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let answer: serde_json::Value = serde_json::from_str(&resp.text().unwrap()).unwrap();
    let web = answer["job_id"].as_u64().unwrap();
    assert_eq!(finished_stdout(&c, web), "from-http size=256\n");

    // Refusals name their field and make nothing.
    let before = c.json(&["job", "list"]).as_array().unwrap().len();
    let err = c.fails(&["dispatch", "echo"]);
    assert!(err.contains("meta") && err.contains("size"), "{err}");
    let err = c.fails(&["dispatch", "nope", "--meta", "size=1"]);
    assert!(err.contains("template") && err.contains("nope"), "{err}");
    let err = c.fails(&["dispatch", "echo", "--meta", "size=1", "--meta", "bad-key=1"]);
    assert!(err.contains("meta") && err.contains("bad-key"), "{err}");
    let big = vec![b'x'; (16 << 20) + 1];
    let resp = http.post(&url).bearer_auth(&submitter).body(big).send().unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    assert!(resp.text().unwrap().contains("payload"));
    let resp = http.post(format!("{}/api/templates/echo/dispatch?size=1&size=2", c.http_url())).bearer_auth(&submitter);
    let resp = resp.send().unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    assert!(resp.text().unwrap().contains("given twice"));
    c.json(&["template", "create", "bare", "--pool", "cpu", "--payload", "forbidden", "--", "true"]);
    let err = c.fails(&["dispatch", "bare", "--payload-file", file.to_str().unwrap()]);
    assert!(err.contains("payload") && err.contains("takes no payload"), "{err}");
    let err = c.fails(&["template", "create", "bad", "--pool", "gpu", "--", "true"]);
    assert!(err.contains("gpu"), "{err}");
    assert_eq!(c.json(&["job", "list"]).as_array().unwrap().len(), before);
    // A refused dispatch leaves no payload behind; each job has its own.
    wait_until(MINUTE, "the refused payload to be deleted", || objects(&c, "payloads/").len() == 4);

    // Deleting a job deletes its payload.
    c.json(&["job", "delete", &cli.to_string()]);
    wait_until(MINUTE, "the deleted job's payload to go", || objects(&c, "payloads/").len() == 3);
    // Global flags go after the subcommand too.
    let out = c.corral(&["template", "show", "echo", "-o", "json"]);
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["payload"], "optional", "{shown}");
    assert_eq!(shown["command"], serde_json::json!(ECHO));
    c.json(&["template", "delete", "echo"]);
    assert!(c.fails(&["template", "show", "echo"]).contains("does not exist"));
}

#[test]
fn concurrent_dispatches_under_one_key_make_one_job() {
    let mut c = Cluster::start(&[]);
    c.static_pool("cpu", 1, 2);
    template_echo(&c);
    let submitter = c.token("webapp", "submit", &[]);
    let url = format!("{}/api/templates/echo/dispatch?size=1", c.http_url());
    let ids: Vec<u64> = std::thread::scope(|s| {
        let racers: Vec<_> = (0..8)
            .map(|_| {
                let (http, url, token) = (c.http_client(), url.clone(), submitter.clone());
                s.spawn(move || {
                    let resp = http.post(&url).bearer_auth(&token).header("Idempotency-Key", "order-42").body("same");
                    let resp = resp.send().unwrap();
                    assert_eq!(resp.status().as_u16(), 200);
                    serde_json::from_str::<serde_json::Value>(&resp.text().unwrap()).unwrap()["job_id"]
                        .as_u64()
                        .unwrap()
                })
            })
            .collect();
        racers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let unique: BTreeSet<u64> = ids.iter().copied().collect();
    assert_eq!(unique.len(), 1, "one key made several jobs: {ids:?}");
    assert_eq!(c.json(&["job", "list"]).as_array().unwrap().len(), 1);
    assert_eq!(finished_stdout(&c, ids[0]), "same size=1\n");
    // The losers' payloads are not kept.
    wait_until(MINUTE, "one payload", || objects(&c, "payloads/").len() == 1);
    // The same key with another request is refused, naming the key.
    let resp = c.http_client().post(&url).bearer_auth(&submitter).header("Idempotency-Key", "order-42").body("other");
    let resp = resp.send().unwrap();
    assert_eq!(resp.status().as_u16(), 409);
    assert!(resp.text().unwrap().contains("order-42"));
    // The CLI's key behaves the same.
    let first = c.json(&["dispatch", "echo", "--meta", "size=2", "--idempotency-key", "k"]);
    let again = c.json(&["dispatch", "echo", "--meta", "size=2", "--idempotency-key", "k"]);
    assert_eq!(first["job_id"], again["job_id"]);
    let err = c.fails(&["dispatch", "echo", "--meta", "size=3", "--idempotency-key", "k"]);
    assert!(err.contains("'k'"), "{err}");
}

/// The jobs trigger `name` made, by object, as `trigger show` lists them.
fn fired(c: &Cluster, name: &str) -> Vec<(String, u64)> {
    let shown = c.json(&["trigger", "show", name]);
    shown["recent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["object"].as_str().unwrap().into(), f["job_id"].as_u64().unwrap()))
        .collect()
}

#[test]
fn a_trigger_fires_once_per_put_also_across_a_coordinator_kill() {
    let mut c = Cluster::start(&[]);
    c.static_pool("cpu", 1, 2);
    c.json(&[
        "template",
        "create",
        "thumb",
        "--pool",
        "cpu",
        "--payload",
        "forbidden",
        "--",
        "sh",
        "-c",
        r#"echo "$CORRAL_TRIGGER_OBJECT $(wc -c < "$CORRAL_TRIGGER_OBJECT")""#,
    ]);
    let made =
        c.json(&["trigger", "create", "thumbs", "--prefix", "incoming/", "--glob", "*.jpg", "--template", "thumb"]);
    assert_eq!(made["state"], "active", "{made}");
    let image = c.dir.path().join("a.jpg");
    std::fs::write(&image, "12345").unwrap();
    let image = image.to_str().unwrap();
    c.json(&["file", "put", image, "incoming/a.jpg"]);
    c.json(&["file", "put", image, "incoming/notes.txt"]);
    c.json(&["file", "put", image, "elsewhere/b.jpg"]);
    c.json(&["file", "put", image, "incoming/a.jpg"]);
    // Fired in the batch that recorded the put: the jobs exist once the put answered.
    let jobs = fired(&c, "thumbs");
    assert_eq!(jobs.iter().map(|(o, _)| o.as_str()).collect::<Vec<_>>(), ["incoming/a.jpg", "incoming/a.jpg"]);
    for (_, job) in &jobs {
        assert_eq!(finished_stdout(&c, *job), "incoming/a.jpg 5\n");
    }
    // A put acknowledged just before a SIGKILL still has its job after the restart.
    c.json(&["file", "put", image, "incoming/c.jpg"]);
    c.kill_coordinator();
    c.restart_coordinator();
    let jobs = fired(&c, "thumbs");
    assert_eq!(jobs.len(), 3, "{jobs:?}");
    assert_eq!(jobs[2].0, "incoming/c.jpg");
    assert_eq!(finished_stdout(&c, jobs[2].1), "incoming/c.jpg 5\n");
    assert_eq!(c.json(&["job", "list"]).as_array().unwrap().len(), 3, "a put fired twice");
    // A put tried again under its idempotency key (as when its answer was lost to a
    // failover) is recorded and fires once, across a restart too; the key used for
    // another object is refused before anything is stored.
    let keyed = ["file", "put", image, "incoming/k.jpg", "--idempotency-key", "k1"];
    c.json(&keyed);
    c.json(&keyed);
    c.restart_coordinator();
    c.json(&keyed);
    let err = c.fails(&["file", "put", image, "incoming/other.jpg", "--idempotency-key", "k1"]);
    assert!(err.contains("idempotency_key") && err.contains("'incoming/k.jpg'"), "{err}");
    let listed = c.json(&["file", "ls", "incoming/"]).to_string();
    assert!(listed.contains("incoming/k.jpg") && !listed.contains("other.jpg"), "{listed}");
    assert_eq!(fired(&c, "thumbs").len(), 4, "a keyed put fired twice");
    // Paused: counted, not fired.
    c.json(&["trigger", "pause", "thumbs"]);
    c.json(&["file", "put", image, "incoming/d.jpg"]);
    let shown = c.json(&["trigger", "show", "thumbs"]);
    assert_eq!((shown["fired"].as_u64(), shown["skipped"].as_u64()), (Some(4), Some(1)), "{shown}");
    c.json(&["trigger", "resume", "thumbs"]);
    // The template is in use; refusals name their field.
    let err = c.fails(&["template", "delete", "thumb"]);
    assert!(err.contains("trigger 'thumbs'"), "{err}");
    let err = c.fails(&["trigger", "create", "t2", "--prefix", "in/", "--glob", "[", "--template", "thumb"]);
    assert!(err.contains("glob"), "{err}");
    let err = c.fails(&["trigger", "create", "t2", "--prefix", "../x/", "--template", "thumb"]);
    assert!(err.contains("prefix"), "{err}");
    let err = c.fails(&["trigger", "create", "t2", "--prefix", "in/", "--template", "thumb", "--poll", "10ms"]);
    assert!(err.contains("poll"), "{err}");
    c.json(&["template", "create", "needs", "--pool", "cpu", "--payload", "required", "--", "true"]);
    let err = c.fails(&["trigger", "create", "t2", "--prefix", "in/", "--template", "needs"]);
    assert!(err.contains("template") && err.contains("requires a payload"), "{err}");
    // What Corral writes itself is no trigger's business, nor a client's to write.
    let err = c.fails(&["trigger", "create", "t2", "--prefix", "jobs/", "--template", "thumb"]);
    assert!(err.contains("prefix") && err.contains("jobs/"), "{err}");
    let err = c.fails(&["file", "put", image, "payloads/0123456789abcdef0123456789abcdef/payload"]);
    assert!(err.contains("payloads/"), "{err}");
    let err = c.fails(&["job", "submit", "--pool", "cpu", "--input", "payloads/x/payload", "--", "true"]);
    assert!(err.contains("inputs.object") && err.contains("payloads/"), "{err}");
    // Another submit token may not change it.
    let other = c.token("other", "submit", &[]);
    let out = c.corral_as(Some(&other), &["trigger", "delete", "thumbs"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("belongs to token"));
    c.json(&["trigger", "delete", "thumbs"]);
    c.json(&["template", "delete", "thumb"]);
}

#[test]
fn a_put_whose_trigger_cannot_make_its_job_is_answered_so() {
    let mut c = Cluster::start(&[]);
    c.static_pool("cpu", 1, 1);
    c.json(&["pool", "create", "gone", "--slots-per-node", "1"]);
    c.json(&["template", "create", "t", "--pool", "gone", "--", "true"]);
    // A template's owner may remove another token's trigger on it.
    let other = c.token("other", "submit", &[]);
    let made = c.corral_as(Some(&other), &["trigger", "create", "theirs", "--prefix", "x/", "--template", "t"]);
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    c.json(&["trigger", "delete", "theirs"]);
    c.json(&["trigger", "create", "on-gone", "--prefix", "in/", "--template", "t"]);
    c.json(&["pool", "delete", "gone"]);
    let file = c.dir.path().join("f");
    std::fs::write(&file, "x").unwrap();
    let err = c.fails(&["file", "put", file.to_str().unwrap(), "in/f"]);
    assert!(
        err.contains("stored") && err.contains("trigger 'on-gone' could not make its job") && err.contains("gone"),
        "{err}"
    );
    let shown = c.json(&["trigger", "show", "on-gone"]);
    assert_eq!((shown["fired"].as_u64(), shown["failed"].as_u64()), (Some(0), Some(1)), "{shown}");
    assert!(shown["last_error"].as_str().unwrap().contains("gone"), "{shown}");
    assert_eq!(objects(&c, "in/"), ["in/f"], "the object itself is stored");
}
