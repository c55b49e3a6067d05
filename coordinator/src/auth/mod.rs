//! Who is asking: bearer tokens with roles, and the per-node secrets that agents
//! prove themselves with.
//!
//! - [`secret`]: making secrets and their hashes (OS randomness and SHA-256 from
//!   `ring`, compared in constant time with `subtle`);
//! - [`rules`]: which role each gRPC method needs, in one table;
//! - [`layer`]: the tower layer that authenticates every gRPC request against that
//!   table before tonic routes it;
//! - [`bootstrap`]: the first admin token and the tokens the coordinator gives the
//!   agents it starts.
//!
//! A token is `ID.SECRET`: a public id that finds the record, and 256 random bits of
//! which only the SHA-256 is kept (in the store and here). A node's secret is
//! `NODE_ID.SECRET`, issued when the node registers; it is valid only while the token
//! the node registered with is. The tables live in [`Auth`] behind a mutex that is held
//! for one lookup or change, never across an `.await`; they change only after the
//! store holds the change, except that a revocation takes effect here first.

pub mod bootstrap;
pub mod layer;
pub mod rules;
pub mod secret;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tonic::Status;

use crate::model::{NodeId, PoolName, Role};

/// The credentials as stored (tokens, nodes' secrets, sign-ins) are the core's.
pub use corral_core::records::{NodeCredential, SessionRecord, TokenRecord};

/// A sign-in just made: the cookie's value, what to store, and the sign-ins it
/// pushed out (to delete from the store).
pub struct Opened {
    pub sid: String,
    pub record: SessionRecord,
    pub evicted: Vec<String>,
}

/// Who made a request, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Token { id: String, name: String, role: Role, pool: Option<PoolName>, expires_at_ms: Option<u64> },
    Node { node: NodeId, pool: PoolName, token_id: String },
}

impl Principal {
    /// The name recorded as a job's owner and shown in refusals.
    pub fn name(&self) -> String {
        match self {
            Principal::Token { name, .. } => name.clone(),
            Principal::Node { node, .. } => format!("node {node}"),
        }
    }

    pub fn is_admin(&self) -> bool {
        matches!(self, Principal::Token { role: Role::Admin, .. })
    }

    /// Who asks, as the core's ownership rule ([`crate::core::owners`]) knows it.
    pub fn caller(&self) -> crate::core::owners::Caller {
        crate::core::owners::Caller { name: self.name(), admin: self.is_admin() }
    }

    /// The token that stands behind this principal.
    fn token_id(&self) -> &str {
        match self {
            Principal::Token { id, .. } => id,
            Principal::Node { token_id, .. } => token_id,
        }
    }
}

/// The message for a request that carries no token at all.
pub const NO_TOKEN: &str =
    "no token: pass --token-file or set CORRAL_TOKEN (the first admin token is in DATA_DIR/admin.token)";
/// The message for a token that is not (or no longer) valid. It never says which
/// part was wrong, so a guess learns nothing.
pub const BAD_TOKEN: &str = "token refused: it is unknown, revoked or expired; ask an admin for a new one (`corral token create`), or use DATA_DIR/admin.token";

#[derive(Default)]
struct Tables {
    /// By public id.
    tokens: HashMap<String, TokenRecord>,
    nodes: HashMap<NodeId, NodeCredential>,
    /// Nodes that were lost or removed: their secrets count for nothing, and saying
    /// so tells their agents to register again.
    gone: std::collections::HashSet<NodeId>,
    /// Dashboard sign-ins, by the hash of their cookie's value, oldest first.
    sessions: HashMap<String, Principal>,
    session_order: std::collections::VecDeque<String>,
}

impl Tables {
    /// Keeps a sign-in; returns the keys of those it pushed out (the token's oldest
    /// past [`MAX_SESSIONS_PER_TOKEN`], everyone's oldest past [`MAX_SESSIONS`]).
    fn keep_session(&mut self, key: String, who: Principal) -> Vec<String> {
        let token = who.token_id().to_string();
        let mine: Vec<String> = self
            .session_order
            .iter()
            .filter(|k| self.sessions.get(*k).is_some_and(|p| p.token_id() == token))
            .cloned()
            .collect();
        let mut evicted: Vec<String> = mine.into_iter().rev().skip(MAX_SESSIONS_PER_TOKEN.saturating_sub(1)).collect();
        for old in &evicted {
            self.sessions.remove(old);
        }
        let Tables { sessions, session_order, .. } = self;
        session_order.retain(|k| sessions.contains_key(k));
        sessions.insert(key.clone(), who);
        session_order.push_back(key);
        while self.session_order.len() > MAX_SESSIONS {
            if let Some(old) = self.session_order.pop_front() {
                self.sessions.remove(&old);
                evicted.push(old);
            }
        }
        evicted
    }
}

