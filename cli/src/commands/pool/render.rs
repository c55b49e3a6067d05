//! How pools are shown, shared by the pool subcommands: the JSON of `-o json`,
//! and the fields of `pool show`.

use corral_proto::v1 as pb;
use corral_types::words::Provider;
use serde_json::json;

use super::super::Context;
use crate::output;

pub fn scale_log_json(p: &pb::Pool) -> serde_json::Value {
    p.scale_log.iter().map(|r| json!({"at_ms": r.at_ms, "from": r.from, "to": r.to, "reason": r.reason})).collect()
}

pub fn pool_json(p: &pb::Pool) -> serde_json::Value {
    let spec = p.spec.clone().unwrap_or_default();
    json!({
        "name": spec.name,
        "provider": spec.provider,
        "slots_per_node": spec.slots_per_node,
        "target_nodes": spec.target_nodes,
        "fill": spec.fill,
        "removal_policy": spec.removal_policy,
        "start_task": (!spec.start_task.is_empty()).then_some(&spec.start_task),
        "docker": spec.docker.as_ref().map(|d| json!({
            "image": d.image, "network": d.network, "memory_bytes": d.memory_bytes,
            "nano_cpus": d.nano_cpus, "coordinator_url": d.coordinator_url,
        })),
        "nodes": p.nodes_by_state,
        "slots_total": p.slots_total,
        "slots_used": p.slots_used,
        "slots_free": p.slots_free,
        "ready_tasks": p.ready_tasks,
        "assigned_tasks": p.tasks_assigned,
        "active_jobs": p.active_jobs,
        "created_at_ms": p.created_at_ms,
        "last_error": (!p.last_error.is_empty()).then_some(&p.last_error),
        "deleting": p.deleting,
        "autoscale": spec.autoscale.map(|a| json!({
            "min": a.min, "max": a.max, "idle_timeout_ms": a.idle_timeout_ms, "step": a.step, "cooldown_ms": a.cooldown_ms,
        })),
        "autoscale_now": (!p.autoscale_now.is_empty()).then_some(&p.autoscale_now),
        "scale_log": scale_log_json(p),
    })
}

pub fn nodes_summary(p: &pb::Pool) -> String {
    let mut parts: Vec<String> = p.nodes_by_state.iter().map(|(s, n)| format!("{n} {s}")).collect();
    parts.sort();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

pub fn print_pool(ctx: &Context, p: &pb::Pool) {
    if ctx.json() {
        return output::json(&pool_json(p));
    }
    let spec = p.spec.clone().unwrap_or_default();
    let mut rows = vec![
        ("name", spec.name.clone() + if p.deleting { " (being deleted)" } else { "" }),
        ("provider", spec.provider.clone()),
        ("slots per node", spec.slots_per_node.to_string()),
        ("fill", spec.fill.clone()),
        ("removal policy", spec.removal_policy.clone()),
        ("start task", if spec.start_task.is_empty() { "-".into() } else { spec.start_task.clone() }),
    ];
    if spec.provider.parse() != Ok(Provider::Static) {
        rows.push(("target nodes", spec.target_nodes.to_string()));
    }
    if let Some(d) = &spec.docker {
        let mut limits = Vec::new();
        if d.memory_bytes != 0 {
            limits.push(format!("memory {} MiB", d.memory_bytes >> 20));
        }
        if d.nano_cpus != 0 {
            limits.push(format!("{} CPUs", d.nano_cpus as f64 / 1e9));
        }
        let limits = if limits.is_empty() { "no limits".to_string() } else { limits.join(", ") };
        rows.push(("containers", format!("{} on network {}, {limits}", d.image, d.network)));
    }
    if let Some(a) = &spec.autoscale {
        rows.push((
            "autoscale",
            format!(
                "{}..{} nodes, remove after {} idle, up to {} at a time, cooldown {}",
                a.min,
                a.max,
                output::duration_ms(a.idle_timeout_ms),
                a.step,
                output::duration_ms(a.cooldown_ms)
            ),
        ));
        for r in p.scale_log.iter().rev().take(3) {
            rows.push(("scaled", format!("{} {} -> {}: {}", output::timestamp(r.at_ms), r.from, r.to, r.reason)));
        }
    }
    rows.extend([
        ("nodes", nodes_summary(p)),
        ("slots used", format!("{}/{} ({} free)", p.slots_used, p.slots_total, p.slots_free)),
        ("ready tasks", p.ready_tasks.to_string()),
        ("assigned tasks", format!("{} (sent ahead, waiting on a node for a slot)", p.tasks_assigned)),
        ("active jobs", p.active_jobs.to_string()),
        ("created", output::timestamp(p.created_at_ms)),
    ]);
    if !p.last_error.is_empty() {
        rows.push(("last error", p.last_error.clone()));
    }
    output::fields(&rows);
}
