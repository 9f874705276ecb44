//! `$(VAR)` expansion of exec handler commands from the container's static env values,
//! as the kubelet's `ExpandContainerCommandOnlyStatic` (Kubernetes' forked `expansion`).

use std::collections::HashMap;

use k8s_openapi::api::core::v1::EnvVar;

use crate::kubelet::convert::expansion::expand;

/// Expands every word of `command` with the container's `env` (`valueFrom` entries expand to
/// the empty string, unknown names stay as written, `$$` is a literal `$`).
pub(super) fn command(command: &[String], env: &[EnvVar]) -> Vec<String> {
    let vars: HashMap<&str, &str> = env
        .iter()
        .map(|e| (e.name.as_str(), e.value.as_deref().unwrap_or("")))
        .collect();
    let lookup = |name: &str| vars.get(name).map(|v| (*v).to_owned());
    command.iter().map(|word| expand(word, lookup)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Vec<EnvVar> {
        vec![
            EnvVar {
                name: "PORT".into(),
                value: Some("8080".into()),
                ..Default::default()
            },
            EnvVar {
                name: "FROM_REF".into(),
                value: None,
                ..Default::default()
            },
        ]
    }

    fn one(word: &str) -> String {
        command(&[word.to_owned()], &env()).remove(0)
    }

    #[test]
    fn expands_like_the_kubelet() {
        assert_eq!(one("localhost:$(PORT)/x"), "localhost:8080/x");
        assert_eq!(one("$(FROM_REF)"), "");
        assert_eq!(one("$(MISSING)"), "$(MISSING)");
        assert_eq!(one("$$(PORT)"), "$(PORT)");
        assert_eq!(one("$(PORT"), "$(PORT");
        assert_eq!(one("a$b$"), "a$b$");
        assert_eq!(one("$é$(PORT)"), "$é8080");
        assert_eq!(one("$($(PORT))"), "$($(PORT))");
    }
}
