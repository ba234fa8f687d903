//! Pure builders: `CacheCluster` + `CacheRegion` → the Kubernetes objects of one region.
//!
//! No client in here: [`validate`] turns the two custom resources into a [`RegionPlan`]
//! (or says why the spec cannot be satisfied) and [`build`] renders every object the
//! operator applies. Both are unit-tested from YAML fixtures.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMap, ConfigMapEnvSource, Container, ContainerPort,
    EmptyDirVolumeSource, EnvFromSource, EnvVar, EnvVarSource, HTTPGetAction, NodeAffinity,
    NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, ObjectFieldSelector, PodAffinityTerm,
    PodAntiAffinity, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements,
    SeccompProfile, Secret, SecretKeySelector, SecretVolumeSource, SecurityContext, Service,
    ServicePort, ServiceSpec, TopologySpreadConstraint, Volume, VolumeMount,
    WeightedPodAffinityTerm,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use meridian_api::{CacheCluster, CacheRegion, LinkServiceType, labels, ports};

use crate::Error;
use crate::names;

/// Label key of the zone a node runs in.
pub const ZONE_KEY: &str = "topology.kubernetes.io/zone";
/// Label key of the node's host name.
pub const HOSTNAME_KEY: &str = "kubernetes.io/hostname";
/// Where the TLS Secret is mounted when the cluster sets `spec.tls`.
pub const TLS_MOUNT_PATH: &str = "/etc/meridian/tls";
/// Non-root user the node runs as (distroless `nonroot`).
pub const NODE_USER_ID: i64 = 65532;

/// Operator-wide settings the builders need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildConfig {
    /// Node image used when the CacheCluster does not set `spec.image`.
    pub default_node_image: String,
    /// The operator's own namespace (its pods may reach the cache pods' RESP port
    /// through their NetworkPolicy); None when it runs outside the cluster.
    pub operator_namespace: Option<String>,
}

/// A `CacheRegion` checked against its `CacheCluster`: everything the builders and the
/// orchestration need, with the effective (defaulted) sizes.
#[derive(Clone, Debug)]
pub struct RegionPlan<'a> {
    pub cluster: &'a CacheCluster,
    pub region: &'a CacheRegion,
    pub namespace: String,
    /// `metadata.name` of the CacheRegion: prefix of every object name.
    pub base: String,
    pub cluster_name: String,
    /// `spec.region`.
    pub region_name: String,
    pub shards: u16,
    pub replicas_per_shard: u16,
    pub owner: OwnerReference,
}

impl RegionPlan<'_> {
    /// Pods per shard: one primary plus the replicas.
    pub fn pods_per_shard(&self) -> u16 {
        1 + self.replicas_per_shard
    }
}

/// Every object of one region, ready for server-side apply.
#[derive(Clone, Debug, PartialEq)]
pub struct RegionResources {
    /// Who may reach the cache pods (None: `networkPolicy.enabled: false`).
    pub network_policy: Option<NetworkPolicy>,
    /// The nodes' ACL users (authentication on): built from the credentials the
    /// reconcile read, see [`build_acl_secret`].
    pub acl_secret: Option<Secret>,
    pub config_map: ConfigMap,
    pub services: Vec<Service>,
    pub stateful_sets: Vec<StatefulSet>,
    pub pod_disruption_budgets: Vec<PodDisruptionBudget>,
}

