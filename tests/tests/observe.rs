//! What operators watch: `/metrics`, the dashboard's JSON API, gRPC health and
//! reflection, JSON logs.

use std::time::Duration;

use corral_tests::{wait_until, Cluster};

/// The value of the sample `name{labels}` (labels as Prometheus prints them, sorted).
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn metrics_count_what_the_job_did() {
    let mut cluster = Cluster::start(&[]);
    let agents = cluster.static_pool("cpu", 2, 2);
    // Eight tasks succeed and two fail, for good (no retries).
    let job = cluster.submit(&["--pool", "cpu", "--array", "0-9"], &["sh", "-c", "test $CORRAL_TASK_INDEX -lt 8"]);
    let done = cluster.wait_job(job, Duration::from_secs(30));
    assert_eq!(done["state"], "failed", "{done}");

    let (status, metrics) = cluster.http_get("/metrics");
    assert_eq!(status, 200);
    let expect = [
        ("corral_tasks_finished_total{pool=\"cpu\",state=\"succeeded\"}", 8.0),
        ("corral_tasks_finished_total{pool=\"cpu\",state=\"failed\"}", 2.0),
        ("corral_task_attempts_total{outcome=\"succeeded\",pool=\"cpu\"}", 8.0),
        ("corral_task_attempts_total{outcome=\"failed\",pool=\"cpu\"}", 2.0),
        ("corral_task_run_time_seconds_count{outcome=\"succeeded\",pool=\"cpu\"}", 8.0),
        ("corral_task_scheduling_latency_seconds_count{pool=\"cpu\"}", 10.0),
        ("corral_pool_queued_tasks{pool=\"cpu\"}", 0.0),
        ("corral_pool_running_tasks{pool=\"cpu\"}", 0.0),
        ("corral_pool_nodes{pool=\"cpu\",state=\"idle\"}", 2.0),
        ("corral_pool_slots{kind=\"total\",pool=\"cpu\"}", 4.0),
        ("corral_pool_target_nodes{pool=\"cpu\"}", 0.0),
        ("corral_jobs{state=\"failed\"}", 1.0),
    ];
    for (series, want) in expect {
        assert_eq!(sample(&metrics, series), Some(want), "{series} in:\n{metrics}");
    }
    assert!(sample(&metrics, "corral_heartbeats_received_total").unwrap_or(0.0) > 0.0, "{metrics}");
    assert!(sample(&metrics, "corral_store_commit_duration_seconds_count").unwrap_or(0.0) > 0.0, "{metrics}");
    assert!(metrics.contains("# TYPE corral_task_run_time_seconds histogram"), "{metrics}");

    // A killed agent stops heartbeating: the miss is counted once it is lost.
    cluster.signal(agents[0], libc::SIGKILL);
    cluster.wait_nodes("cpu", "lost", 1);
    let (_, metrics) = cluster.http_get("/metrics");
    assert_eq!(sample(&metrics, "corral_heartbeats_missed_total{pool=\"cpu\"}"), Some(1.0), "{metrics}");
    assert_eq!(sample(&metrics, "corral_pool_nodes{pool=\"cpu\",state=\"idle\"}"), Some(1.0), "{metrics}");
}

