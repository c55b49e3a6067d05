//! What the coordinators of one PostgreSQL database agree on before one serves:
//! the lease (or standing by for it), one object store, and the keys they share
//! (this coordinator's own on SQLite).

use super::*;

/// Takes the lease of the PostgreSQL store, waiting as a standby while another
/// coordinator leads (`leader` says which, for the standby's servers).
pub(super) async fn take_lease(
    target: Arc<crate::store::postgres::Target>,
    config: &Config,
    advertised: &crate::standby::Leader,
    leader: watch::Sender<Option<crate::standby::Leader>>,
) -> Result<crate::store::postgres::lease::Lease> {
    use crate::store::postgres::lease::{Lease, Settings};
    let settings = Settings {
        length: config.lease,
        holder: crate::store::lock::holder(Some(&crate::store::lock::hostname())),
        advertise: advertised.grpc.clone(),
        advertise_http: advertised.http.clone(),
        patient: config.rejoin,
        cancelled: Default::default(),
    };
    // Dropped while it stands by (the coordinator is stopping): it stops waiting.
    struct Cancel(Arc<std::sync::atomic::AtomicBool>);
    impl Drop for Cancel {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    let _cancel = Cancel(settings.cancelled.clone());
    tokio::task::spawn_blocking(move || {
        Lease::take(target, &settings, |holder| {
            tracing::info!(
                leader = holder.holder.as_deref().unwrap_or("nobody"),
                advertise = holder.advertise.as_deref().unwrap_or("-"),
                epoch = holder.epoch,
                expires_in = ?holder.expires_in,
                "standby: another coordinator holds the lease; this one takes over when it expires"
            );
            let now = crate::standby::Leader { grpc: holder.advertise.clone(), http: holder.advertise_http.clone() };
            leader.send_replace(holder.holder.is_some().then_some(now));
        })
    })
    .await
    .map_err(|e| crate::Error::refused(format!("waiting for the lease: {e}")))?
}

/// Refuses an object store the other coordinators on this PostgreSQL database do
/// not share (each one's own `DATA_DIR/objects`, say): a task's outputs written
/// under one leader would be missing under the next. The first coordinator marks
/// its store with an id it records in the database; every other one must find
/// that mark in its own store.
pub(super) async fn check_objects_shared(
    target: Arc<crate::store::postgres::Target>,
    objects: &Arc<dyn object_store::ObjectStore>,
    config: &Config,
) -> Result<()> {
    use object_store::ObjectStoreExt;
    let mark = |id: &str| object_store::path::Path::from(corral_types::paths::store_mark(id));
    let candidate = auth::secret::random_hex(16);
    let unusable = |e: object_store::Error| crate::Error::refused(format!("cannot write to the object store: {e}"));
    objects.put(&mark(&candidate), candidate.clone().into_bytes().into()).await.map_err(unusable)?;
    let mine = candidate.clone();
    let shared = tokio::task::spawn_blocking(move || crate::store::postgres::lease::shared_objects(target, &mine))
        .await
        .map_err(|e| crate::Error::refused(format!("checking the object store: {e}")))??;
    if shared == candidate {
        return Ok(());
    }
    let _ = objects.delete(&mark(&candidate)).await;
    match objects.head(&mark(&shared)).await {
        Ok(_) => Ok(()),
        Err(object_store::Error::NotFound { .. }) => {
            let yours = match &config.store_url {
                Some(url) => format!("--store-url {url}"),
                None => format!("{} (the data dir's own)", config.data_dir.join("objects").display()),
            };
            Err(crate::Error::refused(format!(
                "the object store {yours} is not the one the other coordinators on this database use (it lacks their mark {}): every coordinator on one database must share one store, so give each the same --store-url (s3://..., az://..., or file:///PATH on a shared filesystem)",
                corral_types::paths::store_mark(&shared)
            )))
        }
        Err(e) => Err(unusable(e)),
    }
}

/// The keys every coordinator on one database must share, this one's own on SQLite.
pub(super) struct SharedKeys {
    /// Signs callbacks, so a receiver checks them whichever coordinator leads.
    pub(super) notify: String,
    /// What provider pools' agent tokens are derived from.
    pub(super) pool: auth::bootstrap::PoolKey,
    /// Names the containers docker pools start (see [`own_instance_id`]); on
    /// PostgreSQL written to `DATA_DIR/instance` too, so a new leader finds,
    /// removes and sweeps the containers its predecessor started.
    pub(super) instance: String,
}

impl SharedKeys {
    /// This coordinator's own keys, or on PostgreSQL the first ones stored (read in
    /// one session, on the way to serving after a takeover).
    pub(super) async fn read(config: &Config) -> crate::Result<SharedKeys> {
        let mine = [
            ("notify", auth::bootstrap::notify_secret(&config.data_dir)?),
            ("pool-tokens", auth::bootstrap::pool_key_file(&config.data_dir)?),
            ("instance", own_instance_id(&config.data_dir)?),
        ];
        let own_instance = mine[2].1.clone();
        let keys = match &config.store {
            crate::store::StoreKind::Sqlite => mine.map(|(_, value)| value),
            crate::store::StoreKind::Postgres(target) => {
                let target = target.clone();
                tokio::task::spawn_blocking(move || crate::store::postgres::lease::shared_keys(target, mine))
                    .await
                    .map_err(|e| crate::Error::refused(format!("reading the shared keys: {e}")))??
            }
        };
        let [notify, pool, instance] = keys;
        if instance != own_instance {
            std::fs::write(config.data_dir.join("instance"), &instance)?;
        }
        Ok(SharedKeys { notify, pool: auth::bootstrap::PoolKey::new(pool), instance })
    }
}

fn own_instance_id(data_dir: &std::path::Path) -> std::io::Result<String> {
    let path = data_dir.join("instance");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    // Unique enough among the coordinators sharing an engine: FNV-1a of where this
    // one keeps its data, when and as which process it first started.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
    let seed = format!("{}:{now}:{}", data_dir.display(), std::process::id());
    let hash = seed.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    let id = format!("{:08x}", hash as u32);
    std::fs::write(&path, &id)?;
    Ok(id)
}
