//! The leader's lease: one row of `corral_lease` (holder, advertised address,
//! epoch, expiry by the database's clock). Any number of coordinators may start on
//! one database; the one that takes the lease (epoch + 1) leads, the others wait as
//! standbys until it expires. The leader renews it about three times a lease, on a
//! session of its own; every commit of its writer checks, in the same transaction,
//! that the epoch is still its own (`corral_count_commit`), so a leader whose lease
//! was taken (paused, cut off, slow) commits nothing more, and taking the lease waits
//! for a commit that is checking it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{PgConn, Role, Target};
use crate::error::Result;
use crate::store::sql::{SqlExt, Value};

/// How a coordinator holds the lease.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long the lease lasts unless renewed (`--lease`).
    pub length: Duration,
    /// Who this is, for the others' messages (`corral-coordinator PID N on HOST`).
    pub holder: String,
    /// Wait for a database that cannot be reached, as for the lease (a coordinator
    /// that led and stands by); else such a database is refused at once (a start).
    pub patient: bool,
    /// Where clients and agents reach this coordinator when it leads (`--advertise`).
    pub advertise: Option<String>,
    /// Where its dashboard is then (`--advertise-http`).
    pub advertise_http: Option<String>,
    /// Set to stop waiting (the coordinator is stopping while it stands by).
    pub cancelled: Arc<std::sync::atomic::AtomicBool>,
}

/// Who holds the lease, as a standby sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Holder {
    pub holder: Option<String>,
    pub advertise: Option<String>,
    pub advertise_http: Option<String>,
    pub epoch: u64,
    /// How long until it expires, unless renewed (zero: expired).
    pub expires_in: Duration,
}

/// The lease, held: renewed by a thread of its own until dropped (then given up,
/// so that a standby takes over at once) or lost (`lost` says why).
pub struct Lease {
    epoch: u64,
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    lost: watch::Receiver<Option<String>>,
    peers: watch::Receiver<Vec<String>>,
}

const TAKE: &str = "UPDATE corral_lease SET holder = ?1, advertise = ?2, advertise_http = ?4, epoch = epoch + 1, expires_at = clock_timestamp() + ?3 * interval '1 millisecond' WHERE one = 1 AND (expires_at IS NULL OR expires_at < clock_timestamp()) RETURNING epoch";
const RENEW: &str = "UPDATE corral_lease SET expires_at = clock_timestamp() + ?2 * interval '1 millisecond' WHERE one = 1 AND epoch = ?1 RETURNING epoch";
const GIVE_UP: &str = "UPDATE corral_lease SET expires_at = clock_timestamp() - interval '1 millisecond' WHERE one = 1 AND epoch = ?1 RETURNING epoch";
/// Says where this coordinator is reached, as it polls or renews the lease.
const SEEN: &str = "INSERT INTO corral_coordinators (holder, advertise, seen_at) VALUES (?1, ?2, clock_timestamp()) ON CONFLICT (holder) DO UPDATE SET advertise = excluded.advertise, seen_at = excluded.seen_at";
/// Every coordinator seen within three leases (?1 ms), and those gone for longer
/// forgotten.
const PEERS: &str = "SELECT DISTINCT advertise FROM corral_coordinators WHERE seen_at > clock_timestamp() - 3 * ?1 * interval '1 millisecond' ORDER BY advertise";
const FORGET: &str =
    "DELETE FROM corral_coordinators WHERE seen_at < clock_timestamp() - 100 * ?1 * interval '1 millisecond'";
const READ: &str = "SELECT holder, advertise, advertise_http, epoch, GREATEST(0, (EXTRACT(EPOCH FROM (expires_at - clock_timestamp())) * 1000)::bigint) FROM corral_lease WHERE one = 1";