#[test]
fn the_api_pages_tasks_on_the_server_and_explains_bad_requests() {
    let mut cluster = Cluster::start(&[]);
    cluster.static_pool("cpu", 1, 2);
    let job = cluster.submit(&["--pool", "cpu", "--array", "0-119"], &["sh", "-c", "echo out-$CORRAL_TASK_INDEX"]);
    cluster.wait_job(job, Duration::from_secs(60));

    let view = cluster.api(&format!("/api/jobs/{job}"));
    assert_eq!((view["state"].as_str(), view["tasks"].as_u64()), (Some("completed"), Some(120)), "{view}");
    assert_eq!(view["counts"]["succeeded"], 120);
    let page = cluster.api(&format!("/api/jobs/{job}/tasks?offset=100&limit=50"));
    assert_eq!(page["total"], 120);
    let indexes: Vec<u64> = page["tasks"].as_array().unwrap().iter().map(|t| t["index"].as_u64().unwrap()).collect();
    assert_eq!(indexes, (100..120).collect::<Vec<_>>());
    let none = cluster.api(&format!("/api/jobs/{job}/tasks?state=failed"));
    assert_eq!((none["total"].as_u64(), none["tasks"].as_array().map(Vec::len)), (Some(0), Some(0)));

    let task = cluster.api(&format!("/api/jobs/{job}/tasks/7"));
    let attempts = task["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 1, "{task}");
    assert_eq!((attempts[0]["outcome"].as_str(), attempts[0]["exit_code"].as_i64()), (Some("succeeded"), Some(0)));
    let log = cluster.api(&format!("/api/jobs/{job}/tasks/7/log?stream=stdout"));
    assert_eq!(log["text"], "out-7\n");
    assert_eq!(log["next_offset"], 6);
    let rest = cluster.api(&format!("/api/jobs/{job}/tasks/7/log?stream=stdout&offset=6"));
    assert_eq!(rest["text"], "");

    let pools = cluster.api("/api/pools");
    assert_eq!(pools[0]["name"], "cpu");
    assert_eq!(pools[0]["nodes"]["idle"], 1);
    let nodes = cluster.api("/api/nodes?pool=cpu");
    assert_eq!(nodes[0]["state"], "idle");
    wait_until(Duration::from_secs(10), "heartbeat samples", || {
        !cluster.api("/api/nodes")[0]["usage"].as_array().unwrap().is_empty()
    });
    let jobs = cluster.api("/api/jobs?limit=10");
    assert_eq!((jobs["total"].as_u64(), jobs["jobs"][0]["id"].as_u64()), (Some(1), Some(job)));
    let events = cluster.api(&format!("/api/events?job={job}&limit=5"));
    assert_eq!(events["events"].as_array().map(Vec::len), Some(5));

    // Bad requests are refused with the field and the reason, as JSON.
    for (path, status, words) in [
        ("/api/jobs/99", 404, "job '99' does not exist"),
        ("/api/jobs/1/tasks?state=done", 400, "state"),
        ("/api/jobs/1/tasks/500", 400, "not 500"),
        ("/api/jobs/1/tasks/1/log?stream=both", 400, "stream"),
        ("/api/nodes?pool=Bad%20Pool", 400, "pool"),
        ("/api/events?after=99999999", 400, "after"),
    ] {
        let (got, body) = cluster.http_get(path);
        assert_eq!(got, status, "GET {path}: {body}");
        let error: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body}"));
        assert!(error["error"].as_str().is_some_and(|e| e.contains(words)), "GET {path}: {body}");
    }

    // A page past the end is empty, however far past.
    let far = cluster.api(&format!("/api/jobs/{job}/tasks?offset=18446744073709551615"));
    assert_eq!(far["tasks"].as_array().map(Vec::len), Some(0), "{far}");

    // The page itself and its files are served from the binary.
    let (status, html) = cluster.http_get("/");
    assert_eq!(status, 200);
    assert!(html.contains("/app.js") && html.contains("/style.css"), "{html}");
    assert_eq!(cluster.http_get("/app.js").0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_health_and_reflection_answer() {
    let cluster = tokio::task::spawn_blocking(|| Cluster::start(&[])).await.unwrap();
    let channel = tonic::transport::Endpoint::from_shared(cluster.url.clone()).unwrap().connect().await.unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let status = health
        .check(tonic_health::pb::HealthCheckRequest { service: "corral.v1.Corral".into() })
        .await
        .expect("health check")
        .into_inner()
        .status;
    assert_eq!(status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);

    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    // Reflection tells what the API is: it needs a token, as everything but health does.
    let mut anonymous = ServerReflectionClient::new(channel.clone());
    let refused = anonymous
        .server_reflection_info(tokio_stream::iter([ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        }]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let token = tokio::task::block_in_place(|| cluster.token("reader", "read", &[]));
    let bearer = corral_proto::credentials::Bearer::new(Some(&token)).unwrap();
    let mut reflection = ServerReflectionClient::with_interceptor(channel, bearer);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    let answer = answers.message().await.unwrap().expect("an answer");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else { panic!("{answer:?}") };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in ["corral.v1.Corral", "corral.v1.Agent", "grpc.health.v1.Health"] {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }
    drop(cluster);
}

#[test]
fn logs_can_be_json() {
    let cluster = Cluster::start(&["--log-format", "json"]);
    cluster.json(&["pool", "create", "cpu", "--slots-per-node", "1"]);
    let log = cluster.coordinator_log();
    let line = log.lines().find(|l| l.contains("coordinator listening")).expect("the listening line");
    let parsed: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    assert_eq!(parsed["level"], "INFO");
    assert!(parsed["fields"]["addr"].is_string(), "{parsed}");
}

/// Short tasks are sent ahead to a node, to wait there for a slot: they are
/// `assigned`, not `running`, in every view until their process starts, and their
/// attempt starts when it does.
#[test]
fn tasks_sent_ahead_to_a_busy_node_are_assigned_not_running() {
    let mut c = Cluster::start(&[]);
    c.static_pool("cpu", 1, 1);
    let gate = c.dir.path().join("gate");
    // Tasks 0-5 are quick (their run times turn prefetching on); task 6 holds the
    // only slot until the gate opens, and the quick ones after it wait behind it.
    let script =
        format!("if [ $CORRAL_TASK_INDEX -eq 6 ]; then while [ ! -e {} ]; do sleep 0.05; done; fi", gate.display());
    let job = c.submit(&["--pool", "cpu", "--array", "0-39"], &["sh", "-c", &script]);
    // Settled once task 6 runs (its agent said it started) with eight behind it:
    // until then a quick task may still hold the slot, or task 6 be between
    // starting and saying so.
    wait_until(Duration::from_secs(60), "tasks to queue behind task 6", || {
        let six = c.json(&["task", "show", &job.to_string(), "6"]);
        let counts = &c.job(job)["counts"];
        six["state"] == "running" && counts["running"] == 1 && counts["assigned"] == 8
    });
    let node = &c.json(&["node", "list"])[0];
    assert_eq!((node["slots_used"].as_u64(), node["queued"].as_array().map(Vec::len)), (Some(1), Some(8)), "{node}");
    let pool = c.json(&["pool", "show", "cpu"]);
    assert_eq!((pool["slots_used"].as_u64(), pool["assigned_tasks"].as_u64()), (Some(1), Some(8)), "{pool}");
    let tasks = c.json(&["task", "list", &job.to_string(), "--state", "running"]);
    let states: Vec<&str> = tasks.as_array().unwrap().iter().filter_map(|t| t["state"].as_str()).collect();
    assert_eq!(states.iter().filter(|s| **s == "running").count(), 1, "{tasks}");
    assert_eq!(states.iter().filter(|s| **s == "assigned").count(), 8, "{tasks}");
    let text = String::from_utf8_lossy(&c.corral(&["job", "show", &job.to_string()]).stdout).into_owned();
    assert!(text.contains("1 running, 8 assigned (queued on a node)"), "{text}");
    let api = c.api(&format!("/api/jobs/{job}"));
    assert_eq!((api["counts"]["running"].as_u64(), api["counts"]["assigned"].as_u64()), (Some(1), Some(8)), "{api}");
    let (_, metrics) = c.http_get("/metrics");
    assert_eq!(sample(&metrics, "corral_pool_assigned_tasks{pool=\"cpu\"}"), Some(8.0), "{metrics}");
    assert_eq!(sample(&metrics, "corral_pool_running_tasks{pool=\"cpu\"}"), Some(1.0), "{metrics}");

    let opened = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    std::fs::write(&gate, "").unwrap();
    assert_eq!(c.wait_job(job, Duration::from_secs(60))["state"], "completed");
    // The tasks that waited behind task 6 started after the gate opened.
    for index in 7..=14 {
        let task = c.json(&["task", "show", &job.to_string(), &index.to_string()]);
        let started = task["attempts"][0]["started_at_ms"].as_u64().unwrap_or(0);
        assert!(started + 50 >= opened, "task {index} started at {started}, the gate opened at {opened}: {task}");
    }
    // Every finished task says where and when its last attempt ran, in RFC 3339 too.
    let listed = c.json(&["task", "list", &job.to_string()]);
    for t in listed.as_array().unwrap() {
        assert!(t["node_id"].as_str().is_some_and(|n| n.starts_with("n-")), "{t}");
        assert!(t["started_at_ms"].as_u64().is_some_and(|ms| ms > 0), "{t}");
        assert!(t["started_at"].as_str().is_some_and(|at| at.ends_with('Z') && at.contains('T')), "{t}");
    }
    let page = c.api(&format!("/api/jobs/{job}/tasks?limit=40"));
    for t in page["tasks"].as_array().unwrap() {
        assert!(t["node"].as_str().is_some() && t["started_at_ms"].as_u64().is_some(), "{t}");
    }
    let text = String::from_utf8_lossy(&c.corral(&["job", "show", &job.to_string()]).stdout).into_owned();
    let submitted = text.lines().find(|l| l.starts_with("submitted:")).unwrap_or_default().to_string();
    assert!(submitted.ends_with('Z') && !submitted.contains("UTC"), "one time format: {submitted}");
}
