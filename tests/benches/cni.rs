//! CNI ADD and DEL latency: Capstan's bridge + IPAM (+ portmap) against the reference
//! bridge + host-local (+ portmap) doing the same, alternating, in one run.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use serde_json::{json, Value};
use tests::cleanup::TempRoot;
use tests::cni::{self, Attachment, REFERENCE_DIR};
use tests::names::{unique_name, unique_short};
use tests::netns::{self, NetNs};

/// One side of the comparison: which plugins make up the chain.
struct Flavour {
    bridge: PathBuf,
    bridge_type: &'static str,
    portmap_type: &'static str,
    ipam: &'static str,
    portmap: PathBuf,
    bridge_name: String,
    subnet: String,
    data_dir: TempRoot,
    table: String,
}

impl Flavour {
    fn new(bin_dir: &Path, capstan: bool, subnet: &str) -> Result<Self> {
        let (bridge_type, ipam, portmap_type) = if capstan {
            ("capstan-bridge", "capstan-ipam", "capstan-portmap")
        } else {
            ("bridge", "host-local", "portmap")
        };
        let dir = if capstan {
            bin_dir
        } else {
            Path::new(REFERENCE_DIR)
        };
        Ok(Self {
            bridge: dir.join(bridge_type),
            bridge_type,
            portmap_type,
            ipam,
            portmap: dir.join(portmap_type),
            bridge_name: unique_short("bb"),
            subnet: subnet.to_owned(),
            data_dir: TempRoot::new("bench-ipam")?,
            table: unique_short("bpm"),
        })
    }

    fn chain(&self, with_portmap: bool) -> Vec<(PathBuf, Value)> {
        let mut chain = vec![(
            self.bridge.clone(),
            json!({
                "type": self.bridge_type,
                "bridge": self.bridge_name,
                "isGateway": true,
                "ipMasq": true,
                "ipam": {"type": self.ipam, "subnet": self.subnet, "dataDir": self.data_dir.path()},
            }),
        )];
        if with_portmap {
            chain.push((
                self.portmap.clone(),
                json!({
                    "type": self.portmap_type,
                    "table": self.table,
                    "capabilities": {"portMappings": true},
                    "runtimeConfig": {"portMappings": [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]},
                }),
            ));
        }
        chain
    }
}

impl Drop for Flavour {
    fn drop(&mut self) {
        netns::delete_link(&self.bridge_name);
        let _ = std::process::Command::new("nft")
            .args(["delete", "table", "inet", &self.table])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// ADD and DEL times (ms) of one attach/detach cycle in a fresh namespace.
fn cycle(flavour: &Flavour, with_portmap: bool, cni_path: &[PathBuf]) -> Result<(f64, f64)> {
    let ns = NetNs::new("bn")?;
    let attachment = Attachment {
        container_id: unique_name("bench"),
        netns: ns.path(),
        ifname: "eth0".to_owned(),
    };
    let chain = flavour.chain(with_portmap);
    let started = Instant::now();
    let result = cni::add_chain(&chain, "bench", "1.0.0", &attachment, cni_path)?;
    let add = started.elapsed().as_secs_f64() * 1e3;
    let started = Instant::now();
    cni::del_chain(
        &chain,
        "bench",
        "1.0.0",
        &attachment,
        Some(&result),
        cni_path,
    )?;
    let del = started.elapsed().as_secs_f64() * 1e3;
    Ok((add, del))
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let index = ((values.len() as f64 - 1.0) * p).round() as usize;
    values[index.min(values.len() - 1)]
}

/// Median ADD, p99 ADD and median DEL over `runs` cycles.
struct Stats {
    add_median: f64,
    add_p99: f64,
    del_median: f64,
}

fn measure(
    flavours: [&Flavour; 2],
    with_portmap: bool,
    runs: usize,
    cni_path: &[PathBuf],
) -> Result<[Stats; 2]> {
    let mut adds = [Vec::new(), Vec::new()];
    let mut dels = [Vec::new(), Vec::new()];
    for _ in 0..runs {
        for (i, flavour) in flavours.iter().enumerate() {
            let (add, del) = cycle(flavour, with_portmap, cni_path)?;
            adds[i].push(add);
            dels[i].push(del);
        }
    }
    let stats = |i: usize, adds: &mut [Vec<f64>; 2], dels: &mut [Vec<f64>; 2]| Stats {
        add_median: percentile(&mut adds[i], 0.5),
        add_p99: percentile(&mut adds[i], 0.99),
        del_median: percentile(&mut dels[i], 0.5),
    };
    Ok([
        stats(0, &mut adds, &mut dels),
        stats(1, &mut adds, &mut dels),
    ])
}

fn main() -> Result<()> {
    let status =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--release", "-p", "cni-plugins", "--bins"])
            .status()?;
    anyhow::ensure!(status.success(), "building the CNI plugins failed");
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")?;
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(100);
    let bin_dir = tests::binaries::target_profile_dir()?;
    let cni_path = vec![bin_dir.clone(), PathBuf::from(REFERENCE_DIR)];
    let capstan = Flavour::new(&bin_dir, true, "10.201.0.0/16")?;
    let reference = Flavour::new(&bin_dir, false, "10.202.0.0/16")?;

    // Warm both (bridge creation, first masquerade rule) outside the measurement.
    cycle(&capstan, true, &cni_path)?;
    cycle(&reference, true, &cni_path)?;

    let [ours, theirs] = measure([&capstan, &reference], false, runs, &cni_path)?;
    println!(
        "bridge+ipam, {runs} runs: capstan ADD median {:.2} ms p99 {:.2} ms, DEL median {:.2} ms; reference ADD median {:.2} ms p99 {:.2} ms, DEL median {:.2} ms",
        ours.add_median, ours.add_p99, ours.del_median, theirs.add_median, theirs.add_p99, theirs.del_median
    );
    let [ours_pm, theirs_pm] = measure([&capstan, &reference], true, runs, &cni_path)?;
    println!(
        "bridge+ipam+portmap, {runs} runs: capstan ADD median {:.2} ms p99 {:.2} ms; reference ADD median {:.2} ms p99 {:.2} ms",
        ours_pm.add_median, ours_pm.add_p99, theirs_pm.add_median, theirs_pm.add_p99
    );
    println!(
        "BENCH cni add_median_ms={:.2} add_p99_ms={:.2} ref_add_median_ms={:.2} ratio={:.2} del_median_ms={:.2} ref_del_median_ms={:.2} portmap_add_median_ms={:.2} ref_portmap_add_median_ms={:.2}",
        ours.add_median,
        ours.add_p99,
        theirs.add_median,
        ours.add_median / theirs.add_median,
        ours.del_median,
        theirs.del_median,
        ours_pm.add_median,
        theirs_pm.add_median
    );
    Ok(())
}