/// Step "validate": can the operator satisfy this CacheRegion with this CacheCluster?
pub fn validate<'a>(
    cluster: &'a CacheCluster,
    region: &'a CacheRegion,
) -> Result<RegionPlan<'a>, Error> {
    let base = region.name_any();
    let namespace = region
        .namespace()
        .ok_or(Error::MissingObjectField("CacheRegion metadata.namespace"))?;
    let cluster_name = cluster.name_any();
    if region.spec.cluster_ref.name != cluster_name {
        return Err(Error::InvalidSpec(format!(
            "clusterRef.name '{}' does not match CacheCluster '{cluster_name}'",
            region.spec.cluster_ref.name
        )));
    }
    if cluster.namespace().as_deref() != Some(namespace.as_str()) {
        return Err(Error::InvalidSpec(
            "the CacheCluster must live in the CacheRegion's namespace".into(),
        ));
    }
    if base.len() > names::MAX_BASE_NAME_LEN {
        return Err(Error::InvalidSpec(format!(
            "CacheRegion name '{base}' is longer than {} characters; pod and StatefulSet names derived from it would be invalid",
            names::MAX_BASE_NAME_LEN
        )));
    }
    if region.spec.region.is_empty() {
        return Err(Error::InvalidSpec("spec.region must not be empty".into()));
    }
    let shards = region.spec.effective_shards(&cluster.spec);
    let shards = u16::try_from(shards)
        .ok()
        .filter(|shards| (1..=256).contains(shards))
        .ok_or_else(|| Error::InvalidSpec(format!("shards must be 1-256, got {shards}")))?;
    let replicas = region.spec.effective_replicas_per_shard(&cluster.spec);
    let replicas_per_shard = u16::try_from(replicas)
        .ok()
        .filter(|replicas| *replicas <= 5)
        .ok_or_else(|| {
            Error::InvalidSpec(format!("replicasPerShard must be 0-5, got {replicas}"))
        })?;
    if let Err(error) = cluster.spec.memory.maxmemory_bytes() {
        return Err(Error::InvalidSpec(format!("memory.maxmemory: {error}")));
    }
    // The two objects are separate resources, so CEL cannot see both: checked here.
    let exposure = region
        .spec
        .link
        .as_ref()
        .map(|link| link.service_type)
        .unwrap_or_default();
    let exposed = exposure != meridian_api::LinkServiceType::ClusterIP;
    let cluster_name = cluster.name_any();
    if exposed
        && (cluster.spec.tls.is_none() || cluster.spec.password_source(&cluster_name).is_none())
    {
        return Err(Error::InvalidSpec(format!(
            "link.serviceType {} exposes the region link outside the Kubernetes cluster: the \
             CacheCluster '{cluster_name}' needs spec.tls and authentication (not auth.mode: \
             Disabled) for it, or use serviceType ClusterIP",
            exposure.as_str()
        )));
    }
    let owner = region
        .controller_owner_ref(&())
        .ok_or(Error::MissingObjectField("CacheRegion metadata.uid"))?;
    Ok(RegionPlan {
        cluster,
        region,
        namespace,
        base,
        cluster_name,
        region_name: region.spec.region.clone(),
        shards,
        replicas_per_shard,
        owner,
    })
}

/// The owner reference a CacheRegion carries to its CacheCluster: not a controller
/// reference (the region is the user's object), but it makes garbage collection delete
/// the region, and through it everything else, when the cluster is deleted.
pub fn cluster_owner_reference(cluster: &CacheCluster) -> Result<OwnerReference, Error> {
    let mut owner = cluster
        .controller_owner_ref(&())
        .ok_or(Error::MissingObjectField("CacheCluster metadata.uid"))?;
    owner.controller = None;
    owner.block_owner_deletion = None;
    Ok(owner)
}

/// Step "build": every object of the region. Pure.
pub fn build(plan: &RegionPlan<'_>, config: &BuildConfig) -> RegionResources {
    build_keeping(plan, config, &BTreeSet::new())
}

/// Like [`build`], and also the StatefulSet and PDB of every shard in `draining`: shards
/// at or above the desired count that the topology map still lists (they hold slots
/// being migrated away, or were just drained), observed from the nodes by the caller.
/// Scale-in deletes a shard's StatefulSet only once it is no longer in this set. Pure.
pub fn build_keeping(
    plan: &RegionPlan<'_>,
    config: &BuildConfig,
    draining: &BTreeSet<u16>,
) -> RegionResources {
    let config_map = build_config_map(plan);
    let config_hash = fnv1a_hex(config_map.data.iter().flatten());
    let shards: BTreeSet<u16> = (0..plan.shards).chain(draining.iter().copied()).collect();
    RegionResources {
        network_policy: build_network_policy(plan, config),
        acl_secret: None,
        services: vec![
            build_headless_service(plan),
            build_client_service(plan),
            build_link_service(plan),
        ],
        stateful_sets: shards
            .iter()
            .map(|shard| build_stateful_set(plan, config, *shard, &config_hash))
            .collect(),
        pod_disruption_budgets: shards.iter().map(|shard| build_pdb(plan, *shard)).collect(),
        config_map,
    }
}

