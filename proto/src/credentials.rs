//! How clients (the CLI, agents, tests) present a token: where it is read from, and
//! the interceptor that puts it on every request as `authorization: Bearer TOKEN`.
//!
//! A secret never comes from the command line of a long-lived process, where `ps`
//! would show it: only from a file (`--token-file` / `CORRAL_TOKEN_FILE`) or the
//! environment (`CORRAL_TOKEN`).

use std::path::Path;

use ring::rand::SecureRandom;
use std::sync::{Arc, RwLock};

use tonic::metadata::{Ascii, MetadataValue};

/// Adds the bearer token to each request. Clones share the token, so an agent can
/// swap in its node secret after registering and every client made from it follows.
#[derive(Clone, Default)]
pub struct Bearer(Arc<RwLock<Option<MetadataValue<Ascii>>>>);

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bearer(..)")
    }
}

impl Bearer {
    /// A bearer for `token` (none: requests go without one and are refused with a
    /// message that says where to find a token).
    pub fn new(token: Option<&str>) -> Result<Bearer, String> {
        let bearer = Bearer::default();
        if let Some(token) = token {
            bearer.set(token)?;
        }
        Ok(bearer)
    }

    /// Uses `token` from now on.
    pub fn set(&self, token: &str) -> Result<(), String> {
        let mut value: MetadataValue<Ascii> = format!("Bearer {}", token.trim())
            .parse()
            .map_err(|_| "the token has characters that cannot go in a header; is it the right file?".to_string())?;
        value.set_sensitive(true);
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(value);
        Ok(())
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = self.0.read().unwrap_or_else(|e| e.into_inner()).clone() {
            req.metadata_mut().insert("authorization", value);
        }
        Ok(req)
    }
}

/// The token to use: the file given with `--token-file`, else `CORRAL_TOKEN`, else
/// the file named by `CORRAL_TOKEN_FILE`; `None` if none is set.
pub fn load(token_file: Option<&Path>) -> Result<Option<String>, String> {
    if let Some(path) = token_file {
        return read_file(path).map(Some);
    }
    if let Some(token) = std::env::var("CORRAL_TOKEN").ok().filter(|t| !t.trim().is_empty()) {
        return Ok(Some(token.trim().to_string()));
    }
    match std::env::var_os("CORRAL_TOKEN_FILE").filter(|p| !p.is_empty()) {
        Some(path) => read_file(Path::new(&path)).map(Some),
        None => Ok(None),
    }
}

fn read_file(path: &Path) -> Result<String, String> {
    let token =
        std::fs::read_to_string(path).map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?;
    let token = token.trim();
    if token.is_empty() {
        return Err(format!("the token file {} is empty", path.display()));
    }
    Ok(token.to_string())
}

/// `n` random bytes from the OS, as lower-case hex.
pub fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    // The OS generator does not fail once the process runs; if it ever did, a
    // predictable secret would be worse than stopping.
    ring::rand::SystemRandom::new().fill(&mut bytes).expect("the operating system's random generator failed");
    hex(&bytes)
}

/// Bytes as lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::service::Interceptor;

    #[test]
    fn the_bearer_goes_on_every_request_and_can_change() {
        let mut bearer = Bearer::new(Some("a.b\n")).unwrap();
        let req = bearer.call(tonic::Request::new(())).unwrap();
        assert_eq!(req.metadata().get("authorization").unwrap(), "Bearer a.b");
        let shared = bearer.clone();
        shared.set("n-1.c").unwrap();
        let req = bearer.call(tonic::Request::new(())).unwrap();
        assert_eq!(req.metadata().get("authorization").unwrap(), "Bearer n-1.c");
        assert!(Bearer::new(Some("bad\u{1}")).is_err());
        let mut none = Bearer::default();
        assert!(none.call(tonic::Request::new(())).unwrap().metadata().get("authorization").is_none());
    }

    #[test]
    fn a_token_file_is_read_trimmed_and_an_empty_one_is_an_error() {
        let dir = std::env::temp_dir().join(format!("corral-cred-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("t");
        std::fs::write(&file, "id.secret\n").unwrap();
        assert_eq!(load(Some(&file)).unwrap().as_deref(), Some("id.secret"));
        std::fs::write(&file, "\n").unwrap();
        assert!(load(Some(&file)).unwrap_err().contains("is empty"));
        assert!(load(Some(&dir.join("missing"))).unwrap_err().contains("cannot read the token file"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
