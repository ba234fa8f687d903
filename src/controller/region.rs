//! CacheRegion controller: read → validate → build → apply → orchestrate → status.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use meridian_api::{
    CacheCluster, CacheRegion, CacheRegionStatus, FIELD_MANAGER, PeerStatus, ReshardingStatus,
    conditions, labels,
};
use meridian_topology::TopologyMap;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use super::orchestration::{Orchestration, ReshardProgress};
use super::rollout::RolloutInput;
use super::{Context, region_key};
use crate::Error;
use crate::conditions::{DesiredCondition, merge};
use crate::names;
use crate::nodes::{self, NodeConnection, PushOutcome, ReplicationInfo};
use crate::peers::{self, PeerConfig, PeersReport, SiblingPod, SiblingRegion};
use crate::reshard::{self, NodeOpenSlots, ReshardStep, SlotMove};
use crate::resources::{self, RegionPlan, RegionResources};
use crate::rollout::{self, Revisions};
use crate::topology_plan::{
    self, NodeReport, ObservedPod, PrimaryDown, PrimaryReason, PromotionCandidate, RegionPods,
    TopologyDecision,
};

pub const KIND: &str = "CacheRegion";

/// Condition reason while a shard's primary restarted without the data a replica kept.
pub const PRIMARY_LOST_DATA: &str = "PrimaryLostData";

/// Requeue while pods start or a push is in flight.
const REQUEUE_PROGRESSING: Duration = Duration::from_secs(10);
/// Periodic drift check once everything is ready; also how old the status's replication
/// lag and link state may get, since nothing else triggers a reconcile when a replica
/// falls behind.
const REQUEUE_READY: Duration = Duration::from_secs(30);
/// Requeue while a bootstrapped region recovers (failed-over pods coming back).
const REQUEUE_RECOVERING: Duration = Duration::from_secs(2);
/// Timeouts for the per-reconcile node reads: a dead node must not stall a failover.
const NODE_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
const NODE_RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Requeue while a region link is down (links come up within a second or two).
const REQUEUE_PEERS_DOWN: Duration = Duration::from_secs(3);
/// Requeue while slots migrate (each reconcile moves a few batches).
const REQUEUE_RESHARDING: Duration = Duration::from_millis(200);
/// Slots per resharding step: one epoch bump per batch.
const RESHARD_BATCH: usize = 128;
/// Time one reconcile spends moving batches before it writes status and requeues.
const RESHARD_BUDGET: Duration = Duration::from_secs(3);
/// Requeue during a rolling update (pod changes also trigger reconciles).
const REQUEUE_ROLLING: Duration = Duration::from_millis(500);
/// Requeue after a spec the operator cannot satisfy (the watch brings changes sooner).
const REQUEUE_DEGRADED: Duration = Duration::from_secs(60);

/// Runs the CacheRegion controller until the stream ends.
pub async fn run(ctx: Arc<Context>, namespace: Option<String>) {
    let client = ctx.client.clone();
    let regions: Api<CacheRegion> = scoped(&client, namespace.as_deref());
    let owned = watcher::Config::default().labels(&format!(
        "{}={}",
        labels::MANAGED_BY,
        labels::MANAGED_BY_OPERATOR
    ));
    let pods_config = watcher::Config::default().labels(&format!(
        "{}={},{}={}",
        labels::MANAGED_BY,
        labels::MANAGED_BY_OPERATOR,
        labels::COMPONENT,
        names::COMPONENT_NODE
    ));
    // Probe failures trigger a reconcile of every region; the reconcile decides.
    let (probe_trigger, probe_events) = futures::channel::mpsc::channel(4);
    tokio::spawn(crate::probe::run(ctx.probes.clone(), probe_trigger));
    let controller =
        Controller::new(regions, watcher::Config::default()).reconcile_all_on(probe_events);
    let store = controller.store();
    let pod_store = store.clone();
    let cluster_store = store.clone();
    controller
        .owns(
            scoped::<StatefulSet>(&client, namespace.as_deref()),
            owned.clone(),
        )
        .owns(
            scoped::<Service>(&client, namespace.as_deref()),
            owned.clone(),
        )
        .owns(
            scoped::<ConfigMap>(&client, namespace.as_deref()),
            owned.clone(),
        )
        .owns(
            scoped::<PodDisruptionBudget>(&client, namespace.as_deref()),
            owned,
        )
        .watches(
            scoped::<Pod>(&client, namespace.as_deref()),
            pods_config,
            move |pod| regions_of_pod(&pod_store, &pod),
        )
        .watches(
            scoped::<CacheCluster>(&client, namespace.as_deref()),
            watcher::Config::default(),
            move |cluster| regions_of_cluster(&cluster_store, &cluster),
        )
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(region = %object.name, "reconciled"),
                Err(error) => tracing::debug!(%error, "CacheRegion reconcile stream error"),
            }
        })
        .await;
}

