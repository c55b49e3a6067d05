//! Templates, dispatch and triggers: `CreateTemplate`, `ListTemplates`,
//! `GetTemplate`, `DeleteTemplate`, `Dispatch`, and `CreateTrigger`,
//! `ListTriggers`, `GetTrigger`, `PauseTrigger`, `DeleteTrigger`.
//!
//! Any submit token may dispatch a template (the job is the dispatcher's); only
//! the token that made a template or a trigger (or an admin) changes it.

use std::collections::BTreeMap;
use std::sync::Arc;

use corral_proto::v1 as pb;
use corral_types::paths;
use object_store::ObjectStoreExt;
use tonic::{Request, Response, Status};

use super::{job_from_request, ClientApi};
use crate::auth::{self, Principal};
use crate::convert::templates::{check_template_job, template_spec, template_view, trigger_spec, trigger_view};
use crate::core::keys::IdempotencyKey;
use crate::core::templates::{check_dispatch, Dispatch, MAX_PAYLOAD};
use crate::core::Core;
use crate::error::{Error, Invalid};
use crate::model::*;
use crate::shared::Shared;

/// The most templates, and triggers, one coordinator holds.
pub const MAX_TEMPLATES: usize = 10_000;
pub const MAX_TRIGGERS: usize = 1_000;
/// The most triggers one token makes (each polling one lists its prefix).
pub const MAX_TRIGGERS_PER_OWNER: usize = 100;

fn template_name(field: &'static str, name: &str) -> Result<TemplateName, Status> {
    Ok(TemplateName::parse(field, name)?)
}

fn trigger_name(name: &str) -> Result<TriggerName, Status> {
    Ok(TriggerName::parse("name", name)?)
}

/// Refuses a change by `who` to something `owner` made, unless `who` is an admin.
fn may_change(who: &Principal, what: &str, name: &str, owner: &str) -> Result<(), Error> {
    if who.is_admin() || who.name() == owner {
        return Ok(());
    }
    Err(Error::forbidden(format!(
        "{what} '{name}' belongs to token '{owner}'; a submit token changes only its own {what}s (an admin token may change any)"
    )))
}

fn template_or_404(core: &Core, name: &TemplateName) -> Result<pb::Template, Error> {
    let t = core.templates.get(name).ok_or_else(|| Error::not_found("template", name))?;
    Ok(template_view(core, t))
}

fn trigger_or_404(core: &Core, name: &TriggerName) -> Result<pb::Trigger, Error> {
    let t = core.triggers.get(name).ok_or_else(|| Error::not_found("trigger", name))?;
    Ok(trigger_view(core, t))
}

pub(super) async fn create_template(
    api: &ClientApi,
    req: Request<pb::CreateTemplateRequest>,
) -> Result<Response<pb::Template>, Status> {
    let who = auth::caller(&req)?;
    let mut req = req.into_inner();
    let job = req.job.take().ok_or_else(|| Invalid::new("job", "is required: what every dispatch runs"))?;
    check_template_job(&job)?;
    let job = job_from_request(&api.shared, job, &who).await?;
    let spec = template_spec(&req, job)?;
    let template = api
        .shared
        .runtime
        .call_by(who.clone(), move |core, now, out| {
            if core.templates.len() >= MAX_TEMPLATES {
                return Err(Error::refused(format!(
                    "the coordinator holds {MAX_TEMPLATES} templates, its most; delete some first"
                )));
            }
            let name = spec.name.clone();
            core.create_template(now, spec, out)?;
            template_or_404(core, &name)
        })
        .await??;
    tracing::info!(template = %template.name, "template created");
    Ok(Response::new(template))
}

pub(super) async fn list_templates(
    api: &ClientApi,
    _: Request<pb::ListTemplatesRequest>,
) -> Result<Response<pb::ListTemplatesResponse>, Status> {
    let templates =
        api.shared.runtime.call(|core, _, _| core.templates.values().map(|t| template_view(core, t)).collect()).await?;
    Ok(Response::new(pb::ListTemplatesResponse { templates }))
}

pub(super) async fn get_template(
    api: &ClientApi,
    req: Request<pb::GetTemplateRequest>,
) -> Result<Response<pb::Template>, Status> {
    let name = template_name("name", &req.into_inner().name)?;
    Ok(Response::new(api.shared.runtime.call(move |core, _, _| template_or_404(core, &name)).await??))
}

