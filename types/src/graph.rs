//! Graph jobs: named tasks and task arrays with dependencies, resolved into a DAG
//! of task indices. Resolution is where a graph is judged: duplicate ids, unknown
//! or malformed references, self-dependencies and cycles are refused with an error
//! that names the tasks involved (the CLI adds the file's line).

use std::collections::HashMap;

use crate::spec::TaskSpec;

/// One task or array of a graph job, as submitted.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TaskGroup {
    pub id: String,
    pub spec: TaskSpec,
    /// Inclusive index range for an array; `None` for a single task.
    pub array: Option<(u32, u32)>,
    pub depends_on: Vec<String>,
}

impl TaskGroup {
    /// How many tasks it stands for (u64: `0-4294967295` has 2^32).
    pub fn task_count(&self) -> u64 {
        self.array.map_or(1, |(a, b)| u64::from(b).saturating_sub(u64::from(a)) + 1)
    }
}

/// The most tasks a graph job may have.
pub const MAX_GRAPH_TASKS: usize = 1_000_000;
/// The most dependency edges a graph job may have.
pub const MAX_EDGES: usize = 10_000_000;

/// A resolved graph: tasks numbered 0.. in the order given, arrays expanded.
#[derive(Debug, Clone, PartialEq)]
pub struct Graph {
    pub groups: Vec<TaskGroup>,
    /// For each task: its group and its array index (0 for a single task).
    pub tasks: Vec<(u32, u32)>,
    /// For each task: the tasks it waits for.
    pub upstream: Vec<Vec<u32>>,
    /// For each task: the tasks that wait for it.
    pub downstream: Vec<Vec<u32>>,
}

impl Graph {
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    pub fn spec(&self, task: u32) -> &TaskSpec {
        &self.groups[self.tasks[task as usize].0 as usize].spec
    }

    pub fn array_index(&self, task: u32) -> u32 {
        self.tasks[task as usize].1
    }

    /// `prep` for a single task, `frames[7]` for an element of an array.
    pub fn name(&self, task: u32) -> String {
        let (group, index) = self.tasks[task as usize];
        let group = &self.groups[group as usize];
        match group.array {
            Some(_) => format!("{}[{index}]", group.id),
            None => group.id.clone(),
        }
    }

    /// The task called `name`, if any.
    pub fn find(&self, name: &str) -> Option<u32> {
        let (id, index) = match name.strip_suffix(']').and_then(|n| n.split_once('[')) {
            Some((id, index)) => (id, Some(index.parse::<u32>().ok()?)),
            None => (name, None),
        };
        let mut first = 0u32;
        for group in &self.groups {
            if group.id == id {
                return match (group.array, index) {
                    (None, None) => Some(first),
                    (Some((a, b)), Some(i)) if (a..=b).contains(&i) => Some(first + (i - a)),
                    _ => None,
                };
            }
            first += group.task_count() as u32;
        }
        None
    }
}

/// Why a graph was refused, naming the tasks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    #[error("the job has no tasks")]
    Empty,
    #[error("task id must not be empty")]
    EmptyId,
    #[error("task id '{0}' is not valid: use up to {MAX_ID} letters, digits, '-', '_' and '.' ('.' and '..' alone are not ids)")]
    BadId(String),
    #[error("task id '{0}' is used twice")]
    Duplicate(String),
    #[error("task '{task}' depends on '{on}', which is not a task of this job")]
    Unknown { task: String, on: String },
    #[error("task '{task}' depends on '{on}': {why}")]
    BadReference { task: String, on: String, why: String },
    #[error("task '{0}' depends on itself")]
    SelfDependency(String),
    #[error("the dependencies form a cycle: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
    #[error("array '{0}' is reversed: the start must not be after the end")]
    ReversedArray(String),
    #[error("the job has more than {MAX_GRAPH_TASKS} tasks")]
    TooManyTasks,
    #[error("the job has more than {MAX_EDGES} dependencies")]
    TooManyEdges,
}

