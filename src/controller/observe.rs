//! Observe: everything one reconcile of a CacheRegion knows, read once. The cluster's pods
//! (this region's and the sibling regions'), the region's StatefulSets and PDBs, the
//! sibling CacheRegions, and one admin connection per node with its map, replication
//! state and region links. Planning then works from this snapshot alone.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ListParams};
use kube::{Resource, ResourceExt};
use meridian_api::{CacheRegion, labels};

use super::Scope;
use crate::Error;
use crate::names::{self, PodName};
use crate::nodes::{NodeConnection, NodeConnections, ReplicationInfo};
use crate::peers::{PeersReport, SiblingPod, SiblingRegion};
use crate::resources::RegionPlan;
use crate::rollout::{self, Revisions};
use crate::topology_plan::{NodeReport, ObservedPod, RegionPods};

/// Timeouts for the per-reconcile node reads: a dead node must not stall a failover.
const NODE_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
const NODE_RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// One reconcile's snapshot of a region.
pub struct Fleet {
    /// This region's cache node pods (every shard).
    pub pods: Vec<ObservedPod>,
    /// Pod name → its `controller-revision-hash` label.
    pub pod_revisions: BTreeMap<PodName, String>,
    /// The region's StatefulSets and PodDisruptionBudgets.
    pub stateful_sets: Vec<StatefulSet>,
    pub pod_disruption_budgets: Vec<PodDisruptionBudget>,
    /// The other regions of the same CacheCluster here, with their pods.
    pub siblings: Vec<SiblingRegion>,
    /// What the nodes answered.
    pub nodes: NodeReads,
}

/// What the nodes answered, and the connections that serve the rest of the reconcile.
#[derive(Default)]
pub struct NodeReads {
    pub connections: NodeConnections,
    pub reports: Vec<NodeReport>,
    /// `INFO replication` of the nodes that answered it, by pod name.
    pub replication: HashMap<PodName, ReplicationInfo>,
    /// `MERIDIAN.PEERS GET` of the nodes that answered it, by pod name.
    pub peers: HashMap<PodName, PeersReport>,
    /// Pods that did not answer, with the error.
    pub unreachable: HashMap<PodName, Error>,
}

/// Reads the region once: the Kubernetes objects, then every node with an IP (any shard)
/// except those the probes flag, so a hung primary costs its failover no extra timeout
/// ([`NodeReads::cover`] reads them later with the probe's short timeout).
pub async fn observe(scope: &Scope<'_>, plan: &RegionPlan<'_>) -> Result<Fleet, Error> {
    let client = &scope.ctx.client;
    let selector = names::selector_string(&names::region_node_selector(
        &plan.cluster_name,
        &plan.region_name,
    ));
    let params = ListParams::default().labels(&selector);
    let stateful_sets = Api::<StatefulSet>::namespaced(client.clone(), &plan.namespace)
        .list(&params)
        .await?
        .items;
    let pod_disruption_budgets =
        Api::<PodDisruptionBudget>::namespaced(client.clone(), &plan.namespace)
            .list(&params)
            .await?
            .items;
    let sibling_names = sibling_regions(scope, plan).await?;
    // One list for this region's pods and the siblings': every node pod of the cluster.
    let cluster_selector = names::selector_string(&BTreeMap::from([
        (labels::NAME.to_string(), labels::APP_NAME.to_string()),
        (
            labels::COMPONENT.to_string(),
            names::COMPONENT_NODE.to_string(),
        ),
        (labels::CLUSTER.to_string(), plan.cluster_name.clone()),
    ]));
    let mut siblings: BTreeMap<String, Vec<SiblingPod>> = sibling_names
        .into_iter()
        .map(|region| (region, Vec::new()))
        .collect();
    let mut pods = Vec::new();
    let mut pod_revisions = BTreeMap::new();
    for pod in Api::<Pod>::namespaced(client.clone(), &plan.namespace)
        .list(&ListParams::default().labels(&cluster_selector))
        .await?
    {
        let Some(region) = pod.labels().get(labels::REGION) else {
            continue;
        };
        let Some(observed) = ObservedPod::from_pod(&pod) else {
            continue;
        };
        if *region == plan.region_name {
            if let Some(revision) = pod.labels().get(rollout::REVISION_LABEL) {
                pod_revisions.insert(observed.name.clone(), revision.clone());
            }
            pods.push(observed);
        } else if let Some(members) = siblings.get_mut(region) {
            members.push(SiblingPod {
                ip: observed.ip,
                ready: observed.ready,
            });
        }
    }
    let highest = pods
        .iter()
        .map(|pod| pod.shard.saturating_add(1))
        .fold(plan.shards, u16::max);
    let answering = pods
        .iter()
        .filter(|pod| !probes_flag(scope, pod))
        .cloned()
        .collect();
    let all = RegionPods::group(answering, highest, plan.pods_per_shard());
    let nodes = read_nodes(all.iter(), scope).await;
    Ok(Fleet {
        pods,
        pod_revisions,
        stateful_sets,
        pod_disruption_budgets,
        siblings: siblings
            .into_iter()
            .map(|(region, pods)| SiblingRegion { region, pods })
            .collect(),
        nodes,
    })
}

