//! `corral schedule ...`: jobs made on a cron expression (in a time zone) or an
//! interval, at most one per slot, with overlap and catch-up policies.

use std::time::Duration;

use clap::Subcommand;
use corral_proto::v1 as pb;
use serde_json::json;

use super::job::spec::parse_time;
use super::job::JobArgs;
use super::Context;
use crate::client::ApiResult;
use crate::output;
use crate::Exit;

#[derive(Subcommand, Debug)]
pub enum ScheduleCommand {
    /// Make a schedule: a job per slot of --cron (in --tz) or --every, given as a
    /// job file or as `job submit` flags and a command after `--`.
    Create(Box<CreateArgs>),
    /// List schedules with their next fire time and counts.
    List,
    /// Show a schedule: its next 5 fire times in its zone, last runs, missed and skipped.
    Show { name: String },
    /// Stop dealing with slots until resumed.
    Pause { name: String },
    /// Change a schedule (its owner or an admin): the priority of the jobs it will
    /// make (jobs it made keep theirs: `job update --priority`).
    Update {
        name: String,
        /// -1000..1000; higher runs first.
        #[arg(long, allow_negative_numbers = true, value_parser = clap::value_parser!(i32).range(-1000..=1000))]
        priority: i32,
    },
    /// Resume: slots missed while paused run if they are within the catch-up window.
    Resume { name: String },
    /// Run the schedule's job now (by its overlap policy); it takes no slot.
    Trigger { name: String },
    /// Run each past slot from --from to --to that has no job yet.
    Backfill {
        name: String,
        /// RFC 3339, or a duration back from now (`2h` = two hours ago).
        #[arg(long, value_parser = parse_past)]
        from: u64,
        /// RFC 3339, or a duration back from now [default: now].
        #[arg(long, value_parser = parse_past)]
        to: Option<u64>,
        /// How the slots run: buffer-all (one after another) or allow (side by side).
        #[arg(long, default_value = "buffer-all", value_parser = ["buffer-all", "allow", "skip", "buffer-one", "cancel-other"])]
        overlap: String,
    },
    /// Delete a schedule; the jobs it made stay.
    Delete { name: String },
}

#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// The schedule's name: 1 to 63 of a-z 0-9 - _.
    #[arg(value_name = "NAME")]
    schedule: String,
    /// Five fields (minute hour day-of-month month day-of-week), or six with a
    /// leading seconds field, e.g. "30 2 * * *" (02:30 every day).
    #[arg(long, required_unless_present = "every", conflicts_with = "every")]
    cron: Option<String>,
    /// The IANA zone --cron is read in (e.g. Europe/Berlin) [default: UTC]. A time
    /// that a daylight-saving change skips runs right after the change; one it
    /// repeats runs once.
    #[arg(long, requires = "cron")]
    tz: Option<String>,
    /// An interval instead of --cron (e.g. 30s, 15m; at least 1s), from --start-at or now.
    #[arg(long, value_parser = corral_types::duration::parse)]
    every: Option<Duration>,
    /// What a slot does while the last run is still active.
    #[arg(long, default_value = "skip", value_parser = ["skip", "buffer-one", "buffer-all", "cancel-other", "allow"])]
    overlap: String,
    /// Slots missed (coordinator down, schedule paused) by at most this long still run
    /// once each; older ones are counted as missed.
    #[arg(long, default_value = "1m", value_parser = corral_types::duration::parse)]
    catchup_window: Duration,
    /// Start each slot up to this long late (a fixed offset per slot), to spread load.
    #[arg(long, value_parser = corral_types::duration::parse)]
    jitter: Option<Duration>,
    /// No slot before this (RFC 3339, or a duration from now).
    #[arg(long, value_parser = parse_time)]
    start_at: Option<u64>,
    /// No slot after this.
    #[arg(long, value_parser = parse_time)]
    end_at: Option<u64>,
    #[command(flatten)]
    job: JobArgs,
}

