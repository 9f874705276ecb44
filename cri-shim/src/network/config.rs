//! Network configuration lists: choosing the file in the configuration directory and
//! parsing it (a `.conf` holding one plugin is wrapped into a list of one).

use std::path::{Path, PathBuf};

use cni_plugins::types::NetConf;
use cni_plugins::version;
use serde_json::{Map, Value};

use super::error::NetworkError;

/// File name endings considered, as libcni-based runtimes do.
const EXTENSIONS: &[&str] = &["conflist", "conf", "json"];

/// Largest configuration file read.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// A network: its name, CNI version and the plugins called in order.
#[derive(Debug, Clone)]
pub struct NetworkConfigList {
    /// Network name, unique per host (also names cache entries).
    pub name: String,
    /// CNI version every plugin is called with.
    pub cni_version: String,
    /// Skip CHECK (`disableCheck`).
    pub disable_check: bool,
    /// Skip the plugins' GC (`disableGC`).
    pub disable_gc: bool,
    /// Each plugin's configuration with the list's `name` and `cniVersion` filled in.
    pub plugins: Vec<NetConf>,
    /// Where the list was read from (a file, or the cache entry it was stored in).
    pub source: PathBuf,
}

impl NetworkConfigList {
    /// The first file (by name) in `dir` that parses; rejected files are logged and
    /// named in the error when none is usable.
    pub fn load_dir(dir: &Path) -> Result<Self, NetworkError> {
        let mut files = candidates(dir)?;
        files.sort();
        if files.is_empty() {
            return Err(NetworkError::NoConfig {
                dir: dir.to_path_buf(),
            });
        }
        let mut rejected: Vec<(PathBuf, String)> = Vec::new();
        for file in files {
            match read_limited(&file).and_then(|bytes| Self::parse(&bytes, &file)) {
                Ok(list) => {
                    for (skipped, reason) in &rejected {
                        tracing::warn!(file = %skipped.display(), %reason, "CNI configuration skipped");
                    }
                    return Ok(list);
                }
                Err(NetworkError::InvalidConfig { file: bad, reason }) => {
                    rejected.push((bad, reason))
                }
                Err(other) => return Err(other),
            }
        }
        Err(NetworkError::NoValidConfig {
            dir: dir.to_path_buf(),
            rejected,
        })
    }

    /// Parse a configuration list, or a single plugin configuration wrapped into a list;
    /// `source` names it in errors.
    pub fn parse(bytes: &[u8], source: &Path) -> Result<Self, NetworkError> {
        let invalid = |reason: String| NetworkError::InvalidConfig {
            file: source.to_path_buf(),
            reason,
        };
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| invalid(format!("not JSON: {e}")))?;
        let Value::Object(object) = value else {
            return Err(invalid("not a JSON object".to_owned()));
        };
        if object.contains_key("plugins") {
            parse_list(object, source).map_err(invalid)
        } else {
            parse_single(object, source).map_err(invalid)
        }
    }

    /// The list as a `.conflist` document (what the cache stores).
    pub fn to_json(&self) -> Value {
        let mut object = Map::new();
        object.insert("cniVersion".into(), self.cni_version.clone().into());
        object.insert("name".into(), self.name.clone().into());
        if self.disable_check {
            object.insert("disableCheck".into(), true.into());
        }
        if self.disable_gc {
            object.insert("disableGC".into(), true.into());
        }
        let plugins = self
            .plugins
            .iter()
            .map(|p| serde_json::to_value(p).unwrap_or(Value::Null))
            .collect();
        object.insert("plugins".into(), Value::Array(plugins));
        Value::Object(object)
    }
}

/// Regular files in `dir` with a configuration ending.
fn candidates(dir: &Path) -> Result<Vec<PathBuf>, NetworkError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(NetworkError::ConfDir {
                dir: dir.to_path_buf(),
                source,
            })
        }
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| NetworkError::ConfDir {
            dir: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        let wanted = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.contains(&e));
        // Follows symlinks: configuration is often installed as links.
        if wanted && path.is_file() {
            files.push(path);
        }
    }
    Ok(files)
}

fn read_limited(file: &Path) -> Result<Vec<u8>, NetworkError> {
    use std::io::Read;
    let invalid = |reason: String| NetworkError::InvalidConfig {
        file: file.to_path_buf(),
        reason,
    };
    let handle = std::fs::File::open(file).map_err(|e| invalid(format!("cannot open: {e}")))?;
    let mut bytes = Vec::new();
    handle
        .take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| invalid(format!("cannot read: {e}")))?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(invalid(format!("larger than {MAX_CONFIG_BYTES} bytes")));
    }
    Ok(bytes)
}

