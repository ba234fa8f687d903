//! Carries out one step of a rolling update (planned by [`crate::rollout`]): deletes an
//! outdated pod, or hands a shard's primary over to an updated replica.
//!
//! The handover: pre-check that the replica is linked and close behind, `CLIENT PAUSE
//! WRITE` on the primary (writes block; reads go on), wait until the replica's offset
//! reaches the primary's, push the map naming the replica primary at the next epoch (to
//! it first, then the old primary, then everyone), `CLIENT UNPAUSE`. The blocked writes
//! are routed again on release and get `MOVED` to the new primary, so a cluster client
//! sees a short delay and no error. The pause has its own timeout on the node, so an
//! operator that dies mid-handover leaves the old primary serving as before.

use std::time::{Duration, Instant};

use kube::runtime::events::EventType;
use meridian_api::RolloutStatus;
use meridian_topology::{NodeAddr, TopologyMap};

use super::executor::Executor;
use super::orchestration::Orchestration;
use crate::Error;
use crate::names::PodName;
use crate::nodes::{NodeConnections, ReplicationRole};
use crate::resources::RegionPlan;
use crate::rollout::{self, Revisions, RolloutStep};
use crate::topology_plan::{self, NodeReport, RegionPods};

/// Node-side bound of a handover's write pause (the operator unpauses long before).
const PAUSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Give up a handover (and unpause) when the replica has not caught up by then.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(2);
const CATCH_UP_POLL: Duration = Duration::from_millis(2);
/// A replica further behind than this is not handed a primary (nor is a sibling of it
/// deleted): the step waits for it to sync, without pausing anyone.
const MAX_LAG_BYTES: u64 = 1 << 20;

/// Everything a rollout step needs from the reconcile.
pub struct RolloutInput<'a> {
    pub plan: &'a RegionPlan<'a>,
    pub pods: &'a RegionPods,
    pub revisions: &'a Revisions,
    pub reports: &'a [NodeReport],
    pub status_epoch: u64,
}

/// Takes the next step of a rolling update of a settled region (`map` everywhere, every
/// pod Ready). `InSync` when there is nothing to update.
pub async fn roll(
    exec: &mut Executor<'_>,
    input: &RolloutInput<'_>,
    map: TopologyMap,
) -> Result<Orchestration, Error> {
    let (step, mut status) = rollout::next_step(&map, input.pods, input.revisions);
    match &step {
        RolloutStep::Done => return Ok(Orchestration::InSync { map }),
        RolloutStep::WaitForStatefulSet { .. } => {}
        RolloutStep::ReplaceReplica { shard, pod } => {
            if let Some(waiting) =
                unsynced_sibling(&map, *shard, pod, &mut exec.connections).await?
            {
                status.step = waiting;
            } else {
                exec.delete_pod(pod).await?;
                exec.event(
                    EventType::Normal,
                    "PodReplaced",
                    "RollingUpdate",
                    format!(
                        "{} ({}/{} pods updated)",
                        step.describe(),
                        status.updated_pods,
                        status.pods
                    ),
                )
                .await;
            }
        }
        RolloutStep::ReplacePrimary { pod, .. } => {
            exec.delete_pod(pod).await?;
            exec.event(
                EventType::Warning,
                "PodReplaced",
                "RollingUpdate",
                format!(
                    "{}; set replicasPerShard >= 1 for updates without unavailability",
                    step.describe()
                ),
            )
            .await;
        }
        RolloutStep::HandOver { shard, from, to } => {
            return hand_over(exec, input, map, *shard, from, to, status).await;
        }
    }
    Ok(Orchestration::Updating {
        map,
        rollout: status,
    })
}

/// Why the shard's other replicas are not ready to lose `leaving` (linked to the primary
/// and within [`MAX_LAG_BYTES`]), if they are not.
async fn unsynced_sibling(
    map: &TopologyMap,
    shard: u16,
    leaving: &PodName,
    connections: &mut NodeConnections,
) -> Result<Option<String>, Error> {
    let Some(topology) = map
        .shards
        .iter()
        .find(|topology| topology.index == u32::from(shard))
    else {
        return Ok(None);
    };
    let primary_offset = match connections.get_mut(&topology.primary.id) {
        Some(primary) => primary.replication_info().await?.offset,
        None => return Ok(Some(unreachable(shard, &topology.primary))),
    };
    for replica in topology.replicas.iter().filter(|node| *leaving != node.id) {
        if let Some(reason) = replica_lag(shard, replica, primary_offset, connections).await? {
            return Ok(Some(reason));
        }
    }
    Ok(None)
}

