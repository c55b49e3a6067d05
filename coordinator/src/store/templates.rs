//! Templates and triggers in the store: a row per template (its rules and job as
//! JSON), a row per trigger (spec as JSON, counts as columns), and a polling
//! trigger's cursor as a row per object it has dealt with.

use std::collections::BTreeMap;
use std::time::Duration;

use rusqlite::{params, Connection, Transaction};

use super::corrupt;
use super::schedules::{json, StoredJob};
use crate::core::templates::{Template, TemplateSpec};
use crate::core::triggers::{Fired, TriggerRecord, TriggerSpec};
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
}

fn parse<T: serde::de::DeserializeOwned>(text: &str) -> rusqlite::Result<T> {
    serde_json::from_str(text).map_err(|e| corrupt(e.to_string()))
}

pub(super) fn put_template(tx: &Transaction, t: &Template) -> rusqlite::Result<()> {
    let rules =
        StoredRules { payload: t.spec.payload.as_str().to_string(), meta_required: t.spec.meta_required.clone() };
    tx.prepare_cached("INSERT OR REPLACE INTO templates (name, spec, job, created_at_ms) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![t.spec.name.as_str(), json(&rules)?, json(&StoredJob::of(&t.spec.job))?, t.created_at_ms])?;
    Ok(())
}

pub(super) fn delete_template(tx: &Transaction, name: &TemplateName) -> rusqlite::Result<()> {
    tx.prepare_cached("DELETE FROM templates WHERE name = ?1")?.execute([name.as_str()])?;
    Ok(())
}

pub(super) fn put_trigger(tx: &Transaction, r: &TriggerRecord) -> rusqlite::Result<()> {
    let s = &r.spec;
    let spec = StoredTrigger {
        prefix: s.prefix.clone(),
        glob: s.glob.clone(),
        template: s.template.to_string(),
        poll_ms: s.poll.map(|d| d.as_millis() as u64),
        owner: s.owner.clone(),
        max_active: s.max_active,
    };
    tx.prepare_cached(
        "INSERT OR REPLACE INTO triggers (name, spec, created_at_ms, paused, fired, skipped, failed, last_error, recent) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        s.name.as_str(),
        json(&spec)?,
        r.created_at_ms,
        r.paused,
        r.fired,
        r.skipped,
        r.failed,
        r.last_error,
        json(&r.recent)?
    ])?;
    Ok(())
}

pub(super) fn delete_trigger(tx: &Transaction, name: &TriggerName) -> rusqlite::Result<()> {
    tx.prepare_cached("DELETE FROM triggers WHERE name = ?1")?.execute([name.as_str()])?;
    tx.prepare_cached("DELETE FROM trigger_seen WHERE trigger = ?1")?.execute([name.as_str()])?;
    Ok(())
}

pub(super) fn see(
    tx: &Transaction,
    trigger: &TriggerName,
    object: &str,
    version: Option<&str>,
) -> rusqlite::Result<()> {
    match version {
        Some(version) => tx
            .prepare_cached("INSERT OR REPLACE INTO trigger_seen (trigger, object, version) VALUES (?1, ?2, ?3)")?
            .execute(params![trigger.as_str(), object, version])?,
        None => tx
            .prepare_cached("DELETE FROM trigger_seen WHERE trigger = ?1 AND object = ?2")?
            .execute(params![trigger.as_str(), object])?,
    };
    Ok(())
}

pub(super) fn load_templates(conn: &Connection) -> Result<Vec<Template>> {
    let mut stmt = conn.prepare("SELECT name, spec, job, created_at_ms FROM templates ORDER BY name")?;
    let rows = stmt.query_map([], |r| {
        let rules: StoredRules = parse(&r.get::<_, String>(1)?)?;
        let job: StoredJob = parse(&r.get::<_, String>(2)?)?;
        Ok(Template {
            spec: TemplateSpec {
                name: TemplateName::parse("name", &r.get::<_, String>(0)?).map_err(corrupt)?,
                payload: rules.payload.parse().map_err(corrupt)?,
                meta_required: rules.meta_required,
                job: job.into_spec()?,
            },
            created_at_ms: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub(super) fn load_triggers(conn: &Connection) -> Result<Vec<(TriggerRecord, BTreeMap<String, String>)>> {
    let mut stmt = conn.prepare(
        "SELECT name, spec, created_at_ms, paused, fired, skipped, failed, last_error, recent FROM triggers ORDER BY name",
    )?;
    let rows = stmt.query_map([], |r| {
        let spec: StoredTrigger = parse(&r.get::<_, String>(1)?)?;
        let recent: Vec<Fired> = parse(&r.get::<_, String>(8)?)?;
        Ok(TriggerRecord {
            spec: TriggerSpec {
                name: TriggerName::parse("name", &r.get::<_, String>(0)?).map_err(corrupt)?,
                prefix: spec.prefix,
                glob: spec.glob,
                template: TemplateName::parse("template", &spec.template).map_err(corrupt)?,
                poll: spec.poll_ms.map(Duration::from_millis),
                owner: spec.owner,
                max_active: spec.max_active,
            },
            created_at_ms: r.get(2)?,
            paused: r.get(3)?,
            fired: r.get(4)?,
            skipped: r.get(5)?,
            failed: r.get(6)?,
            last_error: r.get(7)?,
            recent,
        })
    })?;
    let records: Vec<TriggerRecord> = rows.collect::<rusqlite::Result<_>>()?;
    let mut seen = conn.prepare("SELECT object, version FROM trigger_seen WHERE trigger = ?1")?;
    let mut out = Vec::with_capacity(records.len());
    for record in records {
        let cursor = seen
            .query_map([record.spec.name.as_str()], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
            .collect::<rusqlite::Result<BTreeMap<_, _>>>()?;
        out.push((record, cursor));
    }
    Ok(out)
}
