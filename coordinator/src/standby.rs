//! What a coordinator serves while it stands by (on PostgreSQL, another one holds
//! the lease): every gRPC call is answered UNAVAILABLE naming the leader's
//! advertised URL (the CLI and agents go there), the health service says
//! NOT_SERVING (a load balancer sends nothing here), and every HTTP request is
//! redirected to the leader's dashboard, so a bookmark of a standby still works.
//! It reads and changes nothing; the ports it serves on are the ones it leads on.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::State;
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::tls::ServerTls;

/// Who leads, as the lease says.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Leader {
    /// Its gRPC URL (`--advertise`).
    pub grpc: Option<String>,
    /// Its dashboard's URL (`--advertise-http`).
    pub http: Option<String>,
}

/// The standby's servers, until [`Standby::stop`].
pub struct Standby {
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// A standby serves a few clients at a time: they are told where to go and leave.
const MAX_CONNECTIONS: usize = 1024;

/// Starts serving on `grpc` (and `http`) until stopped; `leader` says whom to send
/// callers to (none while nobody leads).
pub fn serve(
    grpc: TcpListener,
    http: Option<TcpListener>,
    tls: Option<&ServerTls>,
    leader: watch::Receiver<Option<Leader>>,
) -> Standby {
    let (stop, stopped) = watch::channel(false);
    let mut tasks = vec![tokio::spawn(serve_grpc(grpc, tls.map(ServerTls::grpc), leader.clone(), stopped.clone()))];
    if let Some(http) = http {
        let app = axum::Router::new().fallback(redirect).with_state(leader);
        tasks.push(tokio::spawn(crate::http::serve_app(http, tls.map(ServerTls::http), app, stopped)));
    }
    Standby { stop, tasks }
}

impl Standby {
    /// Stops serving and drops every connection at once (its callers, agents
    /// among them, come back to the same port, served by the leader this
    /// coordinator now is): a takeover does not wait for them to leave.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            task.abort();
            let _ = task.await;
        }
    }
}

async fn serve_grpc(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    leader: watch::Receiver<Option<Leader>>,
    stop: watch::Receiver<bool>,
) {
    let (health, health_service) = tonic_health::server::health_reporter();
    for service in ["", "corral.v1.Corral", "corral.v1.Agent"] {
        health.set_service_status(service, tonic_health::ServingStatus::NotServing).await;
    }
    let mut until = stop.clone();
    let stopped = async move {
        let _ = until.wait_for(|s| *s).await;
    };
    let server = tonic::transport::Server::builder()
        .layer(tower::layer::layer_fn(move |inner| Gate { inner, leader: leader.clone() }))
        .add_service(health_service);
    let cap = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let served = match tls {
        Some(tls) => {
            let conns = crate::tls::incoming(listener, tls, cap, stop);
            let incoming =
                tokio_stream::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(conns), |(c, _)| {
                    Ok::<_, std::io::Error>(c)
                });
            server.serve_with_incoming_shutdown(incoming, stopped).await
        }
        None => {
            let conns = crate::conns::incoming(listener, cap, stop);
            let incoming =
                tokio_stream::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(conns), |(c, _)| {
                    Ok::<_, std::io::Error>(c)
                });
            server.serve_with_incoming_shutdown(incoming, stopped).await
        }
    };
    if let Err(e) = served {
        tracing::warn!(error = %e, "the standby's gRPC server stopped");
    }
}

/// Lets health checks through (with the leader in their headers) and answers every
/// other call with the refusal that names the leader.
#[derive(Clone)]
struct Gate<S> {
    inner: S,
    leader: watch::Receiver<Option<Leader>>,
}

impl<S, B, R> tower::Service<http::Request<B>> for Gate<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    R: Default + Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let grpc = self.leader.borrow().as_ref().and_then(|l| l.grpc.clone());
        if req.uri().path().starts_with("/grpc.health.v1.Health/") {
            // NOT_SERVING, and who leads (empty: nobody), for the CLI's probe.
            let clone = self.inner.clone();
            let mut inner = std::mem::replace(&mut self.inner, clone);
            let leader =
                http::HeaderValue::try_from(grpc.unwrap_or_default()).unwrap_or(http::HeaderValue::from_static(""));
            return Box::pin(async move {
                let mut response = inner.call(req).await?;
                response.headers_mut().insert(corral_proto::leader::HEADER, leader);
                Ok(response)
            });
        }
        let refusal = corral_proto::leader::standby_refusal(grpc.as_deref());
        Box::pin(async move { Ok(refusal.into_http()) })
    }
}

/// Sends a browser (or a script) to the same page on the leader's dashboard.
async fn redirect(State(leader): State<watch::Receiver<Option<Leader>>>, uri: Uri) -> Response {
    let base = leader.borrow().as_ref().and_then(|l| l.http.clone());
    match base {
        Some(base) => {
            let to = format!("{}{}", base.trim_end_matches('/'), uri.path_and_query().map_or("/", |p| p.as_str()));
            let body = format!("this coordinator is a standby; the leader's dashboard is at {base}\n");
            (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, to)], body).into_response()
        }
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1".to_string())],
            "this coordinator is a standby and no coordinator with a dashboard leads now; try again shortly\n",
        )
            .into_response(),
    }
}
