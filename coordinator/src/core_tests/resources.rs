//! The resources tests that need the real store.

use super::*;

#[test]
fn devices_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = crate::store::Store::open(dir.path()).unwrap();
    let mut env = Env::with_pool(Fill::Spread);
    let n = env.node_with(4, &[("gpus", 4)]);
    env.submit_spec(asking(2, &[("gpus", 2)]));
    let placed = assign(&mut env);
    env.report(&n, placed[0].1, Outcome::Succeeded);
    store.apply(&env.out.store).unwrap();
    let mut restored = Core::new(env.core.config.clone(), (env.now, 1_000_000));
    restored.restore(store.load().unwrap(), env.now, &mut Outbox::default());
    restored.sanity_check();
    assert_eq!(restored.nodes[&n].gpus_taken, BTreeSet::from([2, 3]));
    assert_eq!(restored.nodes[&n].record.resources["gpus"], 4);
    assert_eq!(restored.running[&placed[1].1.task].gpus, vec![2, 3]);
}
