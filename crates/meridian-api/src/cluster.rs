//! `CacheCluster`: the logical cache shared by all its regions.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Shards per region when neither the cluster nor the region says otherwise.
pub const DEFAULT_SHARDS: i32 = 3;
/// Replicas per shard (in addition to the primary) when not set.
pub const DEFAULT_REPLICAS_PER_SHARD: i32 = 1;
/// How long a `strong` write waits for peer regions when `crossRegion.strongTimeoutMs` is absent.
pub const DEFAULT_STRONG_TIMEOUT_MS: u32 = 500;

fn default_shards() -> i32 {
    DEFAULT_SHARDS
}

fn default_replicas_per_shard() -> i32 {
    DEFAULT_REPLICAS_PER_SHARD
}

fn default_password_key() -> String {
    "password".to_owned()
}

/// A Meridian cache: shard layout, consistency and node settings shared by every `CacheRegion`
/// that references it.
// printcolumn(...) repeats `type_ = ...`, which clippy mistakes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "cache.meridian.dev",
    version = "v1alpha1",
    kind = "CacheCluster",
    plural = "cacheclusters",
    singular = "cachecluster",
    shortname = "mcc",
    category = "meridian",
    namespaced,
    doc = "A Meridian cache: shard layout, consistency and node settings shared by every CacheRegion that references it.",
    status = "CacheClusterStatus",
    derive = "PartialEq",
    printcolumn(
        name = "Shards",
        type_ = "integer",
        description = "Default shards per region",
        json_path = ".spec.shards"
    ),
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        description = "Default replicas per shard",
        json_path = ".spec.replicasPerShard"
    ),
    printcolumn(
        name = "Consistency",
        type_ = "string",
        description = "Cross-region write consistency",
        json_path = ".spec.consistency"
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        description = "Regions that are ready",
        json_path = ".status.readyRegions"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new(
    "!has(self.crossRegion) || !has(self.crossRegion.strongTimeoutMs) || (has(self.consistency) && self.consistency == 'strong')"
).message("crossRegion.strongTimeoutMs only applies when consistency is 'strong': remove it or set consistency: strong").field_path(".crossRegion.strongTimeoutMs"))]
#[x_kube(validation = Rule::new(
    "!has(self.crossRegion) || !has(self.crossRegion.replicateMaxValueSize) || (has(self.crossRegion.mode) && self.crossRegion.mode == 'replicate')"
).message("crossRegion.replicateMaxValueSize only applies when crossRegion.mode is 'replicate': remove it or set mode: replicate").field_path(".crossRegion.replicateMaxValueSize"))]
#[serde(rename_all = "camelCase")]
pub struct CacheClusterSpec {
    /// Shards (primaries) per region; each region may override it. Hash slots are split evenly
    /// across the shards.
    #[serde(default = "default_shards")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 256").message("shards must be between 1 and 256"))]
    pub shards: i32,

    /// Replicas per shard in addition to the primary; each region may override it. 0 means no
    /// failover.
    #[serde(default = "default_replicas_per_shard")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 5").message("replicasPerShard must be between 0 and 5"))]
    pub replicas_per_shard: i32,

    /// `eventual`: a write is acknowledged locally and peer regions are told asynchronously.
    /// `strong`: a write is acknowledged only after every peer region acknowledged its
    /// invalidation (bounded by `crossRegion.strongTimeoutMs`).
    #[serde(default)]
    pub consistency: Consistency,

    /// How writes propagate between regions.
    #[serde(default)]
    pub cross_region: CrossRegionSpec,

    /// Memory limit and eviction of every node.
    #[serde(default)]
    pub memory: MemorySpec,

    /// TTL applied to keys written without one; absent means keys live until evicted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("defaultTtlSeconds must be at least 1; omit it for keys without TTL"))]
    pub default_ttl_seconds: Option<i64>,

    /// Optional HTTP origin the cache reads through and/or writes to (write-through or write-behind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<OriginSpec>,

    /// Client authentication. On by default: without `auth` (or without
    /// `auth.secretRef`) the operator generates a password in the Secret
    /// `<cluster>-auth` (key `password`) and `status.passwordSecret` names it. Turning
    /// it off takes `auth: {mode: Disabled}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSpec>,

    /// TLS on every port that carries data: RESP (applications, replication, slot
    /// migration, the operator), the HTTP API and region links, with a certificate from
    /// a Secret. Plain text is refused on those ports; the metrics/health port stays
    /// plain text (it serves no keys). Unset: every port speaks plain text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,

