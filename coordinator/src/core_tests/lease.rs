//! The PostgreSQL store's lease: a standby takes over when the leader gives it up,
//! and a leader whose lease was taken commits nothing more.

use std::sync::Arc;

use super::backends::{postgres, scenario, settings, Under};
use super::*;
use crate::events::Filter;
use crate::store::postgres::lease::Lease;
use crate::store::{Backend, Postgres, StoreError};

/// A second coordinator waits for the lease while the first renews it, and takes
/// it, with the next epoch, as soon as the first gives it up.
#[test]
fn a_standby_waits_for_the_lease_and_takes_the_next_epoch() {
    let mut under = postgres();
    let (target, first) = postgres_of(&under);
    let (tx, rx) = std::sync::mpsc::channel();
    let standby = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let lease = Lease::take(target, &settings("second"), |h| seen.push(h.clone())).unwrap();
        tx.send(()).unwrap();
        (lease, seen)
    });
    // Three leases long, the first keeps it.
    assert!(rx.recv_timeout(std::time::Duration::from_millis(1800)).is_err(), "the standby took a live lease");
    let given_up = Instant::now();
    drop(under.pg.as_mut().and_then(|(_, lease)| lease.take()));
    rx.recv_timeout(std::time::Duration::from_secs(5)).expect("the standby never took the lease");
    assert!(given_up.elapsed() < std::time::Duration::from_secs(2), "{:?}", given_up.elapsed());
    let (lease, seen) = standby.join().unwrap();
    assert_eq!(lease.epoch(), first + 1);
    assert_eq!(seen.first().and_then(|h| h.holder.clone()).as_deref(), Some("first"), "{seen:?}");
}

/// A leader whose lease was taken (it was paused past it, say) commits nothing
/// more, sent ahead or not, and hears that it lost the lease; the new leader's
/// writes go in after everything the first one stored.
#[test]
fn a_leader_whose_lease_was_taken_commits_nothing_more() {
    let (batches, _) = scenario();
    let under = postgres();
    let server = under.server.as_ref().unwrap();
    let mut first = under.backend.open_durable().unwrap();
    for batch in &batches[..2] {
        first.apply(batch).unwrap();
    }
    let stored = first.last_event();
    let (target, _) = postgres_of(&under);
    // As if the first had been paused past its lease, and a standby took it (in one
    // statement: the first's thread would renew a lease that merely ran out).
    let (taken, second_epoch) = server.psql(
        "corral",
        "UPDATE corral_lease SET holder = 'second', epoch = epoch + 1, expires_at = clock_timestamp() + interval '1 hour' RETURNING epoch",
    );
    assert!(taken, "{second_epoch}");
    let err = first.apply(&batches[2]).unwrap_err();
    assert!(matches!(err, crate::error::Error::Store(StoreError::Fenced(_))), "{err}");
    assert!(err.to_string().contains("another coordinator took the lease"), "{err}");
    first.send(&batches[2]).unwrap();
    assert!(matches!(first.settle(), Err(crate::error::Error::Store(StoreError::Fenced(_)))));
    let mut lost = under.pg.as_ref().and_then(|(_, lease)| lease.as_ref()).unwrap().lost();
    let deadline = Instant::now() + std::time::Duration::from_secs(3);
    while lost.borrow_and_update().is_none() {
        assert!(Instant::now() < deadline, "the first leader never heard it lost the lease");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let second = Postgres { target: target.clone(), epoch: second_epoch.trim().parse().unwrap() };
    let mut writer = second.open_durable().unwrap();
    assert_eq!(writer.last_event(), stored, "the new leader goes on from what the first stored");
    for batch in &batches[2..] {
        writer.apply(batch).unwrap();
    }
    let mut history = second.open_history().unwrap();
    let ids: Vec<u64> = history.events(0, &Filter::default(), 100_000).unwrap().iter().map(|e| e.id).collect();
    assert_eq!(ids, (1..=writer.last_event()).collect::<Vec<_>>());
}

/// The PostgreSQL backend under test: its target, and the epoch of its writer.
fn postgres_of(under: &Under) -> (Arc<crate::store::postgres::Target>, u64) {
    let (target, lease) = under.pg.as_ref().expect("postgres");
    (target.clone(), lease.as_ref().map_or(0, Lease::epoch))
}
