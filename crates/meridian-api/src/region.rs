//! `CacheRegion`: one region's deployment of a `CacheCluster`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Toleration;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::CacheClusterSpec;

/// One region of a `CacheCluster`: its shards, where its pods run, how its region link is
/// exposed, and peers in other Kubernetes clusters.
// printcolumn(...) repeats `type_ = ...`, which clippy mistakes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "cache.meridian.dev",
    version = "v1alpha1",
    kind = "CacheRegion",
    plural = "cacheregions",
    singular = "cacheregion",
    shortname = "mcr",
    category = "meridian",
    namespaced,
    doc = "One region of a CacheCluster: its shards, placement, region-link exposure and peers in other Kubernetes clusters.",
    status = "CacheRegionStatus",
    derive = "PartialEq",
    printcolumn(
        name = "Cluster",
        type_ = "string",
        description = "The CacheCluster this region belongs to",
        json_path = ".spec.clusterRef.name"
    ),
    printcolumn(
        name = "Region",
        type_ = "string",
        description = "Region name",
        json_path = ".spec.region"
    ),
    printcolumn(
        name = "Shards",
        type_ = "integer",
        description = "Shards with a serving primary",
        json_path = ".status.readyShards"
    ),
    printcolumn(
        name = "Epoch",
        type_ = "integer",
        description = "Topology epoch",
        json_path = ".status.epoch"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        description = "Ready condition",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new(
    "!has(self.peers) || self.peers.all(p, p.region != self.region)"
).message("peers must not list this CacheRegion's own region").field_path(".peers"))]
#[serde(rename_all = "camelCase")]
pub struct CacheRegionSpec {
    /// The `CacheCluster` (same namespace) this region belongs to.
    pub cluster_ref: ClusterRef,

    /// Region name, a DNS label such as `eu-west-1`. Immutable: create a new `CacheRegion` to
    /// move a deployment to another region.
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("region must be a DNS label: lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63 characters"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("region is immutable; create a new CacheRegion instead"))]
    #[schemars(length(max = 63))]
    pub region: String,

    /// Shards in this region; the cluster's `shards` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 256").message("shards must be between 1 and 256"))]
    pub shards: Option<i32>,

    /// Replicas per shard in this region; the cluster's `replicasPerShard` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 5").message("replicasPerShard must be between 0 and 5"))]
    pub replicas_per_shard: Option<i32>,

    /// Where this region's pods run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<PlacementSpec>,

    /// How the region link (port 16379) is exposed to peer regions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<LinkSpec>,

    /// Regions of the same cluster that run in other Kubernetes clusters. Regions in this
    /// Kubernetes cluster find each other without being listed.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self.all(p, self.exists_one(q, q.region == p.region))").message("peers must not list the same region twice"))]
    #[schemars(length(max = 32))]
    pub peers: Vec<PeerSpec>,
}

impl CacheRegionSpec {
    /// Shards this region runs: its override or the cluster default.
    pub fn effective_shards(&self, cluster: &CacheClusterSpec) -> i32 {
        self.shards.unwrap_or(cluster.shards)
    }

    /// Replicas per shard this region runs: its override or the cluster default.
    pub fn effective_replicas_per_shard(&self, cluster: &CacheClusterSpec) -> i32 {
        self.replicas_per_shard
            .unwrap_or(cluster.replicas_per_shard)
    }
}

/// Reference to a `CacheCluster` in the same namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRef {
    /// Name of the `CacheCluster`.
    #[x_kube(validation = Rule::new("size(self) > 0").message("clusterRef.name must name a CacheCluster in the same namespace"))]
    #[schemars(length(max = 253))]
    pub name: String,
}

/// Scheduling constraints of a region's pods.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlacementSpec {
    /// Node labels the pods require.
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,

    /// Zones (`topology.kubernetes.io/zone` values) to spread each shard's pods over; empty
    /// means anywhere.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self.all(z, self.exists_one(y, y == z))").message("placement.zones must not list a zone twice"))]
    #[schemars(length(max = 16), inner(length(min = 1, max = 63)))]
    pub zones: Vec<String>,

    /// Tolerations added to the pods.
    #[serde(default)]
    pub tolerations: Vec<Toleration>,

    /// RuntimeClass the pods run with (a sandboxed runtime such as gVisor or Kata, or a
    /// node pool's own handler); the cluster's default runtime when absent. Changing it
    /// rolls the region's pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$')").message("placement.runtimeClassName must be a lowercase DNS subdomain (the name of a RuntimeClass)"))]
    #[schemars(length(min = 1, max = 253))]
    pub runtime_class_name: Option<String>,
}

