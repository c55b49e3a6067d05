//! The gRPC gate: a tower layer in front of every service. It finds what the method
//! needs in [`super::rules`], authenticates the `authorization` header, and either
//! answers with the refusal itself or passes the request on with the [`Principal`]
//! in its extensions, where handlers find it with [`super::caller`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::Status;

use super::rules::{self, Need};
use super::{Auth, Principal};

#[derive(Clone)]
pub struct AuthLayer {
    auth: Arc<Auth>,
}

impl AuthLayer {
    pub fn new(auth: Arc<Auth>) -> Self {
        AuthLayer { auth }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService { inner, auth: self.auth.clone() }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    auth: Arc<Auth>,
}

/// Decides a request from its path and headers.
pub fn check(auth: &Auth, path: &str, headers: &http::HeaderMap, now_ms: u64) -> Result<Option<Principal>, Status> {
    let need = rules::need(path)
        .ok_or_else(|| Status::unimplemented(format!("{path}: no such method on this coordinator")))?;
    if need == Need::Public {
        return Ok(None);
    }
    let header = headers.get(http::header::AUTHORIZATION).map(|v| v.as_bytes());
    let who = auth.authenticate(header, now_ms)?;
    rules::allow(&who, need, path)?;
    Ok(Some(who))
}

impl<S, B, R> tower::Service<http::Request<B>> for AuthService<S>
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

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        match check(&self.auth, req.uri().path(), req.headers(), super::now_ms()) {
            Ok(who) => {
                if let Some(who) = who {
                    req.extensions_mut().insert(who);
                }
                // The clone that was polled ready serves this call; the fresh clone
                // stays for the next one (tower's usual dance).
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                Box::pin(inner.call(req))
            }
            Err(status) => {
                tracing::debug!(path = req.uri().path(), code = ?status.code(), "request refused");
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}
