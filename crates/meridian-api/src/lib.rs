//! Meridian's custom resource types and the constants that operator, node and tooling share.
//!
//! * [`CacheCluster`] (`cache.meridian.dev/v1alpha1`, short name `mcc`): the logical cache.
//! * [`CacheRegion`] (`cache.meridian.dev/v1alpha1`, short name `mcr`): one region's deployment
//!   of a `CacheCluster`.
//!
//! The CRD schemas (including the CEL rules the API server enforces) are generated from these
//! types by `cargo xtask crds`. This crate does no I/O.

mod cluster;
mod error;
mod quantity;
mod region;

pub use cluster::{
    AclUserSpec, AuthMode, AuthSpec, CacheCluster, CacheClusterSpec, CacheClusterStatus,
    Consistency, CrossRegionMode, CrossRegionSpec, DEFAULT_REPLICAS_PER_SHARD, DEFAULT_SHARDS,
    DEFAULT_STRONG_TIMEOUT_MS, EvictionPolicy, FencingSpec, MemorySpec, NetworkPolicySpec,
    OriginSpec, PasswordSource, RegionSummary, SecretKeyRef, TlsSpec, generated_password_secret,
    internal_users_secret,
};
pub use error::ApiError;
pub use quantity::parse_byte_quantity;
pub use region::{
    CacheRegion, CacheRegionSpec, CacheRegionStatus, ClusterRef, LinkServiceType, LinkSpec,
    PeerSpec, PeerStatus, PlacementSpec, ReshardingStatus, RolloutStatus, ShardStatus,
};

/// API group of every Meridian resource.
pub const API_GROUP: &str = "cache.meridian.dev";
/// The one served and stored version.
pub const API_VERSION: &str = "v1alpha1";
/// `apiVersion` as written in manifests.
pub const API_GROUP_VERSION: &str = "cache.meridian.dev/v1alpha1";

/// Server-side apply field manager used by the operator for everything it writes.
pub const FIELD_MANAGER: &str = "meridian-operator";

/// Well-known label keys and the fixed values Meridian puts in them.
pub mod labels {
    /// `app.kubernetes.io/name`; value [`APP_NAME`].
    pub const NAME: &str = "app.kubernetes.io/name";
    /// `app.kubernetes.io/instance`; value: the `CacheCluster` name.
    pub const INSTANCE: &str = "app.kubernetes.io/instance";
    /// `app.kubernetes.io/component`.
    pub const COMPONENT: &str = "app.kubernetes.io/component";
    /// `app.kubernetes.io/managed-by`; value [`MANAGED_BY_OPERATOR`].
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    /// `cache.meridian.dev/cluster`: name of the owning `CacheCluster`.
    pub const CLUSTER: &str = "cache.meridian.dev/cluster";
    /// `cache.meridian.dev/region`: the region name (`spec.region` of the `CacheRegion`).
    pub const REGION: &str = "cache.meridian.dev/region";
    /// `cache.meridian.dev/shard`: shard index, decimal.
    pub const SHARD: &str = "cache.meridian.dev/shard";

    /// Value of [`NAME`] on every object Meridian creates.
    pub const APP_NAME: &str = "meridian";
    /// Value of [`MANAGED_BY`] on every object the operator creates.
    pub const MANAGED_BY_OPERATOR: &str = super::FIELD_MANAGER;
}

/// Condition types used in both resources' `status.conditions`.
pub mod conditions {
    /// Everything requested is running and serving.
    pub const READY: &str = "Ready";
    /// The operator is moving the deployment towards the spec (rollout, scaling, slot migration).
    pub const PROGRESSING: &str = "Progressing";
    /// Serving, but with reduced redundancy or a failed region/shard.
    pub const DEGRADED: &str = "Degraded";
}

/// Default container ports of the cache node.
///
/// `i32` because that is what Kubernetes' `containerPort` / `ServicePort.port` use.
pub mod ports {
    /// RESP (Redis protocol) clients.
    pub const RESP: i32 = 6379;
    /// Region links between regions.
    pub const REGION_LINK: i32 = 16379;
    /// HTTP cache API.
    pub const HTTP: i32 = 8080;
    /// Prometheus metrics, `/healthz`, `/readyz`.
    pub const METRICS: i32 = 9090;
}
