//! Who may use the HTTP side, and from which names.
//!
//! - Every request must name the coordinator in its `Host` header (its `--http`
//!   address, `localhost`, a loopback address or a name given with `--http-host`):
//!   a page on another site that rebinds its DNS to this address is refused.
//! - Every route but `/healthz`, `/login` and `/logout` needs a token of any user role, as
//!   `authorization: Bearer TOKEN` or the session cookie that the login page sets
//!   (HttpOnly, SameSite=Strict; a random id standing for the token, not the token); `/metrics` is open with `--metrics-public`.
//!   A browser without a token is sent to `/login`; an API client gets 401 JSON.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, Json};

use crate::auth::{self, rules, Principal};
use crate::core::StoreOp;
use crate::model::Role;
use crate::shared::Shared;

const LOGIN: &str = include_str!("assets/login.html");
/// The cookie the login page sets: a session id, not the token. Over TLS it takes
/// the `__Host-` prefix, so no other port or subdomain can set or scope it.
pub const COOKIE: &str = "corral_session";
pub const TLS_COOKIE: &str = "__Host-corral_session";

/// The names the HTTP server answers to, besides loopback and `localhost`.
#[derive(Debug, Clone, Default)]
pub struct HttpAccess {
    /// Host names (or addresses) accepted in the `Host` header, without ports.
    pub hosts: Vec<String>,
    /// `/metrics` without a token.
    pub metrics_public: bool,
    /// Served over TLS: cookies are `Secure`.
    pub tls: bool,
}

/// The host part of a `Host` header: `name`, `1.2.3.4` or `[::1]`, without the port.
fn host_part(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    host.rsplit_once(':').map_or(host, |(h, port)| if port.chars().all(|c| c.is_ascii_digit()) { h } else { host })
}

/// Whether a `Host` header names this coordinator.
pub fn host_allowed(host: &str, access: &HttpAccess) -> bool {
    let name = host_part(host.trim()).to_ascii_lowercase();
    if name == "localhost" || access.hosts.iter().any(|h| h.eq_ignore_ascii_case(&name)) {
        return true;
    }
    name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn cookie_name(access: &HttpAccess) -> &'static str {
    if access.tls {
        TLS_COOKIE
    } else {
        COOKIE
    }
}

/// Every value of the session cookie `name` (a page on another port of the same
/// host may have planted one of its own: each is tried).
fn cookie_values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name && !v.is_empty()).then(|| v.to_string())
        })
        .collect()
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

/// The middleware in front of every route.
pub async fn gate(State(shared): State<Arc<Shared>>, mut req: Request, next: Next) -> Response {
    let access = &shared.http_access;
    // HTTP/2 names the host in `:authority` (the URI), not in a Host header.
    let host = match req.headers().get(header::HOST) {
        Some(h) => h.to_str().unwrap_or("").to_string(),
        None => req.uri().authority().map(|a| a.to_string()).unwrap_or_default(),
    };
    let host = host.as_str();
    let path = req.uri().path().to_string();
    if path != "/healthz" && !host_allowed(host, access) {
        let why = format!(
            "Host '{host}' is not a name of this coordinator; add it with --http-host if it is (this stops DNS rebinding)"
        );
        return refuse(StatusCode::MISDIRECTED_REQUEST, &why);
    }
    // A form posted from another site (login CSRF) names that site as its origin.
    if req.method() == axum::http::Method::POST {
        let origin = req.headers().get(header::ORIGIN).and_then(|o| o.to_str().ok());
        let foreign = origin.is_some_and(|o| {
            let host = o.split_once("://").map_or(o, |(_, rest)| rest);
            o != "null" && !host_allowed(host, access)
        });
        if foreign {
            return refuse(StatusCode::FORBIDDEN, "a form from another site cannot post here");
        }
    }
    if matches!(path.as_str(), "/healthz" | "/login" | "/logout" | "/style.css")
        || (path == "/metrics" && access.metrics_public)
    {
        return next.run(req).await;
    }
    let checked = match req.headers().get(header::AUTHORIZATION) {
        Some(h) => shared.auth.authenticate(Some(h.as_bytes()), auth::now_ms()),
        None => {
            let sessions = cookie_values(req.headers(), cookie_name(access));
            let mut found = Err(auth::Denied::Unauthenticated(auth::NO_TOKEN.into()));
            for sid in sessions {
                found = shared.auth.session(&sid, auth::now_ms());
                if found.is_ok() {
                    break;
                }
            }
            found
        }
    };
    let browser = req.method() == axum::http::Method::GET && !path.starts_with("/api/") && path != "/metrics";
    let who = match checked {
        Ok(who) => who,
        Err(_) if browser => return Redirect::to("/login").into_response(),
        Err(denied) => return refuse(StatusCode::UNAUTHORIZED, &denied.to_string()),
    };
    if let Err(denied) = rules::allow(&who, rules::Need::AtLeast(Role::Read), &path) {
        return refuse(StatusCode::FORBIDDEN, &denied.to_string());
    }
    req.extensions_mut().insert(who);
    next.run(req).await
}

