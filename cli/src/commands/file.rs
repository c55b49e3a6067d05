//! `corral file ...`: the object store that task inputs and outputs live in.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use corral_agent::objects::{self, Client};
use corral_proto::v1 as pb;
use serde_json::json;

use super::Context;
use crate::client::ApiResult;
use crate::output;
use crate::Exit;

#[derive(Subcommand, Debug)]
pub enum FileCommand {
    /// Upload a local file (streamed; any size). Tried again while no coordinator
    /// answers (a failover), under an idempotency key, so the put is recorded, and
    /// fires the triggers on its path, once.
    Put {
        local: PathBuf,
        /// The object's path in the store [default: the file's name].
        object: Option<String>,
        /// Make the put safe for your own retries too: the same key (within 24 h)
        /// records it and fires its triggers once. Without it the CLI picks one for
        /// its own retries.
        #[arg(long, value_name = "KEY")]
        idempotency_key: Option<String>,
    },
    /// Download an object to a local file.
    Get {
        object: String,
        /// Where to write it [default: the object's file name, here].
        local: Option<PathBuf>,
    },
    /// List objects (under a prefix).
    Ls { prefix: Option<String> },
    /// Delete an object.
    Rm { object: String },
}

/// A client of the object service on the coordinator.
pub async fn connect(ctx: &Context) -> anyhow::Result<Client> {
    let channel = crate::client::channel(&ctx.coordinator, &ctx.tls).await?;
    Ok(objects::client(corral_proto::leader::Follow::new(channel), crate::client::bearer(ctx.token.as_deref())?))
}

/// Downloads every object under `prefix` into `dest`, keeping paths below the prefix.
pub async fn download_all(client: &mut Client, prefix: &str, dest: &Path) -> anyhow::Result<Vec<(String, u64)>> {
    let listing = client.list(pb::ListObjectsRequest { prefix: prefix.to_string() }).await.api()?;
    let mut got = Vec::new();
    for object in listing.objects {
        let relative = object.path.strip_prefix(prefix).unwrap_or(&object.path).trim_start_matches('/');
        if !objects::is_inside(Path::new(relative)) {
            continue;
        }
        let size = objects::download(client, &object.path, &dest.join(relative)).await?;
        got.push((object.path, size));
    }
    Ok(got)
}

/// Uploads `local` to `object` under `key`, trying again while no coordinator
/// answers (each try connects anew, so it finds the one that leads after a
/// failover): a connection that broke after the last part was sent leaves no way to
/// know whether the put was recorded, and the key makes a second try harmless.
async fn put_retrying(
    ctx: &Context,
    client: &mut Client,
    local: &Path,
    object: &str,
    key: &str,
) -> anyhow::Result<u64> {
    let deadline = tokio::time::Instant::now() + crate::client::PATIENCE;
    let mut wait = std::time::Duration::from_millis(250);
    loop {
        match objects::upload_once(client, local, object, key).await {
            Err(objects::TransferError::Unreachable(_)) if tokio::time::Instant::now() + wait < deadline => {}
            other => return Ok(other?),
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(std::time::Duration::from_secs(2));
        if let Ok(fresh) = connect(ctx).await {
            *client = fresh;
        }
    }
}

impl FileCommand {
    pub async fn run(self, ctx: &Context) -> anyhow::Result<Exit> {
        let mut client = connect(ctx).await?;
        match self {
            FileCommand::Put { local, object, idempotency_key } => {
                let object = match object {
                    Some(o) => o,
                    None => local.file_name().map(|n| n.to_string_lossy().into_owned()).ok_or_else(|| {
                        anyhow::anyhow!("'{}' names no file; give the object's path", local.display())
                    })?,
                };
                let key = idempotency_key
                    .unwrap_or_else(|| format!("corral-cli-{}", corral_proto::credentials::random_hex(16)));
                let size = put_retrying(ctx, &mut client, &local, &object, &key).await?;
                if ctx.json() {
                    output::json(&json!({ "path": object, "size": size }));
                } else {
                    println!("put {object} ({size} bytes)");
                }
            }
            FileCommand::Get { object, local } => {
                let local = match local {
                    Some(l) => l,
                    None => PathBuf::from(object.rsplit('/').next().unwrap_or(&object)),
                };
                let size = objects::download(&mut client, &object, &local).await?;
                if ctx.json() {
                    output::json(&json!({ "path": object, "local": local, "size": size }));
                } else {
                    println!("got {object} into {} ({size} bytes)", local.display());
                }
            }
            FileCommand::Ls { prefix } => {
                let listing = client.list(pb::ListObjectsRequest { prefix: prefix.unwrap_or_default() }).await.api()?;
                if ctx.json() {
                    let items: Vec<_> = listing
                        .objects
                        .iter()
                        .map(|o| json!({ "path": o.path, "size": o.size, "modified_at_ms": o.modified_at_ms }))
                        .collect();
                    output::json(&serde_json::Value::Array(items));
                } else {
                    let rows: Vec<Vec<String>> = listing
                        .objects
                        .iter()
                        .map(|o| vec![o.size.to_string(), output::timestamp(o.modified_at_ms), o.path.clone()])
                        .collect();
                    output::table(&["SIZE", "MODIFIED", "PATH"], &rows);
                }
            }
            FileCommand::Rm { object } => {
                client.delete(pb::DeleteObjectRequest { path: object.clone() }).await.api()?;
                if !ctx.json() {
                    println!("deleted {object}");
                }
            }
        }
        Ok(Exit::Ok)
    }
}
