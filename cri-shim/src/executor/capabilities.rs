//! Capability sets of the spec, applied with the `caps` crate in an order the kernel
//! accepts: bounding while still root, then (after the uid change, with permitted kept by
//! PR_SET_KEEPCAPS) inheritable, effective, permitted and ambient.

use caps::{CapSet, Capability, CapsHashSet};
use oci_spec::runtime::{Capabilities, LinuxCapabilities};

use super::error::{ExecutorError, Result};

/// The `caps` crate's view of a spec set; names it does not know are skipped (the kernel
/// could not grant them either).
pub fn to_caps(set: &Capabilities) -> CapsHashSet {
    set.iter()
        .filter_map(|cap| {
            let name = serde_json::to_value(cap).ok()?;
            name.as_str()?.parse::<Capability>().ok()
        })
        .collect()
}

/// Drops every capability the spec's bounding set lacks (needs CAP_SETPCAP: call before
/// changing user).
pub fn limit_bounding(spec: &LinuxCapabilities) -> Result<()> {
    let Some(bounding) = spec.bounding() else {
        return Ok(());
    };
    let keep = to_caps(bounding);
    for cap in caps::runtime::thread_all_supported() {
        if !keep.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap).map_err(|e| error("bounding", e))?;
        }
    }
    Ok(())
}

/// Sets inheritable, effective, permitted and ambient as the spec lists them (sets the
/// spec leaves out are emptied, except bounding handled by [`limit_bounding`]).
pub fn apply(spec: &LinuxCapabilities) -> Result<()> {
    let set_of = |set: &Option<Capabilities>| set.as_ref().map(to_caps).unwrap_or_default();
    // Effective before permitted: the kernel refuses a permitted set smaller than the
    // current effective one.
    for (which, name, value) in [
        (CapSet::Inheritable, "inheritable", spec.inheritable()),
        (CapSet::Effective, "effective", spec.effective()),
        (CapSet::Permitted, "permitted", spec.permitted()),
    ] {
        caps::set(None, which, &set_of(value)).map_err(|e| error(name, e))?;
    }
    let ambient = set_of(spec.ambient());
    if caps::runtime::ambient_set_supported().is_ok() {
        caps::set(None, CapSet::Ambient, &ambient).map_err(|e| error("ambient", e))?;
    } else if !ambient.is_empty() {
        return Err(error("ambient", "the kernel has no ambient capabilities"));
    }
    Ok(())
}

fn error(what: &str, e: impl std::fmt::Display) -> ExecutorError {
    ExecutorError::Capabilities {
        what: what.to_owned(),
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::Capability as SpecCapability;

    #[test]
    fn spec_names_map_to_caps() {
        let set: Capabilities = [
            SpecCapability::NetBindService,
            SpecCapability::SysAdmin,
            SpecCapability::Chown,
            SpecCapability::CheckpointRestore,
        ]
        .into_iter()
        .collect();
        let expected: CapsHashSet = [
            Capability::CAP_NET_BIND_SERVICE,
            Capability::CAP_SYS_ADMIN,
            Capability::CAP_CHOWN,
            Capability::CAP_CHECKPOINT_RESTORE,
        ]
        .into_iter()
        .collect();
        assert_eq!(to_caps(&set), expected);
    }

    #[test]
    fn default_spec_sets_map_completely() {
        let default = LinuxCapabilities::default();
        let bounding = default.bounding().as_ref().expect("bounding");
        assert_eq!(to_caps(bounding).len(), bounding.len());
    }
}