fn metadata(plan: &RegionPlan<'_>, name: String, component: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(plan.namespace.clone()),
        labels: Some(names::region_labels(
            &plan.cluster_name,
            &plan.region_name,
            component,
        )),
        owner_references: Some(vec![plan.owner.clone()]),
        ..ObjectMeta::default()
    }
}

fn shard_labels(plan: &RegionPlan<'_>, shard: u16) -> BTreeMap<String, String> {
    let mut labels_map =
        names::region_labels(&plan.cluster_name, &plan.region_name, names::COMPONENT_NODE);
    labels_map.insert(labels::SHARD.to_string(), shard.to_string());
    labels_map
}

/// Node settings shared by every pod of the region, consumed through `envFrom`.
pub fn node_settings(plan: &RegionPlan<'_>) -> BTreeMap<String, String> {
    let spec = &plan.cluster.spec;
    let mut data = BTreeMap::from([
        // The node's role comes from the topology maps this operator pushes: a node
        // restarted without its data serves no PSYNC until a newer map names it primary.
        ("MERIDIAN_MANAGED".to_string(), "true".to_string()),
        ("MERIDIAN_CLUSTER".to_string(), plan.cluster_name.clone()),
        ("MERIDIAN_REGION".to_string(), plan.region_name.clone()),
        ("MERIDIAN_PORT".to_string(), ports::RESP.to_string()),
        ("MERIDIAN_HTTP_PORT".to_string(), ports::HTTP.to_string()),
        (
            "MERIDIAN_LINK_PORT".to_string(),
            ports::REGION_LINK.to_string(),
        ),
        (
            "MERIDIAN_METRICS_PORT".to_string(),
            ports::METRICS.to_string(),
        ),
        (
            "MERIDIAN_MAXMEMORY_POLICY".to_string(),
            spec.memory.eviction_policy.as_str().to_string(),
        ),
        (
            "MERIDIAN_CONSISTENCY".to_string(),
            spec.consistency.as_str().to_string(),
        ),
        (
            "MERIDIAN_CROSS_REGION_MODE".to_string(),
            spec.cross_region.mode.as_str().to_string(),
        ),
        (
            "MERIDIAN_STRONG_TIMEOUT_MS".to_string(),
            spec.cross_region.effective_strong_timeout_ms().to_string(),
        ),
    ]);
    // Handed to the node as plain bytes: Kubernetes quantities (`1.5Gi`, `1Ti`) are the
    // user's syntax, the node only needs the number. Validation already refused bad values.
    if let Ok(Some(bytes)) = spec.memory.maxmemory_bytes() {
        data.insert("MERIDIAN_MAXMEMORY".to_string(), bytes.to_string());
    }
    if let Ok(Some(bytes)) = spec.cross_region.replicate_max_value_bytes() {
        data.insert(
            "MERIDIAN_REGION_REPLICATE_MAX_BYTES".to_string(),
            bytes.to_string(),
        );
    }
    if let Some(fencing) = &spec.fencing {
        let min_replicas = u16::try_from(fencing.min_replicas)
            .unwrap_or(0)
            .min(plan.replicas_per_shard);
        data.insert(
            "MERIDIAN_MIN_REPLICAS_TO_WRITE".to_string(),
            min_replicas.to_string(),
        );
        data.insert(
            "MERIDIAN_MIN_REPLICAS_MAX_LAG".to_string(),
            fencing.max_lag_seconds.to_string(),
        );
    }
    if let Some(ttl) = spec.default_ttl_seconds {
        data.insert("MERIDIAN_DEFAULT_TTL_SECONDS".to_string(), ttl.to_string());
    }
    if let Some(origin) = &spec.origin {
        data.insert("MERIDIAN_ORIGIN_URL".to_string(), origin.url.clone());
        data.insert(
            "MERIDIAN_ORIGIN_READ_THROUGH".to_string(),
            origin.read_through.to_string(),
        );
        data.insert(
            "MERIDIAN_ORIGIN_WRITE_THROUGH".to_string(),
            origin.write_through.to_string(),
        );
        // only when on: clusters without it keep their config hash (no rolling restart)
        if origin.write_behind {
            data.insert(
                "MERIDIAN_ORIGIN_WRITE_BEHIND".to_string(),
                "true".to_string(),
            );
        }
        if let Some(max_keys) = origin.write_behind_max_keys {
            data.insert(
                "MERIDIAN_ORIGIN_WRITE_BEHIND_MAX_KEYS".to_string(),
                max_keys.to_string(),
            );
        }
        if let Some(timeout) = origin.timeout_ms {
            data.insert(
                "MERIDIAN_ORIGIN_TIMEOUT_MS".to_string(),
                timeout.to_string(),
            );
        }
    }
    if spec.password_source(&plan.cluster_name).is_none() {
        // authentication disabled on purpose (spec.auth.mode: Disabled): the node's
        // protected mode would serve only loopback clients, the operator included
        data.insert("MERIDIAN_PROTECTED_MODE".to_string(), "no".to_string());
    } else {
        // the operator's ACL users (acl::render), and the users this node's own
        // replication and region links log in as
        data.insert(
            "MERIDIAN_ACL_FILE".to_string(),
            format!("{}/{}", crate::acl::MOUNT_PATH, crate::acl::FILE_NAME),
        );
        data.insert(
            "MERIDIAN_PRIMARY_USER".to_string(),
            crate::acl::REPLICATION_USER.to_string(),
        );
        data.insert(
            "MERIDIAN_REGION_LINK_USER".to_string(),
            crate::acl::LINK_USER.to_string(),
        );
    }
    if let Some(tls) = &spec.tls {
        data.insert("MERIDIAN_TLS_DIR".to_string(), TLS_MOUNT_PATH.to_string());
        if let Some(server_name) = &tls.server_name {
            data.insert("MERIDIAN_TLS_SERVER_NAME".to_string(), server_name.clone());
        }
        if tls.require_peer_certificates {
            data.insert(
                "MERIDIAN_TLS_REQUIRE_PEER_CERTS".to_string(),
                "true".to_string(),
            );
        }
    }
    data
}