/// The principal a token stands for.
fn principal_of(token: &TokenRecord) -> Principal {
    Principal::Token {
        id: token.id.clone(),
        name: token.name.clone(),
        role: token.role,
        pool: token.pool.clone(),
        expires_at_ms: token.expires_at_ms,
    }
}

/// Dashboard sign-ins kept at once; the oldest go first.
const MAX_SESSIONS: usize = 10_000;
/// Sign-ins kept per token: one token signing in over and over pushes out only its
/// own oldest, never other people's.
const MAX_SESSIONS_PER_TOKEN: usize = 16;

/// The tokens and node credentials the coordinator accepts.
pub struct Auth {
    tables: Mutex<Tables>,
    /// Bumped at each revocation, so open streams look again at their principal.
    revocations: watch::Sender<u64>,
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

impl Auth {
    pub fn new(tokens: Vec<TokenRecord>, nodes: Vec<NodeCredential>) -> Auth {
        let tables = Tables {
            tokens: tokens.into_iter().map(|t| (t.id.clone(), t)).collect(),
            nodes: nodes.into_iter().map(|n| (n.node.clone(), n)).collect(),
            gone: Default::default(),
            sessions: HashMap::new(),
            session_order: Default::default(),
        };
        Auth { tables: Mutex::new(tables), revocations: watch::channel(0).0 }
    }

    /// Takes the tokens and node credentials the store holds, after the event loop
    /// reloaded its state (a change the store refused is undone here too: a token
    /// it made, or one it revoked). Only `live` nodes keep speaking. Streams whose
    /// token is gone end, as on a revocation; sign-ins of such tokens stop working.
    pub fn reload(&self, tokens: Vec<TokenRecord>, nodes: Vec<NodeCredential>, live: impl Fn(&NodeId) -> bool) {
        {
            let mut tables = self.tables();
            tables.tokens = tokens.into_iter().map(|t| (t.id.clone(), t)).collect();
            tables.nodes = nodes.into_iter().filter(|n| live(&n.node)).map(|n| (n.node.clone(), n)).collect();
        }
        self.revocations.send_modify(|n| *n += 1);
    }

    fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Checks an `authorization` header value (`Bearer ID.SECRET`).
    pub fn authenticate(&self, header: Option<&[u8]>, now_ms: u64) -> Result<Principal, Denied> {
        let header = header.ok_or_else(|| unauthenticated(NO_TOKEN))?;
        let bearer = std::str::from_utf8(header)
            .ok()
            .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or_else(|| unauthenticated("the authorization header must be `Bearer TOKEN`"))?;
        self.check_bearer(bearer, now_ms)
    }

    /// Checks a bare bearer string (`ID.SECRET`).
    pub fn check_bearer(&self, bearer: &str, now_ms: u64) -> Result<Principal, Denied> {
        if bearer.is_empty() {
            return Err(unauthenticated(NO_TOKEN));
        }
        let (id, secret) = bearer.split_once('.').ok_or_else(|| unauthenticated(BAD_TOKEN))?;
        let tables = self.tables();
        let principal = if id.starts_with("n-") {
            let node_id = NodeId(id.to_string());
            if tables.gone.contains(&node_id) {
                return Err(unauthenticated(format!(
                    "node {node_id} was declared lost or removed, and its secret no longer counts: register again"
                )));
            }
            let node = tables.nodes.get(&node_id).ok_or_else(|| unauthenticated(BAD_TOKEN))?;
            if !secret::matches(secret, &node.hash) {
                return Err(unauthenticated(BAD_TOKEN));
            }
            Principal::Node { node: node.node.clone(), pool: node.pool.clone(), token_id: node.token_id.clone() }
        } else {
            let token = tables.tokens.get(id).ok_or_else(|| unauthenticated(BAD_TOKEN))?;
            if !secret::matches(secret, &token.hash) {
                return Err(unauthenticated(BAD_TOKEN));
            }
            principal_of(token)
        };
        if valid(&tables, &principal, now_ms) {
            Ok(principal)
        } else {
            Err(unauthenticated(BAD_TOKEN))
        }
    }