impl GraphError {
    /// The group ids the error is about, so a caller can point at them in a file.
    pub fn tasks(&self) -> Vec<String> {
        let base = |s: &str| s.split('[').next().unwrap_or(s).to_string();
        match self {
            GraphError::BadId(t) | GraphError::Duplicate(t) | GraphError::SelfDependency(t) => vec![base(t)],
            GraphError::ReversedArray(t) => vec![t.clone()],
            GraphError::Unknown { task, .. } | GraphError::BadReference { task, .. } => vec![base(task)],
            GraphError::Cycle(names) => names.iter().map(|n| base(n)).collect(),
            _ => Vec::new(),
        }
    }
}

/// The longest task id.
pub const MAX_ID: usize = 128;

/// A task id names the task's directory and its outputs' prefix, so `.` and `..`
/// (which would name another directory) are not ids.
fn valid_id(id: &str) -> bool {
    id.len() <= MAX_ID && id != "." && id != ".." && id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// Checks a graph and numbers its tasks. An empty graph is fine here (an open job
/// may start with none); whoever needs tasks checks for [`GraphError::Empty`].
pub fn resolve(groups: Vec<TaskGroup>) -> Result<Graph, GraphError> {
    let mut first_of: HashMap<&str, (u32, usize)> = HashMap::new();
    let mut total: usize = 0;
    for (g, group) in groups.iter().enumerate() {
        if group.id.is_empty() {
            return Err(GraphError::EmptyId);
        }
        if !valid_id(&group.id) {
            return Err(GraphError::BadId(crate::shown(&group.id)));
        }
        if let Some((a, b)) = group.array {
            if a > b {
                return Err(GraphError::ReversedArray(group.id.clone()));
            }
        }
        if first_of.insert(group.id.as_str(), (total as u32, g)).is_some() {
            return Err(GraphError::Duplicate(group.id.clone()));
        }
        total = total.saturating_add(group.task_count() as usize);
        if total > MAX_GRAPH_TASKS {
            return Err(GraphError::TooManyTasks);
        }
    }
    let mut tasks = Vec::with_capacity(total);
    for (g, group) in groups.iter().enumerate() {
        match group.array {
            Some((a, b)) => tasks.extend((a..=b).map(|i| (g as u32, i))),
            None => tasks.push((g as u32, 0)),
        }
    }
    // Resolve each reference of a group to a range of task numbers.
    let mut upstream: Vec<Vec<u32>> = vec![Vec::new(); total];
    let mut edges = 0usize;
    for group in &groups {
        let (first, _) = first_of[group.id.as_str()];
        // Ranges first, merged, so that naming a big array many times costs nothing.
        let mut ranges: Vec<std::ops::Range<u32>> = Vec::new();
        for reference in &group.depends_on {
            let (id, range) = parse_reference(&group.id, reference)?;
            let &(target_first, target_group) = first_of
                .get(id)
                .ok_or_else(|| GraphError::Unknown { task: group.id.clone(), on: reference.clone() })?;
            let target = &groups[target_group];
            let range = match (range, target.array) {
                (None, _) => target_first..target_first + target.task_count() as u32,
                (Some(_), None) => {
                    return Err(GraphError::BadReference {
                        task: group.id.clone(),
                        on: reference.clone(),
                        why: format!("'{}' is a single task, not an array", crate::shown(id)),
                    })
                }
                (Some((a, b)), Some((start, end))) => {
                    if a < start || b > end {
                        return Err(GraphError::BadReference {
                            task: group.id.clone(),
                            on: reference.clone(),
                            why: format!("'{}' has indices {start}-{end}", crate::shown(id)),
                        });
                    }
                    target_first + (a - start)..target_first + (b - start) + 1
                }
            };
            if target.id == group.id {
                return Err(GraphError::SelfDependency(group.id.clone()));
            }
            ranges.push(range);
        }
        ranges.sort_unstable_by_key(|r| (r.start, r.end));
        let mut merged: Vec<std::ops::Range<u32>> = Vec::new();
        for range in ranges {
            match merged.last_mut() {
                Some(last) if range.start <= last.end => last.end = last.end.max(range.end),
                _ => merged.push(range),
            }
        }
        let per_task: usize = merged.iter().map(|r| r.len()).sum();
        if per_task.saturating_mul(group.task_count() as usize) > MAX_EDGES {
            return Err(GraphError::TooManyEdges);
        }
        let targets: Vec<u32> = merged.into_iter().flatten().collect();
        for t in first..first + group.task_count() as u32 {
            edges += targets.len();
            if edges > MAX_EDGES {
                return Err(GraphError::TooManyEdges);
            }
            upstream[t as usize] = targets.clone();
        }
    }
    let mut downstream: Vec<Vec<u32>> = vec![Vec::new(); total];
    for (t, ups) in upstream.iter().enumerate() {
        for &u in ups {
            downstream[u as usize].push(t as u32);
        }
    }
    let graph = Graph { groups, tasks, upstream, downstream };
    if let Some(cycle) = find_cycle(&graph) {
        return Err(GraphError::Cycle(cycle.iter().map(|&t| graph.name(t)).collect()));
    }
    Ok(graph)
}

/// A reference split into the group id and the index range it names, if any.
type Reference<'a> = (&'a str, Option<(u32, u32)>);

