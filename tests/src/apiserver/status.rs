//! Kubernetes `Status` errors as kube-apiserver returns them (`metav1.Status`, kind Status).

use serde_json::{json, Value};

/// An API error: the HTTP code, the machine-readable reason and a message naming what is wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// `metav1.StatusReason`, e.g. `NotFound`, `Conflict`, `Invalid`.
    pub reason: &'static str,
    /// Human-readable message, worded like kube-apiserver's.
    pub message: String,
    /// `details` of an Invalid error: the object and the fields at fault.
    pub details: Option<Details>,
}

/// `metav1.StatusDetails` of an Invalid error.
#[derive(Debug, Clone, PartialEq)]
pub struct Details {
    /// The object's kind, e.g. `Service`.
    pub kind: String,
    /// The object's name.
    pub name: String,
    /// One cause per field error.
    pub causes: Vec<FieldError>,
}

/// One field validation error (`field.Error`), worded like kube-apiserver's.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// `metav1.CauseType`, e.g. `FieldValueInvalid`.
    pub reason: &'static str,
    /// The field path, e.g. `spec.ports[0].port`.
    pub field: String,
    /// The message without the field path, e.g. `Invalid value: 0: must be between 1 and 65535, inclusive`.
    pub message: String,
}

/// A value as Go's `%#v`-like rendering in field errors shows it: `"text"`, `42`, `[]string{"a", "b"}`.
pub fn go_value(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        Value::Array(items) if items.iter().all(Value::is_string) => {
            let inner: Vec<String> = items.iter().map(go_value).collect();
            format!("[]string{{{}}}", inner.join(", "))
        }
        Value::Null => "null".into(),
        other => other.to_string(),
    }
}

impl FieldError {
    fn new(reason: &'static str, field: impl Into<String>, message: String) -> Self {
        FieldError {
            reason,
            field: field.into(),
            message,
        }
    }

    /// `Invalid value: <value>: <detail>`.
    pub fn invalid(field: impl Into<String>, value: &Value, detail: impl AsRef<str>) -> Self {
        let message = format!("Invalid value: {}: {}", go_value(value), detail.as_ref());
        Self::new("FieldValueInvalid", field, message)
    }

    /// `Required value[: <detail>]`.
    pub fn required(field: impl Into<String>, detail: &str) -> Self {
        let message = if detail.is_empty() {
            "Required value".to_string()
        } else {
            format!("Required value: {detail}")
        };
        Self::new("FieldValueRequired", field, message)
    }

    /// `Duplicate value: <value>`.
    pub fn duplicate(field: impl Into<String>, value: &Value) -> Self {
        let message = format!("Duplicate value: {}", go_value(value));
        Self::new("FieldValueDuplicate", field, message)
    }

    /// `Unsupported value: <value>: supported values: "a", "b"`.
    pub fn not_supported(field: impl Into<String>, value: &Value, supported: &[&str]) -> Self {
        let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        let message = format!(
            "Unsupported value: {}: supported values: {}",
            go_value(value),
            list.join(", ")
        );
        Self::new("FieldValueNotSupported", field, message)
    }

    /// `Duplicate value: <rendered>` for a value Go renders itself (a struct).
    pub fn duplicate_rendered(field: impl Into<String>, rendered: &str) -> Self {
        Self::new(
            "FieldValueDuplicate",
            field,
            format!("Duplicate value: {rendered}"),
        )
    }

    /// `Forbidden: <detail>`.
    pub fn forbidden(field: impl Into<String>, detail: &str) -> Self {
        Self::new("FieldValueForbidden", field, format!("Forbidden: {detail}"))
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    /// 422 Invalid for `errors` of object `<kind> "<name>"`, with `details.causes` as kube-apiserver sends them.
    pub fn invalid_fields(kind: &str, name: &str, errors: Vec<FieldError>) -> Self {
        let listed: Vec<String> = errors.iter().map(ToString::to_string).collect();
        let summary = match listed.as_slice() {
            [one] => one.clone(),
            many => format!("[{}]", many.join(", ")),
        };
        ApiError {
            code: 422,
            reason: "Invalid",
            message: format!("{kind} \"{name}\" is invalid: {summary}"),
            details: Some(Details {
                kind: kind.to_string(),
                name: name.to_string(),
                causes: errors,
            }),
        }
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 401 Unauthorized.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(401, "Unauthorized", message)
    }

    /// 403 Forbidden.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    /// 404 NotFound for `<resource> "<name>"`.
    pub fn not_found(resource: &str, name: &str) -> Self {
        Self::new(404, "NotFound", format!("{resource} \"{name}\" not found"))
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    /// 409 AlreadyExists.
    pub fn already_exists(resource: &str, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{resource} \"{name}\" already exists"),
        )
    }

    /// 409 Conflict (stale resourceVersion, failed precondition).
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(409, "Conflict", message)
    }

    /// 410 Gone / Expired (a watch or list asked for history that is no longer kept).
    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// 415 UnsupportedMediaType (unknown patch type).
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(415, "UnsupportedMediaType", message)
    }

    /// 422 Invalid.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(422, "Invalid", message)
    }

    /// 500 InternalError.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    /// The `metav1.Status` body.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            let causes: Vec<Value> = d
                .causes
                .iter()
                .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                .collect();
            status["details"] = json!({"name": d.name, "kind": d.kind, "causes": causes});
        }
        status
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.reason, self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_fields_list_every_cause_in_the_message_and_details() {
        let one = ApiError::invalid_fields(
            "Service",
            "web",
            vec![FieldError::invalid(
                "spec.ports[0].port",
                &json!(0),
                "must be between 1 and 65535, inclusive",
            )],
        );
        assert_eq!(
            one.message,
            "Service \"web\" is invalid: spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive"
        );
        let two = ApiError::invalid_fields(
            "Service",
            "web",
            vec![
                FieldError::required("spec.ports[1].name", ""),
                FieldError::not_supported("spec.type", &json!("Foo"), &["ClusterIP", "NodePort"]),
            ],
        );
        assert_eq!(
            two.message,
            "Service \"web\" is invalid: [spec.ports[1].name: Required value, spec.type: Unsupported value: \"Foo\": supported values: \"ClusterIP\", \"NodePort\"]"
        );
        let status = two.to_status();
        assert_eq!(status["code"], 422);
        assert_eq!(
            status["details"]["causes"][0]["field"],
            "spec.ports[1].name"
        );
        assert_eq!(
            status["details"]["causes"][1]["reason"],
            "FieldValueNotSupported"
        );
        assert_eq!(go_value(&json!(["10.96.0.1"])), "[]string{\"10.96.0.1\"}");
    }
}