fn parse_list(mut object: Map<String, Value>, source: &Path) -> Result<NetworkConfigList, String> {
    let name = network_name(&object)?;
    let cni_version = list_version(&object)?;
    let disable_check = flag(&object, "disableCheck")?;
    let disable_gc = flag(&object, "disableGC")?;
    let Some(Value::Array(plugins)) = object.remove("plugins") else {
        return Err("\"plugins\" must be an array".to_owned());
    };
    if plugins.is_empty() {
        return Err("\"plugins\" is empty".to_owned());
    }
    let plugins = plugins
        .into_iter()
        .enumerate()
        .map(|(index, plugin)| match plugin {
            Value::Object(conf) => {
                plugin_conf(conf, &name, &cni_version).map_err(|e| format!("plugin {index}: {e}"))
            }
            _ => Err(format!("plugin {index}: not a JSON object")),
        })
        .collect::<Result<_, _>>()?;
    Ok(NetworkConfigList {
        name,
        cni_version,
        disable_check,
        disable_gc,
        plugins,
        source: source.to_path_buf(),
    })
}

fn parse_single(object: Map<String, Value>, source: &Path) -> Result<NetworkConfigList, String> {
    let name = network_name(&object)?;
    let cni_version = list_version(&object)?;
    let plugin = plugin_conf(object, &name, &cni_version)?;
    Ok(NetworkConfigList {
        name,
        cni_version,
        disable_check: false,
        disable_gc: false,
        plugins: vec![plugin],
        source: source.to_path_buf(),
    })
}

/// One plugin's configuration with the list's name and version, checked as plugins will.
fn plugin_conf(
    mut conf: Map<String, Value>,
    name: &str,
    cni_version: &str,
) -> Result<NetConf, String> {
    conf.insert("name".into(), name.into());
    conf.insert("cniVersion".into(), cni_version.into());
    let conf: NetConf = serde_json::from_value(Value::Object(conf)).map_err(|e| e.to_string())?;
    check_plugin_type(&conf.plugin_type)?;
    Ok(conf)
}

/// Plugin types name executables inside the plugin directories, never paths.
fn check_plugin_type(plugin: &str) -> Result<(), String> {
    if plugin.is_empty() || plugin == "." || plugin == ".." || plugin.contains(['/', '\0']) {
        return Err(format!("invalid plugin type {plugin:?}"));
    }
    Ok(())
}

/// The network name; it becomes part of cache file names, so it is kept to a safe set.
fn network_name(object: &Map<String, Value>) -> Result<String, String> {
    let name = object
        .get("name")
        .and_then(Value::as_str)
        .ok_or("missing string field \"name\"")?;
    let valid = name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !valid {
        return Err(format!(
            "network name {name:?} must start with a letter or digit and hold only letters, \
             digits, '_', '.' and '-'"
        ));
    }
    Ok(name.to_owned())
}

/// The version to speak: the highest supported one of `cniVersions` (CNI 1.1), else
/// `cniVersion`.
fn list_version(object: &Map<String, Value>) -> Result<String, String> {
    if let Some(Value::Array(versions)) = object.get("cniVersions") {
        let best = versions
            .iter()
            .filter_map(Value::as_str)
            .filter(|v| version::SUPPORTED.contains(v))
            .max_by_key(|v| semver(v));
        if let Some(best) = best {
            return Ok(best.to_owned());
        }
    }
    let declared = object
        .get("cniVersion")
        .and_then(Value::as_str)
        .ok_or("missing string field \"cniVersion\"")?;
    if !version::SUPPORTED.contains(&declared) {
        return Err(format!(
            "unsupported cniVersion {declared:?} (supported: {})",
            version::SUPPORTED.join(", ")
        ));
    }
    Ok(declared.to_owned())
}

fn semver(v: &str) -> Vec<u32> {
    v.split('.').map(|part| part.parse().unwrap_or(0)).collect()
}

