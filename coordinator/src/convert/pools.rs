//! A pool's spec from the wire: provider, size, autoscaling, commands, containers.

use corral_proto::v1 as pb;

use super::*;

pub fn pool_spec(spec: Option<pb::PoolSpec>) -> Result<PoolSpec, Invalid> {
    let spec = spec.ok_or_else(|| Invalid::new("spec", "is required"))?;
    let name = PoolName::parse("name", &spec.name)?;
    if spec.slots_per_node == 0 {
        return Err(Invalid::new("slots_per_node", "must be at least 1"));
    }
    if spec.slots_per_node > MAX_SLOTS {
        return Err(Invalid::new("slots_per_node", format!("must be at most {MAX_SLOTS}")));
    }
    let provider = word("provider", &spec.provider, Provider::Static)?;
    let commands = match (provider, spec.commands) {
        (Provider::Command, Some(c)) => {
            if c.add.trim().is_empty() || c.remove.trim().is_empty() {
                return Err(Invalid::new("commands", "a command pool needs both an add and a remove command"));
            }
            text("commands.add", &c.add, MAX_ARG)?;
            text("commands.remove", &c.remove, MAX_ARG)?;
            let timeout = if c.timeout_ms == 0 {
                Duration::from_secs(60)
            } else {
                duration::from_ms("commands.timeout", c.timeout_ms)?
            };
            Some(ProviderCommands { add: c.add, remove: c.remove, timeout })
        }
        (Provider::Command, None) => {
            return Err(Invalid::new("commands", "a command pool needs --add-command and --remove-command"));
        }
        (_, Some(_)) => return Err(Invalid::new("commands", "only a command pool has add and remove commands")),
        (_, None) => None,
    };
    let docker = match (provider, spec.docker) {
        (Provider::Docker, Some(d)) => Some(docker_spec(d)?),
        (Provider::Docker, None) => return Err(Invalid::new("docker.image", "a docker pool needs an image (--image)")),
        (_, Some(_)) => return Err(Invalid::new("docker", "only a docker pool has an image and container limits")),
        (_, None) => None,
    };
    if provider.starts_nodes() && spec.target_nodes > MAX_LOCAL_NODES {
        return Err(Invalid::new(
            "nodes",
            format!("a pool whose nodes the coordinator starts has at most {MAX_LOCAL_NODES} nodes"),
        ));
    }
    if provider == Provider::Static && spec.target_nodes != 0 {
        return Err(Invalid::new(
            "nodes",
            "a static pool's size is the number of agents that join it; leave --nodes out",
        ));
    }
    Ok(PoolSpec {
        name,
        slots_per_node: spec.slots_per_node,
        provider,
        target_nodes: spec.target_nodes,
        fill: word("fill", &spec.fill, Fill::Spread)?,
        autoscale: spec.autoscale.map(autoscale).transpose()?,
        removal: word("removal_policy", &spec.removal_policy, RemovalPolicy::TaskCompletion)?,
        commands,
        docker,
        start_task: {
            text("start_task", &spec.start_task, MAX_ARG)?;
            Some(spec.start_task).filter(|t| !t.trim().is_empty())
        },
    })
}

/// A docker pool's container settings; the network defaults to Docker's `bridge`.
fn docker_spec(d: pb::DockerSpec) -> Result<DockerSpec, Invalid> {
    let image = d.image.trim();
    if image.is_empty() {
        return Err(Invalid::new("docker.image", "a docker pool needs an image (--image)"));
    }
    text("docker.image", image, MAX_NAME)?;
    if image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Invalid::new(
            "docker.image",
            format!("'{}' is not an image reference (it has spaces)", crate::error::shown(image)),
        ));
    }
    let network = d.network.trim();
    text("docker.network", network, MAX_NAME)?;
    if d.memory_bytes != 0 && d.memory_bytes < 6 << 20 {
        return Err(Invalid::new("docker.memory_bytes", "Docker needs at least 6 MiB for a container"));
    }
    if d.memory_bytes > i64::MAX as u64 {
        return Err(Invalid::new("docker.memory_bytes", "is too large"));
    }
    if d.nano_cpus > 1_000_000_000 * 4096 {
        return Err(Invalid::new("docker.nano_cpus", "is more CPUs than any host has"));
    }
    let coordinator_url = d.coordinator_url.trim();
    if !coordinator_url.is_empty() {
        let url = url::Url::parse(coordinator_url).map_err(|e| {
            Invalid::new(
                "docker.coordinator_url",
                format!("'{}' is not a URL: {e}", crate::error::shown(coordinator_url)),
            )
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(Invalid::new("docker.coordinator_url", "must be http://HOST:PORT or https://HOST:PORT"));
        }
    }
    Ok(DockerSpec {
        image: image.to_string(),
        network: if network.is_empty() { "bridge".to_string() } else { network.to_string() },
        memory_bytes: Some(d.memory_bytes).filter(|&m| m != 0),
        nano_cpus: Some(d.nano_cpus).filter(|&c| c != 0),
        coordinator_url: Some(coordinator_url.to_string()).filter(|u| !u.is_empty()),
    })
}

/// Autoscaling settings, with defaults for what is left at 0.
pub fn autoscale(a: pb::AutoscaleSpec) -> Result<Autoscale, Invalid> {
    if a.max > MAX_LOCAL_NODES {
        return Err(Invalid::new(
            "autoscale.max",
            format!("a pool whose nodes the coordinator starts has at most {MAX_LOCAL_NODES} nodes"),
        ));
    }
    Ok(Autoscale {
        min: a.min,
        max: a.max,
        idle_timeout: match a.idle_timeout_ms {
            0 => Duration::from_secs(30),
            ms => duration::from_ms("autoscale.idle_timeout", ms)?,
        },
        step: if a.step == 0 { a.max.max(1) } else { a.step },
        cooldown: duration::from_ms("autoscale.cooldown", a.cooldown_ms)?,
    })
}

pub fn autoscale_to_pb(a: &Autoscale) -> pb::AutoscaleSpec {
    pb::AutoscaleSpec {
        min: a.min,
        max: a.max,
        idle_timeout_ms: duration::ms(a.idle_timeout),
        step: a.step,
        cooldown_ms: duration::ms(a.cooldown),
    }
}

pub fn local_target(target: u32) -> Result<u32, Invalid> {
    if target > MAX_LOCAL_NODES {
        return Err(Invalid::new(
            "nodes",
            format!("a pool whose nodes the coordinator starts has at most {MAX_LOCAL_NODES} nodes"),
        ));
    }
    Ok(target)
}
