//! Container environment (`makeEnvironmentVariables`): envFrom (ConfigMaps and Secrets,
//! prefixed, invalid names skipped), then env values with `$(VAR)` expansion against earlier
//! variables and service variables, downward API field and resource references,
//! configMapKeyRef and secretKeyRef; service variables the container does not define last.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};

use super::downward::{pod_field_value, resource_field_value};
use super::error::ConvertError;
use super::expansion::expand;
use super::service_env::service_env;
use super::{container_path, PodContext};
use crate::kubelet::api_objects::PodObjects;

/// The container's environment in declaration order (a later duplicate replaces the value
/// of the first), followed by service variables the container does not define.
pub fn container_env(
    pod: &Pod,
    container: &Container,
    ctx: &PodContext,
) -> Result<Vec<(String, String)>, ConvertError> {
    let base = container_path(pod, container);
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let objects: &PodObjects = &ctx.objects;
    let services = service_env(pod, objects.services());
    let mut env = OrderedEnv::default();
    for (i, from) in container.env_from.iter().flatten().enumerate() {
        let field = format!("{base}.envFrom[{i}]");
        for (name, value) in env_from_values(from, objects, namespace, &field)?.valid {
            env.set(&name, value);
        }
    }
    for var in container.env.iter().flatten() {
        let field = format!("{base}.env[{}]", var.name);
        let value = var.value.as_deref().unwrap_or_default();
        let resolved = if !value.is_empty() {
            expand(value, |name| {
                env.get(name).or_else(|| services.get(name)).cloned()
            })
        } else if let Some(source) = &var.value_from {
            if let Some(selector) = &source.field_ref {
                pod_field_value(
                    pod,
                    &ctx.node.host_ips,
                    &ctx.pod_ips,
                    selector,
                    &format!("{field}.valueFrom.fieldRef"),
                )?
            } else if let Some(selector) = &source.resource_field_ref {
                resource_field_value(
                    pod,
                    container,
                    selector,
                    &ctx.node,
                    &format!("{field}.valueFrom.resourceFieldRef"),
                )?
            } else if let Some(cm) = &source.config_map_key_ref {
                let field = format!("{field}.valueFrom.configMapKeyRef");
                let optional = cm.optional.unwrap_or(false);
                let Some(map) = objects.config_map(&cm.name) else {
                    if optional {
                        continue;
                    }
                    return Err(ConvertError::missing(
                        field,
                        format!("configmap {:?} not found", cm.name),
                    ));
                };
                match map.data.as_ref().and_then(|d| d.get(&cm.key)) {
                    Some(v) => v.clone(),
                    None if optional => continue,
                    None => {
                        return Err(ConvertError::missing(
                            field,
                            format!(
                                "couldn't find key {} in ConfigMap {namespace}/{}",
                                cm.key, cm.name
                            ),
                        ))
                    }
                }
            } else if let Some(sk) = &source.secret_key_ref {
                let field = format!("{field}.valueFrom.secretKeyRef");
                let optional = sk.optional.unwrap_or(false);
                let Some(secret) = objects.secret(&sk.name) else {
                    if optional {
                        continue;
                    }
                    return Err(ConvertError::missing(
                        field,
                        format!("secret {:?} not found", sk.name),
                    ));
                };
                match secret.data.as_ref().and_then(|d| d.get(&sk.key)) {
                    Some(v) => String::from_utf8_lossy(&v.0).into_owned(),
                    None if optional => continue,
                    None => {
                        return Err(ConvertError::missing(
                            field,
                            format!(
                                "couldn't find key {} in Secret {namespace}/{}",
                                sk.key, sk.name
                            ),
                        ))
                    }
                }
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        env.set(&var.name, resolved);
    }
    for (name, value) in &services {
        if env.get(name).is_none() {
            env.set(name, value.clone());
        }
    }
    Ok(env.vars)
}

/// The kubelet's `InvalidEnvironmentVariableNames` warnings for the container: one message
/// per envFrom source whose keys (with the prefix) are not valid variable names.
pub fn invalid_env_from_keys(
    pod: &Pod,
    container: &Container,
    objects: &PodObjects,
) -> Vec<String> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut out = Vec::new();
    for from in container.env_from.iter().flatten() {
        let Ok(values) = env_from_values(from, objects, namespace, "") else {
            continue;
        };
        if values.invalid.is_empty() {
            continue;
        }
        let (kind, name) = match (&from.config_map_ref, &from.secret_ref) {
            (Some(cm), _) => ("configMap", cm.name.as_str()),
            (None, Some(s)) => ("secret", s.name.as_str()),
            (None, None) => continue,
        };
        out.push(format!(
            "Keys [{}] from the EnvFrom {kind} {namespace}/{name} were skipped since they are considered invalid environment variable names.",
            values.invalid.join(", ")
        ));
    }
    out
}

/// The variables one envFrom source yields, and its (prefixed) keys that are not valid names.
struct EnvFromValues {
    valid: Vec<(String, String)>,
    invalid: Vec<String>,
}

fn env_from_values(
    from: &k8s_openapi::api::core::v1::EnvFromSource,
    objects: &PodObjects,
    namespace: &str,
    field: &str,
) -> Result<EnvFromValues, ConvertError> {
    let prefix = from.prefix.as_deref().unwrap_or("");
    let mut pairs: Vec<(String, String)> = Vec::new();
    if let Some(cm) = &from.config_map_ref {
        match objects.config_map(&cm.name) {
            Some(map) => pairs.extend(
                map.data
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.clone())),
            ),
            None if cm.optional.unwrap_or(false) => {}
            None => {
                return Err(ConvertError::missing(
                    format!("{field}.configMapRef"),
                    format!("configmap {:?} not found in namespace {namespace}", cm.name),
                ))
            }
        }
    } else if let Some(secret) = &from.secret_ref {
        match objects.secret(&secret.name) {
            Some(s) => pairs.extend(
                s.data
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned())),
            ),
            None if secret.optional.unwrap_or(false) => {}
            None => {
                return Err(ConvertError::missing(
                    format!("{field}.secretRef"),
                    format!(
                        "secret {:?} not found in namespace {namespace}",
                        secret.name
                    ),
                ))
            }
        }
    }
    let mut out = EnvFromValues {
        valid: Vec::new(),
        invalid: Vec::new(),
    };
    for (key, value) in pairs {
        let name = format!("{prefix}{key}");
        if is_env_var_name(&name) {
            out.valid.push((name, value));
        } else {
            out.invalid.push(name);
        }
    }
    out.invalid.sort();
    Ok(out)
}

/// apimachinery's `IsEnvVarName`: `[-._a-zA-Z][-._a-zA-Z0-9]*`.
fn is_env_var_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    let ok = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.';
    match bytes.next() {
        Some(first) if ok(first) && !first.is_ascii_digit() => bytes.all(ok),
        _ => false,
    }
}

/// Variables in first-declaration order with last-declaration values.
#[derive(Default)]
struct OrderedEnv {
    vars: Vec<(String, String)>,
    index: BTreeMap<String, usize>,
}

impl OrderedEnv {
    fn get(&self, name: &str) -> Option<&String> {
        self.index
            .get(name)
            .and_then(|&i| self.vars.get(i))
            .map(|(_, v)| v)
    }

    fn set(&mut self, name: &str, value: String) {
        match self.index.get(name).and_then(|&i| self.vars.get_mut(i)) {
            Some(slot) => slot.1 = value,
            None => {
                self.index.insert(name.to_owned(), self.vars.len());
                self.vars.push((name.to_owned(), value));
            }
        }
    }
}

#[cfg(test)]
mod tests;
