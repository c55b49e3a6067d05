//! The gRPC edge's checks: each bad field refused with its name, each good
//! request turned into the spec it says.

use super::*;

fn submit(f: impl FnOnce(&mut pb::SubmitJobRequest)) -> Result<JobSpec, Invalid> {
    let mut req = pb::SubmitJobRequest {
        pool: "p".into(),
        task: Some(pb::TaskSpec { argv: vec!["echo".into(), "{index}".into()], slots: 1, ..Default::default() }),
        ..Default::default()
    };
    f(&mut req);
    job_spec(req)
}

#[test]
fn job_requests_are_validated_field_by_field() {
    let spec = submit(|r| {
        r.is_array = true;
        r.array_start = 3;
        r.array_end = 5;
    })
    .unwrap();
    assert_eq!((spec.first_index, spec.last_index, spec.task_count()), (3, 5, 3));
    assert_eq!(submit(|_| {}).unwrap().task_count(), 1);

    let field = |f: fn(&mut pb::SubmitJobRequest)| submit(f).unwrap_err().field;
    assert_eq!(field(|r| r.task = None), "task");
    assert_eq!(field(|r| r.task.as_mut().unwrap().argv.clear()), "command");
    assert_eq!(field(|r| r.task.as_mut().unwrap().argv[0].clear()), "command");
    assert_eq!(field(|r| r.task.as_mut().unwrap().slots = 0), "slots");
    assert_eq!(field(|r| r.task.as_mut().unwrap().max_retries = 1_000_000), "max_retries");
    assert_eq!(field(|r| drop(r.task.as_mut().unwrap().env.insert("A=B".into(), "x".into()))), "env");
    assert_eq!(field(|r| r.priority = 1001), "priority");
    assert_eq!(field(|r| r.pool = "UP".into()), "pool");
    assert_eq!(field(|r| r.name = "x".repeat(201)), "name");
    assert_eq!(
        field(|r| {
            r.is_array = true;
            r.array_start = 2;
            r.array_end = 1;
        }),
        "array"
    );
    let runs = |runs: &[(u32, u32, u32)]| {
        let runs: Vec<_> = runs.iter().map(|&(first, last, step)| pb::ArrayRun { first, last, step }).collect();
        submit(move |r| r.array_runs = runs.clone())
    };
    let listed = runs(&[(5, 9, 2), (1, 1, 1)]).unwrap();
    assert_eq!((listed.first_index, listed.last_index, listed.task_count()), (1, 9, 4));
    assert_eq!(listed.indices().collect::<Vec<_>>(), vec![1, 5, 7, 9]);
    assert_eq!(runs(&[(3, 8, 1)]).unwrap().array, None, "one whole range is kept as a range");
    for bad in [&[(1, 9, 1), (5, 5, 1)][..], &[(1, 9, 0)], &[(9, 1, 1)], &[(0, u32::MAX, 1)]] {
        assert_eq!(runs(bad).unwrap_err().field, "array", "{bad:?}");
    }
    assert_eq!(
        submit(|r| {
            r.is_array = true;
            r.array_runs = vec![pb::ArrayRun { first: 1, last: 2, step: 1 }];
        })
        .unwrap_err()
        .field,
        "array_runs"
    );
}

#[test]
fn agent_messages_are_validated() {
    let good = pb::TaskRef { job_id: 1, index: 2, attempt: 3 };
    assert!(attempt_ref(Some(good)).is_ok());
    assert_eq!(attempt_ref(Some(pb::TaskRef { attempt: 0, ..good })).unwrap_err().field, "task.attempt");
    assert_eq!(attempt_ref(None).unwrap_err().field, "task");
    let result = |outcome: i32| pb::TaskResult { task: Some(good), outcome, ..Default::default() };
    assert_eq!(task_result(result(pb::Outcome::of(Outcome::TimedOut))).unwrap().outcome, Outcome::TimedOut);
    // An outcome it does not know still ends the attempt, as a failure that says so.
    let unknown = task_result(result(99)).unwrap();
    assert_eq!(unknown.outcome, Outcome::Failed);
    assert!(unknown.message.contains("outcome 99"), "{}", unknown.message);
    assert_eq!(task_result(result(0)).unwrap().outcome, Outcome::Failed);
    let big = pb::LogChunk { task: Some(good), data: vec![0; MAX_LOG_CHUNK + 1], ..Default::default() };
    assert_eq!(log_chunk(big).unwrap_err().field, "logs.data");
    let reg = |slots| pb::RegisterRequest { pool: "p".into(), slots, ..Default::default() };
    assert_eq!(registration(reg(0)).unwrap_err().field, "slots");
    assert_eq!(registration(pb::RegisterRequest { launch_id: "x".into(), ..reg(1) }).unwrap_err().field, "launch_id");
}

#[test]
fn pool_requests_are_validated() {
    let spec = |f: fn(&mut pb::PoolSpec)| {
        let mut s = pb::PoolSpec { name: "p".into(), slots_per_node: 2, ..Default::default() };
        f(&mut s);
        pool_spec(Some(s))
    };
    let ok = spec(|_| {}).unwrap();
    assert_eq!((ok.provider, ok.fill), (Provider::Static, Fill::Spread));
    assert_eq!(spec(|s| s.slots_per_node = 0).unwrap_err().field, "slots_per_node");
    assert_eq!(spec(|s| s.provider = "cloud".into()).unwrap_err().field, "provider");
    assert_eq!(spec(|s| s.fill = "tight".into()).unwrap_err().field, "fill");
    assert_eq!(spec(|s| s.target_nodes = 3).unwrap_err().field, "nodes");
    fn local(nodes: u32) -> Result<PoolSpec, Invalid> {
        let provider = "local".into();
        pool_spec(Some(pb::PoolSpec {
            name: "p".into(),
            slots_per_node: 1,
            provider,
            target_nodes: nodes,
            ..Default::default()
        }))
    }
    assert!(local(3).is_ok());
    assert_eq!(spec(|s| s.provider = "command".into()).unwrap_err().field, "commands");
    let commands = Some(pb::ProviderCommands { add: "a".into(), remove: "r".into(), timeout_ms: 0 });
    let with_commands = pool_spec(Some(pb::PoolSpec {
        name: "p".into(),
        slots_per_node: 1,
        provider: "command".into(),
        target_nodes: 1,
        commands: commands.clone(),
        ..Default::default()
    }))
    .unwrap();
    assert_eq!(with_commands.commands.unwrap().timeout, Duration::from_secs(60));
    let misplaced =
        pool_spec(Some(pb::PoolSpec { name: "p".into(), slots_per_node: 1, commands, ..Default::default() }));
    assert_eq!(misplaced.unwrap_err().field, "commands");
    assert_eq!(local(100_000).unwrap_err().field, "nodes");
}
