//! The `jobs` table, written and read by column name in this one place: a job is
//! inserted with its spec spelled out as columns, and read back at start into the
//! same spec. (The tasks of a graph are rows of `task_groups`, written beside it.)

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use corral_types::graph::TaskGroup;

use super::corrupt;
use super::sql::{in_order, Named, Sql, SqlExt, ToValue};
use crate::core::JobRecord;
use crate::error::Result;
use crate::model::*;

/// The columns a submission writes (state and delivery change by updates later).
const INSERTED: &[&str] = &[
    "id",
    "pool",
    "name",
    "priority",
    "task_spec",
    "first_index",
    "last_index",
    "state",
    "submitted_at_ms",
    "finished_at_ms",
    "is_graph",
    "open",
    "notify_url",
    "owner",
    "max_output",
    "begin_at_ms",
    "schedule",
    "scheduled_for_ms",
    "template",
    "policy",
    "after",
    "auto_pool",
    "array_runs",
];

/// Those that only updates write: how the completion callback went, why it ended.
const UPDATED: &[&str] = &["notify_attempts", "notify_error", "notify_delivered_at_ms", "reason"];

/// Every column a restart reads back.
static COLUMNS: LazyLock<Vec<&str>> = LazyLock::new(|| [INSERTED, UPDATED].concat());

static INSERT: LazyLock<String> = LazyLock::new(|| {
    let holes: Vec<String> = (1..=INSERTED.len()).map(|i| format!("?{i}")).collect();
    format!("INSERT INTO jobs ({}) VALUES ({})", INSERTED.join(", "), holes.join(", "))
});

pub(super) fn json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| corrupt(e.to_string()))
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| corrupt(e.to_string()))
}

/// Inserts a job as submitted (its state and delivery change by updates later).
pub(super) fn insert(tx: &mut dyn Sql, j: &JobRecord) -> Result<()> {
    let s = &j.spec;
    let task = json(&s.task)?;
    let after: Vec<(u64, bool)> = s.after.iter().map(|a| (a.job.0, a.any)).collect();
    let after = (!after.is_empty()).then(|| json(&after)).transpose()?;
    let policy = (!s.policy.is_default()).then(|| json(&s.policy)).transpose()?;
    let auto_pool = super::schedules::auto_pool_json(s)?;
    let array = s.array.as_ref().map(|a| a.to_string());
    let (is_graph, template) = (s.graph.is_some(), s.template.as_ref().map(|t| t.as_str()));
    let (schedule, slot_ms) =
        (s.schedule.as_ref().map(|r| r.schedule.as_str()), s.schedule.as_ref().map(|r| r.slot_ms));
    let values = in_order(
        INSERTED,
        vec![
            ("id", j.id.0.to_value()),
            ("pool", s.pool.as_str().to_value()),
            ("name", s.name.to_value()),
            ("priority", s.priority.to_value()),
            ("task_spec", task.to_value()),
            ("first_index", s.first_index.to_value()),
            ("last_index", s.last_index.to_value()),
            ("state", j.state.as_str().to_value()),
            ("submitted_at_ms", j.submitted_at_ms.to_value()),
            ("finished_at_ms", j.finished_at_ms.to_value()),
            ("is_graph", is_graph.to_value()),
            ("open", s.open.to_value()),
            ("notify_url", s.notify.to_value()),
            ("owner", s.owner.to_value()),
            ("max_output", s.max_output.to_value()),
            ("begin_at_ms", s.begin_at_ms.to_value()),
            ("schedule", schedule.to_value()),
            ("scheduled_for_ms", slot_ms.to_value()),
            ("template", template.to_value()),
            ("policy", policy.to_value()),
            ("after", after.to_value()),
            ("auto_pool", auto_pool.to_value()),
            ("array_runs", array.to_value()),
        ],
    );
    tx.execute(&INSERT, values)
}

/// One stored job, as its columns hold it.
struct JobRow {
    id: u64,
    pool: String,
    name: String,
    priority: i32,
    task_spec: String,
    first_index: u32,
    last_index: u32,
    state: String,
    submitted_at_ms: u64,
    finished_at_ms: Option<u64>,
    is_graph: bool,
    open: bool,
    notify_url: Option<String>,
    delivery: Delivery,
    owner: String,
    max_output: u64,
    begin_at_ms: Option<u64>,
    schedule: Option<String>,
    scheduled_for_ms: Option<u64>,
    template: Option<String>,
    policy: Option<String>,
    after: Option<String>,
    reason: Option<String>,
    auto_pool: Option<String>,
    array_runs: Option<String>,
}

