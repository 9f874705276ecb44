//! Running `nft`: applying scripts as one atomic transaction and reading a table back as
//! JSON (`nft -j`), reduced to what the plugin needs (chains, and rules with their handles,
//! comments and jump targets).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use super::codes;
use crate::error::CniError;

/// Where `nft` is looked for when `PATH` lacks it (runtimes may run plugins without /sbin).
const FALLBACK_DIRS: &[&str] = &["/usr/sbin", "/sbin", "/usr/local/sbin", "/usr/bin", "/bin"];

/// A usable `nft` executable.
#[derive(Debug, Clone)]
pub struct Nft {
    path: PathBuf,
}

impl Nft {
    /// Find `nft` in `PATH` or the usual sbin directories.
    pub fn find() -> Option<Self> {
        let path_dirs = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .unwrap_or_default();
        path_dirs
            .into_iter()
            .chain(FALLBACK_DIRS.iter().map(PathBuf::from))
            .map(|dir| dir.join("nft"))
            .find(|p| is_executable(p))
            .map(|path| Self { path })
    }

    /// Find `nft`, or the plugin-specific error ADD and CHECK report.
    pub fn require() -> Result<Self, CniError> {
        Self::find().ok_or_else(|| {
            CniError::new(
                codes::NFT_FAILED,
                "nft not found",
                "the nftables command-line tool (nft) is needed to install port mappings",
            )
        })
    }

    /// Apply `script` atomically (`nft -f -`); `check` only validates it in the kernel.
    pub fn apply(&self, script: &str, check: bool) -> Result<(), CniError> {
        let args: &[&str] = if check {
            &["-c", "-f", "-"]
        } else {
            &["-f", "-"]
        };
        self.run(args, Some(script)).map(drop)
    }

    /// The table's chains and rules, or `None` when it does not exist.
    pub fn list_table(&self, table: &str) -> Result<Option<TableState>, CniError> {
        match self.run(&["-j", "list", "table", "inet", table], None) {
            Ok(out) => TableState::parse(&out).map(Some),
            // Only "does not exist" is fine; any other failure is reported as is.
            Err(err) if self.table_exists(table)? => Err(err),
            Err(_) => Ok(None),
        }
    }

    fn table_exists(&self, table: &str) -> Result<bool, CniError> {
        let out = self.run(&["list", "tables", "inet"], None)?;
        Ok(out
            .lines()
            .any(|l| l.trim() == format!("table inet {table}")))
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<String, CniError> {
        let what = format!("nft {}", args.join(" "));
        let failed =
            |details: String| CniError::new(codes::NFT_FAILED, format!("{what} failed"), details);
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
            .map_err(|e| failed(format!("cannot run {}: {e}", self.path.display())))?;
        if let (Some(script), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A write error shows up as nft's own failure below.
            let _ = pipe.write_all(script.as_bytes());
        }
        let out = child
            .wait_with_output()
            .map_err(|e| failed(format!("waiting for nft: {e}")))?;
        if !out.status.success() {
            return Err(failed(format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A table as listed: its chains and rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableState {
    /// Chain names.
    pub chains: Vec<String>,
    /// Rules, in listing order.
    pub rules: Vec<RuleState>,
}

/// One listed rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleState {
    /// The chain holding it.
    pub chain: String,
    /// Its handle (for `delete rule ... handle N`).
    pub handle: u64,
    /// Its comment, if any.
    pub comment: Option<String>,
    /// The chain it jumps or goes to, if any.
    pub target: Option<String>,
}

impl TableState {
    /// Parse `nft -j list table` output.
    pub fn parse(json: &str) -> Result<Self, CniError> {
        let bad = |why: &str| {
            CniError::new(
                codes::NFT_OUTPUT,
                "unexpected nft JSON output",
                format!("{why}: {}", json.chars().take(500).collect::<String>()),
            )
        };
        let value: Value = serde_json::from_str(json).map_err(|e| bad(&e.to_string()))?;
        let items = value["nftables"]
            .as_array()
            .ok_or_else(|| bad("no \"nftables\" list"))?;
        let mut state = Self::default();
        for item in items {
            if let Some(name) = item["chain"]["name"].as_str() {
                state.chains.push(name.to_owned());
            } else if let Some(rule) = item.get("rule") {
                state.rules.push(RuleState {
                    chain: rule["chain"]
                        .as_str()
                        .ok_or_else(|| bad("rule without chain"))?
                        .to_owned(),
                    handle: rule["handle"]
                        .as_u64()
                        .ok_or_else(|| bad("rule without handle"))?,
                    comment: rule["comment"].as_str().map(str::to_owned),
                    target: jump_target(&rule["expr"]),
                });
            }
        }
        Ok(state)
    }

    /// Whether `chain` exists.
    pub fn has_chain(&self, chain: &str) -> bool {
        self.chains.iter().any(|c| c == chain)
    }

    /// Rules in `chain`.
    pub fn rules_in<'a>(&'a self, chain: &'a str) -> impl Iterator<Item = &'a RuleState> {
        self.rules.iter().filter(move |r| r.chain == chain)
    }
}

fn jump_target(expr: &Value) -> Option<String> {
    expr.as_array()?.iter().find_map(|e| {
        ["jump", "goto"]
            .iter()
            .find_map(|verdict| e[verdict]["target"].as_str())
            .map(str::to_owned)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_parse_into_chains_and_rules() {
        let json = r#"{"nftables":[{"metainfo":{"version":"1.0.6"}},
            {"table":{"family":"inet","name":"t","handle":3}},
            {"chain":{"family":"inet","table":"t","name":"prerouting","handle":1,"type":"nat"}},
            {"chain":{"family":"inet","table":"t","name":"hp-a","handle":6}},
            {"rule":{"family":"inet","table":"t","chain":"prerouting","handle":11,
              "comment":"hp-a","expr":[{"match":{}},{"jump":{"target":"hp-a"}}]}},
            {"rule":{"family":"inet","table":"t","chain":"hp-a","handle":12,"expr":[]}}]}"#;
        let state = TableState::parse(json).unwrap();
        assert_eq!(state.chains, ["prerouting", "hp-a"]);
        assert_eq!(state.rules[0].target.as_deref(), Some("hp-a"));
        assert_eq!(state.rules[0].handle, 11);
        assert_eq!(state.rules_in("hp-a").count(), 1);
        assert_eq!(TableState::parse("{}").unwrap_err().code, codes::NFT_OUTPUT);
        assert_eq!(
            TableState::parse("nope").unwrap_err().code,
            codes::NFT_OUTPUT
        );
    }
}
