//! What agents send (registration, results, log chunks), validated, and what they
//! are sent (assignments).

use corral_proto::v1 as pb;

use super::{storable, text, MAX_LOG_CHUNK, MAX_SLOTS};
use corral_types::order::Runs;

use crate::error::Invalid;
use crate::model::*;

pub fn registration(req: pb::RegisterRequest) -> Result<Registration, Invalid> {
    let pool = PoolName::parse("pool", &req.pool)?;
    if req.slots == 0 {
        return Err(Invalid::new("slots", "must be at least 1"));
    }
    if req.slots > MAX_SLOTS {
        return Err(Invalid::new("slots", format!("must be at most {MAX_SLOTS}")));
    }
    text("hostname", &req.hostname, 255)?;
    let launch_id = if req.launch_id.is_empty() {
        None
    } else {
        let id = NodeId(req.launch_id);
        if id.seq().is_none() {
            return Err(Invalid::new("launch_id", format!("'{}' is not a node id", crate::error::shown(&id))));
        }
        Some(id)
    };
    let memory_bytes = storable("memory_bytes", req.memory_bytes)?;
    let mut resources = super::resources("resources", req.resources)?;
    // Memory is a resource of every node: what it has, unless it says otherwise.
    resources.entry(corral_types::resources::MEM.into()).or_insert(memory_bytes);
    Ok(Registration {
        pool,
        hostname: req.hostname,
        slots: req.slots,
        cpus: req.cpus,
        memory_bytes,
        pid: req.pid,
        launch_id,
        resources,
    })
}

pub fn node_id(field: &'static str, id: &str) -> Result<NodeId, Invalid> {
    let id = NodeId(id.to_string());
    if id.seq().is_none() {
        return Err(Invalid::new(
            field,
            format!("'{}' is not a node id (they look like n-12)", crate::error::shown(&id)),
        ));
    }
    Ok(id)
}

pub fn attempt_ref(r: Option<pb::TaskRef>) -> Result<AttemptRef, Invalid> {
    let r = r.ok_or_else(|| Invalid::new("task", "is required"))?;
    if r.attempt == 0 {
        return Err(Invalid::new("task.attempt", "must be at least 1"));
    }
    Ok(AttemptRef {
        task: TaskKey { job: JobId(storable("task.job_id", r.job_id)?), index: r.index },
        attempt: r.attempt,
    })
}

/// An agent's report of an ended attempt. An outcome this coordinator does not know
/// (a newer agent's, or none) still ends the attempt, as failed and saying so: a
/// report dropped for its outcome would leave the task running forever.
pub fn task_result(r: pb::TaskResult) -> Result<TaskResult, Invalid> {
    let known = pb::Outcome::try_from(r.outcome).ok().and_then(pb::Outcome::word);
    let mut message: String = r.message.chars().take(4096).collect();
    if known.is_none() {
        message = format!("the agent reported outcome {}, which this coordinator does not know; {message}", r.outcome);
    }
    Ok(TaskResult {
        attempt: attempt_ref(r.task)?,
        outcome: known.unwrap_or(Outcome::Failed),
        exit_code: r.has_exit_code.then_some(r.exit_code),
        signal: (r.signal != 0).then_some(r.signal),
        message,
        started_at_ms: storable("started_at_ms", r.started_at_ms)?,
        ended_at_ms: storable("ended_at_ms", r.ended_at_ms)?,
        written: [r.stdout_bytes, r.stderr_bytes],
        // An order that does not fit what was written is dropped, not the result:
        // a result refused would leave the task running forever.
        order: Runs::checked(r.output_order, [r.stdout_bytes, r.stderr_bytes]).unwrap_or_default(),
    })
}

