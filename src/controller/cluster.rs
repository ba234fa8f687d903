//! CacheCluster controller: aggregates its CacheRegions into the cluster status.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use meridian_api::{CacheCluster, CacheClusterStatus, CacheRegion, RegionSummary, conditions};

use super::Context;
use crate::Error;
use crate::conditions::{DesiredCondition, is_true, merge};

pub const KIND: &str = "CacheCluster";

/// Degraded reason of a region (and its cluster) whose region link to a peer is down.
pub const PEER_LINK_DOWN: &str = "PeerLinkDown";

const REQUEUE: Duration = Duration::from_secs(300);

pub async fn run(ctx: Arc<Context>, namespace: Option<String>) {
    let client = ctx.client.clone();
    let (clusters, regions): (Api<CacheCluster>, Api<CacheRegion>) = match namespace.as_deref() {
        Some(namespace) => (
            Api::namespaced(client.clone(), namespace),
            Api::namespaced(client.clone(), namespace),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    Controller::new(clusters, watcher::Config::default())
        .watches(regions, watcher::Config::default(), |region| {
            region
                .namespace()
                .map(|namespace| ObjectRef::new(&region.spec.cluster_ref.name).within(&namespace))
        })
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(cluster = %object.name, "reconciled"),
                Err(error) => tracing::debug!(%error, "CacheCluster reconcile stream error"),
            }
        })
        .await;
}

pub async fn reconcile(cluster: Arc<CacheCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    if cluster.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let started = Instant::now();
    ctx.metrics.reconcile_started(KIND);
    let result = reconcile_cluster(&cluster, &ctx).await;
    ctx.metrics.reconcile_finished(KIND, started.elapsed());
    if result.is_ok() {
        ctx.reset_failures(cluster.as_ref());
    }
    result
}

pub fn error_policy(cluster: Arc<CacheCluster>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_failed(KIND, error.metric_label());
    tracing::warn!(cluster = %cluster.name_any(), %error, "CacheCluster reconcile failed");
    ctx.backoff(cluster.as_ref())
}

async fn reconcile_cluster(cluster: &CacheCluster, ctx: &Context) -> Result<Action, Error> {
    // read
    let namespace = cluster
        .namespace()
        .ok_or(Error::MissingObjectField("CacheCluster metadata.namespace"))?;
    let regions: Api<CacheRegion> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut members: Vec<CacheRegion> = regions
        .list(&ListParams::default())
        .await?
        .into_iter()
        .filter(|region| region.spec.cluster_ref.name == cluster.name_any())
        .collect();
    members.sort_by_key(|region| region.name_any());
    let auth_problem = match ctx.credentials(cluster).await {
        Ok(_) => None,
        Err(error) if error.is_user_actionable() => Some(error),
        Err(error) => return Err(error),
    };

    // build + status
    let previous_ready = cluster
        .status
        .as_ref()
        .is_some_and(|status| is_true(&status.conditions, conditions::READY));
    let status = cluster_status(cluster, &members, auth_problem.as_ref(), Timestamp::now());
    let now_ready = is_true(&status.conditions, conditions::READY);
    let reference = cluster.object_ref(&());
    if let Some(problem) = &auth_problem {
        ctx.event(
            &reference,
            EventType::Warning,
            problem.condition_reason(),
            "Reconcile",
            problem.to_string(),
        )
        .await;
    }
    if now_ready && !previous_ready {
        ctx.event(
            &reference,
            EventType::Normal,
            "ClusterReady",
            "Aggregate",
            format!("all {} region(s) ready", status.ready_regions),
        )
        .await;
    } else if !now_ready && previous_ready {
        ctx.event(
            &reference,
            EventType::Warning,
            "ClusterNotReady",
            "Aggregate",
            format!(
                "{}/{} region(s) ready",
                status.ready_regions,
                status.regions.len()
            ),
        )
        .await;
    }
    ctx.apply_status(cluster, &status).await?;
    Ok(Action::requeue(REQUEUE))
}

