//! `corral pool list`.

use corral_proto::v1 as pb;

use super::super::Context;
use super::render::{nodes_summary, pool_json};
use crate::client::{ApiResult, Client};
use crate::output;
use crate::Exit;

pub async fn run(ctx: &Context, client: &mut Client) -> anyhow::Result<Exit> {
    let pools = client.list_pools(pb::ListPoolsRequest {}).await.api()?.pools;
    if ctx.json() {
        output::json(&pools.iter().map(pool_json).collect());
    } else {
        let rows: Vec<Vec<String>> = pools
            .iter()
            .map(|p| {
                let spec = p.spec.clone().unwrap_or_default();
                vec![
                    spec.name,
                    spec.provider,
                    nodes_summary(p),
                    format!("{}/{}", p.slots_used, p.slots_total),
                    p.ready_tasks.to_string(),
                    p.active_jobs.to_string(),
                ]
            })
            .collect();
        output::table(&["NAME", "PROVIDER", "NODES", "SLOTS", "READY", "JOBS"], &rows);
    }
    Ok(Exit::Ok)
}