/// A boolean field; the string forms "true"/"false" are accepted as libcni does.
fn flag(object: &Map<String, Value>, key: &str) -> Result<bool, String> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
        Some(other) => Err(format!("{key:?} must be a boolean, not {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn the_first_file_by_name_wins() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "20-second.conflist",
            r#"{"cniVersion":"1.0.0","name":"second","plugins":[{"type":"b"}]}"#,
        );
        write(
            dir.path(),
            "10-first.conflist",
            r#"{"cniVersion":"1.1.0","name":"first","plugins":[{"type":"a","x":1},{"type":"p"}]}"#,
        );
        write(dir.path(), "00-ignored.txt", "not a config");
        let list = NetworkConfigList::load_dir(dir.path()).unwrap();
        assert_eq!(list.name, "first");
        assert_eq!(list.cni_version, "1.1.0");
        assert_eq!(list.source, dir.path().join("10-first.conflist"));
        let types: Vec<_> = list
            .plugins
            .iter()
            .map(|p| p.plugin_type.as_str())
            .collect();
        assert_eq!(types, ["a", "p"]);
        // Each plugin carries the list's name and version, and keeps its own fields.
        assert_eq!(list.plugins[0].name, "first");
        assert_eq!(list.plugins[1].cni_version, "1.1.0");
        assert_eq!(list.plugins[0].rest["x"], 1);
    }

    #[test]
    fn a_single_plugin_conf_is_wrapped() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "10-br.conf",
            r#"{"cniVersion":"0.4.0","name":"br","type":"bridge","ipam":{"type":"host-local"}}"#,
        );
        let list = NetworkConfigList::load_dir(dir.path()).unwrap();
        assert_eq!(list.name, "br");
        assert_eq!(list.cni_version, "0.4.0");
        assert_eq!(list.plugins.len(), 1);
        assert_eq!(list.plugins[0].plugin_type, "bridge");
        assert!(list.plugins[0].ipam.is_some());
        // The cached form parses back to the same list.
        let json = serde_json::to_vec(&list.to_json()).unwrap();
        let again = NetworkConfigList::parse(&json, &list.source).unwrap();
        assert_eq!(again.to_json(), list.to_json());
    }

    #[test]
    fn invalid_files_are_skipped_and_named_when_nothing_is_usable() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "05-broken.conflist", "{not json");
        write(
            dir.path(),
            "06-noplugins.conflist",
            r#"{"cniVersion":"1.0.0","name":"n","plugins":[]}"#,
        );
        write(
            dir.path(),
            "07-oldversion.conf",
            r#"{"cniVersion":"0.1.0","name":"n","type":"bridge"}"#,
        );
        write(
            dir.path(),
            "08-badtype.json",
            r#"{"cniVersion":"1.0.0","name":"n","type":"../../bin/sh"}"#,
        );
        let err = NetworkConfigList::load_dir(dir.path()).unwrap_err();
        let text = err.to_string();
        for name in [
            "05-broken.conflist",
            "06-noplugins.conflist",
            "07-oldversion.conf",
            "08-badtype.json",
        ] {
            assert!(text.contains(name), "{name} not named in: {text}");
        }
        assert!(text.contains("0.1.0"), "{text}");

        write(
            dir.path(),
            "09-good.json",
            r#"{"cniVersion":"1.0.0","name":"good","type":"bridge"}"#,
        );
        let list = NetworkConfigList::load_dir(dir.path()).unwrap();
        assert_eq!(list.name, "good");
    }

    #[test]
    fn an_empty_or_missing_directory_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let err = NetworkConfigList::load_dir(dir.path()).unwrap_err();
        assert!(matches!(err, NetworkError::NoConfig { .. }), "{err}");
        assert!(err.to_string().contains(&dir.path().display().to_string()));
        let missing = dir.path().join("nope");
        assert!(matches!(
            NetworkConfigList::load_dir(&missing),
            Err(NetworkError::NoConfig { .. })
        ));
    }

    #[test]
    fn versions_and_flags() {
        let src = Path::new("x.conflist");
        let list = NetworkConfigList::parse(
            br#"{"cniVersion":"1.0.0","cniVersions":["0.4.0","1.1.0","9.9.9"],"name":"n",
                "disableCheck":"true","disableGC":true,"plugins":[{"type":"a"}]}"#,
            src,
        )
        .unwrap();
        assert_eq!(list.cni_version, "1.1.0");
        assert!(list.disable_check && list.disable_gc);
        for bad in [
            r#"{"cniVersion":"1.0.0","name":"a/b","plugins":[{"type":"a"}]}"#,
            r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"notype":1}]}"#,
            r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"a"}],"disableCheck":3}"#,
            r#"{"name":"n","plugins":[{"type":"a"}]}"#,
            r#"[1]"#,
        ] {
            let err = NetworkConfigList::parse(bad.as_bytes(), src).unwrap_err();
            assert!(err.to_string().contains("x.conflist"), "{err}");
        }
    }
}
