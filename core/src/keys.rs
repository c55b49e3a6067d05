//! Idempotency keys: a submission retried with the same key makes one job.
//!
//! The key is looked up and recorded on the event loop, in the same batch (so the
//! same transaction) as the job it made: two calls with one key cannot both pass,
//! whatever order they come in, and a key survives a restart with its job.

use std::collections::{HashMap, VecDeque};

use super::{Core, Outbox, StoreOp};
use crate::error::{Error, Invalid, Result};
use crate::model::*;

/// How long a key is remembered.
pub const KEEP_MS: u64 = 24 * 3600 * 1000;

/// What a put's key's digest starts with; the object's path follows.
pub const PUT: &str = "put:";

/// A key a client sent with a submission: whose, which, and a digest of what it
/// asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    pub owner: String,
    pub key: String,
    pub digest: String,
}

/// A key that made a job, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub key: IdempotencyKey,
    pub job: JobId,
    pub at_ms: u64,
}

/// The keys of the last [`KEEP_MS`], oldest first.
#[derive(Debug, Default)]
pub struct Keys {
    by_key: HashMap<(String, String), (String, JobId)>,
    order: VecDeque<(u64, (String, String))>,
}

impl Keys {
    /// The job made under `key` with the same digest, if one was.
    pub fn job_of(&self, key: &IdempotencyKey) -> Option<JobId> {
        let (digest, job) = self.by_key.get(&(key.owner.clone(), key.key.clone()))?;
        (*digest == key.digest).then_some(*job)
    }

    pub fn insert(&mut self, record: KeyRecord) {
        let id = (record.key.owner, record.key.key);
        if self.by_key.insert(id.clone(), (record.key.digest, record.job)).is_none() {
            self.order.push_back((record.at_ms, id));
        }
    }

    /// Forgets keys older than [`KEEP_MS`] at `now_ms`; returns whether any went.
    pub fn expire(&mut self, now_ms: u64) -> bool {
        let mut expired = false;
        while let Some((at, _)) = self.order.front() {
            if now_ms.saturating_sub(*at) < KEEP_MS {
                break;
            }
            if let Some((_, id)) = self.order.pop_front() {
                self.by_key.remove(&id);
                expired = true;
            }
        }
        expired
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

/// The refusal of `key`, which made `job` (or a put, by its `digest`) before.
fn reused(key: &str, digest: &str, job: JobId) -> Error {
    match digest.strip_prefix(PUT) {
        Some(object) => Error::Invalid(Invalid::new(
            "idempotency_key",
            format!(
                "'{}' was used for a put of '{}'; use a new key for another request",
                crate::error::shown(key),
                crate::error::shown(object)
            ),
        )),
        None => Error::KeyReused { key: crate::error::shown(key), job },
    }
}

impl Core {
    /// Submits `spec` unless `key` already made a job: then that job's id comes
    /// back (for the same request) or the call is refused (for another).
    pub fn submit_job_once(
        &mut self,
        now: std::time::Instant,
        spec: JobSpec,
        key: Option<IdempotencyKey>,
        out: &mut Outbox,
    ) -> Result<JobId> {
        let Some(key) = key else { return self.submit_job(now, spec, out) };
        if let Some((digest, job)) = self.keys.by_key.get(&(key.owner.clone(), key.key.clone())) {
            if *digest == key.digest {
                return Ok(*job);
            }
            return Err(reused(&key.key, digest, *job));
        }
        let job = self.submit_job(now, spec, out)?;
        let record = KeyRecord { key, job, at_ms: self.wall_ms(now) };
        out.store.push(StoreOp::PutIdempotencyKey(record.clone()));
        self.keys.insert(record);
        Ok(job)
    }

    /// Whether a put under `key` (its digest names the object) was recorded already:
    /// a retry, whose triggers fired the first time. A key used for a put of another
    /// object, or for a job, is refused.
    pub fn put_seen(&self, key: &IdempotencyKey) -> Result<bool> {
        match self.keys.by_key.get(&(key.owner.clone(), key.key.clone())) {
            None => Ok(false),
            Some((digest, _)) if *digest == key.digest => Ok(true),
            Some((digest, job)) => Err(reused(&key.key, digest, *job)),
        }
    }

    /// Whether a put is to be recorded (and fire its triggers): always without a
    /// key; with one, unless it recorded a put already, and then the key is
    /// remembered in the same batch (it makes no job of its own: job 0).
    pub fn first_put(&mut self, now: std::time::Instant, key: Option<IdempotencyKey>, out: &mut Outbox) -> bool {
        let Some(key) = key else { return true };
        if self.put_seen(&key).unwrap_or(true) {
            return false;
        }
        let record = KeyRecord { key, job: JobId(0), at_ms: self.wall_ms(now) };
        out.store.push(StoreOp::PutIdempotencyKey(record.clone()));
        self.keys.insert(record);
        true
    }

    /// Forgets keys past their day, in memory and in the store.
    pub fn expire_keys(&mut self, now: std::time::Instant, out: &mut Outbox) {
        let now_ms = self.wall_ms(now);
        if self.keys.expire(now_ms) {
            // What memory forgot (`at <= now - KEEP_MS`), no more and no less: a key
            // left in the store would refuse the next job made under it.
            out.store.push(StoreOp::ExpireIdempotencyKeys { before_ms: now_ms.saturating_sub(KEEP_MS) + 1 });
        }
    }
}
