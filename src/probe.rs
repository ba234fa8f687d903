//! Direct health probes of shard primaries, independent of pod readiness (a readiness
//! probe reacts in seconds; a dead primary must be noticed within about two probe
//! intervals). The prober only observes: when a primary crosses the failure threshold it
//! triggers a reconcile, and the reconcile decides (from pods and node reports) what to do.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::SinkExt;
use futures::channel::mpsc;
use meridian_topology::{NodeAddr, TopologyMap};

use crate::nodes::{NodeAccess, NodeConnection};

/// Time between probe rounds. With the timeout and threshold below, a primary that
/// hangs (its process frozen, its pod still Ready) is flagged about 1-1.5 s later.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(500);
/// Connect and response timeout of one probe.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// Consecutive failed probes after which a primary counts as unreachable.
pub const FAILURE_THRESHOLD: u32 = 2;
/// Targets not refreshed by a reconcile for this long belong to deleted regions.
const TARGET_EXPIRY: Duration = Duration::from_secs(900);

struct RegionTarget {
    primaries: Vec<NodeAddr>,
    access: NodeAccess,
    refreshed: Instant,
}

/// The primaries to probe (per region) and their consecutive failure counts.
#[derive(Default)]
pub struct PrimaryProbes {
    targets: Mutex<HashMap<String, RegionTarget>>,
    /// Keyed by `id@ip` so a recreated pod (new IP) starts with a clean record.
    failures: Mutex<HashMap<String, u32>>,
    /// Any node (primary or not) whose last read by a reconcile failed, and when:
    /// read with the probe's short timeout until it answers again, so a hung
    /// replica does not slow every reconcile (and the failovers they carry).
    unanswered: Mutex<HashMap<String, Instant>>,
}

/// How long a failed read keeps a node on the short timeout without a new failure.
const UNANSWERED_MEMORY: Duration = Duration::from_secs(60);

fn node_key(node: &NodeAddr) -> String {
    format!("{}@{}", node.id, node.ip)
}

impl PrimaryProbes {
    /// Sets the primaries of `region_key` from `map` (called by every reconcile that knows
    /// the region's map).
    pub fn watch(&self, region_key: &str, map: &TopologyMap, access: &NodeAccess) {
        let primaries = map
            .shards
            .iter()
            .map(|shard| shard.primary.clone())
            .collect();
        if let Ok(mut targets) = self.targets.lock() {
            targets.insert(
                region_key.to_string(),
                RegionTarget {
                    primaries,
                    access: access.clone(),
                    refreshed: Instant::now(),
                },
            );
        }
    }

    /// Consecutive failed probes of `node` (0 when never probed).
    pub fn consecutive_failures(&self, node: &NodeAddr) -> u32 {
        self.failures.lock().map_or(0, |failures| {
            failures.get(&node_key(node)).copied().unwrap_or(0)
        })
    }

    /// Whether `node` failed at least [`FAILURE_THRESHOLD`] probes in a row.
    pub fn is_unreachable(&self, node: &NodeAddr) -> bool {
        self.consecutive_failures(node) >= FAILURE_THRESHOLD
    }

    /// Records whether a reconcile's read of `node` was answered.
    pub fn record_read(&self, node: &NodeAddr, answered: bool) {
        if let Ok(mut unanswered) = self.unanswered.lock() {
            if answered {
                unanswered.remove(&node_key(node));
            } else {
                unanswered.insert(node_key(node), Instant::now());
            }
        }
    }

    /// Whether `node` should be read with the short timeout: the probes flag it, or
    /// a reconcile's read of it failed recently and none has succeeded since.
    pub fn is_suspect(&self, node: &NodeAddr) -> bool {
        self.is_unreachable(node)
            || self.unanswered.lock().is_ok_and(|unanswered| {
                unanswered
                    .get(&node_key(node))
                    .is_some_and(|at| at.elapsed() < UNANSWERED_MEMORY)
            })
    }

    /// Records one probe; true when this failure made the node cross the threshold.
    pub fn record(&self, node: &NodeAddr, healthy: bool) -> bool {
        let Ok(mut failures) = self.failures.lock() else {
            return false;
        };
        if healthy {
            failures.remove(&node_key(node));
            return false;
        }
        let count = failures.entry(node_key(node)).or_insert(0);
        *count = count.saturating_add(1);
        *count == FAILURE_THRESHOLD
    }

