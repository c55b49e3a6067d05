//! What the gRPC and HTTP handlers share: the way into the event loop, the store's
//! read connection, the object store, metrics, tokens and settings. The composition
//! root ([`crate::start`]) builds one and hands it to every edge.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::auth::Auth;
use crate::core::CoreConfig;
use crate::metrics::Metrics;
use crate::runtime::Handle;
use crate::store::History;

/// What the gRPC and HTTP handlers share.
pub struct Shared {
    /// The way into the event loop.
    pub runtime: Handle,
    pub reader: Mutex<Box<dyn History>>,
    pub core_config: CoreConfig,
    /// The object store, to measure map/reduce inputs.
    pub objects: Arc<dyn object_store::ObjectStore>,
    /// The id of the newest durable event; it changes after each commit that
    /// recorded some.
    pub last_event: watch::Receiver<u64>,
    pub metrics: Arc<Metrics>,
    /// The tokens and node secrets the coordinator accepts.
    pub auth: Arc<Auth>,
    pub data_dir: PathBuf,
    /// What provider pools' agent tokens are derived from.
    pub pool_key: crate::auth::bootstrap::PoolKey,
    pub http_access: crate::http::auth::HttpAccess,
    /// How callbacks are posted: what submissions are checked against, and the
    /// secret admins may read.
    pub notify: crate::notify::Settings,
    /// Why the store cannot write now (a full disk), while it cannot.
    pub store_failing: watch::Receiver<Option<String>>,
    /// The lease's epoch this coordinator leads in (0 on SQLite): agents hear it on
    /// every message, and obey nothing from an older one.
    pub epoch: u64,
    /// Where every coordinator on the database is reached (PostgreSQL; empty on
    /// SQLite), told to agents when they register.
    pub peers: watch::Receiver<Vec<String>>,
}

impl Shared {
    /// The store's read connection. Hold it only for one query, never across an
    /// `.await`.
    pub fn reader(&self) -> std::sync::MutexGuard<'_, Box<dyn History>> {
        self.reader.lock().unwrap_or_else(|e| e.into_inner())
    }
}
