//! `--auto-pool SPEC` (and `auto_pool:` in job files): the settings of a pool made
//! for one job, written `key=value,key=value` with the names of `pool create`'s
//! flags: `provider=local,nodes=2,slots=4`, `provider=docker,image=corral-agent,
//! min=0,max=8,slots=2`.

use std::collections::BTreeMap;
use std::time::Duration;

use corral_proto::v1 as pb;

/// The keys a SPEC may use.
const KEYS: &[&str] = &[
    "provider",
    "slots",
    "nodes",
    "fill",
    "removal-policy",
    "start-task",
    "min",
    "max",
    "idle-timeout",
    "step",
    "cooldown",
    "image",
    "network",
    "memory",
    "cpus",
    "coordinator-url",
    "add-command",
    "remove-command",
    "command-timeout",
];

/// `key=value,key=value` (values without commas; a job file's `auto_pool:` takes any).
pub fn parse(s: &str) -> Result<pb::PoolSpec, String> {
    let mut settings = BTreeMap::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (key, value) = item.split_once('=').ok_or_else(|| format!("'{item}' is not key=value"))?;
        settings.insert(key.trim().to_string(), value.trim().to_string());
    }
    spec(&settings)
}

/// The pool spec of named settings; every error names the key.
pub fn spec(settings: &BTreeMap<String, String>) -> Result<pb::PoolSpec, String> {
    if let Some(unknown) = settings.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(format!("'{unknown}' is not a pool setting; use: {}", KEYS.join(", ")));
    }
    let get = |k: &str| settings.get(k).cloned();
    let number = |k: &str| -> Result<Option<u32>, String> {
        get(k).map(|v| v.parse().map_err(|_| format!("{k}={v} is not a whole number"))).transpose()
    };
    let duration = |k: &str| -> Result<Option<Duration>, String> {
        get(k).map(|v| corral_types::duration::parse(&v).map_err(|e| format!("{k}: {e}"))).transpose()
    };
    let provider = get("provider").ok_or("say which provider starts its nodes: provider=local, docker or command")?;
    let slots_per_node = number("slots")?.ok_or("say how many slots each node has: slots=N")?;
    let (min, max) = (number("min")?, number("max")?);
    let autoscale = (min.is_some() || max.is_some()).then(|| -> Result<pb::AutoscaleSpec, String> {
        Ok(pb::AutoscaleSpec {
            min: min.unwrap_or(0),
            max: max.ok_or("an autoscaled auto pool needs max=N")?,
            idle_timeout_ms: duration("idle-timeout")?.map_or(0, corral_types::duration::ms),
            step: number("step")?.unwrap_or(0),
            cooldown_ms: duration("cooldown")?.map_or(0, corral_types::duration::ms),
        })
    });
    let autoscale = autoscale.transpose()?;
    let target_nodes = number("nodes")?.unwrap_or(0);
    if autoscale.is_none() && target_nodes == 0 {
        return Err("say how many nodes it has: nodes=N, or min=A,max=B to autoscale".into());
    }
    let docker = match get("image") {
        Some(image) => Some(pb::DockerSpec {
            image,
            network: get("network").unwrap_or_default(),
            memory_bytes: get("memory").map(|m| corral_types::size::parse(&m)).transpose()?.unwrap_or(0),
            nano_cpus: get("cpus").map(|c| super::super::pool::parse_cpus(&c)).transpose()?.unwrap_or(0),
            coordinator_url: get("coordinator-url").unwrap_or_default(),
        }),
        None => None,
    };
    let commands = match (get("add-command"), get("remove-command")) {
        (Some(add), Some(remove)) => Some(pb::ProviderCommands {
            add,
            remove,
            timeout_ms: duration("command-timeout")?.map_or(0, corral_types::duration::ms),
        }),
        _ => None,
    };
    Ok(pb::PoolSpec {
        name: String::new(),
        slots_per_node,
        provider,
        target_nodes,
        fill: get("fill").unwrap_or_default(),
        autoscale,
        removal_policy: get("removal-policy").unwrap_or_default(),
        commands,
        start_task: get("start-task").unwrap_or_default(),
        docker,
    })
}

/// A job file's setting as the text a SPEC would have.
pub fn value_text(v: &serde_norway::Value) -> String {
    match v {
        serde_norway::Value::String(s) => s.clone(),
        serde_norway::Value::Number(n) => n.to_string(),
        serde_norway::Value::Bool(b) => b.to_string(),
        other => serde_norway::to_string(other).unwrap_or_default().trim().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_read_like_pool_create_flags() {
        let p = parse("provider=local,nodes=2,slots=4").unwrap();
        assert_eq!((p.provider.as_str(), p.target_nodes, p.slots_per_node), ("local", 2, 4));
        let p = parse("provider=docker,image=corral-agent,min=0,max=8,slots=2,memory=1g").unwrap();
        let auto = p.autoscale.unwrap();
        assert_eq!((auto.min, auto.max), (0, 8));
        assert_eq!(p.docker.unwrap().memory_bytes, 1 << 30);
        assert!(parse("provider=local,slots=2").unwrap_err().contains("nodes=N"));
        assert!(parse("nodes=1,slots=2").unwrap_err().contains("provider"));
        assert!(parse("provider=local,nodes=1,slots=2,colour=red")
            .unwrap_err()
            .contains("'colour' is not a pool setting"));
        assert!(parse("provider=local,nodes=x,slots=2").unwrap_err().contains("nodes=x"));
    }
}
