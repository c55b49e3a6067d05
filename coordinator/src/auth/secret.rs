//! Secrets: 256 random bits from the operating system, kept only as SHA-256 hashes
//! and compared in constant time.

use subtle::ConstantTimeEq;

/// Random hex and its encoding are the credentials' (`corral-proto`), which the CLI
/// uses too (for idempotency keys) without linking the coordinator.
pub use corral_proto::credentials::{hex, random_hex};

/// Parses what [`hex`] wrote, for hashes read back from the store.
pub fn from_hex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The SHA-256 of a secret.
pub fn hash(secret: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Whether `secret` hashes to `expected`, in time that does not depend on where
/// they differ.
pub fn matches(secret: &str, expected: &[u8; 32]) -> bool {
    bool::from(hash(secret).ct_eq(expected))
}

/// A new secret with a public id, before anything is stored.
pub struct Minted {
    /// 64 bits, hex: finds the record.
    pub id: String,
    /// 256 bits, hex: proves the holder.
    pub secret: String,
    pub hash: [u8; 32],
}

impl Minted {
    pub fn new() -> Minted {
        let secret = random_hex(32);
        Minted { id: random_hex(8), hash: hash(&secret), secret }
    }

    /// What a client sends: `ID.SECRET`.
    pub fn bearer(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }
}

impl Default for Minted {
    fn default() -> Self {
        Minted::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_long_distinct_and_round_trip_through_hex() {
        let a = Minted::new();
        let b = Minted::new();
        assert_eq!((a.id.len(), a.secret.len()), (16, 64));
        assert_ne!(a.secret, b.secret);
        assert!(matches(&a.secret, &a.hash));
        assert!(!matches(&b.secret, &a.hash));
        assert_eq!(from_hex(&hex(&a.hash)), Some(a.hash));
        assert_eq!(from_hex("zz"), None);
    }
}
