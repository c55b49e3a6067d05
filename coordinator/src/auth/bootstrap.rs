//! Tokens the coordinator makes for itself: the first admin token, written to
//! `DATA_DIR/admin.token` (there is no bootstrap endpoint to race for), and one
//! `agent` token per provider pool, bound to it, that the agents the coordinator
//! starts read from `DATA_DIR/tokens/pool-NAME.token`. Every such file is mode 0600.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::secret::{self, Minted};
use super::TokenRecord;
use crate::model::{PoolName, Role};

/// The name of the first admin token.
pub const ADMIN: &str = "admin";

pub fn admin_token_path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.token")
}

/// The name of a provider pool's agent token (the core decides about it).
pub use corral_core::credentials::pool_token_name;

/// Where a provider pool's agent token is kept for the agents the coordinator starts.
pub fn pool_token_path(data_dir: &Path, pool: &PoolName) -> PathBuf {
    data_dir.join("tokens").join(format!("pool-{pool}.token"))
}

/// Writes a secret file readable by this user only, replacing any old one whole.
pub fn write_secret_file(path: &Path, contents: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    file.write_all(contents.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&tmp, path)
}

fn record(minted: &Minted, name: String, role: Role, pool: Option<PoolName>, now_ms: u64) -> TokenRecord {
    TokenRecord {
        id: minted.id.clone(),
        name,
        role,
        pool,
        hash: minted.hash,
        created_at_ms: now_ms,
        expires_at_ms: None,
        created_by: "bootstrap".into(),
    }
}

/// The key that signs completion callbacks, made on first start in
/// `DATA_DIR/notify.secret`.
pub fn notify_secret(data_dir: &Path) -> std::io::Result<String> {
    key_file(&data_dir.join("notify.secret"))
}

/// The key provider pools' agent tokens are derived from (see [`PoolKey`]), made on
/// first start in `DATA_DIR/pool-tokens.key`.
pub fn pool_key_file(data_dir: &Path) -> std::io::Result<String> {
    key_file(&data_dir.join("pool-tokens.key"))
}

/// The secret in `path`, made (256 random bits) if there is none.
fn key_file(path: &Path) -> std::io::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(secret) if !secret.trim().is_empty() => return Ok(secret.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let secret = secret::random_hex(32);
    write_secret_file(path, &secret)?;
    Ok(secret)
}

/// The key the secret of each provider pool's agent token is derived from (HMAC-SHA256
/// of the token's id). On PostgreSQL every coordinator of the database uses the first
/// one's, so whichever leads can hand a pool's agents the very token they joined with:
/// a node's secret dies with the token it registered with, so a token made anew by a
/// new leader would cut off every agent its predecessor started.
#[derive(Clone)]
pub struct PoolKey(String);

impl std::fmt::Debug for PoolKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PoolKey(..)")
    }
}

impl PoolKey {
    pub fn new(key: String) -> PoolKey {
        PoolKey(key)
    }

    /// The secret of the pool agent token whose id is `id`.
    fn secret(&self, id: &str) -> String {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, self.0.as_bytes());
        let tag = ring::hmac::sign(&key, format!("corral pool agent token {id}").as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        secret::hex(&out)
    }
}

/// A new admin token, its secret already in `DATA_DIR/admin.token`. Written before
/// the record is stored: a crash in between leaves no record, and the next start
/// makes a new one.
pub fn mint_admin(data_dir: &Path, now_ms: u64) -> std::io::Result<TokenRecord> {
    let minted = Minted::new();
    write_secret_file(&admin_token_path(data_dir), &minted.bearer())?;
    Ok(record(&minted, ADMIN.into(), Role::Admin, None, now_ms))
}

