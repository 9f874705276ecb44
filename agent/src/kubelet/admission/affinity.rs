//! `nodeSelector` and required node affinity (component-helpers' `GetRequiredNodeAffinity`):
//! every nodeSelector label must equal the node's, and one of the required terms must match.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, NodeSelectorRequirement, NodeSelectorTerm, Pod};

/// Whether the node satisfies the pod's nodeSelector and required node affinity.
pub(super) fn matches_required(pod: &Pod, node: &Node) -> bool {
    let empty = BTreeMap::new();
    let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
    let Some(spec) = pod.spec.as_ref() else {
        return true;
    };
    let selector_ok = spec
        .node_selector
        .iter()
        .flatten()
        .all(|(key, value)| labels.get(key) == Some(value));
    if !selector_ok {
        return false;
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    match required {
        // No terms match no node: a required selector with nothing in it excludes everything.
        Some(selector) => {
            let name = node.metadata.name.as_deref().unwrap_or_default();
            selector
                .node_selector_terms
                .iter()
                .any(|term| term_matches(term, labels, name))
        }
        None => true,
    }
}

/// A term ANDs its expressions and fields; an empty term matches nothing, and a term with
/// an invalid requirement never matches (the others still may).
fn term_matches(term: &NodeSelectorTerm, labels: &BTreeMap<String, String>, name: &str) -> bool {
    let expressions = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if expressions.is_empty() && fields.is_empty() {
        return false;
    }
    expressions
        .iter()
        .all(|r| label_requirement(r, labels.get(&r.key).map(String::as_str)) == Some(true))
        && fields
            .iter()
            .all(|r| field_requirement(r, name) == Some(true))
}

/// `None` for an invalid requirement.
fn label_requirement(requirement: &NodeSelectorRequirement, value: Option<&str>) -> Option<bool> {
    let values = requirement.values.as_deref().unwrap_or_default();
    match requirement.operator.as_str() {
        "In" if !values.is_empty() => Some(value.is_some_and(|v| values.iter().any(|x| x == v))),
        "NotIn" if !values.is_empty() => {
            Some(!value.is_some_and(|v| values.iter().any(|x| x == v)))
        }
        "Exists" if values.is_empty() => Some(value.is_some()),
        "DoesNotExist" if values.is_empty() => Some(value.is_none()),
        operator @ ("Gt" | "Lt") if values.len() == 1 => {
            let bound: i64 = values[0].parse().ok()?;
            let Some(actual) = value.and_then(|v| v.parse::<i64>().ok()) else {
                return Some(false);
            };
            Some(if operator == "Gt" {
                actual > bound
            } else {
                actual < bound
            })
        }
        _ => None,
    }
}

/// Only `metadata.name` with In/NotIn and a single value is a valid field requirement.
fn field_requirement(requirement: &NodeSelectorRequirement, name: &str) -> Option<bool> {
    let values = requirement.values.as_deref().unwrap_or_default();
    if requirement.key != "metadata.name" || values.len() != 1 {
        return None;
    }
    match requirement.operator.as_str() {
        "In" => Some(values[0] == name),
        "NotIn" => Some(values[0] != name),
        _ => None,
    }
}
