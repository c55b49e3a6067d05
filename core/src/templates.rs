//! Templates and dispatch: a job spec kept under a name, with holes a dispatch
//! fills (a payload object, meta values), so that an event or a web request makes
//! a job with one call.
//!
//! A dispatch is a submission: it goes through [`Core::submit_job_once`], so an
//! idempotency key is looked up and recorded in the batch (the transaction) that
//! stores the job, and two concurrent dispatches with one key make one job.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use super::keys::IdempotencyKey;
use super::*;
use crate::error::{Error, Invalid, Result};

/// The largest payload a dispatch carries.
pub const MAX_PAYLOAD: u64 = 16 << 20;
/// The most meta values a dispatch carries, and the longest of each.
pub const MAX_META: usize = 64;
pub const MAX_META_VALUE: usize = 4096;
/// Where the payload lands in each task's directory (`CORRAL_PAYLOAD` names it).
pub const PAYLOAD_FILE: &str = "payload";

/// A template as its creator asked.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateSpec {
    pub name: TemplateName,
    pub payload: PayloadRule,
    /// Meta keys every dispatch must give.
    pub meta_required: Vec<String>,
    /// The job a dispatch makes (its `owner` is the template's creator).
    pub job: JobSpec,
}

/// A template as the core holds and the store keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub spec: TemplateSpec,
    pub created_at_ms: u64,
}

/// What one dispatch fills in.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dispatch {
    /// The payload's object in the store.
    pub payload: Option<String>,
    /// Each becomes `CORRAL_META_<key>` in the tasks' environment.
    pub meta: BTreeMap<String, String>,
    /// Where to POST when the job ends (instead of the template's).
    pub notify: Option<String>,
    /// The token dispatching: the job is theirs.
    pub owner: String,
    /// More inputs and environment for every task (a trigger's object).
    pub inputs: Vec<TaskInput>,
    pub env: BTreeMap<String, String>,
    /// What the job is called if its template names it not (a trigger's jobs are
    /// named after the trigger); else the template's name.
    pub name: Option<String>,
}

/// Checks a meta key: it becomes part of an environment variable's name.
pub fn meta_key(field: &'static str, key: &str) -> std::result::Result<(), Invalid> {
    let valid = !key.is_empty()
        && key.len() <= 64
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !key.starts_with(|c: char| c.is_ascii_digit());
    if valid {
        return Ok(());
    }
    Err(Invalid::new(
        field,
        format!(
            "'{}' is not a valid meta key: 1 to 64 of A-Z a-z 0-9 _, not starting with a digit (it names CORRAL_META_<key>)",
            crate::error::shown(key)
        ),
    ))
}

/// Checks a dispatch's meta values.
pub fn check_meta(meta: &BTreeMap<String, String>) -> std::result::Result<(), Invalid> {
    if meta.len() > MAX_META {
        return Err(Invalid::new("meta", format!("has {} values; the most is {MAX_META}", meta.len())));
    }
    for (key, value) in meta {
        meta_key("meta", key)?;
        if value.len() > MAX_META_VALUE || value.contains('\0') {
            return Err(Invalid::new(
                "meta",
                format!("the value of '{key}' must be at most {MAX_META_VALUE} bytes, with no NUL"),
            ));
        }
    }
    Ok(())
}

impl Core {
    /// The names of the triggers that dispatch `template`.
    pub fn triggers_of(&self, template: &TemplateName) -> Vec<String> {
        self.triggers
            .values()
            .filter(|t| t.record.spec.template == *template)
            .map(|t| t.record.spec.name.to_string())
            .collect()
    }

    /// Creates a template. Its job is checked as a submission would be, so a
    /// template that could never make its job is refused now.
    pub fn create_template(&mut self, now: Instant, spec: TemplateSpec, out: &mut Outbox) -> Result<()> {
        if self.templates.contains_key(&spec.name) {
            return Err(Error::AlreadyExists { what: "template", id: spec.name.to_string() });
        }
        for key in &spec.meta_required {
            meta_key("meta_required", key)?;
        }
        self.check_runnable(&spec.job)?;
        let template = Template { spec, created_at_ms: self.wall_ms(now) };
        out.store.push(StoreOp::PutTemplate(template.clone()));
        self.templates.insert(template.spec.name.clone(), template);
        Ok(())
    }