impl Fleet {
    /// The pods of shards `0..shards` (the desired ones plus any still draining).
    pub fn region_pods(&self, shards: u16, plan: &RegionPlan<'_>) -> RegionPods {
        RegionPods::group(self.pods.clone(), shards, plan.pods_per_shard())
    }

    /// What the StatefulSets and pods say about template revisions; `applied` are the
    /// StatefulSets as this reconcile's apply returned them (newer than the list).
    pub fn revisions(&self, applied: &[StatefulSet], region: &CacheRegion) -> Revisions {
        let mut update_revision = BTreeMap::new();
        for stateful_set in self.stateful_sets.iter().chain(applied) {
            if let Some(shard) = owned_shard(stateful_set, region) {
                update_revision.insert(shard, update_revision_of(stateful_set));
            }
        }
        Revisions {
            update_revision,
            pod_revision: self.pod_revisions.clone(),
        }
    }
}

/// The StatefulSet's `status.updateRevision`, once its controller has seen the latest
/// template (until then, it still names the previous one).
fn update_revision_of(stateful_set: &StatefulSet) -> Option<String> {
    let status = stateful_set.status.as_ref()?;
    let observed_latest = status.observed_generation.is_some()
        && status.observed_generation == stateful_set.metadata.generation;
    status.update_revision.clone().filter(|_| observed_latest)
}

/// Shard index of an object we created, if it is controlled by `region`.
pub fn owned_shard<K: Resource>(object: &K, region: &CacheRegion) -> Option<u16> {
    let uid = region.uid()?;
    let controlled = object
        .owner_references()
        .iter()
        .any(|owner| owner.uid == uid && owner.controller == Some(true));
    if !controlled {
        return None;
    }
    object.labels().get(labels::SHARD)?.parse().ok()
}

/// Names (`spec.region`) of the other live regions of the same CacheCluster.
async fn sibling_regions(scope: &Scope<'_>, plan: &RegionPlan<'_>) -> Result<Vec<String>, Error> {
    let regions: Api<CacheRegion> = Api::namespaced(scope.ctx.client.clone(), &plan.namespace);
    Ok(regions
        .list(&ListParams::default())
        .await?
        .into_iter()
        .filter(|candidate| {
            candidate.spec.cluster_ref.name == plan.cluster_name
                && candidate.spec.region != plan.region_name
                && candidate.metadata.deletion_timestamp.is_none()
        })
        .map(|candidate| candidate.spec.region)
        .collect())
}

/// Whether `pod` (at its current IP) failed the primary probes or, recently, a
/// reconcile's read: see [`crate::probe::PrimaryProbes::is_suspect`].
fn probes_flag(scope: &Scope<'_>, pod: &ObservedPod) -> bool {
    pod.addr()
        .is_some_and(|addr| scope.ctx.probes.is_suspect(&addr))
}

