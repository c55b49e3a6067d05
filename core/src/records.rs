//! The credentials the core decides about, as stored: tokens, nodes' own secrets
//! and dashboard sign-ins. Only hashes: a secret never reaches the core.

use crate::model::{NodeId, PoolName, Role};

/// A bearer token, as stored (never the secret: its SHA-256).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// The public half of the bearer string, which finds this record.
    pub id: String,
    pub name: String,
    pub role: Role,
    /// An agent token bound to one pool joins only that pool.
    pub pool: Option<PoolName>,
    pub hash: [u8; 32],
    pub created_at_ms: u64,
    pub expires_at_ms: Option<u64>,
    /// The name of the token that created it (`bootstrap` for the first admin token).
    pub created_by: String,
}

/// A node's own secret, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCredential {
    pub node: NodeId,
    pub pool: PoolName,
    pub hash: [u8; 32],
    /// The token the node registered with: the credential dies with it.
    pub token_id: String,
}

/// A dashboard sign-in, as stored: the hash of its cookie's value (never the value),
/// the token it stands for, and when it was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub key: String,
    pub token_id: String,
    pub at_ms: u64,
}
