//! `corral job logs JOB`: every task's output, each line prefixed with its task
//! (`hq job cat`), in task order.

use corral_proto::v1 as pb;
use serde_json::json;

use super::super::task::{list, read_whole};
use super::super::Context;
use crate::client::Client;
use crate::output;
use crate::Exit;

pub async fn run(ctx: &Context, client: &mut Client, job: u64, stderr: bool) -> anyhow::Result<Exit> {
    let tasks: Vec<pb::Task> = list(client, job, None).await?.into_iter().filter(|t| t.attempts_count > 0).collect();
    let mut shown = Vec::new();
    for t in &tasks {
        let id = if t.name.is_empty() { t.index.to_string() } else { t.name.clone() };
        let (data, cut, attempt) = read_whole(client, job, &id, stderr, 0).await?;
        let text = String::from_utf8_lossy(&data).into_owned();
        if ctx.json() {
            shown
                .push(json!({ "task": id, "attempt": attempt, "output": text, "bytes": data.len(), "truncated": cut }));
            continue;
        }
        for line in text.lines() {
            println!("{id}: {line}");
        }
        if cut {
            println!("{id}: [cut at {} bytes: corral task logs {job} {id} has it whole]", data.len());
        }
    }
    if ctx.json() {
        output::json(&serde_json::Value::Array(shown));
    }
    Ok(Exit::Ok)
}
