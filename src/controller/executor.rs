//! Act: the one executor a CacheRegion reconcile changes the world through. It holds the
//! reconcile's node connections and its credentials, pushes maps (the one push path),
//! applies and deletes Kubernetes objects, and publishes the events that say why.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use meridian_api::{CacheCluster, CacheRegion, FIELD_MANAGER};
use meridian_topology::TopologyMap;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Scope;
use super::observe::{Fleet, owned_shard};
use crate::Error;
use crate::names::PodName;
use crate::nodes::{NodeConnections, PushReport};
use crate::region_plan::Retention;
use crate::resources::{self, RegionPlan, RegionResources};
use crate::topology_plan::{PrimaryChoice, PrimaryReason};

/// Carries out a reconcile's decisions.
pub struct Executor<'a> {
    pub scope: &'a Scope<'a>,
    /// One admin connection per node that answered this reconcile's read.
    pub connections: NodeConnections,
}

impl<'a> Executor<'a> {
    pub fn new(scope: &'a Scope<'a>, connections: NodeConnections) -> Self {
        Executor { scope, connections }
    }

    /// An event on the region.
    pub async fn event(&self, type_: EventType, reason: &str, action: &str, note: String) {
        self.scope
            .ctx
            .event(&self.scope.reference, type_, reason, action, note)
            .await;
    }

    /// Pushes `map` to the pods in `order` (see [`NodeConnections::push`]), counting the
    /// nodes that applied it.
    pub async fn push(&mut self, map: &TopologyMap, order: &[PodName]) -> PushReport {
        let report = self.connections.push(map, order).await;
        self.scope
            .ctx
            .metrics
            .topology_pushes
            .inc_by(report.applied.len() as u64);
        for (pod, error) in &report.failed {
            tracing::warn!(%pod, %error, epoch = map.epoch, "topology push failed");
        }
        report
    }

    /// Makes the primary probes watch the primaries `map` names.
    pub fn watch(&self, map: &TopologyMap) {
        self.scope
            .ctx
            .probes
            .watch(&self.scope.key, map, &self.scope.access);
    }

