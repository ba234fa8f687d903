//! Wires region links: tells every reachable node of the region its peer regions
//! (`MERIDIAN.PEERS SET`, planned by [`crate::peers::desired_peers`]) where it runs
//! something else, and returns the link state the primaries report, for status.

use std::collections::{BTreeMap, HashMap};

use kube::runtime::events::EventType;
use meridian_api::PeerStatus;
use meridian_topology::TopologyMap;

use super::executor::Executor;
use crate::names::PodName;
use crate::peers::{self, PeerConfig, PeersReport, SiblingRegion};

/// Pushes the desired peers where a node runs other ones; `reports` are what the nodes
/// said when this reconcile read them (by pod name).
pub async fn wire_peers(
    exec: &mut Executor<'_>,
    region_name: &str,
    map: &TopologyMap,
    siblings: &[SiblingRegion],
    reports: HashMap<PodName, PeersReport>,
) -> Vec<PeerStatus> {
    let nodes: BTreeMap<PodName, PeersReport> = reports.into_iter().collect();
    let mut known: Vec<PeerConfig> = Vec::new();
    for report in nodes.values() {
        for config in report.configs() {
            if !known.iter().any(|held| held.region == config.region) {
                known.push(config);
            }
        }
    }
    let desired =
        peers::desired_peers(region_name, siblings, &exec.scope.region.spec.peers, &known);
    let mut pushed = Vec::new();
    let mut current: BTreeMap<PodName, PeersReport> = BTreeMap::new();
    for (pod, report) in nodes {
        if !peers::needs_push(&desired, &report) {
            current.insert(pod, report);
            continue;
        }
        let Some(connection) = exec.connections.get_mut(pod.as_str()) else {
            continue;
        };
        match connection.set_peers(&desired).await {
            // Links of changed peers restart: no report vouches for them yet.
            Ok(()) => pushed.push(pod),
            Err(error) => tracing::warn!(%pod, %error, "MERIDIAN.PEERS SET failed"),
        }
    }
    if !pushed.is_empty() {
        let described = if desired.is_empty() {
            "none".to_string()
        } else {
            desired
                .iter()
                .map(|peer| format!("{} ({})", peer.region, peer.seeds.join(", ")))
                .collect::<Vec<_>>()
                .join("; ")
        };
        exec.event(
            EventType::Normal,
            "PeersConfigured",
            "WireRegionLinks",
            format!(
                "peer regions {described} pushed to {} node(s): {}",
                pushed.len(),
                PodName::join(&pushed, ", ")
            ),
        )
        .await;
    }
    let primaries: Vec<Option<&PeersReport>> = map
        .shards
        .iter()
        .map(|shard| current.get(shard.primary.id.as_str()))
        .collect();
    let statuses = peers::peer_statuses(&desired, &primaries);
    for status in statuses.iter().filter(|status| !status.connected) {
        tracing::info!(
            region = %region_name,
            peer = %status.region,
            errors = %status.message.as_deref().unwrap_or_default(),
            "region link not up"
        );
    }
    statuses
}
