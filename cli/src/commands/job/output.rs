//! `corral job output JOB`: download what its tasks' output patterns uploaded.

use serde_json::json;

use corral_proto::v1 as pb;

use super::super::Context;
use crate::client::{ApiResult, Client};
use crate::output;
use crate::Exit;

pub async fn run(
    ctx: &Context,
    client: &mut Client,
    job: u64,
    task: Option<String>,
    dest: std::path::PathBuf,
) -> anyhow::Result<Exit> {
    client.get_job(pb::GetJobRequest { job_id: job }).await.api()?;
    let prefix = match &task {
        Some(task) => corral_types::paths::task_outputs(corral_types::JobId(job), task),
        None => corral_types::paths::job(corral_types::JobId(job)),
    };
    let dest = match &task {
        Some(task) => dest.join(task),
        None => dest,
    };
    let mut objects = crate::commands::file::connect(ctx).await?;
    let got = crate::commands::file::download_all(&mut objects, &prefix, &dest).await?;
    if ctx.json() {
        let items: Vec<_> = got.iter().map(|(path, size)| json!({ "path": path, "size": size })).collect();
        output::json(&serde_json::Value::Array(items));
    } else if got.is_empty() {
        println!("job {job} has no outputs{}", task.map(|t| format!(" for task {t}")).unwrap_or_default());
    } else {
        let bytes: u64 = got.iter().map(|(_, s)| s).sum();
        println!("downloaded {} file(s), {bytes} bytes, into {}", got.len(), dest.display());
    }
    Ok(Exit::Ok)
}