impl Lease {
    /// Takes the lease, waiting as a standby while another coordinator holds it
    /// (`standby` hears who, whenever that changes). The database is brought to
    /// this build's schema first.
    pub fn take(target: Arc<Target>, settings: &Settings, mut standby: impl FnMut(&Holder)) -> Result<Lease> {
        let cancelled = || {
            settings
                .cancelled
                .load(std::sync::atomic::Ordering::Relaxed)
                .then(|| crate::error::Error::refused("stopped while standing by"))
        };
        let mut conn = loop {
            if let Some(stopped) = cancelled() {
                return Err(stopped);
            }
            let opened = PgConn::open(target.clone(), Role::Reader).and_then(|mut conn| conn.migrate().map(|()| conn));
            match opened {
                Ok(conn) => break conn,
                Err(e)
                    if settings.patient
                        && !matches!(e, crate::error::Error::Core(crate::error::Refusal::Refused(_))) =>
                {
                    tracing::warn!(error = %e, "standby: cannot reach the database; trying again");
                    std::thread::sleep(settings.length / 3);
                }
                Err(e) => return Err(e),
            }
        };
        let mut seen: Option<(Option<String>, u64)> = None;
        let epoch = loop {
            if let Some(stopped) = cancelled() {
                return Err(stopped);
            }
            let mut wait = settings.length / 3;
            record(&mut conn, settings);
            match try_take(&mut conn, settings) {
                Ok(Some(epoch)) => break epoch,
                Ok(None) => {
                    if let Ok(holder) = read(&mut conn) {
                        let now = (holder.holder.clone(), holder.epoch);
                        if seen.as_ref() != Some(&now) {
                            standby(&holder);
                            seen = Some(now);
                        }
                        // Tried again the moment it runs out, unless renewed.
                        if !holder.expires_in.is_zero() {
                            wait = wait.min(holder.expires_in + Duration::from_millis(5));
                        }
                    }
                }
                // The database is away: a standby waits for it like for the lease.
                Err(e) => tracing::warn!(error = %e, "standby: cannot read the lease; trying again"),
            }
            std::thread::sleep(wait);
        };
        let (lost_tx, lost) = watch::channel(None);
        record(&mut conn, settings);
        let known = read_peers(&mut conn, settings).unwrap_or_default();
        tracing::info!(coordinators = ?known, "the coordinators on this database");
        let (peers_tx, peers) = watch::channel(known);
        let (stop, stopped) = std::sync::mpsc::channel();
        let kept = settings.clone();
        let thread = std::thread::Builder::new()
            .name("corral-lease".into())
            .spawn(move || keep(conn, epoch, &kept, stopped, lost_tx, peers_tx))
            .map_err(|e| crate::store::StoreError::Unavailable(format!("cannot start the lease's thread: {e}")))?;
        Ok(Lease { epoch, stop: Some(stop), thread: Some(thread), lost, peers })
    }

    /// The epoch this coordinator leads in.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Says why, once the lease is lost (taken by another, or not renewed for a
    /// whole lease).
    pub fn lost(&self) -> watch::Receiver<Option<String>> {
        self.lost.clone()
    }

    /// Where every coordinator on the database is reached (this one included), as
    /// of the last renewal.
    pub fn peers(&self) -> watch::Receiver<Vec<String>> {
        self.peers.clone()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // The thread gives the lease up as it ends.
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn millis(d: Duration) -> Value<'static> {
    Value::Int(d.as_millis().min(i64::MAX as u128) as i64)
}

fn try_take(conn: &mut PgConn, settings: &Settings) -> Result<Option<u64>> {
    let args = [
        Value::Text(settings.holder.clone().into()),
        settings.advertise.clone().map_or(Value::Null, |a| Value::Text(a.into())),
        millis(settings.length),
        settings.advertise_http.clone().map_or(Value::Null, |a| Value::Text(a.into())),
    ];
    conn.first(TAKE, args, |r| r.get::<u64>(0))
}

fn read(conn: &mut PgConn) -> Result<Holder> {
    let row = conn.first(READ, [] as [Value; 0], |r| {
        Ok(Holder {
            holder: r.get(0)?,
            advertise: r.get(1)?,
            advertise_http: r.get(2)?,
            epoch: r.get(3)?,
            expires_in: Duration::from_millis(r.get::<Option<u64>>(4)?.unwrap_or(0)),
        })
    })?;
    row.ok_or_else(|| crate::store::StoreError::Corrupt("corral_lease has no row".into()).into())
}

/// Renews the lease about three times a lease until told to stop (then gives it
/// up) or it is lost: taken by another coordinator, or not renewed for a whole
/// lease (the database away, or this process paused), after which a standby may
/// have it.
fn keep(
    mut conn: PgConn,
    epoch: u64,
    settings: &Settings,
    stop: std::sync::mpsc::Receiver<()>,
    lost: watch::Sender<Option<String>>,
    peers: watch::Sender<Vec<String>>,
) {
    let length = settings.length;
    let epoch_arg = Value::Int(epoch as i64);
    // The lease runs until at least `length` after the last renewal was sent.
    let mut valid_until = Instant::now() + length;
    loop {
        match stop.recv_timeout(length / 3) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            _ => {
                let _ = conn.first(GIVE_UP, [epoch_arg.clone()], |r| r.get::<u64>(0));
                return;
            }
        }
        let sent = Instant::now();
        match conn.first(RENEW, [epoch_arg.clone(), millis(length)], |r| r.get::<u64>(0)) {
            // Still this epoch: nobody took it meanwhile (taking makes a new one),
            // even if it had run out.
            Ok(Some(_)) => {
                valid_until = sent + length;
                record(&mut conn, settings);
                // A list that could not be read leaves the last one.
                if let Some(now) = read_peers(&mut conn, settings) {
                    peers.send_if_modified(|known| {
                        now != *known && {
                            tracing::info!(coordinators = ?now, "the coordinators on this database");
                            *known = now;
                            true
                        }
                    });
                }
            }
            Ok(None) => {
                let _ = lost.send(Some(format!("another coordinator took the lease (this one held epoch {epoch})")));
                return;
            }
            Err(e) if Instant::now() >= valid_until => {
                let _ = lost.send(Some(format!("could not renew the lease (epoch {epoch}) for {length:?}: {e}")));
                return;
            }
            Err(e) => tracing::warn!(error = %e, "could not renew the lease; trying again"),
        }
    }
}