/// The cache pods' NetworkPolicy: clients (`networkPolicy.clients`, default every pod
/// of the namespace) on RESP and the HTTP API; the operator on RESP; the cluster's own
/// pods (every region: replication, slot moves, fan-out, region links) on RESP and the
/// link port; the link port from anywhere when it is exposed outside the cluster or has
/// peers elsewhere (TLS and the cluster password guard it); metrics and health checks
/// from anywhere (kubelet probes, Prometheus; no keys there).
pub fn build_network_policy(plan: &RegionPlan<'_>, config: &BuildConfig) -> Option<NetworkPolicy> {
    let wanted = plan.cluster.spec.network_policy.clone().unwrap_or_default();
    if !wanted.enabled {
        return None;
    }
    let port = |port: i32| NetworkPolicyPort {
        port: Some(IntOrString::Int(port)),
        protocol: Some("TCP".to_string()),
        ..NetworkPolicyPort::default()
    };
    let pods = |labels: BTreeMap<String, String>| NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_labels: Some(labels),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    };
    let cluster_pods = pods(BTreeMap::from([
        (labels::NAME.to_string(), labels::APP_NAME.to_string()),
        (labels::CLUSTER.to_string(), plan.cluster_name.clone()),
    ]));
    let clients = if wanted.clients.is_empty() {
        vec![pods(BTreeMap::new())]
    } else {
        wanted.clients
    };
    let mut rules = vec![
        NetworkPolicyIngressRule {
            from: Some(clients),
            ports: Some(vec![port(ports::RESP), port(ports::HTTP)]),
        },
        NetworkPolicyIngressRule {
            from: Some(vec![cluster_pods]),
            ports: Some(vec![
                port(ports::RESP),
                port(ports::HTTP),
                port(ports::REGION_LINK),
            ]),
        },
        NetworkPolicyIngressRule {
            from: None,
            ports: Some(vec![port(ports::METRICS)]),
        },
    ];
    if let Some(namespace) = &config.operator_namespace {
        rules.push(NetworkPolicyIngressRule {
            from: Some(vec![NetworkPolicyPeer {
                namespace_selector: Some(LabelSelector {
                    match_labels: Some(BTreeMap::from([(
                        "kubernetes.io/metadata.name".to_string(),
                        namespace.clone(),
                    )])),
                    ..LabelSelector::default()
                }),
                pod_selector: Some(LabelSelector {
                    match_labels: Some(BTreeMap::from([(
                        labels::NAME.to_string(),
                        "meridian-operator".to_string(),
                    )])),
                    ..LabelSelector::default()
                }),
                ..NetworkPolicyPeer::default()
            }]),
            ports: Some(vec![port(ports::RESP)]),
        });
    } else {
        // an operator outside the cluster comes from an address no selector names
        rules.push(NetworkPolicyIngressRule {
            from: None,
            ports: Some(vec![port(ports::RESP)]),
        });
    }
    let link = plan.region.spec.link.as_ref().map(|link| link.service_type);
    let exposed = link.is_some_and(|service_type| service_type != LinkServiceType::ClusterIP);
    if exposed || !plan.region.spec.peers.is_empty() {
        rules.push(NetworkPolicyIngressRule {
            from: None,
            ports: Some(vec![port(ports::REGION_LINK)]),
        });
    }
    Some(NetworkPolicy {
        metadata: metadata(
            plan,
            names::network_policy(&plan.base),
            names::COMPONENT_NODE,
        ),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(names::region_node_selector(
                    &plan.cluster_name,
                    &plan.region_name,
                )),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".to_string()]),
            ingress: Some(rules),
            ..NetworkPolicySpec::default()
        }),
    })
}

