//! The table of kinds the API test server serves: group, version, plural, kind, scope, status.

/// One served resource type.
#[derive(Debug, PartialEq, Eq)]
pub struct Kind {
    /// Storage key: the plural for the first resource of that plural, `plural.group` otherwise.
    pub key: &'static str,
    /// API group ("" for core).
    pub group: &'static str,
    /// API version within the group.
    pub version: &'static str,
    /// Plural lower-case resource name.
    pub plural: &'static str,
    /// Singular lower-case resource name.
    pub singular: &'static str,
    /// `kind` of one object.
    pub kind: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Whether the resource has a `/status` subresource (its main resource then ignores `.status`).
    pub status: bool,
    /// kubectl short names.
    pub short_names: &'static [&'static str],
}

/// Builds a table row: key, group, version, plural, singular, kind, namespaced, status, short names.
macro_rules! kind {
    ($key:expr, $group:expr, $version:expr, $plural:expr, $singular:expr, $kind:expr, $namespaced:expr, $status:expr, $short:expr $(,)?) => {
        Kind {
            key: $key,
            group: $group,
            version: $version,
            plural: $plural,
            singular: $singular,
            kind: $kind,
            namespaced: $namespaced,
            status: $status,
            short_names: $short,
        }
    };
}

/// Every served kind; the first kind of a plural is the one plain names (`"events"`) refer to.
pub static KINDS: &[Kind] = &[
    kind!(
        "namespaces",
        "",
        "v1",
        "namespaces",
        "namespace",
        "Namespace",
        false,
        true,
        &["ns"]
    ),
    kind!(
        "nodes",
        "",
        "v1",
        "nodes",
        "node",
        "Node",
        false,
        true,
        &["no"]
    ),
    kind!("pods", "", "v1", "pods", "pod", "Pod", true, true, &["po"]),
    kind!(
        "events",
        "",
        "v1",
        "events",
        "event",
        "Event",
        true,
        false,
        &["ev"]
    ),
    kind!(
        "configmaps",
        "",
        "v1",
        "configmaps",
        "configmap",
        "ConfigMap",
        true,
        false,
        &["cm"]
    ),
    kind!(
        "secrets",
        "",
        "v1",
        "secrets",
        "secret",
        "Secret",
        true,
        false,
        &[]
    ),
    kind!(
        "services",
        "",
        "v1",
        "services",
        "service",
        "Service",
        true,
        true,
        &["svc"]
    ),
    kind!(
        "serviceaccounts",
        "",
        "v1",
        "serviceaccounts",
        "serviceaccount",
        "ServiceAccount",
        true,
        false,
        &["sa"]
    ),
    kind!(
        "leases",
        "coordination.k8s.io",
        "v1",
        "leases",
        "lease",
        "Lease",
        true,
        false,
        &[]
    ),
    kind!(
        "events.events.k8s.io",
        "events.k8s.io",
        "v1",
        "events",
        "event",
        "Event",
        true,
        false,
        &["ev"]
    ),
    kind!(
        "endpointslices",
        "discovery.k8s.io",
        "v1",
        "endpointslices",
        "endpointslice",
        "EndpointSlice",
        true,
        false,
        &[]
    ),
    kind!(
        "certificatesigningrequests",
        "certificates.k8s.io",
        "v1",
        "certificatesigningrequests",
        "certificatesigningrequest",
        "CertificateSigningRequest",
        false,
        true,
        &["csr"],
    ),
    kind!(
        "tokenreviews",
        "authentication.k8s.io",
        "v1",
        "tokenreviews",
        "tokenreview",
        "TokenReview",
        false,
        false,
        &[]
    ),
    kind!(
        "subjectaccessreviews",
        "authorization.k8s.io",
        "v1",
        "subjectaccessreviews",
        "subjectaccessreview",
        "SubjectAccessReview",
        false,
        false,
        &[],
    ),
    kind!(
        "selfsubjectaccessreviews",
        "authorization.k8s.io",
        "v1",
        "selfsubjectaccessreviews",
        "selfsubjectaccessreview",
        "SelfSubjectAccessReview",
        false,
        false,
        &[],
    ),
];

impl Kind {
    /// `apiVersion` of objects of this kind (`v1`, `coordination.k8s.io/v1`).
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Reviews are create-only virtual resources: nothing is stored.
    pub fn is_review(&self) -> bool {
        self.plural.ends_with("reviews")
    }

    /// Subresources served besides the main resource.
    pub fn subresources(&self) -> &'static [&'static str] {
        match self.key {
            "pods" => &["status", "binding"],
            "serviceaccounts" => &["token"],
            "certificatesigningrequests" => &["status", "approval"],
            _ if self.status => &["status"],
            _ => &[],
        }
    }

    /// Verbs advertised in discovery.
    pub fn verbs(&self) -> &'static [&'static str] {
        if self.is_review() {
            &["create"]
        } else {
            &[
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch",
            ]
        }
    }
}

/// The kind served at `group/version/plural`.
pub fn lookup(group: &str, version: &str, plural: &str) -> Option<&'static Kind> {
    KINDS
        .iter()
        .find(|k| k.group == group && k.version == version && k.plural == plural)
}

/// The kind a plain resource name refers to: a storage key (`"events.events.k8s.io"`) or the first kind with that plural.
pub fn by_name(name: &str) -> Option<&'static Kind> {
    KINDS
        .iter()
        .find(|k| k.key == name)
        .or_else(|| KINDS.iter().find(|k| k.plural == name))
}

/// The group/versions served, in discovery order (core excluded).
pub fn groups() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&'static str, &'static str)> = Vec::new();
    for k in KINDS.iter().filter(|k| !k.group.is_empty()) {
        if !out.contains(&(k.group, k.version)) {
            out.push((k.group, k.version));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_pick_the_core_kind_and_keys_are_unique() {
        assert_eq!(by_name("events").map(|k| k.group), Some(""));
        assert_eq!(
            by_name("events.events.k8s.io").map(|k| k.group),
            Some("events.k8s.io")
        );
        assert_eq!(
            lookup("coordination.k8s.io", "v1", "leases").map(|k| k.kind),
            Some("Lease")
        );
        let mut keys: Vec<_> = KINDS.iter().map(|k| k.key).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), KINDS.len());
        assert!(groups().contains(&("certificates.k8s.io", "v1")));
    }
}
