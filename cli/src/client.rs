//! Connecting to the coordinator, and turning its refusals into plain errors.

use std::time::Duration;

use anyhow::Context;
use corral_proto::credentials::Bearer;
use corral_proto::tls::ClientTls;
use corral_proto::v1::corral_client::CorralClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

pub type Client = CorralClient<InterceptedService<Channel, Bearer>>;

/// A client of the coordinator that leads among `coordinators` (one URL, or
/// several separated by commas), presenting `token` on every call.
pub async fn connect(coordinators: &str, token: Option<&str>, tls: &ClientTls) -> anyhow::Result<Client> {
    let channel = channel(coordinators, tls).await?;
    Ok(CorralClient::with_interceptor(channel, bearer(token)?)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20))
}

pub fn bearer(token: Option<&str>) -> anyhow::Result<Bearer> {
    Bearer::new(token).map_err(anyhow::Error::msg)
}

/// A connection to the coordinator that leads among those `coordinators` lists
/// (`--coordinator A,B`): all are asked at once (a paused one costs nothing), the
/// first that leads is used, and a leader that standbys name but the list does not
/// is tried next. While a standby answers and none leads (a takeover under way),
/// it asks again for up to [`PATIENCE`]; with no standby answering it says at once
/// what is wrong.
pub async fn channel(coordinators: &str, tls: &ClientTls) -> anyhow::Result<Channel> {
    let listed = corral_proto::leader::urls(coordinators);
    if listed.is_empty() {
        anyhow::bail!("invalid --coordinator: it names no URL (one, or several separated by commas)");
    }
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut wait = Duration::from_millis(100);
    loop {
        match find_leader(&listed, tls).await {
            Ok(channel) => return Ok(channel),
            Err((_, true)) if tokio::time::Instant::now() + wait < deadline => {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(1));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// One round of asking `listed` (see [`channel`]); an error says too whether a
/// standby answered.
async fn find_leader(listed: &[String], tls: &ClientTls) -> Result<Channel, (anyhow::Error, bool)> {
    let mut standby_answered = false;
    let mut failures: Vec<anyhow::Error> = Vec::new();
    let mut named: Vec<String> = Vec::new();
    let mut asking = tokio::task::JoinSet::new();
    for url in listed.iter().cloned() {
        let tls = tls.clone();
        asking.spawn(async move { (probe(&url, &tls).await, url) });
    }
    let mut tried = listed.to_vec();
    loop {
        while let Some(Ok((answer, url))) = asking.join_next().await {
            match answer {
                Ok((channel, None)) => return Ok(channel),
                Ok((_, Some(Some(leader)))) => {
                    standby_answered = true;
                    failures.push(anyhow::anyhow!("the coordinator at {url} is a standby; the leader is at {leader}"));
                    if !tried.contains(&leader) {
                        named.push(leader);
                    }
                }
                Ok((_, Some(None))) => {
                    standby_answered = true;
                    failures.push(anyhow::anyhow!(
                        "the coordinator at {url} is a standby and none leads now (a takeover takes a few seconds): try again"
                    ));
                }
                Err(e) => failures.push(e),
            }
        }
        let Some(leader) = named.pop() else { break };
        if tried.len() >= MAX_TRIES {
            break;
        }
        tried.push(leader.clone());
        let tls = tls.clone();
        asking.spawn(async move { (probe(&leader, &tls).await, leader) });
    }
    let error = match failures.len() {
        1 => failures.remove(0),
        _ => anyhow::anyhow!(
            "no coordinator leads among {}: {}",
            tried.join(", "),
            failures.iter().map(|e| format!("{e:#}")).collect::<Vec<_>>().join("; ")
        ),
    };
    Err((error, standby_answered))
}

/// The most coordinators one connection tries (those listed and those named as
/// the leader).
const MAX_TRIES: usize = 8;

/// A connection to `url`, and whether it stands by (see [`standing_by`]).
async fn probe(url: &str, tls: &ClientTls) -> anyhow::Result<(Channel, Option<Option<String>>)> {
    let channel = channel_to(url, tls).await?;
    let standby =
        standing_by(&channel).await.map_err(|e| anyhow::anyhow!("the coordinator at {url} does not answer: {e}"))?;
    Ok((channel, standby))
}

/// Whether the coordinator on `channel` stands by, and if so who leads (`None`:
/// nobody now), or why it did not answer (paused, hung, gone). Its health answer
/// says so; one that answers without saying leads.
async fn standing_by(channel: &Channel) -> Result<Option<Option<String>>, String> {
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let request = tonic_health::pb::HealthCheckRequest { service: String::new() };
    let answer = tokio::time::timeout(Duration::from_secs(3), health.check(request))
        .await
        .map_err(|_| "no answer within 3s".to_string())?;
    let metadata = match &answer {
        Ok(response) => response.metadata(),
        // Unreachable after all (the connection broke).
        Err(status) if status.code() == tonic::Code::Unavailable && status.metadata().is_empty() => {
            return Err(status.message().to_string())
        }
        Err(status) => status.metadata(),
    };
    let Some(leader) = metadata.get(corral_proto::leader::HEADER) else { return Ok(None) };
    let leader = leader.to_str().unwrap_or_default().trim();
    Ok(Some((!leader.is_empty()).then(|| leader.to_string())))
}

/// A connection to the coordinator at `url` (TLS for `https://`), or an error
/// that says what to do.
async fn channel_to(url: &str, tls: &ClientTls) -> anyhow::Result<Channel> {
    let target = corral_proto::tls::endpoint(url, tls, |endpoint: Endpoint| {
        endpoint
            .connect_timeout(Duration::from_secs(3))
            // A coordinator that stops answering (paused, its host hung) fails the
            // call instead of holding it for ever.
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(10))
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
        self.map(tonic::Response::into_inner).map_err(|s| match s.code() {
            tonic::Code::PermissionDenied => anyhow::anyhow!("{}", in_cli_words(s.message())),
            _ => anyhow::anyhow!("{}", s.message()),
        })
    }
}

/// The commands each gRPC method serves, as a refusal names them.
const COMMANDS: &[(&str, &str)] = &[
    ("CreatePool", "pool create"),
    ("ListPools", "pool list"),
    ("GetPool", "pool show"),
    ("ResizePool", "pool resize"),
    ("SetAutoscale", "pool autoscale"),
    ("DeletePool", "pool delete"),
    ("ListNodes", "node list"),
    ("GetNode", "node show"),
    ("DrainNode", "node drain"),
    ("RemoveNode", "node remove"),
    ("SubmitJob", "job submit"),
    ("ListJobs", "job list"),
    ("GetJob", "job show"),
    ("CancelJob", "job cancel"),
    ("CancelTask", "task cancel"),
    ("RetryJob", "job retry"),
    ("DeleteJob", "job delete"),
    ("AddTasks", "job add-tasks"),
    ("CloseJob", "job close"),
    ("UpdateJob", "job update"),
    ("WatchJob", "job watch"),
    ("ListTasks", "task list"),
    ("GetTask", "task show"),
    ("ExplainTask", "task explain"),
    ("ReadLog", "task logs"),
    ("WatchEvents", "events"),
    ("CreateToken", "token create"),
    ("ListTokens", "token list"),
    ("RevokeToken", "token revoke"),
    ("WhoAmI", "token whoami"),
    ("GetNotifySecret", "notify-secret"),
    ("CreateSchedule", "schedule create"),
    ("ListSchedules", "schedule list"),
    ("GetSchedule", "schedule show"),
    ("PauseSchedule", "schedule pause/resume"),
    ("UpdateSchedule", "schedule update"),
    ("TriggerSchedule", "schedule trigger"),
    ("BackfillSchedule", "schedule backfill"),
    ("DeleteSchedule", "schedule delete"),
    ("CreateTemplate", "template create"),
    ("ListTemplates", "template list"),
    ("GetTemplate", "template show"),
    ("DeleteTemplate", "template delete"),
    ("UpdateTemplate", "template update"),
    ("Dispatch", "dispatch"),
    ("CreateTrigger", "trigger create"),
    ("ListTriggers", "trigger list"),
    ("GetTrigger", "trigger show"),
    ("PauseTrigger", "trigger pause/resume"),
    ("DeleteTrigger", "trigger delete"),
];

/// A role refusal (`SubmitJob needs a submit or admin token; ...`) in the words of
/// the command that made the call (`job submit needs ...`).
pub fn in_cli_words(message: &str) -> String {
    let method = message.split_once(' ').map_or("", |(first, _)| first);
    match COMMANDS.iter().find(|(m, _)| *m == method) {
        Some((m, command)) => format!("{command}{}", &message[m.len()..]),
        None => message.to_string(),
    }
}

/// One try of a call, borrowing the client.
pub type Call<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>> + Send + 'a>>;

/// How long a call that makes something keeps trying while no coordinator leads:
/// a lease (3 s by default) runs out, and a standby takes over, well within it.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Whether a failed call may be tried again (elsewhere, or later): the coordinator
/// could not be reached, stands by, or its connection broke mid-call (a leader
/// killed while it answered: tonic says `Unknown`, "transport error"). A store that
/// cannot write is not waited for.
pub fn worth_retrying(status: &tonic::Status) -> bool {
    match status.code() {
        tonic::Code::Unavailable => !status.message().contains("store cannot write"),
        tonic::Code::Unknown => {
            let source = std::error::Error::source(status);
            source.is_some_and(|e| e.is::<tonic::transport::Error>()) || status.message() == "transport error"
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_connection_is_worth_another_try_and_a_refusal_is_not() {
        assert!(worth_retrying(&tonic::Status::unavailable("connection refused")));
        assert!(worth_retrying(&tonic::Status::unknown("transport error")));
        assert!(!worth_retrying(&tonic::Status::unknown("the handler failed")));
        assert!(!worth_retrying(&tonic::Status::unavailable("the store cannot write: disk full")));
        assert!(!worth_retrying(&tonic::Status::invalid_argument("pool: no such pool")));
    }

    #[test]
    fn role_refusals_name_the_command_not_the_method() {
        assert_eq!(
            in_cli_words("SubmitJob needs a submit or admin token; token 'reader' has role read"),
            "job submit needs a submit or admin token; token 'reader' has role read"
        );
        assert_eq!(in_cli_words("DeletePool needs an admin token"), "pool delete needs an admin token");
        assert_eq!(in_cli_words("job 3 is bob's"), "job 3 is bob's", "other refusals are left as they are");
    }
}
