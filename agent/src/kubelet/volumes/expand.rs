//! `$(VAR)` expansion of subPathExpr, as the kubelet's ExpandContainerVolumeMounts: `$$`
//! escapes `$`, and a variable that is missing or empty is an error.

use std::collections::{BTreeMap, BTreeSet};

/// Expands `$(VAR)` references from `env`; Err lists the variables without a value.
pub(super) fn expand_sub_path_expr(
    expr: &str,
    env: &BTreeMap<String, String>,
) -> Result<String, String> {
    let bytes = expr.as_bytes();
    let mut out = String::with_capacity(expr.len());
    let mut missing = BTreeSet::new();
    let mut checkpoint = 0;
    let mut cursor = 0;
    while cursor < bytes.len() {
        if bytes[cursor] == b'$' && cursor + 1 < bytes.len() {
            out.push_str(&expr[checkpoint..cursor]);
            let rest = &expr[cursor + 1..];
            let advance = if rest.starts_with('$') {
                out.push('$');
                1
            } else if let Some(name) = rest
                .strip_prefix('(')
                .and_then(|r| r.split_once(')'))
                .map(|(n, _)| n)
            {
                match env.get(name).filter(|v| !v.is_empty()) {
                    Some(v) => out.push_str(v),
                    None => {
                        missing.insert(name.to_string());
                    }
                }
                name.len() + 2
            } else {
                // A lone `$` (or an unclosed `$(`) stays as written.
                out.push('$');
                0
            };
            cursor += 1 + advance;
            checkpoint = cursor;
            continue;
        }
        cursor += 1;
    }
    out.push_str(&expr[checkpoint..]);
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(missing.into_iter().collect::<Vec<_>>().join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("POD_NAME".to_string(), "web-0".to_string()),
            ("EMPTY".to_string(), String::new()),
        ])
    }

    #[test]
    fn expands_like_the_kubelet() {
        assert_eq!(
            expand_sub_path_expr("logs/$(POD_NAME)", &env()),
            Ok("logs/web-0".into())
        );
        assert_eq!(
            expand_sub_path_expr("$$(POD_NAME)", &env()),
            Ok("$(POD_NAME)".into())
        );
        assert_eq!(expand_sub_path_expr("a$b", &env()), Ok("a$b".into()));
        assert_eq!(expand_sub_path_expr("end$", &env()), Ok("end$".into()));
        assert_eq!(expand_sub_path_expr("$(open", &env()), Ok("$(open".into()));
        assert_eq!(
            expand_sub_path_expr("é$(POD_NAME)é", &env()),
            Ok("éweb-0é".into())
        );
    }

    #[test]
    fn missing_or_empty_variables_are_errors() {
        assert_eq!(
            expand_sub_path_expr("$(NOPE)/$(EMPTY)/$(POD_NAME)", &env()),
            Err("EMPTY, NOPE".into())
        );
    }
}
