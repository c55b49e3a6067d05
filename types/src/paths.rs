//! Where everything lives in the object store, written once. The coordinator, the
//! agent and the CLI all name objects through these functions:
//!
//! ```text
//! jobs/<job>/                    everything a job stored (deleted with the job)
//! jobs/<job>/<task id>/<path>    a task's outputs (`corral job output`)
//! jobs/<job>/output/part-<r>     reduce task r's result (five digits)
//! shuffle/<job>/<m>/part-<r>     map task m's partition r
//! payloads/<id>/payload          a dispatch's payload (deleted with its job)
//! corral-store/<id>              marks the store the coordinators on one database share
//! ```

use crate::JobId;

/// Every object of a job's own, without the trailing slash (`corral job output` lists
/// it; deleting the job deletes it).
pub fn job(job: JobId) -> String {
    format!("jobs/{job}")
}

/// Where dispatches' payloads live.
pub const PAYLOADS: &str = "payloads/";

/// The object of payload `id` (a random name the coordinator picks).
pub fn payload(id: &str) -> String {
    format!("{PAYLOADS}{id}/payload")
}

/// The folder to delete with the job whose input `object` is, if it is a payload:
/// `payloads/<32 hex digits>/payload` and nothing else.
pub fn payload_folder(object: &str) -> Option<&str> {
    let id = object.strip_prefix(PAYLOADS)?.strip_suffix("/payload")?;
    let hex = id.len() == 32 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    hex.then(|| &object[..PAYLOADS.len() + id.len()])
}

/// Where the marks of shared stores live.
pub const STORE_MARKS: &str = "corral-store/";

/// The object that marks the store whose id is `id`: the first coordinator on a
/// PostgreSQL database writes it, and every other one must find it in its store.
pub fn store_mark(id: &str) -> String {
    format!("{STORE_MARKS}{id}")
}

/// The folders Corral writes itself: a client may not put there, name them as a
/// task's input, or trigger on them.
pub const RESERVED: [&str; 4] = ["jobs/", "shuffle/", PAYLOADS, STORE_MARKS];

/// Whether `path` is in one of the [`RESERVED`] folders.
pub fn is_reserved(path: &str) -> bool {
    RESERVED.iter().any(|r| is_reserved_by(path, r))
}

/// Whether `path` is in (or is) the reserved folder `folder` (`jobs/`).
pub fn is_reserved_by(path: &str, folder: &str) -> bool {
    let path = path.trim_start_matches('/');
    path.starts_with(folder) || path == folder.trim_end_matches('/')
}

/// Where a task's outputs go: `<path>` under it is the file's path in the task's dir.
pub fn task_outputs(job: JobId, task_name: &str) -> String {
    format!("jobs/{job}/{task_name}")
}

/// Where a task's checkpoint is kept (one object, replaced by each save); it goes
/// with the job.
pub fn task_checkpoint(job: JobId, task_name: &str) -> String {
    format!("jobs/{job}/.checkpoints/{task_name}.tar")
}

/// The job and task name of a checkpoint object's path.
pub fn parse_checkpoint(path: &str) -> Option<(JobId, &str)> {
    let rest = path.strip_prefix("jobs/")?;
    let (job, rest) = rest.split_once('/')?;
    let name = rest.strip_prefix(".checkpoints/")?.strip_suffix(".tar")?;
    Some((JobId(job.parse().ok()?), name))
}

/// The folder of a map/reduce job's result (`corral mapreduce` downloads it).
pub fn job_output(job: JobId) -> String {
    format!("jobs/{job}/output")
}

/// Where reduce task `r` of `job` stores its result.
pub fn reduce_output(job: JobId, r: u32) -> String {
    format!("jobs/{job}/output/part-{r:05}")
}

/// Where map task `m` of `job` stores its partitions (apart from the job's outputs
/// under `jobs/`, which `corral job output` downloads).
pub fn map_outputs(job: JobId, m: u32) -> String {
    format!("shuffle/{job}/{m}")
}

/// Partition `r` under a map task's prefix ([`map_outputs`]): what the agent stores.
pub fn partition(map_outputs: &str, r: u32) -> String {
    format!("{map_outputs}/part-{r}")
}

/// Where map task `m` of `job` stores its partition `r`.
pub fn map_output(job: JobId, m: u32, r: u32) -> String {
    partition(&map_outputs(job, m), r)
}

/// The map task and partition of a path under `job`'s shuffle, if it is exactly one
/// that [`map_output`] makes (no leading zeros, nothing after).
pub fn parse_map_output(job: JobId, path: &str) -> Option<(u32, u32)> {
    let rest = path.strip_prefix(&format!("shuffle/{job}/"))?;
    let (m, r) = rest.split_once("/part-")?;
    let number = |s: &str| s.parse::<u32>().ok().filter(|n| n.to_string() == s);
    Some((number(m)?, number(r)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_payload_of_the_coordinators_naming_is_deleted_with_its_job() {
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(payload_folder(&payload(id)), Some(format!("payloads/{id}").as_str()));
        for other in ["payloads/payload", "payloads/../payload", "in/x/payload", "payloads/ABC/payload", "payloads/"] {
            assert_eq!(payload_folder(other), None, "{other}");
        }
        assert!(is_reserved("jobs/1/0/out") && is_reserved("payloads") && is_reserved("/shuffle/2"));
        assert!(!is_reserved("jobsite/a") && !is_reserved("in/jobs/x"));
    }

    #[test]
    fn a_map_output_reads_back() {
        let job = JobId(7);
        assert_eq!(map_output(job, 3, 12), "shuffle/7/3/part-12");
        assert_eq!(parse_map_output(job, &map_output(job, 3, 12)), Some((3, 12)));
        assert_eq!(parse_map_output(JobId(8), &map_output(job, 3, 12)), None);
        assert_eq!(parse_map_output(job, "shuffle/7/x/part-1"), None);
        assert_eq!(parse_map_output(job, "shuffle/7/3/part-012"), None);
        assert_eq!(reduce_output(job, 2), "jobs/7/output/part-00002");
        assert!(reduce_output(job, 2).starts_with(&job_output(job)));
        assert!(task_outputs(job, "a").starts_with(&self::job(job)));
    }
}