pub(super) async fn delete_template(
    api: &ClientApi,
    req: Request<pb::DeleteTemplateRequest>,
) -> Result<Response<pb::DeleteTemplateResponse>, Status> {
    let who = auth::caller(&req)?;
    let name = template_name("name", &req.into_inner().name)?;
    let shown = name.clone();
    api.shared
        .runtime
        .call_by(who.clone(), move |core, _, out| {
            let t = core.templates.get(&name).ok_or_else(|| Error::not_found("template", &name))?;
            may_change(&who, "template", name.as_str(), &t.spec.job.owner)?;
            Ok::<_, Error>(core.delete_template(&name, out)?)
        })
        .await??;
    tracing::info!(template = %shown, "template deleted");
    Ok(Response::new(pb::DeleteTemplateResponse {}))
}

pub(super) async fn dispatch_rpc(
    api: &ClientApi,
    req: Request<pb::DispatchRequest>,
) -> Result<Response<pb::DispatchResponse>, Status> {
    let who = auth::caller(&req)?;
    Ok(Response::new(dispatch(&api.shared, who, req.into_inner()).await?))
}

/// A random name for a payload's object.
fn payload_object() -> Result<String, Status> {
    let mut id = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id)
        .map_err(|_| Status::internal("no randomness for the payload's name"))?;
    Ok(paths::payload(&crate::auth::secret::hex(&id)))
}

/// What a dispatch asks for, to tell a retry under its key from another request.
fn dispatch_digest(template: &TemplateName, payload: Option<&[u8]>, d: &Dispatch) -> String {
    let sha = |bytes: &[u8]| crate::auth::secret::hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    let canonical = serde_json::json!({
        "template": template.as_str(),
        "payload": payload.map(sha),
        "meta": d.meta,
        "notify": d.notify,
    });
    sha(canonical.to_string().as_bytes())
}

/// Makes a job from a template for `who` (the gRPC `Dispatch` and the HTTP
/// `POST /api/templates/NAME/dispatch`). The payload is stored first, as an
/// object of its own that the job's tasks read; if no job of this dispatch takes
/// it (refused, or a retry answered with the first job), it is deleted again.
pub async fn dispatch(
    shared: &Arc<Shared>,
    who: Principal,
    req: pb::DispatchRequest,
) -> Result<pb::DispatchResponse, Status> {
    let name = template_name("template", &req.template)?;
    let key = crate::convert::idempotency_key(&req.idempotency_key)?;
    let meta: BTreeMap<String, String> = req.meta.into_iter().collect();
    let notify = crate::convert::notify_url(&req.notify_url)?;
    if let Some(url) = &notify {
        crate::notify::resolve(url, shared.notify.allow_private)
            .await
            .map_err(|why| Invalid::new("notify_url", why))?;
    }
    if let Some(payload) = &req.payload {
        if payload.len() as u64 > MAX_PAYLOAD {
            let why = format!("is {} bytes; the most is {} (16 MiB)", payload.len(), MAX_PAYLOAD);
            return Err(Invalid::new("payload", why).into());
        }
    }
    // Checked (payload rule, meta) before the payload is stored, so that a refusal
    // stores nothing.
    let (checked, has_payload, checked_meta) = (name.clone(), req.payload.is_some(), meta.clone());
    shared
        .runtime
        .call(move |core, _, _| {
            let t = core.templates.get(&checked).ok_or_else(|| Error::not_found("template", &checked))?;
            Ok::<_, Error>(check_dispatch(&t.spec, has_payload, &checked_meta)?)
        })
        .await??;
    let mut d = Dispatch { payload: None, meta, notify, owner: who.name(), ..Dispatch::default() };
    let key = key.map(|key| IdempotencyKey {
        owner: d.owner.clone(),
        key,
        digest: dispatch_digest(&name, req.payload.as_deref(), &d),
    });
    let object = match req.payload {
        Some(bytes) => {
            let object = payload_object()?;
            let path = object_store::path::Path::parse(&object).map_err(|e| Status::internal(e.to_string()))?;
            shared.objects.put(&path, bytes.into()).await.map_err(|e| {
                // The store's own words may name where it keeps objects: they go to the log.
                tracing::warn!(error = %e, "a dispatch's payload could not be stored");
                Status::unavailable("payload: the object store could not store it (the coordinator's log says why)")
            })?;
            d.payload = Some(object.clone());
            Some(object)
        }
        None => None,
    };
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
    use crate::runtime::RuntimeError;
    let unused = match &made {
        Ok(Ok((_, _, ours))) => !ours,
        Ok(Err(_)) | Err(RuntimeError::Revoked | RuntimeError::NotSaved(_)) => true,
        Err(RuntimeError::StoreCannotWrite { in_flight, .. }) => !in_flight,
        Err(RuntimeError::ShuttingDown) => false,
    };
    if let (Some(folder), true) = (object.as_deref().and_then(paths::payload_folder), unused) {
        tokio::spawn(crate::objects::delete_prefix(shared.objects.clone(), folder.to_string()));
    }
    let (id, tasks, _) = made??;
    tracing::info!(job_id = %id, tasks, "job dispatched");
    Ok(pb::DispatchResponse { job_id: id.0, tasks })
}

