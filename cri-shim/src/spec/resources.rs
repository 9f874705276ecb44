//! CRI LinuxContainerResources → OCI `linux.resources` (cgroup limits).

use k8s_cri::v1::LinuxContainerResources;
use oci_spec::runtime::{LinuxCpu, LinuxHugepageLimit, LinuxMemory, LinuxResources};

use super::SpecError;

/// Build `linux.resources` (without device rules, which the device plan adds). Zero means
/// "not set" for every CRI field. `swap_accounting` says whether the host can limit swap;
/// when it can, a memory limit without a swap limit also caps swap at the limit (no swap),
/// as containerd does.
pub(crate) fn build(
    r: Option<&LinuxContainerResources>,
    swap_accounting: bool,
) -> Result<LinuxResources, SpecError> {
    let mut out = LinuxResources::default();
    let Some(r) = r else {
        return Ok(out);
    };
    let mut cpu = LinuxCpu::default();
    if r.cpu_shares > 0 {
        cpu.set_shares(Some(r.cpu_shares as u64));
    }
    if r.cpu_quota != 0 {
        cpu.set_quota(Some(r.cpu_quota));
    }
    if r.cpu_period > 0 {
        cpu.set_period(Some(r.cpu_period as u64));
    }
    if !r.cpuset_cpus.is_empty() {
        cpu.set_cpus(Some(r.cpuset_cpus.clone()));
    }
    if !r.cpuset_mems.is_empty() {
        cpu.set_mems(Some(r.cpuset_mems.clone()));
    }
    if r.cpu_shares < 0 || r.cpu_period < 0 {
        return Err(SpecError::field(
            "resources",
            format!(
                "cpu_shares {} / cpu_period {} must not be negative",
                r.cpu_shares, r.cpu_period
            ),
        ));
    }
    if cpu != LinuxCpu::default() {
        out.set_cpu(Some(cpu));
    }

    let mut memory = LinuxMemory::default();
    if r.memory_limit_in_bytes != 0 {
        memory.set_limit(Some(r.memory_limit_in_bytes));
        if swap_accounting && r.memory_swap_limit_in_bytes == 0 {
            memory.set_swap(Some(r.memory_limit_in_bytes));
        }
    }
    if swap_accounting && r.memory_swap_limit_in_bytes != 0 {
        memory.set_swap(Some(r.memory_swap_limit_in_bytes));
    }
    if memory != LinuxMemory::default() {
        out.set_memory(Some(memory));
    }

    if !r.hugepage_limits.is_empty() {
        let limits = r
            .hugepage_limits
            .iter()
            .map(|h| {
                let limit = i64::try_from(h.limit).map_err(|_| {
                    SpecError::field(
                        "resources.hugepage_limits",
                        format!("limit {} for {} is too large", h.limit, h.page_size),
                    )
                })?;
                let mut l = LinuxHugepageLimit::default();
                l.set_page_size(h.page_size.clone()).set_limit(limit);
                Ok(l)
            })
            .collect::<Result<Vec<_>, SpecError>>()?;
        out.set_hugepage_limits(Some(limits));
    }
    if !r.unified.is_empty() {
        out.set_unified(Some(r.unified.clone()));
    }
    Ok(out)
}

/// The OOM score adjustment, checked against the kernel's range.
pub(crate) fn oom_score_adj(r: Option<&LinuxContainerResources>) -> Result<Option<i32>, SpecError> {
    let Some(r) = r else {
        return Ok(None);
    };
    if !(-1000..=1000).contains(&r.oom_score_adj) {
        return Err(SpecError::field(
            "resources.oom_score_adj",
            format!("{} is outside -1000..=1000", r.oom_score_adj),
        ));
    }
    Ok(Some(r.oom_score_adj as i32))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::HugepageLimit;

    #[test]
    fn maps_every_field() {
        let r = LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 512,
            memory_limit_in_bytes: 64 << 20,
            oom_score_adj: 900,
            cpuset_cpus: "0-1".into(),
            cpuset_mems: "0".into(),
            hugepage_limits: vec![HugepageLimit {
                page_size: "2MB".into(),
                limit: 4 << 20,
            }],
            unified: [("memory.high".to_owned(), "1000000".to_owned())].into(),
            memory_swap_limit_in_bytes: 128 << 20,
        };
        let out = build(Some(&r), true).unwrap();
        let cpu = out.cpu().as_ref().unwrap();
        assert_eq!(cpu.shares(), Some(512));
        assert_eq!(cpu.quota(), Some(50_000));
        assert_eq!(cpu.period(), Some(100_000));
        assert_eq!(cpu.cpus().as_deref(), Some("0-1"));
        assert_eq!(cpu.mems().as_deref(), Some("0"));
        let mem = out.memory().as_ref().unwrap();
        assert_eq!(mem.limit(), Some(64 << 20));
        assert_eq!(mem.swap(), Some(128 << 20));
        let huge = out.hugepage_limits().as_ref().unwrap();
        assert_eq!(
            (huge[0].page_size().as_str(), huge[0].limit()),
            ("2MB", 4 << 20)
        );
        assert_eq!(out.unified().as_ref().unwrap()["memory.high"], "1000000");
        assert_eq!(oom_score_adj(Some(&r)).unwrap(), Some(900));
    }

    #[test]
    fn memory_limit_without_swap_limit() {
        let r = LinuxContainerResources {
            memory_limit_in_bytes: 1 << 30,
            ..Default::default()
        };
        let out = build(Some(&r), true).unwrap();
        assert_eq!(out.memory().unwrap().swap(), Some(1 << 30));
        let out = build(Some(&r), false).unwrap();
        assert_eq!(out.memory().unwrap().swap(), None);
        assert_eq!(out.memory().unwrap().limit(), Some(1 << 30));
    }

    #[test]
    fn unset_fields_stay_unset() {
        let out = build(Some(&LinuxContainerResources::default()), true).unwrap();
        assert!(out.cpu().is_none() && out.memory().is_none());
        assert!(out.hugepage_limits().is_none() && out.unified().is_none());
        assert_eq!(build(None, true).unwrap(), LinuxResources::default());
        assert_eq!(oom_score_adj(None).unwrap(), None);
    }

    #[test]
    fn out_of_range_values() {
        let r = LinuxContainerResources {
            oom_score_adj: 1001,
            ..Default::default()
        };
        assert!(oom_score_adj(Some(&r))
            .unwrap_err()
            .to_string()
            .contains("oom_score_adj"));
        let r = LinuxContainerResources {
            cpu_shares: -2,
            ..Default::default()
        };
        assert!(build(Some(&r), true).is_err());
    }
}