/// The Secret with the nodes' ACL file (`acl::render`): mounted into every pod, so a
/// changed user reaches the nodes without restarting them (the kubelet updates the
/// mounted file, the node reloads it).
pub fn build_acl_secret(plan: &RegionPlan<'_>, file: String) -> Secret {
    Secret {
        metadata: metadata(plan, names::acl_secret(&plan.base), names::COMPONENT_CONFIG),
        type_: Some("Opaque".to_string()),
        data: Some(BTreeMap::from([(
            crate::acl::FILE_NAME.to_string(),
            k8s_openapi::ByteString(file.into_bytes()),
        )])),
        ..Secret::default()
    }
}

fn build_config_map(plan: &RegionPlan<'_>) -> ConfigMap {
    ConfigMap {
        metadata: metadata(plan, names::config_map(&plan.base), names::COMPONENT_CONFIG),
        data: Some(node_settings(plan)),
        ..ConfigMap::default()
    }
}

fn service_port(name: &str, port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.to_string()),
        port,
        target_port: Some(IntOrString::Int(port)),
        protocol: Some("TCP".to_string()),
        ..ServicePort::default()
    }
}

fn build_headless_service(plan: &RegionPlan<'_>) -> Service {
    Service {
        metadata: metadata(
            plan,
            names::headless_service(&plan.base),
            names::COMPONENT_NODE,
        ),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_string()),
            // Nodes must find each other (and the operator them) before they are ready.
            publish_not_ready_addresses: Some(true),
            selector: Some(names::region_node_selector(
                &plan.cluster_name,
                &plan.region_name,
            )),
            ports: Some(vec![
                service_port("resp", ports::RESP),
                service_port("link", ports::REGION_LINK),
                service_port("http", ports::HTTP),
                service_port("metrics", ports::METRICS),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn build_client_service(plan: &RegionPlan<'_>) -> Service {
    Service {
        metadata: metadata(
            plan,
            names::client_service(&plan.base),
            names::COMPONENT_CLIENT,
        ),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_string()),
            selector: Some(names::region_node_selector(
                &plan.cluster_name,
                &plan.region_name,
            )),
            ports: Some(vec![
                service_port("resp", ports::RESP),
                service_port("http", ports::HTTP),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn build_link_service(plan: &RegionPlan<'_>) -> Service {
    let service_type = plan
        .region
        .spec
        .link
        .as_ref()
        .map(|link| link.service_type)
        .unwrap_or(LinkServiceType::ClusterIP);
    Service {
        metadata: metadata(plan, names::link_service(&plan.base), names::COMPONENT_LINK),
        spec: Some(ServiceSpec {
            type_: Some(service_type.as_str().to_string()),
            selector: Some(names::region_node_selector(
                &plan.cluster_name,
                &plan.region_name,
            )),
            ports: Some(vec![service_port("link", ports::REGION_LINK)]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn field_env(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: field_path.to_string(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn node_env(plan: &RegionPlan<'_>, shard: u16) -> Vec<EnvVar> {
    let mut env = vec![
        // No MERIDIAN_BIND: the node listens on every address of its pod (the default
        // 0.0.0.0), so `kubectl port-forward`, which dials localhost inside the pod, works.
        field_env("MERIDIAN_NODE_ID", "metadata.name"),
        EnvVar {
            name: "MERIDIAN_SHARD".to_string(),
            value: Some(shard.to_string()),
            ..EnvVar::default()
        },
    ];
    if plan
        .cluster
        .spec
        .password_source(&plan.cluster_name)
        .is_some()
    {
        // replicas log in to their primary as the replication user
        env.push(EnvVar {
            name: "MERIDIAN_PRIMARY_AUTH".to_string(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: meridian_api::internal_users_secret(&plan.cluster_name),
                    key: "replication".to_string(),
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        });
    }
    if let Some(source) = plan.cluster.spec.password_source(&plan.cluster_name) {
        let secret = source.secret();
        env.push(EnvVar {
            name: "MERIDIAN_PASSWORD".to_string(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: secret.name.clone(),
                    key: secret.key.clone(),
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        });
    }
    env
}

fn http_probe(path: &str, initial_delay: i32, period: i32, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::Int(ports::METRICS),
            scheme: Some("HTTP".to_string()),
            ..HTTPGetAction::default()
        }),
        initial_delay_seconds: Some(initial_delay),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(failure_threshold),
        ..Probe::default()
    }
}

fn container_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_string()),
        container_port: port,
        protocol: Some("TCP".to_string()),
        ..ContainerPort::default()
    }
}

fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity("100m".to_string())),
            ("memory".to_string(), Quantity("64Mi".to_string())),
        ])),
        ..ResourceRequirements::default()
    }
}

fn label_selector(labels_map: BTreeMap<String, String>) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels_map),
        ..LabelSelector::default()
    }
}

