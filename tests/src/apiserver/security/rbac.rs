//! RBAC-lite: one small rule table standing in for the default cluster roles and the bindings
//! kubeadm creates. A request is allowed when any rule matches it.

use super::bootstrap::{BOOTSTRAPPERS, KUBEADM_NODE_GROUP};
use super::{User, ANONYMOUS, AUTHENTICATED};

/// Who a rule applies to.
enum Who {
    /// Everyone, anonymous included.
    Everyone,
    /// Members of a group.
    Group(&'static str),
    /// A service account, only within its own namespace.
    ServiceAccountInOwnNamespace,
    /// system:masters, system:nodes (no Node authorizer here), and every authenticated user
    /// that is neither a bootstrap token nor a service account.
    Unrestricted,
}

/// What a rule covers.
enum What {
    /// Any resource or path.
    Anything,
    /// These resources (no subresource), optionally one namespace/name.
    Resources {
        resources: &'static [&'static str],
        namespace: Option<&'static str>,
        name: Option<&'static str>,
    },
    /// Every resource except these (no subresource).
    AllResourcesBut(&'static [&'static str]),
    /// Non-resource URL paths: exact, or a prefix when ending in `*`.
    Paths(&'static [&'static str]),
}

struct Rule {
    who: Who,
    verbs: &'static [&'static str],
    what: What,
}

const READ: &[&str] = &["get", "list", "watch"];
/// system:discovery + system:public-info-viewer (granted to anonymous here so `kubectl`
/// without credentials can discover the cluster-info ConfigMap).
const DISCOVERY: &[&str] = &[
    "/api",
    "/api/*",
    "/apis",
    "/apis/*",
    "/version",
    "/version/",
    "/healthz",
    "/livez",
    "/readyz",
    "/openapi",
    "/openapi/*",
];

const RULES: &[Rule] = &[
    Rule {
        who: Who::Unrestricted,
        verbs: &["*"],
        what: What::Anything,
    },
    Rule {
        who: Who::Everyone,
        verbs: &["get", "head"],
        what: What::Paths(DISCOVERY),
    },
    // kubeadm's Role kube-public/kubeadm:bootstrap-signer-clusterinfo, bound to system:anonymous.
    Rule {
        who: Who::Everyone,
        verbs: &["get"],
        what: What::Resources {
            resources: &["configmaps"],
            namespace: Some("kube-public"),
            name: Some("cluster-info"),
        },
    },
    // system:node-bootstrapper, bound by kubeadm to system:bootstrappers.
    Rule {
        who: Who::Group(BOOTSTRAPPERS),
        verbs: &["create", "get", "list", "watch"],
        what: What::Resources {
            resources: &["certificatesigningrequests"],
            namespace: None,
            name: None,
        },
    },
    // kubeadm:get-nodes, so `kubeadm join` can check for a node of the same name.
    Rule {
        who: Who::Group(KUBEADM_NODE_GROUP),
        verbs: &["get"],
        what: What::Resources {
            resources: &["nodes"],
            namespace: None,
            name: None,
        },
    },
    Rule {
        who: Who::ServiceAccountInOwnNamespace,
        verbs: READ,
        what: What::AllResourcesBut(&["secrets"]),
    },
    // system:auth-delegator for service accounts.
    Rule {
        who: Who::Group("system:serviceaccounts"),
        verbs: &["create"],
        what: What::Resources {
            resources: &["tokenreviews", "subjectaccessreviews"],
            namespace: None,
            name: None,
        },
    },
    // system:basic-user.
    Rule {
        who: Who::Group(AUTHENTICATED),
        verbs: &["create"],
        what: What::Resources {
            resources: &[
                "selfsubjectaccessreviews",
                "selfsubjectrulesreviews",
                "selfsubjectreviews",
            ],
            namespace: None,
            name: None,
        },
    },
];

/// One request's attributes. `resource` "" means a non-resource request and `name` its path.
pub(super) struct Attributes<'a> {
    pub(super) verb: &'a str,
    pub(super) resource: &'a str,
    pub(super) subresource: &'a str,
    pub(super) namespace: &'a str,
    pub(super) name: &'a str,
}

/// True when some rule allows `user` (None = anonymous) to do `attrs`.
pub(super) fn allowed(user: Option<&User>, attrs: &Attributes<'_>) -> bool {
    RULES
        .iter()
        .any(|rule| applies_to(&rule.who, user, attrs.namespace) && covers(rule, attrs))
}

fn applies_to(who: &Who, user: Option<&User>, namespace: &str) -> bool {
    let user = user.filter(|u| u.name != ANONYMOUS);
    let in_group = |g: &str| user.is_some_and(|u| u.groups.iter().any(|x| x == g));
    match who {
        Who::Everyone => true,
        Who::Group(group) => in_group(group),
        Who::ServiceAccountInOwnNamespace => user
            .and_then(|u| u.name.strip_prefix("system:serviceaccount:"))
            .and_then(|rest| rest.split_once(':'))
            .is_some_and(|(ns, _)| !namespace.is_empty() && ns == namespace),
        Who::Unrestricted => {
            in_group("system:masters")
                || in_group("system:nodes")
                || (user.is_some()
                    && !in_group(BOOTSTRAPPERS)
                    && !in_group("system:serviceaccounts")
                    && !user.is_some_and(|u| u.name.starts_with("system:serviceaccount:")))
        }
    }
}

