//! What the dashboard may change, for a token allowed to: cancel a job, retry its
//! failed tasks, drain a node, resize a pool (`POST /api/jobs/{id}/cancel`,
//! `/api/jobs/{id}/retry`, `/api/nodes/{id}/drain`, `/api/pools/{name}/resize`
//! with `{"nodes": N}`), and who it is (`GET /api/whoami`, so the page shows only the
//! buttons the token may use). Each change is made as its gRPC twin makes it, by
//! the caller, so the event feed names who did it.
//!
//! With the session cookie (a browser), a change must also carry the header
//! `X-Corral-Action: 1`: a page of another site cannot add it without a CORS
//! preflight, which this server never grants, so no other site can make a
//! logged-in browser change anything (the cookie is SameSite=Strict as well).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::{Api, ApiError};
use crate::auth::{rules, Principal};
use crate::convert;
use crate::core::RetrySelection;
use crate::error::Error;
use crate::model::*;
use crate::shared::Shared;

/// The header a browser's change must carry.
pub const ACTION_HEADER: &str = "x-corral-action";

#[derive(Serialize)]
pub(super) struct WhoAmI {
    name: String,
    role: Option<&'static str>,
    pool: Option<String>,
    /// What the dashboard may offer it.
    may: May,
}

#[derive(Serialize)]
pub(super) struct May {
    change_jobs: bool,
    change_nodes: bool,
}

pub(super) async fn whoami(Extension(who): Extension<Principal>) -> Json<WhoAmI> {
    let (role, pool) = match &who {
        Principal::Token { role, pool, .. } => (Some(role.as_str()), pool.as_ref().map(|p| p.to_string())),
        Principal::Node { pool, .. } => (None, Some(pool.to_string())),
    };
    let may = May {
        change_jobs: rules::allow(&who, rules::Need::AtLeast(Role::Submit), "").is_ok(),
        change_nodes: who.is_admin(),
    };
    Json(WhoAmI { name: who.name(), role, pool, may })
}

/// Refuses a browser's change that lacks [`ACTION_HEADER`], and a token below `need`.
pub(super) fn check(who: &Principal, headers: &HeaderMap, need: Role, what: &str) -> Result<(), ApiError> {
    if !headers.contains_key(header::AUTHORIZATION) && headers.get(ACTION_HEADER).is_none_or(|v| v != "1") {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            format!("{what} from a browser needs the header '{ACTION_HEADER}: 1' (the dashboard sends it)"),
        ));
    }
    rules::allow(who, rules::Need::AtLeast(need), what)
        .map_err(|denied| ApiError(StatusCode::FORBIDDEN, denied.to_string()))
}

#[derive(Serialize)]
pub(super) struct Changed {
    /// Tasks put back in the queue (retry), else 0.
    tasks: u32,
    state: &'static str,
}

/// Changes job `id` by `change` (which says how many tasks it put back), as `who`,
/// if `who` may change that job.
async fn change_job(
    shared: &Shared,
    who: Principal,
    id: u64,
    change: impl FnOnce(&mut crate::core::Core, std::time::Instant, &mut crate::core::Outbox) -> Result<u32, crate::core::Error>
        + Send
        + 'static,
) -> Api<Changed> {
    let changed = shared
        .runtime
        .call_by(who.clone(), move |core, now, out| {
            core.may_change_job(&who.caller(), JobId(id))?;
            let tasks = change(core, now, out)?;
            Ok::<_, Error>(Changed { tasks, state: core.jobs[&JobId(id)].state.as_str() })
        })
        .await??;
    Ok(Json(changed))
}

pub(super) async fn cancel_job(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<u64>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
) -> Api<Changed> {
    check(&who, &headers, Role::Submit, "cancelling a job")?;
    change_job(&shared, who, id, move |core, now, out| core.cancel_job(now, JobId(id), out).map(|()| 0)).await
}

pub(super) async fn retry_job(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<u64>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
) -> Api<Changed> {
    check(&who, &headers, Role::Submit, "retrying a job")?;
    let selection = RetrySelection { failed: true, ..Default::default() };
    change_job(&shared, who, id, move |core, now, out| core.retry_job(now, JobId(id), &selection, out)).await
}

#[derive(Serialize)]
pub(super) struct NodeChanged {
    id: String,
    state: &'static str,
}

pub(super) async fn drain_node(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
) -> Api<NodeChanged> {
    check(&who, &headers, Role::Admin, "draining a node")?;
    let id = convert::node_id("id", &id)?;
    let changed = shared
        .runtime
        .call_by(who, move |core, _, out| {
            core.drain_node(&id, out)?;
            Ok::<_, Error>(NodeChanged { id: id.to_string(), state: core.nodes[&id].state().as_str() })
        })
        .await??;
    Ok(Json(changed))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Resize {
    nodes: u32,
}

#[derive(Serialize)]
pub(super) struct PoolChanged {
    name: String,
    target_nodes: u32,
}

pub(super) async fn resize_pool(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    body: Result<Json<serde_json::Value>, axum::extract::rejection::JsonRejection>,
) -> Api<PoolChanged> {
    check(&who, &headers, Role::Admin, "resizing a pool")?;
    let Json(body) = body.map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("nodes: {}", e.body_text())))?;
    // A struct would also take the array `[3]` for `{"nodes": 3}`.
    if !body.is_object() {
        return Err(ApiError(StatusCode::BAD_REQUEST, r#"the body must be a JSON object, {"nodes": N}"#.into()));
    }
    let resize: Resize =
        serde_json::from_value(body).map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("nodes: {e}")))?;
    let name = PoolName::parse("name", &name)?;
    let target = convert::local_target(resize.nodes)?;
    let changed = shared
        .runtime
        .call_by(who, move |core, now, out| {
            core.resize_pool(now, &name, target, out)?;
            Ok::<_, Error>(PoolChanged { name: name.to_string(), target_nodes: core.pools[&name].spec.target_nodes })
        })
        .await??;
    Ok(Json(changed))
}
