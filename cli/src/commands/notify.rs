//! `corral notify-secret`: the key that signs job callbacks (admin only).

use corral_proto::v1 as pb;
use serde_json::json;

use super::Context;
use crate::client::ApiResult;
use crate::output;
use crate::Exit;

/// Print the key of the `Corral-Signature: sha256=HEX` header on job callbacks
/// (`job submit --notify URL`): the HMAC-SHA256 of the request body under it.
#[derive(clap::Args, Debug)]
pub struct NotifySecretArgs {}

impl NotifySecretArgs {
    pub async fn run(self, ctx: &Context) -> anyhow::Result<Exit> {
        let mut client = ctx.client().await?;
        let secret = client.get_notify_secret(pb::GetNotifySecretRequest {}).await.api()?.secret;
        if ctx.json() {
            output::json(&json!({ "secret": secret }));
        } else {
            println!("{secret}");
        }
        Ok(Exit::Ok)
    }
}
