//! Agents are who they say they are, and no more: a node cannot pass for another
//! (or join a pool its token is not bound to), its tasks never see its token, and its
//! object calls reach only the objects of its own tasks.

use std::time::Duration;

use corral_proto::credentials::Bearer;
use corral_proto::v1 as pb;
use corral_tests::grpc::{keep_alive, runtime};
use corral_tests::{bin, wait_until, Cluster};
use tonic::Code;

const MINUTE: Duration = Duration::from_secs(60);

#[test]
fn agents_cannot_pass_for_one_another() {
    let mut c = Cluster::start(&[]);
    c.json(&["pool", "create", "cpu", "--slots-per-node", "1"]);
    c.json(&["pool", "create", "gpu", "--slots-per-node", "1"]);

    // A token bound to gpu cannot join cpu.
    let gpu_only = c.token("gpu-agents", "agent", &["--pool", "gpu"]);
    let err = c.agent_refused(&c.url, "cpu", &[("CORRAL_TOKEN", &gpu_only)]);
    assert!(err.contains("token 'gpu-agents' is bound to pool 'gpu' and cannot join pool 'cpu'"), "{err}");

    // The real node runs a long task.
    let real = c.agent("cpu", 1);
    c.wait_nodes("cpu", "idle", 1);
    let real_node = c.node_of_pid(real);
    let job = c.submit(&["--pool", "cpu"], &["sh", "-c", "echo real output; sleep 3"]);
    wait_until(MINUTE, "the task to run", || c.job(job)["counts"]["running"] == 1);

    let impostor_reg = runtime().block_on(async {
        let channel = c.channel().await;
        let admin = Bearer::new(Some(&c.admin_token())).unwrap();
        // An impostor that registered as a node of its own...
        let mut agent = pb::agent_client::AgentClient::with_interceptor(channel.clone(), admin.clone());
        let reg = agent
            .register(pb::RegisterRequest { pool: "cpu".into(), slots: 1, hostname: "x".into(), ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        let running = pb::TaskRef { job_id: job, index: 0, attempt: 1 };
        let claim = |node: &str| pb::AgentMessage {
            hello: Some(pb::Hello {
                node_id: node.into(),
                finished: vec![pb::TaskResult {
                    task: Some(running),
                    outcome: pb::Outcome::Succeeded.into(),
                    has_exit_code: true,
                    ..Default::default()
                }],
                logs: vec![pb::LogChunk {
                    task: Some(running),
                    offset: 0,
                    data: b"INJECTED\n".to_vec(),
                    stderr: false,
                    rank: 0,
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        // ...claims the real node's id with its own secret: refused.
        let mut impostor = pb::agent_client::AgentClient::with_interceptor(
            channel.clone(),
            Bearer::new(Some(&reg.node_secret)).unwrap(),
        );
        let err = impostor.session(tokio_stream::iter([claim(&real_node)])).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{err}");
        // With a made-up secret for the real node's id: refused.
        let forged = format!("{real_node}.{}", "0".repeat(64));
        let mut forger =
            pb::agent_client::AgentClient::with_interceptor(channel.clone(), Bearer::new(Some(&forged)).unwrap());
        let err = forger.session(tokio_stream::iter([claim(&real_node)])).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{err}");
        // With the admin token (which may register, but is no node): refused.
        let mut admin_agent = pb::agent_client::AgentClient::with_interceptor(channel, admin);
        let err = admin_agent.session(tokio_stream::iter([claim(&real_node)])).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{err}");
        reg
    });

    // The real node keeps its work: the task ends by itself, once, with its own output.
    let done = c.wait_job(job, MINUTE);
    assert_eq!(done["state"], "completed", "{done}");
    let attempts = c.assert_each_succeeded_once(job);
    assert_eq!(attempts[0].1.len(), 1, "one attempt: {attempts:?}");
    assert_eq!(attempts[0].1[0]["node_id"], real_node.as_str());
    let log = c.logs(job, 0, false);
    assert!(log.contains("real output") && !log.contains("INJECTED"), "{log}");
    // Nothing wedged: the pool takes the next job.
    let next = c.submit(&["--pool", "cpu"], &["true"]);
    assert_eq!(c.wait_job(next, MINUTE)["state"], "completed");

    // A node that is gone (the impostor never heartbeat, so it was lost) speaks for
    // nothing: its secret opens no store and no stream.
    wait_until(MINUTE, "the silent node to be lost", || c.nodes_in("cpu", "lost").contains(&impostor_reg.node_id));
    runtime().block_on(async {
        let bearer = Bearer::new(Some(&impostor_reg.node_secret)).unwrap();
        let mut objects = pb::objects_client::ObjectsClient::with_interceptor(c.channel().await, bearer);
        let err = objects.list(pb::ListObjectsRequest { prefix: String::new() }).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{err}");
        assert!(err.message().contains("register again"), "{}", err.message());
    });
}

#[test]
fn tasks_never_see_their_agents_token() {
    let mut c = Cluster::start(&["--agent-bin", bin("corral-agent").to_str().unwrap()]);
    // One static agent with the token in its environment, one with a token file,
    // and a local pool whose agents the coordinator starts with theirs.
    let token = c.token("agents", "agent", &[]);
    c.json(&["pool", "create", "cpu", "--slots-per-node", "1"]);
    c.agent_with_env("cpu", 1, &[("CORRAL_TOKEN", &token), ("CORRAL_TOKEN_FILE", "")]);
    c.agent("cpu", 1);
    c.wait_nodes("cpu", "idle", 2);
    c.json(&["pool", "create", "loc", "--provider", "local", "--nodes", "1", "--slots-per-node", "1"]);
    c.wait_nodes("loc", "idle", 1);
    let show = ["sh", "-c", "echo token=${CORRAL_TOKEN:-none} file=${CORRAL_TOKEN_FILE:-none}"];
    for pool in ["cpu", "loc"] {
        let job = c.submit(&["--pool", pool, "--array", "0-3"], &show);
        assert_eq!(c.wait_job(job, MINUTE)["state"], "completed");
        for task in 0..4 {
            assert_eq!(c.logs(job, task, false), "token=none file=none\n", "{pool} task {task}");
        }
    }
    // A task's own --env of the same name is its to set.
    let job = c.submit(&["--pool", "cpu", "--env", "CORRAL_TOKEN=mine"], &show);
    c.wait_job(job, MINUTE);
    assert_eq!(c.logs(job, 0, false), "token=mine file=none\n");
}

#[test]
fn a_node_touches_only_the_objects_of_its_own_tasks() {
    let mut c = Cluster::start(&[]);
    c.json(&["pool", "create", "cpu", "--slots-per-node", "1"]);
    let secret_file = c.dir.path().join("payroll.csv");
    std::fs::write(&secret_file, "alice,100\n").unwrap();
    c.json(&["file", "put", secret_file.to_str().unwrap(), "hr/payroll.csv"]);
    // The put is in the feed, with who did it.
    let out = c.corral(&["-o", "json", "events"]);
    let put = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["kind"] == "object")
        .expect("an object event");
    assert_eq!((put["state"].as_str(), put["actor"].as_str()), (Some("put"), Some("admin")), "{put}");
    assert!(put["detail"].as_str().unwrap().starts_with("hr/payroll.csv"), "{put}");
    runtime().block_on(async {
        let channel = c.channel().await;
        let admin = Bearer::new(Some(&c.admin_token())).unwrap();
        let mut agent = pb::agent_client::AgentClient::with_interceptor(channel.clone(), admin);
        let reg = pb::RegisterRequest { pool: "cpu".into(), slots: 1, hostname: "m".into(), ..Default::default() };
        let reg = agent.register(reg).await.unwrap().into_inner();
        keep_alive(channel.clone(), &reg).await;
        let node = Bearer::new(Some(&reg.node_secret)).unwrap();
        let mut objects = pb::objects_client::ObjectsClient::with_interceptor(channel, node);
        let get = pb::GetObjectRequest { path: "hr/payroll.csv".into(), offset: 0, length: 0 };
        let err = objects.get(get).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{err}");
        assert!(err.message().contains("runs no task that reads object 'hr/payroll.csv'"), "{}", err.message());
        let put = pb::PutObjectRequest {
            path: "jobs/1/0/forged.txt".into(),
            data: b"x".to_vec(),
            last: true,
            ..Default::default()
        };
        let err = objects.put(tokio_stream::iter([put])).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{err}");
        let err = objects.list(pb::ListObjectsRequest { prefix: String::new() }).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    });
    // A task that names the object as its input gets it, through its own node.
    c.agent("cpu", 1);
    c.wait_nodes("cpu", "idle", 1);
    let job = c.submit(
        &["--pool", "cpu", "--input", "hr/payroll.csv=in.csv", "--outputs", "out.txt"],
        &["sh", "-c", "cut -d, -f2 in.csv > out.txt"],
    );
    assert_eq!(c.wait_job(job, MINUTE)["state"], "completed", "{}", c.coordinator_log());
    let listed = c.json(&["file", "ls", &format!("jobs/{job}")]);
    assert!(listed.to_string().contains("out.txt"), "{listed}");
}
