//! The kernel side: the [`NftBackend`] trait, its `nft` command implementation, and reading a
//! listed table back into a [`TableModel`].

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::error::ProxyError;
use crate::model::IpFamily;
use crate::plan::Coll;
use crate::table::{Chain, TableModel, AFFINITY_PREFIX, HASH_COMMENT};

/// Where `nft` is looked for when `PATH` lacks it.
const FALLBACK_DIRS: &[&str] = &["/usr/sbin", "/sbin", "/usr/local/sbin", "/usr/bin", "/bin"];

/// Applies scripts and lists tables; swapped for a recorder in unit tests.
pub trait NftBackend: Send {
    /// Apply `script` as one atomic transaction (`nft -f -`).
    fn apply(&mut self, script: &str) -> Result<(), ProxyError>;
    /// `nft -j list table <family> <table>`, or `None` when the table does not exist.
    fn list_table(&mut self, family: IpFamily, table: &str) -> Result<Option<Value>, ProxyError>;
}

/// The production backend: runs the `nft` executable.
#[derive(Debug, Clone)]
pub struct NftCommand {
    path: PathBuf,
}

impl NftCommand {
    /// Find `nft` in `PATH` or the usual sbin directories.
    pub fn new() -> Result<Self, ProxyError> {
        let path_dirs = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .unwrap_or_default();
        path_dirs
            .into_iter()
            .chain(FALLBACK_DIRS.iter().map(PathBuf::from))
            .map(|dir| dir.join("nft"))
            .find(|p| is_executable(p))
            .map(|path| Self { path })
            .ok_or_else(|| ProxyError::NftMissing("nft not found in PATH or /usr/sbin".into()))
    }

    /// Validate `script` in the kernel without applying it (`nft -c -f -`).
    pub fn check(&self, script: &str) -> Result<(), ProxyError> {
        self.run(&["-c", "-f", "-"], Some(script)).map(drop)
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<String, ProxyError> {
        let failed = |stderr: String| ProxyError::Nft {
            command: args.join(" "),
            stderr,
        };
        let mut child = Command::new(&self.path)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| ProxyError::NftMissing(format!("{}: {e}", self.path.display())))?;
        if let (Some(script), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A write error shows up as nft's own failure below.
            let _ = pipe.write_all(script.as_bytes());
        }
        let out = child
            .wait_with_output()
            .map_err(|e| failed(e.to_string()))?;
        if !out.status.success() {
            return Err(failed(
                String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

impl NftBackend for NftCommand {
    fn apply(&mut self, script: &str) -> Result<(), ProxyError> {
        self.run(&["-f", "-"], Some(script)).map(drop)
    }

    fn list_table(&mut self, family: IpFamily, table: &str) -> Result<Option<Value>, ProxyError> {
        let tables = self.run(&["list", "tables", family.nft()], None)?;
        let wanted = format!("table {} {table}", family.nft());
        if !tables.lines().any(|l| l.trim() == wanted) {
            return Ok(None);
        }
        let out = self.run(&["-j", "list", "table", family.nft(), table], None)?;
        serde_json::from_str(&out)
            .map(Some)
            .map_err(|e| ProxyError::NftOutput(e.to_string()))
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn key_text(v: &Value) -> Option<String> {
    match v.get("concat") {
        Some(Value::Array(items)) => {
            let parts: Option<Vec<String>> = items.iter().map(scalar).collect();
            parts.map(|p| p.join(" . "))
        }
        _ => scalar(v),
    }
}

fn verdict_text(v: &Value) -> Option<String> {
    let obj = v.as_object()?;
    let (kind, arg) = obj.iter().next()?;
    match kind.as_str() {
        "goto" | "jump" => Some(format!("{kind} {}", arg.get("target")?.as_str()?)),
        other => Some(other.to_owned()),
    }
}

/// Read `nft -j list table` output into a model: chains carry the hash from their first rule's
/// comment ("" when missing, so they count as changed), elements of the known collections,
/// and affinity sets.
pub fn parse_table(json: &Value) -> Result<TableModel, ProxyError> {
    let bad = |why: &str| ProxyError::NftOutput(why.to_owned());
    let items = json["nftables"]
        .as_array()
        .ok_or_else(|| bad("no \"nftables\" list"))?;
    let mut model = TableModel::default();
    for item in items {
        if let Some(chain) = item.get("chain") {
            let name = chain["name"]
                .as_str()
                .ok_or_else(|| bad("chain without a name"))?;
            model.chains.insert(
                name.to_owned(),
                Chain {
                    rules: Vec::new(),
                    hash: String::new(),
                },
            );
        } else if let Some(rule) = item.get("rule") {
            let name = rule["chain"]
                .as_str()
                .ok_or_else(|| bad("rule without a chain"))?;
            let entry = model
                .chains
                .entry(name.to_owned())
                .or_insert_with(|| Chain {
                    rules: Vec::new(),
                    hash: String::new(),
                });
            // Only the first rule carries the hash; a later one with a comment is not ours.
            if entry.rules.is_empty() {
                if let Some(hash) = rule["comment"]
                    .as_str()
                    .and_then(|c| c.strip_prefix(HASH_COMMENT))
                {
                    entry.hash = hash.to_owned();
                }
            }
            entry.rules.push(String::new());
        } else if let Some(set) = item.get("map").or_else(|| item.get("set")) {
            let name = set["name"]
                .as_str()
                .ok_or_else(|| bad("set without a name"))?;
            if let Some(coll) = Coll::from_name(name) {
                for elem in set["elem"].as_array().into_iter().flatten() {
                    let (key, value) = match elem {
                        Value::Array(pair) if pair.len() == 2 => {
                            (key_text(&pair[0]), verdict_text(&pair[1]))
                        }
                        other => (key_text(other), Some(String::new())),
                    };
                    let (Some(key), Some(value)) = (key, value) else {
                        return Err(bad(&format!("unexpected element in {name}: {elem}")));
                    };
                    model.elements.insert((coll, key), value);
                }
            } else if name.starts_with(AFFINITY_PREFIX) {
                let timeout = set["timeout"]
                    .as_u64()
                    .and_then(|t| u32::try_from(t).ok())
                    .unwrap_or(0);
                model.affinity.insert(name.to_owned(), timeout);
            }
        }
    }
    // The placeholder rules only counted; read-back chains hold hashes, not rules.
    for chain in model.chains.values_mut() {
        chain.rules.clear();
    }
    Ok(model)
}
