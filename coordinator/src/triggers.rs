//! The polling side of triggers: every [`TICK`], the core names the polling
//! triggers whose time has come ([`Core::due_polls`](crate::core::Core::due_polls));
//! each one's prefix is listed in the object store and the listing handed back
//! ([`Core::on_poll`](crate::core::Core::on_poll)), which dispatches each new
//! object version once and moves the trigger's cursor in the same batch.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use object_store::ObjectStore;
use tokio::sync::watch;

use crate::core::triggers::Listed;
use crate::shared::Shared;

/// How often the core is asked which triggers are due.
const TICK: Duration = Duration::from_millis(500);
/// The longest one listing may take: a store that hangs holds up no other trigger
/// for longer.
const LIST_TIMEOUT: Duration = Duration::from_secs(60);
/// The most objects one poll lists; a larger prefix is reported, not half-read
/// (half a listing would look like deleted objects, and they would fire again).
pub const MAX_LISTED: usize = 100_000;

/// Runs until `stop` turns true.
pub async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let Ok(due) = shared.runtime.call(|core, now, _| core.due_polls(now)).await else { continue };
        for (name, prefix) in due {
            let listed = match tokio::time::timeout(LIST_TIMEOUT, list(shared.objects.clone(), &prefix)).await {
                Ok(listed) => listed,
                Err(_) => Err(format!("listing '{prefix}' took longer than {}s", LIST_TIMEOUT.as_secs())),
            };
            if let Err(why) = &listed {
                tracing::warn!(trigger = %name, error = %why, "a polling trigger could not list its prefix");
            }
            let handed = shared.runtime.call(move |core, now, out| core.on_poll(now, &name, listed, out)).await;
            if let Err(e) = handed {
                tracing::warn!(error = %e, "a poll's dispatches could not be saved; the next poll tries again");
            }
        }
    }
}

/// Every object under `prefix`, with a version that changes when it is written
/// again (its modification time and ETag).
async fn list(store: Arc<dyn ObjectStore>, prefix: &str) -> Result<Vec<Listed>, String> {
    // The store lists folders: the prefix's folder, filtered by the core.
    let folder = prefix.rsplit_once('/').map_or("", |(folder, _)| folder);
    let path = object_store::path::Path::parse(folder).map_err(|e| e.to_string())?;
    let mut listing = store.list((!folder.is_empty()).then_some(&path));
    let mut listed = Vec::new();
    while let Some(meta) = listing.next().await {
        let meta = meta.map_err(|e| {
            // The store's own words may name where it keeps objects: they go to the log.
            tracing::warn!(prefix, error = %e, "a polling trigger's listing failed");
            format!("listing '{prefix}' failed (the coordinator's log says why)")
        })?;
        if listed.len() == MAX_LISTED {
            return Err(format!("'{prefix}' holds more than {MAX_LISTED} objects; give the trigger a narrower prefix"));
        }
        let modified_ms = meta.last_modified.timestamp_millis().max(0) as u64;
        listed.push(Listed {
            path: meta.location.to_string(),
            version: format!("{modified_ms}:{}", meta.e_tag.unwrap_or_default()),
            modified_ms,
        });
    }
    Ok(listed)
}
