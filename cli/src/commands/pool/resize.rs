//! `corral pool resize NAME --nodes N`.

use corral_proto::v1 as pb;

use super::super::Context;
use super::render::print_pool;
use crate::client::{ApiResult, Client};
use crate::Exit;

pub async fn run(ctx: &Context, client: &mut Client, name: String, nodes: u32) -> anyhow::Result<Exit> {
    let pool = client.resize_pool(pb::ResizePoolRequest { name, target_nodes: nodes }).await.api()?;
    print_pool(ctx, &pool);
    Ok(Exit::Ok)
}