/// Why `replica` cannot stand in for its primary right now, if it cannot.
async fn replica_lag(
    shard: u16,
    replica: &NodeAddr,
    primary_offset: u64,
    connections: &mut NodeConnections,
) -> Result<Option<String>, Error> {
    let Some(connection) = connections.get_mut(&replica.id) else {
        return Ok(Some(unreachable(shard, replica)));
    };
    let info = connection.replication_info().await?;
    let behind = primary_offset.saturating_sub(info.offset);
    Ok((!info.link_up || behind > MAX_LAG_BYTES).then(|| {
        format!(
            "shard {shard}: waiting for replica {} to sync (link {}, {behind} bytes behind)",
            replica.id,
            if info.link_up { "up" } else { "down" }
        )
    }))
}

fn unreachable(shard: u16, node: &NodeAddr) -> String {
    format!("shard {shard}: waiting for {} to answer", node.id)
}

async fn hand_over(
    exec: &mut Executor<'_>,
    input: &RolloutInput<'_>,
    map: TopologyMap,
    shard: u16,
    from: &NodeAddr,
    to: &NodeAddr,
    mut status: RolloutStatus,
) -> Result<Orchestration, Error> {
    let connections = &mut exec.connections;
    let updating = |map: TopologyMap, status: RolloutStatus| Orchestration::Updating {
        map,
        rollout: status,
    };
    let Some(primary) = connections.get_mut(&from.id) else {
        status.step = unreachable(shard, from);
        return Ok(updating(map, status));
    };
    let primary_offset = primary.replication_info().await?.offset;
    if let Some(waiting) = replica_lag(shard, to, primary_offset, connections).await? {
        status.step = waiting;
        return Ok(updating(map, status));
    }
    let epoch = topology_plan::highest_epoch(input.reports, input.status_epoch, &map) + 1;
    let next = rollout::handover_map(&map, shard, to, epoch);

    let switched = switch_primary(&next, from, to, connections).await;
    let metrics = &exec.scope.ctx.metrics;
    match switched {
        Ok(Switch::Done {
            applied,
            stale,
            paused,
            ..
        }) => {
            metrics.topology_pushes.inc_by(applied.len() as u64);
            metrics.handover(&input.plan.region_name, paused);
            exec.event(
                EventType::Normal,
                "PrimaryHandedOver",
                "RollingUpdate",
                format!(
                    "shard {shard}: primary handed over from {} to {} at epoch {epoch} (writes paused {} ms)",
                    from.id,
                    to.id,
                    paused.as_millis()
                ),
            )
            .await;
            exec.report_push(&next, &applied, &stale).await;
            exec.watch(&next);
            status.step = format!(
                "shard {shard}: primary handed over to {}; replacing {} next",
                to.id, from.id
            );
            Ok(updating(next, status))
        }
        Ok(Switch::Refused(message)) => {
            status.step = format!("shard {shard}: handover refused: {message}");
            Ok(updating(map, status))
        }
        Err(error) => {
            exec.event(
                EventType::Warning,
                "HandoverAborted",
                "RollingUpdate",
                format!(
                    "shard {shard}: handover from {} to {} abandoned, {} stays primary: {error}",
                    from.id, to.id, from.id
                ),
            )
            .await;
            Err(error)
        }
    }
}

/// How a [`switch_primary`] went.
#[derive(Debug)]
pub enum Switch {
    Done {
        /// Nodes that applied the new map, the new primary first.
        applied: Vec<PodName>,
        /// Nodes that refused it (holding a newer epoch).
        stale: Vec<String>,
        /// The old primary holds the new map (it redirects instead of writing).
        old_primary_fenced: bool,
        /// How long writes on the old primary were paused.
        paused: Duration,
    },
    /// The new primary refused the map (it holds a newer epoch): nothing changed.
    Refused(String),
}

