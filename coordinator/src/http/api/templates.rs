//! `GET /api/templates[/{name}]`: templates, with a template's dispatch history;
//! and `POST /api/templates/{name}/dispatch`: a web app hands work to Corral with one
//! request. The body is the payload (empty: none), meta values are query
//! parameters, `Idempotency-Key` is a header; the answer is `{"job_id", "tasks"}`.
//!
//! Unlike the read routes, it takes a token only as `Authorization: Bearer`, never
//! the dashboard's session cookie, so that no page of another site can make a
//! logged-in browser dispatch (and a `submit` token at least).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::{Extension, Json};
use serde::Serialize;

use super::{Api, ApiError};
use crate::app::dispatch::Order;
use crate::auth::{rules, Principal};
use crate::core::templates::Template;
use crate::core::templates::MAX_PAYLOAD;
use crate::core::views::JobFilter;
use crate::core::Core;
use crate::error::Error;
use crate::model::{Role, TemplateName};
use crate::shared::Shared;

/// How many dispatch bodies are read at once: each holds up to 16 MiB, and a
/// flood of them must not hold more than this many times that.
const BODIES_AT_ONCE: usize = 8;
/// The longest a body may take to arrive.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
static BODIES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(BODIES_AT_ONCE);

#[derive(Serialize)]
pub(super) struct Dispatched {
    job_id: u64,
    tasks: u32,
}

pub(super) async fn dispatch(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    body: Body,
) -> Api<Dispatched> {
    if !headers.contains_key(header::AUTHORIZATION) {
        return Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "dispatch takes a token as 'Authorization: Bearer TOKEN', not the dashboard's session cookie".into(),
        ));
    }
    rules::allow(&who, rules::Need::AtLeast(Role::Submit), "/api/templates/dispatch")
        .map_err(|denied| ApiError(StatusCode::FORBIDDEN, denied.to_string()))?;
    let bad = |field: &str, why: String| ApiError(StatusCode::BAD_REQUEST, format!("{field}: {why}"));
    let Query(pairs) = query.map_err(|e| bad("meta", e.body_text()))?;
    let mut meta = std::collections::BTreeMap::new();
    for (key, value) in pairs {
        if meta.insert(key.clone(), value).is_some() {
            return Err(bad("meta", format!("'{}' is given twice", crate::error::shown(&key))));
        }
    }
    let _reading = BODIES.acquire().await.map_err(|_| ApiError(StatusCode::SERVICE_UNAVAILABLE, "stopping".into()))?;
    // A client that sends slowly does not keep the others out for long.
    let read = tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, MAX_PAYLOAD as usize)).await;
    let body = match read {
        Ok(Ok(body)) => body,
        Ok(Err(_)) => {
            let why = format!("payload: the body is larger than {MAX_PAYLOAD} bytes (16 MiB), the most a dispatch carries (or it broke off)");
            return Err(ApiError(StatusCode::PAYLOAD_TOO_LARGE, why));
        }
        Err(_) => {
            return Err(ApiError(
                StatusCode::REQUEST_TIMEOUT,
                "payload: the body took longer than 60s to arrive".into(),
            ))
        }
    };
    let idempotency_key = match headers.get("idempotency-key") {
        None => String::new(),
        Some(v) => v.to_str().map_err(|_| bad("Idempotency-Key", "must be printable ASCII".into()))?.to_string(),
    };
    let payload = (!body.is_empty()).then(|| body.to_vec());
    let order = Order::checked(&name, payload, meta, &idempotency_key, "")?;
    let made = crate::app::dispatch::dispatch(&shared, who, order).await?;
    Ok(Json(Dispatched { job_id: made.job.0, tasks: made.tasks }))
}

// ----------------------------------------------------------------------- reads

/// How many of a template's last dispatches its page lists.
const HISTORY_SHOWN: usize = 50;

#[derive(Serialize)]
pub(super) struct TemplateView {
    name: String,
    /// Whether a dispatch must, may or must not carry a payload.
    payload: &'static str,
    meta_required: Vec<String>,
    pool: String,
    job_name: String,
    command: Vec<String>,
    tasks: u32,
    owner: String,
    created_at_ms: u64,
    /// The triggers that dispatch it.
    triggers: Vec<String>,
    /// Jobs dispatched from it that the coordinator still holds, and the last of
    /// them, the newest first (only on `GET /api/templates/{name}`).
    dispatched: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    history: Vec<DispatchView>,
}

#[derive(Serialize)]
pub(super) struct DispatchView {
    job: u64,
    name: String,
    owner: String,
    state: &'static str,
    submitted_at_ms: u64,
    finished_at_ms: Option<u64>,
}

/// How many jobs each template made that the coordinator still holds: one pass
/// over the jobs for any number of templates.
fn dispatch_counts(core: &Core) -> HashMap<&TemplateName, usize> {
    let mut counts = HashMap::new();
    for template in core.jobs.values().filter_map(|j| j.spec.template.as_ref()) {
        *counts.entry(template).or_default() += 1;
    }
    counts
}

fn template_view(core: &Core, t: &Template, dispatched: usize, history: Vec<DispatchView>) -> TemplateView {
    let spec = &t.spec;
    TemplateView {
        name: spec.name.to_string(),
        payload: spec.payload.as_str(),
        meta_required: spec.meta_required.clone(),
        pool: spec.job.pool.to_string(),
        job_name: spec.job.name.clone(),
        command: spec.job.task.argv.clone(),
        tasks: spec.job.task_count(),
        owner: spec.job.owner.clone(),
        created_at_ms: t.created_at_ms,
        triggers: core.triggers_of(&spec.name),
        dispatched,
        history,
    }
}

pub(super) async fn templates(State(shared): State<Arc<Shared>>) -> Api<Vec<TemplateView>> {
    super::read(&shared, |core, _| {
        let counts = dispatch_counts(core);
        let count = |t: &Template| counts.get(&t.spec.name).copied().unwrap_or(0);
        Ok(core.templates.values().map(|t| template_view(core, t, count(t), Vec::new())).collect())
    })
    .await
}

pub(super) async fn template(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Api<TemplateView> {
    let name = TemplateName::parse("name", &name).map_err(Error::from)?;
    super::read(&shared, move |core, _| {
        let t = core.templates.get(&name).ok_or_else(|| Error::not_found("template", &name))?;
        let all = JobFilter { template: Some(name.clone()), ..JobFilter::default() };
        let dispatched = core.jobs.values().filter(|j| all.matches(j)).count();
        let last = JobFilter { limit: Some(HISTORY_SHOWN), ..all };
        let history = core
            .jobs_matching(&last)
            .into_iter()
            .map(|j| DispatchView {
                job: j.id.0,
                name: j.spec.name.clone(),
                owner: j.spec.owner.clone(),
                state: j.state.as_str(),
                submitted_at_ms: j.submitted_at_ms,
                finished_at_ms: j.finished_at_ms,
            })
            .collect();
        Ok(template_view(core, t, dispatched, history))
    })
    .await
}
