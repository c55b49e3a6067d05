//! `corral pool show NAME`.

use corral_proto::v1 as pb;

use super::super::Context;
use super::render::print_pool;
use crate::client::{ApiResult, Client};
use crate::Exit;

pub async fn run(ctx: &Context, client: &mut Client, name: String) -> anyhow::Result<Exit> {
    let pool = client.get_pool(pb::GetPoolRequest { name }).await.api()?;
    print_pool(ctx, &pool);
    Ok(Exit::Ok)
}