fn affinity(plan: &RegionPlan<'_>, shard: u16) -> Affinity {
    let shard_selector = || {
        Some(label_selector(names::shard_node_selector(
            &plan.cluster_name,
            &plan.region_name,
            shard,
        )))
    };
    let zones = plan
        .region
        .spec
        .placement
        .as_ref()
        .map(|placement| placement.zones.clone())
        .unwrap_or_default();
    let node_affinity = (!zones.is_empty()).then(|| NodeAffinity {
        required_during_scheduling_ignored_during_execution: Some(NodeSelector {
            node_selector_terms: vec![NodeSelectorTerm {
                match_expressions: Some(vec![NodeSelectorRequirement {
                    key: ZONE_KEY.to_string(),
                    operator: "In".to_string(),
                    values: Some(zones),
                }]),
                ..NodeSelectorTerm::default()
            }],
        }),
        ..NodeAffinity::default()
    });
    Affinity {
        node_affinity,
        pod_anti_affinity: Some(PodAntiAffinity {
            // A primary and its replicas never share a node...
            required_during_scheduling_ignored_during_execution: Some(vec![PodAffinityTerm {
                label_selector: shard_selector(),
                topology_key: HOSTNAME_KEY.to_string(),
                ..PodAffinityTerm::default()
            }]),
            // ...and, where zones allow, not a zone either.
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: PodAffinityTerm {
                        label_selector: shard_selector(),
                        topology_key: ZONE_KEY.to_string(),
                        ..PodAffinityTerm::default()
                    },
                },
            ]),
        }),
        ..Affinity::default()
    }
}

