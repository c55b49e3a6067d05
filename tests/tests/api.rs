//! The gRPC API spoken directly, as another client or a misbehaving agent would:
//! bad requests get `InvalidArgument` naming the field, nothing panics the
//! coordinator, and the state is unchanged.

use std::time::Duration;

use corral_proto::credentials::Bearer;
use corral_proto::v1 as pb;
use corral_proto::v1::agent_client::AgentClient;
use corral_proto::v1::corral_client::CorralClient;
use corral_tests::grpc::runtime;
use corral_tests::Cluster;
use tonic::Code;

fn task(argv: &[&str]) -> Option<pb::TaskSpec> {
    Some(pb::TaskSpec { argv: argv.iter().map(|s| s.to_string()).collect(), slots: 1, ..Default::default() })
}

#[test]
fn bad_client_requests_name_the_field() {
    let mut c = Cluster::start(&[]);
    c.static_pool("cpu", 1, 1);
    runtime().block_on(async {
        let admin = Bearer::new(Some(&c.admin_token())).unwrap();
        let mut client = CorralClient::with_interceptor(c.channel().await, admin);
        let submit = |t: Option<pb::TaskSpec>, f: fn(&mut pb::SubmitJobRequest)| {
            let mut req = pb::SubmitJobRequest { pool: "cpu".into(), task: t, ..Default::default() };
            f(&mut req);
            req
        };
        let cases: Vec<(pb::SubmitJobRequest, &str)> = vec![
            (submit(None, |_| {}), "invalid task: is required"),
            (submit(task(&[]), |_| {}), "invalid command"),
            (submit(task(&["true"]), |r| r.pool = String::new()), "invalid pool: must not be empty"),
            (submit(task(&["true"]), |r| r.priority = -1001), "invalid priority"),
            (
                submit(task(&["true"]), |r| {
                    r.is_array = true;
                    r.array_start = 9;
                    r.array_end = 3;
                }),
                "invalid array: 9-3 is reversed",
            ),
            (
                submit(task(&["true"]), |r| {
                    r.is_array = true;
                    r.array_end = u32::MAX;
                }),
                "invalid array",
            ),
            (
                submit(Some(pb::TaskSpec { argv: vec!["true".into()], slots: 0, ..Default::default() }), |_| {}),
                "invalid slots",
            ),
            (submit(task(&["a\0b"]), |_| {}), "NUL"),
            (submit(task(&["true"]), |r| r.max_output_bytes = 10), "invalid max_output_bytes: is 10"),
            (
                submit(None, |r| {
                    r.tasks = vec![pb::TaskGroup { id: "..".into(), spec: task(&["true"]), ..Default::default() }]
                }),
                "task id '..' is not valid",
            ),
        ];
        for (req, expected) in cases {
            let err = client.submit_job(req.clone()).await.unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "{req:?}: {err}");
            assert!(err.message().contains(expected), "{req:?}: expected '{expected}' in '{}'", err.message());
        }
        let err = client
            .create_pool(pb::CreatePoolRequest {
                spec: Some(pb::PoolSpec {
                    name: "p".into(),
                    slots_per_node: 1,
                    provider: "cloud".into(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("invalid provider: 'cloud' is not one of: static, local"), "{}", err.message());
        let err =
            client.list_tasks(pb::ListTasksRequest { job_id: 1, state: 42, ..Default::default() }).await.unwrap_err();
        assert!(err.message().contains("invalid state"), "{}", err.message());
        let err = client.get_node(pb::GetNodeRequest { id: "n-7".into() }).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        // A megabyte of bad value is refused with a short message, not echoed back.
        let huge = format!("http://{}", "x".repeat(1 << 20));
        let mut req = submit(task(&["true"]), |_| {});
        req.notify_url = huge;
        let err = client.submit_job(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{}", &err.message()[..200.min(err.message().len())]);
        assert!(
            err.message().starts_with("invalid notify_url") && err.message().len() < 400,
            "{}",
            err.message().len()
        );
        // A missing object is named as the client named it, not by where the
        // coordinator keeps it.
        let mut objects = corral_proto::v1::objects_client::ObjectsClient::with_interceptor(
            c.channel().await,
            Bearer::new(Some(&c.admin_token())).unwrap(),
        );
        let err = objects
            .get(pb::GetObjectRequest { path: "inputs/missing.txt".into(), ..Default::default() })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        assert_eq!(err.message(), "object 'inputs/missing.txt' does not exist");

        // Nothing was created.
        assert!(client.list_jobs(pb::ListJobsRequest::default()).await.unwrap().into_inner().jobs.is_empty());
        assert_eq!(client.list_pools(pb::ListPoolsRequest {}).await.unwrap().into_inner().pools.len(), 1);
    });
}

#[test]
fn a_misbehaving_agent_cannot_hurt_the_coordinator() {
    let mut c = Cluster::start(&[]);
    c.static_pool("cpu", 1, 1);
    runtime().block_on(async {
        let channel = c.channel().await;
        let mut agent = AgentClient::with_interceptor(channel.clone(), Bearer::new(Some(&c.admin_token())).unwrap());
        let err = agent
            .register(pb::RegisterRequest { pool: "cpu".into(), slots: 0, ..Default::default() })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("invalid slots"), "{}", err.message());
        let err = agent
            .register(pb::RegisterRequest {
                pool: "cpu".into(),
                slots: 1,
                launch_id: "n-1".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert!(err.message().contains("launch_id"), "{}", err.message());

        // A registered node, speaking with its own secret.
        let reg = agent
            .register(pb::RegisterRequest { pool: "cpu".into(), slots: 1, hostname: "h".into(), ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        let mut agent = AgentClient::with_interceptor(channel, Bearer::new(Some(&reg.node_secret)).unwrap());

        // A session that does not start with a hello is refused.
        let first = pb::AgentMessage { heartbeat: Some(pb::Heartbeat::default()), ..Default::default() };
        let err = agent.session(tokio_stream_once(first)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("hello"), "{}", err.message());

        // A hello for another node than the one the secret proves: refused.
        let hello = pb::AgentMessage {
            hello: Some(pb::Hello { node_id: "n-4242".into(), ..Default::default() }),
            ..Default::default()
        };
        let err = agent.session(tokio_stream_once(hello)).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{err}");

        // An address other ranks could not use (a multi-node task's CORRAL_HOSTS): refused.
        let hello = pb::AgentMessage {
            hello: Some(pb::Hello { node_id: reg.node_id.clone(), address: "a b;c".into(), ..Default::default() }),
            ..Default::default()
        };
        let err = agent.session(tokio_stream_once(hello)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err}");
        assert!(err.message().contains("hello.address"), "{}", err.message());

        // Garbage from the node: results for tasks that do not exist, attempt 0,
        // an unknown outcome (recorded as failed), oversized log chunks.
        let bad_ref = pb::TaskRef { job_id: 77, index: 3, attempt: 0 };
        let good_ref = pb::TaskRef { job_id: 77, index: 3, attempt: 1 };
        let garbage = pb::AgentMessage {
            hello: Some(pb::Hello {
                node_id: reg.node_id.clone(),
                running: vec![bad_ref, good_ref],
                queued: vec![bad_ref, good_ref],
                finished: vec![
                    pb::TaskResult { task: Some(good_ref), outcome: 99, ..Default::default() },
                    pb::TaskResult { task: None, outcome: pb::Outcome::Succeeded.into(), ..Default::default() },
                    pb::TaskResult {
                        task: Some(good_ref),
                        outcome: pb::Outcome::Succeeded.into(),
                        ..Default::default()
                    },
                ],
                logs: vec![pb::LogChunk {
                    task: Some(good_ref),
                    offset: u64::MAX,
                    data: vec![1; 10],
                    stderr: false,
                    rank: 0,
                }],
                start_task_running: false,
                start_task_failed: String::new(),
                address: String::new(),
            }),
            ..Default::default()
        };
        let mut stream = agent.session(tokio_stream_once(garbage)).await.unwrap().into_inner();
        // It is told to kill the attempt it claims to run and gets an ack for each
        // result with a task (the unknown outcome ends the attempt as failed); the
        // result without one is dropped.
        let msg = tokio::time::timeout(Duration::from_secs(10), stream.message()).await.unwrap().unwrap().unwrap();
        assert_eq!(msg.kill, vec![good_ref], "{msg:?}");
        assert_eq!(msg.ack, vec![good_ref, good_ref], "{msg:?}");
    });
    // Still serving, state intact.
    let pools = c.json(&["pool", "list"]);
    assert_eq!(pools.as_array().unwrap().len(), 1);
    assert!(c.coordinator_log().contains("dropping a malformed"));
}

/// A request stream of one message that then stays open (as a live agent's does).
fn tokio_stream_once(msg: pb::AgentMessage) -> impl tokio_stream::Stream<Item = pb::AgentMessage> {
    use tokio_stream::StreamExt;
    tokio_stream::iter([msg]).chain(tokio_stream::pending())
}

#[test]
fn an_upload_that_ends_early_stores_nothing() {
    let c = Cluster::start(&[]);
    runtime().block_on(async {
        let admin = Bearer::new(Some(&c.admin_token())).unwrap();
        let mut objects = corral_proto::v1::objects_client::ObjectsClient::with_interceptor(c.channel().await, admin);
        let parts = vec![
            pb::PutObjectRequest { path: "half.bin".into(), data: vec![1; 1000], last: false, ..Default::default() },
            pb::PutObjectRequest { data: vec![2; 1000], ..Default::default() },
        ];
        let err = objects.put(tokio_stream::iter(parts)).await.unwrap_err();
        assert_eq!(err.code(), Code::Aborted, "{err}");
        assert!(err.message().contains("nothing was stored"), "{}", err.message());
        let listed = objects.list(pb::ListObjectsRequest { prefix: String::new() }).await.unwrap().into_inner();
        assert!(listed.objects.is_empty(), "{listed:?}");
        let whole = vec![pb::PutObjectRequest {
            path: "whole.bin".into(),
            data: vec![3; 10],
            last: true,
            ..Default::default()
        }];
        assert_eq!(objects.put(tokio_stream::iter(whole)).await.unwrap().into_inner().size, 10);
    });
}

#[test]
fn a_page_limit_outside_1_to_1000_is_refused() {
    let c = Cluster::start(&[]);
    for path in ["/api/jobs?limit=0", "/api/jobs?limit=1001", "/api/events?limit=0"] {
        let (status, body) = c.http_get(path);
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains("limit") && body.contains("from 1 to 1000"), "{path}: {body}");
    }
    assert_eq!(c.http_get("/api/jobs?limit=1000").0, 200);
}

#[test]
fn a_submission_past_the_queued_task_limit_is_refused_with_the_numbers() {
    let mut c = Cluster::start(&["--max-queued-tasks", "1000"]);
    c.static_pool("cpu", 1, 1);
    c.submit(&["--pool", "cpu", "--array", "1-600"], &["sleep", "60"]);
    let out = c.corral(&["job", "submit", "--pool", "cpu", "--array", "1-600", "--", "true"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("holds 600 unfinished tasks and may hold 1000 (--max-queued-tasks)"), "{err}");
    assert!(err.contains("600 more are refused"), "{err}");
    runtime().block_on(async {
        let admin = Bearer::new(Some(&c.admin_token())).unwrap();
        let mut client = CorralClient::with_interceptor(c.channel().await, admin);
        let req = pb::SubmitJobRequest {
            pool: "cpu".into(),
            task: task(&["true"]),
            is_array: true,
            array_start: 1,
            array_end: 401,
            ..Default::default()
        };
        let err = client.submit_job(req).await.unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
        assert_eq!(client.list_jobs(pb::ListJobsRequest::default()).await.unwrap().into_inner().jobs.len(), 1);
    });
}

#[test]
fn a_flood_of_idle_connections_is_bounded_and_then_clients_get_through() {
    let c = Cluster::start(&["--max-connections", "100"]);
    let addr = format!("127.0.0.1:{}", c.port());
    let fds = || std::fs::read_dir(format!("/proc/{}/fd", c.coordinator_pid())).map_or(0, |d| d.count());
    let before = fds();
    // Five times the cap, all silent.
    let flood: Vec<std::net::TcpStream> = (0..500).filter_map(|_| std::net::TcpStream::connect(&addr).ok()).collect();
    assert!(flood.len() > 100, "the flood could connect");
    std::thread::sleep(Duration::from_millis(500));
    let during = fds();
    assert!(during <= before + 110, "{during} descriptors open with the flood, {before} before");
    // The silent ones are closed after a while; then a client gets through.
    corral_tests::wait_until(Duration::from_secs(30), "pool list to answer after the flood", || {
        c.corral(&["pool", "list"]).status.success()
    });
    drop(flood);
}
