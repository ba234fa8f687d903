//! The permissions the operator needs, per resource, and why.
//!
//! `charts/meridian/templates/rbac.yaml` must grant exactly these; the test below
//! parses the chart file and fails when the two drift apart.
//!
//! | API group | resources | verbs | used for |
//! |---|---|---|---|
//! | cache.meridian.dev | cacheclusters, cacheregions | get list watch patch | controllers; owner reference CacheRegion → CacheCluster |
//! | cache.meridian.dev | cacheclusters/status, cacheregions/status | get patch update | server-side applied status |
//! | cache.meridian.dev | cacheregions/finalizers | update | `blockOwnerDeletion` on owned objects |
//! | apps | statefulsets | get list watch create update patch delete | one per shard; scale-in |
//! | "" | services, configmaps | get list watch create update patch delete | headless/client/link Services, node settings |
//! | policy | poddisruptionbudgets | get list watch create update patch delete | one per shard |
//! | "" | pods | get list watch delete | readiness and IPs; delete for failover |
//! | "" | secrets | get create patch | auth password, TLS CA; the generated password Secrets, the nodes' ACL file |
//! | networking.k8s.io | networkpolicies | get create patch delete | one per region for its cache pods |
//! | events.k8s.io | events | create patch | one Recorder |
//! | coordination.k8s.io (Role) | leases | get create update | leader election |

/// One RBAC rule: API group, resources, verbs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    pub api_group: &'static str,
    pub resources: &'static [&'static str],
    pub verbs: &'static [&'static str],
}

const CRUD: &[&str] = &[
    "get", "list", "watch", "create", "update", "patch", "delete",
];

/// Rules of the ClusterRole `meridian-operator`.
pub const CLUSTER_RULES: &[Rule] = &[
    Rule {
        api_group: "cache.meridian.dev",
        resources: &["cacheclusters", "cacheregions"],
        verbs: &["get", "list", "watch", "patch"],
    },
    Rule {
        api_group: "cache.meridian.dev",
        resources: &["cacheclusters/status", "cacheregions/status"],
        verbs: &["get", "patch", "update"],
    },
    Rule {
        api_group: "cache.meridian.dev",
        resources: &["cacheregions/finalizers"],
        verbs: &["update"],
    },
    Rule {
        api_group: "apps",
        resources: &["statefulsets"],
        verbs: CRUD,
    },
    Rule {
        api_group: "",
        resources: &["services", "configmaps"],
        verbs: CRUD,
    },
    Rule {
        api_group: "policy",
        resources: &["poddisruptionbudgets"],
        verbs: CRUD,
    },
    Rule {
        api_group: "",
        resources: &["pods"],
        verbs: &["get", "list", "watch", "delete"],
    },
    Rule {
        api_group: "",
        resources: &["secrets"],
        verbs: &["get", "create", "patch"],
    },
    Rule {
        api_group: "networking.k8s.io",
        resources: &["networkpolicies"],
        verbs: &["get", "create", "patch", "delete"],
    },
    Rule {
        api_group: "events.k8s.io",
        resources: &["events"],
        verbs: &["create", "patch"],
    },
];

