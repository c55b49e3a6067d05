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

    pub fn json(&self) -> bool {
        self.format == Format::Json
    }
}