/// Opens an admin connection to every pod with an IP (concurrently, short timeouts) and
/// reads its map, its replication state and its region links. A node that cannot give
/// its map is unreachable; a failed INFO or PEERS only leaves that part unknown.
async fn read_nodes<'a>(
    pods: impl IntoIterator<Item = &'a ObservedPod>,
    scope: &Scope<'_>,
) -> NodeReads {
    let access = &scope.access;
    let probes = &scope.ctx.probes;
    let attempts = pods.into_iter().filter_map(|pod| {
        let addr = pod.addr()?;
        let name = pod.name.clone();
        // A node the probes flag, or that did not answer the last read, gets the probe's
        // short timeout: a hung process accepts connections (the kernel does) but never
        // answers, and a failover waiting on this read must not wait the full timeout.
        let response_timeout = if probes.is_suspect(&addr) {
            crate::probe::PROBE_TIMEOUT
        } else {
            NODE_RESPONSE_TIMEOUT
        };
        Some(async move {
            let result = async {
                let mut connection = NodeConnection::open_with_timeout(
                    &addr,
                    access,
                    NODE_CONNECT_TIMEOUT,
                    response_timeout,
                )
                .await?;
                let map = connection.topology().await?;
                let replication = connection.replication_info().await.ok();
                let peers = match connection.peers().await {
                    Ok(peers) => Some(peers),
                    Err(error) => {
                        tracing::debug!(%error, "cannot read region links");
                        None
                    }
                };
                Ok::<_, Error>((connection, map, replication, peers))
            }
            .await;
            let unanswered = result.as_ref().err().is_some_and(Error::is_unanswered);
            probes.record_read(&addr, !unanswered);
            (name, result)
        })
    });
    let mut reads = NodeReads::default();
    for (pod, result) in futures::future::join_all(attempts).await {
        match result {
            Ok((connection, map, replication, peers)) => {
                reads.reports.push(NodeReport {
                    pod: pod.clone(),
                    map,
                });
                if let Some(info) = replication {
                    reads.replication.insert(pod.clone(), info);
                }
                if let Some(peers) = peers {
                    reads.peers.insert(pod.clone(), peers);
                }
                reads.connections.insert(pod, connection);
            }
            Err(error) => {
                reads.unreachable.insert(pod, error);
            }
        }
    }
    reads
}

impl NodeReads {
    /// Brings the reads up to `pods`: forgets pods that are gone or moved to another
    /// address, and reads the ones without an answer yet (pods the probes flagged, pods
    /// that did not answer before), so every pod is read once per reconcile.
    pub async fn cover(&mut self, pods: &RegionPods, scope: &Scope<'_>) {
        let current: HashMap<&PodName, String> = pods
            .iter()
            .filter_map(|pod| Some((&pod.name, pod.addr()?.endpoint())))
            .collect();
        self.connections.retain(|pod, connection| {
            current.get(pod).map(String::as_str) == Some(connection.endpoint())
        });
        let kept = &self.connections;
        self.reports
            .retain(|report| kept.contains(report.pod.as_str()));
        self.replication
            .retain(|pod, _| kept.contains(pod.as_str()));
        self.peers.retain(|pod, _| kept.contains(pod.as_str()));
        self.unreachable.clear();
        let missing = pods
            .iter()
            .filter(|pod| !self.connections.contains(pod.name.as_str()));
        let more = read_nodes(missing, scope).await;
        self.connections.extend(more.connections);
        self.reports.extend(more.reports);
        self.replication.extend(more.replication);
        self.peers.extend(more.peers);
        self.unreachable.extend(more.unreachable);
    }

    /// Pods that answered this reconcile's read.
    pub fn answered(&self) -> BTreeSet<PodName> {
        self.connections.pods().into_iter().collect()
    }
}

/// `INFO replication` of every node this reconcile reached, read again after the node
/// step (a failover or push changed it), on the connections already open.
pub async fn refresh_replication(
    connections: &mut NodeConnections,
) -> HashMap<PodName, ReplicationInfo> {
    connections
        .query_all(async |connection| connection.replication_info().await)
        .await
        .into_iter()
        .filter_map(|(pod, info)| Some((pod, info.ok()?)))
        .collect()
}