    /// The NetworkPolicy the operator gives the cache pods of every region: clients
    /// (`networkPolicy.clients`, default: every pod in the namespace) on RESP and the
    /// HTTP API, the operator and the cluster's own pods (replication, slot moves,
    /// region links), metrics from anywhere. On unless `networkPolicy.enabled: false`.
    /// Needs a CNI that enforces NetworkPolicy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_policy: Option<NetworkPolicySpec>,

    /// Fencing: a primary refuses writes (`NOREPLICAS`) unless enough of its replicas
    /// acknowledged replication lately, so a primary cut off from its replicas (by a
    /// partition, or left behind by a failover) soon stops accepting writes that would be
    /// dropped when it rejoins as a replica. The price: a shard that misses replicas
    /// refuses writes until they are back. Off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fencing: Option<FencingSpec>,

    /// Cache node image; the operator's `MERIDIAN_NODE_IMAGE` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("size(self) > 0").message("image must not be empty; omit it to use the operator's default node image"))]
    #[schemars(length(max = 1024))]
    pub image: Option<String>,

    /// Image pull policy of the cache node containers: Always, IfNotPresent or Never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self in ['Always', 'IfNotPresent', 'Never']").message("imagePullPolicy must be one of Always, IfNotPresent, Never"))]
    #[schemars(length(max = 16))]
    pub image_pull_policy: Option<String>,

    /// CPU and memory of each cache node container. Leave headroom above `memory.maxmemory`
    /// for connection buffers and replication backlogs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

impl Default for CacheClusterSpec {
    fn default() -> Self {
        Self {
            shards: DEFAULT_SHARDS,
            replicas_per_shard: DEFAULT_REPLICAS_PER_SHARD,
            consistency: Consistency::default(),
            cross_region: CrossRegionSpec::default(),
            memory: MemorySpec::default(),
            default_ttl_seconds: None,
            origin: None,
            auth: None,
            tls: None,
            network_policy: None,
            fencing: None,
            image: None,
            image_pull_policy: None,
            resources: None,
        }
    }
}

/// When a primary stops accepting writes (Redis `min-replicas-to-write` /
/// `min-replicas-max-lag`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct FencingSpec {
    /// Replicas that must have acknowledged within `maxLagSeconds` for the primary to
    /// accept a write; capped at the region's replicas per shard (a region without
    /// replicas is not fenced).
    #[serde(default = "default_fencing_min_replicas")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 5").message("fencing.minReplicas must be between 1 and 5"))]
    pub min_replicas: i32,

    /// Largest age, in seconds, of a replica's last acknowledgement for it to count.
    /// Replicas acknowledge every second; a primary cut off from them refuses writes
    /// after about this long.
    #[serde(default = "default_fencing_max_lag_seconds")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 60").message("fencing.maxLagSeconds must be between 1 and 60"))]
    pub max_lag_seconds: i32,
}

fn default_fencing_min_replicas() -> i32 {
    1
}

fn default_fencing_max_lag_seconds() -> i32 {
    10
}

/// Cross-region write consistency.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    /// Acknowledge writes locally; peers learn asynchronously.
    #[default]
    Eventual,
    /// Acknowledge writes after every peer region acknowledged the invalidation.
    Strong,
}

/// What a region sends its peers when a key changes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CrossRegionMode {
    /// Peers drop their copy and re-read it on the next miss.
    #[default]
    Invalidate,
    /// Peers receive the new value.
    Replicate,
}

/// How writes propagate between regions.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CrossRegionSpec {
    /// `invalidate` (default) or `replicate`.
    #[serde(default)]
    pub mode: CrossRegionMode,

    /// With `consistency: strong`, how long a write waits for peer acknowledgements before it
    /// fails with a clear error; 500 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 60000").message("crossRegion.strongTimeoutMs must be between 1 and 60000"))]
    pub strong_timeout_ms: Option<u32>,

    /// With `mode: replicate`, the largest value shipped to the peer regions, as a byte
    /// quantity (`8Mi` when absent): a string's length, another type's serialized size.
    /// Every write ships the key's whole value, so a key with a larger value is
    /// invalidated in the peers instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(crate::quantity::maxmemory_rule()).message("crossRegion.replicateMaxValueSize must be a byte quantity such as 1Mi, 512Ki or 1048576"))]
    #[schemars(length(max = 32))]
    pub replicate_max_value_size: Option<String>,
}

