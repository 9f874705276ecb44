//! Capacity and allocatable: what the machine has, and what is left for pods after
//! `kubeReserved`, `systemReserved` and the hard eviction thresholds (the kubelet's node
//! allocatable formula), formatted as the kubelet formats its quantities.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::Path;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::kubelet::convert::Amount;
use crate::kubelet::volumes::NodeAllocatable;

/// Where the kernel lists its huge page pools.
const HUGEPAGES_DIR: &str = "/sys/kernel/mm/hugepages";

/// The eviction signals the kubelet knows.
pub const SIGNALS: [&str; 6] = [
    "memory.available",
    "nodefs.available",
    "nodefs.inodesFree",
    "imagefs.available",
    "imagefs.inodesFree",
    "pid.available",
];

/// A hard eviction threshold: a quantity, or a percentage of the signal's capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Threshold {
    /// An absolute amount (`100Mi`, `1000` inodes).
    Quantity(Amount),
    /// A fraction of capacity, 0.0–1.0 (`10%` is 0.1).
    Fraction(f64),
}

impl Threshold {
    /// `100Mi` or `10%`.
    pub fn parse(text: &str) -> Result<Threshold, String> {
        if let Some(percent) = text.strip_suffix('%') {
            let value: f64 = percent
                .parse()
                .map_err(|_| format!("invalid percentage {text:?}"))?;
            if !(0.0..=100.0).contains(&value) {
                return Err(format!("percentage {text:?} must be within 0%..100%"));
            }
            return Ok(Threshold::Fraction(value / 100.0));
        }
        let amount = Amount::parse(text).map_err(|e| format!("{text:?}: {e}"))?;
        if amount.is_negative() {
            return Err(format!("{text:?} must not be negative"));
        }
        Ok(Threshold::Quantity(amount))
    }

    /// The threshold in the signal's units, given the signal's capacity.
    pub fn of(&self, capacity: u64) -> u64 {
        match self {
            Threshold::Quantity(amount) => u64::try_from(amount.value()).unwrap_or(0),
            // Truncated like the kubelet's int64(float64(capacity) * percentage).
            Threshold::Fraction(f) => (capacity as f64 * f) as u64,
        }
    }
}

/// Hard eviction thresholds by signal.
pub type Thresholds = BTreeMap<String, Threshold>;

/// The kubelet's default `evictionHard`.
pub fn default_thresholds() -> Thresholds {
    [
        (
            "memory.available",
            Threshold::Quantity(Amount::from_units(100 << 20)),
        ),
        ("nodefs.available", Threshold::Fraction(0.10)),
        ("nodefs.inodesFree", Threshold::Fraction(0.05)),
        ("imagefs.available", Threshold::Fraction(0.15)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Parses `evictionHard`; unknown signals are refused.
pub fn parse_thresholds(map: &BTreeMap<String, String>) -> Result<Thresholds, String> {
    map.iter()
        .map(|(signal, text)| {
            if !SIGNALS.contains(&signal.as_str()) {
                return Err(format!("evictionHard: unknown signal {signal:?}"));
            }
            let threshold =
                Threshold::parse(text).map_err(|e| format!("evictionHard.{signal}: {e}"))?;
            Ok((signal.clone(), threshold))
        })
        .collect()
}

/// Parses a `kubeReserved`/`systemReserved` map (`field` names it in errors).
pub fn parse_reserved(
    field: &str,
    map: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, Amount>, String> {
    map.iter()
        .map(|(name, text)| {
            let known = matches!(
                name.as_str(),
                "cpu" | "memory" | "ephemeral-storage" | "pid"
            ) || name.starts_with("hugepages-");
            if !known {
                return Err(format!("{field}: unknown resource {name:?}"));
            }
            let amount =
                Amount::parse(text).map_err(|e| format!("{field}.{name}: {text:?}: {e}"))?;
            if amount.is_negative() {
                return Err(format!("{field}.{name}: must not be negative"));
            }
            Ok((name.clone(), amount))
        })
        .collect()
}

/// What the machine has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineCapacity {
    /// Online CPUs in millicores.
    pub cpu_millis: u64,
    /// MemTotal in bytes.
    pub memory_bytes: u64,
    /// Size of the filesystem holding the kubelet root.
    pub ephemeral_storage_bytes: u64,
    /// Huge page pools: `hugepages-2Mi` → bytes in the pool.
    pub hugepages: BTreeMap<String, u64>,
}

impl MachineCapacity {
    /// Reads procfs, statfs of `root` and the huge page pools in sysfs.
    pub fn from_host(root: &Path) -> io::Result<MachineCapacity> {
        let host = NodeAllocatable::from_host(root)?;
        Ok(MachineCapacity {
            cpu_millis: host.cpu_millis,
            memory_bytes: host.memory_bytes,
            ephemeral_storage_bytes: host.ephemeral_storage_bytes,
            hugepages: hugepage_pools(Path::new(HUGEPAGES_DIR)),
        })
    }
}

/// `hugepages-2048kB/nr_hugepages` → (`hugepages-2Mi`, pages × size); unreadable pools are
/// skipped (no huge page support means none).
fn hugepage_pools(dir: &Path) -> BTreeMap<String, u64> {
    let Ok(entries) = fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let kib: u64 = name
                .strip_prefix("hugepages-")?
                .strip_suffix("kB")?
                .parse()
                .ok()?;
            let pages: u64 = fs::read_to_string(entry.path().join("nr_hugepages"))
                .ok()?
                .trim()
                .parse()
                .ok()?;
            let size = kib.checked_mul(1024)?;
            Some((
                format!("hugepages-{}", binary_si(size)),
                pages.saturating_mul(size),
            ))
        })
        .collect()
}

/// A node's capacity and allocatable, ready for `status`.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeResources {
    /// `status.capacity`.
    pub capacity: BTreeMap<String, Quantity>,
    /// `status.allocatable`.
    pub allocatable: BTreeMap<String, Quantity>,
}