fn build_stateful_set(
    plan: &RegionPlan<'_>,
    config: &BuildConfig,
    shard: u16,
    config_hash: &str,
) -> StatefulSet {
    let spec = &plan.cluster.spec;
    let pod_labels = shard_labels(plan, shard);
    let selector = names::shard_node_selector(&plan.cluster_name, &plan.region_name, shard);
    let placement = plan.region.spec.placement.as_ref();
    let node_selector = placement
        .map(|placement| placement.node_selector.clone())
        .filter(|selector| !selector.is_empty());
    let tolerations = placement
        .map(|placement| placement.tolerations.clone())
        .filter(|tolerations| !tolerations.is_empty());

    let mut volumes = vec![Volume {
        // readOnlyRootFilesystem: the node gets a writable scratch directory only.
        name: "tmp".to_string(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }];
    let mut volume_mounts = vec![VolumeMount {
        name: "tmp".to_string(),
        mount_path: "/tmp".to_string(),
        ..VolumeMount::default()
    }];
    if spec.password_source(&plan.cluster_name).is_some() {
        volumes.push(Volume {
            name: "acl".to_string(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(names::acl_secret(&plan.base)),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
        volume_mounts.push(VolumeMount {
            name: "acl".to_string(),
            mount_path: crate::acl::MOUNT_PATH.to_string(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    if let Some(tls) = &spec.tls {
        volumes.push(Volume {
            name: "tls".to_string(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(tls.secret_name.clone()),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
        volume_mounts.push(VolumeMount {
            name: "tls".to_string(),
            mount_path: TLS_MOUNT_PATH.to_string(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }

    let container = Container {
        name: names::NODE_CONTAINER.to_string(),
        image: Some(
            spec.image
                .clone()
                .unwrap_or_else(|| config.default_node_image.clone()),
        ),
        image_pull_policy: spec.image_pull_policy.clone(),
        env: Some(node_env(plan, shard)),
        env_from: Some(vec![EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: names::config_map(&plan.base),
                optional: Some(false),
            }),
            ..EnvFromSource::default()
        }]),
        ports: Some(vec![
            container_port("resp", ports::RESP),
            container_port("link", ports::REGION_LINK),
            container_port("http", ports::HTTP),
            container_port("metrics", ports::METRICS),
        ]),
        readiness_probe: Some(http_probe("/readyz", 1, 5, 3)),
        liveness_probe: Some(http_probe("/healthz", 10, 10, 6)),
        resources: Some(spec.resources.clone().unwrap_or_else(default_resources)),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_string()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(volume_mounts),
        ..Container::default()
    };

    let pod_spec = PodSpec {
        containers: vec![container],
        // Nodes never talk to the Kubernetes API.
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        termination_grace_period_seconds: Some(30),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(NODE_USER_ID),
            run_as_group: Some(NODE_USER_ID),
            fs_group: Some(NODE_USER_ID),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_string(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        affinity: Some(affinity(plan, shard)),
        topology_spread_constraints: Some(vec![TopologySpreadConstraint {
            max_skew: 1,
            topology_key: ZONE_KEY.to_string(),
            when_unsatisfiable: "ScheduleAnyway".to_string(),
            label_selector: Some(label_selector(selector.clone())),
            ..TopologySpreadConstraint::default()
        }]),
        node_selector,
        tolerations,
        runtime_class_name: placement.and_then(|placement| placement.runtime_class_name.clone()),
        volumes: Some(volumes),
        ..PodSpec::default()
    };

    let mut metadata = metadata(
        plan,
        names::statefulset(&plan.base, shard),
        names::COMPONENT_NODE,
    );
    metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(labels::SHARD.to_string(), shard.to_string());

    StatefulSet {
        metadata,
        spec: Some(StatefulSetSpec {
            replicas: Some(i32::from(plan.pods_per_shard())),
            selector: label_selector(selector),
            service_name: Some(names::headless_service(&plan.base)),
            pod_management_policy: Some("Parallel".to_string()),
            // The operator replaces pods itself so it can fail primaries over first.
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".to_string()),
                ..StatefulSetUpdateStrategy::default()
            }),
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some("Delete".to_string()),
                    when_scaled: Some("Delete".to_string()),
                },
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(BTreeMap::from([(
                        names::CONFIG_HASH_ANNOTATION.to_string(),
                        config_hash.to_string(),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec),
            },
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}

fn build_pdb(plan: &RegionPlan<'_>, shard: u16) -> PodDisruptionBudget {
    let mut metadata = metadata(plan, names::pdb(&plan.base, shard), names::COMPONENT_NODE);
    metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(labels::SHARD.to_string(), shard.to_string());
    PodDisruptionBudget {
        metadata,
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(label_selector(names::shard_node_selector(
                &plan.cluster_name,
                &plan.region_name,
                shard,
            ))),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

/// Stable (across Rust versions and runs) 64-bit FNV-1a hash of key/value pairs, hex.
fn fnv1a_hex<'a>(pairs: impl Iterator<Item = (&'a String, &'a String)>) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (key, value) in pairs {
        for byte in key.bytes().chain([0]).chain(value.bytes()).chain([0]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture<T: serde::de::DeserializeOwned>(name: &str) -> T {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn shard_names(objects: &[impl Resource]) -> Vec<String> {
        objects
            .iter()
            .map(|object| object.meta().name.clone().unwrap_or_default())
            .collect()
    }

    #[test]
    fn draining_shards_keep_their_stateful_sets_and_pdbs() {
        let cluster: CacheCluster = fixture("cluster-orders.yaml");
        let region: CacheRegion = fixture("region-orders-eu.yaml");
        let plan = validate(&cluster, &region).expect("fixture is valid");
        let config = BuildConfig {
            default_node_image: "meridian-node:test".into(),
            operator_namespace: Some("meridian-system".to_string()),
        };
        let plain = build(&plan, &config);
        assert_eq!(plain, build_keeping(&plan, &config, &BTreeSet::new()));
        assert_eq!(plain.stateful_sets.len(), usize::from(plan.shards));

        let draining = BTreeSet::from([plan.shards, plan.shards + 1]);
        let kept = build_keeping(&plan, &config, &draining);
        assert_eq!(kept.stateful_sets.len(), usize::from(plan.shards) + 2);
        assert_eq!(
            kept.pod_disruption_budgets.len(),
            usize::from(plan.shards) + 2
        );
        let expected_last = names::statefulset(&plan.base, plan.shards + 1);
        assert_eq!(
            shard_names(&kept.stateful_sets).last(),
            Some(&expected_last)
        );
        // the kept shard is built exactly like any other: same template, its own label
        let last = kept.stateful_sets.last().expect("a StatefulSet");
        assert_eq!(
            last.metadata
                .labels
                .as_ref()
                .and_then(|labels_map| labels_map.get(labels::SHARD)),
            Some(&(plan.shards + 1).to_string())
        );
        assert_eq!(
            kept.stateful_sets[..usize::from(plan.shards)],
            plain.stateful_sets[..]
        );
        // a draining set inside the desired range changes nothing
        assert_eq!(build_keeping(&plan, &config, &BTreeSet::from([0])), plain);
        assert_eq!(
            shard_names(&kept.pod_disruption_budgets).len(),
            kept.stateful_sets.len()
        );
    }
}