fn scoped<K>(client: &kube::Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

/// Every CacheRegion of the pod's cluster: its own region orchestrates it, the sibling
/// regions re-wire their region links when its IP or readiness changes.
fn regions_of_pod(store: &Store<CacheRegion>, pod: &Pod) -> Vec<ObjectRef<CacheRegion>> {
    let Some(cluster) = pod.labels().get(labels::CLUSTER) else {
        return Vec::new();
    };
    store
        .state()
        .into_iter()
        .filter(|candidate| {
            candidate.namespace() == pod.namespace() && &candidate.spec.cluster_ref.name == cluster
        })
        .map(|candidate| ObjectRef::from_obj(candidate.as_ref()))
        .collect()
}

fn regions_of_cluster(
    store: &Store<CacheRegion>,
    cluster: &CacheCluster,
) -> Vec<ObjectRef<CacheRegion>> {
    store
        .state()
        .into_iter()
        .filter(|candidate| {
            candidate.namespace() == cluster.namespace()
                && candidate.spec.cluster_ref.name == cluster.name_any()
        })
        .map(|candidate| ObjectRef::from_obj(candidate.as_ref()))
        .collect()
}

pub async fn reconcile(region: Arc<CacheRegion>, ctx: Arc<Context>) -> Result<Action, Error> {
    if region.metadata.deletion_timestamp.is_some() {
        // Owner references let the garbage collector remove everything.
        return Ok(Action::await_change());
    }
    let started = Instant::now();
    ctx.metrics.reconcile_started(KIND);
    let result = reconcile_region(&region, &ctx).await;
    ctx.metrics.reconcile_finished(KIND, started.elapsed());
    match result {
        Ok(action) => {
            ctx.reset_failures(region.as_ref());
            Ok(action)
        }
        Err(error) if error.is_user_actionable() => {
            ctx.metrics.reconcile_failed(KIND, error.metric_label());
            report_degraded(&region, &ctx, &error).await?;
            ctx.reset_failures(region.as_ref());
            Ok(Action::requeue(REQUEUE_DEGRADED))
        }
        Err(error) => Err(error),
    }
}

pub fn error_policy(region: Arc<CacheRegion>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_failed(KIND, error.metric_label());
    tracing::warn!(region = %region.name_any(), %error, "CacheRegion reconcile failed");
    ctx.backoff(region.as_ref())
}

async fn reconcile_region(region: &CacheRegion, ctx: &Context) -> Result<Action, Error> {
    // read
    let namespace = region
        .namespace()
        .ok_or(Error::MissingObjectField("CacheRegion metadata.namespace"))?;
    let clusters: Api<CacheCluster> = Api::namespaced(ctx.client.clone(), &namespace);
    let cluster = clusters
        .get_opt(&region.spec.cluster_ref.name)
        .await?
        .ok_or_else(|| Error::ClusterNotFound {
            name: region.spec.cluster_ref.name.clone(),
        })?;
    let password = ctx.auth_password(&cluster).await?;

    // validate
    let plan = resources::validate(&cluster, region)?;

    // observe the nodes' map: shards above the desired count stay while the map lists
    // them (scale-in drains their slots first)
    let (retention, mut reads) = observe_retention(region, &plan, password.as_deref(), ctx).await?;

    // build (pure)
    let desired = resources::build_keeping(&plan, &ctx.build, &retention.keep);

    // apply
    adopt_by_cluster(region, &cluster, ctx).await?;
    apply_all(ctx, &namespace, &desired).await?;
    if retention.known {
        remove_orphaned_shards(region, &plan, &retention.keep, ctx).await?;
    }

    // orchestrate the nodes
    let (pods, revisions) = observe_pods(region, ctx, &plan, retention.shards).await?;
    // One connection per node per reconcile: map, replication and links read once
    // (above, and here for pods that appeared or did not answer), then the node step,
    // the links and status use it.
    reads.cover(&pods, password.as_deref(), ctx).await;
    let orchestration = match orchestrate(
        region,
        &plan,
        &pods,
        &revisions,
        password.as_deref(),
        &mut reads,
        ctx,
    )
    .await
    {
        Ok(orchestration) => orchestration,
        Err(error) => {
            // Show the problem in status before the error policy backs off.
            let status = region_status(
                region,
                &plan,
                &pods,
                None,
                Some(&error),
                None,
                &HashMap::new(),
                Timestamp::now(),
            );
            ctx.apply_status(region, &status).await?;
            return Err(error);
        }
    };

    // wire region links (once the region has a topology)
    let peer_links = match orchestration.map() {
        Some(map) => Some(wire_peers(region, &plan, map, &mut reads, ctx).await?),
        None => None,
    };

    // status
    let replication = match orchestration.map() {
        Some(_) => refresh_replication(&mut reads.connections).await,
        None => HashMap::new(),
    };
    let status = region_status(
        region,
        &plan,
        &pods,
        Some(&orchestration),
        None,
        peer_links.as_deref(),
        &replication,
        Timestamp::now(),
    );
    ctx.apply_status(region, &status).await?;
    let links_down = peer_links
        .as_ref()
        .is_some_and(|links| links.iter().any(|link| !link.connected));
    Ok(match orchestration {
        Orchestration::Recovering { .. } => Action::requeue(REQUEUE_RECOVERING),
        Orchestration::Resharding { .. } => Action::requeue(REQUEUE_RESHARDING),
        Orchestration::Updating { .. } => Action::requeue(REQUEUE_ROLLING),
        _ if links_down => Action::requeue(REQUEUE_PEERS_DOWN),
        Orchestration::InSync { .. } if pods.all_ready() => Action::requeue(REQUEUE_READY),
        _ => Action::requeue(REQUEUE_PROGRESSING),
    })
}

/// Tells every reachable node of the region its peer regions (`MERIDIAN.PEERS SET`) where
/// it runs something else, and returns the link state the primaries report.
async fn wire_peers(
    region: &CacheRegion,
    plan: &RegionPlan<'_>,
    map: &TopologyMap,
    reads: &mut NodeReads,
    ctx: &Context,
) -> Result<Vec<PeerStatus>, Error> {
    let siblings = observe_sibling_regions(ctx, plan).await?;
    // What the nodes said when this reconcile read them, in pod order (nothing after
    // this step reads them).
    let nodes: BTreeMap<String, PeersReport> =
        std::mem::take(&mut reads.peers).into_iter().collect();
    let mut known: Vec<PeerConfig> = Vec::new();
    for report in nodes.values() {
        for config in report.configs() {
            if !known.iter().any(|held| held.region == config.region) {
                known.push(config);
            }
        }
    }
    let desired = peers::desired_peers(&plan.region_name, &siblings, &region.spec.peers, &known);
    let mut pushed = Vec::new();
    let mut reports: BTreeMap<String, PeersReport> = BTreeMap::new();
    for (pod, report) in nodes {
        if peers::needs_push(&desired, &report) {
            let Some(connection) = reads.connections.get_mut(&pod) else {
                continue;
            };
            match connection.set_peers(&desired).await {
                // Links of changed peers restart: no report vouches for them yet.
                Ok(()) => pushed.push(pod),
                Err(error) => tracing::warn!(%pod, %error, "MERIDIAN.PEERS SET failed"),
            }
        } else {
            reports.insert(pod, report);
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
        ctx.event(
            &region.object_ref(&()),
            EventType::Normal,
            "PeersConfigured",
            "WireRegionLinks",
            format!(
                "peer regions {described} pushed to {} node(s): {}",
                pushed.len(),
                pushed.join(", ")
            ),
        )
        .await;
    }
    let primaries: Vec<Option<&PeersReport>> = map
        .shards
        .iter()
        .map(|shard| reports.get(&shard.primary.id))
        .collect();
    let statuses = peers::peer_statuses(&desired, &primaries);
    for status in statuses.iter().filter(|status| !status.connected) {
        tracing::info!(
            region = %plan.region_name,
            peer = %status.region,
            errors = %status.message.as_deref().unwrap_or_default(),
            "region link not up"
        );
    }
    Ok(statuses)
}

/// Whether `pod` (at its current IP) failed the primary probes or, recently, a
/// reconcile's read: see [`crate::probe::PrimaryProbes::is_suspect`].
fn probes_flag(ctx: &Context, pod: &ObservedPod) -> bool {
    pod.addr().is_some_and(|addr| ctx.probes.is_suspect(&addr))
}

/// Connects to every pod that has an IP and runs `query` on each, all at once (bounded
/// by the node timeouts, so a dead node cannot stall the reconcile).
async fn query_each_pod<'a, T>(
    pods: impl IntoIterator<Item = &'a ObservedPod>,
    password: Option<&str>,
    ctx: &Context,
    query: impl AsyncFn(&mut NodeConnection) -> Result<T, Error>,
) -> Vec<(String, Result<(NodeConnection, T), Error>)> {
    let query = &query;
    let attempts = pods.into_iter().filter_map(|pod| {
        let addr = pod.addr()?;
        // A node the probes flag, or that did not answer the last read, gets the
        // probe's short timeout: a hung process accepts connections (the kernel
        // does) but never answers, and a failover waiting on this read must not
        // wait the full response timeout.
        let response_timeout = if ctx.probes.is_suspect(&addr) {
            crate::probe::PROBE_TIMEOUT
        } else {
            NODE_RESPONSE_TIMEOUT
        };
        Some(async move {
            let result = async {
                let mut connection = NodeConnection::open_with_timeout(
                    &addr,
                    password,
                    NODE_CONNECT_TIMEOUT,
                    response_timeout,
                )
                .await?;
                let answer = query(&mut connection).await?;
                Ok((connection, answer))
            }
            .await;
            let unanswered = result.as_ref().err().is_some_and(Error::is_unanswered);
            ctx.probes.record_read(&addr, !unanswered);
            (addr.id, result)
        })
    });
    futures::future::join_all(attempts).await
}

/// The other regions of the same CacheCluster in this Kubernetes cluster, with their pods.
async fn observe_sibling_regions(
    ctx: &Context,
    plan: &RegionPlan<'_>,
) -> Result<Vec<SiblingRegion>, Error> {
    let regions: Api<CacheRegion> = Api::namespaced(ctx.client.clone(), &plan.namespace);
    let siblings: Vec<String> = regions
        .list(&ListParams::default())
        .await?
        .into_iter()
        .filter(|candidate| {
            candidate.spec.cluster_ref.name == plan.cluster_name
                && candidate.spec.region != plan.region_name
                && candidate.metadata.deletion_timestamp.is_none()
        })
        .map(|candidate| candidate.spec.region)
        .collect();
    if siblings.is_empty() {
        return Ok(Vec::new());
    }
    let selector = names::selector_string(&BTreeMap::from([
        (labels::NAME.to_string(), labels::APP_NAME.to_string()),
        (
            labels::COMPONENT.to_string(),
            names::COMPONENT_NODE.to_string(),
        ),
        (labels::CLUSTER.to_string(), plan.cluster_name.clone()),
    ]));
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &plan.namespace);
    let mut by_region: BTreeMap<String, Vec<SiblingPod>> = siblings
        .into_iter()
        .map(|region| (region, Vec::new()))
        .collect();
    for pod in pods.list(&ListParams::default().labels(&selector)).await? {
        let Some(region) = pod.labels().get(labels::REGION).cloned() else {
            continue;
        };
        let (Some(members), Some(observed)) =
            (by_region.get_mut(&region), ObservedPod::from_pod(&pod))
        else {
            continue;
        };
        members.push(SiblingPod {
            ip: observed.ip,
            ready: observed.ready,
        });
    }
    Ok(by_region
        .into_iter()
        .map(|(region, pods)| SiblingRegion { region, pods })
        .collect())
}

