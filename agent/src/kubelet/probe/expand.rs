//! `$(VAR)` expansion of exec handler commands from the container's static env values,
//! as the kubelet's `ExpandContainerCommandOnlyStatic` (Kubernetes' forked `expansion`).

use std::collections::HashMap;

use k8s_openapi::api::core::v1::EnvVar;

/// Expands every word of `command` with the container's `env` (`valueFrom` entries expand to
/// the empty string, unknown names stay as written, `$$` is a literal `$`).
pub(super) fn command(command: &[String], env: &[EnvVar]) -> Vec<String> {
    let vars: HashMap<&str, &str> = env
        .iter()
        .map(|e| (e.name.as_str(), e.value.as_deref().unwrap_or("")))
        .collect();
    command.iter().map(|word| expand(word, &vars)).collect()
}

fn expand(input: &str, vars: &HashMap<&str, &str>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if after.is_empty() {
            // A trailing `$` is kept as written.
            out.push('$');
            rest = after;
        } else if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('(') {
            match body.find(')') {
                Some(close) => {
                    let name = &body[..close];
                    match vars.get(name) {
                        Some(value) => out.push_str(value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &body[close + 1..];
                }
                None => {
                    // An unclosed reference is kept and scanning resumes after `$(`.
                    out.push_str("$(");
                    rest = body;
                }
            }
        } else {
            // `$` not starting a reference: keep it and the next character.
            let next = after.chars().next().map_or(0, char::len_utf8);
            out.push('$');
            out.push_str(&after[..next]);
            rest = &after[next..];
        }
    }
    out.push_str(rest);
    out
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