pub(super) async fn create_trigger(
    api: &ClientApi,
    req: Request<pb::CreateTriggerRequest>,
) -> Result<Response<pb::Trigger>, Status> {
    let who = auth::caller(&req)?;
    let spec = trigger_spec(req.get_ref(), who.name())?;
    let trigger = api
        .shared
        .runtime
        .call_by(who.clone(), move |core, now, out| {
            if core.triggers.len() >= MAX_TRIGGERS {
                return Err(Error::refused(format!(
                    "the coordinator holds {MAX_TRIGGERS} triggers, its most; delete some first"
                )));
            }
            let owned = core.triggers.values().filter(|t| t.record.spec.owner == spec.owner).count();
            if owned >= MAX_TRIGGERS_PER_OWNER {
                return Err(Error::refused(format!(
                    "token '{}' has made {MAX_TRIGGERS_PER_OWNER} triggers, the most one token makes; delete some first",
                    spec.owner
                )));
            }
            let name = spec.name.clone();
            core.create_trigger(now, spec, out)?;
            trigger_or_404(core, &name)
        })
        .await??;
    tracing::info!(trigger = %trigger.name, "trigger created");
    Ok(Response::new(trigger))
}

pub(super) async fn list_triggers(
    api: &ClientApi,
    _: Request<pb::ListTriggersRequest>,
) -> Result<Response<pb::ListTriggersResponse>, Status> {
    let triggers =
        api.shared.runtime.call(|core, _, _| core.triggers.values().map(|t| trigger_view(core, t)).collect()).await?;
    Ok(Response::new(pb::ListTriggersResponse { triggers }))
}

pub(super) async fn get_trigger(
    api: &ClientApi,
    req: Request<pb::GetTriggerRequest>,
) -> Result<Response<pb::Trigger>, Status> {
    let name = trigger_name(&req.into_inner().name)?;
    Ok(Response::new(api.shared.runtime.call(move |core, _, _| trigger_or_404(core, &name)).await??))
}

/// Refuses a change to a trigger by anyone but its creator, the creator of its
/// template (who may free the template of it), or an admin.
fn may_change_trigger(core: &Core, who: &Principal, name: &TriggerName) -> Result<(), Error> {
    let t = core.triggers.get(name).ok_or_else(|| Error::not_found("trigger", name))?;
    let spec = &t.record.spec;
    if core.templates.get(&spec.template).is_some_and(|tpl| tpl.spec.job.owner == who.name()) {
        return Ok(());
    }
    may_change(who, "trigger", name.as_str(), &spec.owner)
}

pub(super) async fn pause_trigger(
    api: &ClientApi,
    req: Request<pb::PauseTriggerRequest>,
) -> Result<Response<pb::Trigger>, Status> {
    let who = auth::caller(&req)?;
    let req = req.into_inner();
    let name = trigger_name(&req.name)?;
    let trigger = api
        .shared
        .runtime
        .call_by(who.clone(), move |core, _, out| {
            may_change_trigger(core, &who, &name)?;
            core.pause_trigger(&name, req.paused, out)?;
            trigger_or_404(core, &name)
        })
        .await??;
    Ok(Response::new(trigger))
}

pub(super) async fn delete_trigger(
    api: &ClientApi,
    req: Request<pb::DeleteTriggerRequest>,
) -> Result<Response<pb::DeleteTriggerResponse>, Status> {
    let who = auth::caller(&req)?;
    let name = trigger_name(&req.into_inner().name)?;
    let shown = name.clone();
    api.shared
        .runtime
        .call_by(who.clone(), move |core, _, out| {
            may_change_trigger(core, &who, &name)?;
            Ok::<_, Error>(core.delete_trigger(&name, out)?)
        })
        .await??;
    tracing::info!(trigger = %shown, "trigger deleted");
    Ok(Response::new(pb::DeleteTriggerResponse {}))
}
