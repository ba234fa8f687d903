//! Carries out resharding steps planned by [`crate::reshard::plan_step`]: a few batches
//! of slots per reconcile, each moved with its keys and ended by a map that names the new
//! owner at the next epoch, pushed to every node in the order the plan gives. Drained
//! shards leave the map once they own nothing; their StatefulSets go at the next
//! reconcile.

use std::time::{Duration, Instant};

use kube::runtime::events::EventType;
use meridian_topology::{NodeAddr, TopologyMap};

use super::executor::Executor;
use super::orchestration::{Orchestration, ReshardProgress, join};
use crate::Error;
use crate::names::PodName;
use crate::nodes;
use crate::reshard::{self, NodeOpenSlots, ReshardStep, SlotMove};
use crate::resources::RegionPlan;
use crate::topology_plan::{self, NodeReport, RegionPods};

/// Slots per resharding step: one epoch bump per batch.
const RESHARD_BATCH: usize = 128;
/// Time one reconcile spends moving batches before it writes status and requeues.
const RESHARD_BUDGET: Duration = Duration::from_secs(3);

/// Moves slots towards the desired shard count from what the nodes report: the map and
/// the slots they hold MIGRATING / IMPORTING (so a step an earlier operator left
/// half-done is finished first). `InSync` once every slot is where the plan wants it.
pub async fn reshard(
    exec: &mut Executor<'_>,
    plan: &RegionPlan<'_>,
    pods: &RegionPods,
    mut map: TopologyMap,
    reports: &[NodeReport],
    status_epoch: u64,
) -> Result<Orchestration, Error> {
    let previous = exec
        .scope
        .region
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
        let open = open_slots(exec, &map).await?;
        let planned = reshard::plan_step(&map, plan.shards, &open, RESHARD_BATCH);
        match planned.step {
            ReshardStep::Done => {
                if started {
                    exec.event(
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
                let everyone: Vec<PodName> = map.nodes().map(PodName::of).collect();
                let pushed = exec.push(&next, &everyone).await.into_first_error()?;
                if !pushed.stale.is_empty() {
                    return Ok(Orchestration::PushIncomplete {
                        map: next,
                        stale: pushed.stale,
                    });
                }
                exec.watch(&next);
                exec.event(
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
                let probes = &exec.scope.ctx.probes;
                let down = [&source, &destination].into_iter().any(|primary| {
                    topology_plan::node_down(primary, pods, probes.is_unreachable(primary))
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
                    exec.event(
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
                    exec.event(
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
                let keys = move_batch(exec, &source, &destination, &batch).await?;
                let next = reshard::map_after_move(&map, &batch, highest_epoch + 1);
                let order = reshard::push_order(&next, &batch);
                let pushed = exec.push(&next, &order).await.into_first_error()?;
                if !pushed.stale.is_empty() {
                    return Ok(Orchestration::PushIncomplete {
                        map: next,
                        stale: pushed.stale,
                    });
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
                exec.watch(&next);
                highest_epoch = next.epoch;
                moved += batch.slots.len();
                map = next;
            }
        }
    }
}

/// The slots every primary of `map` holds MIGRATING / IMPORTING.
async fn open_slots(
    exec: &mut Executor<'_>,
    map: &TopologyMap,
) -> Result<Vec<NodeOpenSlots>, Error> {
    let mut open = Vec::with_capacity(map.shards.len());
    for shard in &map.shards {
        let Some(connection) = exec.connections.get_mut(&shard.primary.id) else {
            return Err(Error::NodeTopology {
                node: shard.primary.id.clone(),
                detail: "no connection to the primary to read its open slots".into(),
            });
        };
        open.push(NodeOpenSlots {
            pod: PodName::of(&shard.primary),
            open: connection.open_slots().await?,
        });
    }
    Ok(open)
}

/// Moves one batch's keys over the reconcile's connections to both primaries. Returns
/// the number of keys moved.
async fn move_batch(
    exec: &mut Executor<'_>,
    source: &NodeAddr,
    destination: &NodeAddr,
    batch: &SlotMove,
) -> Result<u64, Error> {
    let access = exec.scope.access.clone();
    let Some((source_connection, destination_connection)) =
        exec.connections.pair_mut(&source.id, &destination.id)
    else {
        return Err(Error::NodeTopology {
            node: format!("{} / {}", source.id, destination.id),
            detail: "no connection to both primaries of a slot move".into(),
        });
    };
    nodes::move_slots(
        source_connection,
        source,
        destination_connection,
        destination,
        &batch.slots,
        &access,
    )
    .await
}

fn shard_primary(map: &TopologyMap, index: u32) -> Result<NodeAddr, Error> {
    map.shards
        .iter()
        .find(|shard| shard.index == index)
        .map(|shard| shard.primary.clone())
        .ok_or_else(|| Error::NodeTopology {
            node: format!("shard {index}"),
            detail: "shard missing from the topology map".into(),
        })
}