impl CrossRegionSpec {
    /// The strong-consistency timeout with the default applied.
    pub fn effective_strong_timeout_ms(&self) -> u32 {
        self.strong_timeout_ms.unwrap_or(DEFAULT_STRONG_TIMEOUT_MS)
    }

    /// `replicateMaxValueSize` in bytes (None: absent, the node's default applies).
    pub fn replicate_max_value_bytes(&self) -> Result<Option<u64>, crate::ApiError> {
        self.replicate_max_value_size
            .as_deref()
            .map(crate::parse_byte_quantity)
            .transpose()
    }
}

/// Memory limit and eviction of every node.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemorySpec {
    /// Memory for keys and values per node, as a byte quantity (`256Mi`, `2Gi`, `500M`,
    /// `1073741824`). Absent or `0` means no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(crate::quantity::maxmemory_rule()).message("memory.maxmemory must be a byte quantity such as 256Mi, 1.5Gi, 500M or 1073741824"))]
    // maxLength bounds the API server's CEL cost estimate for the regex.
    #[schemars(length(max = 32))]
    pub maxmemory: Option<String>,

    /// What to drop when `maxmemory` is reached: `sieve` (default), `allkeys-lru`,
    /// `allkeys-lfu`, `allkeys-random`, `volatile-lru`, `volatile-lfu`, `volatile-random`,
    /// `volatile-ttl` or `noeviction` (writes fail when full).
    #[serde(default)]
    pub eviction_policy: EvictionPolicy,
}

impl MemorySpec {
    /// `maxmemory` in bytes; `Ok(None)` when unset.
    pub fn maxmemory_bytes(&self) -> Result<Option<u64>, crate::ApiError> {
        self.maxmemory
            .as_deref()
            .map(crate::parse_byte_quantity)
            .transpose()
    }
}

/// Eviction policy; names follow Redis' `maxmemory-policy` where they overlap.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum EvictionPolicy {
    /// SIEVE over all keys: scan-resistant, near-LRU hit rates at lower cost.
    #[default]
    Sieve,
    /// Approximate LRU over all keys.
    AllkeysLru,
    /// Approximate LFU over all keys.
    AllkeysLfu,
    /// Random keys.
    AllkeysRandom,
    /// Approximate LRU over keys with a TTL.
    VolatileLru,
    /// Approximate LFU over keys with a TTL.
    VolatileLfu,
    /// Random keys with a TTL.
    VolatileRandom,
    /// Keys with the nearest expiry first.
    VolatileTtl,
    /// Never evict; writes fail when memory is full.
    Noeviction,
}

impl EvictionPolicy {
    /// The name as written in the CRD and on the node's command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sieve => "sieve",
            Self::AllkeysLru => "allkeys-lru",
            Self::AllkeysLfu => "allkeys-lfu",
            Self::AllkeysRandom => "allkeys-random",
            Self::VolatileLru => "volatile-lru",
            Self::VolatileLfu => "volatile-lfu",
            Self::VolatileRandom => "volatile-random",
            Self::VolatileTtl => "volatile-ttl",
            Self::Noeviction => "noeviction",
        }
    }
}

impl Consistency {
    /// The name as written in the CRD.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Eventual => "eventual",
            Self::Strong => "strong",
        }
    }
}

impl CrossRegionMode {
    /// The name as written in the CRD.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Invalidate => "invalidate",
            Self::Replicate => "replicate",
        }
    }
}

/// HTTP origin behind the cache.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = Rule::new(
    "(has(self.readThrough) && self.readThrough) || (has(self.writeThrough) && self.writeThrough) || (has(self.writeBehind) && self.writeBehind)"
).message("origin needs readThrough, writeThrough or writeBehind set to true; remove origin to run without one"))]
#[x_kube(validation = Rule::new(
    "!(has(self.writeThrough) && self.writeThrough && has(self.writeBehind) && self.writeBehind)"
).message("origin.writeThrough and origin.writeBehind exclude each other: a write reaches the origin before (writeThrough) or after (writeBehind) the cache; set one of them"))]
#[serde(rename_all = "camelCase")]
pub struct OriginSpec {
    /// Base URL; the key is appended as a path segment. Must start with http:// or https://.
    #[x_kube(validation = Rule::new("self.startsWith('http://') || self.startsWith('https://')").message("origin.url must start with http:// or https://"))]
    #[schemars(length(max = 2048))]
    pub url: String,

    /// On a miss, fetch the key from the origin (concurrent misses share one fetch).
    #[serde(default)]
    pub read_through: bool,

    /// Acknowledge a write only after the origin accepted it.
    #[serde(default)]
    pub write_through: bool,

