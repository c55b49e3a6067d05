//! Reading the event feed as a stream, for `WatchEvents` and the dashboard's
//! server-sent events.
//!
//! A reader catches up from the store in pages, then (when following) sleeps until
//! the writer says a commit recorded newer events. Events are read only after they
//! are durable, so nothing a reader sees can be taken back by a crash.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::error::{Error, Invalid, Result};
use crate::events::{Event, Filter};
use crate::shared::Shared;

/// Events read from the store at a time.
const PAGE: usize = 1000;

/// Checks that the events after `after` are all still kept, so that resuming from
/// it misses nothing.
pub async fn check_resume(shared: &Arc<Shared>, after: u64) -> Result<()> {
    let shared = shared.clone();
    let (first, last) = blocking(move || shared.reader().event_bounds()).await?;
    if after > last {
        return Err(Invalid::new(
            "after",
            format!(
                "no event {after} was ever recorded here (the newest is {last}); is this the coordinator you were following?"
            ),
        )
        .into());
    }
    if let Some(first) = first {
        if after > 0 && after + 1 < first {
            return Err(Invalid::new(
                "after",
                format!(
                    "the events after {after} up to {} were discarded (the store keeps the last {}); resume after {} to go on from the oldest kept",
                    first - 1,
                    crate::events::KEEP,
                    first - 1
                ),
            )
            .into());
        }
    }
    Ok(())
}

/// The events after `after` that pass `filter`, in order; with `follow`, new ones as
/// they are recorded, until the receiver is dropped or the coordinator stops.
pub fn subscribe(shared: Arc<Shared>, after: u64, filter: Filter, follow: bool) -> mpsc::Receiver<Result<Event>> {
    let (tx, rx) = mpsc::channel(PAGE);
    let mut recorded = shared.last_event.clone();
    tokio::spawn(async move {
        let mut after = after;
        loop {
            let upto = *recorded.borrow_and_update();
            // A reader that fell more than the feed keeps behind is told so, rather
            // than quietly skipping what was trimmed.
            if after > 0 {
                let s = shared.clone();
                match blocking(move || s.reader().event_bounds()).await {
                    Ok((Some(first), _)) if after + 1 < first => {
                        let why = format!(
                            "this reader fell behind: the events after {after} up to {} were discarded (the store keeps the last {}); resume after {} to go on from the oldest kept",
                            first - 1,
                            crate::events::KEEP,
                            first - 1
                        );
                        let _ = tx.send(Err(Error::refused(why))).await;
                        return;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
            }
            loop {
                let (s, f) = (shared.clone(), filter.clone());
                let page = match blocking(move || s.reader().events(after, &f, PAGE)).await {
                    Ok(page) => page,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                let full = page.len() == PAGE;
                for event in page {
                    after = event.id;
                    if tx.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
                if !full {
                    break;
                }
            }
            // Everything up to `upto` has been read, matching or not.
            after = after.max(upto);
            if !follow || recorded.changed().await.is_err() {
                return;
            }
        }
    });
    rx
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::refused(format!("reading the store failed: {e}")))?
}
