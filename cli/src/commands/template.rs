//! `corral template ...` and `corral dispatch NAME`: a job kept under a name, and
//! a job made from it with a payload and meta values (the event-driven way in).

use std::io::{IsTerminal, Read};

use anyhow::Context as _;
use clap::Subcommand;
use corral_proto::v1 as pb;
use serde_json::json;

use super::job::render::{print_outcome, verdict};
use super::job::JobArgs;
use super::Context;
use crate::client::ApiResult;
use crate::output;
use crate::Exit;

/// The largest payload a dispatch carries (the coordinator refuses more too).
const MAX_PAYLOAD: u64 = 16 << 20;

#[derive(Subcommand, Debug)]
pub enum TemplateCommand {
    /// Make a template: the job each `corral dispatch NAME` makes, given as a job
    /// file or as `job submit` flags and a command after `--`. Each dispatch's
    /// payload lands in every task's directory as `payload` ($CORRAL_PAYLOAD) and
    /// each meta value K in $CORRAL_META_K.
    Create(Box<CreateArgs>),
    /// List templates.
    List,
    /// Show a template.
    Show { name: String },
    /// Change a template (its owner or an admin): the priority of the jobs it will
    /// make (jobs it made keep theirs: `job update --priority`).
    Update {
        name: String,
        /// -1000..1000; higher runs first.
        #[arg(long, allow_negative_numbers = true, value_parser = clap::value_parser!(i32).range(-1000..=1000))]
        priority: i32,
    },
    /// Delete a template (refused while a trigger uses it); the jobs it made stay.
    Delete { name: String },
}

#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// The template's name: 1 to 63 of a-z 0-9 - _.
    #[arg(value_name = "NAME")]
    template: String,
    /// Whether a dispatch must, may or must not carry a payload.
    #[arg(long, default_value = "optional", value_parser = ["required", "optional", "forbidden"])]
    payload: String,
    /// A meta key every dispatch must give (repeatable).
    #[arg(long = "meta-required", value_name = "KEY")]
    meta_required: Vec<String>,
    #[command(flatten)]
    job: JobArgs,
}

/// `corral dispatch NAME`.
#[derive(clap::Args, Debug)]
pub struct DispatchArgs {
    /// The template to make a job from.
    #[arg(value_name = "TEMPLATE")]
    template: String,
    /// The payload: this file's bytes (at most 16 MiB).
    #[arg(long, value_name = "FILE", conflicts_with = "payload")]
    payload_file: Option<std::path::PathBuf>,
    /// `-`: read the payload from standard input.
    #[arg(long, value_name = "-", value_parser = ["-"])]
    payload: Option<String>,
    /// A meta value, in the tasks' environment as CORRAL_META_K (repeatable).
    #[arg(long, value_name = "K=V", value_parser = parse_meta)]
    meta: Vec<(String, String)>,
    /// The same key (and request) makes one job however often it is sent; a
    /// different request under it is refused [default: a fresh key, so the
    /// CLI's own retries make one job].
    #[arg(long, value_name = "KEY")]
    idempotency_key: Option<String>,
    /// POST the job's outcome here when it ends (instead of the template's --notify).
    #[arg(long, value_name = "URL")]
    notify: Option<String>,
    /// Wait for the job to end (progress on a terminal); exit status as `job wait`.
    #[arg(long)]
    wait: bool,
}

fn parse_meta(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("'{s}' is not K=V"))?;
    Ok((k.to_string(), v.to_string()))
}

fn template_json(t: &pb::Template) -> serde_json::Value {
    json!({
        "name": t.name,
        "priority": t.priority,
        "payload": t.payload,
        "meta_required": t.meta_required,
        "pool": t.pool,
        "job_name": t.job_name,
        "owner": t.owner,
        "command": t.task.as_ref().map(|t| &t.argv),
        "tasks": t.tasks,
        "notify_url": (!t.notify_url.is_empty()).then_some(&t.notify_url),
        "created_at_ms": t.created_at_ms,
        "triggers": t.triggers,
    })
}

fn print(ctx: &Context, t: &pb::Template) {
    if ctx.json() {
        output::json(&template_json(t));
        return;
    }
    let mut rows = vec![
        ("name", t.name.clone()),
        ("payload", t.payload.clone()),
        ("pool", t.pool.clone()),
        ("owner", t.owner.clone()),
        ("command", output::shell_words(&t.task.clone().unwrap_or_default().argv)),
        ("tasks", t.tasks.to_string()),
        ("created", output::timestamp(t.created_at_ms)),
    ];
    if !t.meta_required.is_empty() {
        rows.push(("meta required", t.meta_required.join(", ")));
    }
    if !t.notify_url.is_empty() {
        rows.push(("notify", t.notify_url.clone()));
    }
    if !t.triggers.is_empty() {
        rows.push(("triggers", t.triggers.join(", ")));
    }
    output::fields(&rows);
}