fn covers(rule: &Rule, attrs: &Attributes<'_>) -> bool {
    if !rule.verbs.iter().any(|v| *v == "*" || *v == attrs.verb) {
        return false;
    }
    let is_resource = !attrs.resource.is_empty();
    match &rule.what {
        What::Anything => true,
        What::Paths(paths) => {
            !is_resource
                && paths.iter().any(|p| match p.strip_suffix('*') {
                    Some(prefix) => attrs.name.starts_with(prefix),
                    None => attrs.name == *p,
                })
        }
        What::Resources {
            resources,
            namespace,
            name,
        } => {
            is_resource
                && attrs.subresource.is_empty()
                && resources.contains(&attrs.resource)
                && namespace.is_none_or(|ns| ns == attrs.namespace)
                && name.is_none_or(|n| n == attrs.name)
        }
        What::AllResourcesBut(excluded) => {
            is_resource && attrs.subresource.is_empty() && !excluded.contains(&attrs.resource)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, groups: &[&str]) -> User {
        User {
            name: name.to_owned(),
            uid: String::new(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    fn can(
        user: Option<&User>,
        verb: &str,
        resource: &str,
        sub: &str,
        ns: &str,
        name: &str,
    ) -> bool {
        allowed(
            user,
            &Attributes {
                verb,
                resource,
                subresource: sub,
                namespace: ns,
                name,
            },
        )
    }

    #[test]
    fn anonymous_reads_cluster_info_and_discovery_only() {
        assert!(can(
            None,
            "get",
            "configmaps",
            "",
            "kube-public",
            "cluster-info"
        ));
        assert!(can(None, "get", "", "", "", "/version"));
        assert!(can(None, "get", "", "", "", "/apis/apps/v1"));
        assert!(!can(None, "get", "", "", "", "/metrics"));
        assert!(!can(None, "list", "configmaps", "", "kube-public", ""));
        assert!(!can(None, "get", "configmaps", "", "kube-public", "other"));
        assert!(!can(None, "get", "pods", "", "default", "x"));
        let anon = user(ANONYMOUS, &["system:unauthenticated"]);
        assert!(!can(Some(&anon), "get", "pods", "", "default", "x"));
    }

    #[test]
    fn bootstrappers_handle_csrs_only() {
        let b = user(
            "system:bootstrap:abcdef",
            &[BOOTSTRAPPERS, KUBEADM_NODE_GROUP, AUTHENTICATED],
        );
        for verb in ["create", "get", "list", "watch"] {
            assert!(
                can(Some(&b), verb, "certificatesigningrequests", "", "", ""),
                "{verb}"
            );
        }
        assert!(!can(
            Some(&b),
            "update",
            "certificatesigningrequests",
            "approval",
            "",
            "c"
        ));
        assert!(!can(
            Some(&b),
            "delete",
            "certificatesigningrequests",
            "",
            "",
            "c"
        ));
        assert!(!can(Some(&b), "list", "pods", "", "", ""));
        assert!(can(Some(&b), "get", "nodes", "", "", "n1"));
        assert!(!can(Some(&b), "list", "nodes", "", "", ""));
    }

    #[test]
    fn masters_nodes_and_ordinary_users_may_do_anything() {
        for u in [
            user("admin", &["system:masters", AUTHENTICATED]),
            user("system:node:n1", &["system:nodes", AUTHENTICATED]),
            user("alice", &[AUTHENTICATED]),
        ] {
            assert!(
                can(Some(&u), "delete", "pods", "", "default", "x"),
                "{}",
                u.name
            );
            assert!(can(
                Some(&u),
                "update",
                "certificatesigningrequests",
                "approval",
                "",
                "c"
            ));
            assert!(can(Some(&u), "get", "", "", "", "/metrics"));
        }
    }

    #[test]
    fn service_accounts_read_their_namespace() {
        let sa = super::super::serviceaccount::service_account_user("ns1", "builder", "u");
        assert!(can(Some(&sa), "list", "pods", "", "ns1", ""));
        assert!(can(Some(&sa), "get", "configmaps", "", "ns1", "c"));
        assert!(!can(Some(&sa), "get", "secrets", "", "ns1", "s"));
        assert!(!can(Some(&sa), "list", "pods", "", "ns2", ""));
        assert!(!can(Some(&sa), "list", "pods", "", "", ""));
        assert!(!can(Some(&sa), "delete", "pods", "", "ns1", "p"));
        assert!(can(Some(&sa), "create", "tokenreviews", "", "", ""));
        assert!(can(
            Some(&sa),
            "create",
            "selfsubjectaccessreviews",
            "",
            "",
            ""
        ));
        assert!(can(Some(&sa), "get", "", "", "", "/api"));
    }
}