/// What reservations and hard eviction thresholds take away from pods.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Reservations {
    /// `kubeReserved`.
    pub kube: BTreeMap<String, Amount>,
    /// `systemReserved`.
    pub system: BTreeMap<String, Amount>,
    /// `evictionHard`.
    pub eviction_hard: Thresholds,
}

impl Reservations {
    fn reserved(&self, name: &str) -> Amount {
        let kube = self.kube.get(name).copied().unwrap_or_default();
        let system = self.system.get(name).copied().unwrap_or_default();
        kube.saturating_add(system)
    }
}

/// Capacity and allocatable = capacity − kubeReserved − systemReserved − hard eviction
/// (memory.available for memory, nodefs.available for ephemeral-storage), never below 0;
/// allocatable memory also excludes the huge page pools, as the kubelet's does.
pub fn node_resources(
    machine: &MachineCapacity,
    max_pods: i64,
    reservations: &Reservations,
) -> NodeResources {
    let units = |name: &str| u64::try_from(reservations.reserved(name).value()).unwrap_or(0);
    let eviction = |signal: &str, capacity: u64| {
        reservations
            .eviction_hard
            .get(signal)
            .map_or(0, |t| t.of(capacity))
    };
    let cpu_reserved = u64::try_from(reservations.reserved("cpu").milli_value()).unwrap_or(0);
    let hugepages_total: u64 = machine.hugepages.values().sum();
    let memory_allocatable = machine
        .memory_bytes
        .saturating_sub(units("memory"))
        .saturating_sub(eviction("memory.available", machine.memory_bytes))
        .saturating_sub(hugepages_total);
    let storage_allocatable = machine
        .ephemeral_storage_bytes
        .saturating_sub(units("ephemeral-storage"))
        .saturating_sub(eviction(
            "nodefs.available",
            machine.ephemeral_storage_bytes,
        ));
    let pods = max_pods.max(0);
    let mut capacity = BTreeMap::from([
        ("cpu".to_owned(), cpu(machine.cpu_millis)),
        (
            "memory".to_owned(),
            Quantity(binary_si(machine.memory_bytes)),
        ),
        (
            "ephemeral-storage".to_owned(),
            Quantity(binary_si(machine.ephemeral_storage_bytes)),
        ),
        ("pods".to_owned(), Quantity(pods.to_string())),
    ]);
    let mut allocatable = BTreeMap::from([
        (
            "cpu".to_owned(),
            cpu(machine.cpu_millis.saturating_sub(cpu_reserved)),
        ),
        ("memory".to_owned(), Quantity(binary_si(memory_allocatable))),
        (
            "ephemeral-storage".to_owned(),
            Quantity(binary_si(storage_allocatable)),
        ),
        ("pods".to_owned(), Quantity(pods.to_string())),
    ]);
    for (name, bytes) in &machine.hugepages {
        capacity.insert(name.clone(), Quantity(binary_si(*bytes)));
        allocatable.insert(
            name.clone(),
            Quantity(binary_si(bytes.saturating_sub(units(name)))),
        );
    }
    NodeResources {
        capacity,
        allocatable,
    }
}

/// Millicores as a DecimalSI quantity: `2`, `1500m`.
fn cpu(millis: u64) -> Quantity {
    if millis.is_multiple_of(1000) {
        Quantity((millis / 1000).to_string())
    } else {
        Quantity(format!("{millis}m"))
    }
}

