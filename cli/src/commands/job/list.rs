//! `corral job list`: jobs, with their state, counts and how long they took; by
//! default the active ones and those that ended in the last hour.

use corral_proto::v1 as pb;

use super::super::Context;
use super::render::{counts_line, finished, job_json, total};
use crate::client::{ApiResult, Client};
use crate::output;
use crate::Exit;

/// How long an ended job stays in the default list.
const RECENT_MS: u64 = 3600 * 1000;

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Only jobs in this state: active, completed, failed, cancelled, or finished
    /// (any of the last three) [default: active, and those that ended in the last hour].
    #[arg(long, value_name = "STATE", conflicts_with = "all")]
    state: Option<String>,
    /// Every job, whatever its state and age.
    #[arg(long)]
    all: bool,
    /// Only the jobs of this owner (a token's name).
    #[arg(long, value_name = "TOKEN", conflicts_with = "mine")]
    owner: Option<String>,
    /// Only the jobs of the token this command presents.
    #[arg(long)]
    mine: bool,
    /// Only the jobs of this pool.
    #[arg(long)]
    pool: Option<String>,
    /// Only the jobs whose name matches this glob (`render-*`).
    #[arg(long, value_name = "GLOB")]
    name: Option<String>,
    /// Only the jobs this schedule made.
    #[arg(long, value_name = "NAME")]
    schedule: Option<String>,
    /// Only the jobs dispatched from this template (by hand, over HTTP or by a trigger).
    #[arg(long, value_name = "NAME")]
    template: Option<String>,
    /// At most N jobs, the newest first.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    limit: Option<u32>,
}

impl ListArgs {
    /// The request these flags make, at `now_ms`.
    fn request(&self, now_ms: u64) -> anyhow::Result<pb::ListJobsRequest> {
        let (states, ended_since_ms) = match (self.state.as_deref(), self.all) {
            (_, true) => (Vec::new(), 0),
            (None, false) => (vec!["active".to_string()], now_ms.saturating_sub(RECENT_MS)),
            (Some("finished"), false) => (["completed", "failed", "cancelled"].map(String::from).to_vec(), 0),
            (Some(state @ ("active" | "completed" | "failed" | "cancelled")), false) => (vec![state.to_string()], 0),
            (Some(other), false) => {
                anyhow::bail!("invalid --state: '{other}' is not one of active, completed, failed, cancelled, finished")
            }
        };
        Ok(pb::ListJobsRequest {
            schedule: self.schedule.clone().unwrap_or_default(),
            states,
            ended_since_ms,
            owner: self.owner.clone().unwrap_or_default(),
            pool: self.pool.clone().unwrap_or_default(),
            name: self.name.clone().unwrap_or_default(),
            limit: self.limit.unwrap_or(0),
            template: self.template.clone().unwrap_or_default(),
        })
    }

    pub async fn run(self, ctx: &Context, client: &mut Client) -> anyhow::Result<Exit> {
        let now_ms = now_ms();
        let mut req = self.request(now_ms)?;
        if self.mine {
            req.owner = client.who_am_i(pb::WhoAmIRequest {}).await.api()?.name;
        }
        let jobs = client.list_jobs(req).await.api()?.jobs;
        if ctx.json() {
            output::json(&jobs.iter().map(job_json).collect());
            return Ok(Exit::Ok);
        }
        let rows: Vec<Vec<String>> = jobs
            .iter()
            .map(|j| {
                let c = j.counts.unwrap_or_default();
                let end = if j.finished_at_ms > 0 { j.finished_at_ms } else { now_ms };
                vec![
                    j.id.to_string(),
                    j.name.clone(),
                    j.pool.clone(),
                    if j.owner.is_empty() { "-".into() } else { j.owner.clone() },
                    super::render::state_line(j),
                    format!("{}/{}", finished(&c), total(j)),
                    output::duration_ms(end.saturating_sub(j.submitted_at_ms)),
                    counts_line(&c),
                ]
            })
            .collect();
        output::table(&["ID", "NAME", "POOL", "OWNER", "STATE", "DONE", "DURATION", "TASKS"], &rows);
        Ok(Exit::Ok)
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        list: ListArgs,
    }

    fn request(args: &[&str]) -> anyhow::Result<pb::ListJobsRequest> {
        let cli = Cli::try_parse_from(std::iter::once("list").chain(args.iter().copied()))?;
        cli.list.request(10 * RECENT_MS)
    }

    #[test]
    fn the_default_is_active_jobs_and_those_that_ended_within_the_hour() {
        let req = request(&[]).unwrap();
        assert_eq!((req.states, req.ended_since_ms), (vec!["active".to_string()], 9 * RECENT_MS));
        let all = request(&["--all"]).unwrap();
        assert!(all.states.is_empty() && all.ended_since_ms == 0);
        let finished = request(&["--state", "finished", "--limit", "5", "--name", "render-*"]).unwrap();
        assert_eq!(finished.states, ["completed", "failed", "cancelled"]);
        assert_eq!((finished.limit, finished.name.as_str(), finished.ended_since_ms), (5, "render-*", 0));
        let err = request(&["--state", "done"]).unwrap_err().to_string();
        assert!(err.contains("invalid --state: 'done'"), "{err}");
        assert!(request(&["--state", "active", "--all"]).is_err(), "--all takes no --state");
    }
}
