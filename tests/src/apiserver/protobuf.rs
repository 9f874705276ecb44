//! Decoding of the Kubernetes protobuf request bodies kubectl's typed clients send
//! (`application/vnd.kubernetes.protobuf`: the `k8s\0` magic and a `runtime.Unknown` envelope) into JSON,
//! for the kinds kubectl writes that way: Namespace, ConfigMap, Secret, ServiceAccount, TokenRequest,
//! SelfSubjectAccessReview and CertificateSigningRequest. Responses are always JSON, which clients accept.

use base64::Engine;
use serde_json::{Map, Value};

use super::status::ApiError;

/// A field's wire meaning.
enum Ty {
    Str,
    Bytes,
    Int,
    Bool,
    Time,
    StrMap,
    BytesMap,
    RepStr,
    Msg(&'static [Field]),
    RepMsg(&'static [Field]),
}

/// One field of a message: number, JSON name, type.
struct Field(u32, &'static str, Ty);

static META: &[Field] = &[
    Field(1, "name", Ty::Str),
    Field(2, "generateName", Ty::Str),
    Field(3, "namespace", Ty::Str),
    Field(5, "uid", Ty::Str),
    Field(6, "resourceVersion", Ty::Str),
    Field(11, "labels", Ty::StrMap),
    Field(12, "annotations", Ty::StrMap),
    Field(14, "finalizers", Ty::RepStr),
];
static TYPE_META: &[Field] = &[Field(1, "apiVersion", Ty::Str), Field(2, "kind", Ty::Str)];
static NAMESPACE: &[Field] = &[
    Field(1, "metadata", Ty::Msg(META)),
    Field(2, "spec", Ty::Msg(&[Field(1, "finalizers", Ty::RepStr)])),
];
static CONFIGMAP: &[Field] = &[
    Field(1, "metadata", Ty::Msg(META)),
    Field(2, "data", Ty::StrMap),
    Field(3, "binaryData", Ty::BytesMap),
    Field(4, "immutable", Ty::Bool),
];
static SECRET: &[Field] = &[
    Field(1, "metadata", Ty::Msg(META)),
    Field(2, "data", Ty::BytesMap),
    Field(3, "type", Ty::Str),
    Field(4, "stringData", Ty::StrMap),
    Field(5, "immutable", Ty::Bool),
];
static NAME_REF: &[Field] = &[Field(1, "name", Ty::Str)];
static SERVICE_ACCOUNT: &[Field] = &[
    Field(1, "metadata", Ty::Msg(META)),
    Field(3, "imagePullSecrets", Ty::RepMsg(NAME_REF)),
    Field(4, "automountServiceAccountToken", Ty::Bool),
];
static BOUND_REF: &[Field] = &[
    Field(1, "kind", Ty::Str),
    Field(2, "apiVersion", Ty::Str),
    Field(3, "name", Ty::Str),
    Field(4, "uid", Ty::Str),
];
static TOKEN_REQUEST: &[Field] = &[
    Field(1, "metadata", Ty::Msg(META)),
    Field(
        2,
        "spec",
        Ty::Msg(&[
            Field(1, "audiences", Ty::RepStr),
            Field(3, "boundObjectRef", Ty::Msg(BOUND_REF)),
            Field(4, "expirationSeconds", Ty::Int),
        ]),
    ),
];
static RESOURCE_ATTRS: &[Field] = &[
    Field(1, "namespace", Ty::Str),
    Field(2, "verb", Ty::Str),
    Field(3, "group", Ty::Str),
    Field(4, "version", Ty::Str),
    Field(5, "resource", Ty::Str),
    Field(6, "subresource", Ty::Str),
    Field(7, "name", Ty::Str),
];
static SELF_SAR: &[Field] = &[
    Field(1, "metadata", Ty::Msg(META)),
    Field(
        2,
        "spec",
        Ty::Msg(&[
            Field(1, "resourceAttributes", Ty::Msg(RESOURCE_ATTRS)),
            Field(
                2,
                "nonResourceAttributes",
                Ty::Msg(&[Field(1, "path", Ty::Str), Field(2, "verb", Ty::Str)]),
            ),
        ]),
    ),
];
static CSR_CONDITION: &[Field] = &[
    Field(1, "type", Ty::Str),
    Field(2, "reason", Ty::Str),
    Field(3, "message", Ty::Str),
    Field(4, "lastUpdateTime", Ty::Time),
    Field(5, "lastTransitionTime", Ty::Time),
    Field(6, "status", Ty::Str),
];
static CSR: &[Field] = &[
    Field(1, "metadata", Ty::Msg(META)),
    Field(
        2,
        "spec",
        Ty::Msg(&[
            Field(1, "request", Ty::Bytes),
            Field(2, "username", Ty::Str),
            Field(3, "uid", Ty::Str),
            Field(4, "groups", Ty::RepStr),
            Field(5, "usages", Ty::RepStr),
            Field(7, "signerName", Ty::Str),
            Field(8, "expirationSeconds", Ty::Int),
        ]),
    ),
    Field(
        3,
        "status",
        Ty::Msg(&[
            Field(1, "conditions", Ty::RepMsg(CSR_CONDITION)),
            Field(2, "certificate", Ty::Bytes),
        ]),
    ),
];

fn bad(what: &str) -> ApiError {
    ApiError::bad_request(format!("the protobuf request body is malformed: {what}"))
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, ApiError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| bad("truncated varint"))?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(bad("varint too long"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ApiError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or_else(|| bad("truncated field"))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn bytes(&mut self) -> Result<&'a [u8], ApiError> {
        let n = usize::try_from(self.varint()?).map_err(|_| bad("length too large"))?;
        self.take(n)
    }

    fn skip(&mut self, wire: u64) -> Result<(), ApiError> {
        match wire {
            0 => self.varint().map(drop),
            1 => self.take(8).map(drop),
            2 => self.bytes().map(drop),
            5 => self.take(4).map(drop),
            other => Err(bad(&format!("unsupported wire type {other}"))),
        }
    }
}

fn text(b: &[u8]) -> Result<String, ApiError> {
    String::from_utf8(b.to_vec()).map_err(|_| bad("a string field is not UTF-8"))
}

fn map_entry(b: &[u8], binary: bool) -> Result<(String, Value), ApiError> {
    let mut r = Reader { buf: b, pos: 0 };
    let (mut key, mut value) = (String::new(), Value::String(String::new()));
    while r.pos < b.len() {
        let tag = r.varint()?;
        match (tag >> 3, tag & 7) {
            (1, 2) => key = text(r.bytes()?)?,
            (2, 2) if binary => {
                value = Value::String(base64::engine::general_purpose::STANDARD.encode(r.bytes()?))
            }
            (2, 2) => value = Value::String(text(r.bytes()?)?),
            (_, wire) => r.skip(wire)?,
        }
    }
    Ok((key, value))
}

fn time(b: &[u8]) -> Result<Value, ApiError> {
    let msg = decode_message(b, &[Field(1, "seconds", Ty::Int)])?;
    let secs = msg.get("seconds").and_then(Value::as_i64).unwrap_or(0);
    let ts = jiff::Timestamp::from_second(secs).map_err(|_| bad("timestamp out of range"))?;
    Ok(Value::String(ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()))
}

fn decode_message(b: &[u8], schema: &[Field]) -> Result<Map<String, Value>, ApiError> {
    let mut r = Reader { buf: b, pos: 0 };
    let mut out = Map::new();
    while r.pos < b.len() {
        let tag = r.varint()?;
        let (num, wire) = (tag >> 3, tag & 7);
        let Some(Field(_, name, ty)) = schema.iter().find(|f| u64::from(f.0) == num) else {
            r.skip(wire)?;
            continue;
        };
        let name = (*name).to_string();
        match (ty, wire) {
            (Ty::Str, 2) => {
                out.insert(name, Value::String(text(r.bytes()?)?));
            }
            (Ty::Bytes, 2) => {
                out.insert(
                    name,
                    Value::String(base64::engine::general_purpose::STANDARD.encode(r.bytes()?)),
                );
            }
            (Ty::Int, 0) => {
                out.insert(name, Value::from(r.varint()? as i64));
            }
            (Ty::Bool, 0) => {
                out.insert(name, Value::Bool(r.varint()? != 0));
            }
            (Ty::Time, 2) => {
                out.insert(name, time(r.bytes()?)?);
            }
            (Ty::StrMap | Ty::BytesMap, 2) => {
                let (k, v) = map_entry(r.bytes()?, matches!(ty, Ty::BytesMap))?;
                if let Some(map) = out
                    .entry(name)
                    .or_insert_with(|| Value::Object(Map::new()))
                    .as_object_mut()
                {
                    map.insert(k, v);
                }
            }
            (Ty::RepStr, 2) => {
                let v = Value::String(text(r.bytes()?)?);
                if let Some(list) = out
                    .entry(name)
                    .or_insert_with(|| Value::Array(Vec::new()))
                    .as_array_mut()
                {
                    list.push(v);
                }
            }
            (Ty::Msg(inner), 2) => {
                out.insert(name, Value::Object(decode_message(r.bytes()?, inner)?));
            }
            (Ty::RepMsg(inner), 2) => {
                let v = Value::Object(decode_message(r.bytes()?, inner)?);
                if let Some(list) = out
                    .entry(name)
                    .or_insert_with(|| Value::Array(Vec::new()))
                    .as_array_mut()
                {
                    list.push(v);
                }
            }
            (_, wire) => r.skip(wire)?,
        }
    }
    Ok(out)
}

/// Decodes a protobuf request body into the object's JSON; 415 for kinds this server cannot decode.
pub fn decode(body: &[u8]) -> Result<Value, ApiError> {
    let envelope = body
        .strip_prefix(b"k8s\0")
        .ok_or_else(|| bad("missing the k8s magic prefix"))?;
    let unknown = decode_message(
        envelope,
        &[
            Field(1, "typeMeta", Ty::Msg(TYPE_META)),
            Field(2, "raw", Ty::Bytes),
        ],
    )?;
    let type_meta = unknown.get("typeMeta").cloned().unwrap_or_default();
    let kind = type_meta
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let schema = match kind {
        "Namespace" => NAMESPACE,
        "ConfigMap" => CONFIGMAP,
        "Secret" => SECRET,
        "ServiceAccount" => SERVICE_ACCOUNT,
        "TokenRequest" => TOKEN_REQUEST,
        "SelfSubjectAccessReview" => SELF_SAR,
        "CertificateSigningRequest" => CSR,
        other => {
            return Err(ApiError::unsupported_media_type(format!(
                "protobuf bodies of kind {other:?} are not supported; send JSON"
            )))
        }
    };
    let raw = unknown
        .get("raw")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(raw)
        .map_err(|_| bad("raw object"))?;
    let mut obj = decode_message(&raw, schema)?;
    for key in ["apiVersion", "kind"] {
        if let Some(v) = type_meta.get(key) {
            obj.insert(key.to_string(), v.clone());
        }
    }
    Ok(Value::Object(obj))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The body `kubectl create namespace keep` sends (captured with -v=9).
    #[test]
    fn kubectl_create_namespace_body() {
        let body: &[u8] = &[
            0x6b, 0x38, 0x73, 0x00, 0x0a, 0x0f, 0x0a, 0x02, 0x76, 0x31, 0x12, 0x09, 0x4e, 0x61,
            0x6d, 0x65, 0x73, 0x70, 0x61, 0x63, 0x65, 0x12, 0x1c, 0x0a, 0x14, 0x0a, 0x04, 0x6b,
            0x65, 0x65, 0x70, 0x12, 0x00, 0x1a, 0x00, 0x22, 0x00, 0x2a, 0x00, 0x32, 0x00, 0x38,
            0x00, 0x42, 0x00, 0x12, 0x00, 0x1a, 0x02, 0x0a, 0x00, 0x1a, 0x00, 0x22, 0x00,
        ];
        let obj = decode(body).expect("decodes");
        assert_eq!(obj["kind"], "Namespace");
        assert_eq!(obj["apiVersion"], "v1");
        assert_eq!(obj["metadata"]["name"], "keep");
        assert_eq!(obj["spec"], json!({}));
    }

    #[test]
    fn maps_and_truncation() {
        // ConfigMap{metadata{name:"c"}, data{"k":"v"}}
        let raw: &[u8] = &[
            0x0a, 0x03, 0x0a, 0x01, b'c', 0x12, 0x06, 0x0a, 0x01, b'k', 0x12, 0x01, b'v',
        ];
        let mut body = b"k8s\0".to_vec();
        body.extend([0x0a, 0x0f, 0x0a, 0x02, b'v', b'1', 0x12, 0x09]);
        body.extend(b"ConfigMap");
        body.extend([0x12, raw.len() as u8]);
        body.extend(raw);
        let obj = decode(&body).expect("decodes");
        assert_eq!(obj["data"], json!({"k": "v"}));
        assert_eq!(
            decode(&body[..body.len() - 3]).map_err(|e| e.code),
            Err(400)
        );
        assert_eq!(decode(b"{}").map_err(|e| e.code), Err(400));
    }
}
