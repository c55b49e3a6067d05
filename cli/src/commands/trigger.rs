//! `corral trigger ...`: a template dispatched once for every object put under a
//! prefix through Corral, or (with --poll) for every new object version that
//! another writer put in an S3 or Azure store, or (with --source) once for every
//! message of a queue.

use std::time::Duration;

use clap::Subcommand;
use corral_proto::v1 as pb;
use serde_json::json;

use super::Context;
use crate::client::ApiResult;
use crate::output;
use crate::Exit;

#[derive(Subcommand, Debug)]
pub enum TriggerCommand {
    /// Make a trigger: each new object under --prefix (matching --glob) dispatches
    /// --template once, with the object in the task's directory at its own path
    /// ($CORRAL_TRIGGER_OBJECT names it). With --source instead, each message of a
    /// queue dispatches it once: its body (a Redis entry's `payload` field) is the
    /// tasks' ./payload, its headers (fields) their meta (CORRAL_META_<key>), its
    /// message id (else a digest, or the entry id) its identity, so a message
    /// delivered twice makes one job. It is acknowledged once its job is stored;
    /// one the template refuses goes to QUEUE.dead (STREAM:dead) with the reason.
    Create(CreateArgs),
    /// List triggers with their counts.
    List,
    /// Show a trigger and its last dispatches.
    Show { name: String },
    /// Stop firing; puts meanwhile are counted as skipped (a polling trigger
    /// picks up what is new when resumed).
    Pause { name: String },
    /// Fire again.
    Resume { name: String },
    /// Delete a trigger; the jobs it made stay.
    Delete { name: String },
}

#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// The trigger's name: 1 to 63 of a-z 0-9 - _.
    #[arg(value_name = "NAME")]
    trigger: String,
    /// Objects under this prefix (e.g. incoming/; '' for every object in the store).
    #[arg(long, required_unless_present = "source", conflicts_with = "source")]
    prefix: Option<String>,
    /// A queue instead: amqp://[USER@]HOST:PORT/VHOST?queue=Q (RabbitMQ; VHOST %2f for
    /// /) or redis://HOST:PORT/DB?stream=S&group=G (a Redis stream, read through
    /// consumer group G, made if missing). No password in it: see --secret-env.
    #[arg(long, value_name = "URL", conflicts_with_all = ["glob", "poll"])]
    source: Option<String>,
    /// The coordinator's environment variable (CORRAL_SECRET_...) holding the
    /// broker's password; the password itself is never sent or stored.
    #[arg(long, value_name = "VAR", requires = "source")]
    secret_env: Option<String>,
    /// When a message is acknowledged: once its job is stored (submit), or once its
    /// job completed (complete: a failed job's message gets a new job, up to
    /// --max-deliveries, then goes to STREAM:dead with the job's id and error).
    #[arg(long, value_name = "WHEN", value_parser = ["submit", "complete"], requires = "source")]
    ack_on: Option<String>,
    /// With --ack-on complete: how many jobs a message gets before it is
    /// dead-lettered [default: 5].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100), requires = "ack_on")]
    max_deliveries: Option<u32>,
    /// ... whose path after the prefix matches this glob (e.g. '*.jpg').
    #[arg(long)]
    glob: Option<String>,
    /// The template each object dispatches (it may not require a payload or meta).
    #[arg(long)]
    template: String,
    /// List the prefix this often (1s to 24h) and fire once per new object version,
    /// for objects written to the store directly rather than through Corral.
    #[arg(long, value_parser = corral_types::duration::parse)]
    poll: Option<Duration>,
    /// At most N of its jobs active at once: beyond it, a put's object makes no job
    /// (the put says so) and a polling trigger's waits for a later poll. Bounds a
    /// job that puts into its own trigger's prefix [default: no limit].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    max_active: Option<u32>,
}

fn state(t: &pb::Trigger) -> &'static str {
    if t.paused {
        "paused"
    } else {
        "active"
    }
}

fn fire_state(f: &pb::TriggerFire) -> &'static str {
    match f.state() {
        pb::JobState::Unspecified => "deleted",
        s => s.as_word(),
    }
}

fn trigger_json(t: &pb::Trigger) -> serde_json::Value {
    json!({
        "name": t.name,
        "state": state(t),
        "prefix": t.prefix,
        "glob": (!t.glob.is_empty()).then_some(&t.glob),
        "template": t.template,
        "poll_ms": (t.poll_ms > 0).then_some(t.poll_ms),
        "max_active": (t.max_active > 0).then_some(t.max_active),
        "owner": t.owner,
        "created_at_ms": t.created_at_ms,
        "fired": t.fired,
        "skipped": t.skipped,
        "failed": t.failed,
        "last_error": (!t.last_error.is_empty()).then_some(&t.last_error),
        "seen": t.seen,
        "last_poll_ms": (t.last_poll_ms > 0).then_some(t.last_poll_ms),
        "source": (!t.source.is_empty()).then_some(&t.source),
        "secret_env": (!t.secret_env.is_empty()).then_some(&t.secret_env),
        "connected": (!t.source.is_empty()).then_some(t.connected),
        "backing_off_until_ms": (t.backing_off_until_ms > 0).then_some(t.backing_off_until_ms),
        "taken": (!t.source.is_empty()).then_some(t.taken),
        "ack_on": (!t.ack_on.is_empty()).then_some(&t.ack_on),
        "max_deliveries": (t.max_deliveries > 0).then_some(t.max_deliveries),
        "recent": t.recent.iter().map(|f| json!({
            "object": f.object,
            "job_id": f.job_id,
            "at_ms": f.at_ms,
            "state": fire_state(f),
        })).collect::<Vec<_>>(),
    })
}

