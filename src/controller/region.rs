//! CacheRegion controller, wiring only: what triggers a reconcile, and the reconcile as a
//! pipeline. Observe once ([`super::observe`]), plan purely ([`crate::resources`],
//! [`crate::region_plan`], [`crate::reshard`], [`crate::rollout`], [`crate::peers`]), act
//! through one executor ([`super::executor`], with [`super::failover`],
//! [`super::resharding`], [`super::rollout`], [`super::links`]), then write status
//! ([`super::status`]) by server-side apply.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use meridian_api::{CacheCluster, CacheRegion, labels};

use super::executor::Executor;
use super::observe::{self, NodeReads};
use super::orchestration::Orchestration;
use super::rollout::{self, RolloutInput};
use super::status::{degraded_status, region_status};
use super::{Context, Scope, failover, links, resharding};
use crate::Error;
use crate::names::{self, PodName};
use crate::region_plan::{self, NodeStep, NodeView};
use crate::resources::{self, RegionPlan};
use crate::rollout::Revisions;
use crate::topology_plan::{NodeReport, TopologyDecision};

pub const KIND: &str = "CacheRegion";

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
    // observe: the spec, the credentials, then everything else once
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
    let credentials = ctx.credentials(&cluster).await?;
    let plan = resources::validate(&cluster, region)?;
    let scope = Scope::new(ctx, region, namespace, credentials.access);
    let mut fleet = observe::observe(&scope, &plan).await?;

    // plan the objects: shards above the desired count stay while the nodes' map lists
    // them (scale-in drains their slots first)
    let current =
        region_plan::current_map(&fleet.nodes.reports, &plan.cluster_name, &plan.region_name);
    let status = region.status.clone().unwrap_or_default();
    let retention = region_plan::retention(current, plan.shards, status.epoch, status.shards.len());
    let mut desired = resources::build_keeping(&plan, &ctx.build, &retention.keep);
    desired.acl_secret = credentials
        .acl_file
        .map(|file| resources::build_acl_secret(&plan, file));

    // act on the objects
    let mut exec = Executor::new(&scope, Default::default());
    exec.adopt_by_cluster(&cluster).await?;
    let applied = exec.apply(&desired).await?;
    exec.remove_drained_shards(&fleet, &retention, &plan)
        .await?;

    // the nodes: read the pods the first read skipped, plan the next step, carry it out
    let pods = fleet.region_pods(retention.shards, &plan);
    let revisions = fleet.revisions(&applied, region);
    fleet.nodes.cover(&pods, &scope).await;
    let NodeReads {
        connections,
        reports,
        replication,
        peers,
        mut unreachable,
    } = std::mem::take(&mut fleet.nodes);
    let answered: BTreeSet<PodName> = connections.pods().into_iter().collect();
    exec.connections = connections;
    let view = NodeView {
        cluster: &plan.cluster_name,
        region: &plan.region_name,
        pods: &pods,
        reports: &reports,
        replication: &replication,
        answered: &answered,
        status_epoch: status.epoch,
    };
    let orchestration =
        match orchestrate(&mut exec, &plan, &view, &revisions, &mut unreachable).await {
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

    // region links, once the region has a topology
    let peer_links = match orchestration.map() {
        Some(map) => {
            Some(links::wire_peers(&mut exec, &plan.region_name, map, &fleet.siblings, peers).await)
        }
        None => None,
    };

    // status
    let replication = match orchestration.map() {
        Some(_) => observe::refresh_replication(&mut exec.connections).await,
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
    Ok(Action::requeue(
        orchestration.requeue_after(links_down, pods.all_ready()),
    ))
}

/// Plans the nodes' next step from the view ([`region_plan::next_step`]) and carries it
/// out.
async fn orchestrate(
    exec: &mut Executor<'_>,
    plan: &RegionPlan<'_>,
    view: &NodeView<'_>,
    revisions: &Revisions,
    unreachable: &mut HashMap<PodName, Error>,
) -> Result<Orchestration, Error> {
    let probes = &exec.scope.ctx.probes;
    let step = region_plan::next_step(view, |node| probes.is_unreachable(node))?;
    let pods = view.pods;
    match step {
        NodeStep::FailOver(decided) => {
            failover::fail_over(exec, decided, pods, view.answered).await
        }
        NodeStep::CatchUp { map, lagging } => {
            exec.watch(&map);
            // Best effort: a node that misses it now gets it at the next reconcile.
            exec.push(&map, &lagging).await;
            Ok(Orchestration::Recovering {
                map,
                ready: pods.ready_count(),
                expected: pods.expected(),
                headless: Vec::new(),
                lost_data: Vec::new(),
            })
        }
        NodeStep::WaitForPods { ready, expected } => {
            Ok(Orchestration::WaitingForPods { ready, expected })
        }
        NodeStep::NeedsAnswer { pod } => {
            Err(unreachable
                .remove(&pod)
                .unwrap_or_else(|| Error::NodeTopology {
                    node: pod.into(),
                    detail: "did not answer this reconcile's read".into(),
                }))
        }
        NodeStep::Plan(TopologyDecision::Push {
            map,
            targets,
            new_epoch,
            primaries,
            slots_reassigned,
        }) => {
            if new_epoch {
                exec.announce_epoch(&map, &primaries, slots_reassigned)
                    .await;
            }
            // Nodes listed as replicas attach to their primary on their own when they get
            // the map.
            let pushed = exec.push(&map, &targets).await.into_first_error()?;
            exec.watch(&map);
            exec.report_push(&map, &pushed.applied, &pushed.stale).await;
            if !pushed.stale.is_empty() {
                return Ok(Orchestration::PushIncomplete {
                    map,
                    stale: pushed.stale,
                });
            }
            // Everyone holds the map now (e.g. a new shard joined with no slots, a
            // replaced pod came back): go on with moving slots or replacing pods right
            // away rather than at the next periodic reconcile.
            settle(exec, plan, view, revisions, map).await
        }
        NodeStep::Plan(TopologyDecision::InSync { map }) => {
            exec.watch(&map);
            settle(exec, plan, view, revisions, map).await
        }
    }
}

/// In a region where every node holds `map`: moves slots if the shard count changed,
/// otherwise replaces outdated pods (a rolling update never runs during a resharding).
async fn settle(
    exec: &mut Executor<'_>,
    plan: &RegionPlan<'_>,
    view: &NodeView<'_>,
    revisions: &Revisions,
    map: meridian_topology::TopologyMap,
) -> Result<Orchestration, Error> {
    let reports: &[NodeReport] = view.reports;
    match resharding::reshard(exec, plan, view.pods, map, reports, view.status_epoch).await? {
        Orchestration::InSync { map } => {
            let input = RolloutInput {
                plan,
                pods: view.pods,
                revisions,
                reports,
                status_epoch: view.status_epoch,
            };
            rollout::roll(exec, &input, map).await
        }
        other => Ok(other),
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
