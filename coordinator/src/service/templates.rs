//! Templates, dispatch and triggers: `CreateTemplate`, `ListTemplates`,
//! `GetTemplate`, `DeleteTemplate`, `Dispatch`, and `CreateTrigger`,
//! `ListTriggers`, `GetTrigger`, `PauseTrigger`, `DeleteTrigger`.
//!
//! Any submit token may dispatch a template (the job is the dispatcher's); only
//! the token that made a template or a trigger (or an admin) changes it.

use corral_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::{job_from_request, ClientApi};
use crate::app::dispatch::Order;
use crate::auth::{self, Principal};
use crate::convert::templates::{check_template_job, template_spec, template_view, trigger_spec, trigger_view};
use crate::core::Core;
use crate::error::{Error, Invalid};
use crate::model::*;

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

pub(super) async fn update_template(
    api: &ClientApi,
    req: Request<pb::UpdateTemplateRequest>,
) -> Result<Response<pb::Template>, Status> {
    let who = auth::caller(&req)?;
    let req = req.into_inner();
    let name = template_name("name", &req.name)?;
    let priority = crate::convert::new_priority(req.priority)?;
    let template = api
        .shared
        .runtime
        .call_by(who.clone(), move |core, _, out| {
            core.may_change_template(&who.caller(), &name)?;
            core.set_template_priority(&name, priority, out)?;
            template_or_404(core, &name)
        })
        .await??;
    Ok(Response::new(template))
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
            core.may_change_template(&who.caller(), &name)?;
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
    let req = req.into_inner();
    let meta = req.meta.into_iter().collect();
    let order = Order::checked(&req.template, req.payload, meta, &req.idempotency_key, &req.notify_url)?;
    let made = crate::app::dispatch::dispatch(&api.shared, who, order).await?;
    Ok(Response::new(pb::DispatchResponse { job_id: made.job.0, tasks: made.tasks }))
}

pub(super) async fn create_trigger(
    api: &ClientApi,
    req: Request<pb::CreateTriggerRequest>,
) -> Result<Response<pb::Trigger>, Status> {
    let who = auth::caller(&req)?;
    let spec = trigger_spec(req.get_ref(), who.name())?;
    if spec.source.is_some() && !who.is_admin() {
        return Err(Error::forbidden(
            "a queue trigger (--source) makes the coordinator connect to the host it names, with a password from its environment: it needs an admin token",
        )
        .into());
    }
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
    Ok(core.may_change_trigger(&who.caller(), name)?)
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
