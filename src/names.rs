//! Names and labels of the objects the operator creates for a `CacheRegion`, and the
//! name a cache node goes by ([`PodName`]).
//!
//! The base name is the `CacheRegion`'s `metadata.name` (e.g. `orders-eu`).

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::fmt;

use meridian_api::labels;
use meridian_topology::NodeAddr;

/// Component label value of the cache node pods (and their StatefulSets, PDBs, headless Service).
pub const COMPONENT_NODE: &str = "cache-node";
/// Component label value of the client Service.
pub const COMPONENT_CLIENT: &str = "client";
/// Component label value of the region-link Service.
pub const COMPONENT_LINK: &str = "region-link";
/// Component label value of the node settings ConfigMap.
pub const COMPONENT_CONFIG: &str = "config";

/// Pod template annotation holding a hash of the node settings, so a settings change is
/// visible as a template change (pods are replaced by the operator, `OnDelete`).
pub const CONFIG_HASH_ANNOTATION: &str = "cache.meridian.dev/config-hash";

/// Container name of the cache node in every pod.
pub const NODE_CONTAINER: &str = "node";

pub fn statefulset(base: &str, shard: u16) -> String {
    format!("{base}-{shard}")
}

pub fn pod(base: &str, shard: u16, ordinal: u16) -> PodName {
    PodName(format!("{base}-{shard}-{ordinal}"))
}

pub fn pdb(base: &str, shard: u16) -> String {
    statefulset(base, shard)
}

pub fn headless_service(base: &str) -> String {
    format!("{base}-nodes")
}

pub fn client_service(base: &str) -> String {
    base.to_string()
}

pub fn link_service(base: &str) -> String {
    format!("{base}-link")
}

/// The NetworkPolicy of the region's cache pods.
pub fn network_policy(base: &str) -> String {
    format!("{base}-nodes")
}

/// The Secret holding the region's nodes' ACL file.
pub fn acl_secret(base: &str) -> String {
    format!("{base}-acl")
}

pub fn config_map(base: &str) -> String {
    format!("{base}-config")
}

/// Labels identifying every object of one region of one cluster.
pub fn region_labels(cluster: &str, region: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::NAME.to_string(), labels::APP_NAME.to_string()),
        (labels::INSTANCE.to_string(), cluster.to_string()),
        (labels::COMPONENT.to_string(), component.to_string()),
        (
            labels::MANAGED_BY.to_string(),
            labels::MANAGED_BY_OPERATOR.to_string(),
        ),
        (labels::CLUSTER.to_string(), cluster.to_string()),
        (labels::REGION.to_string(), region.to_string()),
    ])
}

/// Selector matching every cache node pod of a region (all shards).
pub fn region_node_selector(cluster: &str, region: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::NAME.to_string(), labels::APP_NAME.to_string()),
        (labels::COMPONENT.to_string(), COMPONENT_NODE.to_string()),
        (labels::CLUSTER.to_string(), cluster.to_string()),
        (labels::REGION.to_string(), region.to_string()),
    ])
}

/// Selector matching the cache node pods of one shard.
pub fn shard_node_selector(cluster: &str, region: &str, shard: u16) -> BTreeMap<String, String> {
    let mut selector = region_node_selector(cluster, region);
    selector.insert(labels::SHARD.to_string(), shard.to_string());
    selector
}

/// `key=value,...` form of a label map, for list/watch label selectors.
pub fn selector_string(selector: &BTreeMap<String, String>) -> String {
    selector
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The longest base name for which every derived name is still valid: StatefulSet
/// names must leave room for the `-<ordinal>` pod suffix and the 63-character
/// `controller-revision-hash` label value (the StatefulSet name plus an 11-character hash).
pub const MAX_BASE_NAME_LEN: usize = 52 - "-255".len();

/// Which cache node: the name of its pod (`<base>-<shard>-<ordinal>`, the pod's
/// `metadata.name`), which is also the node's id in the topology map (`NodeAddr::id`)
/// and the name its connections, reads and events go by.
///
/// Maps keyed by it are looked up with a `&str` too (`Borrow<str>`), e.g. with a map
/// node's id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodName(String);

impl PodName {
    /// The pod a topology map's node runs in (its id is the pod name).
    pub fn of(node: &NodeAddr) -> PodName {
        PodName(node.id.clone())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `pods` as one line, e.g. `a-0-0, a-0-1` with `", "`.
    pub fn join(pods: &[PodName], separator: &str) -> String {
        pods.iter()
            .map(PodName::as_str)
            .collect::<Vec<_>>()
            .join(separator)
    }
}

impl fmt::Display for PodName {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl Borrow<str> for PodName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for PodName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A name the API (`metadata.name`) or a node (its map, its answers) gives.
impl From<String> for PodName {
    fn from(name: String) -> Self {
        PodName(name)
    }
}

impl From<&str> for PodName {
    fn from(name: &str) -> Self {
        PodName(name.to_string())
    }
}

impl From<PodName> for String {
    fn from(pod: PodName) -> Self {
        pod.0
    }
}

impl PartialEq<str> for PodName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for PodName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// Compares with a map node's id (`NodeAddr::id`).
impl PartialEq<String> for PodName {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

/// A password of 32 letters and digits (190 bits) from the operating system's
/// random source, for the Secret the operator generates when a cluster names none.
pub fn random_password() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut password = String::with_capacity(32);
    while password.len() < 32 {
        let mut bytes = [0u8; 64];
        getrandom::fill(&mut bytes).expect("the operating system's random source");
        // rejection sampling keeps every character equally likely
        for byte in bytes {
            if usize::from(byte) < 256 - 256 % ALPHABET.len() && password.len() < 32 {
                password.push(char::from(ALPHABET[usize::from(byte) % ALPHABET.len()]));
            }
        }
    }
    password
}
