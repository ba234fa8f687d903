//! Builders from YAML fixtures to the objects the operator applies.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Container, EnvVar, PodSpec, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use meridian_api::{CacheCluster, CacheRegion};
use meridian_operator::Error;
use meridian_operator::resources::{self, BuildConfig, RegionResources};

const DEFAULT_IMAGE: &str = "ghcr.io/meridian-dev/meridian-node:0.1.0";

fn fixture<T: serde::de::DeserializeOwned>(name: &str) -> T {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn config() -> BuildConfig {
    BuildConfig {
        default_node_image: DEFAULT_IMAGE.to_string(),
        operator_namespace: Some("meridian-system".to_string()),
    }
}

fn build(cluster: &str, region: &str) -> (CacheCluster, CacheRegion, RegionResources) {
    let cluster: CacheCluster = fixture(cluster);
    let region: CacheRegion = fixture(region);
    let resources = {
        let plan = resources::validate(&cluster, &region).expect("fixture is valid");
        resources::build(&plan, &config())
    };
    (cluster, region, resources)
}

fn pod_spec(stateful_set: &StatefulSet) -> &PodSpec {
    stateful_set
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
}

fn node_container(stateful_set: &StatefulSet) -> &Container {
    &pod_spec(stateful_set).containers[0]
}

fn env<'a>(container: &'a Container, name: &str) -> &'a EnvVar {
    container
        .env
        .as_ref()
        .unwrap()
        .iter()
        .find(|var| var.name == name)
        .unwrap_or_else(|| panic!("env {name} missing"))
}

fn service<'a>(resources: &'a RegionResources, name: &str) -> &'a Service {
    resources
        .services
        .iter()
        .find(|service| service.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("service {name} missing"))
}