    /// Acknowledge a write once cached and send it to the origin afterwards: queued per
    /// key (coalesced), flushed in batches with retries, replicated so a failover keeps
    /// it. Writes acknowledged but not flushed are lost only if the primary and every
    /// replica that received them are lost. Excludes writeThrough.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub write_behind: bool,

    /// Keys the write-behind queue holds at most (default 100000); a write to another
    /// key is refused while it is full (writes to queued keys still succeed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 10000000").message("origin.writeBehindMaxKeys must be between 1 and 10000000"))]
    pub write_behind_max_keys: Option<u32>,

    /// Per-request timeout towards the origin in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 60000").message("origin.timeoutMs must be between 1 and 60000"))]
    pub timeout_ms: Option<u32>,
}

/// Who may reach the cache pods.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Build the NetworkPolicy (default true).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Who may connect as a client (RESP 6379, HTTP API 8080), as NetworkPolicy peers
    /// (`podSelector`, `namespaceSelector`, `ipBlock`). Empty: every pod in the
    /// CacheCluster's namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub clients: Vec<k8s_openapi::api::networking::v1::NetworkPolicyPeer>,
}

impl Default for NetworkPolicySpec {
    fn default() -> Self {
        NetworkPolicySpec {
            enabled: true,
            clients: Vec::new(),
        }
    }
}

fn default_true() -> bool {
    true
}

/// Client authentication.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = Rule::new(
    "!has(self.mode) || self.mode == 'Password' || !has(self.secretRef)"
).message("auth.secretRef names a password, but auth.mode is Disabled: remove one of them").field_path(".secretRef"))]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// `Password` (default): clients must `AUTH` with the password. `Disabled`: no
    /// authentication; anyone who can reach the pods can run any command.
    #[serde(default)]
    pub mode: AuthMode,
    /// Secret key holding the password clients must send with AUTH. Unset: the
    /// operator generates one in the Secret `<cluster>-auth`, key `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
    /// ACL users for applications, besides `default` (the password above, every
    /// command but the admin surface). Each logs in with `AUTH <name> <password>` and
    /// may run what its rules allow. Only the operator's own user may run the admin
    /// surface (topology, replication, configuration, users, FLUSHALL, MIGRATE).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("self.all(u, self.exists_one(v, v.name == u.name))").message("auth.users must not name a user twice"))]
    pub users: Vec<AclUserSpec>,
}

/// An application user.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AclUserSpec {
    /// User name for `AUTH <name> <password>`.
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9._-]+$') && self != 'default' && !self.startsWith('meridian-')").message("auth.users[].name must be letters, digits, '.', '_' or '-', and neither 'default' nor start with 'meridian-' (the operator's own users)"))]
    #[schemars(length(min = 1, max = 64))]
    pub name: String,
    /// Secret key holding the user's password.
    pub password_secret_ref: SecretKeyRef,
    /// Command rules in Redis ACL syntax, applied in order after `-@all`: `+@read`,
    /// `+@write`, `-@dangerous`, `+get`, `-flushall`, `+client|setname`. Default:
    /// `+@all -@admin` (everything but the admin surface). `@admin` commands are
    /// refused to application users whatever the rules say.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 128)))]
    #[x_kube(validation = Rule::new("self.all(r, r.matches('^[+-]@?[a-z0-9._|-]+$'))").message("auth.users[].commands entries look like +@read, -@dangerous, +get or +client|setname"))]
    pub commands: Vec<String>,
    /// Key patterns (Redis glob syntax) the user may touch. Default: every key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 256)))]
    #[x_kube(validation = Rule::new("self.all(p, p.matches('^[^\\\\s]+$'))").message("auth.users[].keys entries are glob patterns without spaces, at most 256 characters"))]
    pub keys: Vec<String>,
    /// Pub/sub channel patterns the user may use. Default: every channel.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 256)))]
    #[x_kube(validation = Rule::new("self.all(p, p.matches('^[^\\\\s]+$'))").message("auth.users[].channels entries are glob patterns without spaces, at most 256 characters"))]
    pub channels: Vec<String>,
}

/// Whether clients authenticate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum AuthMode {
    #[default]
    Password,
    Disabled,
}

/// Where a cluster's client password is: the Secret the spec names, or the one the
/// operator generates for it.
#[derive(Clone, Debug, PartialEq)]
pub enum PasswordSource {
    /// `spec.auth.secretRef`.
    Given(SecretKeyRef),
    /// The Secret the operator creates (`<cluster>-auth`, key `password`).
    Generated(SecretKeyRef),
}

