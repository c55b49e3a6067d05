//! Templates and triggers in the store: a row per template (its rules and job as
//! JSON), a row per trigger (spec as JSON, counts as columns), and a polling
//! trigger's cursor as a row per object it has dealt with.

use std::collections::BTreeMap;
use std::time::Duration;

use std::sync::LazyLock;

use super::sql::{args, upsert, Sql, SqlExt};

use super::corrupt;
use super::schedules::{json, StoredJob};
use crate::core::templates::{Template, TemplateSpec};
use crate::core::triggers::{Fired, QueueSource, TriggerRecord, TriggerSpec};
use crate::error::Result;
use crate::model::*;

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredRules {
    payload: String,
    meta_required: Vec<String>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredTrigger {
    prefix: String,
    glob: Option<String>,
    template: String,
    poll_ms: Option<u64>,
    owner: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_active: Option<u32>,
    /// A queue trigger's broker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source: Option<QueueSource>,
}

fn parse<T: serde::de::DeserializeOwned>(text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| corrupt(e.to_string()))
}

static PUT_TEMPLATE: LazyLock<String> =
    LazyLock::new(|| upsert("templates", &["name", "spec", "job", "created_at_ms"], &["name"], &[]));
static PUT_TRIGGER: LazyLock<String> = LazyLock::new(|| {
    let columns = ["name", "spec", "created_at_ms", "paused", "fired", "skipped", "failed", "last_error", "recent"];
    upsert("triggers", &columns, &["name"], &[])
});
static SEE: LazyLock<String> =
    LazyLock::new(|| upsert("trigger_seen", &["trigger", "object", "version"], &["trigger", "object"], &[]));

pub(super) fn put_template(tx: &mut dyn Sql, t: &Template) -> Result<()> {
    let rules =
        StoredRules { payload: t.spec.payload.as_str().to_string(), meta_required: t.spec.meta_required.clone() };
    tx.execute(
        &PUT_TEMPLATE,
        args![t.spec.name.as_str(), json(&rules)?, json(&StoredJob::of(&t.spec.job))?, t.created_at_ms],
    )?;
    Ok(())
}

pub(super) fn delete_template(tx: &mut dyn Sql, name: &TemplateName) -> Result<()> {
    tx.execute("DELETE FROM templates WHERE name = ?1", args![name.as_str()])?;
    Ok(())
}

pub(super) fn put_trigger(tx: &mut dyn Sql, r: &TriggerRecord) -> Result<()> {
    let s = &r.spec;
    let spec = StoredTrigger {
        prefix: s.prefix.clone(),
        glob: s.glob.clone(),
        template: s.template.to_string(),
        poll_ms: s.poll.map(|d| d.as_millis() as u64),
        owner: s.owner.clone(),
        max_active: s.max_active,
        source: s.source.clone(),
    };
    tx.execute(
        &PUT_TRIGGER,
        args![
            s.name.as_str(),
            json(&spec)?,
            r.created_at_ms,
            r.paused,
            r.fired,
            r.skipped,
            r.failed,
            r.last_error,
            json(&r.recent)?
        ],
    )?;
    Ok(())
}

pub(super) fn delete_trigger(tx: &mut dyn Sql, name: &TriggerName) -> Result<()> {
    tx.execute("DELETE FROM triggers WHERE name = ?1", args![name.as_str()])?;
    tx.execute("DELETE FROM trigger_seen WHERE trigger = ?1", args![name.as_str()])?;
    Ok(())
}

pub(super) fn see(tx: &mut dyn Sql, trigger: &TriggerName, object: &str, version: Option<&str>) -> Result<()> {
    match version {
        Some(version) => tx.execute(&SEE, args![trigger.as_str(), object, version])?,
        None => {
            tx.execute("DELETE FROM trigger_seen WHERE trigger = ?1 AND object = ?2", args![trigger.as_str(), object])?
        }
    };
    Ok(())
}

pub(super) fn load_templates(sql: &mut dyn Sql) -> Result<Vec<Template>> {
    sql.rows("SELECT name, spec, job, created_at_ms FROM templates ORDER BY name", args![], |r| {
        let rules: StoredRules = parse(&r.get::<String>(1)?)?;
        let job: StoredJob = parse(&r.get::<String>(2)?)?;
        Ok(Template {
            spec: TemplateSpec {
                name: TemplateName::parse("name", &r.get::<String>(0)?).map_err(corrupt)?,
                payload: rules.payload.parse().map_err(corrupt)?,
                meta_required: rules.meta_required,
                job: job.into_spec()?,
            },
            created_at_ms: r.get(3)?,
        })
    })
}

pub(super) fn load_triggers(sql: &mut dyn Sql) -> Result<Vec<(TriggerRecord, BTreeMap<String, String>)>> {
    let records = sql.rows(
        "SELECT name, spec, created_at_ms, paused, fired, skipped, failed, last_error, recent FROM triggers ORDER BY name",
        args![],
        |r| {
        let spec: StoredTrigger = parse(&r.get::<String>(1)?)?;
        let recent: Vec<Fired> = parse(&r.get::<String>(8)?)?;
        Ok(TriggerRecord {
            spec: TriggerSpec {
                name: TriggerName::parse("name", &r.get::<String>(0)?).map_err(corrupt)?,
                prefix: spec.prefix,
                glob: spec.glob,
                template: TemplateName::parse("template", &spec.template).map_err(corrupt)?,
                poll: spec.poll_ms.map(Duration::from_millis),
                owner: spec.owner,
                max_active: spec.max_active,
                source: spec.source,
            },
            created_at_ms: r.get(2)?,
            paused: r.get(3)?,
            fired: r.get(4)?,
            skipped: r.get(5)?,
            failed: r.get(6)?,
            last_error: r.get(7)?,
            recent,
        })
        },
    )?;
    let mut out = Vec::with_capacity(records.len());
    for record in records {
        let cursor = sql
            .rows(
                "SELECT object, version FROM trigger_seen WHERE trigger = ?1",
                args![record.spec.name.as_str()],
                |r| Ok((r.get::<String>(0)?, r.get::<String>(1)?)),
            )?
            .into_iter()
            .collect();
        out.push((record, cursor));
    }
    Ok(out)
}
