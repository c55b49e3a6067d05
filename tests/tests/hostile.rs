//! What hostile-input probes found, closed for good: one test per hole. Another
//! job's objects are not writable by a client token; a value the store cannot hold is
//! refused at the edge and never read back; durations never wrap; bounded reads,
//! paths and pool tokens.

use std::time::Duration;

use corral_proto::credentials::Bearer;
use corral_proto::v1 as pb;
use corral_tests::{grpc, Cluster};
use tonic::Code;

const MINUTE: Duration = Duration::from_secs(60);

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn no_client_token_writes_into_another_jobs_outputs_checkpoints_or_shuffle() {
    let mut c = Cluster::start(&[]);
    c.static_pool("cpu", 1, 1);
    let alice = c.token("alice", "submit", &[]);
    let bob = c.token("bob", "submit", &[]);
    // Alice's task fails once after saving its state, then reads it back.
    let script = "if [ \"$CORRAL_CHECKPOINT_RESTORED\" = 1 ]; then cat state; echo mine > out.txt; else echo alice > state; sleep 2; exit 1; fi";
    let out = c.corral_as(
        Some(&alice),
        &[
            "-o",
            "json",
            "job",
            "submit",
            "--pool",
            "cpu",
            "--max-retries",
            "1",
            "--checkpoint",
            "state",
            "--outputs",
            "out.txt",
            "--",
            "sh",
            "-c",
            script,
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let job = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["job_id"].as_u64().unwrap();
    let planted = c.dir.path().join("planted");
    std::fs::write(&planted, "bob was here\n").unwrap();
    let planted = planted.to_str().unwrap();
    let admin = c.admin_token();
    for (folder, object) in [
        ("jobs/", format!("jobs/{job}/.checkpoints/0.tar")),
        ("jobs/", format!("jobs/{job}/0/out.txt")),
        ("shuffle/", format!("shuffle/{job}/0/part-0")),
        ("payloads/", "payloads/0123456789abcdef0123456789abcdef/payload".to_string()),
    ] {
        for token in [&bob, &admin] {
            let out = c.corral_as(Some(token), &["file", "put", planted, &object]);
            assert_eq!(out.status.code(), Some(2), "{object}: {}", stderr(&out));
            let err = stderr(&out);
            assert!(err.contains(folder) && (err.contains("Corral's own folder") || err.contains("payloads")), "{err}");
        }
    }
    // Nor deleted by a client: a job's objects go with `job delete`.
    let out = c.corral(&["file", "rm", &format!("jobs/{job}/0/out.txt")]);
    assert!(stderr(&out).contains("jobs/ is Corral's own folder"), "{}", stderr(&out));
    let done = c.wait_job(job, MINUTE);
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(c.logs(job, 0, false), "alice\n", "alice's second attempt restored her own state");
    let fetched = c.dir.path().join("fetched");
    let out = c.corral(&["file", "get", &format!("jobs/{job}/0/out.txt"), fetched.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&fetched).unwrap(), "mine\n");
    // Anywhere else, a submit token still puts.
    let out = c.corral_as(Some(&bob), &["file", "put", planted, "bob/in.txt"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn values_the_store_cannot_hold_are_refused_at_the_edge_and_never_shown() {
    let mut c = Cluster::start(&[]);
    c.static_pool("cpu", 1, 1);
    let rt = grpc::runtime();
    rt.block_on(async {
        let admin = Bearer::new(Some(&c.admin_token())).unwrap();
        let mut client = pb::corral_client::CorralClient::with_interceptor(c.channel().await, admin);
        let task = pb::TaskSpec { argv: vec!["true".into()], slots: 1, ..Default::default() };
        let submit = pb::SubmitJobRequest {
            pool: "cpu".into(),
            task: Some(task.clone()),
            begin_at_ms: u64::MAX,
            ..Default::default()
        };
        let err = client.submit_job(submit).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err}");
        assert!(err.message().contains("begin_at_ms") && err.message().contains("100 years"), "{}", err.message());
        for (field, mut spec) in [
            ("timeout", pb::TaskSpec { timeout_ms: u64::MAX, ..task.clone() }),
            (
                "checkpoint_interval",
                pb::TaskSpec { checkpoint: "s".into(), checkpoint_interval_ms: u64::MAX, ..task.clone() },
            ),
        ] {
            spec.slots = 1;
            let req = pb::SubmitJobRequest { pool: "cpu".into(), task: Some(spec), ..Default::default() };
            let err = client.submit_job(req).await.unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "{err}");
            assert!(err.message().contains(field), "{}", err.message());
        }
        let token = pb::CreateTokenRequest {
            name: "forever".into(),
            role: "read".into(),
            ttl_ms: u64::MAX,
            ..Default::default()
        };
        let err = client.create_token(token).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err}");
        assert!(err.message().contains("ttl"), "{}", err.message());
        let token = pb::CreateTokenRequest {
            name: "forever".into(),
            role: "read".into(),
            ttl_ms: (i64::MAX as u64) + 1,
            ..Default::default()
        };
        assert_eq!(client.create_token(token).await.unwrap_err().code(), Code::InvalidArgument);
    });
    assert_eq!(c.json(&["job", "list"]).as_array().map(Vec::len), Some(0), "no refused job is listed");
    let tokens = c.json(&["token", "list"]);
    assert!(!tokens.to_string().contains("forever"), "{tokens}");
    // The name is free: the refused token blocks nothing.
    c.token("forever", "read", &["--ttl", "1h"]);
    c.restart_coordinator();
    assert_eq!(c.json(&["job", "list"]).as_array().map(Vec::len), Some(0));
}

#[test]
fn durations_past_a_hundred_years_are_refused_not_wrapped() {
    let mut c = Cluster::start(&[]);
    c.static_pool("cpu", 1, 1);
    let huge = "18446744073709553s";
    for args in [
        vec!["job", "submit", "--pool", "cpu", "--timeout", huge, "--", "true"],
        vec!["job", "submit", "--pool", "cpu", "--begin", huge, "--", "true"],
        vec!["token", "create", "t", "--role", "read", "--ttl", huge],
        vec!["job", "submit", "--pool", "cpu", "--timeout", "101y", "--", "true"],
        vec!["pool", "create", "p2", "--slots-per-node", "1", "--autoscale", "--max", "2", "--idle-timeout", huge],
    ] {
        let err = c.fails(&args);
        assert!(err.contains("longer than 100 years"), "{args:?}: {err}");
    }
    let err = c.fails(&["token", "create", "t", "--role", "read", "--ttl", "0s"]);
    assert!(err.contains("shorter than 1s"), "{err}");
    // The limit itself is taken.
    let job = c.submit(&["--pool", "cpu", "--timeout", "100y"], &["true"]);
    assert_eq!(c.wait_job(job, MINUTE)["state"], "completed");
    assert_eq!(c.json(&["job", "list"]).as_array().map(Vec::len), Some(1));
    assert!(!c.json(&["token", "list"]).to_string().contains("\"t\""));
}

#[test]
fn each_line_is_read_with_a_bound() {
    let mut c = Cluster::start(&[]);
    c.static_pool("cpu", 1, 1);
    let big = c.dir.path().join("big.txt");
    let file = std::fs::File::create(&big).unwrap();
    file.set_len(100 << 20).unwrap();
    let started = std::time::Instant::now();
    for source in [big.to_str().unwrap(), "/dev/zero"] {
        // With 512 MiB of address space: a read without bound would die of it
        // instead of refusing.
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg("ulimit -v 524288 && exec \"$@\"")
            .arg("sh")
            .arg(corral_tests::bin("corral"))
            .args(["--coordinator", &c.url, "job", "submit", "--pool", "cpu", "--each-line", source, "--", "true"])
            .env("CORRAL_TOKEN", c.admin_token())
            .output()
            .unwrap();
        let err = stderr(&out);
        assert!(!out.status.success() && err.contains(source) && err.contains("larger than 48 MiB"), "{err}");
    }
    assert!(started.elapsed() < MINUTE, "refused quickly");
    assert_eq!(c.json(&["job", "list"]).as_array().map(Vec::len), Some(0));
}

#[test]
fn a_pools_own_agent_token_is_not_revoked_and_agent_tokens_need_a_pool() {
    let c = Cluster::start(&[]);
    let out = c.corral(&["pool", "create", "lp", "--provider", "local", "--nodes", "1", "--slots-per-node", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    c.wait_nodes("lp", "idle", 1);
    let err = c.fails(&["token", "revoke", "pool:lp"]);
    assert!(err.contains("pool lp's own agent token") && err.contains("corral pool delete lp"), "{err}");
    let job = c.submit(&["--pool", "lp"], &["echo", "still here"]);
    assert_eq!(c.wait_job(job, MINUTE)["state"], "completed");
    let err = c.fails(&["token", "create", "joiner", "--role", "agent", "--pool", "nowhere"]);
    assert!(err.contains("pool 'nowhere' does not exist"), "{err}");
    assert!(!c.json(&["token", "list"]).to_string().contains("joiner"));
}

#[test]
fn revoking_your_own_token_needs_force_and_says_how_to_recover() {
    let c = Cluster::start(&[]);
    let err = c.fails(&["token", "revoke", "admin"]);
    assert!(err.contains("--force") && err.contains("--reset-admin-token"), "{err}");
    assert!(c.json(&["token", "list"]).to_string().contains("\"admin\""), "nothing was revoked");
    let mine = c.token("mine", "admin", &[]);
    let out = c.corral_as(Some(&mine), &["token", "revoke", "mine", "--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!c.json(&["token", "list"]).to_string().contains("\"mine\""));
}

#[test]
fn long_object_paths_are_refused_as_invalid() {
    let c = Cluster::start(&[]);
    let rt = grpc::runtime();
    rt.block_on(async {
        let admin = Bearer::new(Some(&c.admin_token())).unwrap();
        let mut objects = pb::objects_client::ObjectsClient::with_interceptor(c.channel().await, admin);
        for (path, says) in
            [("a/".repeat(512 << 10), "at most 1024 bytes"), (format!("in/{}/x", "n".repeat(300)), "at most 255 bytes")]
        {
            let put =
                pb::PutObjectRequest { path: path.clone(), data: b"x".to_vec(), last: true, ..Default::default() };
            let err = objects.put(tokio_stream::iter([put])).await.unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "{err}");
            assert!(err.message().contains(says), "{}", err.message());
            let err = objects.get(pb::GetObjectRequest { path, offset: 0, length: 0 }).await.unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "{err}");
        }
    });
}

#[test]
fn http2_without_tls_is_answered_and_a_resize_body_must_be_an_object() {
    let c = Cluster::start(&[]);
    let out = c.corral(&["pool", "create", "lp", "--provider", "local", "--nodes", "1", "--slots-per-node", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // HTTP/2 with prior knowledge names the host in `:authority`, not in Host.
    let h2 = reqwest::blocking::Client::builder().http2_prior_knowledge().build().unwrap();
    let resp = h2.get(format!("{}/api/whoami", c.http_url())).bearer_auth(c.admin_token()).send().unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status().as_u16(), 200, "{:?}", resp.text());
    let resize = |body: &str| {
        let resp = c
            .http_client()
            .post(format!("{}/api/pools/lp/resize", c.http_url()))
            .bearer_auth(c.admin_token())
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .unwrap();
        (resp.status().as_u16(), resp.text().unwrap())
    };
    for bad in ["[1]", r#"{"nodes": 2, "node": 3}"#, r#"{"nodes": -1}"#] {
        let (status, body) = resize(bad);
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body.contains("nodes") || body.contains("object"), "{body}");
    }
    assert_eq!(c.json(&["pool", "show", "lp"])["target_nodes"], 1, "nothing changed");
    let (status, body) = resize(r#"{"nodes": 2}"#);
    assert_eq!(status, 200, "{body}");
    assert_eq!(c.json(&["pool", "show", "lp"])["target_nodes"], 2);
}

/// A job that puts into its own trigger's prefix would make jobs without end:
/// `--max-active 1` stops it at the first, and the put says why.
#[test]
fn a_put_trigger_whose_jobs_put_into_its_prefix_is_bounded_by_max_active() {
    let mut c = Cluster::start(&[]);
    c.static_pool("cpu", 1, 2);
    let looper = c.dir.path().join("looper.token");
    std::fs::write(&looper, c.token("looper", "submit", &[])).unwrap();
    let corral = corral_tests::bin("corral");
    let script = format!("echo x > f; {} file put f loop/$CORRAL_JOB_ID", corral.display());
    let coordinator = format!("CORRAL_COORDINATOR={}", c.url);
    let token_file = format!("CORRAL_TOKEN_FILE={}", looper.display());
    c.json(&[
        "template",
        "create",
        "again",
        "--pool",
        "cpu",
        "--env",
        &coordinator,
        "--env",
        &token_file,
        "--",
        "sh",
        "-c",
        &script,
    ]);
    c.json(&["trigger", "create", "loop", "--prefix", "loop/", "--template", "again", "--max-active", "1"]);
    let seed = c.dir.path().join("seed");
    std::fs::write(&seed, "go").unwrap();
    let out = c.corral_as(
        Some(&std::fs::read_to_string(&looper).unwrap()),
        &["file", "put", seed.to_str().unwrap(), "loop/seed"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let first = c.json(&["job", "list"])[0]["id"].as_u64().unwrap();
    let done = c.wait_job(first, MINUTE);
    assert_eq!(done["state"], "failed", "its put was answered: its job was not made: {done}");
    let err = c.logs(first, 0, true);
    assert!(err.contains("--max-active"), "{err}");
    let shown = c.json(&["trigger", "show", "loop"]);
    assert_eq!(
        (shown["fired"].as_u64(), shown["failed"].as_u64(), shown["max_active"].as_u64()),
        (Some(1), Some(1), Some(1)),
        "{shown}"
    );
    assert_eq!(c.json(&["job", "list"]).as_array().map(Vec::len), Some(1), "no second job");
    // An empty prefix is every object in the store: only when said so.
    let rt = grpc::runtime();
    rt.block_on(async {
        let admin = Bearer::new(Some(&c.admin_token())).unwrap();
        let mut client = pb::corral_client::CorralClient::with_interceptor(c.channel().await, admin);
        let req = pb::CreateTriggerRequest { name: "all".into(), template: "again".into(), ..Default::default() };
        let err = client.create_trigger(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err}");
        assert!(err.message().contains("prefix") && err.message().contains("every object"), "{}", err.message());
    });
    c.json(&["trigger", "create", "all", "--prefix", "", "--template", "again", "--max-active", "1"]);
}
