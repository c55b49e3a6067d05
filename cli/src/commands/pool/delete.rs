//! `corral pool delete NAME [--force]`.

use serde_json::json;

use corral_proto::v1 as pb;

use super::super::Context;
use crate::client::{ApiResult, Client};
use crate::output;
use crate::Exit;

pub async fn run(ctx: &Context, client: &mut Client, name: String, force: bool) -> anyhow::Result<Exit> {
    let resp = client.delete_pool(pb::DeletePoolRequest { name: name.clone(), force }).await.api()?;
    if ctx.json() {
        output::json(&json!({
            "deleted": name,
            "cancelled_jobs": resp.cancelled_jobs,
            "stopped_nodes": resp.stopped_nodes,
            "draining_nodes": resp.draining_nodes,
        }));
    } else if resp.draining_nodes > 0 {
        println!(
            "deleting pool {name}: {} node(s) stopped; {} node(s) finish their running tasks first, then the pool is deleted and what has not run of its jobs is cancelled (--force stops them now)",
            resp.stopped_nodes, resp.draining_nodes
        );
    } else {
        println!(
            "deleted pool {name}: {} node(s) stopped, {} job(s) cancelled",
            resp.stopped_nodes,
            resp.cancelled_jobs.len()
        );
    }
    Ok(Exit::Ok)
}
