//! `corral job logs JOB`: every task's output, each line prefixed with its task
//! (`hq job cat`), in task order.

use std::io::Write;

use corral_proto::v1 as pb;
use serde_json::json;

use super::super::task::{each_chunk, list, read_whole, Which};
use super::super::Context;
use crate::client::Client;
use crate::output;
use crate::Exit;

/// The most of each task's output `-o json` holds (one document holds every task's).
const JSON_PER_TASK: u64 = 1 << 20;

pub async fn run(ctx: &Context, client: &mut Client, job: u64, stderr: bool) -> anyhow::Result<Exit> {
    let tasks: Vec<pb::Task> = list(client, job, None).await?.into_iter().filter(|t| t.attempts_count > 0).collect();
    let mut shown = Vec::new();
    let mut out = std::io::stdout().lock();
    for t in &tasks {
        let id = if t.name.is_empty() { t.index.to_string() } else { t.name.clone() };
        if ctx.json() {
            let (data, cut, attempt) = read_whole(client, (Which::latest(job, &id), stderr), JSON_PER_TASK).await?;
            let text = String::from_utf8_lossy(&data);
            shown
                .push(json!({ "task": id, "attempt": attempt, "output": text, "bytes": data.len(), "truncated": cut }));
            continue;
        }
        // Streamed a chunk at a time: a line split between chunks is held until its end.
        let mut partial: Vec<u8> = Vec::new();
        let mut failed = Ok(());
        each_chunk(client, (Which::latest(job, &id), stderr), u64::MAX, |chunk| {
            partial.extend_from_slice(chunk);
            while let Some(end) = partial.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = partial.drain(..=end).collect();
                if failed.is_ok() {
                    failed = write!(out, "{id}: ").and_then(|_| out.write_all(&line));
                }
            }
            // A line without end is not held whole: it goes out a megabyte at a time.
            if partial.len() > 1 << 20 && failed.is_ok() {
                failed = write!(out, "{id}: ").and_then(|_| out.write_all(&partial)).and_then(|_| out.write_all(b"\n"));
                partial.clear();
            }
        })
        .await?;
        if !partial.is_empty() && failed.is_ok() {
            failed = write!(out, "{id}: ").and_then(|_| out.write_all(&partial)).and_then(|_| out.write_all(b"\n"));
        }
        failed?;
    }
    if ctx.json() {
        output::json(&serde_json::Value::Array(shown));
    }
    Ok(Exit::Ok)
}
