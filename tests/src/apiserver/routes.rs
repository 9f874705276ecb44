//! The HTTP front: authenticates and authorizes each request, counts it, parses the Kubernetes URL layout
//! and dispatches to discovery, reads, watches and the write operations.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State as AxumState};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use axum::Extension;
use serde_json::{json, Value};

use super::discovery;
use super::openapi;
use super::ops::{self, DeleteOptions, Part};
use super::protobuf;
use super::resources::{self, Kind};
use super::security::{Security, User, ANONYMOUS};
use super::selector::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::store::Store;
use super::table;
use super::watch::{self, WatchParams};
use super::{ApiServerOptions, RequestRecord};

/// Everything the handlers share; outlives listener restarts.
pub struct State {
    /// The objects.
    pub store: Arc<Store>,
    /// Authentication, authorization and the controllers.
    pub security: Security,
    /// Server options.
    pub options: ApiServerOptions,
    /// Every request, in arrival order.
    pub requests: Mutex<Vec<RequestRecord>>,
    /// `host:port` advertised in `/api`.
    pub address: String,
}

/// The verified client certificate of a connection (DER), if the client sent one.
#[derive(Clone, Default)]
pub struct PeerCert(pub Option<Arc<Vec<u8>>>);

/// A parsed resource URL.
struct Target {
    kind: &'static Kind,
    namespace: String,
    name: String,
    sub: String,
}

fn json_response(code: u16, body: &Value) -> Response {
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

fn error_response(err: &ApiError) -> Response {
    json_response(err.code, &err.to_status())
}

fn not_found_path() -> ApiError {
    ApiError {
        code: 404,
        reason: "NotFound",
        message: "the server could not find the requested resource".into(),
        details: None,
    }
}

/// Splits a resource path; Ok(None) for non-resource paths (discovery, health).
fn parse_target(path: &str) -> Result<Option<Target>, ApiError> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", "v1", rest @ ..] if !rest.is_empty() => ("", "v1", rest),
        ["apis", g, v, rest @ ..] if !rest.is_empty() => (*g, *v, rest),
        _ => return Ok(None),
    };
    let namespaced_form = rest.first() == Some(&"namespaces")
        && rest.len() >= 3
        && resources::lookup(group, version, rest[2]).is_some();
    let (namespace, rest) = if namespaced_form {
        (rest[1], &rest[2..])
    } else {
        ("", rest)
    };
    if rest.len() > 3 {
        return Err(not_found_path());
    }
    let kind = resources::lookup(group, version, rest[0]).ok_or_else(not_found_path)?;
    if kind.namespaced != namespaced_form && !(kind.namespaced && rest.len() == 1) {
        return Err(not_found_path());
    }
    let sub = rest.get(2).copied().unwrap_or_default();
    if !sub.is_empty() && !kind.subresources().contains(&sub) {
        return Err(not_found_path());
    }
    Ok(Some(Target {
        kind,
        namespace: namespace.to_string(),
        name: rest.get(1).copied().unwrap_or_default().to_string(),
        sub: sub.to_string(),
    }))
}

fn truthy(q: &HashMap<String, String>, key: &str) -> bool {
    matches!(q.get(key).map(String::as_str), Some("true" | "1"))
}

fn parse_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    if ct.starts_with("application/vnd.kubernetes.protobuf") {
        protobuf::decode(body)
    } else if ct.contains("yaml") {
        serde_yaml::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("the request body is not valid YAML: {e}")))
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))
    }
}

fn verb_of(method: &Method, target: &Target, q: &HashMap<String, String>) -> &'static str {
    match (method.as_str(), target.name.is_empty()) {
        ("GET", false) => "get",
        ("GET", true) if truthy(q, "watch") => "watch",
        ("GET", true) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", false) => "delete",
        ("DELETE", true) => "deletecollection",
        _ => "unknown",
    }
}

