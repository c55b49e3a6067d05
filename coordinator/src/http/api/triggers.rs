//! `GET /api/triggers[/{name}]`: each trigger with its state, counts, last error
//! and last dispatches.

use std::sync::Arc;

use axum::extract::{Path, State};
use serde::Serialize;

use super::{read, Api};
use crate::core::triggers::Trigger;
use crate::core::Core;
use crate::error::Error;
use crate::model::*;
use crate::shared::Shared;

#[derive(Serialize)]
pub(super) struct TriggerView {
    name: String,
    template: String,
    prefix: String,
    glob: Option<String>,
    /// How often it lists its prefix; none: it fires on each put through the coordinator.
    poll_ms: Option<u64>,
    max_active: Option<u32>,
    owner: String,
    paused: bool,
    created_at_ms: u64,
    /// Jobs made; objects skipped while paused; objects whose job could not be made.
    fired: u64,
    skipped: u64,
    failed: u64,
    last_error: Option<String>,
    last_poll_ms: Option<u64>,
    /// A queue trigger's broker, and how its consumer is doing.
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<SourceView>,
    /// Its last dispatches, the newest first.
    recent: Vec<FiredView>,
}

#[derive(Serialize)]
pub(super) struct SourceView {
    url: String,
    connected: bool,
    backing_off_until_ms: Option<u64>,
    /// Messages taken since this coordinator started.
    taken: u64,
}

#[derive(Serialize)]
pub(super) struct FiredView {
    object: String,
    job: u64,
    at_ms: u64,
    state: Option<&'static str>,
}

fn view(core: &Core, t: &Trigger) -> TriggerView {
    let (r, spec) = (&t.record, &t.record.spec);
    TriggerView {
        name: spec.name.to_string(),
        template: spec.template.to_string(),
        prefix: spec.prefix.clone(),
        glob: spec.glob.clone(),
        poll_ms: spec.poll.map(corral_types::duration::ms),
        max_active: spec.max_active,
        owner: spec.owner.clone(),
        paused: r.paused,
        created_at_ms: r.created_at_ms,
        fired: r.fired,
        skipped: r.skipped,
        failed: r.failed,
        last_error: r.last_error.clone(),
        last_poll_ms: t.last_poll.map(|at| core.wall_ms(at)),
        source: spec.source.as_ref().map(|s| SourceView {
            url: s.url.clone(),
            connected: t.source_state.connected,
            backing_off_until_ms: t.source_state.backing_off_until_ms,
            taken: t.source_state.taken,
        }),
        recent: r
            .recent
            .iter()
            .rev()
            .map(|f| FiredView {
                object: f.object.clone(),
                job: f.job,
                at_ms: f.at_ms,
                state: core.jobs.get(&JobId(f.job)).map(|j| j.state.as_str()),
            })
            .collect(),
    }
}

pub(super) async fn triggers(State(shared): State<Arc<Shared>>) -> Api<Vec<TriggerView>> {
    read(&shared, |core, _| Ok(core.triggers.values().map(|t| view(core, t)).collect())).await
}

pub(super) async fn trigger(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Api<TriggerView> {
    let name = TriggerName::parse("name", &name).map_err(Error::from)?;
    read(&shared, move |core, _| {
        let t = core.triggers.get(&name).ok_or_else(|| Error::not_found("trigger", &name))?;
        Ok(view(core, t))
    })
    .await
}
