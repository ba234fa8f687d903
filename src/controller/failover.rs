//! Carries out a failover decided by [`crate::region_plan::next_step`] (which replica
//! replaces which primary, and why, is decided there and in
//! [`crate::topology_plan::plan_failover`]): events, then the next map to the promoted
//! nodes first (the map naming a node primary makes it stop replicating), then to every
//! other reachable node (replicas re-point on their own).

use std::collections::BTreeSet;

use kube::runtime::events::EventType;
use meridian_topology::TopologyMap;

use super::executor::Executor;
use super::orchestration::{Orchestration, PRIMARY_LOST_DATA};
use crate::Error;
use crate::names::PodName;
use crate::region_plan::Failover;
use crate::topology_plan::RegionPods;

pub async fn fail_over(
    exec: &mut Executor<'_>,
    failover: Failover,
    pods: &RegionPods,
    answered: &BTreeSet<PodName>,
) -> Result<Orchestration, Error> {
    let Failover {
        current,
        plan,
        lost_data,
        ..
    } = &failover;
    for shard in current
        .shards
        .iter()
        .filter(|shard| lost_data.contains(&shard.index))
    {
        exec.event(
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
    let Some(map) = &plan.map else {
        for shard in &plan.headless {
            tracing::warn!(
                shard,
                "shard primary is down and no replica can be promoted"
            );
        }
        exec.watch(current);
        return Ok(recovering(current.clone(), plan.headless.clone()));
    };
    for promotion in &plan.promotions {
        exec.event(
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
    let promoted: Vec<PodName> = plan
        .promotions
        .iter()
        .map(|promotion| promotion.new_primary.clone())
        .collect();
    let promoted = exec.push(map, &promoted).await.into_first_error()?;
    let region_name = &map.region;
    for promotion in &plan.promotions {
        if !promoted.applied.contains(&promotion.new_primary) {
            continue;
        }
        exec.scope.ctx.metrics.failover(region_name);
        exec.event(
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
    // A failed push to one of the others is logged: the next reconcile catches it up.
    let others: Vec<PodName> = failover.others(answered).cloned().collect();
    let others = exec.push(map, &others).await;
    let applied: Vec<PodName> = promoted.applied.into_iter().chain(others.applied).collect();
    let stale: Vec<String> = promoted.stale.into_iter().chain(others.stale).collect();
    exec.watch(map);
    exec.report_push(map, &applied, &stale).await;
    if !stale.is_empty() {
        return Ok(Orchestration::PushIncomplete {
            map: map.clone(),
            stale,
        });
    }
    Ok(recovering(map.clone(), plan.headless.clone()))
}
