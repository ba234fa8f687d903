//! CacheRegion controller: read → validate → build → apply → orchestrate → status.

use std::collections::HashMap;
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
    CacheCluster, CacheRegion, CacheRegionStatus, FIELD_MANAGER, PeerStatus, conditions, labels,
};
use meridian_topology::TopologyMap;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Context;
use crate::Error;
use crate::conditions::{DesiredCondition, merge};
use crate::names;
use crate::nodes::{AttachOutcome, NodeConnection, PushOutcome};
use crate::resources::{self, RegionPlan, RegionResources};
use crate::topology_plan::{
    self, NodeReport, ObservedPod, PrimaryReason, RegionPods, TopologyDecision,
};

pub const KIND: &str = "CacheRegion";

/// Requeue while pods start or a push is in flight.
const REQUEUE_PROGRESSING: Duration = Duration::from_secs(10);
/// Periodic drift check once everything is ready.
const REQUEUE_READY: Duration = Duration::from_secs(300);
/// Requeue after a spec the operator cannot satisfy (the watch brings changes sooner).
const REQUEUE_DEGRADED: Duration = Duration::from_secs(60);

/// Where the region's nodes stand after the orchestration step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Orchestration {
    /// Not every pod is Running+Ready with an IP yet.
    WaitingForPods { ready: usize, expected: usize },
    /// Every node holds `map`.
    InSync { map: TopologyMap },
    /// Pushed `map`, but some nodes refused it (stale epoch); recompute soon.
    PushIncomplete {
        map: TopologyMap,
        stale: Vec<String>,
    },
}

impl Orchestration {
    fn map(&self) -> Option<&TopologyMap> {
        match self {
            Orchestration::WaitingForPods { .. } => None,
            Orchestration::InSync { map } | Orchestration::PushIncomplete { map, .. } => Some(map),
        }
    }
}

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
    let controller = Controller::new(regions, watcher::Config::default());
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