/// Adds the (non-controller) owner reference CacheRegion → CacheCluster.
async fn adopt_by_cluster(
    region: &CacheRegion,
    cluster: &CacheCluster,
    ctx: &Context,
) -> Result<(), Error> {
    let owner = resources::cluster_owner_reference(cluster)?;
    let already = region
        .owner_references()
        .iter()
        .any(|existing| existing.uid == owner.uid);
    if already {
        return Ok(());
    }
    let namespace = region
        .namespace()
        .ok_or(Error::MissingObjectField("CacheRegion metadata.namespace"))?;
    let api: Api<CacheRegion> = Api::namespaced(ctx.client.clone(), &namespace);
    let patch = serde_json::json!({
        "apiVersion": CacheRegion::api_version(&()),
        "kind": CacheRegion::kind(&()),
        "metadata": { "name": region.name_any(), "ownerReferences": [owner] },
    });
    api.patch(
        &region.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

async fn apply_one<K>(ctx: &Context, namespace: &str, object: &K) -> Result<(), Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    api.patch(
        &object.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(object),
    )
    .await?;
    Ok(())
}

async fn apply_all(ctx: &Context, namespace: &str, desired: &RegionResources) -> Result<(), Error> {
    apply_one(ctx, namespace, &desired.config_map).await?;
    for service in &desired.services {
        apply_one(ctx, namespace, service).await?;
    }
    for stateful_set in &desired.stateful_sets {
        apply_one(ctx, namespace, stateful_set).await?;
    }
    for pdb in &desired.pod_disruption_budgets {
        apply_one(ctx, namespace, pdb).await?;
    }
    Ok(())
}

/// Shard index of an object we created, if it is controlled by `region`.
fn owned_shard<K: Resource>(object: &K, region: &CacheRegion) -> Option<u16> {
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

/// Which shards' StatefulSets must exist, from the map the nodes report.
struct Retention {
    /// Shards at or above the desired count to keep (the map still lists them).
    keep: BTreeSet<u16>,
    /// Shards to run: the desired count, or more while shards above it drain.
    shards: u16,
    /// False when no node answered although the region was bootstrapped: then nothing
    /// is deleted (the shards above the count may still hold keys).
    known: bool,
}

/// Reads the nodes' maps (every pod of the region, any shard) to decide [`Retention`];
/// the reads serve the rest of the reconcile.
async fn observe_retention(
    region: &CacheRegion,
    plan: &RegionPlan<'_>,
    password: Option<&str>,
    ctx: &Context,
) -> Result<(Retention, NodeReads), Error> {
    let (observed, _) = list_region_pods(ctx, plan).await?;
    let highest = observed
        .iter()
        .map(|pod| pod.shard.saturating_add(1))
        .fold(plan.shards, u16::max);
    // Any node's map will do here: skip the ones the probes flag, so a hung primary
    // costs its failover no extra timeout (orchestrate reads it again).
    let answering = observed
        .into_iter()
        .filter(|pod| !probes_flag(ctx, pod))
        .collect();
    let all = RegionPods::group(answering, highest, plan.pods_per_shard());
    let reads = read_nodes(all.iter(), password, ctx).await;
    let current = topology_plan::newest_reported(&reads.reports)
        .filter(|map| map.cluster == plan.cluster_name && map.region == plan.region_name);
    let bootstrapped = region
        .status
        .as_ref()
        .is_some_and(|status| status.epoch > 0);
    let retention = match current {
        Some(map) => Retention {
            keep: reshard::draining_shards(Some(map), plan.shards),
            shards: reshard::effective_shards(Some(map), plan.shards),
            known: true,
        },
        None if bootstrapped => {
            // Keep what status last showed; delete nothing until a node answers.
            let shown = region
                .status
                .as_ref()
                .map_or(0, |status| status.shards.len())
                .min(usize::from(u16::MAX)) as u16;
            Retention {
                keep: (plan.shards..shown).collect(),
                shards: plan.shards.max(shown),
                known: false,
            }
        }
        None => Retention {
            keep: BTreeSet::new(),
            shards: plan.shards,
            known: true,
        },
    };
    Ok((retention, reads))
}

/// Scale-in: deletes StatefulSets and PDBs of shards at or beyond the desired count,
/// except the ones in `keep` (still in the map: draining, or drained but not yet
/// dropped from it).
async fn remove_orphaned_shards(
    region: &CacheRegion,
    plan: &RegionPlan<'_>,
    keep: &BTreeSet<u16>,
    ctx: &Context,
) -> Result<(), Error> {
    let selector = names::selector_string(&names::region_node_selector(
        &plan.cluster_name,
        &plan.region_name,
    ));
    let params = ListParams::default().labels(&selector);
    let stateful_sets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &plan.namespace);
    for stateful_set in stateful_sets.list(&params).await? {
        if let Some(shard) = owned_shard(&stateful_set, region)
            && shard >= plan.shards
            && !keep.contains(&shard)
        {
            stateful_sets
                .delete(&stateful_set.name_any(), &DeleteParams::background())
                .await?;
            ctx.event(
                &region.object_ref(&()),
                EventType::Normal,
                "ShardRemoved",
                "ScaleIn",
                format!(
                    "deleted StatefulSet {} (shard {shard} >= {} shards, drained of every slot)",
                    stateful_set.name_any(),
                    plan.shards
                ),
            )
            .await;
        }
    }
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(ctx.client.clone(), &plan.namespace);
    for pdb in pdbs.list(&params).await? {
        if let Some(shard) = owned_shard(&pdb, region)
            && shard >= plan.shards
            && !keep.contains(&shard)
        {
            pdbs.delete(&pdb.name_any(), &DeleteParams::background())
                .await?;
        }
    }
    Ok(())
}

/// The region's cache node pods, and each one's `controller-revision-hash` label.
async fn list_region_pods(
    ctx: &Context,
    plan: &RegionPlan<'_>,
) -> Result<(Vec<ObservedPod>, BTreeMap<String, String>), Error> {
    let selector = names::selector_string(&names::region_node_selector(
        &plan.cluster_name,
        &plan.region_name,
    ));
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &plan.namespace);
    let mut observed = Vec::new();
    let mut revisions = BTreeMap::new();
    for pod in pods.list(&ListParams::default().labels(&selector)).await? {
        if let Some(revision) = pod.labels().get(rollout::REVISION_LABEL) {
            revisions.insert(pod.name_any(), revision.clone());
        }
        observed.extend(ObservedPod::from_pod(&pod));
    }
    Ok((observed, revisions))
}