pub fn log_chunk(c: pb::LogChunk) -> Result<LogChunk, Invalid> {
    if c.data.len() > MAX_LOG_CHUNK {
        return Err(Invalid::new("logs.data", format!("a chunk may carry at most {MAX_LOG_CHUNK} bytes")));
    }
    if c.offset > 1 << 50 {
        return Err(Invalid::new("logs.offset", "is implausibly large"));
    }
    Ok(LogChunk { attempt: attempt_ref(c.task)?, rank: c.rank, stderr: c.stderr, offset: c.offset, data: c.data })
}

/// The address an agent says other ranks reach it at: `None` if it says none.
pub fn advertised(address: &str) -> Result<Option<String>, Invalid> {
    if address.is_empty() {
        return Ok(None);
    }
    if !corral_types::is_host_address(address) {
        return Err(Invalid::new("hello.address", "is not a host name or address"));
    }
    Ok(Some(address.to_string()))
}

/// The most a launch frame carries (`corral-rsh` sends 64 KiB at a time).
const MAX_LAUNCH_DATA: usize = 1 << 20;
/// The longest command a launch runs.
const MAX_LAUNCH_COMMAND: usize = 256 << 10;

/// A frame of a multi-node launch, bounded.
pub fn launch_frame(f: pb::LaunchFrame) -> Result<pb::LaunchFrame, Invalid> {
    if f.data.len() > MAX_LAUNCH_DATA {
        return Err(Invalid::new("launches.data", format!("a frame may carry at most {MAX_LAUNCH_DATA} bytes")));
    }
    if f.open.as_ref().is_some_and(|o| o.command.len() > MAX_LAUNCH_COMMAND) {
        return Err(Invalid::new("launches.open.command", format!("is longer than {MAX_LAUNCH_COMMAND} bytes")));
    }
    if f.error.len() > 4096 {
        return Err(Invalid::new("launches.error", "is longer than 4096 bytes"));
    }
    Ok(f)
}

pub fn attempt_to_pb(a: AttemptRef) -> pb::TaskRef {
    pb::TaskRef { job_id: a.task.job.0, index: a.task.index, attempt: a.attempt }
}

/// What the core assigned, as the agent reads it.
pub fn assignment_to_pb(a: crate::core::Assignment) -> pb::Assignment {
    pb::Assignment {
        task: Some(attempt_to_pb(a.attempt)),
        name: a.name,
        array_index: a.array_index,
        inputs: a.inputs.into_iter().map(|i| pb::TaskInput { object: i.object, path: i.path }).collect(),
        outputs: a.outputs,
        outputs_when: a.outputs_when.as_str().into(),
        output_prefix: a.output_prefix,
        max_output_bytes: a.max_output,
        checkpoint_interval_ms: a.checkpoint_interval.map_or(0, |d| d.as_millis() as u64),
        checkpoint_object: a.checkpoint.as_ref().map(|(_, object)| object.clone()).unwrap_or_default(),
        checkpoint: a.checkpoint.map(|(path, _)| path).unwrap_or_default(),
        map: match &a.work {
            crate::core::Work::Map { segments, reduce_tasks, combiner, output_prefix } => Some(pb::MapWork {
                segments: segments
                    .iter()
                    .map(|s| pb::Segment { object: s.object.clone(), offset: s.offset, length: s.length })
                    .collect(),
                reduce_tasks: *reduce_tasks,
                combiner: combiner.clone().unwrap_or_default(),
                output_prefix: output_prefix.clone(),
            }),
            _ => None,
        },
        reduce: match a.work {
            crate::core::Work::Reduce { inputs, output } => Some(pb::ReduceWork { inputs, output }),
            _ => None,
        },
        argv: a.argv,
        env: a.env.into_iter().collect(),
        slots: a.slots,
        timeout_ms: a.timeout.map_or(0, |d| d.as_millis() as u64),
        sent_ahead: a.sent_ahead,
        coordination: a.coordination.unwrap_or_default(),
        gang: a.gang.map(|g| pb::Gang {
            rank: g.rank,
            nodes: g.nodes.into_iter().map(|n| n.0).collect(),
            hosts: g.hosts,
            slots: g.slots,
        }),
    }
}