/// Exposure of the region link.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LinkSpec {
    /// Service type of the region-link Service: `ClusterIP` (default; peers in the same
    /// Kubernetes cluster), `LoadBalancer` or `NodePort` (peers elsewhere).
    #[serde(default)]
    pub service_type: LinkServiceType,
}

/// Service type of the region-link Service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum LinkServiceType {
    /// Reachable inside the Kubernetes cluster only.
    #[default]
    ClusterIP,
    /// An external load balancer.
    LoadBalancer,
    /// A port on every node.
    NodePort,
}

impl LinkServiceType {
    /// The Kubernetes `Service.spec.type` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClusterIP => "ClusterIP",
            Self::LoadBalancer => "LoadBalancer",
            Self::NodePort => "NodePort",
        }
    }
}

/// A peer region in another Kubernetes cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PeerSpec {
    /// The peer's region name (its `spec.region`).
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("peers[].region must be a DNS label such as us-east-1"))]
    #[schemars(length(max = 63))]
    pub region: String,

    /// `host:port` of the peer's region-link endpoint, e.g. `meridian-eu.example.com:16379`
    /// or `[2001:db8::1]:16379`.
    #[x_kube(validation = Rule::new("self.matches('^([A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?|\\\\[[0-9A-Fa-f:.]+\\\\]):[0-9]{1,5}$')").message("peers[].address must be host:port, e.g. meridian-eu.example.com:16379 or [2001:db8::1]:16379"))]
    #[schemars(length(max = 300))]
    pub address: String,
}

/// Observed state of a `CacheRegion`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CacheRegionStatus {
    /// `metadata.generation` the status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready`, `Progressing` and `Degraded`.
    #[serde(default)]
    pub conditions: Vec<Condition>,

    /// Topology epoch pushed to the nodes; rises with every topology change.
    #[serde(default)]
    pub epoch: u64,

    /// One entry per shard.
    #[serde(default)]
    pub shards: Vec<ShardStatus>,

    /// Region links to peer regions.
    #[serde(default)]
    pub peers: Vec<PeerStatus>,

    /// Shards with a serving primary.
    #[serde(default)]
    pub ready_shards: i32,

    /// Progress of a shard-count change while slots move between shards; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resharding: Option<ReshardingStatus>,

    /// Progress of a rolling update (pod template change: image, settings) while pods
    /// are replaced; absent when every pod runs the latest template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
}

/// Progress of a rolling update: one shard at a time, replicas first, then a graceful
/// handover of the primary, then the old primary.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// Pods running the latest template.
    #[serde(default)]
    pub updated_pods: i32,
    /// Pods of the region.
    #[serde(default)]
    pub pods: i32,
    /// Shard being updated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<i32>,
    /// What happens next, e.g. `shard 0: replacing replica orders-eu-0-1`.
    #[serde(default)]
    pub step: String,
}

/// Progress of a shard-count change: slots migrate with their keys, a batch at a time.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReshardingStatus {
    /// Shards serving when the change started.
    #[serde(default)]
    pub from_shards: i32,
    /// Shards the region is moving to (`spec.shards`).
    #[serde(default)]
    pub to_shards: i32,
    /// Slots that change owner in this resharding.
    #[serde(default)]
    pub slots_to_move: i32,
    /// Slots already at their new owner.
    #[serde(default)]
    pub slots_moved: i32,
    /// Slots migrating right now, as ranges such as `5461-5588`.
    #[serde(default)]
    pub moving_slots: Vec<String>,
    /// Shard the moving slots leave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moving_from_shard: Option<i32>,
    /// Shard the moving slots go to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moving_to_shard: Option<i32>,
}

/// One shard of a region.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShardStatus {
    /// Shard index, from 0.
    #[serde(default)]
    pub index: i32,
    /// Pod name of the primary; absent while none serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<String>,
    /// Pod names of the replicas.
    #[serde(default)]
    pub replicas: Vec<String>,
    /// Hash-slot ranges the shard owns, e.g. `0-5460`.
    #[serde(default)]
    pub slots: Vec<String>,
    /// Replicas in sync with the primary.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Largest replication lag of the shard's replicas in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_lag_bytes: Option<i64>,
}

/// Region link to one peer region.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PeerStatus {
    /// The peer's region name.
    #[serde(default)]
    pub region: String,
    /// The link is up.
    #[serde(default)]
    pub connected: bool,
    /// Age of the oldest event not yet acknowledged by the peer, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_ms: Option<i64>,
    /// Why the link is not connected, as the region's primaries last reported it (a
    /// refused handshake, an unreachable seed, `CLOCKDRIFT` when the peer refused this
    /// region's clock); absent while connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