/// Rules of the namespaced Role for leader election.
pub const LEADER_ELECTION_RULES: &[Rule] = &[Rule {
    api_group: "coordination.k8s.io",
    resources: &["leases"],
    verbs: &["get", "create", "update"],
}];

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Role};
    use serde::Deserialize;

    use super::*;

    /// (group, resource, verb) triples: order-insensitive comparison.
    fn flatten_expected(rules: &[Rule]) -> BTreeSet<(String, String, String)> {
        rules
            .iter()
            .flat_map(|rule| {
                rule.resources.iter().flat_map(move |resource| {
                    rule.verbs.iter().map(move |verb| {
                        (
                            rule.api_group.to_string(),
                            resource.to_string(),
                            verb.to_string(),
                        )
                    })
                })
            })
            .collect()
    }

    fn flatten_actual(rules: &[PolicyRule]) -> BTreeSet<(String, String, String)> {
        let mut triples = BTreeSet::new();
        for rule in rules {
            for group in rule.api_groups.iter().flatten() {
                for resource in rule.resources.iter().flatten() {
                    for verb in &rule.verbs {
                        triples.insert((group.clone(), resource.clone(), verb.clone()));
                    }
                }
            }
        }
        triples
    }

    fn chart_documents() -> Vec<serde_yaml::Value> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/charts/meridian/templates/rbac.yaml"
        );
        let text = std::fs::read_to_string(path).expect("rbac.yaml is readable");
        // both branches of `{{- if }}` blocks, each a document: the template directives
        // are not YAML
        let text: String = text
            .lines()
            .filter_map(|line| match line.trim() {
                "{{- else }}" => Some("---\n".to_string()),
                directive if directive.starts_with("{{-") => None,
                _ => Some(format!("{line}\n")),
            })
            .collect();
        serde_yaml::Deserializer::from_str(&text)
            .map(|document| serde_yaml::Value::deserialize(document).expect("valid YAML"))
            .collect()
    }

    fn of_kind(documents: &[serde_yaml::Value], kind: &str) -> Vec<serde_yaml::Value> {
        documents
            .iter()
            .filter(|document| document["kind"].as_str() == Some(kind))
            .cloned()
            .collect()
    }

    #[test]
    fn chart_cluster_role_matches_the_rules_in_code() {
        let documents = chart_documents();
        let roles = of_kind(&documents, "ClusterRole");
        assert_eq!(roles.len(), 1, "exactly one ClusterRole");
        let role: ClusterRole = serde_yaml::from_value(roles[0].clone()).expect("ClusterRole");
        assert_eq!(role.metadata.name.as_deref(), Some("meridian-operator"));
        assert_eq!(
            flatten_actual(role.rules.as_deref().unwrap_or_default()),
            flatten_expected(CLUSTER_RULES)
        );
    }

    #[test]
    fn chart_lease_role_matches_and_is_namespaced() {
        let documents = chart_documents();
        let roles = of_kind(&documents, "Role");
        assert_eq!(roles.len(), 1, "exactly one Role");
        let role: Role = serde_yaml::from_value(roles[0].clone()).expect("Role");
        assert_eq!(
            flatten_actual(role.rules.as_deref().unwrap_or_default()),
            flatten_expected(LEADER_ELECTION_RULES)
        );
        // Leases must not be granted cluster-wide.
        assert!(
            !flatten_expected(CLUSTER_RULES)
                .iter()
                .any(|(_, resource, _)| resource == "leases")
        );
    }

    #[test]
    fn bindings_point_at_the_service_account() {
        let documents = chart_documents();
        assert_eq!(of_kind(&documents, "ServiceAccount").len(), 1);
        // one ClusterRoleBinding (all namespaces), or a RoleBinding of the ClusterRole in
        // the watched namespace; and the leader election's RoleBinding
        assert_eq!(of_kind(&documents, "ClusterRoleBinding").len(), 1);
        let role_bindings = of_kind(&documents, "RoleBinding");
        assert_eq!(role_bindings.len(), 2);
        for binding in of_kind(&documents, "ClusterRoleBinding")
            .iter()
            .chain(&role_bindings)
        {
            let subject = &binding["subjects"][0];
            assert_eq!(subject["kind"].as_str(), Some("ServiceAccount"));
            assert_eq!(subject["name"].as_str(), Some("meridian-operator"));
        }
        assert!(
            role_bindings
                .iter()
                .any(
                    |binding| binding["roleRef"]["kind"].as_str() == Some("ClusterRole")
                        && binding["metadata"]["namespace"]
                            .as_str()
                            .is_some_and(|namespace| namespace.contains("watchNamespace"))
                ),
            "watching one namespace binds the rules there only"
        );
    }
}