    /// Events for a topology push: the nodes that applied `map`, and those that refused
    /// it because they hold a newer one.
    pub async fn report_push(&self, map: &TopologyMap, applied: &[PodName], stale: &[String]) {
        if !applied.is_empty() {
            self.event(
                EventType::Normal,
                "TopologyPushed",
                "PushTopology",
                format!(
                    "epoch {} pushed to {} node(s): {}",
                    map.epoch,
                    applied.len(),
                    PodName::join(applied, ", ")
                ),
            )
            .await;
        }
        if !stale.is_empty() {
            self.event(
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
        }
    }

    /// Events for a new epoch: who is primary of each shard and why, and whether the
    /// slots were assigned anew.
    pub async fn announce_epoch(
        &self,
        map: &TopologyMap,
        primaries: &[PrimaryChoice],
        slots_reassigned: bool,
    ) {
        for choice in primaries {
            let why = match choice.reason {
                PrimaryReason::KeptFromCurrentMap => "kept from the current topology",
                PrimaryReason::ReportedByNode => "the node reports being primary",
                PrimaryReason::LowestOrdinal => "no node claimed the shard; lowest ordinal",
            };
            self.event(
                EventType::Normal,
                "ShardPrimaryChosen",
                "ChoosePrimary",
                format!("shard {}: primary {} ({why})", choice.shard, choice.pod),
            )
            .await;
        }
        if slots_reassigned {
            self.event(
                EventType::Normal,
                "SlotsAssigned",
                "AssignSlots",
                format!("split 16384 slots evenly over {} shards", map.shards.len()),
            )
            .await;
        }
    }

    /// Adds the (non-controller) owner reference CacheRegion → CacheCluster.
    pub async fn adopt_by_cluster(&self, cluster: &CacheCluster) -> Result<(), Error> {
        let region = self.scope.region;
        let owner = resources::cluster_owner_reference(cluster)?;
        let already = region
            .owner_references()
            .iter()
            .any(|existing| existing.uid == owner.uid);
        if already {
            return Ok(());
        }
        let api: Api<CacheRegion> =
            Api::namespaced(self.scope.ctx.client.clone(), &self.scope.namespace);
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

    /// Server-side applies every object; returns the StatefulSets as applied (with their
    /// new generation, which tells the rollout whether their controller caught up).
    pub async fn apply(&self, desired: &RegionResources) -> Result<Vec<StatefulSet>, Error> {
        // before the pods that mount it
        if let Some(secret) = &desired.acl_secret {
            self.apply_one(secret).await?;
        }
        match &desired.network_policy {
            Some(policy) => {
                self.apply_one(policy).await?;
            }
            None => {
                // turned off (networkPolicy.enabled: false): one that exists goes
                let policies: Api<k8s_openapi::api::networking::v1::NetworkPolicy> =
                    Api::namespaced(self.scope.ctx.client.clone(), &self.scope.namespace);
                let name = crate::names::network_policy(&self.scope.region.name_any());
                match policies.delete(&name, &DeleteParams::background()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(response)) if response.code == 404 => {}
                    Err(error) => return Err(error.into()),
                }
            }
        }
        self.apply_one(&desired.config_map).await?;
        for service in &desired.services {
            self.apply_one(service).await?;
        }
        let mut applied = Vec::with_capacity(desired.stateful_sets.len());
        for stateful_set in &desired.stateful_sets {
            applied.push(self.apply_one(stateful_set).await?);
        }
        for pdb in &desired.pod_disruption_budgets {
            self.apply_one(pdb).await?;
        }
        Ok(applied)
    }

    async fn apply_one<K>(&self, object: &K) -> Result<K, Error>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + Serialize
            + std::fmt::Debug,
    {
        let api: Api<K> = Api::namespaced(self.scope.ctx.client.clone(), &self.scope.namespace);
        Ok(api
            .patch(
                &object.name_any(),
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(object),
            )
            .await?)
    }

    /// Scale-in: deletes the StatefulSets and PDBs of shards the retention lets go
    /// (beyond the desired count and drained of every slot).
    pub async fn remove_drained_shards(
        &self,
        fleet: &Fleet,
        retention: &Retention,
        plan: &RegionPlan<'_>,
    ) -> Result<(), Error> {
        let region = self.scope.region;
        let removed =
            |shard: Option<u16>| shard.is_some_and(|shard| retention.removes(shard, plan.shards));
        let client = &self.scope.ctx.client;
        let stateful_sets: Api<StatefulSet> = Api::namespaced(client.clone(), &plan.namespace);
        for stateful_set in &fleet.stateful_sets {
            let shard = owned_shard(stateful_set, region);
            if !removed(shard) {
                continue;
            }
            stateful_sets
                .delete(&stateful_set.name_any(), &DeleteParams::background())
                .await?;
            self.event(
                EventType::Normal,
                "ShardRemoved",
                "ScaleIn",
                format!(
                    "deleted StatefulSet {} (shard {} >= {} shards, drained of every slot)",
                    stateful_set.name_any(),
                    shard.unwrap_or_default(),
                    plan.shards
                ),
            )
            .await;
        }
        let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &plan.namespace);
        for pdb in &fleet.pod_disruption_budgets {
            if removed(owned_shard(pdb, region)) {
                pdbs.delete(&pdb.name_any(), &DeleteParams::background())
                    .await?;
            }
        }
        Ok(())
    }

    /// Deletes a pod (its StatefulSet recreates it from the latest template).
    pub async fn delete_pod(&self, pod: &PodName) -> Result<(), Error> {
        let pods: Api<Pod> = Api::namespaced(self.scope.ctx.client.clone(), &self.scope.namespace);
        match pods.delete(pod.as_str(), &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            // Already gone: the StatefulSet recreates it from the new template anyway.
            Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
            Err(error) => Err(error.into()),
        }
    }
}