#[test]
fn one_statefulset_and_pdb_per_shard_with_stable_names() {
    let (_, _, resources) = build("cluster-orders.yaml", "region-orders-eu.yaml");
    let names: Vec<_> = resources
        .stateful_sets
        .iter()
        .map(|sts| sts.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["orders-eu-0", "orders-eu-1", "orders-eu-2"]);
    let pdbs: Vec<_> = resources
        .pod_disruption_budgets
        .iter()
        .map(|pdb| pdb.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(pdbs, names);
    for pdb in &resources.pod_disruption_budgets {
        let spec = pdb.spec.as_ref().unwrap();
        assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
        assert!(spec.min_available.is_none());
    }
    assert_eq!(
        resources.config_map.metadata.name.as_deref(),
        Some("orders-eu-config")
    );
    let services: Vec<_> = resources
        .services
        .iter()
        .map(|svc| svc.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(services, ["orders-eu-nodes", "orders-eu", "orders-eu-link"]);
}

#[test]
fn statefulset_spec_follows_the_design() {
    let (_, _, resources) = build("cluster-orders.yaml", "region-orders-eu.yaml");
    let sts = &resources.stateful_sets[1];
    let spec = sts.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(2), "1 primary + replicasPerShard");
    assert_eq!(spec.service_name.as_deref(), Some("orders-eu-nodes"));
    assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
    assert_eq!(
        spec.update_strategy.as_ref().unwrap().type_.as_deref(),
        Some("OnDelete")
    );
    let selector = spec.selector.match_labels.as_ref().unwrap();
    assert_eq!(selector["cache.meridian.dev/shard"], "1");
    assert_eq!(selector["cache.meridian.dev/cluster"], "orders");
    assert_eq!(selector["cache.meridian.dev/region"], "eu-west-1");
    let template_labels = spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .as_ref()
        .unwrap();
    for (key, value) in selector {
        assert_eq!(
            template_labels.get(key),
            Some(value),
            "selector ⊆ pod labels"
        );
    }
    assert_eq!(template_labels["app.kubernetes.io/name"], "meridian");
    assert_eq!(template_labels["app.kubernetes.io/instance"], "orders");
    assert_eq!(
        template_labels["app.kubernetes.io/managed-by"],
        "meridian-operator"
    );
    assert!(
        spec.template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()
            .contains_key("cache.meridian.dev/config-hash")
    );
}

#[test]
fn container_has_probes_security_resources_and_image() {
    let (_, _, resources) = build("cluster-orders.yaml", "region-orders-eu.yaml");
    let sts = &resources.stateful_sets[0];
    let pod = sts.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let container = node_container(sts);
    assert_eq!(
        container.image.as_deref(),
        Some("registry.example/meridian-node:dev")
    );
    assert_eq!(container.image_pull_policy.as_deref(), Some("IfNotPresent"));

    let readiness = container
        .readiness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(readiness.path.as_deref(), Some("/readyz"));
    assert_eq!(readiness.port, IntOrString::Int(9090));
    let liveness = container
        .liveness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(liveness.path.as_deref(), Some("/healthz"));
    assert_eq!(liveness.port, IntOrString::Int(9090));

    let security = container.security_context.as_ref().unwrap();
    assert_eq!(security.run_as_non_root, Some(true));
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(
        security.capabilities.as_ref().unwrap().drop.as_deref(),
        Some(&["ALL".to_string()][..])
    );
    assert_eq!(
        pod.security_context.as_ref().unwrap().run_as_non_root,
        Some(true)
    );
    assert_eq!(pod.automount_service_account_token, Some(false));

    let requests = container
        .resources
        .as_ref()
        .unwrap()
        .requests
        .as_ref()
        .unwrap();
    assert_eq!(requests["cpu"].0, "250m");
    assert_eq!(requests["memory"].0, "512Mi");

    let ports: BTreeMap<_, _> = container
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .map(|port| (port.name.clone().unwrap(), port.container_port))
        .collect();
    assert_eq!(ports["resp"], 6379);
    assert_eq!(ports["link"], 16379);
    assert_eq!(ports["http"], 8080);
    assert_eq!(ports["metrics"], 9090);
}

#[test]
fn env_binds_every_pod_address_and_reads_password_from_secret() {
    let (_, _, resources) = build("cluster-orders.yaml", "region-orders-eu.yaml");
    let container = node_container(&resources.stateful_sets[2]);
    // Listening on localhost too is what `kubectl port-forward` needs.
    assert!(
        container
            .env
            .as_ref()
            .unwrap()
            .iter()
            .all(|var| var.name != "MERIDIAN_BIND"),
        "the node must not be pinned to its pod IP"
    );
    let node_id = env(container, "MERIDIAN_NODE_ID");
    assert_eq!(
        node_id
            .value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap()
            .field_path,
        "metadata.name"
    );
    let password = env(container, "MERIDIAN_PASSWORD");
    let secret = password
        .value_from
        .as_ref()
        .unwrap()
        .secret_key_ref
        .as_ref()
        .unwrap();
    assert_eq!(secret.name, "orders-auth");
    assert_eq!(secret.key, "password");
    // replicas log in to their primary as the operator's replication user
    assert_eq!(
        env_secret(container, "MERIDIAN_PRIMARY_AUTH"),
        (
            "orders-internal-users".to_string(),
            "replication".to_string()
        )
    );
    assert_eq!(env(container, "MERIDIAN_SHARD").value.as_deref(), Some("2"));
    let env_from = container.env_from.as_ref().unwrap();
    assert_eq!(
        env_from[0].config_map_ref.as_ref().unwrap().name,
        "orders-eu-config"
    );

    let settings = resources.config_map.data.as_ref().unwrap();
    assert_eq!(settings["MERIDIAN_PORT"], "6379");
    assert_eq!(settings["MERIDIAN_METRICS_PORT"], "9090");
    assert_eq!(settings["MERIDIAN_MAXMEMORY"], (256u64 << 20).to_string());
    assert_eq!(settings["MERIDIAN_MAXMEMORY_POLICY"], "allkeys-lru");
    assert_eq!(settings["MERIDIAN_CONSISTENCY"], "strong");
    assert_eq!(settings["MERIDIAN_STRONG_TIMEOUT_MS"], "250");
    assert_eq!(settings["MERIDIAN_DEFAULT_TTL_SECONDS"], "3600");
    assert_eq!(settings["MERIDIAN_REGION"], "eu-west-1");
    assert_eq!(settings["MERIDIAN_MANAGED"], "true");
    assert!(
        !settings.values().any(|value| value.contains("secret")),
        "no secrets in the ConfigMap"
    );
    // authentication on: the ACL users from the Secret the reconcile writes
    assert_eq!(settings["MERIDIAN_ACL_FILE"], "/etc/meridian/acl/users.acl");
    assert_eq!(settings["MERIDIAN_PRIMARY_USER"], "meridian-replication");
    assert_eq!(settings["MERIDIAN_REGION_LINK_USER"], "meridian-link");
    assert_eq!(
        mounted_secret(&resources.stateful_sets[2], "acl"),
        Some("orders-eu-acl")
    );
    assert!(
        resources.acl_secret.is_none(),
        "built by the reconcile from the credentials"
    );
}

#[test]
fn minimal_cluster_gets_the_generated_password_and_uses_default_image() {
    let (cluster, region, resources) = build("cluster-minimal.yaml", "region-minimal.yaml");
    assert_eq!(resources.stateful_sets.len(), 2, "region overrides shards");
    let sts = &resources.stateful_sets[0];
    assert_eq!(sts.spec.as_ref().unwrap().replicas, Some(1));
    let container = node_container(sts);
    assert_eq!(container.image.as_deref(), Some(DEFAULT_IMAGE));
    // secure by default: no auth in the spec means the password the operator generates
    assert_eq!(
        env_secret(container, "MERIDIAN_PASSWORD"),
        (
            format!("{}-auth", cluster.metadata.name.as_deref().unwrap()),
            "password".to_string()
        )
    );

    // turning authentication off is explicit
    let mut open = cluster.clone();
    open.spec.auth = Some(meridian_api::AuthSpec {
        mode: meridian_api::AuthMode::Disabled,
        ..Default::default()
    });
    let plan = resources::validate(&open, &region).expect("valid");
    let unauthenticated = resources::build(&plan, &config());
    assert_eq!(
        unauthenticated.config_map.data.as_ref().unwrap()["MERIDIAN_PROTECTED_MODE"],
        "no",
        "nodes without a password serve the operator and clients beyond loopback"
    );
    assert!(
        !resources
            .config_map
            .data
            .as_ref()
            .unwrap()
            .contains_key("MERIDIAN_PROTECTED_MODE"),
        "with a password, protected mode stays on (and has nothing to refuse)"
    );
    assert!(
        !node_container(&unauthenticated.stateful_sets[0])
            .env
            .as_ref()
            .unwrap()
            .iter()
            .any(|var| var.name == "MERIDIAN_PASSWORD")
    );
    let settings = resources.config_map.data.as_ref().unwrap();
    assert!(!settings.contains_key("MERIDIAN_MAXMEMORY"));
    assert!(!settings.contains_key("MERIDIAN_REGION_REPLICATE_MAX_BYTES"));
    assert_eq!(settings["MERIDIAN_CROSS_REGION_MODE"], "invalidate");

    // replicate mode with its value bound: handed to the node in bytes
    let mut replicated = cluster.clone();
    replicated.spec.cross_region.mode = meridian_api::CrossRegionMode::Replicate;
    replicated.spec.cross_region.replicate_max_value_size = Some("1.5Mi".into());
    let plan = resources::validate(&replicated, &region).expect("valid");
    let replicated = resources::build(&plan, &config());
    let replicated = replicated.config_map.data.as_ref().unwrap();
    assert_eq!(replicated["MERIDIAN_CROSS_REGION_MODE"], "replicate");
    assert_eq!(
        replicated["MERIDIAN_REGION_REPLICATE_MAX_BYTES"],
        (3u64 << 19).to_string()
    );
    assert_eq!(settings["MERIDIAN_MAXMEMORY_POLICY"], "sieve");
    assert_eq!(
        settings["MERIDIAN_MANAGED"], "true",
        "every node the operator creates is managed"
    );
    let pod = sts.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert!(pod.node_selector.is_none());
    assert!(pod.tolerations.is_none());
    assert!(
        pod.runtime_class_name.is_none(),
        "the cluster's default runtime"
    );
    assert!(pod.affinity.as_ref().unwrap().node_affinity.is_none());
    let link = service(&resources, "demo-a-link");
    assert_eq!(
        link.spec.as_ref().unwrap().type_.as_deref(),
        Some("ClusterIP")
    );
}

#[test]
fn anti_affinity_spread_and_placement() {
    let (_, _, resources) = build("cluster-orders.yaml", "region-orders-eu.yaml");
    let pod = pod_spec(&resources.stateful_sets[0]);
    let affinity = pod.affinity.as_ref().unwrap();
    let anti = affinity.pod_anti_affinity.as_ref().unwrap();
    let required = anti
        .required_during_scheduling_ignored_during_execution
        .as_ref()
        .unwrap();
    assert_eq!(required.len(), 1);
    assert_eq!(required[0].topology_key, "kubernetes.io/hostname");
    let required_selector = required[0]
        .label_selector
        .as_ref()
        .unwrap()
        .match_labels
        .as_ref()
        .unwrap();
    assert_eq!(required_selector["cache.meridian.dev/shard"], "0");
    let preferred = anti
        .preferred_during_scheduling_ignored_during_execution
        .as_ref()
        .unwrap();
    assert_eq!(
        preferred[0].pod_affinity_term.topology_key,
        "topology.kubernetes.io/zone"
    );

    let spread = pod.topology_spread_constraints.as_ref().unwrap();
    assert_eq!(spread[0].topology_key, "topology.kubernetes.io/zone");
    assert_eq!(spread[0].max_skew, 1);

    let zones = &affinity
        .node_affinity
        .as_ref()
        .unwrap()
        .required_during_scheduling_ignored_during_execution
        .as_ref()
        .unwrap()
        .node_selector_terms[0]
        .match_expressions
        .as_ref()
        .unwrap()[0];
    assert_eq!(zones.key, "topology.kubernetes.io/zone");
    assert_eq!(zones.operator, "In");
    assert_eq!(
        zones.values.as_deref(),
        Some(&["eu-west-1a".to_string(), "eu-west-1b".to_string()][..])
    );
    assert_eq!(
        pod.node_selector.as_ref().unwrap()["topology.kubernetes.io/region"],
        "eu-west-1"
    );
    assert_eq!(
        pod.tolerations.as_ref().unwrap()[0].key.as_deref(),
        Some("dedicated")
    );
    assert_eq!(pod.runtime_class_name.as_deref(), Some("gvisor"));
}

#[test]
fn services_headless_client_and_link() {
    let (_, _, resources) = build("cluster-orders.yaml", "region-orders-eu.yaml");
    let headless = service(&resources, "orders-eu-nodes")
        .spec
        .as_ref()
        .unwrap();
    assert_eq!(headless.cluster_ip.as_deref(), Some("None"));
    assert_eq!(headless.publish_not_ready_addresses, Some(true));
    let client = service(&resources, "orders-eu").spec.as_ref().unwrap();
    assert_eq!(client.type_.as_deref(), Some("ClusterIP"));
    let client_ports: Vec<_> = client
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .map(|p| p.port)
        .collect();
    assert_eq!(client_ports, [6379, 8080]);
    let link = service(&resources, "orders-eu-link").spec.as_ref().unwrap();
    assert_eq!(link.type_.as_deref(), Some("LoadBalancer"));
    assert_eq!(link.ports.as_ref().unwrap()[0].port, 16379);
    for svc in &resources.services {
        let selector = svc.spec.as_ref().unwrap().selector.as_ref().unwrap();
        assert_eq!(selector["app.kubernetes.io/component"], "cache-node");
        assert!(!selector.contains_key("cache.meridian.dev/shard"));
    }
}

#[test]
fn every_object_is_labelled_and_controlled_by_the_region() {
    let (_, region, resources) = build("cluster-orders.yaml", "region-orders-eu.yaml");
    let mut metas = vec![&resources.config_map.metadata];
    metas.extend(resources.services.iter().map(|o| &o.metadata));
    metas.extend(resources.stateful_sets.iter().map(|o| &o.metadata));
    metas.extend(resources.pod_disruption_budgets.iter().map(|o| &o.metadata));
    assert_eq!(metas.len(), 1 + 3 + 3 + 3);
    for meta in metas {
        assert_eq!(meta.namespace.as_deref(), Some("shop"));
        let owners = meta.owner_references.as_ref().unwrap();
        assert_eq!(owners.len(), 1);
        assert_eq!(owners[0].kind, "CacheRegion");
        assert_eq!(owners[0].name, "orders-eu");
        assert_eq!(Some(&owners[0].uid), region.metadata.uid.as_ref());
        assert_eq!(owners[0].controller, Some(true));
        let labels = meta.labels.as_ref().unwrap();
        assert_eq!(labels["app.kubernetes.io/managed-by"], "meridian-operator");
        assert_eq!(labels["cache.meridian.dev/cluster"], "orders");
        assert_eq!(labels["cache.meridian.dev/region"], "eu-west-1");
    }
}

#[test]
fn region_owner_reference_to_cluster_is_not_a_controller() {
    let cluster: CacheCluster = fixture("cluster-orders.yaml");
    let owner = resources::cluster_owner_reference(&cluster).unwrap();
    assert_eq!(owner.kind, "CacheCluster");
    assert_eq!(owner.api_version, "cache.meridian.dev/v1alpha1");
    assert_eq!(owner.name, "orders");
    assert_eq!(owner.controller, None);
}

#[test]
fn build_is_deterministic_and_config_hash_tracks_settings() {
    let (mut cluster, region, first) = build("cluster-orders.yaml", "region-orders-eu.yaml");
    let again = resources::build(&resources::validate(&cluster, &region).unwrap(), &config());
    assert_eq!(first, again);
    let hash = |resources: &RegionResources| {
        resources.stateful_sets[0]
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()["cache.meridian.dev/config-hash"]
            .clone()
    };
    cluster.spec.memory.maxmemory = Some("1Gi".into());
    let changed = resources::build(&resources::validate(&cluster, &region).unwrap(), &config());
    assert_ne!(hash(&first), hash(&changed));
}

#[test]
fn validation_rejects_what_the_operator_cannot_satisfy() {
    let cluster: CacheCluster = fixture("cluster-minimal.yaml");
    let stray: CacheRegion = fixture("region-wrong-cluster.yaml");
    let error = resources::validate(&cluster, &stray).unwrap_err();
    assert!(matches!(error, Error::InvalidSpec(_)), "{error}");
    assert!(error.is_user_actionable());

    let mut region: CacheRegion = fixture("region-minimal.yaml");
    region.spec.shards = Some(0);
    assert!(matches!(
        resources::validate(&cluster, &region),
        Err(Error::InvalidSpec(_))
    ));
    region.spec.shards = Some(2);
    region.spec.replicas_per_shard = Some(-1);
    assert!(matches!(
        resources::validate(&cluster, &region),
        Err(Error::InvalidSpec(_))
    ));
    region.spec.replicas_per_shard = Some(1);
    region.metadata.name = Some("x".repeat(60));
    assert!(matches!(
        resources::validate(&cluster, &region),
        Err(Error::InvalidSpec(_))
    ));
    region.metadata.name = Some("demo-a".into());
    region.metadata.uid = None;
    assert!(matches!(
        resources::validate(&cluster, &region),
        Err(Error::MissingObjectField(_))
    ));
}

#[test]
fn tls_mounts_the_secret_and_tells_nodes_the_link_server_name() {
    let mut cluster: CacheCluster = fixture("cluster-minimal.yaml");
    let region: CacheRegion = fixture("region-minimal.yaml");
    cluster.spec.tls = Some(meridian_api::TlsSpec {
        secret_name: "orders-tls".into(),
        server_name: Some("link.orders.example.com".into()),
        require_peer_certificates: true,
    });
    let plan = resources::validate(&cluster, &region).expect("fixture is valid");
    let resources = resources::build(&plan, &config());
    let settings = resources.config_map.data.as_ref().unwrap();
    assert_eq!(settings["MERIDIAN_TLS_DIR"], resources::TLS_MOUNT_PATH);
    assert_eq!(
        settings["MERIDIAN_TLS_SERVER_NAME"],
        "link.orders.example.com"
    );
    assert_eq!(settings["MERIDIAN_TLS_REQUIRE_PEER_CERTS"], "true");
    assert_eq!(
        mounted_secret(&resources.stateful_sets[0], "tls"),
        Some("orders-tls")
    );

    // Without a server name, the nodes verify the dialed address instead.
    cluster.spec.tls = Some(meridian_api::TlsSpec {
        secret_name: "orders-tls".into(),
        server_name: None,
        require_peer_certificates: false,
    });
    let plan = resources::validate(&cluster, &region).expect("fixture is valid");
    let settings = resources::build(&plan, &config()).config_map.data.unwrap();
    assert!(settings.contains_key("MERIDIAN_TLS_DIR"));
    assert!(!settings.contains_key("MERIDIAN_TLS_SERVER_NAME"));
    assert!(!settings.contains_key("MERIDIAN_TLS_REQUIRE_PEER_CERTS"));
}

#[test]
fn fencing_sets_min_replicas_capped_at_the_regions_replicas() {
    let (mut cluster, region, unfenced) = build("cluster-orders.yaml", "region-orders-eu.yaml");
    let settings = unfenced.config_map.data.as_ref().unwrap();
    assert!(
        !settings.contains_key("MERIDIAN_MIN_REPLICAS_TO_WRITE"),
        "off by default"
    );
    cluster.spec.fencing = Some(meridian_api::FencingSpec {
        min_replicas: 5,
        max_lag_seconds: 2,
    });
    let plan = resources::validate(&cluster, &region).unwrap();
    let replicas = plan.replicas_per_shard;
    assert!(
        replicas < 5,
        "the fixture has fewer replicas than asked for"
    );
    let fenced = resources::build(&plan, &config());
    let settings = fenced.config_map.data.as_ref().unwrap();
    assert_eq!(
        settings["MERIDIAN_MIN_REPLICAS_TO_WRITE"],
        replicas.to_string()
    );
    assert_eq!(settings["MERIDIAN_MIN_REPLICAS_MAX_LAG"], "2");
}

#[test]
fn write_behind_reaches_the_nodes_only_when_on() {
    let (mut cluster, region, _) = build("cluster-orders.yaml", "region-orders-eu.yaml");
    cluster.spec.origin = Some(meridian_api::OriginSpec {
        url: "http://origin.example.com".into(),
        read_through: true,
        ..meridian_api::OriginSpec::default()
    });
    let plan = resources::validate(&cluster, &region).unwrap();
    let settings = resources::build(&plan, &config()).config_map.data.unwrap();
    assert!(!settings.contains_key("MERIDIAN_ORIGIN_WRITE_BEHIND"));
    assert!(!settings.contains_key("MERIDIAN_ORIGIN_WRITE_BEHIND_MAX_KEYS"));
    if let Some(origin) = cluster.spec.origin.as_mut() {
        origin.write_behind = true;
        origin.write_behind_max_keys = Some(5000);
    }
    let plan = resources::validate(&cluster, &region).unwrap();
    let settings = resources::build(&plan, &config()).config_map.data.unwrap();
    assert_eq!(settings["MERIDIAN_ORIGIN_WRITE_BEHIND"], "true");
    assert_eq!(settings["MERIDIAN_ORIGIN_WRITE_BEHIND_MAX_KEYS"], "5000");
    assert_eq!(settings["MERIDIAN_ORIGIN_WRITE_THROUGH"], "false");
}

/// The Secret the pod volume `name` of `stateful_set` mounts.
fn mounted_secret<'a>(stateful_set: &'a StatefulSet, name: &str) -> Option<&'a str> {
    pod_spec(stateful_set)
        .volumes
        .as_ref()?
        .iter()
        .find(|volume| volume.name == name)?
        .secret
        .as_ref()?
        .secret_name
        .as_deref()
}