/// The handover itself: pauses writes on `from`, waits until `to` has replicated
/// everything `from` wrote, pushes `next` (naming `to` primary) to `to`, then `from`,
/// then every other node in `connections`, and releases the paused writes — unless
/// `from` missed the map, in which case its pause runs out on the node, giving the next
/// reconcile time to fence it. Errors leave `from` primary (and unpaused).
pub async fn switch_primary(
    next: &TopologyMap,
    from: &NodeAddr,
    to: &NodeAddr,
    connections: &mut NodeConnections,
) -> Result<Switch, Error> {
    let paused_at = Instant::now();
    pause(connections, from).await?;
    let switched = catch_up_and_switch(next, from, to, connections).await;
    let fenced = !matches!(
        switched,
        Ok(Switch::Done {
            old_primary_fenced: false,
            ..
        })
    );
    if fenced
        && let Some(primary) = connections.get_mut(&from.id)
        && let Err(error) = primary.unpause().await
    {
        tracing::warn!(pod = %from.id, %error, "CLIENT UNPAUSE failed; the pause times out on its own");
    }
    let paused = paused_at.elapsed();
    switched.map(|switch| match switch {
        Switch::Done {
            applied,
            stale,
            old_primary_fenced,
            ..
        } => Switch::Done {
            applied,
            stale,
            old_primary_fenced,
            paused,
        },
        refused => refused,
    })
}

async fn pause(connections: &mut NodeConnections, from: &NodeAddr) -> Result<(), Error> {
    match connections.get_mut(&from.id) {
        Some(primary) => primary.pause_writes(PAUSE_TIMEOUT).await,
        None => Err(Error::NodeTopology {
            node: from.id.clone(),
            detail: "no connection to pause writes".into(),
        }),
    }
}

/// With the old primary paused: waits for the replica to reach its offset, then pushes
/// `next` to the new primary, the old one and everyone else, in that order.
async fn catch_up_and_switch(
    next: &TopologyMap,
    from: &NodeAddr,
    to: &NodeAddr,
    connections: &mut NodeConnections,
) -> Result<Switch, Error> {
    let missing = |node: &NodeAddr| Error::NodeTopology {
        node: node.id.clone(),
        detail: "connection lost during the handover".into(),
    };
    let target = connections
        .get_mut(&from.id)
        .ok_or_else(|| missing(from))?
        .replication_info()
        .await?
        .offset;
    let deadline = Instant::now() + CATCH_UP_TIMEOUT;
    loop {
        let info = connections
            .get_mut(&to.id)
            .ok_or_else(|| missing(to))?
            .replication_info()
            .await?;
        // Offsets only compare within one replication stream: the replica must be
        // attached (a detached node's own offset says nothing about `from`'s writes).
        if info.role != ReplicationRole::Replica || !info.link_up {
            return Err(Error::NodeTopology {
                node: to.id.clone(),
                detail: format!(
                    "not replicating from {} (role {}, link {})",
                    from.id,
                    info.role,
                    if info.link_up { "up" } else { "down" }
                ),
            });
        }
        let reached = info.offset;
        if reached >= target {
            break;
        }
        if Instant::now() >= deadline {
            return Err(Error::NodeTopology {
                node: to.id.clone(),
                detail: format!(
                    "replica still {} bytes behind after {} ms of paused writes",
                    target - reached,
                    CATCH_UP_TIMEOUT.as_millis()
                ),
            });
        }
        tokio::time::sleep(CATCH_UP_POLL).await;
    }
    if !connections.contains(&to.id) {
        return Err(missing(to));
    }
    let promoted = connections
        .push(next, &[PodName::of(to)])
        .await
        .into_first_error()?;
    if let Some(refusal) = promoted.stale.into_iter().next() {
        return Ok(Switch::Refused(refusal));
    }
    let mut order = vec![PodName::of(from)];
    order.extend(
        connections
            .pods()
            .into_iter()
            .filter(|pod| *pod != from.id && *pod != to.id),
    );
    // A failed push is logged: the next reconcile catches lagging nodes up; the old
    // primary is fenced by the pause until then and by the epoch afterwards.
    let rest = connections.push(next, &order).await;
    for (pod, error) in &rest.failed {
        tracing::warn!(%pod, %error, "handover push failed");
    }
    let mut applied = vec![PodName::of(to)];
    applied.extend(rest.applied);
    let stale = rest.stale;
    let old_primary_fenced = applied.iter().any(|pod| *pod == from.id);
    Ok(Switch::Done {
        applied,
        stale,
        old_primary_fenced,
        paused: Duration::ZERO,
    })
}