/// The pods of shards `0..shards` (the desired ones plus any still draining), and what
/// the pods and StatefulSets say about template revisions.
async fn observe_pods(
    region: &CacheRegion,
    ctx: &Context,
    plan: &RegionPlan<'_>,
    shards: u16,
) -> Result<(RegionPods, Revisions), Error> {
    let (observed, pod_revision) = list_region_pods(ctx, plan).await?;
    let selector = names::selector_string(&names::region_node_selector(
        &plan.cluster_name,
        &plan.region_name,
    ));
    let stateful_sets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &plan.namespace);
    let mut update_revision = BTreeMap::new();
    for stateful_set in stateful_sets
        .list(&ListParams::default().labels(&selector))
        .await?
    {
        let Some(shard) = owned_shard(&stateful_set, region) else {
            continue;
        };
        // Until the StatefulSet controller has seen the latest template, its
        // updateRevision still names the previous one.
        let observed_latest = stateful_set
            .status
            .as_ref()
            .and_then(|status| status.observed_generation)
            .is_some_and(|observed| Some(observed) == stateful_set.metadata.generation);
        let revision = stateful_set
            .status
            .and_then(|status| status.update_revision)
            .filter(|_| observed_latest);
        update_revision.insert(shard, revision);
    }
    Ok((
        RegionPods::group(observed, shards, plan.pods_per_shard()),
        Revisions {
            update_revision,
            pod_revision,
        },
    ))
}

/// What [`read_nodes`] learnt.
struct NodeReads {
    connections: HashMap<String, NodeConnection>,
    reports: Vec<NodeReport>,
    /// `INFO replication` of the nodes that answered it, by pod name.
    replication: HashMap<String, ReplicationInfo>,
    /// `MERIDIAN.PEERS GET` of the nodes that answered it, by pod name.
    peers: HashMap<String, PeersReport>,
    /// Pods that did not answer, with the error.
    unreachable: HashMap<String, Error>,
}

