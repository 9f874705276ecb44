//! Label selectors (`=`, `==`, `!=`, `in`, `notin`, `key`, `!key`) and field selectors (`=`, `==`, `!=`) as
//! kube-apiserver parses and matches them.

use serde_json::Value;

use super::status::ApiError;

/// One label requirement.
#[derive(Debug, Clone, PartialEq)]
enum LabelReq {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector(Vec<LabelReq>);

/// A parsed field selector; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

/// Splits on commas outside parentheses.
fn split_terms(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect()
}

fn set_values(raw: &str, selector: &str) -> Result<Vec<String>, ApiError> {
    let inner = raw
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "unable to parse requirement: found '{raw}', expected: '(' in \"{selector}\""
            ))
        })?;
    Ok(inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect())
}

fn check_key(key: &str, selector: &str) -> Result<String, ApiError> {
    let ok = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    if ok {
        Ok(key.to_string())
    } else {
        Err(ApiError::bad_request(format!(
            "unable to parse requirement: invalid label key \"{key}\" in \"{selector}\""
        )))
    }
}

impl LabelSelector {
    /// Parses `labelSelector` query syntax.
    pub fn parse(selector: &str) -> Result<LabelSelector, ApiError> {
        let mut reqs = Vec::new();
        for term in split_terms(selector) {
            let req = if let Some(key) = term.strip_prefix('!') {
                LabelReq::NotExists(check_key(key.trim(), selector)?)
            } else if let Some((k, v)) = term.split_once("!=") {
                LabelReq::NotEquals(check_key(k.trim(), selector)?, v.trim().to_string())
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                LabelReq::Equals(check_key(k.trim(), selector)?, v.trim().to_string())
            } else if let Some((k, rest)) = term.split_once(" notin ") {
                LabelReq::NotIn(check_key(k.trim(), selector)?, set_values(rest, selector)?)
            } else if let Some((k, rest)) = term.split_once(" in ") {
                LabelReq::In(check_key(k.trim(), selector)?, set_values(rest, selector)?)
            } else {
                LabelReq::Exists(check_key(term, selector)?)
            };
            reqs.push(req);
        }
        Ok(LabelSelector(reqs))
    }

    /// Whether the object's `metadata.labels` satisfy every requirement.
    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels");
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|req| match req {
            LabelReq::Equals(k, v) => get(k) == Some(v.as_str()),
            LabelReq::NotEquals(k, v) => get(k) != Some(v.as_str()),
            LabelReq::In(k, vs) => get(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelReq::NotIn(k, vs) => !get(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelReq::Exists(k) => get(k).is_some(),
            LabelReq::NotExists(k) => get(k).is_none(),
        })
    }
}

/// The string value of a dotted field path; missing fields read as "" like kube-apiserver's field sets.
fn field_value(obj: &Value, path: &str) -> String {
    let mut cur = obj;
    for part in path.split('.') {
        match cur.get(part) {
            Some(next) => cur = next,
            None => return String::new(),
        }
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

impl FieldSelector {
    /// Parses `fieldSelector` query syntax.
    pub fn parse(selector: &str) -> Result<FieldSelector, ApiError> {
        let mut reqs = Vec::new();
        for term in split_terms(selector) {
            let (key, equal, value) = if let Some((k, v)) = term.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (k, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{selector}'; can't understand '{term}'"
                )));
            };
            let key = key.trim();
            if key.is_empty() {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{selector}'; empty field name"
                )));
            }
            reqs.push((key.to_string(), equal, value.trim().to_string()));
        }
        Ok(FieldSelector(reqs))
    }

    /// Whether every `field (=|!=) value` holds for the object.
    pub fn matches(&self, obj: &Value) -> bool {
        self.0
            .iter()
            .all(|(field, equal, value)| (field_value(obj, field) == *value) == *equal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Value {
        json!({"metadata": {"name": "web-1", "namespace": "prod", "labels": {"environment": "production", "tier": "frontend"}},
               "spec": {"nodeName": "node-a"}, "status": {"phase": "Running"}})
    }

    #[test]
    fn label_selectors_from_the_kubernetes_docs() {
        let p = pod();
        let ok = |s: &str| LabelSelector::parse(s).map(|sel| sel.matches(&p));
        assert_eq!(ok("environment = production"), Ok(true));
        assert_eq!(ok("environment==production,tier!=frontend"), Ok(false));
        assert_eq!(ok("environment in (production, qa)"), Ok(true));
        assert_eq!(ok("tier notin (frontend,backend)"), Ok(false));
        assert_eq!(ok("partition"), Ok(false));
        assert_eq!(ok("!partition"), Ok(true));
        assert_eq!(ok("environment,environment notin (frontend)"), Ok(true));
        assert_eq!(ok("tier in (backend)"), Ok(false));
        assert_eq!(ok(""), Ok(true));
        assert!(LabelSelector::parse("tier in frontend").is_err());
        assert!(LabelSelector::parse("a b").is_err());
    }

    #[test]
    fn field_selectors_match_nested_fields_and_missing_ones_as_empty() {
        let p = pod();
        let ok = |s: &str| FieldSelector::parse(s).map(|sel| sel.matches(&p));
        assert_eq!(ok("metadata.name=web-1"), Ok(true));
        assert_eq!(
            ok("metadata.namespace==prod,spec.nodeName=node-a"),
            Ok(true)
        );
        assert_eq!(ok("status.phase!=Running"), Ok(false));
        assert_eq!(ok("spec.nodeName=node-b"), Ok(false));
        let unscheduled = json!({"metadata": {"name": "x"}, "spec": {}});
        assert!(FieldSelector::parse("spec.nodeName=")
            .map(|s| s.matches(&unscheduled))
            .unwrap_or(false));
        assert!(FieldSelector::parse("nonsense").is_err());
    }
}
