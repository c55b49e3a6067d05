//! Finding the leader among several coordinators on one PostgreSQL database.
//!
//! Clients and agents are given a list (`--coordinator A,B,C`). A standby answers
//! every call with UNAVAILABLE and names the leader's advertised URL in the
//! [`HEADER`] metadata; the caller goes there. One place spells both sides.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use tonic::codegen::http;
use tonic::codegen::Service;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// The metadata key in which a standby names the leader's URL.
pub const HEADER: &str = "corral-leader";

/// The coordinator URLs in a `--coordinator` value: comma-separated, each trimmed,
/// empty ones dropped, duplicates kept once (in their first place).
pub fn urls(list: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for url in list.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        if !out.iter().any(|u| u == url) {
            out.push(url.to_string());
        }
    }
    out
}

/// What a standby answers every call with: UNAVAILABLE, naming the leader (if one
/// leads) in the message and in [`HEADER`] (empty while none does).
pub fn standby_refusal(leader: Option<&str>) -> Status {
    match leader.and_then(|url| MetadataValue::try_from(url).ok().map(|v| (url, v))) {
        Some((url, value)) => {
            let mut status = Status::unavailable(format!("this coordinator is a standby; the leader is at {url}"));
            status.metadata_mut().insert(HEADER, value);
            status
        }
        None => {
            let mut status =
                Status::unavailable("this coordinator is a standby and no coordinator leads now; try again shortly");
            status.metadata_mut().insert(HEADER, MetadataValue::from_static(""));
            status
        }
    }
}

/// If `status` is a standby's refusal: the leader it names (`None`: nobody leads).
pub fn standing_by(status: &Status) -> Option<Option<String>> {
    if status.code() != Code::Unavailable {
        return None;
    }
    let url = status.metadata().get(HEADER)?.to_str().ok()?.trim();
    Some((!url.is_empty()).then(|| url.to_string()))
}

/// The leader's URL, if `status` is a standby's refusal that names one.
pub fn named_by(status: &Status) -> Option<String> {
    standing_by(status).flatten()
}

/// A channel that can be pointed at another coordinator: every clone follows, so
/// the clients made from it (an agent's object transfers, running while the agent
/// moves to a new leader) reach whichever coordinator leads now.
#[derive(Clone, Debug)]
pub struct Follow(Arc<RwLock<Channel>>);

impl Follow {
    pub fn new(channel: Channel) -> Follow {
        Follow(Arc::new(RwLock::new(channel)))
    }

    /// Sends every call from now on over `channel`.
    pub fn switch(&self, channel: Channel) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = channel;
    }

    fn current(&self) -> Channel {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Service<http::Request<tonic::body::Body>> for Follow {
    type Response = http::Response<tonic::body::Body>;
    type Error = tonic::transport::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Each call waits for the channel it takes (below).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let mut channel = self.current();
        Box::pin(async move {
            std::future::poll_fn(|cx| channel.poll_ready(cx)).await?;
            channel.call(request).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_is_split_trimmed_and_kept_in_order() {
        assert_eq!(urls(" http://a:1 ,http://b:2,, http://a:1 "), ["http://a:1", "http://b:2"]);
        assert!(urls(" , ").is_empty());
    }

    #[test]
    fn a_standby_names_the_leader_and_only_a_refusal_is_read_as_one() {
        let refusal = standby_refusal(Some("https://c2:7070"));
        assert_eq!(refusal.code(), Code::Unavailable);
        assert!(refusal.message().contains("https://c2:7070"), "{}", refusal.message());
        assert_eq!(named_by(&refusal).as_deref(), Some("https://c2:7070"));
        assert_eq!(named_by(&standby_refusal(None)), None);
        assert_eq!(standing_by(&standby_refusal(None)), Some(None));
        assert_eq!(standing_by(&Status::unavailable("connection refused")), None);
        let mut other = Status::internal("boom");
        other.metadata_mut().insert(HEADER, MetadataValue::from_static("http://x"));
        assert_eq!(named_by(&other), None);
        // A URL that cannot be a header value is not sent.
        assert_eq!(standing_by(&standby_refusal(Some("http://a\nb"))), Some(None));
    }
}