impl PasswordSource {
    pub fn secret(&self) -> &SecretKeyRef {
        match self {
            PasswordSource::Given(secret) | PasswordSource::Generated(secret) => secret,
        }
    }
}

/// Name of the Secret the operator generates a cluster's password in.
pub fn generated_password_secret(cluster: &str) -> String {
    format!("{cluster}-auth")
}

/// Name of the Secret the operator generates its own users' passwords in (keys
/// `operator` and `replication`).
pub fn internal_users_secret(cluster: &str) -> String {
    format!("{cluster}-internal-users")
}

impl CacheClusterSpec {
    /// Where the client password of cluster `cluster` comes from; None when
    /// authentication is disabled.
    pub fn password_source(&self, cluster: &str) -> Option<PasswordSource> {
        let auth = self.auth.clone().unwrap_or_default();
        match (auth.mode, auth.secret_ref) {
            (AuthMode::Disabled, _) => None,
            (AuthMode::Password, Some(secret)) => Some(PasswordSource::Given(secret)),
            (AuthMode::Password, None) => Some(PasswordSource::Generated(SecretKeyRef {
                name: generated_password_secret(cluster),
                key: default_password_key(),
            })),
        }
    }
}

/// A key of a Secret in the resource's namespace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Secret name.
    #[x_kube(validation = Rule::new("size(self) > 0").message("secretRef.name must name a Secret in the same namespace"))]
    #[schemars(length(max = 253))]
    pub name: String,

    /// Key inside the Secret.
    #[serde(default = "default_password_key")]
    #[x_kube(validation = Rule::new("size(self) > 0").message("secretRef.key must not be empty"))]
    #[schemars(length(max = 253))]
    pub key: String,
}

impl Default for SecretKeyRef {
    fn default() -> Self {
        Self {
            name: String::new(),
            key: default_password_key(),
        }
    }
}

/// TLS on the RESP, HTTP API and region-link ports, and on every connection between
/// nodes and from the operator to the nodes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// Secret of type `kubernetes.io/tls` with `tls.crt`, `tls.key` and `ca.crt` (as
    /// cert-manager writes it). Nodes and the operator verify nodes' certificates
    /// against `ca.crt`; a renewed Secret takes effect without restarting pods.
    #[x_kube(validation = Rule::new("size(self) > 0").message("tls.secretName must name a Secret in the same namespace"))]
    #[schemars(length(max = 253))]
    pub secret_name: String,
    /// DNS name every node's certificate carries as a SAN; nodes (replication, slot
    /// migration, region links) and the operator verify other nodes against it (pod
    /// IPs change, so certificates name this instead). Unset: the dialed address (a
    /// pod IP, or a peer region's seed) must be in the certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')").message("tls.serverName must be a lowercase DNS name such as link.orders.example.com"))]
    #[schemars(length(max = 253))]
    pub server_name: Option<String>,

    /// Mutual TLS between nodes: a replica must present a client certificate issued by
    /// `ca.crt` to replicate (PSYNC), and region links must present one to connect.
    /// Nodes present their own `tls.crt`. Applications need none either way.
    #[serde(default)]
    pub require_peer_certificates: bool,
}

/// Observed state of a `CacheCluster`, aggregated over its regions.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CacheClusterStatus {
    /// `metadata.generation` the status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready`, `Progressing` and `Degraded`.
    #[serde(default)]
    pub conditions: Vec<Condition>,

    /// Where the client password is (`spec.auth.secretRef`, or the Secret the operator
    /// generated); absent when authentication is disabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret: Option<SecretKeyRef>,

    /// One entry per `CacheRegion` referencing this cluster.
    #[serde(default)]
    pub regions: Vec<RegionSummary>,

    /// Regions whose `Ready` condition is true.
    #[serde(default)]
    pub ready_regions: i32,
}

/// One region as seen from its cluster.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegionSummary {
    /// Name of the `CacheRegion` object.
    #[serde(default)]
    pub name: String,
    /// The region (`spec.region` of that object).
    #[serde(default)]
    pub region: String,
    /// The region's `Ready` condition is true.
    #[serde(default)]
    pub ready: bool,
    /// Shards the region should run.
    #[serde(default)]
    pub shards: i32,
    /// Shards with a serving primary.
    #[serde(default)]
    pub ready_shards: i32,
    /// Topology epoch the region's nodes run.
    #[serde(default)]
    pub epoch: u64,
}