fn regions_of_pod(store: &Store<CacheRegion>, pod: &Pod) -> Vec<ObjectRef<CacheRegion>> {
    let pod_labels = pod.labels();
    let (Some(cluster), Some(region)) = (
        pod_labels.get(labels::CLUSTER),
        pod_labels.get(labels::REGION),
    ) else {
        return Vec::new();
    };
    store
        .state()
        .into_iter()
        .filter(|candidate| {
            candidate.namespace() == pod.namespace()
                && &candidate.spec.cluster_ref.name == cluster
                && &candidate.spec.region == region
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

    // build (pure)
    let desired = resources::build(&plan, &ctx.build);

    // apply
    adopt_by_cluster(region, &cluster, ctx).await?;
    apply_all(ctx, &namespace, &desired).await?;
    remove_orphaned_shards(region, &plan, ctx).await?;

    // orchestrate the nodes
    let pods = observe_pods(ctx, &plan).await?;
    let orchestration = match orchestrate(region, &plan, &pods, password.as_deref(), ctx).await {
        Ok(orchestration) => orchestration,
        Err(error) => {
            // Show the problem in status before the error policy backs off.
            let status = region_status(region, &plan, &pods, None, Some(&error), Timestamp::now());
            ctx.apply_status(region, &status).await?;
            return Err(error);
        }
    };

    // status
    let status = region_status(
        region,
        &plan,
        &pods,
        Some(&orchestration),
        None,
        Timestamp::now(),
    );
    ctx.apply_status(region, &status).await?;
    Ok(match orchestration {
        Orchestration::InSync { .. } if pods.all_ready() => Action::requeue(REQUEUE_READY),
        _ => Action::requeue(REQUEUE_PROGRESSING),
    })
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

/// Scale-in: deletes StatefulSets and PDBs of shards at or beyond the desired count.
/// (Draining their slots first is a later step.)
async fn remove_orphaned_shards(
    region: &CacheRegion,
    plan: &RegionPlan<'_>,
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
                    "deleted StatefulSet {} (shard {shard} >= {} shards)",
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
        {
            pdbs.delete(&pdb.name_any(), &DeleteParams::background())
                .await?;
        }
    }
    Ok(())
}

async fn observe_pods(ctx: &Context, plan: &RegionPlan<'_>) -> Result<RegionPods, Error> {
    let selector = names::selector_string(&names::region_node_selector(
        &plan.cluster_name,
        &plan.region_name,
    ));
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &plan.namespace);
    let observed = pods
        .list(&ListParams::default().labels(&selector))
        .await?
        .into_iter()
        .filter_map(|pod| ObservedPod::from_pod(&pod))
        .collect();
    Ok(RegionPods::group(
        observed,
        plan.shards,
        plan.pods_per_shard(),
    ))
}

/// Reads every node's map, plans, pushes and attaches replicas.
async fn orchestrate(
    region: &CacheRegion,
    plan: &RegionPlan<'_>,
    pods: &RegionPods,
    password: Option<&str>,
    ctx: &Context,
) -> Result<Orchestration, Error> {
    if !pods.all_ready() {
        return Ok(Orchestration::WaitingForPods {
            ready: pods.ready_count(),
            expected: pods.expected(),
        });
    }
    let mut connections = HashMap::new();
    let mut reports = Vec::new();
    for pod in pods.iter() {
        let addr = meridian_topology::NodeAddr {
            id: pod.name.clone(),
            ip: pod
                .ip
                .clone()
                .ok_or(Error::MissingObjectField("pod status.podIP"))?,
            port: meridian_api::ports::RESP as u16,
        };
        let mut connection = NodeConnection::open(&addr, password, ctx.loopback_only_nodes).await?;
        reports.push(NodeReport {
            pod: pod.name.clone(),
            map: connection.topology().await?,
        });
        connections.insert(pod.name.clone(), connection);
    }
    let status_epoch = region.status.as_ref().map_or(0, |status| status.epoch);
    let decision = topology_plan::plan(
        &plan.cluster_name,
        &plan.region_name,
        pods,
        &reports,
        status_epoch,
    )?;
    let (map, targets, new_epoch, primaries, slots_reassigned) = match decision {
        TopologyDecision::InSync { map } => return Ok(Orchestration::InSync { map }),
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
    if !applied.is_empty() {
        ctx.event(
            &reference,
            EventType::Normal,
            "TopologyPushed",
            "PushTopology",
            format!(
                "epoch {} pushed to {} node(s): {}",
                map.epoch,
                applied.len(),
                applied.join(", ")
            ),
        )
        .await;
    }
    if !stale.is_empty() {
        ctx.event(
            &reference,
            EventType::Warning,
            "TopologyStale",
            "PushTopology",
            format!(
                "epoch {} refused by node(s) holding a newer map: {}",
                map.epoch,
                stale.join("; ")
            ),
        )
        .await;
        return Ok(Orchestration::PushIncomplete { map, stale });
    }
    attach_replicas(&map, &applied, &mut connections, ctx, &reference).await;
    Ok(Orchestration::InSync { map })
}

/// Separate step after a push: points replicas at their primary. Nodes without
/// replication support (yet) answer "unknown command": logged and reported, not failed.
async fn attach_replicas(
    map: &TopologyMap,
    pushed_to: &[String],
    connections: &mut HashMap<String, NodeConnection>,
    ctx: &Context,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
) {
    let mut unsupported = None;
    let mut failed = Vec::new();
    for shard in &map.shards {
        for node in shard.nodes() {
            if !pushed_to.contains(&node.id) {
                continue;
            }
            let Some(connection) = connections.get_mut(&node.id) else {
                continue;
            };
            let outcome = if node.id == shard.primary.id {
                connection.become_primary().await
            } else {
                connection.replicate_from(&shard.primary).await
            };
            match outcome {
                Ok(AttachOutcome::Attached) => {}
                Ok(AttachOutcome::Unsupported(message)) => unsupported = Some(message),
                Err(error) => failed.push(error.to_string()),
            }
        }
    }
    if let Some(message) = unsupported {
        tracing::info!(%message, "nodes do not support REPLICAOF yet; replicas follow the topology map only");
        ctx.event(
            reference,
            EventType::Normal,
            "ReplicationUnsupported",
            "AttachReplicas",
            format!("nodes do not implement REPLICAOF yet ({message})"),
        )
        .await;
    }
    if !failed.is_empty() {
        ctx.event(
            reference,
            EventType::Warning,
            "ReplicaAttachFailed",
            "AttachReplicas",
            failed.join("; "),
        )
        .await;
    }
}

/// The status to write. Pure: `now` is passed in.
pub fn region_status(
    region: &CacheRegion,
    plan: &RegionPlan<'_>,
    pods: &RegionPods,
    orchestration: Option<&Orchestration>,
    node_error: Option<&Error>,
    now: Timestamp,
) -> CacheRegionStatus {
    let previous = region.status.clone().unwrap_or_default();
    let map = orchestration.and_then(Orchestration::map);
    let ready_shards = topology_plan::ready_shards(map, pods);
    let all_ready = ready_shards == i32::from(plan.shards)
        && matches!(orchestration, Some(Orchestration::InSync { .. }));
    let (progress_reason, progress_message) = match (orchestration, node_error) {
        (_, Some(error)) => (error.condition_reason(), error.to_string()),
        (Some(Orchestration::WaitingForPods { ready, expected }), _) => (
            "PodsNotReady",
            format!("{ready}/{expected} cache node pods are ready"),
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
            !all_ready && node_error.is_none(),
            if all_ready {
                "Reconciled"
            } else {
                progress_reason
            },
            if all_ready {
                String::new()
            } else {
                progress_message.clone()
            },
        ),
        match node_error {
            Some(error) => DesiredCondition::new(
                conditions::DEGRADED,
                true,
                error.condition_reason(),
                error.to_string(),
            ),
            None => DesiredCondition::new(conditions::DEGRADED, false, "AsExpected", ""),
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
            topology_plan::shard_statuses(map, pods)
        } else {
            // Keep the last known assignment while nodes are unreachable; refresh readiness.
            previous
                .shards
                .iter()
                .cloned()
                .map(|mut shard| {
                    shard.ready_replicas = pods.ready_in_shard(shard.index.max(0) as usize);
                    shard
                })
                .collect()
        },
        peers: region
            .spec
            .peers
            .iter()
            .map(|peer| {
                previous
                    .peers
                    .iter()
                    .find(|known| known.region == peer.region)
                    .cloned()
                    .unwrap_or(PeerStatus {
                        region: peer.region.clone(),
                        connected: false,
                        lag_ms: None,
                    })
            })
            .collect(),
        ready_shards,
    }
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
