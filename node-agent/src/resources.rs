//! What this node offers beyond slots (`--resource gpus=4`, `--resource mem=64GiB`,
//! `--resource licenses=2`), read from the command line once at start.

use std::collections::BTreeMap;

use corral_types::resources::{check_name, GPUS, MAX_GPUS, MEM};

/// One `--resource NAME=VALUE` as written: `gpus=auto` is counted at start.
#[derive(Debug, Clone, PartialEq)]
pub enum Amount {
    Fixed(u64),
    /// `gpus=auto`: as many as `nvidia-smi -L` lists (none without it).
    Auto,
}

/// `NAME=VALUE`: `mem` takes a size (`64GiB`), `gpus` a count or `auto`, any other
/// name a count.
pub fn parse(s: &str) -> Result<(String, Amount), String> {
    let (name, value) = s.split_once('=').ok_or_else(|| format!("'{s}' is not NAME=VALUE (e.g. gpus=4, mem=64GiB)"))?;
    let name = name.trim().to_string();
    check_name(&name)?;
    let value = value.trim();
    let amount = match name.as_str() {
        GPUS if value == "auto" => Amount::Auto,
        MEM => Amount::Fixed(corral_types::size::parse(value)?),
        _ => Amount::Fixed(value.parse().map_err(|_| format!("'{value}' for {name} is not a whole number"))?),
    };
    if name == GPUS && matches!(amount, Amount::Fixed(n) if n > MAX_GPUS) {
        return Err(format!("gpus={value}: a node may have at most {MAX_GPUS}"));
    }
    Ok((name, amount))
}

/// The resources to register with, `auto` counted now.
pub fn resolve(given: &[(String, Amount)]) -> BTreeMap<String, u64> {
    given
        .iter()
        .map(|(name, amount)| {
            let n = match amount {
                Amount::Fixed(n) => *n,
                Amount::Auto => count_gpus(),
            };
            (name.clone(), n)
        })
        .collect()
}

/// The GPUs `nvidia-smi -L` lists (one line each); 0 when it is not there.
fn count_gpus() -> u64 {
    match std::process::Command::new("nvidia-smi").arg("-L").output() {
        Ok(out) if out.status.success() => {
            let n = String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.starts_with("GPU ")).count() as u64;
            tracing::info!(gpus = n, "counted this node's GPUs with nvidia-smi -L");
            n
        }
        _ => {
            tracing::warn!("gpus=auto: nvidia-smi is not here or failed; this node declares no GPUs");
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_read_by_their_name() {
        assert_eq!(parse("gpus=4"), Ok(("gpus".into(), Amount::Fixed(4))));
        assert_eq!(parse("gpus=auto"), Ok(("gpus".into(), Amount::Auto)));
        assert_eq!(parse("mem=2GiB"), Ok(("mem".into(), Amount::Fixed(2 << 30))));
        assert_eq!(parse("licenses=2"), Ok(("licenses".into(), Amount::Fixed(2))));
        assert!(parse("licenses=auto").unwrap_err().contains("whole number"));
        assert!(parse("GPU=1").is_err());
        assert!(parse("gpus").unwrap_err().contains("NAME=VALUE"));
        assert!(parse("gpus=5000").unwrap_err().contains("at most"));
    }
}