/// A time in the past: RFC 3339, or a duration back from now.
fn parse_past(s: &str) -> Result<u64, String> {
    if let Some(at) = super::job::spec::parse_rfc3339(s) {
        return at;
    }
    let d = corral_types::duration::parse(s)
        .map_err(|e| format!("{e}; give an RFC 3339 time or a duration back from now (2h)"))?;
    Ok(now_ms().saturating_sub(corral_types::duration::ms(d)))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

fn when(s: &pb::Schedule) -> String {
    if s.cron.is_empty() {
        format!("every {}", output::duration_ms(s.every_ms))
    } else {
        format!("cron '{}' in {}", s.cron, s.tz)
    }
}

fn state(s: &pb::Schedule) -> &'static str {
    if s.ended {
        "ended"
    } else if s.paused {
        "paused"
    } else {
        "active"
    }
}

fn schedule_json(s: &pb::Schedule) -> serde_json::Value {
    json!({
        "name": s.name,
        "priority": s.priority,
        "state": state(s),
        "cron": (!s.cron.is_empty()).then_some(&s.cron),
        "tz": (!s.tz.is_empty()).then_some(&s.tz),
        "every_ms": (s.every_ms > 0).then_some(s.every_ms),
        "overlap": s.overlap,
        "catchup_window_ms": s.catchup_window_ms,
        "jitter_ms": s.jitter_ms,
        "start_at_ms": (s.start_at_ms > 0).then_some(s.start_at_ms),
        "end_at_ms": (s.end_at_ms > 0).then_some(s.end_at_ms),
        "pool": s.pool,
        "job_name": s.job_name,
        "owner": s.owner,
        "command": s.task.as_ref().map(|t| &t.argv),
        "created_at_ms": s.created_at_ms,
        "cursor_ms": s.cursor_ms,
        "next_ms": s.next_ms,
        "next": s.next,
        "missed": s.missed,
        "skipped": s.skipped,
        "buffered": s.buffered,
        "last_error": (!s.last_error.is_empty()).then_some(&s.last_error),
        "active_jobs": s.active_jobs,
        "runs": s.runs.iter().map(|r| json!({
            "slot_ms": r.slot_ms,
            "job_id": r.job_id,
            "state": run_state(r),
        })).collect::<Vec<_>>(),
    })
}

fn run_state(r: &pb::ScheduleRun) -> &'static str {
    match r.state() {
        pb::JobState::Unspecified => "deleted",
        s => s.as_word(),
    }
}

fn print(ctx: &Context, s: &pb::Schedule) {
    if ctx.json() {
        output::json(&schedule_json(s));
        return;
    }
    let mut rows = vec![
        ("name", s.name.clone()),
        ("state", state(s).to_string()),
        ("when", when(s)),
        ("overlap", s.overlap.clone()),
        ("catch-up window", output::duration_ms(s.catchup_window_ms)),
        ("pool", s.pool.clone()),
        ("owner", s.owner.clone()),
        ("command", output::shell_words(&s.task.clone().unwrap_or_default().argv)),
        ("missed", s.missed.to_string()),
        ("skipped", s.skipped.to_string()),
    ];
    if s.jitter_ms > 0 {
        rows.push(("jitter", output::duration_ms(s.jitter_ms)));
    }
    if s.buffered > 0 {
        rows.push(("buffered", s.buffered.to_string()));
    }
    if !s.last_error.is_empty() {
        rows.push(("last error", s.last_error.clone()));
    }
    for (i, next) in s.next.iter().enumerate() {
        rows.push((if i == 0 { "next" } else { "" }, next.clone()));
    }
    for (i, r) in s.runs.iter().rev().enumerate() {
        let line = format!("{}: job {} {}", output::timestamp(r.slot_ms), r.job_id, run_state(r));
        rows.push((if i == 0 { "last runs" } else { "" }, line));
    }
    output::fields(&rows);
}

