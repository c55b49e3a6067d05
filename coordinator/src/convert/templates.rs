//! Templates and triggers at the gRPC edge: requests checked into a
//! [`TemplateSpec`] or a [`TriggerSpec`], and the core's as `pb::Template` and
//! `pb::Trigger`.

use std::time::Duration;

use corral_proto::v1 as pb;

use super::word;
use crate::core::templates::{meta_key, Template, TemplateSpec};
use crate::core::triggers::{check_match, Trigger, TriggerSpec, MAX_ACTIVE, MIN_POLL};
use crate::core::Core;
use crate::error::Invalid;
use crate::model::*;

/// The longest poll interval: a day.
const MAX_POLL: Duration = Duration::from_secs(24 * 3600);
/// The most meta keys a template may require.
const MAX_META_REQUIRED: usize = 64;

/// What a template's job may not be: things one dispatch cannot answer for.
pub fn check_template_job(req: &pb::SubmitJobRequest) -> Result<(), Invalid> {
    if !req.idempotency_key.is_empty() {
        return Err(Invalid::new("job.idempotency_key", "each dispatch gives its own key; leave it unset here"));
    }
    if req.begin_at_ms != 0 {
        return Err(Invalid::new("job.begin", "a template's jobs start when they are dispatched"));
    }
    if req.open {
        return Err(Invalid::new("job.open", "a template's job cannot be open: nobody would close it"));
    }
    if req.mapreduce.is_some() {
        return Err(Invalid::new("job.mapreduce", "templates do not make map/reduce jobs yet"));
    }
    Ok(())
}

/// Checks a template request; `job` is its job, already checked as a submission.
pub fn template_spec(req: &pb::CreateTemplateRequest, job: JobSpec) -> Result<TemplateSpec, Invalid> {
    let name = TemplateName::parse("name", &req.name)?;
    if req.meta_required.len() > MAX_META_REQUIRED {
        return Err(Invalid::new("meta_required", format!("at most {MAX_META_REQUIRED} keys")));
    }
    let mut meta_required = Vec::new();
    for key in &req.meta_required {
        meta_key("meta_required", key)?;
        if !meta_required.contains(key) {
            meta_required.push(key.clone());
        }
    }
    Ok(TemplateSpec { name, payload: word("payload", &req.payload, PayloadRule::Optional)?, meta_required, job })
}

pub fn template_view(core: &Core, t: &Template) -> pb::Template {
    let spec = &t.spec;
    pb::Template {
        name: spec.name.to_string(),
        payload: spec.payload.to_string(),
        meta_required: spec.meta_required.clone(),
        pool: spec.job.pool.to_string(),
        job_name: spec.job.name.clone(),
        owner: spec.job.owner.clone(),
        created_at_ms: t.created_at_ms,
        notify_url: spec.job.notify.clone().unwrap_or_default(),
        task: Some(super::task_spec_to_pb(&spec.job.task)),
        tasks: spec.job.task_count(),
        triggers: core.triggers_of(&spec.name),
        priority: spec.job.priority,
    }
}

/// Checks a trigger request, made by token `owner`.
pub fn trigger_spec(req: &pb::CreateTriggerRequest, owner: String) -> Result<TriggerSpec, Invalid> {
    let name = TriggerName::parse("name", &req.name)?;
    let template = TemplateName::parse("template", &req.template)?;
    let max_active = match req.max_active {
        0 => None,
        n if n > MAX_ACTIVE => return Err(Invalid::new("max_active", format!("must be at most {MAX_ACTIVE}"))),
        n => Some(n),
    };
    if !req.source.is_empty() {
        if !req.prefix.is_empty() || !req.glob.is_empty() || req.poll_ms > 0 || req.whole_store {
            return Err(Invalid::new(
                "source",
                "a queue trigger takes its messages from the source: no prefix, glob or poll",
            ));
        }
        let source = crate::queues::checked_source(&req.source, &req.secret_env)?;
        let source = Some(crate::queues::with_acks(source, &req.ack_on, req.max_deliveries)?);
        let (prefix, glob, poll) = (String::new(), None, None);
        return Ok(TriggerSpec { name, prefix, glob, template, poll, owner, max_active, source });
    }
    if !req.secret_env.is_empty() || !req.ack_on.is_empty() || req.max_deliveries > 0 {
        return Err(Invalid::new("source", "secret_env, ack_on and max_deliveries are for a queue trigger (--source)"));
    }
    let glob = (!req.glob.is_empty()).then(|| req.glob.clone());
    let prefix = check_match(&req.prefix, glob.as_deref())?;
    let poll = match req.poll_ms {
        0 => None,
        ms => {
            let poll = corral_types::duration::from_ms("poll", ms)?;
            if poll < MIN_POLL || poll > MAX_POLL {
                return Err(Invalid::new("poll", "must be from 1s to 24h (or unset: fire on each put)"));
            }
            Some(poll)
        }
    };
    if prefix.is_empty() && !req.whole_store {
        return Err(Invalid::new(
            "prefix",
            "is empty: the trigger would fire for every object in the store; say so with --prefix '' (whole_store)",
        ));
    }
    Ok(TriggerSpec { name, prefix, glob, template, poll, owner, max_active, source: None })
}

pub fn trigger_view(core: &Core, t: &Trigger) -> pb::Trigger {
    let (r, spec) = (&t.record, &t.record.spec);
    pb::Trigger {
        name: spec.name.to_string(),
        prefix: spec.prefix.clone(),
        glob: spec.glob.clone().unwrap_or_default(),
        template: spec.template.to_string(),
        poll_ms: spec.poll.map_or(0, corral_types::duration::ms),
        max_active: spec.max_active.unwrap_or(0),
        owner: spec.owner.clone(),
        paused: r.paused,
        created_at_ms: r.created_at_ms,
        fired: r.fired,
        skipped: r.skipped,
        failed: r.failed,
        last_error: r.last_error.clone().unwrap_or_default(),
        recent: r
            .recent
            .iter()
            .map(|f| pb::TriggerFire {
                object: f.object.clone(),
                job_id: f.job,
                at_ms: f.at_ms,
                state: core
                    .jobs
                    .get(&JobId(f.job))
                    .map_or(pb::JobState::Unspecified as i32, |j| pb::JobState::of(j.state)),
            })
            .collect(),
        seen: t.seen.len() as u64,
        last_poll_ms: t.last_poll.map_or(0, |at| core.wall_ms(at)),
        source: spec.source.as_ref().map(|s| s.url.clone()).unwrap_or_default(),
        secret_env: spec.source.as_ref().and_then(|s| s.secret_env.clone()).unwrap_or_default(),
        connected: t.source_state.connected,
        backing_off_until_ms: t.source_state.backing_off_until_ms.unwrap_or(0),
        taken: t.source_state.taken,
        ack_on: spec.source.as_ref().map(|s| s.ack_on.as_str().to_string()).unwrap_or_default(),
        max_deliveries: spec.source.as_ref().map_or(0, |s| s.max_deliveries),
    }
}