/// The single handler for every path.
pub async fn handle(
    AxumState(state): AxumState<Arc<State>>,
    Extension(peer): Extension<PeerCert>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let query: HashMap<String, String> = Query::try_from_uri(&uri)
        .map(|q: Query<HashMap<String, String>>| q.0)
        .unwrap_or_default();
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let user = state.security.authenticate(
        peer.0.as_deref().map(Vec::as_slice),
        authorization,
        &*state.store,
    );
    let target = parse_target(&path);
    let verb = match &target {
        Ok(Some(t)) => verb_of(&method, t, &query),
        _ => match method.as_str() {
            "GET" => "get",
            "POST" => "post",
            "PUT" => "put",
            "DELETE" => "delete",
            "PATCH" => "patch",
            _ => "unknown",
        },
    };
    let user_name = match &user {
        Ok(Some(u)) => u.name.clone(),
        _ => ANONYMOUS.to_string(),
    };
    if let Ok(mut requests) = state.requests.lock() {
        requests.push(RequestRecord {
            verb: verb.to_string(),
            path: path.clone(),
            user: user_name.clone(),
        });
    }
    let user = match user {
        Ok(user) => user,
        Err(e) => return error_response(&e),
    };
    let target = match target {
        Ok(t) => t,
        Err(e) => return error_response(&e),
    };
    let Some(target) = target else {
        if !state
            .security
            .authorize(user.as_ref(), verb, "", "", "", &path)
        {
            return error_response(&denied(&user_name, verb, None, &path));
        }
        return non_resource(&state, &path);
    };
    // TokenRequests and reviews are authorized by security itself.
    let self_checked = target.kind.is_review() || target.sub == "token";
    if !self_checked
        && !state.security.authorize(
            user.as_ref(),
            verb,
            target.kind.plural,
            &target.sub,
            &target.namespace,
            &target.name,
        )
    {
        return error_response(&denied(&user_name, verb, Some(&target), &path));
    }
    match resource(
        &state,
        user.as_ref(),
        verb,
        &target,
        &query,
        &headers,
        &body,
    ) {
        Ok(resp) => resp,
        Err(e) => error_response(&e),
    }
}

/// 403 naming the user; anonymous requests are `system:anonymous`, denied like anyone
/// else (kube-apiserver with anonymous auth enabled answers 403, not 401).
fn denied(name: &str, verb: &str, target: Option<&Target>, path: &str) -> ApiError {
    match target {
        Some(t) => {
            let res = if t.sub.is_empty() {
                t.kind.plural.to_string()
            } else {
                format!("{}/{}", t.kind.plural, t.sub)
            };
            let scope = if t.namespace.is_empty() {
                "at the cluster scope".to_string()
            } else {
                format!("in the namespace \"{}\"", t.namespace)
            };
            ApiError::forbidden(format!(
                "{} \"{}\" is forbidden: User \"{name}\" cannot {verb} resource \"{res}\" in API group \"{}\" {scope}",
                ops::qualified(t.kind),
                t.name,
                t.kind.group
            ))
        }
        None => ApiError::forbidden(format!(
            "forbidden: User \"{name}\" cannot {verb} path \"{path}\""
        )),
    }
}

fn non_resource(state: &State, path: &str) -> Response {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let doc = match segs.as_slice() {
        ["version"] => Some(discovery::version()),
        ["api"] => Some(discovery::core_versions(&state.address)),
        ["api", "v1"] => discovery::resource_list("", "v1"),
        ["apis"] => Some(discovery::groups()),
        ["apis", g] => discovery::api_group(g),
        ["apis", g, v] => discovery::resource_list(g, v),
        ["openapi", "v3"] => Some(openapi::root()),
        ["openapi", "v3", rest @ ..] => openapi::group_version(&rest.join("/")),
        ["healthz" | "livez" | "readyz"] => {
            let mut resp = Response::new(Body::from("ok"));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain"),
            );
            return resp;
        }
        _ => None,
    };
    match doc {
        Some(doc) => json_response(200, &doc),
        None => error_response(&not_found_path()),
    }
}

/// Whether the client (kubectl's human output) asked for server-side printing.
fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=Table"))
}

fn selectors(q: &HashMap<String, String>) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let labels = LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or(""))?;
    let fields = FieldSelector::parse(q.get("fieldSelector").map(String::as_str).unwrap_or(""))?;
    Ok((labels, fields))
}

