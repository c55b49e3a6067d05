//! The subcommands, one file each.

pub mod demo;
pub mod events;
pub mod file;
pub mod job;
pub mod node;
pub mod notify;
pub mod pool;
pub mod schedule;
pub mod task;
pub mod template;
pub mod token;
pub mod trigger;
pub mod up;

use crate::client::{self, Client};
use crate::output::Format;

/// What every subcommand gets from the global flags.
pub struct Context {
    pub coordinator: String,
    pub format: Format,
    /// The token every call presents (see `corral_proto::credentials::load`).
    pub token: Option<String>,
    /// How `https://` coordinators are trusted.
    pub tls: corral_proto::tls::ClientTls,
}

impl Context {
    pub async fn client(&self) -> anyhow::Result<Client> {
        client::connect(&self.coordinator, self.token.as_deref(), &self.tls).await
    }

    /// Makes `call` (a submission or a dispatch, which carries an idempotency key,
    /// so at most one job is made), trying again while no coordinator answers: a
    /// connection that broke after the request was sent leaves no way to know
    /// whether it was taken. Each try connects anew, so it finds the coordinator
    /// that leads after a failover.
    pub async fn retrying<T>(
        &self,
        client: &mut Client,
        mut call: impl for<'a> FnMut(&'a mut Client) -> client::Call<'a, T>,
    ) -> anyhow::Result<T> {
        use crate::client::ApiResult;
        let deadline = tokio::time::Instant::now() + client::PATIENCE;
        let mut wait = std::time::Duration::from_millis(250);
        loop {
            match call(client).await {
                Err(s) if client::worth_retrying(&s) && tokio::time::Instant::now() + wait < deadline => {}
                other => return other.api(),
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(std::time::Duration::from_secs(2));
            // Unreachable ones are tried again at the next turn.
            if let Ok(fresh) = self.client().await {
                *client = fresh;
            }
        }
    }

    pub fn json(&self) -> bool {
        self.format == Format::Json
    }
}
