//! Schedules and their slots in the store: a row per schedule (its spec and job as
//! JSON, its cursor and counts as columns) and a row per slot that made a job,
//! whose primary key is (schedule, slot).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use corral_types::graph::TaskGroup;

use super::sql::{args, upsert, Sql, SqlExt};

use super::{corrupt, Reader};
use crate::core::cadence::Cadence;
use crate::core::schedules::ScheduleRecord;
use crate::error::Result;
use crate::model::*;

/// When a schedule fires and what it does with overlaps and missed slots.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredWhen {
    cron: Option<String>,
    tz: Option<String>,
    every_ms: Option<u64>,
    anchor_ms: Option<u64>,
    overlap: String,
    catchup_window_ms: u64,
    jitter_ms: u64,
    start_at_ms: Option<u64>,
    end_at_ms: Option<u64>,
}

/// A pool spec as JSON (a job's own pool, `--auto-pool`); its name is the job's pool.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct StoredPool {
    slots_per_node: u32,
    provider: String,
    target_nodes: u32,
    fill: String,
    autoscale: Option<Autoscale>,
    removal: String,
    commands: Option<ProviderCommands>,
    docker: Option<DockerSpec>,
    start_task: Option<String>,
}

impl StoredPool {
    pub(super) fn of(p: &PoolSpec) -> StoredPool {
        StoredPool {
            slots_per_node: p.slots_per_node,
            provider: p.provider.as_str().into(),
            target_nodes: p.target_nodes,
            fill: p.fill.as_str().into(),
            autoscale: p.autoscale.clone(),
            removal: p.removal.as_str().into(),
            commands: p.commands.clone(),
            docker: p.docker.clone(),
            start_task: p.start_task.clone(),
        }
    }

    pub(super) fn into_spec(self, name: PoolName) -> Result<PoolSpec> {
        Ok(PoolSpec {
            name,
            slots_per_node: self.slots_per_node,
            provider: self.provider.parse().map_err(corrupt)?,
            target_nodes: self.target_nodes,
            fill: self.fill.parse().map_err(corrupt)?,
            autoscale: self.autoscale,
            removal: self.removal.parse().map_err(corrupt)?,
            commands: self.commands,
            docker: self.docker,
            start_task: self.start_task,
        })
    }
}

/// A job's own pool as stored with it: none, or its spec as JSON.
pub(super) fn auto_pool_json(spec: &JobSpec) -> Result<Option<String>> {
    spec.auto_pool.as_deref().map(|p| json(&StoredPool::of(p))).transpose()
}

/// The job every slot (or a template's dispatch) makes.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct StoredJob {
    pool: String,
    name: String,
    priority: i32,
    task: TaskSpec,
    first_index: u32,
    last_index: u32,
    /// An array listed with gaps, as written (`1,3,5-9:2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    array: Option<String>,
    groups: Option<Vec<TaskGroup>>,
    notify: Option<String>,
    owner: String,
    max_output: u64,
    #[serde(default, skip_serializing_if = "JobPolicy::is_default")]
    policy: JobPolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    auto_pool: Option<StoredPool>,
}

impl StoredJob {
    pub(super) fn of(j: &JobSpec) -> StoredJob {
        StoredJob {
            pool: j.pool.to_string(),
            name: j.name.clone(),
            priority: j.priority,
            task: j.task.clone(),
            first_index: j.first_index,
            last_index: j.last_index,
            array: j.array.as_ref().map(|a| a.to_string()),
            groups: j.graph.as_ref().map(|g| g.groups.clone()),
            notify: j.notify.clone(),
            owner: j.owner.clone(),
            max_output: j.max_output,
            policy: j.policy.clone(),
            auto_pool: j.auto_pool.as_deref().map(StoredPool::of),
        }
    }

    pub(super) fn into_spec(self) -> Result<JobSpec> {
        let graph = match self.groups {
            Some(groups) => Some(Arc::new(corral_types::graph::resolve(groups).map_err(|e| corrupt(e.to_string()))?)),
            None => None,
        };
        let pool = PoolName::parse("pool", &self.pool).map_err(corrupt)?;
        let auto_pool = match self.auto_pool {
            Some(p) => Some(Box::new(p.into_spec(pool.clone())?)),
            None => None,
        };
        Ok(JobSpec {
            pool,
            name: self.name,
            priority: self.priority,
            task: self.task,
            first_index: self.first_index,
            last_index: self.last_index,
            array: self.array.map(|text| text.parse::<Indices>().map(Arc::new)).transpose().map_err(corrupt)?,
            graph,
            open: false,
            notify: self.notify,
            owner: self.owner,
            max_output: self.max_output,
            begin_at_ms: None,
            schedule: None,
            template: None,
            policy: self.policy,
            after: Vec::new(),
            auto_pool,
        })
    }
}

pub(super) fn json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| corrupt(e.to_string()))
}

