//! Who may speak for a pool: the checks on tokens that name one. Making and ending
//! credentials as pools and nodes come and go is written into the outbox where they
//! change ([`Credential`]); the secrets themselves stay with the shell.

use super::*;
use crate::error::{Error, Invalid, Result};

/// The name of a provider pool's own agent token. `:` is not allowed in the names
/// users choose, so it cannot collide with one.
pub fn pool_token_name(pool: &PoolName) -> String {
    format!("pool:{pool}")
}

impl Core {
    /// The pool named `name`, or the refusal that says it does not exist.
    pub fn pool(&self, name: &PoolName) -> Result<&Pool> {
        self.pools.get(name).ok_or_else(|| Error::not_found("pool", name))
    }

    /// An agent token bound to a pool joins only that pool, so the pool must exist
    /// when the token is made.
    pub fn check_token_pool(&self, pool: &PoolName) -> Result<()> {
        if self.pools.contains_key(pool) {
            return Ok(());
        }
        Err(Invalid::new(
            "pool",
            format!("pool '{pool}' does not exist: create it first (an agent token joins one pool)"),
        )
        .into())
    }

    /// A pool's own agent token is how the coordinator starts its agents: while the
    /// pool exists it cannot be revoked (it goes with the pool).
    pub fn check_revoke_token(&self, name: &str) -> Result<()> {
        let own = self.pools.keys().find(|pool| pool_token_name(pool) == name);
        match own {
            Some(pool) => Err(Error::Refused(format!(
                "token '{name}' is pool {pool}'s own agent token, with which the coordinator starts its agents; it goes with `corral pool delete {pool}`"
            ))),
            None => Ok(()),
        }
    }
}