/// Aggregated status of a cluster from its regions. Pure.
pub fn cluster_status(
    cluster: &CacheCluster,
    regions: &[CacheRegion],
    auth_problem: Option<&Error>,
    now: Timestamp,
) -> CacheClusterStatus {
    let previous = cluster.status.clone().unwrap_or_default();
    let summaries: Vec<RegionSummary> = regions
        .iter()
        .map(|region| {
            let status = region.status.clone().unwrap_or_default();
            RegionSummary {
                name: region.name_any(),
                region: region.spec.region.clone(),
                ready: is_true(&status.conditions, conditions::READY),
                shards: region.spec.effective_shards(&cluster.spec),
                ready_shards: status.ready_shards,
                epoch: status.epoch,
            }
        })
        .collect();
    let ready_regions = summaries.iter().filter(|summary| summary.ready).count() as i32;

    let mut by_region: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for summary in &summaries {
        by_region
            .entry(summary.region.as_str())
            .or_default()
            .push(summary.name.as_str());
    }
    let duplicates: Vec<String> = by_region
        .iter()
        .filter(|(_, names)| names.len() > 1)
        .map(|(region, names)| format!("region '{region}' is claimed by {}", names.join(", ")))
        .collect();
    // Regions degraded only because a region link is down are reported separately: the
    // region itself serves, its peers just do not hear about its writes yet.
    let (link_degraded, degraded_regions): (Vec<&CacheRegion>, Vec<&CacheRegion>) = regions
        .iter()
        .filter(|region| {
            region
                .status
                .as_ref()
                .is_some_and(|status| is_true(&status.conditions, conditions::DEGRADED))
        })
        .partition(|region| {
            region.status.as_ref().is_some_and(|status| {
                status.conditions.iter().any(|condition| {
                    condition.type_ == conditions::DEGRADED && condition.reason == PEER_LINK_DOWN
                })
            })
        });
    let degraded_regions: Vec<&str> = degraded_regions
        .iter()
        .map(|region| region.metadata.name.as_deref().unwrap_or_default())
        .collect();
    let down_links: Vec<String> = link_degraded
        .iter()
        .flat_map(|region| {
            let status = region.status.clone().unwrap_or_default();
            status
                .peers
                .into_iter()
                .filter(|peer| !peer.connected)
                .map(|peer| format!("{} -> {}", region.spec.region, peer.region))
                .collect::<Vec<_>>()
        })
        .collect();

    let all_ready = !summaries.is_empty()
        && ready_regions == summaries.len() as i32
        && duplicates.is_empty()
        && auth_problem.is_none();
    let degraded = match (
        auth_problem,
        duplicates.is_empty(),
        degraded_regions.is_empty(),
    ) {
        (Some(error), _, _) => Some((error.condition_reason().to_string(), error.to_string())),
        (None, false, _) => Some(("DuplicateRegion".to_string(), duplicates.join("; "))),
        (None, true, false) => Some((
            "RegionDegraded".to_string(),
            format!("degraded region(s): {}", degraded_regions.join(", ")),
        )),
        (None, true, true) if !down_links.is_empty() => Some((
            PEER_LINK_DOWN.to_string(),
            format!("region link(s) down: {}", down_links.join(", ")),
        )),
        (None, true, true) => None,
    };
    let (ready_reason, ready_message) = if all_ready {
        (
            "AllRegionsReady".to_string(),
            format!("{ready_regions} region(s) ready"),
        )
    } else if summaries.is_empty() {
        (
            "NoRegions".to_string(),
            "no CacheRegion references this cluster".to_string(),
        )
    } else {
        (
            "RegionsNotReady".to_string(),
            format!("{ready_regions}/{} region(s) ready", summaries.len()),
        )
    };
    let desired = [
        DesiredCondition::new(
            conditions::READY,
            all_ready,
            ready_reason.clone(),
            ready_message.clone(),
        ),
        DesiredCondition::new(
            conditions::PROGRESSING,
            !all_ready
                && degraded
                    .as_ref()
                    .is_none_or(|(reason, _)| reason == PEER_LINK_DOWN)
                && !summaries.is_empty(),
            if all_ready {
                "Reconciled".to_string()
            } else {
                ready_reason
            },
            if all_ready {
                String::new()
            } else {
                ready_message
            },
        ),
        match &degraded {
            Some((reason, message)) => {
                DesiredCondition::new(conditions::DEGRADED, true, reason.clone(), message.clone())
            }
            None => DesiredCondition::new(conditions::DEGRADED, false, "AsExpected", ""),
        },
    ];
    CacheClusterStatus {
        observed_generation: cluster.metadata.generation,
        conditions: merge(
            &previous.conditions,
            &desired,
            cluster.metadata.generation,
            now,
        ),
        password_secret: cluster
            .spec
            .password_source(&cluster.name_any())
            .map(|source| source.secret().clone()),
        regions: summaries,
        ready_regions,
    }
}