    fn snapshot(&self) -> Vec<(NodeAddr, NodeAccess)> {
        let Ok(mut targets) = self.targets.lock() else {
            return Vec::new();
        };
        targets.retain(|_, target| target.refreshed.elapsed() < TARGET_EXPIRY);
        let nodes: Vec<(NodeAddr, NodeAccess)> = targets
            .values()
            .flat_map(|target| {
                target
                    .primaries
                    .iter()
                    .map(|node| (node.clone(), target.access.clone()))
            })
            .collect();
        if let Ok(mut failures) = self.failures.lock() {
            failures.retain(|key, _| nodes.iter().any(|(node, _)| &node_key(node) == key));
        }
        nodes
    }
}

/// Pings `node` on `held` (its connection kept from the last probe), or on a new one;
/// gives the connection back when the node answered. A connection that failed is
/// dropped, so the next probe also proves the node still accepts connections.
async fn probe_once(
    node: &NodeAddr,
    access: &NodeAccess,
    held: Option<NodeConnection>,
) -> Option<NodeConnection> {
    let attempt = async {
        let mut connection = match held {
            Some(connection) => connection,
            None => {
                NodeConnection::open_with_timeout(node, access, PROBE_TIMEOUT, PROBE_TIMEOUT)
                    .await?
            }
        };
        connection.ping().await?;
        Ok::<_, crate::Error>(connection)
    };
    // The outer timeout also bounds the connect + AUTH handshake.
    tokio::time::timeout(PROBE_TIMEOUT * 2, attempt)
        .await
        .ok()
        .and_then(Result::ok)
}

/// Probes every watched primary each [`PROBE_INTERVAL`], each over one connection kept
/// while it answers (a probe costs a PING, not a TCP and AUTH handshake); sends on
/// `trigger` when a primary crosses the failure threshold. Runs until the receiver is
/// dropped.
pub async fn run(probes: Arc<PrimaryProbes>, mut trigger: mpsc::Sender<()>) {
    let mut ticker = tokio::time::interval(PROBE_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut held: HashMap<String, NodeConnection> = HashMap::new();
    loop {
        ticker.tick().await;
        let targets = probes.snapshot();
        // Connections of primaries no longer watched are closed.
        held.retain(|key, _| targets.iter().any(|(node, _)| &node_key(node) == key));
        let results = futures::future::join_all(targets.iter().map(|(node, access)| {
            let connection = held.remove(&node_key(node));
            async move { (node, probe_once(node, access, connection).await) }
        }))
        .await;
        let mut crossed = false;
        for (node, answered) in results {
            let healthy = answered.is_some();
            if let Some(connection) = answered {
                held.insert(node_key(node), connection);
            }
            if probes.record(node, healthy) {
                tracing::warn!(node = %node.id, endpoint = %node.endpoint(), "primary failed {FAILURE_THRESHOLD} consecutive probes");
                crossed = true;
            }
        }
        if crossed && trigger.send(()).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unanswered_read_makes_a_node_suspect_until_it_answers() {
        let probes = PrimaryProbes::default();
        let replica = node("127.0.0.7");
        assert!(!probes.is_suspect(&replica));
        probes.record_read(&replica, false);
        assert!(probes.is_suspect(&replica));
        // the same pod recreated with a new IP starts clean
        assert!(!probes.is_suspect(&node("127.0.0.8")));
        probes.record_read(&replica, true);
        assert!(!probes.is_suspect(&replica));
    }

    fn node(ip: &str) -> NodeAddr {
        NodeAddr {
            id: "orders-eu-0-0".into(),
            ip: ip.into(),
            port: 6379,
        }
    }

    #[test]
    fn threshold_is_crossed_once_and_reset_by_success() {
        let probes = PrimaryProbes::default();
        let primary = node("127.0.0.5");
        assert!(!probes.record(&primary, false));
        assert!(!probes.is_unreachable(&primary));
        assert!(probes.record(&primary, false));
        assert!(probes.is_unreachable(&primary));
        assert!(!probes.record(&primary, false), "crossing is reported once");
        probes.record(&primary, true);
        assert_eq!(probes.consecutive_failures(&primary), 0);
    }

    #[test]
    fn a_recreated_pod_starts_clean() {
        let probes = PrimaryProbes::default();
        probes.record(&node("127.0.0.5"), false);
        probes.record(&node("127.0.0.5"), false);
        assert!(!probes.is_unreachable(&node("127.0.0.9")));
    }
}
