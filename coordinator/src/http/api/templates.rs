//! `POST /api/templates/{name}/dispatch`: a web app hands work to Corral with one
//! request. The body is the payload (empty: none), meta values are query
//! parameters, `Idempotency-Key` is a header; the answer is `{"job_id", "tasks"}`.
//!
//! Unlike the read routes, it takes a token only as `Authorization: Bearer`, never
//! the dashboard's session cookie, so that no page of another site can make a
//! logged-in browser dispatch (and a `submit` token at least).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
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
    body: Result<Bytes, BytesRejection>,
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
    let body = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("payload: the body is larger than {MAX_PAYLOAD} bytes (16 MiB), the most a dispatch carries"),
        ),
        status => ApiError(status, format!("payload: {}", e.body_text())),
    })?;
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