    /// Whether a principal authenticated earlier may still act (its token, or the
    /// token its node registered with, is neither revoked nor expired).
    pub fn still_valid(&self, who: &Principal, now_ms: u64) -> bool {
        valid(&self.tables(), who, now_ms)
    }

    /// Accepts a token from now on (called once it is durable, or just before).
    pub fn insert_token(&self, token: TokenRecord) {
        let mut tables = self.tables();
        tables.tokens.retain(|_, t| t.name != token.name);
        tables.tokens.insert(token.id.clone(), token);
    }

    /// Stops accepting the token named `name`, and every node credential under it;
    /// open streams that use them end. Returns what was revoked.
    pub fn revoke(&self, name: &str) -> Option<TokenRecord> {
        let revoked = {
            let mut tables = self.tables();
            let id = tables.tokens.values().find(|t| t.name == name)?.id.clone();
            let token = tables.tokens.remove(&id)?;
            tables.nodes.retain(|_, n| n.token_id != id);
            token
        };
        self.revocations.send_modify(|n| *n += 1);
        Some(revoked)
    }

    pub fn token_named(&self, name: &str) -> Option<TokenRecord> {
        self.tables().tokens.values().find(|t| t.name == name).cloned()
    }

    /// Every token, by name.
    pub fn tokens(&self) -> Vec<TokenRecord> {
        let mut all: Vec<TokenRecord> = self.tables().tokens.values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Accepts a node's secret from now on.
    pub fn insert_node(&self, cred: NodeCredential) {
        self.tables().nodes.insert(cred.node.clone(), cred);
    }

    /// A dashboard sign-in for `who`: the cookie value, random, standing for the
    /// token without being it (so a cookie that leaks is no bearer token). It lives
    /// while the token does, or until sign-out; once the caller has stored it, it
    /// outlives a restart and a failover.
    pub fn open_session(&self, who: &Principal, now_ms: u64) -> Opened {
        let sid = secret::random_hex(32);
        let key = secret::hex(&secret::hash(&sid));
        let token_id = who.token_id().to_string();
        let evicted = self.tables().keep_session(key.clone(), who.clone());
        Opened { sid, record: SessionRecord { key, token_id, at_ms: now_ms }, evicted }
    }

    /// Takes the sign-ins the store holds (oldest first), at start: those whose
    /// token is gone count for nothing.
    pub fn restore_sessions(&self, stored: Vec<SessionRecord>) {
        let mut tables = self.tables();
        for s in stored {
            if let Some(who) = tables.tokens.get(&s.token_id).map(principal_of) {
                tables.keep_session(s.key, who);
            }
        }
    }

    /// The principal a session cookie stands for, if its token still counts.
    pub fn session(&self, sid: &str, now_ms: u64) -> Result<Principal, Denied> {
        let key = secret::hex(&secret::hash(sid));
        let tables = self.tables();
        match tables.sessions.get(&key) {
            Some(who) if valid(&tables, who, now_ms) => Ok(who.clone()),
            _ => Err(unauthenticated("signed out: sign in again (the session ended, or its token was revoked)")),
        }
    }

    /// Ends a sign-in; returns its key, to delete from the store.
    pub fn close_session(&self, sid: &str) -> String {
        let key = secret::hex(&secret::hash(sid));
        let mut tables = self.tables();
        tables.sessions.remove(&key);
        tables.session_order.retain(|k| *k != key);
        key
    }

    /// Stops accepting a node's secret (the node is lost or removed); says whether
    /// it had one. Its open stream is left to the core, which tells it to stop or
    /// register again.
    pub fn forget_node(&self, node: &NodeId) -> bool {
        let mut tables = self.tables();
        let had = tables.nodes.remove(node).is_some();
        if had {
            tables.gone.insert(node.clone());
        }
        had
    }

    /// Resolves once `who` may no longer act: its token was revoked or expired.
    pub async fn ended(self: &Arc<Self>, who: &Principal) {
        let mut revocations = self.revocations.subscribe();
        let expiry = match who {
            Principal::Token { expires_at_ms: Some(at), .. } => Some(*at),
            Principal::Node { token_id, .. } => self.tables().tokens.get(token_id).and_then(|t| t.expires_at_ms),
            _ => None,
        };
        let expired = async {
            match expiry {
                Some(at) => tokio::time::sleep(Duration::from_millis(at.saturating_sub(now_ms()))).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(expired);
        loop {
            if !self.still_valid(who, now_ms()) {
                return;
            }
            tokio::select! {
                changed = revocations.changed() => if changed.is_err() { return },
                _ = &mut expired => return,
            }
        }
    }

    /// Passes `inner` through until `who` may no longer act, then ends the stream
    /// with UNAUTHENTICATED.
    pub fn guard<T: Send + 'static>(
        self: &Arc<Self>,
        who: Principal,
        inner: impl tokio_stream::Stream<Item = Result<T, Status>> + Send + 'static,
    ) -> tokio_stream::wrappers::ReceiverStream<Result<T, Status>> {
        use tokio_stream::StreamExt;
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let auth = self.clone();
        tokio::spawn(async move {
            tokio::pin!(inner);
            let ended = auth.ended(&who);
            tokio::pin!(ended);
            loop {
                tokio::select! {
                    item = inner.next() => match item {
                        Some(item) => if tx.send(item).await.is_err() { return },
                        None => return,
                    },
                    _ = &mut ended => {
                        let _ = tx.send(Err(Status::unauthenticated(BAD_TOKEN))).await;
                        return;
                    }
                    _ = tx.closed() => return,
                }
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }
}

fn valid(tables: &Tables, who: &Principal, now_ms: u64) -> bool {
    if let Principal::Node { node, .. } = who {
        if !tables.nodes.contains_key(node) {
            return false;
        }
    }
    match tables.tokens.get(who.token_id()) {
        Some(token) => token.expires_at_ms.is_none_or(|at| now_ms < at),
        None => false,
    }
}

/// Why a caller was not let in, in the words it reads. The gate decides it for
/// both edges; each maps it to its own status (gRPC UNAUTHENTICATED or
/// PERMISSION_DENIED, HTTP 401 or 403).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// No token, a bad one, or one that no longer counts.
    #[error("{0}")]
    Unauthenticated(String),
    /// A token that may not do this.
    #[error("{0}")]
    Forbidden(String),
}

impl From<Denied> for Status {
    fn from(denied: Denied) -> Self {
        match denied {
            Denied::Unauthenticated(why) => Status::unauthenticated(why),
            Denied::Forbidden(why) => Status::permission_denied(why),
        }
    }
}

fn unauthenticated(why: impl Into<String>) -> Denied {
    Denied::Unauthenticated(why.into())
}

/// The caller of a request, as the [`layer`] found it.
pub fn caller<T>(req: &tonic::Request<T>) -> Result<Principal, Status> {
    req.extensions().get::<Principal>().cloned().ok_or_else(|| Status::unauthenticated(NO_TOKEN))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(name: &str, role: Role, expires_at_ms: Option<u64>) -> (TokenRecord, String) {
        let minted = secret::Minted::new();
        let record = TokenRecord {
            id: minted.id.clone(),
            name: name.into(),
            role,
            pool: None,
            hash: minted.hash,
            created_at_ms: 0,
            expires_at_ms,
            created_by: "test".into(),
        };
        (record, minted.bearer())
    }

    #[test]
    fn a_token_is_accepted_until_it_expires_or_is_revoked() {
        let (record, bearer) = token("ci", Role::Submit, Some(1_000));
        let auth = Auth::new(vec![record], vec![]);
        let who = auth.check_bearer(&bearer, 999).unwrap();
        assert_eq!(who.name(), "ci");
        assert!(matches!(auth.check_bearer(&bearer, 1_000).unwrap_err(), Denied::Unauthenticated(_)));
        let header = format!("Bearer {bearer}");
        assert!(auth.authenticate(Some(header.as_bytes()), 10).is_ok());
        assert!(auth.revoke("ci").is_some());
        assert!(!auth.still_valid(&who, 10));
        assert_eq!(auth.authenticate(Some(header.as_bytes()), 10).unwrap_err().to_string(), BAD_TOKEN);
    }

    #[test]
    fn wrong_secrets_and_shapes_are_refused_without_saying_which_part() {
        let (record, bearer) = token("ci", Role::Read, None);
        let id = record.id.clone();
        let auth = Auth::new(vec![record], vec![]);
        for bad in [format!("{id}.00"), format!("{id}."), "nodot".into(), format!("x{bearer}"), "n-1.abc".into()] {
            let e = auth.check_bearer(&bad, 0).unwrap_err();
            assert_eq!(e, Denied::Unauthenticated(BAD_TOKEN.into()), "{bad}");
        }
        assert_eq!(auth.authenticate(None, 0).unwrap_err().to_string(), NO_TOKEN);
        assert!(auth.authenticate(Some(b"Basic abc"), 0).is_err());
    }

    #[test]
    fn a_node_secret_dies_with_the_token_it_registered_with() {
        let (record, _) = token("agents", Role::Agent, None);
        let token_id = record.id.clone();
        let minted = secret::Minted::new();
        let node = NodeId("n-7".into());
        let cred = NodeCredential {
            node: node.clone(),
            pool: PoolName::parse("pool", "cpu").unwrap(),
            hash: minted.hash,
            token_id,
        };
        let auth = Auth::new(vec![record], vec![cred]);
        let bearer = format!("n-7.{}", minted.secret);
        let who = auth.check_bearer(&bearer, 0).unwrap();
        assert!(matches!(&who, Principal::Node { node: n, .. } if *n == node));
        assert!(auth.check_bearer(&format!("n-8.{}", minted.secret), 0).is_err(), "another node's id");
        auth.revoke("agents");
        assert!(auth.check_bearer(&bearer, 0).is_err());
    }

    #[test]
    fn a_session_stands_for_its_token_until_revoked_or_closed() {
        let (record, _) = token("viewer", Role::Read, None);
        let auth = Auth::new(vec![record], vec![]);
        let who = Principal::Token {
            id: auth.tokens()[0].id.clone(),
            name: "viewer".into(),
            role: Role::Read,
            pool: None,
            expires_at_ms: None,
        };
        let opened = auth.open_session(&who, 7);
        let sid = opened.sid.clone();
        assert_eq!(auth.session(&sid, 0).unwrap(), who);
        assert!(auth.check_bearer(&sid, 0).is_err(), "a session id is no bearer token");
        assert_ne!(opened.record.key, sid, "the stored key is not the cookie");
        assert_eq!((opened.record.token_id.as_str(), opened.record.at_ms), (who.token_id(), 7));
        let other = auth.open_session(&who, 8).sid;
        assert_eq!(auth.close_session(&other), secret::hex(&secret::hash(&other)));
        assert!(auth.session(&other, 0).is_err());
        // One token signing in again and again keeps only its newest sessions, and
        // says which went.
        let many: Vec<Opened> = (0..40).map(|i| auth.open_session(&who, 10 + i)).collect();
        assert!(auth.session(&many[0].sid, 0).is_err() && auth.session(&many[39].sid, 0).is_ok());
        assert!(auth.session(&many[40 - MAX_SESSIONS_PER_TOKEN].sid, 0).is_ok());
        let evicted: usize = many.iter().map(|o| o.evicted.len()).sum();
        assert_eq!(evicted, 41 - MAX_SESSIONS_PER_TOKEN, "sid and 40 more, of which MAX stay");
        assert_eq!(many[39].evicted, vec![many[39 - MAX_SESSIONS_PER_TOKEN].record.key.clone()]);
        // Restored (as at a start), the stored sign-ins of a live token count again.
        let restarted = Auth::new(auth.tokens(), vec![]);
        restarted.restore_sessions(vec![
            many[39].record.clone(),
            SessionRecord { token_id: "gone".into(), ..many[38].record.clone() },
        ]);
        assert_eq!(restarted.session(&many[39].sid, 0).unwrap(), who);
        assert!(restarted.session(&many[38].sid, 0).is_err(), "its token is gone");
        auth.revoke("viewer");
        assert!(auth.session(&many[39].sid, 0).is_err());
    }

    #[test]
    fn a_forgotten_node_is_told_to_register_again() {
        let (record, _) = token("agents", Role::Agent, None);
        let minted = secret::Minted::new();
        let cred = NodeCredential {
            node: NodeId("n-3".into()),
            pool: PoolName::parse("pool", "cpu").unwrap(),
            hash: minted.hash,
            token_id: record.id.clone(),
        };
        let auth = Auth::new(vec![record], vec![cred]);
        let who = auth.check_bearer(&format!("n-3.{}", minted.secret), 0).unwrap();
        auth.forget_node(&NodeId("n-3".into()));
        assert!(!auth.still_valid(&who, 0));
        let e = auth.check_bearer(&format!("n-3.{}", minted.secret), 0).unwrap_err();
        assert!(e.to_string().contains("register again"), "{e}");
    }
}