fn parse_rv(q: &HashMap<String, String>) -> Result<Option<u64>, ApiError> {
    match q.get("resourceVersion").map(String::as_str) {
        None | Some("") => Ok(None),
        Some(rv) => rv
            .parse()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv:?}"))),
    }
}

fn list(
    state: &State,
    t: &Target,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let (labels, fields) = selectors(q)?;
    let (items, rv) = state.store.list(t.kind.key, &t.namespace);
    if let (Some(asked), Some("Exact")) = (
        parse_rv(q)?,
        q.get("resourceVersionMatch").map(String::as_str),
    ) {
        if asked != rv {
            return Err(ApiError::gone(format!(
                "too old resource version: {asked} ({rv})"
            )));
        }
    }
    let items: Vec<Value> = items
        .into_iter()
        .filter(|o| labels.matches(o) && fields.matches(o))
        .collect();
    if wants_table(headers) {
        if let Some(t) = table::table(t.kind.key, &items, rv) {
            return Ok(json_response(200, &t));
        }
    }
    let list = json!({"kind": format!("{}List", t.kind.kind), "apiVersion": t.kind.api_version(),
                      "metadata": {"resourceVersion": rv.to_string()}, "items": items});
    Ok(json_response(200, &list))
}

fn watch(
    state: &State,
    t: &Target,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let (labels, fields) = selectors(q)?;
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(1800), Duration::from_secs);
    let params = WatchParams {
        namespace: t.namespace.clone(),
        resource_version: parse_rv(q)?,
        bookmarks: truthy(q, "allowWatchBookmarks"),
        send_initial_events: truthy(q, "sendInitialEvents"),
        timeout,
        table: wants_table(headers),
        labels,
        fields,
    };
    let mut resp = Response::new(Body::from_stream(watch::stream(
        state.store.clone(),
        t.kind,
        params,
    )));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