pub(super) fn put(tx: &mut dyn Sql, r: &ScheduleRecord) -> Result<()> {
    let s = &r.spec;
    let (cron, tz, every_ms, anchor_ms) = match &s.cadence {
        Cadence::Cron { expr, zone, .. } => (Some(expr.clone()), Some(zone.clone()), None, None),
        Cadence::Every { period_ms, anchor_ms } => (None, None, Some(*period_ms), Some(*anchor_ms)),
    };
    let when = StoredWhen {
        cron,
        tz,
        every_ms,
        anchor_ms,
        overlap: s.overlap.as_str().to_string(),
        catchup_window_ms: s.catchup_window.as_millis() as u64,
        jitter_ms: s.jitter.as_millis() as u64,
        start_at_ms: s.start_at_ms,
        end_at_ms: s.end_at_ms,
    };
    let job = StoredJob::of(&s.job);
    static PUT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let columns = [
            "name",
            "spec",
            "job",
            "created_at_ms",
            "paused",
            "cursor_ms",
            "buffered",
            "missed",
            "skipped",
            "last_error",
        ];
        upsert("schedules", &columns, &["name"], &[])
    });
    tx.execute(
        &PUT,
        args![
            s.name.as_str(),
            json(&when)?,
            json(&job)?,
            r.created_at_ms,
            r.paused,
            r.cursor_ms,
            json(&r.buffered)?,
            r.missed,
            r.skipped,
            r.last_error
        ],
    )?;
    Ok(())
}

pub(super) fn delete(tx: &mut dyn Sql, name: &ScheduleName) -> Result<()> {
    tx.execute("DELETE FROM schedules WHERE name = ?1", args![name.as_str()])?;
    tx.execute("DELETE FROM schedule_slots WHERE schedule = ?1", args![name.as_str()])?;
    Ok(())
}

pub(super) fn insert_slot(tx: &mut dyn Sql, name: &ScheduleName, slot_ms: u64, job: JobId) -> Result<()> {
    // A plain INSERT: a second job for one slot breaks the key, and the batch that
    // made it rolls back.
    tx.execute(
        "INSERT INTO schedule_slots (schedule, slot_ms, job_id) VALUES (?1, ?2, ?3)",
        args![name.as_str(), slot_ms, job.0],
    )?;
    Ok(())
}

pub(super) fn prune(tx: &mut dyn Sql, before_ms: u64) -> Result<()> {
    tx.execute("DELETE FROM schedule_slots WHERE slot_ms < ?1", args![before_ms])?;
    Ok(())
}

/// Every schedule, with its last [`crate::core::schedules::RUNS_KEPT`] runs.
pub(super) fn load(sql: &mut dyn Sql) -> Result<Vec<crate::core::StoredSchedule>> {
    let rows = sql.rows(
        "SELECT name, spec, job, created_at_ms, paused, cursor_ms, buffered, missed, skipped, last_error FROM schedules ORDER BY name",
        args![],
        |r| {
        Ok((
            r.get::<String>(0)?,
            r.get::<String>(1)?,
            r.get::<String>(2)?,
            r.get::<u64>(3)?,
            r.get::<bool>(4)?,
            r.get::<u64>(5)?,
            r.get::<String>(6)?,
            r.get::<u64>(7)?,
            r.get::<u64>(8)?,
            r.get::<Option<String>>(9)?,
        ))
        },
    )?;
    let mut out = Vec::new();
    for row in rows {
        let (name, when, job, created_at_ms, paused, cursor_ms, buffered, missed, skipped, last_error) = row;
        let de = |e: serde_json::Error| corrupt(e.to_string());
        let when: StoredWhen = serde_json::from_str(&when).map_err(de)?;
        let job: StoredJob = serde_json::from_str(&job).map_err(de)?;
        let cadence = match (when.cron, when.tz, when.every_ms, when.anchor_ms) {
            (Some(expr), Some(tz), _, _) => Cadence::cron(&expr, &tz).map_err(corrupt)?,
            (_, _, Some(every), Some(anchor)) => Cadence::every(every, anchor).map_err(corrupt)?,
            _ => return Err(corrupt(format!("schedule '{name}' has neither a cron expression nor an interval"))),
        };
        let name = ScheduleName::parse("name", &name).map_err(corrupt)?;
        let spec = ScheduleSpec {
            cadence,
            overlap: when.overlap.parse().map_err(corrupt)?,
            catchup_window: Duration::from_millis(when.catchup_window_ms),
            jitter: Duration::from_millis(when.jitter_ms),
            start_at_ms: when.start_at_ms,
            end_at_ms: when.end_at_ms,
            job: job.into_spec()?,
            name: name.clone(),
        };
        let last: Vec<(u64, JobId)> = sql.rows(
            "SELECT slot_ms, job_id FROM (SELECT slot_ms, job_id FROM schedule_slots WHERE schedule = ?1 ORDER BY slot_ms DESC LIMIT ?2) AS recent ORDER BY slot_ms",
            args![name.as_str(), crate::core::schedules::RUNS_KEPT as u64],
            |r| Ok((r.get::<u64>(0)?, JobId(r.get(1)?))),
        )?;
        let record = ScheduleRecord {
            spec,
            created_at_ms,
            paused,
            cursor_ms,
            buffered: serde_json::from_str(&buffered).map_err(de)?,
            missed,
            skipped,
            last_error,
        };
        out.push((record, last));
    }
    Ok(out)
}

impl Reader {
    /// The slots of `schedule` in `from..=to` that made a job.
    pub fn schedule_slots(&mut self, schedule: &ScheduleName, from_ms: u64, to_ms: u64) -> Result<BTreeSet<u64>> {
        let rows = self.db.sql().rows(
            "SELECT slot_ms FROM schedule_slots WHERE schedule = ?1 AND slot_ms BETWEEN ?2 AND ?3",
            args![schedule.as_str(), from_ms, to_ms],
            |r| r.get::<u64>(0),
        )?;
        Ok(rows.into_iter().collect())
    }
}
