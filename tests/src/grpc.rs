//! Talking to a coordinator over gRPC from a test, as a client or as a node would.

use std::time::Duration;

use corral_proto::credentials::Bearer;
use corral_proto::v1 as pb;
use tonic::transport::Channel;

/// A runtime for a test's gRPC calls.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Opens `reg`'s session and heartbeats on it in the background, as its agent
/// would, so the node stays up however slowly a test runs.
pub async fn keep_alive(channel: Channel, reg: &pb::RegisterResponse) {
    let mut session =
        pb::agent_client::AgentClient::with_interceptor(channel, Bearer::new(Some(&reg.node_secret)).unwrap());
    let hello = pb::AgentMessage {
        hello: Some(pb::Hello { node_id: reg.node_id.clone(), ..Default::default() }),
        ..Default::default()
    };
    let beats = tokio_stream::StreamExt::map(
        tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(Duration::from_millis(100))),
        |_| pb::AgentMessage { heartbeat: Some(pb::Heartbeat::default()), ..Default::default() },
    );
    let outbound = tokio_stream::StreamExt::chain(tokio_stream::once(hello), beats);
    let mut downstream = session.session(outbound).await.unwrap().into_inner();
    tokio::spawn(async move { while let Ok(Some(_)) = downstream.message().await {} });
}
