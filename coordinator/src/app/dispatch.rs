//! A dispatch: a job made from a template, for the gRPC `Dispatch` and the HTTP
//! `POST /api/templates/NAME/dispatch` alike. The payload is stored first, as an
//! object of its own that the job's tasks read; if no job of this dispatch takes
//! it (refused, or a retry answered with the first job), it is deleted again.

use std::collections::BTreeMap;
use std::sync::Arc;

use corral_types::paths;
use object_store::ObjectStoreExt;

use super::Failed;
use crate::auth::Principal;
use crate::core::keys::IdempotencyKey;
use crate::core::templates::{check_dispatch, Dispatch, MAX_PAYLOAD};
use crate::error::{Error, Invalid};
use crate::model::*;
use crate::runtime::RuntimeError;
use crate::shared::Shared;

/// What a client asks a dispatch for, checked.
#[derive(Debug, Clone)]
pub struct Order {
    pub template: TemplateName,
    /// The bytes every task reads as `./payload`.
    pub payload: Option<Vec<u8>>,
    /// Values for the template's meta holes (`CORRAL_META_KEY`).
    pub meta: BTreeMap<String, String>,
    /// A retry under the same key is answered with the first job.
    pub key: Option<String>,
    /// Where the job's completion is posted.
    pub notify: Option<String>,
}

impl Order {
    /// Checks what a client sent: the names, the key, the callback URL and the
    /// payload's size. (Empty strings are "none", as both edges send them.)
    pub fn checked(
        template: &str,
        payload: Option<Vec<u8>>,
        meta: BTreeMap<String, String>,
        key: &str,
        notify_url: &str,
    ) -> Result<Order, Invalid> {
        if let Some(payload) = &payload {
            if payload.len() as u64 > MAX_PAYLOAD {
                let why = format!("is {} bytes; the most is {} (16 MiB)", payload.len(), MAX_PAYLOAD);
                return Err(Invalid::new("payload", why));
            }
        }
        Ok(Order {
            template: TemplateName::parse("template", template)?,
            payload,
            meta,
            key: crate::convert::idempotency_key(key)?,
            notify: crate::convert::notify_url(notify_url)?,
        })
    }
}

/// The job a dispatch made (or, under a key used before, the first one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dispatched {
    pub job: JobId,
    pub tasks: u32,
}

/// A random name for a payload's object.
fn payload_object() -> Result<String, Error> {
    let mut id = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id)
        .map_err(|_| Error::Io(std::io::Error::other("no randomness for the payload's name")))?;
    Ok(paths::payload(&crate::auth::secret::hex(&id)))
}

/// Stores a dispatch's (or a message's) payload as an object of its own; its name.
pub async fn store_payload(shared: &Arc<Shared>, bytes: Vec<u8>) -> Result<String, Error> {
    let object = payload_object()?;
    let path = object_store::path::Path::parse(&object).map_err(|e| Error::Io(std::io::Error::other(e)))?;
    shared.objects.put(&path, bytes.into()).await.map_err(|e| {
        // The store's own words may name where it keeps objects: they go to the log.
        tracing::warn!(error = %e, "a dispatch's payload could not be stored");
        Error::Unavailable("payload: the object store could not store it (the coordinator's log says why)".into())
    })?;
    Ok(object)
}

/// Deletes a payload no job took (in the background).
pub fn drop_payload(shared: &Arc<Shared>, object: Option<&str>) {
    if let Some(folder) = object.and_then(paths::payload_folder) {
        tokio::spawn(crate::objects::delete_prefix(shared.objects.clone(), folder.to_string()));
    }
}

/// What a dispatch asks for, to tell a retry under its key from another request.
fn digest(template: &TemplateName, payload: Option<&[u8]>, d: &Dispatch) -> String {
    let sha = |bytes: &[u8]| crate::auth::secret::hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    let canonical = serde_json::json!({
        "template": template.as_str(),
        "payload": payload.map(sha),
        "meta": d.meta,
        "notify": d.notify,
    });
    sha(canonical.to_string().as_bytes())
}

/// Makes a job from `order.template` for `who`.
pub async fn dispatch(shared: &Arc<Shared>, who: Principal, order: Order) -> Result<Dispatched, Failed> {
    let Order { template: name, payload, meta, key, notify } = order;
    if let Some(url) = &notify {
        crate::notify::resolve(url, shared.notify.allow_private)
            .await
            .map_err(|why| Invalid::new("notify_url", why))?;
    }
    // Checked (payload rule, meta) before the payload is stored, so that a refusal
    // stores nothing.
    let (checked, has_payload, checked_meta) = (name.clone(), payload.is_some(), meta.clone());
    shared
        .runtime
        .call(move |core, _, _| {
            let t = core.templates.get(&checked).ok_or_else(|| Error::not_found("template", &checked))?;
            Ok::<_, Error>(check_dispatch(&t.spec, has_payload, &checked_meta)?)
        })
        .await??;
    let mut d = Dispatch { payload: None, meta, notify, owner: who.name(), ..Dispatch::default() };
    let key =
        key.map(|key| IdempotencyKey { owner: d.owner.clone(), key, digest: digest(&name, payload.as_deref(), &d) });
    let object = match payload {
        Some(bytes) => Some(store_payload(shared, bytes).await?),
        None => None,
    };
    d.payload = object.clone();
    let taken = object.clone();
    let made = shared
        .runtime
        .call_by(who.clone(), move |core, now, out| {
            let id = core.dispatch(now, &name, d, key, out)?;
            let job = core.jobs.get(&id).ok_or_else(|| Error::not_found("job", id))?;
            // A retry under the key is answered with the first job, which has its own payload.
            let ours = taken.is_none_or(|p| job.spec.task.inputs.iter().any(|i| i.object == p));
            Ok::<_, Error>((id, job.spec.task_count(), ours))
        })
        .await;
    // Deleted only when surely no job takes it: a dispatch still in flight (the
    // store could not write yet) may be saved later, and needs its payload then.
    let unused = match &made {
        Ok(Ok((_, _, ours))) => !ours,
        Ok(Err(_)) | Err(RuntimeError::Revoked | RuntimeError::NotSaved(_)) => true,
        Err(RuntimeError::StoreCannotWrite { in_flight, .. }) => !in_flight,
        Err(RuntimeError::ShuttingDown) => false,
    };
    if unused {
        drop_payload(shared, object.as_deref());
    }
    let (job, tasks, _) = made??;
    tracing::info!(job_id = %job, tasks, "job dispatched");
    Ok(Dispatched { job, tasks })
}