fn resource(
    state: &State,
    user: Option<&User>,
    verb: &str,
    t: &Target,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let kind = t.kind;
    let part = || {
        Part::from_subresource(kind, &t.sub).ok_or_else(|| {
            ApiError::method_not_allowed(format!(
                "{verb} is not supported on {}/{}",
                kind.plural, t.sub
            ))
        })
    };
    let written = match verb {
        "get" if t.sub.is_empty() || t.sub == "status" => {
            let obj = state
                .store
                .get(kind.key, &t.namespace, &t.name)
                .ok_or_else(|| ApiError::not_found(&ops::qualified(kind), &t.name))?;
            if wants_table(headers) && t.sub.is_empty() {
                if let Some(t) = table::table(
                    kind.key,
                    std::slice::from_ref(&obj),
                    state.store.current_rv(),
                ) {
                    return Ok(json_response(200, &t));
                }
            }
            return Ok(json_response(200, &obj));
        }
        "list" if !kind.is_review() => return list(state, t, q, headers),
        "watch" if !kind.is_review() => return watch(state, t, q, headers),
        "create" if kind.is_review() => {
            let out = state.security.create_review(
                user,
                kind.plural,
                parse_body(headers, body)?,
                &*state.store,
            )?;
            return Ok(json_response(201, &out));
        }
        "create" if t.sub == "token" => {
            let out = state.security.create_subresource(
                user,
                kind.plural,
                &t.namespace,
                &t.name,
                &t.sub,
                parse_body(headers, body)?,
                &*state.store,
            )?;
            return Ok(json_response(201, &out));
        }
        "create" if t.sub == "binding" => {
            ops::bind(
                &state.store,
                &t.namespace,
                &t.name,
                &parse_body(headers, body)?,
            )?;
            return Ok(json_response(
                201,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
            ));
        }
        "create" if t.name.is_empty() => (
            201,
            ops::create(
                &state.store,
                kind,
                &t.namespace,
                parse_body(headers, body)?,
                user,
            )?,
        ),
        "update" if !t.name.is_empty() => (
            200,
            ops::update(
                &state.store,
                kind,
                &t.namespace,
                &t.name,
                parse_body(headers, body)?,
                part()?,
            )?,
        ),
        "patch" if !t.name.is_empty() => {
            let ct = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let patch: Value = if ct.starts_with("application/apply-patch") {
                Value::Null
            } else {
                serde_json::from_slice(body).map_err(|e| {
                    ApiError::bad_request(format!("the patch is not valid JSON: {e}"))
                })?
            };
            (
                200,
                ops::patch(
                    &state.store,
                    kind,
                    &t.namespace,
                    &t.name,
                    ct,
                    &patch,
                    part()?,
                )?,
            )
        }
        "delete" if t.sub.is_empty() => {
            let grace = q.get("gracePeriodSeconds").and_then(|g| g.parse().ok());
            let opts = DeleteOptions::parse(body, grace)?;
            (
                200,
                ops::delete(&state.store, kind, &t.namespace, &t.name, &opts)?,
            )
        }
        "deletecollection" if !kind.is_review() && t.sub.is_empty() => {
            let (labels, fields) = selectors(q)?;
            let opts = DeleteOptions::parse(
                body,
                q.get("gracePeriodSeconds").and_then(|g| g.parse().ok()),
            )?;
            let (items, _) = state.store.list(kind.key, &t.namespace);
            let mut out = Vec::new();
            for item in items
                .iter()
                .filter(|o| labels.matches(o) && fields.matches(o))
            {
                let name = item
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let ns = item
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if let Ok(obj) = ops::delete(
                    &state.store,
                    kind,
                    ns,
                    name,
                    &DeleteOptions {
                        uid: None,
                        resource_version: None,
                        ..opts.clone()
                    },
                ) {
                    out.push(obj);
                }
            }
            let list = json!({"kind": format!("{}List", kind.kind), "apiVersion": kind.api_version(),
                              "metadata": {"resourceVersion": state.store.current_rv().to_string()}, "items": out});
            return Ok(json_response(200, &list));
        }
        _ => {
            return Err(ApiError::method_not_allowed(format!(
                "{verb} is not supported on {}",
                kind.plural
            )))
        }
    };
    let (code, obj) = written;
    state.security.after_write(
        kind.key,
        &obj,
        &*state.store,
        state.options.auto_approve_node_csrs,
    );
    Ok(json_response(code, &obj))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(path: &str) -> Option<(String, String, String, String)> {
        parse_target(path)
            .ok()
            .flatten()
            .map(|t| (t.kind.key.to_string(), t.namespace, t.name, t.sub))
    }

    #[test]
    fn urls_split_into_kind_namespace_name_and_subresource() {
        let s = |a: &str, b: &str, c: &str, d: &str| Some((a.into(), b.into(), c.into(), d.into()));
        assert_eq!(
            parsed("/api/v1/namespaces/default/pods/web/status"),
            s("pods", "default", "web", "status")
        );
        assert_eq!(parsed("/api/v1/pods"), s("pods", "", "", ""));
        assert_eq!(
            parsed("/api/v1/namespaces/kube-system"),
            s("namespaces", "", "kube-system", "")
        );
        assert_eq!(parsed("/api/v1/namespaces"), s("namespaces", "", "", ""));
        assert_eq!(
            parsed("/api/v1/nodes/n1/status"),
            s("nodes", "", "n1", "status")
        );
        assert_eq!(
            parsed("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1"),
            s("leases", "kube-node-lease", "n1", "")
        );
        assert_eq!(
            parsed("/apis/events.k8s.io/v1/namespaces/a/events"),
            s("events.events.k8s.io", "a", "", "")
        );
        assert_eq!(
            parsed("/apis/certificates.k8s.io/v1/certificatesigningrequests/c/approval"),
            s("certificatesigningrequests", "", "c", "approval")
        );
        assert!(parsed("/version").is_none() && parsed("/apis/apps/v1").is_none());
        assert!(parse_target("/api/v1/namespaces/a/nodes/n1").is_err());
        assert!(parse_target("/api/v1/namespaces/a/pods/p/exec").is_err());
        assert!(parse_target("/apis/apps/v1/deployments").is_err());
    }
}
