//! Credentials: the core says which pool tokens are made and revoked and which
//! nodes' secrets end, where the pools and nodes change; and whose token may
//! change what.

use super::*;

fn credentials(out: &Outbox) -> Vec<Credential> {
    out.credentials.clone()
}

#[test]
fn a_pool_whose_provider_starts_nodes_asks_for_its_agent_token_and_a_static_one_does_not() {
    let mut env = Env::new();
    env.core.create_pool(env.now, pool_spec("stat", Provider::Static, 0, Fill::Spread), &mut env.out).unwrap();
    assert_eq!(credentials(&env.take()), vec![]);
    env.core.create_pool(env.now, pool_spec("loc", Provider::Local, 1, Fill::Spread), &mut env.out).unwrap();
    env.check();
    let loc = PoolName::parse("pool", "loc").unwrap();
    assert_eq!(credentials(&env.take()), vec![Credential::MintPoolToken(loc.clone())]);
    // A second create of the name is refused and asks for nothing.
    let again = env.core.create_pool(env.now, pool_spec("loc", Provider::Local, 1, Fill::Spread), &mut env.out);
    assert!(matches!(again, Err(Error::AlreadyExists { what: "pool", .. })), "{again:?}");
    assert!(env.out.is_empty());
}

#[test]
fn a_lost_node_is_retired_once_and_a_deleted_pool_revokes_its_token() {
    let mut env = Env::with_pool(Fill::Spread);
    let (lost, kept) = (env.node(1), env.node(1));
    env.take();
    env.advance(ms(3000));
    assert!(env.core.on_node_message(env.now, &kept, &mut env.out));
    env.advance(ms(3000));
    env.tick();
    env.check();
    assert_eq!(env.core.nodes[&lost].state(), NodeState::Lost);
    assert_eq!(credentials(&env.take()), vec![Credential::RetireNode(lost.clone())]);
    env.advance(ms(3000));
    assert!(env.core.on_node_message(env.now, &kept, &mut env.out));
    env.tick();
    assert!(!credentials(&env.take()).contains(&Credential::RetireNode(lost.clone())), "retired once");

    let pool = PoolName::parse("pool", "p").unwrap();
    env.core.delete_pool(env.now, &pool, false, &mut env.out).unwrap();
    env.check();
    assert_eq!(
        credentials(&env.take()),
        vec![Credential::RetireNode(kept), Credential::RevokePoolToken(pool)],
        "its nodes go first, then its token"
    );
}

#[test]
fn a_pool_being_taken_down_revokes_its_token_when_its_last_node_is_gone() {
    let mut env = Env::with_pool(Fill::Spread);
    let busy = env.node(1);
    env.submit(1, 0, 0);
    let started = env.schedule();
    let pool = PoolName::parse("pool", "p").unwrap();
    env.take();
    env.core.delete_pool(env.now, &pool, false, &mut env.out).unwrap();
    assert_eq!(credentials(&env.take()), vec![], "the draining node still speaks for its task");
    env.report(&busy, started[0].1, Outcome::Succeeded);
    env.tick();
    env.check();
    assert_eq!(credentials(&env.take()), vec![Credential::RetireNode(busy), Credential::RevokePoolToken(pool)]);
}

#[test]
fn tokens_that_name_a_pool_are_checked_against_the_pools() {
    let env = Env::with_pool(Fill::Spread);
    let p = PoolName::parse("pool", "p").unwrap();
    let gone = PoolName::parse("pool", "gone").unwrap();
    assert!(env.core.check_token_pool(&p).is_ok());
    let err = env.core.check_token_pool(&gone).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid pool: pool 'gone' does not exist: create it first (an agent token joins one pool)"
    );
    let err = env.core.check_revoke_token("pool:p").unwrap_err();
    assert!(err.to_string().contains("it goes with `corral pool delete p`"), "{err}");
    assert!(env.core.check_revoke_token("pool:gone").is_ok(), "a deleted pool's token may go");
    assert!(env.core.check_revoke_token("ci").is_ok());
    assert!(matches!(env.core.pool(&gone), Err(Error::NotFound { what: "pool", .. })));
}

#[test]
fn only_the_owner_or_an_admin_changes_a_job() {
    let mut env = Env::with_pool(Fill::Spread);
    let job = env.submit_spec(JobSpec { owner: "alice".into(), ..job_spec("p", 1, 0, 0) });
    let (alice, bob, admin) = (
        owners::Caller { name: "alice".into(), admin: false },
        owners::Caller { name: "bob".into(), admin: false },
        owners::Caller { name: "root".into(), admin: true },
    );
    assert!(env.core.may_change_job(&alice, job).is_ok());
    assert!(env.core.may_change_job(&admin, job).is_ok());
    let err = env.core.may_change_job(&bob, job).unwrap_err();
    assert!(matches!(err, Error::Forbidden(_)));
    assert_eq!(
        err.to_string(),
        format!("job {job} belongs to token 'alice'; a submit token changes only its own jobs (an admin token may change any)")
    );
    assert!(matches!(env.core.may_change_job(&admin, JobId(999)), Err(Error::NotFound { what: "job", .. })));
}
