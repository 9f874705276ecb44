//! TokenReview, SubjectAccessReview and SelfSubjectAccessReview bodies: parsing the request,
//! shaping the answer like kube-apiserver's.

use serde_json::{json, Value};

use super::rbac::Attributes;
use super::{ApiError, User, ANONYMOUS};

/// A TokenReview's spec.
pub(super) struct TokenReviewSpec {
    /// The token to check.
    pub(super) token: String,
    /// Audiences the caller accepts; empty = the API server's.
    pub(super) audiences: Vec<String>,
}

/// Reads `spec.token` and `spec.audiences`.
pub(super) fn token_review_spec(body: &Value) -> Result<TokenReviewSpec, ApiError> {
    let token = body
        .pointer("/spec/token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::invalid("spec.token: Required value"))?
        .to_owned();
    let audiences = strings(body.pointer("/spec/audiences"));
    Ok(TokenReviewSpec { token, audiences })
}

/// The TokenReview answer: authenticated with the user and audiences, or the error.
pub(super) fn token_review(body: &Value, result: Result<(User, Vec<String>), String>) -> Value {
    let status = match result {
        Ok((user, audiences)) => json!({
            "authenticated": true,
            "user": { "username": user.name, "uid": user.uid, "groups": user.groups },
            "audiences": audiences,
        }),
        Err(error) => json!({ "authenticated": false, "user": {}, "error": error }),
    };
    json!({
        "kind": "TokenReview",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": { "creationTimestamp": null },
        "spec": body.get("spec").cloned().unwrap_or_else(|| json!({})),
        "status": status,
    })
}

/// The user a SubjectAccessReview asks about (`spec.user`, `spec.groups`, `spec.uid`).
pub(super) fn review_subject(body: &Value) -> Result<Option<User>, ApiError> {
    let name = body
        .pointer("/spec/user")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let groups = strings(body.pointer("/spec/groups"));
    if name.is_empty() && groups.is_empty() {
        return Err(ApiError::invalid(
            "spec.user: Invalid value: \"\": at least one of user or group must be specified",
        ));
    }
    if name == ANONYMOUS {
        return Ok(None);
    }
    Ok(Some(User {
        name: name.to_owned(),
        uid: body
            .pointer("/spec/uid")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        groups,
    }))
}

/// Owned request attributes out of spec.resourceAttributes or spec.nonResourceAttributes.
pub(super) struct OwnedAttributes {
    verb: String,
    resource: String,
    subresource: String,
    namespace: String,
    name: String,
}

impl OwnedAttributes {
    /// Borrowed view for the authorizer.
    pub(super) fn view(&self) -> Attributes<'_> {
        Attributes {
            verb: &self.verb,
            resource: &self.resource,
            subresource: &self.subresource,
            namespace: &self.namespace,
            name: &self.name,
        }
    }
}

/// The attributes a (Self)SubjectAccessReview asks about; non-resource ones become
/// resource "" with the path as name, the authorizer's convention.
pub(super) fn review_attributes(body: &Value) -> Result<OwnedAttributes, ApiError> {
    let field = |obj: &Value, key: &str| {
        obj.get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    if let Some(r) = body.pointer("/spec/resourceAttributes") {
        let resource = field(r, "resource");
        if resource.is_empty() {
            return Err(ApiError::invalid(
                "spec.resourceAttributes.resource: Required value",
            ));
        }
        return Ok(OwnedAttributes {
            verb: field(r, "verb"),
            resource,
            subresource: field(r, "subresource"),
            namespace: field(r, "namespace"),
            name: field(r, "name"),
        });
    }
    if let Some(n) = body.pointer("/spec/nonResourceAttributes") {
        return Ok(OwnedAttributes {
            verb: field(n, "verb"),
            resource: String::new(),
            subresource: String::new(),
            namespace: String::new(),
            name: field(n, "path"),
        });
    }
    Err(ApiError::invalid(
        "spec.resourceAttributes: Required value: exactly one of nonResourceAttributes or resourceAttributes must be specified",
    ))
}

/// The (Self)SubjectAccessReview answer.
pub(super) fn access_review(
    kind: &str,
    body: &Value,
    subject: Option<&User>,
    allowed: bool,
) -> Value {
    let mut spec = body.get("spec").cloned().unwrap_or_else(|| json!({}));
    if kind == "SelfSubjectAccessReview" {
        // The real server does not echo the requester; keep only what was asked.
        if let Some(obj) = spec.as_object_mut() {
            obj.retain(|k, _| k == "resourceAttributes" || k == "nonResourceAttributes");
        }
    }
    let who = subject.map_or(ANONYMOUS, |u| u.name.as_str());
    let mut status = json!({ "allowed": allowed });
    if allowed {
        status["reason"] = json!(format!(
            "RBAC: allowed {who} by the test server's rule table"
        ));
    }
    json!({
        "kind": kind,
        "apiVersion": "authorization.k8s.io/v1",
        "metadata": { "creationTimestamp": null },
        "spec": spec,
        "status": status,
    })
}

/// The SelfSubjectReview answer: who the requester is.
pub(super) fn self_subject_review(user: Option<&User>) -> Value {
    let info = match user {
        Some(u) => json!({ "username": u.name, "uid": u.uid, "groups": u.groups }),
        None => json!({ "username": ANONYMOUS, "groups": ["system:unauthenticated"] }),
    };
    json!({
        "kind": "SelfSubjectReview",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": { "creationTimestamp": null },
        "status": { "userInfo": info },
    })
}

fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}