fn on(t: &pb::Trigger) -> String {
    if !t.source.is_empty() {
        return format!("messages of {}", t.source);
    }
    let what = format!("{}{}", t.prefix, if t.glob.is_empty() { "*" } else { &t.glob });
    match t.poll_ms {
        0 => format!("put {what}"),
        ms => format!("poll {what} every {}", output::duration_ms(ms)),
    }
}

fn print(ctx: &Context, t: &pb::Trigger) {
    if ctx.json() {
        output::json(&trigger_json(t));
        return;
    }
    let mut rows = vec![
        ("name", t.name.clone()),
        ("state", state(t).to_string()),
        ("on", on(t)),
        ("template", t.template.clone()),
        ("owner", t.owner.clone()),
        ("fired", t.fired.to_string()),
        ("skipped", t.skipped.to_string()),
        match t.source.is_empty() {
            true => ("failed", t.failed.to_string()),
            false => ("failed", format!("{} (dead-lettered: refused, unreadable or out of deliveries)", t.failed)),
        },
    ];
    if t.max_active > 0 {
        rows.push(("max active", t.max_active.to_string()));
    }
    if !t.source.is_empty() {
        let broker = match (t.connected, t.backing_off_until_ms) {
            (true, _) => "connected".to_string(),
            (false, 0) => "connecting".to_string(),
            (false, until) => format!("backing off until {}", output::timestamp(until)),
        };
        rows.push(("broker", broker));
        let acks = match t.ack_on.as_str() {
            "complete" => format!("when its job completed (at most {} deliveries)", t.max_deliveries),
            _ => "when its job is stored".to_string(),
        };
        rows.push(("acknowledged", acks));
        rows.push(("taken", format!("{} (since the coordinator started)", t.taken)));
    }
    if t.poll_ms > 0 {
        rows.push(("seen", t.seen.to_string()));
        if t.last_poll_ms > 0 {
            rows.push(("last poll", output::timestamp(t.last_poll_ms)));
        }
    }
    if !t.last_error.is_empty() {
        rows.push(("last error", t.last_error.clone()));
    }
    for (i, f) in t.recent.iter().rev().enumerate() {
        let line = format!("{}: {} -> job {} {}", output::timestamp(f.at_ms), f.object, f.job_id, fire_state(f));
        rows.push((if i == 0 { "last dispatches" } else { "" }, line));
    }
    output::fields(&rows);
}

impl TriggerCommand {
    pub async fn run(self, ctx: &Context) -> anyhow::Result<Exit> {
        let mut client = ctx.client().await?;
        match self {
            TriggerCommand::Create(args) => {
                let req = pb::CreateTriggerRequest {
                    name: args.trigger,
                    glob: args.glob.unwrap_or_default(),
                    template: args.template,
                    poll_ms: args.poll.map_or(0, corral_types::duration::ms),
                    max_active: args.max_active.unwrap_or(0),
                    // The flag is given for an object trigger, so an empty prefix is said on purpose.
                    whole_store: args.prefix.as_deref() == Some(""),
                    prefix: args.prefix.unwrap_or_default(),
                    source: args.source.unwrap_or_default(),
                    secret_env: args.secret_env.unwrap_or_default(),
                    ack_on: args.ack_on.unwrap_or_default(),
                    max_deliveries: args.max_deliveries.unwrap_or(0),
                };
                let t = client.create_trigger(req).await.api()?;
                if ctx.json() {
                    output::json(&trigger_json(&t));
                } else {
                    println!("created trigger '{}' ({} dispatches '{}')", t.name, on(&t), t.template);
                }
            }
            TriggerCommand::List => {
                let triggers = client.list_triggers(pb::ListTriggersRequest {}).await.api()?.triggers;
                if ctx.json() {
                    output::json(&triggers.iter().map(trigger_json).collect());
                } else {
                    let rows: Vec<Vec<String>> = triggers
                        .iter()
                        .map(|t| {
                            vec![
                                t.name.clone(),
                                state(t).to_string(),
                                on(t),
                                t.template.clone(),
                                t.fired.to_string(),
                                t.skipped.to_string(),
                                t.failed.to_string(),
                            ]
                        })
                        .collect();
                    output::table(&["NAME", "STATE", "ON", "TEMPLATE", "FIRED", "SKIPPED", "FAILED"], &rows);
                }
            }
            TriggerCommand::Show { name } => {
                print(ctx, &client.get_trigger(pb::GetTriggerRequest { name }).await.api()?);
            }
            TriggerCommand::Pause { name } => {
                print(ctx, &client.pause_trigger(pb::PauseTriggerRequest { name, paused: true }).await.api()?);
            }
            TriggerCommand::Resume { name } => {
                print(ctx, &client.pause_trigger(pb::PauseTriggerRequest { name, paused: false }).await.api()?);
            }
            TriggerCommand::Delete { name } => {
                client.delete_trigger(pb::DeleteTriggerRequest { name: name.clone() }).await.api()?;
                if ctx.json() {
                    output::json(&json!({ "deleted": name }));
                } else {
                    println!("deleted trigger '{name}' (its jobs stay)");
                }
            }
        }
        Ok(Exit::Ok)
    }
}