/// Opens an admin connection to every pod with an IP (concurrently, short timeouts) and
/// reads its map, its replication state and its region links. Unreachable pods end up
/// in the error map. The connections serve the rest of the reconcile.
async fn read_nodes<'a>(
    pods: impl IntoIterator<Item = &'a ObservedPod>,
    password: Option<&str>,
    ctx: &Context,
) -> NodeReads {
    let mut reads = NodeReads {
        connections: HashMap::new(),
        reports: Vec::new(),
        replication: HashMap::new(),
        peers: HashMap::new(),
        unreachable: HashMap::new(),
    };
    let answers = query_each_pod(pods, password, ctx, async |node| {
        let map = node.topology().await?;
        // The map decides reachability; a failed INFO or PEERS only leaves the node's
        // replication state or links unknown.
        let replication = node.replication_info().await.ok();
        let peers = match node.peers().await {
            Ok(peers) => Some(peers),
            Err(error) => {
                tracing::debug!(%error, "cannot read region links");
                None
            }
        };
        Ok((map, replication, peers))
    })
    .await;
    for (pod, result) in answers {
        match result {
            Ok((connection, (map, replication, peers))) => {
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
    /// address, and reads the ones without an answer yet (new pods, pods that did not
    /// answer before), so every pod is read once per reconcile.
    async fn cover(&mut self, pods: &RegionPods, password: Option<&str>, ctx: &Context) {
        let current: HashMap<&str, String> = pods
            .iter()
            .filter_map(|pod| Some((pod.name.as_str(), pod.addr()?.endpoint())))
            .collect();
        self.connections.retain(|pod, connection| {
            current.get(pod.as_str()).map(String::as_str) == Some(connection.endpoint())
        });
        let kept = &self.connections;
        self.reports.retain(|report| kept.contains_key(&report.pod));
        self.replication.retain(|pod, _| kept.contains_key(pod));
        self.peers.retain(|pod, _| kept.contains_key(pod));
        self.unreachable.clear();
        let missing = pods
            .iter()
            .filter(|pod| !self.connections.contains_key(&pod.name));
        let more = read_nodes(missing, password, ctx).await;
        self.connections.extend(more.connections);
        self.reports.extend(more.reports);
        self.replication.extend(more.replication);
        self.peers.extend(more.peers);
        self.unreachable.extend(more.unreachable);
    }
}

/// `INFO replication` of every node this reconcile reached, read again after the node
/// step (a failover or push changed it), on the connections already open.
async fn refresh_replication(
    connections: &mut HashMap<String, NodeConnection>,
) -> HashMap<String, ReplicationInfo> {
    futures::future::join_all(connections.iter_mut().map(|(pod, connection)| async move {
        connection
            .replication_info()
            .await
            .ok()
            .map(|info| (pod.clone(), info))
    }))
    .await
    .into_iter()
    .flatten()
    .collect()
}

/// From what [`read_nodes`] read, fails over shards whose primary is gone, plans and
/// pushes, over the connections it opened.
async fn orchestrate(
    region: &CacheRegion,
    plan: &RegionPlan<'_>,
    pods: &RegionPods,
    revisions: &Revisions,
    password: Option<&str>,
    reads: &mut NodeReads,
    ctx: &Context,
) -> Result<Orchestration, Error> {
    let NodeReads {
        connections,
        reports,
        replication,
        unreachable,
        ..
    } = reads;
    let (reports, replication) = (&*reports, &*replication);
    let status_epoch = region.status.as_ref().map_or(0, |status| status.epoch);
    let current = topology_plan::newest_reported(reports)
        .filter(|map| map.cluster == plan.cluster_name && map.region == plan.region_name)
        .cloned();

    if let Some(current) = &current {
        // The probes' verdict holds only if this reconcile could not read the primary
        // either: one slow moment on a loaded node is no failover. A primary that lost
        // its data to a restart fails over too, rather than getting the map back.
        let down = topology_plan::shards_down(
            current,
            pods,
            |primary| ctx.probes.is_unreachable(primary) && !connections.contains_key(&primary.id),
            reports,
            replication,
        );
        if !down.is_empty() {
            return fail_over(
                region,
                plan,
                pods,
                current,
                &down,
                reports,
                status_epoch,
                connections,
                password,
                ctx,
            )
            .await;
        }
        ctx.probes.watch(&region_key(region), current, password);
        if !pods.all_ready() {
            // Catch up nodes that missed the current map (e.g. an operator restart in
            // the middle of a failover); new pods join once everything is ready.
            push_to_lagging(current, reports, connections, ctx).await;
            return Ok(Orchestration::Recovering {
                map: current.clone(),
                ready: pods.ready_count(),
                expected: pods.expected(),
                headless: Vec::new(),
                lost_data: Vec::new(),
            });
        }
    }
    if !pods.all_ready() {
        return Ok(Orchestration::WaitingForPods {
            ready: pods.ready_count(),
            expected: pods.expected(),
        });
    }
    // Planning a new epoch needs every node's answer.
    for pod in pods.iter() {
        if let Some(error) = unreachable.remove(&pod.name) {
            return Err(error);
        }
    }
    let decision = topology_plan::plan(
        &plan.cluster_name,
        &plan.region_name,
        pods,
        reports,
        status_epoch,
    )?;
    // What the settling step after this needs (a resharding or rolling-update step).
    let settle = RolloutInput {
        region,
        plan,
        pods,
        revisions,
        reports,
        status_epoch,
        password,
    };
    let (map, targets, new_epoch, primaries, slots_reassigned) = match decision {
        TopologyDecision::InSync { map } => {
            ctx.probes.watch(&region_key(region), &map, password);
            return reshard_then_roll(&settle, map, connections, ctx).await;
        }
        TopologyDecision::Push {
            map,
            targets,
            new_epoch,
            primaries,
            slots_reassigned,
        } => (map, targets, new_epoch, primaries, slots_reassigned),
    };
    let reference = region.object_ref(&());
    if new_epoch {
        for choice in &primaries {
            let why = match choice.reason {
                PrimaryReason::KeptFromCurrentMap => "kept from the current topology",
                PrimaryReason::ReportedByNode => "the node reports being primary",
                PrimaryReason::LowestOrdinal => "no node claimed the shard; lowest ordinal",
            };
            ctx.event(
                &reference,
                EventType::Normal,
                "ShardPrimaryChosen",
                "ChoosePrimary",
                format!("shard {}: primary {} ({why})", choice.shard, choice.pod),
            )
            .await;
        }
        if slots_reassigned {
            ctx.event(
                &reference,
                EventType::Normal,
                "SlotsAssigned",
                "AssignSlots",
                format!("split 16384 slots evenly over {} shards", map.shards.len()),
            )
            .await;
        }
    }
    // Nodes listed as replicas attach to their primary on their own when they get the map.
    let mut stale = Vec::new();
    let mut applied = Vec::new();
    for target in &targets {
        let Some(connection) = connections.get_mut(target) else {
            continue;
        };
        match connection.push_topology(&map).await? {
            PushOutcome::Applied => {
                ctx.metrics.topology_pushes.inc();
                applied.push(target.clone());
            }
            PushOutcome::Stale(message) => stale.push(format!("{target}: {message}")),
        }
    }
    ctx.probes.watch(&region_key(region), &map, password);
    ctx.report_push(&reference, &map, &applied, &stale).await;
    if !stale.is_empty() {
        return Ok(Orchestration::PushIncomplete { map, stale });
    }
    // Everyone holds the map now (e.g. a new shard joined with no slots, a replaced pod
    // came back): go on with moving slots or replacing pods right away rather than at
    // the next periodic reconcile.
    reshard_then_roll(&settle, map, connections, ctx).await
}

/// In a region where every node holds `map`: moves slots if the shard count changed,
/// otherwise replaces outdated pods (a rolling update never runs during a resharding).
async fn reshard_then_roll(
    input: &RolloutInput<'_>,
    map: TopologyMap,
    connections: &mut HashMap<String, NodeConnection>,
    ctx: &Context,
) -> Result<Orchestration, Error> {
    let orchestration = reshard_region(
        input.region,
        input.plan,
        input.pods,
        map,
        input.reports,
        input.status_epoch,
        connections,
        input.password,
        ctx,
    )
    .await?;
    match orchestration {
        Orchestration::InSync { map } => super::rollout::roll(input, map, connections, ctx).await,
        other => Ok(other),
    }
}

/// Moves slots towards the desired shard count, a few batches per reconcile, from what
/// the nodes report: the map and the slots they hold MIGRATING / IMPORTING (so a step an
/// earlier operator left half-done is finished first). Each batch ends with a map that
/// names the new owner at the next epoch, pushed to every node. Drained shards leave the
/// map once they own nothing; their StatefulSets are deleted by the next reconcile.
#[allow(clippy::too_many_arguments)]
async fn reshard_region(
    region: &CacheRegion,
    plan: &RegionPlan<'_>,
    pods: &RegionPods,
    mut map: TopologyMap,
    reports: &[NodeReport],
    status_epoch: u64,
    connections: &mut HashMap<String, NodeConnection>,
    password: Option<&str>,
    ctx: &Context,
) -> Result<Orchestration, Error> {
    let reference = region.object_ref(&());
    let previous = region
        .status
        .as_ref()
        .and_then(|status| status.resharding.clone());
    // Shards serving slots before this reconcile (a joined shard is still empty).
    let from_shards = map
        .shards
        .iter()
        .filter(|shard| !shard.slots.is_empty())
        .count() as u16;
    let mut highest_epoch = topology_plan::highest_epoch(reports, status_epoch, &map);
    let deadline = Instant::now() + RESHARD_BUDGET;
    let mut started = previous.is_some();
    let mut moved = 0usize;
    let progress = |remaining: usize, moved: usize, next: Option<SlotMove>, dropped: Vec<u32>| {
        ReshardProgress {
            from_shards,
            to_shards: plan.shards,
            remaining,
            moved,
            next,
            dropped,
        }
    };
    loop {
        let mut open = Vec::with_capacity(map.shards.len());
        for shard in &map.shards {
            let Some(connection) = connections.get_mut(&shard.primary.id) else {
                return Err(Error::NodeTopology {
                    node: shard.primary.id.clone(),
                    detail: "no connection to the primary to read its open slots".into(),
                });
            };
            open.push(NodeOpenSlots {
                pod: shard.primary.id.clone(),
                open: connection.open_slots().await?,
            });
        }
        let planned = reshard::plan_step(&map, plan.shards, &open, RESHARD_BATCH);
        match planned.step {
            ReshardStep::Done => {
                if previous.is_some() || started {
                    ctx.event(
                        &reference,
                        EventType::Normal,
                        "ReshardingFinished",
                        "Reshard",
                        format!(
                            "{} shard(s) serve every slot at topology epoch {}",
                            map.shards.len(),
                            map.epoch
                        ),
                    )
                    .await;
                }
                return Ok(Orchestration::InSync { map });
            }
            ReshardStep::Blocked(reason) => {
                tracing::warn!(region = %plan.region_name, %reason, "resharding blocked");
                return Ok(Orchestration::InSync { map });
            }
            ReshardStep::DropShards { removed } => {
                let next = reshard::map_without_shards(&map, &removed, highest_epoch + 1);
                let everyone: Vec<String> = map.nodes().map(|node| node.id.clone()).collect();
                if let Some(stale) = push_in_order(&next, &everyone, connections, ctx).await? {
                    return Ok(Orchestration::PushIncomplete { map: next, stale });
                }
                ctx.probes.watch(&region_key(region), &next, password);
                ctx.event(
                    &reference,
                    EventType::Normal,
                    "ShardsDrained",
                    "Reshard",
                    format!(
                        "shard(s) {} own no slot and left the topology (epoch {}); their StatefulSets are removed next",
                        join(&removed),
                        next.epoch
                    ),
                )
                .await;
                return Ok(Orchestration::Resharding {
                    map: next,
                    progress: progress(0, moved, None, removed),
                });
            }
            ReshardStep::Move { batch, resumed } => {
                let source = shard_primary(&map, batch.from)?;
                let destination = shard_primary(&map, batch.to)?;
                // A primary that is down gets failed over first (next reconcile); never
                // start or finish a move against it.
                let down = [&source, &destination].into_iter().any(|primary| {
                    topology_plan::node_down(primary, pods, ctx.probes.is_unreachable(primary))
                        .is_some()
                });
                if down || Instant::now() >= deadline {
                    return Ok(Orchestration::Resharding {
                        map,
                        progress: progress(planned.remaining, moved, Some(batch), Vec::new()),
                    });
                }
                if !started {
                    started = true;
                    ctx.event(
                        &reference,
                        EventType::Normal,
                        "ReshardingStarted",
                        "Reshard",
                        format!(
                            "{} → {} shard(s): {} slot(s) move with their keys",
                            from_shards, plan.shards, planned.remaining
                        ),
                    )
                    .await;
                }
                if resumed {
                    ctx.event(
                        &reference,
                        EventType::Normal,
                        "SlotMigrationResumed",
                        "Reshard",
                        format!(
                            "finishing slot(s) {} left in transit from shard {} to shard {}",
                            batch.ranges().join(","),
                            batch.from,
                            batch.to
                        ),
                    )
                    .await;
                }
                let mut source_connection =
                    NodeConnection::open_for_migration(&source, password).await?;
                let mut destination_connection =
                    NodeConnection::open_for_migration(&destination, password).await?;
                let keys = nodes::move_slots(
                    &mut source_connection,
                    &source,
                    &mut destination_connection,
                    &destination,
                    &batch.slots,
                    password,
                )
                .await?;
                let next = reshard::map_after_move(&map, &batch, highest_epoch + 1);
                let order = reshard::push_order(&next, &batch);
                if let Some(stale) = push_in_order(&next, &order, connections, ctx).await? {
                    return Ok(Orchestration::PushIncomplete { map: next, stale });
                }
                tracing::info!(
                    region = %plan.region_name,
                    slots = %batch.ranges().join(","),
                    from = batch.from,
                    to = batch.to,
                    keys,
                    epoch = next.epoch,
                    "slots migrated"
                );
                ctx.probes.watch(&region_key(region), &next, password);
                highest_epoch = next.epoch;
                moved += batch.slots.len();
                map = next;
            }
        }
    }
}

fn shard_primary(map: &TopologyMap, index: u32) -> Result<meridian_topology::NodeAddr, Error> {
    map.shards
        .iter()
        .find(|shard| shard.index == index)
        .map(|shard| shard.primary.clone())
        .ok_or_else(|| Error::NodeTopology {
            node: format!("shard {index}"),
            detail: "shard missing from the topology map".into(),
        })
}

fn join(indexes: &[u32]) -> String {
    indexes
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Pushes `map` to the pods in `order` that the operator has a connection to. Returns the
/// refusals (a node holding a newer epoch) when there were any.
async fn push_in_order(
    map: &TopologyMap,
    order: &[String],
    connections: &mut HashMap<String, NodeConnection>,
    ctx: &Context,
) -> Result<Option<Vec<String>>, Error> {
    let mut stale = Vec::new();
    for pod in order {
        let Some(connection) = connections.get_mut(pod) else {
            continue;
        };
        match connection.push_topology(map).await? {
            PushOutcome::Applied => {
                ctx.metrics.topology_pushes.inc();
            }
            PushOutcome::Stale(message) => stale.push(format!("{pod}: {message}")),
        }
    }
    Ok((!stale.is_empty()).then_some(stale))
}

/// Re-sends `map` to reachable nodes it lists that hold an older epoch. Best effort.
async fn push_to_lagging(
    map: &TopologyMap,
    reports: &[NodeReport],
    connections: &mut HashMap<String, NodeConnection>,
    ctx: &Context,
) {
    for report in reports {
        let lagging = report
            .map
            .as_ref()
            .is_none_or(|held| held.epoch < map.epoch);
        if !lagging || map.node(&report.pod).is_none() {
            continue;
        }
        if let Some(connection) = connections.get_mut(&report.pod) {
            match connection.push_topology(map).await {
                Ok(PushOutcome::Applied) => {
                    ctx.metrics.topology_pushes.inc();
                }
                Ok(PushOutcome::Stale(message)) => {
                    tracing::debug!(pod = %report.pod, %message, "node holds a newer map")
                }
                Err(error) => tracing::debug!(pod = %report.pod, %error, "catch-up push failed"),
            }
        }
    }
}

/// Promotes the most up-to-date replica of every shard in `down` and pushes the next map:
/// to the promoted nodes first (the map naming a node primary makes it stop replicating),
/// then to every other reachable node (replicas re-point on their own).
#[allow(clippy::too_many_arguments)]
async fn fail_over(
    region: &CacheRegion,
    plan: &RegionPlan<'_>,
    pods: &RegionPods,
    current: &TopologyMap,
    down: &BTreeMap<u32, PrimaryDown>,
    reports: &[NodeReport],
    status_epoch: u64,
    connections: &mut HashMap<String, NodeConnection>,
    password: Option<&str>,
    ctx: &Context,
) -> Result<Orchestration, Error> {
    let mut candidates = Vec::new();
    for shard in current
        .shards
        .iter()
        .filter(|shard| down.contains_key(&shard.index))
    {
        for replica in &shard.replicas {
            let usable = topology_plan::promotable(replica, pods);
            let Some(connection) = connections.get_mut(&replica.id).filter(|_| usable) else {
                continue;
            };
            match connection.replication_info().await {
                Ok(info) => candidates.push(PromotionCandidate {
                    pod: replica.id.clone(),
                    offset: info.offset,
                }),
                Err(error) => {
                    tracing::warn!(replica = %replica.id, %error, "cannot read replication offset")
                }
            }
        }
    }
    let highest_seen = topology_plan::highest_epoch(reports, status_epoch, current);
    let failover = topology_plan::plan_failover(current, down, &candidates, highest_seen + 1);
    let reference = region.object_ref(&());
    let lost_data: Vec<u32> = down
        .iter()
        .filter(|(_, reason)| **reason == PrimaryDown::RestartedEmpty)
        .map(|(shard, _)| *shard)
        .collect();
    for shard in current
        .shards
        .iter()
        .filter(|shard| lost_data.contains(&shard.index))
    {
        ctx.event(
            &reference,
            EventType::Warning,
            PRIMARY_LOST_DATA,
            "Failover",
            format!(
                "shard {}: primary {} restarted without its data, which its replicas kept; \
                 failing over instead of giving it the map back",
                shard.index, shard.primary.id
            ),
        )
        .await;
    }
    let recovering = |map: TopologyMap, headless: Vec<u32>| Orchestration::Recovering {
        map,
        ready: pods.ready_count(),
        expected: pods.expected(),
        headless,
        lost_data: lost_data.clone(),
    };
    let Some(map) = failover.map else {
        for shard in &failover.headless {
            tracing::warn!(
                shard,
                "shard primary is down and no replica can be promoted"
            );
        }
        ctx.probes.watch(&region_key(region), current, password);
        return Ok(recovering(current.clone(), failover.headless));
    };
    for promotion in &failover.promotions {
        ctx.event(
            &reference,
            EventType::Warning,
            "FailoverStarted",
            "Failover",
            format!(
                "shard {}: primary {} is down ({}); promoting {} (replication offset {})",
                promotion.shard,
                promotion.old_primary,
                promotion.reason,
                promotion.new_primary,
                promotion.offset
            ),
        )
        .await;
    }
    let mut applied = Vec::new();
    let mut stale = Vec::new();
    for promotion in &failover.promotions {
        let Some(connection) = connections.get_mut(&promotion.new_primary) else {
            continue;
        };
        match connection.push_topology(&map).await? {
            PushOutcome::Applied => {
                ctx.metrics.topology_pushes.inc();
                ctx.metrics.failover(&plan.region_name);
                applied.push(promotion.new_primary.clone());
                ctx.event(
                    &reference,
                    EventType::Normal,
                    "PrimaryPromoted",
                    "Failover",
                    format!(
                        "shard {}: {} promoted to primary replacing {} (replication offset {}, epoch {})",
                        promotion.shard,
                        promotion.new_primary,
                        promotion.old_primary,
                        promotion.offset,
                        map.epoch
                    ),
                )
                .await;
            }
            PushOutcome::Stale(message) => {
                stale.push(format!("{}: {message}", promotion.new_primary));
            }
        }
    }
    let promoted: Vec<&str> = failover
        .promotions
        .iter()
        .map(|promotion| promotion.new_primary.as_str())
        .collect();
    // A primary that lost its data and could not be replaced yet gets no map: the map
    // would make it primary, empty, and its replicas' data unreachable.
    let withheld = topology_plan::withheld_primaries(&map, &failover.headless, &lost_data);
    for (pod, connection) in connections.iter_mut() {
        if promoted.contains(&pod.as_str()) || withheld.contains(&pod.as_str()) {
            continue;
        }
        match connection.push_topology(&map).await {
            Ok(PushOutcome::Applied) => {
                ctx.metrics.topology_pushes.inc();
                applied.push(pod.clone());
            }
            Ok(PushOutcome::Stale(message)) => stale.push(format!("{pod}: {message}")),
            Err(error) => tracing::warn!(%pod, %error, "failover push failed"),
        }
    }
    ctx.probes.watch(&region_key(region), &map, password);
    ctx.report_push(&reference, &map, &applied, &stale).await;
    if !stale.is_empty() {
        return Ok(Orchestration::PushIncomplete { map, stale });
    }
    Ok(recovering(map, failover.headless))
}

/// The status to write. Pure: `now` is passed in.
#[allow(clippy::too_many_arguments)]
pub fn region_status(
    region: &CacheRegion,
    plan: &RegionPlan<'_>,
    pods: &RegionPods,
    orchestration: Option<&Orchestration>,
    node_error: Option<&Error>,
    peer_links: Option<&[PeerStatus]>,
    replication: &HashMap<String, ReplicationInfo>,
    now: Timestamp,
) -> CacheRegionStatus {
    let previous = region.status.clone().unwrap_or_default();
    let peers = match peer_links {
        Some(links) => links.to_vec(),
        // Not asked this time (no topology yet, or the nodes were unreachable): keep what
        // was known for the configured remote peers and the in-cluster ones seen before.
        None => previous.peers.clone(),
    };
    let down_peers: Vec<String> = peers
        .iter()
        .filter(|peer| !peer.connected)
        .map(|peer| match &peer.message {
            Some(why) => format!("{} ({why})", peer.region),
            None => peer.region.clone(),
        })
        .collect();
    let map = orchestration.and_then(Orchestration::map);
    let resharding = match orchestration {
        Some(Orchestration::Resharding { progress, .. }) => {
            Some(resharding_status(previous.resharding.as_ref(), progress))
        }
        Some(Orchestration::InSync { .. }) => None,
        // Interrupted (pods, failover, refused push): the change is still under way.
        _ => previous.resharding.clone(),
    };
    let rollout = match orchestration {
        Some(Orchestration::Updating { rollout, .. }) => Some(rollout.clone()),
        Some(Orchestration::InSync { .. }) => None,
        // Interrupted (a replaced pod is coming back, a failover): still under way.
        _ => previous.rollout.clone(),
    };
    let updating = matches!(orchestration, Some(Orchestration::Updating { .. }));
    let ready_shards = topology_plan::ready_shards(map, pods);
    // Shards whose primary restarted without the data a replica kept: the failover
    // decided this reconcile, or what the nodes show now.
    let mut lost_data: Vec<u32> = match orchestration {
        Some(Orchestration::Recovering { lost_data, .. }) => lost_data.clone(),
        _ => Vec::new(),
    };
    for shard in map.iter().flat_map(|map| &map.shards) {
        if topology_plan::primary_lost_data(shard, replication).is_some() {
            lost_data.push(shard.index);
        }
    }
    lost_data.sort_unstable();
    lost_data.dedup();
    // A rolling update between two pod replacements serves every slot: Ready. A shard
    // that lost data a replica could keep never is.
    let all_ready = ready_shards == i32::from(plan.shards)
        && lost_data.is_empty()
        && matches!(
            orchestration,
            Some(Orchestration::InSync { .. } | Orchestration::Updating { .. })
        );
    let (progress_reason, progress_message) = match (orchestration, node_error) {
        (_, Some(error)) => (error.condition_reason(), error.to_string()),
        _ if !lost_data.is_empty() => (
            PRIMARY_LOST_DATA,
            format!(
                "shard(s) {}: the primary restarted without its data, which a replica kept; \
                 failing over to that replica instead of making the empty node primary again",
                join(&lost_data)
            ),
        ),
        (Some(Orchestration::WaitingForPods { ready, expected }), _) => (
            "PodsNotReady",
            format!("{ready}/{expected} cache node pods are ready"),
        ),
        (Some(Orchestration::Recovering { headless, .. }), _) if !headless.is_empty() => (
            "NoReachablePrimary",
            format!(
                "shard(s) {} have no reachable primary and no replica to promote",
                headless
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        (
            Some(Orchestration::Recovering {
                ready,
                expected,
                map,
                ..
            }),
            _,
        ) => (
            "PodsNotReady",
            format!(
                "{ready}/{expected} cache node pods are ready; serving at topology epoch {}",
                map.epoch
            ),
        ),
        (Some(Orchestration::Resharding { .. }), _) => (
            "Resharding",
            resharding
                .as_ref()
                .map(resharding_message)
                .unwrap_or_default(),
        ),
        (Some(Orchestration::Updating { rollout, .. }), _) => (
            "RollingUpdate",
            format!(
                "{}/{} pods run the latest template; {}",
                rollout.updated_pods, rollout.pods, rollout.step
            ),
        ),
        (Some(Orchestration::PushIncomplete { stale, .. }), _) => (
            "TopologyPushIncomplete",
            format!("nodes refused the topology: {}", stale.join("; ")),
        ),
        (Some(Orchestration::InSync { map }), _) if all_ready => (
            "AllShardsReady",
            format!(
                "{} shard(s) serving at topology epoch {}",
                plan.shards, map.epoch
            ),
        ),
        (Some(Orchestration::InSync { .. }), _) => (
            "ShardsNotReady",
            format!("{ready_shards}/{} shards ready", plan.shards),
        ),
        (None, None) => ("Reconciling", String::new()),
    };
    let desired = [
        DesiredCondition::new(
            conditions::READY,
            all_ready,
            progress_reason,
            progress_message.clone(),
        ),
        DesiredCondition::new(
            conditions::PROGRESSING,
            (!all_ready || updating) && node_error.is_none(),
            if all_ready && !updating {
                "Reconciled"
            } else {
                progress_reason
            },
            if all_ready && !updating {
                String::new()
            } else {
                progress_message.clone()
            },
        ),
        match (node_error, orchestration) {
            (Some(error), _) => DesiredCondition::new(
                conditions::DEGRADED,
                true,
                error.condition_reason(),
                error.to_string(),
            ),
            (None, _) if !lost_data.is_empty() => DesiredCondition::new(
                conditions::DEGRADED,
                true,
                progress_reason,
                progress_message.clone(),
            ),
            (None, Some(Orchestration::Recovering { headless, .. })) if !headless.is_empty() => {
                DesiredCondition::new(
                    conditions::DEGRADED,
                    true,
                    progress_reason,
                    progress_message.clone(),
                )
            }
            // A peer region being down does not stop this region serving (eventual writes
            // go on; strong writes report TIMEOUT), so it is Degraded, not un-Ready.
            (None, _) if peer_links.is_some() && !down_peers.is_empty() => DesiredCondition::new(
                conditions::DEGRADED,
                true,
                super::cluster::PEER_LINK_DOWN,
                format!(
                    "region link(s) to {} not connected; serving locally, peers converge once reachable",
                    down_peers.join(", ")
                ),
            ),
            (None, _) => DesiredCondition::new(conditions::DEGRADED, false, "AsExpected", ""),
        },
    ];
    CacheRegionStatus {
        observed_generation: region.metadata.generation,
        conditions: merge(
            &previous.conditions,
            &desired,
            region.metadata.generation,
            now,
        ),
        epoch: map.map_or(previous.epoch, |map| map.epoch),
        shards: if map.is_some() || previous.shards.is_empty() {
            topology_plan::shard_statuses(map, pods, replication)
        } else {
            // Keep the last known assignment while nodes are unreachable; refresh what
            // is known of the replicas.
            previous
                .shards
                .iter()
                .cloned()
                .map(|mut shard| {
                    let sync = topology_plan::replica_sync(
                        shard.primary.as_deref(),
                        &shard.replicas,
                        pods,
                        replication,
                    );
                    shard.ready_replicas = sync.in_sync;
                    shard.replication_lag_bytes = sync.largest_lag;
                    shard
                })
                .collect()
        },
        peers,
        ready_shards,
        resharding,
        rollout,
    }
}

/// Resharding progress for status: totals carry over from the previous status while the
/// target shard count is the same (display only; decisions come from the nodes). Pure.
pub fn resharding_status(
    previous: Option<&ReshardingStatus>,
    progress: &ReshardProgress,
) -> ReshardingStatus {
    let remaining = i32::try_from(progress.remaining).unwrap_or(i32::MAX);
    let moved_now = i32::try_from(progress.moved).unwrap_or(i32::MAX);
    let continuing =
        previous.filter(|previous| previous.to_shards == i32::from(progress.to_shards));
    let slots_to_move = match continuing {
        Some(previous) if previous.slots_to_move >= remaining => previous.slots_to_move,
        _ => remaining.saturating_add(moved_now),
    };
    ReshardingStatus {
        from_shards: continuing.map_or(i32::from(progress.from_shards), |previous| {
            previous.from_shards
        }),
        to_shards: i32::from(progress.to_shards),
        slots_to_move,
        slots_moved: slots_to_move - remaining,
        moving_slots: progress
            .next
            .as_ref()
            .map(SlotMove::ranges)
            .unwrap_or_default(),
        moving_from_shard: progress.next.as_ref().map(|batch| batch.from as i32),
        moving_to_shard: progress.next.as_ref().map(|batch| batch.to as i32),
    }
}

/// `moved N of M slots (from → to shards)`, plus what moves next or was dropped.
pub fn resharding_message(status: &ReshardingStatus) -> String {
    let mut message = format!(
        "moved {} of {} slots ({} → {} shards)",
        status.slots_moved, status.slots_to_move, status.from_shards, status.to_shards
    );
    if let (Some(from), Some(to)) = (status.moving_from_shard, status.moving_to_shard) {
        message.push_str(&format!(
            "; next {} from shard {from} to shard {to}",
            status.moving_slots.join(",")
        ));
    } else if status.slots_moved == status.slots_to_move {
        message.push_str("; removing drained shards");
    }
    message
}

/// Status + Warning event for a spec the operator cannot satisfy.
async fn report_degraded(region: &CacheRegion, ctx: &Context, error: &Error) -> Result<(), Error> {
    let status = degraded_status(region, error, Timestamp::now());
    ctx.event(
        &region.object_ref(&()),
        EventType::Warning,
        error.condition_reason(),
        "Reconcile",
        error.to_string(),
    )
    .await;
    ctx.apply_status(region, &status).await
}

/// Previous status with Ready/Progressing False and Degraded True. Pure.
pub fn degraded_status(region: &CacheRegion, error: &Error, now: Timestamp) -> CacheRegionStatus {
    let previous = region.status.clone().unwrap_or_default();
    let reason = error.condition_reason();
    let message = error.to_string();
    let desired = [
        DesiredCondition::new(conditions::READY, false, reason, message.clone()),
        DesiredCondition::new(conditions::PROGRESSING, false, reason, message.clone()),
        DesiredCondition::new(conditions::DEGRADED, true, reason, message),
    ];
    CacheRegionStatus {
        observed_generation: region.metadata.generation,
        conditions: merge(
            &previous.conditions,
            &desired,
            region.metadata.generation,
            now,
        ),
        ..previous
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(remaining: usize, moved: usize, next: Option<SlotMove>) -> ReshardProgress {
        ReshardProgress {
            from_shards: 3,
            to_shards: 4,
            remaining,
            moved,
            next,
            dropped: Vec::new(),
        }
    }

    #[test]
    fn resharding_status_counts_moved_slots_across_reconciles() {
        let batch = SlotMove {
            from: 0,
            to: 3,
            slots: (5333..=5460).collect(),
        };
        let first = resharding_status(None, &progress(3840, 256, Some(batch.clone())));
        assert_eq!(
            first,
            ReshardingStatus {
                from_shards: 3,
                to_shards: 4,
                slots_to_move: 4096,
                slots_moved: 256,
                moving_slots: vec!["5333-5460".into()],
                moving_from_shard: Some(0),
                moving_to_shard: Some(3),
            }
        );
        assert_eq!(
            resharding_message(&first),
            "moved 256 of 4096 slots (3 → 4 shards); next 5333-5460 from shard 0 to shard 3"
        );
        // the next reconcile's map already has 4 shards: totals carry over
        let mut later = progress(1000, 2840, None);
        later.from_shards = 4;
        let second = resharding_status(Some(&first), &later);
        assert_eq!(
            (second.from_shards, second.slots_to_move, second.slots_moved),
            (3, 4096, 3096)
        );
        // a new target starts over
        let mut other = progress(500, 0, None);
        other.to_shards = 2;
        let restarted = resharding_status(Some(&second), &other);
        assert_eq!(
            (
                restarted.to_shards,
                restarted.slots_to_move,
                restarted.slots_moved
            ),
            (2, 500, 0)
        );
        let done = resharding_status(Some(&second), &progress(0, 1000, None));
        assert_eq!(
            resharding_message(&done),
            "moved 4096 of 4096 slots (3 → 4 shards); removing drained shards"
        );
    }
}
