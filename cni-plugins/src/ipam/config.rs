//! The `ipam` section of the network configuration, in host-local's shape, validated.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use super::range::{Range, RangeSet, RawRange};
use crate::error::CniError;
use crate::skel::Context;
use crate::types::Route;

/// Where allocations are stored when `dataDir` is not set.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

/// The `ipam` object as written: the legacy single range inline, or `ranges`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawIpam {
    #[serde(flatten)]
    legacy: RawRange,
    #[serde(default)]
    ranges: Option<Vec<Vec<RawRange>>>,
    #[serde(default)]
    routes: Option<Vec<Route>>,
    #[serde(default)]
    data_dir: Option<String>,
    #[serde(default)]
    resolv_conf: Option<String>,
}

/// The runtime's capability arguments host-local honours.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRuntimeConfig {
    /// `ipRanges`: range sets placed before the configured ones.
    #[serde(default)]
    ip_ranges: Option<Vec<Vec<RawRange>>>,
    /// `ips`: addresses requested for this attachment ("ip" or "ip/prefix").
    #[serde(default)]
    ips: Option<Vec<String>>,
}

/// The validated configuration ADD and CHECK work from.
#[derive(Debug, Clone)]
pub struct Config {
    /// `<dataDir>/<network name>`.
    pub dir: PathBuf,
    /// Range sets in order (their index names `last_reserved_ip.<index>`).
    pub sets: Vec<RangeSet>,
    /// Routes returned with the addresses.
    pub routes: Vec<Route>,
    /// A resolv.conf whose settings are returned as DNS.
    pub resolv_conf: Option<PathBuf>,
    /// Specific addresses asked for (CNI_ARGS `IP`, `args.cni.ips`, `runtimeConfig.ips`).
    pub requested: Vec<IpAddr>,
}

impl Config {
    /// Parse and validate the whole configuration (code 7 on any problem).
    pub fn load(ctx: &Context) -> Result<Self, CniError> {
        let raw: RawIpam = parse(ipam_value(ctx)?, "ipam")?;
        let runtime: RawRuntimeConfig = match &ctx.conf.runtime_config {
            Some(value) => parse(value, "runtimeConfig")?,
            None => RawRuntimeConfig::default(),
        };
        let mut sets = Vec::new();
        for (i, set) in runtime.ip_ranges.iter().flatten().enumerate() {
            sets.push(RangeSet::from_raw(
                set,
                &format!("runtimeConfig.ipRanges[{i}]"),
            )?);
        }
        if !raw.legacy.is_empty() {
            // The legacy inline range's fields sit directly in `ipam`.
            sets.push(RangeSet {
                ranges: vec![Range::from_raw(&raw.legacy, "ipam")?],
            });
        }
        for (i, set) in raw.ranges.iter().flatten().enumerate() {
            sets.push(RangeSet::from_raw(set, &format!("ipam.ranges[{i}]"))?);
        }
        if sets.is_empty() {
            return Err(CniError::invalid_config(
                "ipam: no IP ranges specified (set ipam.ranges or ipam.subnet)",
            ));
        }
        for (i, a) in sets.iter().enumerate() {
            for (j, b) in sets.iter().enumerate().skip(i + 1) {
                if a.overlaps(b) {
                    return Err(CniError::invalid_config(format!(
                        "ipam.ranges: range set {i} ({a}) overlaps with range set {j} ({b})"
                    )));
                }
            }
        }
        Ok(Self {
            dir: network_dir_from(ctx, raw.data_dir.as_deref())?,
            sets,
            routes: raw.routes.unwrap_or_default(),
            resolv_conf: raw.resolv_conf.filter(|p| !p.is_empty()).map(PathBuf::from),
            requested: requested_ips(ctx, runtime.ips.as_deref().unwrap_or_default())?,
        })
    }
}

/// The network's store directory, reading only `name` and `ipam.dataDir`: DEL, GC and
/// STATUS must work even when the ranges no longer validate.
pub fn network_dir(ctx: &Context) -> Result<PathBuf, CniError> {
    #[derive(Deserialize)]
    struct DataDir {
        #[serde(default, rename = "dataDir")]
        data_dir: Option<String>,
    }
    let raw: DataDir = parse(ipam_value(ctx)?, "ipam")?;
    network_dir_from(ctx, raw.data_dir.as_deref())
}

fn network_dir_from(ctx: &Context, data_dir: Option<&str>) -> Result<PathBuf, CniError> {
    let name = &ctx.conf.name;
    // The name becomes a directory name: refuse anything that could leave `dataDir`.
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(CniError::invalid_config(format!(
            "network name {name:?} cannot be used as a directory name"
        )));
    }
    let data_dir = data_dir
        .filter(|d| !d.is_empty())
        .unwrap_or(DEFAULT_DATA_DIR);
    if data_dir.contains('\0') {
        return Err(CniError::invalid_config("ipam.dataDir contains a NUL byte"));
    }
    Ok(PathBuf::from(data_dir).join(name))
}

fn ipam_value(ctx: &Context) -> Result<&Value, CniError> {
    match &ctx.conf.ipam {
        Some(value) if value.is_object() => Ok(value),
        Some(_) => Err(CniError::invalid_config("ipam must be an object")),
        None => Err(CniError::invalid_config("IPAM config missing 'ipam' key")),
    }
}

fn parse<T: DeserializeOwned>(value: &Value, what: &str) -> Result<T, CniError> {
    T::deserialize(value).map_err(|e| CniError::invalid_config(format!("invalid {what}: {e}")))
}

/// Requested addresses from every source host-local reads, deduplicated.
fn requested_ips(ctx: &Context, runtime_ips: &[String]) -> Result<Vec<IpAddr>, CniError> {
    let mut texts: Vec<(String, &str)> = Vec::new();
    for (key, value) in &ctx.env.args {
        if key == "IP" {
            texts.push((value.clone(), "CNI_ARGS IP"));
        }
    }
    let args_ips = ctx
        .conf
        .rest
        .get("args")
        .and_then(|a| a.get("cni"))
        .and_then(|c| c.get("ips"));
    if let Some(ips) = args_ips {
        let ips: Vec<String> = parse(ips, "args.cni.ips")?;
        texts.extend(ips.into_iter().map(|ip| (ip, "args.cni.ips")));
    }
    texts.extend(
        runtime_ips
            .iter()
            .map(|ip| (ip.clone(), "runtimeConfig.ips")),
    );
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (text, source) in texts {
        // runtimeConfig.ips entries may carry a prefix length, which does not matter here.
        let addr = text.split_once('/').map_or(text.as_str(), |(a, _)| a);
        let ip: IpAddr = addr.parse().map_err(|_| {
            CniError::invalid_config(format!("{source}: {text:?} is not an IP address"))
        })?;
        if seen.insert(ip) {
            out.push(ip);
        }
    }
    Ok(out)
}