/// `id`, `id[i]` or `id[a-b]`.
fn parse_reference<'a>(task: &str, reference: &'a str) -> Result<Reference<'a>, GraphError> {
    let bad = |why: &str| GraphError::BadReference { task: task.into(), on: reference.into(), why: why.into() };
    let Some(open) = reference.find('[') else { return Ok((reference, None)) };
    let inner = reference[open + 1..].strip_suffix(']').ok_or_else(|| bad("expected ID, ID[I] or ID[A-B]"))?;
    let number = |s: &str| s.trim().parse::<u32>().map_err(|_| bad("array indices are whole numbers"));
    let range = match inner.split_once('-') {
        Some((a, b)) => (number(a)?, number(b)?),
        None => {
            let i = number(inner)?;
            (i, i)
        }
    };
    if range.0 > range.1 {
        return Err(bad("the range is reversed"));
    }
    Ok((&reference[..open], Some(range)))
}

/// A cycle, as task numbers from a task back to itself, if the graph has one.
fn find_cycle(graph: &Graph) -> Option<Vec<u32>> {
    // Kahn's algorithm: whatever is never freed is on or behind a cycle.
    let n = graph.len();
    let mut waiting: Vec<usize> = graph.upstream.iter().map(Vec::len).collect();
    let mut free: Vec<u32> = (0..n as u32).filter(|&t| waiting[t as usize] == 0).collect();
    let mut done = 0;
    while let Some(t) = free.pop() {
        done += 1;
        for &d in &graph.downstream[t as usize] {
            waiting[d as usize] -= 1;
            if waiting[d as usize] == 0 {
                free.push(d);
            }
        }
    }
    if done == n {
        return None;
    }
    // Walk upstream among the stuck tasks until one repeats: that loop is a cycle.
    let start = (0..n).find(|&t| waiting[t] > 0)? as u32;
    let mut path = vec![start];
    let mut seen: HashMap<u32, usize> = HashMap::from([(start, 0)]);
    let mut t = start;
    loop {
        t = *graph.upstream[t as usize].iter().find(|&&u| waiting[u as usize] > 0)?;
        if let Some(&at) = seen.get(&t) {
            let mut cycle: Vec<u32> = path[at..].to_vec();
            cycle.reverse();
            cycle.push(cycle[0]);
            return Some(cycle);
        }
        seen.insert(t, path.len());
        path.push(t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, deps: &[&str]) -> TaskGroup {
        TaskGroup {
            id: id.into(),
            spec: TaskSpec::command(vec!["true".into()]),
            array: None,
            depends_on: deps.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn array(id: &str, a: u32, b: u32, deps: &[&str]) -> TaskGroup {
        TaskGroup { array: Some((a, b)), ..task(id, deps) }
    }

    #[test]
    fn a_diamond_resolves_in_order() {
        let g = resolve(vec![task("a", &[]), task("b", &["a"]), task("c", &["a"]), task("d", &["b", "c"])]).unwrap();
        assert_eq!(g.upstream, vec![vec![], vec![0], vec![0], vec![1, 2]]);
        assert_eq!(g.downstream, vec![vec![1, 2], vec![3], vec![3], vec![]]);
    }

    #[test]
    fn arrays_expand_and_references_pick_ranges() {
        let g = resolve(vec![
            task("prep", &[]),
            array("frames", 1, 4, &["prep"]),
            task("some", &["frames[2-3]"]),
            task("one", &["frames[4]"]),
            task("all", &["frames", "prep"]),
        ])
        .unwrap();
        assert_eq!(g.len(), 8);
        assert_eq!(g.name(2), "frames[2]");
        assert_eq!(g.array_index(2), 2);
        assert_eq!(g.find("frames[2]"), Some(2));
        assert_eq!(g.find("frames[9]"), None);
        assert_eq!(g.find("all"), Some(7));
        assert_eq!(g.upstream[1], vec![0]);
        assert_eq!(g.upstream[5], vec![2, 3]);
        assert_eq!(g.upstream[6], vec![4]);
        assert_eq!(g.upstream[7], vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn bad_graphs_name_the_tasks() {
        let err = |groups| resolve(groups).unwrap_err();
        assert!(resolve(vec![]).unwrap().is_empty(), "an open job may start empty");
        assert_eq!(err(vec![task("a", &[]), task("a", &[])]), GraphError::Duplicate("a".into()));
        assert_eq!(err(vec![task("a b", &[])]).tasks(), vec!["a b"]);
        assert_eq!(err(vec![task("a", &["ghost"])]), GraphError::Unknown { task: "a".into(), on: "ghost".into() });
        assert_eq!(err(vec![task("a", &["a"])]), GraphError::SelfDependency("a".into()));
        assert_eq!(err(vec![array("f", 1, 3, &["f[1]"])]), GraphError::SelfDependency("f".into()));
        assert!(matches!(err(vec![task("a", &[]), task("b", &["a[1]"])]), GraphError::BadReference { .. }));
        assert!(matches!(err(vec![array("f", 1, 3, &[]), task("b", &["f[2-9]"])]), GraphError::BadReference { .. }));
        assert!(matches!(err(vec![array("f", 1, 3, &[]), task("b", &["f[x]"])]), GraphError::BadReference { .. }));
        assert_eq!(err(vec![array("f", 3, 1, &[])]), GraphError::ReversedArray("f".into()));

        let cycle = err(vec![task("a", &["c"]), task("b", &["a"]), task("c", &["b"]), task("d", &[])]);
        let GraphError::Cycle(names) = &cycle else { panic!("{cycle:?}") };
        assert_eq!(names.first(), names.last());
        let mut members: Vec<&String> = names[1..].iter().collect();
        members.sort();
        assert_eq!(members, ["a", "b", "c"]);
        assert!(cycle.to_string().contains(" -> "), "{cycle}");
        assert_eq!(cycle.tasks().len(), 4);
    }

    #[test]
    fn huge_arrays_and_repeated_references_are_refused_cheaply() {
        assert_eq!(resolve(vec![array("all", 0, u32::MAX, &[])]).unwrap_err(), GraphError::TooManyTasks);
        let big = array("big", 1, 500_000, &[]);
        let many: Vec<&str> = vec!["big"; 10_000];
        let g = resolve(vec![big.clone(), task("one", &many)]).unwrap();
        assert_eq!(g.upstream[500_000].len(), 500_000, "ten thousand mentions, one edge each");
        let err = resolve(vec![big, array("fan", 1, 100, &["big"])]).unwrap_err();
        assert_eq!(err, GraphError::TooManyEdges);
    }

    #[test]
    fn a_big_fan_in_resolves() {
        let g = resolve(vec![array("work", 1, 1000, &[]), task("sum", &["work"])]).unwrap();
        assert_eq!(g.upstream[1000].len(), 1000);
        assert!(g.downstream[..1000].iter().all(|d| d == &vec![1000]));
    }
}