pub async fn login_page() -> Response {
    page(StatusCode::OK, "")
}

fn page(status: StatusCode, error: &str) -> Response {
    let error = if error.is_empty() { String::new() } else { format!("<p class=\"error\" role=\"alert\">{error}</p>") };
    let body = LOGIN.replace("<!--ERROR-->", &error);
    (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-store")], body)
        .into_response()
}

#[derive(serde::Deserialize)]
pub struct LoginForm {
    token: String,
}

/// Checks the token and keeps it in the cookie; a wrong one gets the page again
/// with the reason.
pub async fn login(State(shared): State<Arc<Shared>>, Form(form): Form<LoginForm>) -> Response {
    let token = form.token.trim();
    let who = match shared.auth.check_bearer(token, auth::now_ms()) {
        Ok(who) => who,
        Err(denied) => return page(StatusCode::UNAUTHORIZED, &denied.to_string()),
    };
    if let Err(denied) = rules::allow(&who, rules::Need::AtLeast(Role::Read), "/dashboard") {
        return page(StatusCode::FORBIDDEN, &denied.to_string());
    }
    let Principal::Token { name, .. } = &who else {
        return page(StatusCode::FORBIDDEN, "a node's secret does not open the dashboard");
    };
    let opened = shared.auth.open_session(&who, auth::now_ms());
    // Stored before it is answered: a sign-in outlives a restart and a failover.
    let (record, evicted) = (opened.record.clone(), opened.evicted);
    let stored = shared
        .runtime
        .call(move |_, _, out| {
            out.store.push(StoreOp::PutSession(record));
            if !evicted.is_empty() {
                out.store.push(StoreOp::DeleteSessions(evicted));
            }
        })
        .await;
    if let Err(e) = stored {
        shared.auth.close_session(&opened.sid);
        return page(StatusCode::SERVICE_UNAVAILABLE, &format!("cannot sign in now: {e}"));
    }
    tracing::info!(token = %name, "signed in to the dashboard");
    let sid = opened.sid;
    let secure = if shared.http_access.tls { "; Secure" } else { "" };
    let cookie = format!("{}={sid}; HttpOnly; SameSite=Strict; Path=/{secure}", cookie_name(&shared.http_access));
    let mut resp = Redirect::to("/").into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, value);
    }
    resp
}

pub async fn logout(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let name = cookie_name(&shared.http_access);
    let keys: Vec<String> =
        cookie_values(&headers, name).into_iter().map(|sid| shared.auth.close_session(&sid)).collect();
    if !keys.is_empty() {
        // Forgotten in the store too; a failure leaves a row whose cookie the
        // browser drops now, and which dies with its token.
        let _ = shared.runtime.call(move |_, _, out| out.store.push(StoreOp::DeleteSessions(keys))).await;
    }
    let mut resp = Redirect::to("/login").into_response();
    let secure = if shared.http_access.tls { "; Secure" } else { "" };
    let cookie = format!("{name}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{secure}");
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, value);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_coordinators_own_names_are_answered() {
        let access = HttpAccess { hosts: vec!["corral.example.com".into()], ..Default::default() };
        for ok in ["localhost:7080", "127.0.0.1:7080", "[::1]:7080", "Corral.Example.com", "corral.example.com:443"] {
            assert!(host_allowed(ok, &access), "{ok}");
        }
        for bad in ["evil.example:7080", "", "10.0.0.5:7080", "corral.example.com.evil:80", "localhost.evil"] {
            assert!(!host_allowed(bad, &access), "{bad}");
        }
    }

    #[test]
    fn every_session_cookie_is_found_among_other_cookies() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_static("a=1; corral_session=s1; b=2; corral_session=s2"));
        assert_eq!(cookie_values(&headers, COOKIE), ["s1", "s2"]);
        headers.insert(header::COOKIE, HeaderValue::from_static("corral_session="));
        assert!(cookie_values(&headers, COOKIE).is_empty());
    }
}
