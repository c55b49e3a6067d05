//! `POST /api/templates/{name}/dispatch`: a web app hands work to Corral with one
//! request. The body is the payload (empty: none), meta values are query
//! parameters, `Idempotency-Key` is a header; the answer is `{"job_id", "tasks"}`.
//!
//! Unlike the read routes, it takes a token only as `Authorization: Bearer`, never
//! the dashboard's session cookie, so that no page of another site can make a
//! logged-in browser dispatch (and a `submit` token at least).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::{Extension, Json};
use corral_proto::v1 as pb;
use serde::Serialize;

use super::{Api, ApiError};
use crate::auth::{rules, Principal};
use crate::core::templates::MAX_PAYLOAD;
use crate::model::Role;
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
        .map_err(|status| ApiError(StatusCode::FORBIDDEN, status.message().to_string()))?;
    let bad = |field: &str, why: String| ApiError(StatusCode::BAD_REQUEST, format!("{field}: {why}"));
    let Query(pairs) = query.map_err(|e| bad("meta", e.body_text()))?;
    let mut meta = std::collections::HashMap::new();
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
    let req = pb::DispatchRequest {
        template: name,
        payload: (!body.is_empty()).then(|| body.to_vec()),
        meta,
        idempotency_key,
        notify_url: String::new(),
    };
    let answer = crate::service::templates::dispatch(&shared, who, req).await?;
    Ok(Json(Dispatched { job_id: answer.job_id, tasks: answer.tasks }))
}