impl ScheduleCommand {
    pub async fn run(self, ctx: &Context) -> anyhow::Result<Exit> {
        let mut client = ctx.client().await?;
        match self {
            ScheduleCommand::Create(args) => {
                let (job, _) = args.job.request(false, &mut client).await?;
                let req = pb::CreateScheduleRequest {
                    name: args.schedule,
                    cron: args.cron.unwrap_or_default(),
                    tz: args.tz.unwrap_or_default(),
                    every_ms: args.every.map_or(0, corral_types::duration::ms),
                    overlap: args.overlap,
                    catchup_window_ms: Some(corral_types::duration::ms(args.catchup_window)),
                    jitter_ms: args.jitter.map_or(0, corral_types::duration::ms),
                    start_at_ms: args.start_at.unwrap_or(0),
                    end_at_ms: args.end_at.unwrap_or(0),
                    job: Some(job),
                };
                let s = client.create_schedule(req).await.api()?;
                if ctx.json() {
                    output::json(&schedule_json(&s));
                } else {
                    let next = s.next.first().cloned().unwrap_or_else(|| "never".into());
                    println!("created schedule '{}' ({}); next run {next}", s.name, when(&s));
                }
            }
            ScheduleCommand::List => {
                let schedules = client.list_schedules(pb::ListSchedulesRequest {}).await.api()?.schedules;
                if ctx.json() {
                    output::json(&schedules.iter().map(schedule_json).collect());
                } else {
                    let rows: Vec<Vec<String>> = schedules
                        .iter()
                        .map(|s| {
                            vec![
                                s.name.clone(),
                                state(s).to_string(),
                                when(s),
                                s.pool.clone(),
                                s.next.first().cloned().unwrap_or_else(|| "-".into()),
                                s.runs.len().to_string(),
                                s.missed.to_string(),
                                s.skipped.to_string(),
                            ]
                        })
                        .collect();
                    output::table(&["NAME", "STATE", "WHEN", "POOL", "NEXT", "RUNS", "MISSED", "SKIPPED"], &rows);
                }
            }
            ScheduleCommand::Show { name } => {
                print(ctx, &client.get_schedule(pb::GetScheduleRequest { name }).await.api()?);
            }
            ScheduleCommand::Pause { name } => {
                print(ctx, &client.pause_schedule(pb::PauseScheduleRequest { name, paused: true }).await.api()?);
            }
            ScheduleCommand::Update { name, priority } => {
                let req = pb::UpdateScheduleRequest { name, priority: Some(priority) };
                print(ctx, &client.update_schedule(req).await.api()?);
            }
            ScheduleCommand::Resume { name } => {
                print(ctx, &client.pause_schedule(pb::PauseScheduleRequest { name, paused: false }).await.api()?);
            }
            ScheduleCommand::Trigger { name } => {
                let resp = client.trigger_schedule(pb::TriggerScheduleRequest { name: name.clone() }).await.api()?;
                if ctx.json() {
                    output::json(&json!({ "job_id": (resp.job_id > 0).then_some(resp.job_id) }));
                } else if resp.job_id > 0 {
                    println!("schedule '{name}' started job {}", resp.job_id);
                } else {
                    println!("schedule '{name}' has a run active: this one is buffered behind it");
                }
            }
            ScheduleCommand::Backfill { name, from, to, overlap } => {
                let req = pb::BackfillScheduleRequest {
                    name: name.clone(),
                    from_ms: from,
                    to_ms: to.unwrap_or_else(now_ms),
                    overlap,
                };
                let jobs = client.backfill_schedule(req).await.api()?.job_ids;
                if ctx.json() {
                    output::json(&json!({ "job_ids": jobs }));
                } else {
                    println!(
                        "schedule '{name}': backfill started {} job(s){}",
                        jobs.len(),
                        if jobs.is_empty() {
                            String::new()
                        } else {
                            format!(": {}", jobs.iter().map(u64::to_string).collect::<Vec<_>>().join(", "))
                        }
                    );
                }
            }
            ScheduleCommand::Delete { name } => {
                client.delete_schedule(pb::DeleteScheduleRequest { name: name.clone() }).await.api()?;
                if ctx.json() {
                    output::json(&json!({ "deleted": name }));
                } else {
                    println!("deleted schedule '{name}' (its jobs stay)");
                }
            }
        }
        Ok(Exit::Ok)
    }
}