/// The id of the object store that the coordinators on this database share: the
/// one a coordinator stored before, or `candidate` if none did (this is the first).
/// The caller wrote `candidate`'s marker object first, so that the stored id's
/// marker is in the shared store before any other coordinator looks for it.
pub fn shared_objects(target: Arc<Target>, candidate: &str) -> Result<String> {
    let mut conn = PgConn::open(target, Role::Reader)?;
    conn.migrate()?;
    let stored = conn.first(
        "INSERT INTO corral_objects (one, id) VALUES (1, ?1) ON CONFLICT (one) DO UPDATE SET id = corral_objects.id RETURNING id",
        [Value::Text(candidate.into())],
        |r| r.get::<String>(0),
    )?;
    stored.ok_or_else(|| crate::store::StoreError::Corrupt("corral_objects has no row".into()).into())
}

/// The keys every coordinator on this database uses (the one that signs callbacks,
/// so that a receiver checks them whichever leads...), in one session: for each
/// `(name, candidate)`, the value stored, or the candidate (this coordinator's own)
/// if none was.
pub fn shared_keys<const N: usize>(target: Arc<Target>, wanted: [(&str, String); N]) -> Result<[String; N]> {
    let mut conn = PgConn::open(target, Role::Reader)?;
    let mut values: [String; N] = std::array::from_fn(|_| String::new());
    for (value, (name, candidate)) in values.iter_mut().zip(wanted) {
        let stored = conn.first(
            "INSERT INTO corral_keys (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET value = corral_keys.value RETURNING value",
            [Value::Text(name.into()), Value::Text(candidate.into())],
            |r| r.get::<String>(0),
        )?;
        *value = stored.ok_or_else(|| crate::store::StoreError::Corrupt(format!("corral_keys has no key {name}")))?;
    }
    Ok(values)
}

/// Records where this coordinator is reached (a failure is not worth more than a
/// log line: the next poll records it).
fn record(conn: &mut PgConn, settings: &Settings) {
    let Some(advertise) = &settings.advertise else { return };
    let args = [Value::Text(settings.holder.as_str().into()), Value::Text(advertise.as_str().into())];
    if let Err(e) = conn.first(SEEN, args, |_| Ok(())) {
        tracing::debug!(error = %e, "could not record this coordinator among the database's");
    }
}

/// Every coordinator seen lately (see [`PEERS`]), or none if they cannot be read;
/// those long gone are forgotten.
fn read_peers(conn: &mut PgConn, settings: &Settings) -> Option<Vec<String>> {
    let _ = conn.first(FORGET, [millis(settings.length)], |_| Ok(()));
    match conn.rows(PEERS, [millis(settings.length)], |r| r.get::<String>(0)) {
        Ok(peers) => Some(peers),
        Err(e) => {
            tracing::debug!(error = %e, "could not read the coordinators on this database");
            None
        }
    }
}
