//! Resources beyond slots: what a node has (`corral-agent --resource gpus=4`) and what
//! a task asks for (`job submit --resource gpus=1 --resource mem=4GiB`), as named
//! counters. `gpus` are devices: a task that asks for some gets its own, numbered
//! from 0 on its node. `mem` is bytes; a node has what `sysinfo` reports unless it
//! says otherwise. Any other name (`licenses`) is a plain counter.

use std::collections::{BTreeMap, BTreeSet};

/// Named amounts.
pub type Resources = BTreeMap<String, u64>;

/// The device resource: each unit is one device, given to one task at a time.
pub const GPUS: &str = "gpus";

/// Memory, in bytes.
pub const MEM: &str = "mem";

/// The longest resource name.
pub const MAX_NAME: usize = 64;

/// The most resources one node or task may name.
pub const MAX_RESOURCES: usize = 32;

/// The most devices a node may declare.
pub const MAX_GPUS: u64 = 1024;

/// Checks a resource name: lowercase letters, digits, `-` and `_`, starting with a
/// letter; `slots` is not one (it has its own flag).
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = name.len() <= MAX_NAME
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !ok {
        return Err(format!(
            "'{}' is not a resource name: lowercase letters, digits, - and _, starting with a letter, at most {MAX_NAME}",
            crate::shown(name)
        ));
    }
    if name == "slots" {
        return Err("slots are not a resource here: use --slots".into());
    }
    Ok(())
}

/// Whether `want` fits in what `capacity` has beyond `used`. A resource the
/// node does not have is zero there.
pub fn fits(capacity: &Resources, used: &Resources, want: &Resources) -> bool {
    want.iter().all(|(name, &amount)| {
        let have = capacity.get(name).copied().unwrap_or(0);
        let taken = used.get(name).copied().unwrap_or(0);
        have.saturating_sub(taken) >= amount
    })
}

/// The lowest `count` device numbers below `total` that are not in `taken`; `None`
/// if there are not that many free.
pub fn pick_devices(total: u64, taken: &BTreeSet<u32>, count: u64) -> Option<Vec<u32>> {
    let total = total.min(MAX_GPUS) as u32;
    let free: Vec<u32> = (0..total).filter(|d| !taken.contains(d)).take(count as usize).collect();
    (free.len() as u64 == count).then_some(free)
}

/// Resources as people read them: `gpus=2, licenses=1, mem=4.0 GiB`; `show` says
/// how to print byte amounts.
pub fn describe(resources: &Resources, show_bytes: impl Fn(u64) -> String) -> String {
    let items: Vec<String> = resources
        .iter()
        .map(|(name, &v)| if name == MEM { format!("{name}={}", show_bytes(v)) } else { format!("{name}={v}") })
        .collect();
    items.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(items: &[(&str, u64)]) -> Resources {
        items.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn a_request_fits_only_where_every_part_of_it_does() {
        let node = r(&[("gpus", 4), ("mem", 64 << 30)]);
        assert!(fits(&node, &r(&[("gpus", 3)]), &r(&[("gpus", 1), ("mem", 4 << 30)])));
        assert!(!fits(&node, &r(&[("gpus", 4)]), &r(&[("gpus", 1)])));
        assert!(!fits(&node, &Resources::new(), &r(&[("licenses", 1)])), "a resource the node lacks is zero");
        assert!(fits(&node, &Resources::new(), &Resources::new()));
    }

    #[test]
    fn devices_are_the_lowest_free_ones() {
        let taken: BTreeSet<u32> = [0, 2].into();
        assert_eq!(pick_devices(4, &taken, 2), Some(vec![1, 3]));
        assert_eq!(pick_devices(4, &taken, 3), None);
        assert_eq!(pick_devices(4, &BTreeSet::new(), 0), Some(vec![]));
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("gpus").is_ok());
        assert!(check_name("fpga_x2").is_ok());
        assert!(check_name("GPU").is_err());
        assert!(check_name("9lives").is_err());
        assert!(check_name("slots").unwrap_err().contains("--slots"));
    }
}