    /// Deletes a template; the jobs it made stay. Refused while a trigger uses it.
    pub fn delete_template(&mut self, name: &TemplateName, out: &mut Outbox) -> Result<()> {
        if !self.templates.contains_key(name) {
            return Err(Error::not_found("template", name));
        }
        if let Some(t) = self.triggers.values().find(|t| &t.record.spec.template == name) {
            return Err(Error::Refused(format!(
                "trigger '{}' dispatches template '{name}'; delete the trigger first",
                t.record.spec.name
            )));
        }
        self.templates.remove(name);
        out.store.push(StoreOp::DeleteTemplate(name.clone()));
        Ok(())
    }

    /// Makes a job from template `name` with what `dispatch` fills in, once per
    /// idempotency key.
    pub fn dispatch(
        &mut self,
        now: Instant,
        name: &TemplateName,
        dispatch: Dispatch,
        key: Option<IdempotencyKey>,
        out: &mut Outbox,
    ) -> Result<JobId> {
        let template = self.templates.get(name).ok_or_else(|| Error::not_found("template", name))?;
        let called = dispatch.name.clone().unwrap_or_else(|| name.to_string());
        let mut spec = job_of(&template.spec, dispatch)?;
        if spec.name.is_empty() {
            spec.name = called;
        }
        self.submit_job_once(now, spec, key, out)
    }
}

/// Whether a dispatch with (or without) a payload and these meta values may use
/// `template` (checked before a payload is stored, and again when the job is made).
pub fn check_dispatch(template: &TemplateSpec, payload: bool, meta: &BTreeMap<String, String>) -> Result<()> {
    let name = &template.name;
    match (template.payload, payload) {
        (PayloadRule::Required, false) => {
            return Err(Invalid::new("payload", format!("template '{name}' requires a payload")).into())
        }
        (PayloadRule::Forbidden, true) => {
            return Err(Invalid::new("payload", format!("template '{name}' takes no payload")).into())
        }
        _ => {}
    }
    if let Some(missing) = template.meta_required.iter().find(|k| !meta.contains_key(*k)) {
        return Err(Invalid::new(
            "meta",
            format!("template '{name}' requires meta '{missing}' (--meta {missing}=...)"),
        )
        .into());
    }
    check_meta(meta)?;
    Ok(())
}

/// The job a dispatch of `template` makes: the payload and a trigger's object as
/// inputs of every task, meta in every task's environment.
pub fn job_of(template: &TemplateSpec, d: Dispatch) -> Result<JobSpec> {
    check_dispatch(template, d.payload.is_some(), &d.meta)?;
    let mut env = d.env;
    env.extend(d.meta.iter().map(|(k, v)| (format!("CORRAL_META_{k}"), v.clone())));
    let mut inputs = d.inputs;
    if let Some(object) = &d.payload {
        inputs.push(TaskInput { object: object.clone(), path: PAYLOAD_FILE.to_string() });
        env.insert("CORRAL_PAYLOAD".into(), PAYLOAD_FILE.to_string());
    }
    let fill = |task: &mut TaskSpec| {
        task.inputs.extend(inputs.iter().cloned());
        task.env.extend(env.iter().map(|(k, v)| (k.clone(), v.clone())));
    };
    let mut job = template.job.clone();
    fill(&mut job.task);
    if let Some(graph) = &job.graph {
        let mut graph = (**graph).clone();
        graph.groups.iter_mut().for_each(|g| fill(&mut g.spec));
        job.graph = Some(Arc::new(graph));
    }
    job.owner = d.owner;
    job.template = Some(template.name.clone());
    if d.notify.is_some() {
        job.notify = d.notify;
    }
    Ok(job)
}