/// Bytes as a BinarySI quantity: the largest binary suffix that divides exactly
/// (`16318512Ki`, `2Mi`, `1025`).
pub fn binary_si(bytes: u64) -> String {
    const SUFFIXES: [&str; 6] = ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    if bytes == 0 {
        return "0".to_owned();
    }
    let mut value = bytes;
    let mut suffix = "";
    for s in SUFFIXES {
        if !value.is_multiple_of(1024) {
            break;
        }
        value /= 1024;
        suffix = s;
    }
    format!("{value}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine() -> MachineCapacity {
        MachineCapacity {
            cpu_millis: 4000,
            memory_bytes: 8 << 30,
            ephemeral_storage_bytes: 100 << 30,
            hugepages: BTreeMap::from([("hugepages-2Mi".to_owned(), 512 << 20)]),
        }
    }

    fn q(text: &str) -> Quantity {
        Quantity(text.to_owned())
    }

    #[test]
    fn allocatable_is_capacity_minus_reservations_and_eviction() {
        let reservations = Reservations {
            kube: parse_reserved(
                "kubeReserved",
                &BTreeMap::from([
                    ("cpu".to_owned(), "250m".to_owned()),
                    ("memory".to_owned(), "256Mi".to_owned()),
                ]),
            )
            .unwrap(),
            system: parse_reserved(
                "systemReserved",
                &BTreeMap::from([
                    ("cpu".to_owned(), "0.5".to_owned()),
                    ("ephemeral-storage".to_owned(), "1Gi".to_owned()),
                ]),
            )
            .unwrap(),
            eviction_hard: default_thresholds(),
        };
        let r = node_resources(&machine(), 110, &reservations);
        assert_eq!(r.capacity["cpu"], q("4"));
        assert_eq!(r.capacity["memory"], q("8Gi"));
        assert_eq!(r.capacity["ephemeral-storage"], q("100Gi"));
        assert_eq!(r.capacity["pods"], q("110"));
        assert_eq!(r.capacity["hugepages-2Mi"], q("512Mi"));
        assert_eq!(r.allocatable["cpu"], q("3250m"));
        // 8Gi - 256Mi - 100Mi eviction - 512Mi huge pages.
        assert_eq!(
            r.allocatable["memory"],
            q(&format!("{}Mi", 8192 - 256 - 100 - 512))
        );
        // 100Gi - 1Gi - 10 % of 100Gi.
        let storage = (100u64 << 30) - (1 << 30) - ((100u64 << 30) as f64 * 0.1) as u64;
        assert_eq!(r.allocatable["ephemeral-storage"], q(&binary_si(storage)));
        assert_eq!(r.allocatable["pods"], q("110"));
        assert_eq!(r.allocatable["hugepages-2Mi"], q("512Mi"));
    }

    #[test]
    fn reservations_beyond_capacity_leave_zero() {
        let reservations = Reservations {
            kube: BTreeMap::from([
                ("cpu".to_owned(), Amount::from_units(8)),
                ("memory".to_owned(), Amount::from_units(16 << 30)),
            ]),
            ..Reservations::default()
        };
        let r = node_resources(&machine(), 10, &reservations);
        assert_eq!(r.allocatable["cpu"], q("0"));
        assert_eq!(r.allocatable["memory"], q("0"));
        assert_eq!(r.allocatable["ephemeral-storage"], q("100Gi"));
    }

    #[test]
    fn quantities_are_formatted_like_the_kubelets() {
        assert_eq!(binary_si(16_318_512 * 1024), "16318512Ki");
        assert_eq!(binary_si(2 << 20), "2Mi");
        assert_eq!(binary_si(1025), "1025");
        assert_eq!(binary_si(0), "0");
        assert_eq!(cpu(1500), q("1500m"));
        assert_eq!(cpu(2000), q("2"));
    }

    #[test]
    fn thresholds_parse_quantities_and_percentages() {
        assert_eq!(Threshold::parse("10%"), Ok(Threshold::Fraction(0.1)));
        assert_eq!(Threshold::parse("100Mi").map(|t| t.of(0)), Ok(100 << 20));
        assert_eq!(Threshold::Fraction(0.5).of(1000), 500);
        assert!(Threshold::parse("150%").is_err());
        assert!(Threshold::parse("-1Mi").is_err());
        assert!(Threshold::parse("lots").is_err());
        let bad = BTreeMap::from([("memory.free".to_owned(), "1Mi".to_owned())]);
        assert!(parse_thresholds(&bad)
            .unwrap_err()
            .contains("unknown signal"));
        let bad = BTreeMap::from([("gpu".to_owned(), "1".to_owned())]);
        assert!(parse_reserved("kubeReserved", &bad)
            .unwrap_err()
            .contains("unknown resource"));
    }

    #[test]
    fn hugepage_pools_are_read_from_sysfs_layout() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        for (pool, pages) in [("hugepages-2048kB", "3\n"), ("hugepages-1048576kB", "0\n")] {
            fs::create_dir(dir.path().join(pool))?;
            fs::write(dir.path().join(pool).join("nr_hugepages"), pages)?;
        }
        let pools = hugepage_pools(dir.path());
        assert_eq!(pools.get("hugepages-2Mi"), Some(&(6 << 20)));
        assert_eq!(pools.get("hugepages-1Gi"), Some(&0));
        assert!(hugepage_pools(&dir.path().join("missing")).is_empty());
        Ok(())
    }
}
