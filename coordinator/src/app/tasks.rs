//! What both edges' task lists add from the record: a finished task's last attempt,
//! where and when it ran and how it ended (the dead-letter view says why each
//! failed). One store read per page, off the async threads.

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::Error;
use crate::model::*;
use crate::shared::Shared;
use crate::store::EndedAttempt;

/// Whether a task's last attempt is in the record and over: it ran, and the task
/// finished.
pub fn ran_and_ended(state: TaskState, attempt: u32) -> bool {
    attempt > 0 && state.is_final()
}

/// The last attempts of `tasks` (each a task's key, its state and its attempt
/// number) that ran and ended, by attempt.
pub async fn last_attempts(
    shared: &Arc<Shared>,
    tasks: impl IntoIterator<Item = (TaskKey, TaskState, u32)>,
) -> Result<HashMap<AttemptRef, EndedAttempt>, Error> {
    let wanted: Vec<AttemptRef> = tasks
        .into_iter()
        .filter(|&(_, state, attempt)| ran_and_ended(state, attempt))
        .map(|(task, _, attempt)| AttemptRef { task, attempt })
        .collect();
    ended_attempts(shared, wanted).await
}

/// How each of a continuous job's replicas last ended (each a task's key, its
/// state and its attempt number): the current attempt of one that waits to
/// start again, the one before of one running; by task.
pub async fn replica_exits(
    shared: &Arc<Shared>,
    replicas: impl IntoIterator<Item = (TaskKey, TaskState, u32)>,
) -> Result<HashMap<TaskKey, EndedAttempt>, Error> {
    let wanted: Vec<AttemptRef> = replicas
        .into_iter()
        .map(|(task, state, attempt)| match state {
            TaskState::Running => AttemptRef { task, attempt: attempt.saturating_sub(1) },
            _ => AttemptRef { task, attempt },
        })
        .filter(|a| a.attempt > 0)
        .collect();
    let ended = ended_attempts(shared, wanted).await?;
    Ok(ended.into_iter().map(|(a, e)| (a.task, e)).collect())
}

async fn ended_attempts(
    shared: &Arc<Shared>,
    wanted: Vec<AttemptRef>,
) -> Result<HashMap<AttemptRef, EndedAttempt>, Error> {
    if wanted.is_empty() {
        return Ok(HashMap::new());
    }
    let shared = shared.clone();
    tokio::task::spawn_blocking(move || shared.reader().ended_attempts(&wanted))
        .await
        .map_err(|e| Error::Io(std::io::Error::other(e.to_string())))?
}
