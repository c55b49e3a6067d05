//! Resources beyond slots: GPUs as devices, memory and named counters, fitted
//! without over-commit (sanity_check recounts them after every step).

use super::*;

#[test]
fn gpus_are_devices_never_given_to_two_tasks() {
    let mut env = Env::with_pool(Fill::Spread);
    let n = env.node_with(8, &[("gpus", 4)]);
    env.submit_spec(asking(3, &[("gpus", 1)]));
    env.submit_spec(asking(2, &[("gpus", 2)]));
    env.submit(1, -5, 0);
    let placed = assign(&mut env);
    let gpus: Vec<&str> = placed.iter().map(|(_, _, e)| e["CORRAL_GPUS"].as_str()).collect();
    // Three single devices, then one task of two fits in what is left; the second
    // waits; the task that asked for none sees no device.
    assert_eq!(gpus, ["0", "1", "2", "", ""][..gpus.len()].to_vec(), "{gpus:?}");
    assert_eq!(placed.len(), 4, "{placed:?}");
    assert_eq!(placed[3].2["CUDA_VISIBLE_DEVICES"], "");
    assert_eq!(env.core.nodes[&n].gpus_taken, BTreeSet::from([0, 1, 2]));
    // Device 0 frees: with 3 free, the two-device task gets the lowest two.
    env.report(&n, placed[0].1, Outcome::Succeeded);
    let next = assign(&mut env);
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].2["CORRAL_GPUS"], "0,3");
    assert_eq!(next[0].2["CUDA_VISIBLE_DEVICES"], "0,3");
    // Nothing left for the last one until two are free again.
    assert!(assign(&mut env).is_empty());
    env.report(&n, placed[1].1, Outcome::Succeeded);
    assert!(assign(&mut env).is_empty(), "one free device is not two");
    env.report(&n, placed[2].1, Outcome::Succeeded);
    assert_eq!(assign(&mut env)[0].2["CORRAL_GPUS"], "1,2");
}

#[test]
fn memory_and_counters_bound_what_runs_beside_what() {
    let mut env = Env::with_pool(Fill::Spread);
    let n = env.node_with(8, &[("mem", 8 << 30), ("licenses", 1)]);
    env.submit_spec(asking(4, &[("mem", 3 << 30)]));
    env.submit_spec(asking(3, &[("licenses", 1)]));
    let placed = assign(&mut env);
    let of = |job: u64| placed.iter().filter(|(_, a, _)| a.task.job == JobId(job)).count();
    assert_eq!((of(1), of(2)), (2, 1), "8 GiB hold two 3 GiB tasks; one licence, one task");
    assert_eq!(env.core.nodes[&n].resources_used["mem"], 6 << 30);
    for (_, a, _) in &placed {
        env.report(&n, *a, Outcome::Succeeded);
    }
    assert!(env.core.nodes[&n].resources_used.is_empty());
}

#[test]
fn a_request_no_node_can_meet_is_refused_but_a_pool_without_nodes_accepts() {
    let mut env = Env::with_pool(Fill::Spread);
    env.submit_spec(asking(1, &[("gpus", 8)]));
    env.node_with(2, &[("gpus", 4)]);
    env.take();
    let err = env.core.submit_job(env.now, asking(1, &[("gpus", 8)]), &mut env.out).unwrap_err();
    assert!(err.to_string().contains("task.resources: a task needs gpus=8 but no node of pool 'p' has that"), "{err}");
    let err = env.core.submit_job(env.now, asking(1, &[("fpgas", 1)]), &mut env.out).unwrap_err();
    assert!(err.to_string().contains("fpgas=1"), "{err}");
    assert!(env.out.is_empty());
    // The one accepted before the node came waits, and says why.
    let why = env.core.explain_task(env.now, TaskKey { job: JobId(1), index: 0 }).unwrap().join("\n");
    assert!(why.contains("no node of pool 'p' up now has gpus=8 at all"), "{why}");
}

#[test]
fn the_autoscaler_counts_resources() {
    let mut env = Env::with_pool(Fill::Spread);
    env.node_with(8, &[("gpus", 2)]);
    env.submit_spec(asking(6, &[("gpus", 1)]));
    let pool = &env.core.pools[&PoolName::parse("pool", "p").unwrap()];
    let load = env.core.autoscale_snapshot(pool, env.now);
    assert_eq!((load.needed_slots, load.resource_nodes), (6, 3), "6 slots fit one node of 8; 6 gpus need 3 of 2");
    let auto = Autoscale { min: 0, max: 10, idle_timeout: ms(1000), step: 5, cooldown: ms(0) };
    let decision = autoscale::decide(&auto, &load, env.now);
    assert!(matches!(decision, autoscale::Decision::Grow { target: 3, .. }), "{decision:?}");
}
