//! Map/reduce jobs: the input objects split into byte ranges for M map tasks, and a
//! graph of M map tasks and R reduce tasks that depend on all of them. The shuffle
//! itself (partitioning, sorting, merging) happens on the agents; the coordinator
//! only plans it and keeps the usual guarantees (a lost map task reruns alone, a
//! reduce task reruns from the map outputs in the store).

use std::sync::Arc;

use corral_proto::v1 as pb;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::error::Invalid;
use crate::model::*;
use corral_types::graph::TaskGroup;

/// The most map or reduce tasks one job may have.
pub const MAX_TASKS: u32 = 100_000;

/// Cuts the inputs, taken end to end, into `map_tasks` ranges of nearly equal bytes.
/// A range may span files; each of its pieces is a [`Segment`] of one file. (The
/// agent moves each cut to the next line start, so no line is split or lost.)
pub fn plan_splits(inputs: &[(String, u64)], map_tasks: u32) -> Vec<Vec<Segment>> {
    let total: u64 = inputs.iter().map(|(_, size)| size).sum();
    let m = u64::from(map_tasks.max(1));
    let bound = |k: u64| (u128::from(total) * u128::from(k) / u128::from(m)) as u64;
    (0..m)
        .map(|k| {
            let (start, end) = (bound(k), bound(k + 1));
            let mut segments = Vec::new();
            let mut file_start = 0u64;
            for (object, size) in inputs {
                let file_end = file_start + size;
                let (from, to) = (start.max(file_start), end.min(file_end));
                if from < to {
                    segments.push(Segment { object: object.clone(), offset: from - file_start, length: to - from });
                }
                file_start = file_end;
            }
            segments
        })
        .collect()
}

/// The job a map/reduce request describes, with its inputs measured in `store`.
pub async fn job_spec(
    pool: PoolName,
    name: String,
    priority: i32,
    mr: pb::MapReduceSpec,
    store: &Arc<dyn ObjectStore>,
) -> Result<JobSpec, tonic::Status> {
    if mr.inputs.is_empty() {
        return Err(Invalid::new("mapreduce.inputs", "give at least one input object").into());
    }
    for (field, n) in [("mapreduce.map_tasks", mr.map_tasks), ("mapreduce.reduce_tasks", mr.reduce_tasks)] {
        if n == 0 || n > MAX_TASKS {
            return Err(Invalid::new(field, format!("must be from 1 to {MAX_TASKS}")).into());
        }
    }
    for (field, cmd) in [("mapreduce.mapper", &mr.mapper), ("mapreduce.reducer", &mr.reducer)] {
        if cmd.trim().is_empty() {
            return Err(Invalid::new(field, "the command is empty").into());
        }
    }
    let mut inputs = Vec::with_capacity(mr.inputs.len());
    for input in &mr.inputs {
        let path = crate::objects::object_path("mapreduce.inputs", input)?;
        let meta = store.head(&path).await.map_err(|e| match e {
            object_store::Error::NotFound { .. } => tonic::Status::from(Invalid::new(
                "mapreduce.inputs",
                format!("object '{}' does not exist", crate::error::shown(input)),
            )),
            other => tonic::Status::internal(format!("object store: {other}")),
        })?;
        inputs.push((path.to_string(), meta.size));
    }
    let splits = plan_splits(&inputs, mr.map_tasks);
    let timeout = (mr.timeout_ms > 0)
        .then(|| corral_types::duration::from_ms("mapreduce.timeout", mr.timeout_ms))
        .transpose()
        .map_err(tonic::Status::from)?;
    let spec = |command: &str, kind: TaskKind| TaskSpec {
        max_retries: mr.max_retries.min(1000),
        timeout,
        kind,
        ..TaskSpec::command(vec!["sh".into(), "-c".into(), command.to_string()])
    };
    let combiner = Some(mr.combiner.clone()).filter(|c| !c.trim().is_empty());
    let groups = vec![
        TaskGroup {
            id: "map".into(),
            spec: spec(&mr.mapper, TaskKind::Map { splits, reduce_tasks: mr.reduce_tasks, combiner }),
            array: Some((0, mr.map_tasks - 1)),
            depends_on: Vec::new(),
        },
        TaskGroup {
            id: "reduce".into(),
            spec: spec(&mr.reducer, TaskKind::Reduce { map_tasks: mr.map_tasks }),
            array: Some((0, mr.reduce_tasks - 1)),
            depends_on: vec!["map".into()],
        },
    ];
    let graph = corral_types::graph::resolve(groups)
        .map_err(|e| tonic::Status::from(Invalid::new("mapreduce", e.to_string())))?;
    let task = graph.spec(0).clone();
    Ok(JobSpec::new(pool, task).with_graph(Arc::new(graph)).named(name).with_priority(priority))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn covered(splits: &[Vec<Segment>]) -> Vec<(String, u64, u64)> {
        splits.iter().flatten().map(|s| (s.object.clone(), s.offset, s.offset + s.length)).collect()
    }

    #[test]
    fn splits_cover_every_byte_once_in_order() {
        let inputs = vec![("a".to_string(), 10), ("b".to_string(), 0), ("c".to_string(), 5)];
        let splits = plan_splits(&inputs, 4);
        assert_eq!(splits.len(), 4);
        assert_eq!(
            covered(&splits),
            vec![("a".into(), 0, 3), ("a".into(), 3, 7), ("a".into(), 7, 10), ("c".into(), 0, 1), ("c".into(), 1, 5)]
        );
        let sizes: Vec<u64> = splits.iter().map(|s| s.iter().map(|g| g.length).sum()).collect();
        assert_eq!(sizes, vec![3, 4, 4, 4]);
    }

    #[test]
    fn more_map_tasks_than_bytes_leaves_some_empty() {
        let splits = plan_splits(&[("a".to_string(), 2)], 5);
        assert_eq!(splits.iter().filter(|s| s.is_empty()).count(), 3);
        assert_eq!(covered(&splits), vec![("a".into(), 0, 1), ("a".into(), 1, 2)]);
        assert_eq!(plan_splits(&[("a".to_string(), 0)], 3), vec![vec![], vec![], vec![]]);
    }
}
