//! The coordinator's HTTP side: the dashboard (five files embedded in the binary),
//! the JSON read API it is built on ([`api`], documented in `docs/HTTP_API.md`), a
//! server-sent event stream, and `/metrics` for Prometheus.
//!
//! Most routes read. The changes are `POST /api/templates/NAME/dispatch`, which
//! makes a job from a template (a bearer `submit` token only), and the dashboard's
//! actions (cancel, retry, drain, resize; pause, resume and run a schedule), each
//! through the same application layer ([`crate::app`]) or core call as its gRPC
//! twin. Every route is behind [`auth::gate`]: a `Host` that names this
//! coordinator, and a token.

pub mod api;
pub mod auth;

use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::watch;

use crate::shared::Shared;

const INDEX: &str = include_str!("assets/index.html");
const APP: &str = include_str!("assets/app.js");
const VIEWS: &str = include_str!("assets/views.js");
const PAGES: &str = include_str!("assets/pages.js");
const STYLE: &str = include_str!("assets/style.css");

/// The routes, over the coordinator's shared state.
/// The most HTTP connections at once.
const MAX_CONNECTIONS: usize = 1024;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX) }))
        .route("/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP) }))
        .route("/views.js", get(|| async { asset("text/javascript; charset=utf-8", VIEWS) }))
        .route("/pages.js", get(|| async { asset("text/javascript; charset=utf-8", PAGES) }))
        .route("/style.css", get(|| async { asset("text/css; charset=utf-8", STYLE) }))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/logout", post(auth::logout))
        .merge(api::routes())
        .layer(axum::middleware::from_fn_with_state(shared.clone(), auth::gate))
        .with_state(shared)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

async fn metrics(axum::extract::State(shared): axum::extract::State<Arc<Shared>>) -> Response {
    let metrics = shared.metrics.clone();
    let read = shared
        .runtime
        .call(move |core, now, _| {
            metrics.read_core(core, now);
        })
        .await;
    match read {
        Ok(()) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], shared.metrics.render())
            .into_response(),
        Err(refused) => (StatusCode::SERVICE_UNAVAILABLE, refused.to_string()).into_response(),
    }
}

/// Serves (over TLS if `tls` is given) until `stop` turns true.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
) {
    serve_app(listener, tls, router(shared), stop).await
}

/// Serves `app` (over TLS if `tls` is given) until `stop` turns true: the
/// dashboard, or a standby's redirects.
pub async fn serve_app(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: axum::Router,
    stop: watch::Receiver<bool>,
) {
    let mut until = stop.clone();
    let shutdown = async move {
        let _ = until.wait_for(|s| *s).await;
    };
    let local = match listener.local_addr() {
        Ok(addr) => addr,
        Err(e) => {
            tracing::error!(error = %e, "the HTTP server cannot start");
            return;
        }
    };
    // The dashboard and API have a few readers, not thousands of agents.
    let cap = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let served = match tls {
        Some(tls) => {
            let conns = crate::tls::incoming(listener, tls, cap, stop);
            axum::serve(crate::conns::Listener { conns, local }, app).with_graceful_shutdown(shutdown).await
        }
        None => {
            let conns = crate::conns::incoming(listener, cap, stop);
            axum::serve(crate::conns::Listener { conns, local }, app).with_graceful_shutdown(shutdown).await
        }
    };
    if let Err(e) = served {
        tracing::error!(error = %e, "the HTTP server stopped");
    }
}