impl TemplateCommand {
    pub async fn run(self, ctx: &Context) -> anyhow::Result<Exit> {
        let mut client = ctx.client().await?;
        match self {
            TemplateCommand::Create(args) => {
                let (job, loaded) = args.job.request(false, &mut client).await?;
                let req = pb::CreateTemplateRequest {
                    name: args.template,
                    payload: args.payload,
                    meta_required: args.meta_required,
                    job: Some(job),
                };
                let t = match client.create_template(req).await.api() {
                    Ok(t) => t,
                    Err(e) => match &loaded {
                        Some(file) => anyhow::bail!(file.annotate(&e.to_string())),
                        None => return Err(e),
                    },
                };
                if ctx.json() {
                    output::json(&template_json(&t));
                } else {
                    println!(
                        "created template '{}' (payload {}); run it with: corral dispatch {}",
                        t.name, t.payload, t.name
                    );
                }
            }
            TemplateCommand::List => {
                let templates = client.list_templates(pb::ListTemplatesRequest {}).await.api()?.templates;
                if ctx.json() {
                    output::json(&templates.iter().map(template_json).collect());
                } else {
                    let rows: Vec<Vec<String>> = templates
                        .iter()
                        .map(|t| {
                            vec![
                                t.name.clone(),
                                t.pool.clone(),
                                t.payload.clone(),
                                t.tasks.to_string(),
                                t.owner.clone(),
                                output::shell_words(&t.task.clone().unwrap_or_default().argv),
                            ]
                        })
                        .collect();
                    output::table(&["NAME", "POOL", "PAYLOAD", "TASKS", "OWNER", "COMMAND"], &rows);
                }
            }
            TemplateCommand::Show { name } => {
                print(ctx, &client.get_template(pb::GetTemplateRequest { name }).await.api()?);
            }
            TemplateCommand::Update { name, priority } => {
                let req = pb::UpdateTemplateRequest { name, priority: Some(priority) };
                print(ctx, &client.update_template(req).await.api()?);
            }
            TemplateCommand::Delete { name } => {
                client.delete_template(pb::DeleteTemplateRequest { name: name.clone() }).await.api()?;
                if ctx.json() {
                    output::json(&json!({ "deleted": name }));
                } else {
                    println!("deleted template '{name}' (its jobs stay)");
                }
            }
        }
        Ok(Exit::Ok)
    }
}

/// Reads at most [`MAX_PAYLOAD`] bytes, refusing more.
fn read_payload(mut from: impl Read, what: &str) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    from.by_ref().take(MAX_PAYLOAD + 1).read_to_end(&mut bytes).with_context(|| format!("cannot read {what}"))?;
    if bytes.len() as u64 > MAX_PAYLOAD {
        anyhow::bail!("payload: {what} is larger than 16 MiB, the most a dispatch carries");
    }
    Ok(bytes)
}

impl DispatchArgs {
    pub async fn run(self, ctx: &Context) -> anyhow::Result<Exit> {
        let payload = match (&self.payload_file, &self.payload) {
            (Some(path), _) => {
                let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
                Some(read_payload(file, &path.display().to_string())?)
            }
            (None, Some(_)) => Some(read_payload(std::io::stdin().lock(), "standard input")?),
            (None, None) => None,
        };
        let mut meta = std::collections::HashMap::new();
        for (k, v) in self.meta {
            if meta.insert(k.clone(), v).is_some() {
                anyhow::bail!("meta: '{k}' is given twice");
            }
        }
        let req = pb::DispatchRequest {
            template: self.template,
            payload,
            meta,
            idempotency_key: self
                .idempotency_key
                .unwrap_or_else(|| format!("corral-cli-{}", corral_proto::credentials::random_hex(16))),
            notify_url: self.notify.unwrap_or_default(),
        };
        let mut client = ctx.client().await?;
        // Under one key, so the CLI's own retries make one job.
        let resp = ctx.retrying(&mut client, |c| Box::pin(c.dispatch(req.clone()))).await?;
        // With --wait and -o json, the job's outcome is the one JSON answer.
        if !ctx.json() {
            println!("dispatched job {} ({} task(s))", resp.job_id, resp.tasks);
        } else if !self.wait {
            output::json(&json!({ "job_id": resp.job_id, "tasks": resp.tasks }));
        }
        if !self.wait {
            return Ok(Exit::Ok);
        }
        let job = super::job::follow(&mut client, resp.job_id, !ctx.json() && std::io::stderr().is_terminal()).await?;
        print_outcome(ctx, &job);
        Ok(verdict(&job))
    }
}