/// `(Secret, key)` environment variable `name` of `container` is read from.
fn env_secret(container: &Container, name: &str) -> (String, String) {
    let selector = env(container, name)
        .value_from
        .as_ref()
        .and_then(|source| source.secret_key_ref.clone())
        .expect("read from a Secret");
    (selector.name, selector.key)
}

#[test]
fn a_region_link_exposed_outside_the_cluster_needs_tls_and_authentication() {
    let mut cluster: CacheCluster = fixture("cluster-orders.yaml");
    let region: CacheRegion = fixture("region-orders-eu.yaml");
    assert!(
        resources::validate(&cluster, &region).is_ok(),
        "TLS and a password"
    );
    let tls = cluster.spec.tls.take();
    let Err(Error::InvalidSpec(message)) = resources::validate(&cluster, &region) else {
        panic!("a LoadBalancer link without TLS was accepted");
    };
    assert!(
        message.contains("link.serviceType LoadBalancer exposes the region link")
            && message.contains("needs spec.tls and authentication"),
        "{message}"
    );
    cluster.spec.tls = tls;
    cluster.spec.auth = Some(meridian_api::AuthSpec {
        mode: meridian_api::AuthMode::Disabled,
        ..Default::default()
    });
    assert!(
        matches!(
            resources::validate(&cluster, &region),
            Err(Error::InvalidSpec(_))
        ),
        "a LoadBalancer link without authentication was accepted"
    );
}

