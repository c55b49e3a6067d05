//! Connecting to the coordinator, and turning its refusals into plain errors.

use std::time::Duration;

use anyhow::Context;
use corral_proto::credentials::Bearer;
use corral_proto::tls::ClientTls;
use corral_proto::v1::corral_client::CorralClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

pub type Client = CorralClient<InterceptedService<Channel, Bearer>>;

/// A client of the coordinator at `url` that presents `token` on every call.
pub async fn connect(url: &str, token: Option<&str>, tls: &ClientTls) -> anyhow::Result<Client> {
    let channel = channel(url, tls).await?;
    Ok(CorralClient::with_interceptor(channel, bearer(token)?)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20))
}

pub fn bearer(token: Option<&str>) -> anyhow::Result<Bearer> {
    Bearer::new(token).map_err(anyhow::Error::msg)
}

/// A connection to the coordinator (TLS for `https://`), or an error that says
/// what to do.
pub async fn channel(url: &str, tls: &ClientTls) -> anyhow::Result<Channel> {
    let target = corral_proto::tls::endpoint(url, tls, |endpoint: Endpoint| {
        endpoint
            .connect_timeout(Duration::from_secs(3))
            // Room for objects streaming in (see the coordinator's server settings).
            .initial_stream_window_size(Some(8 << 20))
            .initial_connection_window_size(Some(16 << 20))
    })
    .map_err(anyhow::Error::msg)?;
    let connected = target.connect().await;
    if let Err(e) = &connected {
        let root = corral_proto::tls::root_cause(e);
        if root.starts_with("TLS with") {
            anyhow::bail!("cannot reach the coordinator at {url}: {root}");
        }
    }
    connected.with_context(|| {
        format!(
            "cannot reach the coordinator at {url}: is it running? Start one with `corral up`, or point --coordinator (or CORRAL_COORDINATOR) at it"
        )
    })
}

/// Makes a gRPC status an error whose text is the coordinator's message.
pub trait ApiResult<T> {
    fn api(self) -> anyhow::Result<T>;
}

impl<T> ApiResult<T> for Result<tonic::Response<T>, tonic::Status> {
    fn api(self) -> anyhow::Result<T> {
        self.map(tonic::Response::into_inner).map_err(|s| anyhow::anyhow!("{}", s.message()))
    }
}

/// One try of a call, borrowing the client.
pub type Call<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>> + Send + 'a>>;

/// How often a call that makes something is tried while the coordinator cannot be
/// reached.
const TRIES: u32 = 4;

/// Makes `call` (a submission or a dispatch, which carries an idempotency key, so
/// at most one job is made), trying again while the coordinator is unreachable: a
/// connection that broke after the request was sent leaves no way to know whether
/// it was taken. A store that cannot write is not waited for: it says so at once.
pub async fn retrying<T>(
    client: &mut Client,
    mut call: impl for<'a> FnMut(&'a mut Client) -> Call<'a, T>,
) -> anyhow::Result<T> {
    let mut wait = Duration::from_millis(250);
    for _ in 1..TRIES {
        match call(client).await {
            Err(s) if s.code() == tonic::Code::Unavailable && !s.message().contains("store cannot write") => {
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            other => return other.api(),
        }
    }
    call(client).await.api()
}