/// A pool's agent token in its file: `existing` if its secret is derived from `key`
/// (the file is written again if it lacks it) or is the one on file, else a new one.
pub fn ensure_pool_token(
    data_dir: &Path,
    key: &PoolKey,
    pool: &PoolName,
    existing: Option<&TokenRecord>,
    now_ms: u64,
) -> std::io::Result<Option<TokenRecord>> {
    let path = pool_token_path(data_dir, pool);
    let on_file = std::fs::read_to_string(&path).unwrap_or_default();
    if let Some(existing) = existing {
        let derived = key.secret(&existing.id);
        if secret::matches(&derived, &existing.hash) {
            let bearer = format!("{}.{derived}", existing.id);
            if on_file.trim() != bearer {
                write_secret_file(&path, &bearer)?;
            }
            return Ok(None);
        }
        let fits = on_file
            .trim()
            .split_once('.')
            .is_some_and(|(id, s)| id == existing.id && secret::matches(s, &existing.hash));
        if fits {
            return Ok(None);
        }
    }
    let token = mint_pool_token(key, pool, now_ms);
    write_pool_token(data_dir, key, &token)?;
    Ok(Some(token))
}

/// A new agent token for `pool`, its secret derived from `key` (so it can be
/// written to the pool's file later, by this coordinator or another of its
/// database, without being kept anywhere).
pub fn mint_pool_token(key: &PoolKey, pool: &PoolName, now_ms: u64) -> TokenRecord {
    let id = secret::random_hex(8);
    let secret = key.secret(&id);
    let minted = Minted { hash: secret::hash(&secret), id, secret };
    record(&minted, pool_token_name(pool), Role::Agent, Some(pool.clone()), now_ms)
}

/// Writes a pool token's bearer string, derived from `key`, to the pool's file.
pub fn write_pool_token(data_dir: &Path, key: &PoolKey, token: &TokenRecord) -> std::io::Result<()> {
    let Some(pool) = &token.pool else {
        return Err(std::io::Error::other(format!("token '{}' is bound to no pool", token.name)));
    };
    write_secret_file(&pool_token_path(data_dir, pool), &format!("{}.{}", token.id, key.secret(&token.id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_token_file_is_private_and_holds_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let token = mint_admin(dir.path(), 5).unwrap();
        let path = admin_token_path(dir.path());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let bearer = std::fs::read_to_string(&path).unwrap();
        let (id, secret) = bearer.trim().split_once('.').unwrap();
        assert_eq!(id, token.id);
        assert!(secret::matches(secret, &token.hash));
        assert_eq!(token.role, Role::Admin);
    }

    #[test]
    fn a_pool_token_is_made_again_only_when_neither_its_key_nor_its_file_fits() {
        let dir = tempfile::tempdir().unwrap();
        let key = PoolKey::new(pool_key_file(dir.path()).unwrap());
        let pool = PoolName::parse("pool", "gpu").unwrap();
        let path = pool_token_path(dir.path(), &pool);
        let first = ensure_pool_token(dir.path(), &key, &pool, None, 0).unwrap().unwrap();
        assert_eq!((first.name.as_str(), first.pool.as_ref()), ("pool:gpu", Some(&pool)));
        let bearer = std::fs::read_to_string(&path).unwrap();
        assert!(ensure_pool_token(dir.path(), &key, &pool, Some(&first), 0).unwrap().is_none());
        // Another coordinator of the same database (another data dir, the same key)
        // writes the same token to its own file.
        let other = tempfile::tempdir().unwrap();
        assert!(ensure_pool_token(other.path(), &key, &pool, Some(&first), 0).unwrap().is_none());
        assert_eq!(std::fs::read_to_string(pool_token_path(other.path(), &pool)).unwrap(), bearer);
        // A token made before under another key is kept while its file holds it...
        let elsewhere = PoolKey::new("another key".into());
        assert!(ensure_pool_token(dir.path(), &elsewhere, &pool, Some(&first), 0).unwrap().is_none());
        // ... and made again once it does not.
        std::fs::remove_file(&path).unwrap();
        let second = ensure_pool_token(dir.path(), &elsewhere, &pool, Some(&first), 0).unwrap().unwrap();
        assert_ne!(second.id, first.id);
        assert!(format!("{key:?}").find(&key.0).is_none(), "the key is not shown");
    }
}