#[test]
fn the_cache_pods_network_policy_admits_clients_the_operator_and_the_cluster() {
    let (mut cluster, region, resources) = build("cluster-minimal.yaml", "region-minimal.yaml");
    let policy = resources.network_policy.expect("on by default");
    let spec = policy.spec.unwrap();
    let selected = spec.pod_selector.unwrap().match_labels.unwrap();
    assert_eq!(selected["app.kubernetes.io/component"], "cache-node");
    assert_eq!(spec.policy_types.unwrap(), ["Ingress"]);
    let rules = spec.ingress.unwrap();
    let ports = |rule: &k8s_openapi::api::networking::v1::NetworkPolicyIngressRule| -> Vec<i32> {
        rule.ports
            .iter()
            .flatten()
            .map(|port| match port.port {
                Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(port)) => port,
                _ => panic!("numeric ports"),
            })
            .collect()
    };
    // clients: by default every pod of the namespace, on RESP and the HTTP API
    let clients = &rules[0];
    assert_eq!(ports(clients), [6379, 8080]);
    let everyone_here = &clients.from.as_ref().unwrap()[0];
    assert!(everyone_here.namespace_selector.is_none());
    assert_eq!(
        everyone_here
            .pod_selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref()
            .map(|labels| labels.len()),
        Some(0)
    );
    // the cluster's own pods, also on the link port
    assert_eq!(ports(&rules[1]), [6379, 8080, 16379]);
    // metrics and probes from anywhere
    assert!(rules[2].from.is_none() && ports(&rules[2]) == [9090]);
    // the operator, from its namespace
    let operator = &rules[3].from.as_ref().unwrap()[0];
    assert_eq!(
        operator
            .namespace_selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref()
            .unwrap()["kubernetes.io/metadata.name"],
        "meridian-system"
    );
    assert_eq!(ports(&rules[3]), [6379]);
    assert_eq!(
        rules.len(),
        4,
        "a ClusterIP link without peers is reached by the cluster only"
    );

    // an exposed link is reachable from anywhere on its port
    let (_, _, exposed) = build("cluster-orders.yaml", "region-orders-eu.yaml");
    let rules = exposed
        .network_policy
        .unwrap()
        .spec
        .unwrap()
        .ingress
        .unwrap();
    assert!(
        rules
            .iter()
            .any(|rule| rule.from.is_none() && ports(rule) == [16379])
    );

    // named clients replace the default; turned off, there is none
    let peer = k8s_openapi::api::networking::v1::NetworkPolicyPeer {
        namespace_selector: Some(Default::default()),
        ..Default::default()
    };
    cluster.spec.network_policy = Some(meridian_api::NetworkPolicySpec {
        enabled: true,
        clients: vec![peer.clone()],
    });
    let plan = resources::validate(&cluster, &region).unwrap();
    let built = resources::build(&plan, &config());
    let rules = built.network_policy.unwrap().spec.unwrap().ingress.unwrap();
    assert_eq!(rules[0].from.as_ref().unwrap(), &vec![peer]);
    cluster.spec.network_policy = Some(meridian_api::NetworkPolicySpec {
        enabled: false,
        clients: Vec::new(),
    });
    let plan = resources::validate(&cluster, &region).unwrap();
    assert!(resources::build(&plan, &config()).network_policy.is_none());
}