impl JobRow {
    fn read(r: Named<'_>) -> Result<JobRow> {
        Ok(JobRow {
            id: r.get("id")?,
            pool: r.get("pool")?,
            name: r.get("name")?,
            priority: r.get("priority")?,
            task_spec: r.get("task_spec")?,
            first_index: r.get("first_index")?,
            last_index: r.get("last_index")?,
            state: r.get("state")?,
            submitted_at_ms: r.get("submitted_at_ms")?,
            finished_at_ms: r.get("finished_at_ms")?,
            is_graph: r.get("is_graph")?,
            open: r.get("open")?,
            notify_url: r.get("notify_url")?,
            delivery: Delivery {
                attempts: r.get("notify_attempts")?,
                last_error: r.get("notify_error")?,
                delivered_at_ms: r.get("notify_delivered_at_ms")?,
            },
            owner: r.get("owner")?,
            max_output: r.get("max_output")?,
            begin_at_ms: r.get("begin_at_ms")?,
            schedule: r.get("schedule")?,
            scheduled_for_ms: r.get("scheduled_for_ms")?,
            template: r.get("template")?,
            policy: r.get("policy")?,
            after: r.get("after")?,
            reason: r.get("reason")?,
            auto_pool: r.get("auto_pool")?,
            array_runs: r.get("array_runs")?,
        })
    }

    /// The job, with its graph's groups (taken from `groups`) if it is a graph.
    fn into_record(self, groups: &mut HashMap<u64, Vec<TaskGroup>>) -> Result<JobRecord> {
        let pool = PoolName::parse("pool", &self.pool).map_err(corrupt)?;
        let auto_pool = match &self.auto_pool {
            Some(text) => {
                let stored: super::schedules::StoredPool = from_json(text)?;
                Some(Box::new(stored.into_spec(pool.clone())?))
            }
            None => None,
        };
        let after: Vec<(u64, bool)> = self.after.as_deref().map(from_json).transpose()?.unwrap_or_default();
        let schedule = match &self.schedule {
            Some(name) => Some(ScheduledFor {
                schedule: ScheduleName::parse("schedule", name).map_err(corrupt)?,
                slot_ms: self.scheduled_for_ms.unwrap_or(0),
            }),
            None => None,
        };
        let graph = match self.is_graph {
            true => {
                let groups = groups.remove(&self.id).unwrap_or_default();
                Some(Arc::new(corral_types::graph::resolve(groups).map_err(|e| corrupt(e.to_string()))?))
            }
            false => None,
        };
        let spec = JobSpec {
            name: self.name,
            priority: self.priority,
            first_index: self.first_index,
            last_index: self.last_index,
            array: self.array_runs.map(|text| text.parse::<Indices>().map(Arc::new)).transpose().map_err(corrupt)?,
            graph,
            open: self.open,
            notify: self.notify_url,
            owner: self.owner,
            max_output: self.max_output,
            begin_at_ms: self.begin_at_ms,
            schedule,
            template: self.template.map(|t| TemplateName::parse("template", &t)).transpose().map_err(corrupt)?,
            policy: self.policy.as_deref().map(from_json).transpose()?.unwrap_or_default(),
            after: after.into_iter().map(|(job, any)| After { job: JobId(job), any }).collect(),
            auto_pool,
            ..JobSpec::new(pool, from_json(&self.task_spec)?)
        };
        Ok(JobRecord {
            id: JobId(self.id),
            spec,
            state: self.state.parse().map_err(corrupt)?,
            submitted_at_ms: self.submitted_at_ms,
            finished_at_ms: self.finished_at_ms,
            delivery: self.delivery,
            reason: self.reason,
        })
    }
}

/// Every stored job, oldest first.
pub(super) fn load(sql: &mut dyn Sql, groups: &mut HashMap<u64, Vec<TaskGroup>>) -> Result<Vec<JobRecord>> {
    let query = format!("SELECT {} FROM jobs ORDER BY id", COLUMNS.join(", "));
    let rows = sql.rows(&query, vec![], |r| JobRow::read(r.named(&COLUMNS)))?;
    rows.into_iter().map(|row| row.into_record(groups)).collect()
}
