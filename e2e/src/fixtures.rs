//! The objects the scenarios deploy and the waits every scenario shares: a CacheCluster
//! with its CacheRegions as YAML, "until the region is Ready / settled", and the checks of
//! what a region serves (primary endpoints, slot ranges, `redis-cli --cluster check`).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use meridian_api::{CacheCluster, CacheClusterStatus, CacheRegion, CacheRegionStatus, ShardStatus};
use meridian_topology::SlotRange;

use crate::{apply_yaml, describe_pods, pod_ip, region_pods, wait_for};

/// How often the waits below poll the API server: often enough to catch short phases
/// such as a resharding step, cheap enough for a shared CI machine.
const POLL: Duration = Duration::from_millis(500);

/// A CacheCluster and its CacheRegions, as the scenarios deploy them.
#[derive(Clone, Debug)]
pub struct ClusterFixture {
    pub name: String,
    pub shards: u32,
    pub replicas_per_shard: u32,
    /// `(CacheRegion name, region)` of every region; each region's pods are pinned to the
    /// nodes labelled with that region.
    pub regions: Vec<(String, String)>,
    /// `eventual` or `strong`, with cross-region invalidation (and a 2 s strong timeout);
    /// `None` leaves both to the CRD defaults.
    pub consistency: Option<String>,
    /// `crossRegion.mode` when `consistency` is set: `invalidate` when `None`.
    pub cross_region_mode: Option<String>,
    pub maxmemory: String,
    /// `spec.fencing` as (minReplicas, maxLagSeconds); off when `None`.
    pub fencing: Option<(u32, u32)>,
    /// Regions (the `region` values) whose pods run with the RuntimeClass
    /// `placement.runtimeClassName` names, as `(region, RuntimeClass)`.
    pub runtime_classes: Vec<(String, String)>,
    /// Extra `spec` lines (indented two spaces), e.g. `auth` or `tls` of a scenario that
    /// tests them. `None`: `auth: {mode: Disabled}`, explicitly, because the scenarios
    /// test everything but authentication and their clients send no password (the
    /// default, a generated password, has its own scenario).
    pub security: Option<String>,
    /// `spec.origin`'s fields, one YAML line each (`url: http://...`, `writeBehind:
    /// true`); no origin when empty.
    pub origin: Vec<String>,
}

impl Default for ClusterFixture {
    fn default() -> Self {
        Self {
            name: "orders".into(),
            shards: 1,
            replicas_per_shard: 0,
            regions: Vec::new(),
            consistency: None,
            cross_region_mode: None,
            maxmemory: "64Mi".into(),
            fencing: None,
            runtime_classes: Vec::new(),
            security: None,
            origin: Vec::new(),
        }
    }
}

impl ClusterFixture {
    /// A cluster `name` with one CacheRegion, `region_name`, in `region-a`.
    pub fn in_region_a(
        name: &str,
        region_name: &str,
        shards: u32,
        replicas_per_shard: u32,
    ) -> Self {
        Self {
            name: name.into(),
            shards,
            replicas_per_shard,
            ..Self::default()
        }
        .with_regions(&[(region_name, "region-a")])
    }

    /// `(CacheRegion name, region)` pairs, e.g. `[("orders-a", "region-a")]`.
    pub fn with_regions(mut self, regions: &[(&str, &str)]) -> Self {
        self.regions = regions
            .iter()
            .map(|(name, region)| (name.to_string(), region.to_string()))
            .collect();
        self
    }

    /// The CacheCluster.
    pub fn yaml(&self) -> String {
        let consistency = match self.consistency.as_deref() {
            None => String::new(),
            Some(consistency) => {
                // The CRD refuses a strong timeout on an eventual cluster.
                let strong_timeout = if consistency == "strong" {
                    "\n    strongTimeoutMs: 2000"
                } else {
                    ""
                };
                let mode = self.cross_region_mode.as_deref().unwrap_or("invalidate");
                format!(
                    "\n  consistency: {consistency}\n  crossRegion:\n    mode: {mode}{strong_timeout}"
                )
            }
        };
        let fencing = self
            .fencing
            .map_or(String::new(), |(min_replicas, max_lag)| {
                format!(
                    "\n  fencing:\n    minReplicas: {min_replicas}\n    maxLagSeconds: {max_lag}"
                )
            });
        let security = match &self.security {
            None => "\n  auth:\n    mode: Disabled".to_string(),
            Some(lines) if lines.is_empty() => String::new(),
            Some(lines) => format!("\n{}", lines.trim_end()),
        };
        let origin = if self.origin.is_empty() {
            String::new()
        } else {
            format!("\n  origin:\n    {}", self.origin.join("\n    "))
        };
        format!(
            r#"
apiVersion: cache.meridian.dev/v1alpha1
kind: CacheCluster
metadata:
  name: {name}
spec:
  shards: {shards}
  replicasPerShard: {replicas}{consistency}{fencing}{security}{origin}
  memory:
    maxmemory: {maxmemory}
  networkPolicy:
    clients:
      - podSelector: {{}}
      - ipBlock:
          cidr: {test_runner}
"#,
            test_runner = test_runner_cidr(),
            name = self.name,
            shards = self.shards,
            replicas = self.replicas_per_shard,
            maxmemory = self.maxmemory,
        )
    }

    /// Applies the CacheCluster and every CacheRegion in `ns`.
    pub async fn apply(&self, client: &Client, ns: &str) -> Result<Deployed> {
        let deployed = Deployed {
            clusters: Api::namespaced(client.clone(), ns),
            regions: Api::namespaced(client.clone(), ns),
        };
        apply_yaml(&deployed.clusters, &self.yaml()).await?;
        for (name, region) in &self.regions {
            let runtime_class = self
                .runtime_classes
                .iter()
                .find(|(of, _)| of == region)
                .map(|(_, class)| class.as_str());
            apply_yaml(
                &deployed.regions,
                &region_yaml(name, &self.name, region, runtime_class),
            )
            .await?;
        }
        Ok(deployed)
    }
}

/// Where this test process's connections to pods come from, which the cache pods'
/// NetworkPolicy must admit as clients beside the namespace's pods:
/// `MERIDIAN_E2E_CLIENT_CIDR`, by default the local cluster's node network (the machine
/// reaches pods from its address there).
pub fn test_runner_cidr() -> String {
    std::env::var("MERIDIAN_E2E_CLIENT_CIDR").unwrap_or_else(|_| LOCAL_NODE_NETWORK.to_string())
}

/// The node network of `cargo xtask cluster` (xtask/src/cluster/network.rs).
const LOCAL_NODE_NETWORK: &str = "10.240.0.0/24";

/// The APIs of what a [`ClusterFixture`] deployed.
pub struct Deployed {
    pub clusters: Api<CacheCluster>,
    pub regions: Api<CacheRegion>,
}

/// A CacheRegion `name` of `cluster`, its pods on the nodes of `region` (with the
/// RuntimeClass `runtime_class` when given).
pub fn region_yaml(name: &str, cluster: &str, region: &str, runtime_class: Option<&str>) -> String {
    let runtime_class = runtime_class.map_or(String::new(), |class| {
        format!("\n    runtimeClassName: {class}")
    });
    format!(
        r#"
apiVersion: cache.meridian.dev/v1alpha1
kind: CacheRegion
metadata:
  name: {name}
spec:
  clusterRef:
    name: {cluster}
  region: {region}
  placement:
    nodeSelector:
      topology.kubernetes.io/region: {region}{runtime_class}
"#
    )
}

/// Whether a condition of this type has status `True`.
pub fn condition_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|condition| condition.type_ == type_ && condition.status == "True")
}

/// The status of one region as a wait sees it on every poll.
pub struct RegionView<'a> {
    pub status: &'a CacheRegionStatus,
    /// Whether the status describes the current spec (`observedGeneration`).
    pub current: bool,
    pub pods: &'a [Pod],
}

impl RegionView<'_> {
    pub fn ready(&self) -> bool {
        self.current && condition_true(&self.status.conditions, "Ready")
    }

    /// Ready with `shards` shards, each with a primary and slots, and no resharding left.
    pub fn settled(&self, shards: usize) -> bool {
        self.ready()
            && self.status.resharding.is_none()
            && self.status.shards.len() == shards
            && self
                .status
                .shards
                .iter()
                .all(|shard| shard.primary.is_some() && !shard.slots.is_empty())
    }

    /// Whether the region's link to `peer` is up.
    pub fn linked_to(&self, peer: &str) -> bool {
        self.status
            .peers
            .iter()
            .any(|link| link.region == peer && link.connected)
    }

    fn describe(&self) -> String {
        let status = self.status;
        format!(
            "current={}, conditions {:?}, epoch {}, resharding {:?}, peers {:?}, shards {:?}; pods: {}",
            self.current,
            status
                .conditions
                .iter()
                .map(|c| format!("{}={} {}: {}", c.type_, c.status, c.reason, c.message))
                .collect::<Vec<_>>(),
            status.epoch,
            status.resharding,
            status
                .peers
                .iter()
                .map(|p| format!("{}:{}", p.region, p.connected))
                .collect::<Vec<_>>(),
            status
                .shards
                .iter()
                .map(|s| format!(
                    "{}: {:?} {:?} {:?}",
                    s.index, s.primary, s.replicas, s.slots
                ))
                .collect::<Vec<_>>(),
            describe_pods(self.pods)
        )
    }
}

/// A resharding caught in the middle: the region's status, the progress seen on the
/// nodes, and the endpoints of the primaries that took slots so far.
pub struct MidResharding {
    pub status: CacheRegionStatus,
    pub progress: meridian_api::ReshardingStatus,
    pub destinations: Vec<String>,
}

/// Waits until a resharding towards `shards` shards has moved some slots, but not all,
/// and returns what it saw at that moment, to disturb the region mid-migration. `primaries` are the endpoints of the primaries serving before the
/// change (`scaled_at`: when it was made).
///
/// Progress is read from the nodes' own slot map (`CLUSTER SLOTS` every 50 ms), not from
/// `status.resharding`: the operator writes status once per 3 s resharding budget, and
/// release-built nodes move a region's slots in less than that.
pub async fn wait_mid_resharding(
    regions: &Api<CacheRegion>,
    name: &str,
    shards: usize,
    primaries: &[String],
    scaled_at: Instant,
) -> Result<MidResharding> {
    const ALL_SLOTS: usize = 16384;
    let from_shards = primaries.len();
    // The original primaries keep about `from / to` of the slots.
    let to_move = ALL_SLOTS * shards.saturating_sub(from_shards) / shards.max(1);
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut last = String::from("(no node answered yet)");
    loop {
        if Instant::now() > deadline {
            bail!("no slot moved within 180 s of the scale-out; last seen: {last}");
        }
        if let Some((moved, destinations)) = slots_moved_away(primaries).await {
            last = format!("{moved} of ~{to_move} slots moved");
            if moved > 0 {
                // A slot map can be one batch (at most 128 slots) short of the plan's.
                if moved + 128 >= to_move {
                    bail!(
                        "the resharding finished within {:?} ({last}), before the test could \
                         disturb it",
                        scaled_at.elapsed()
                    );
                }
                let status = regions
                    .get(name)
                    .await?
                    .status
                    .with_context(|| format!("{name} has no status"))?;
                let progress = meridian_api::ReshardingStatus {
                    from_shards: i32::try_from(from_shards)?,
                    to_shards: i32::try_from(shards)?,
                    slots_to_move: i32::try_from(to_move)?,
                    slots_moved: i32::try_from(moved)?,
                    ..Default::default()
                };
                return Ok(MidResharding {
                    status,
                    progress,
                    destinations,
                });
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Slots that the first answering node's map gives to primaries not in `primaries`, and
/// those primaries' endpoints.
async fn slots_moved_away(primaries: &[String]) -> Option<(usize, Vec<String>)> {
    for endpoint in primaries {
        let Ok(mut connection) = crate::quick_connection(endpoint).await else {
            continue;
        };
        let Ok(redis::Value::Array(ranges)) = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async::<redis::Value>(&mut connection)
            .await
        else {
            continue;
        };
        let mut moved = 0;
        let mut destinations = Vec::new();
        for range in ranges {
            let redis::Value::Array(fields) = range else {
                continue;
            };
            let (Some(start), Some(end), Some(redis::Value::Array(owner))) =
                (fields.first(), fields.get(1), fields.get(2))
            else {
                continue;
            };
            let (Ok(start), Ok(end)) = (
                redis::from_redis_value::<usize>(start.clone()),
                redis::from_redis_value::<usize>(end.clone()),
            ) else {
                continue;
            };
            let owner = match (owner.first(), owner.get(1)) {
                (Some(ip), Some(port)) => format!(
                    "{}:{}",
                    redis::from_redis_value::<String>(ip.clone()).unwrap_or_default(),
                    redis::from_redis_value::<u16>(port.clone()).unwrap_or_default()
                ),
                _ => continue,
            };
            if !primaries.contains(&owner) {
                moved += end + 1 - start;
                if !destinations.contains(&owner) {
                    destinations.push(owner);
                }
            }
        }
        return Some((moved, destinations));
    }
    None
}

/// Polls CacheRegion `name` until `accept` holds for it, or fails after `timeout` with
/// everything the last poll saw (conditions, shards, peers, pods).
pub async fn wait_region(
    regions: &Api<CacheRegion>,
    name: &str,
    what: &str,
    timeout: Duration,
    mut accept: impl FnMut(&RegionView<'_>) -> bool,
) -> Result<CacheRegionStatus> {
    let started = Instant::now();
    loop {
        let last = match regions.get(name).await {
            Ok(region) => {
                let status = region.status.clone().unwrap_or_default();
                let pods = region_pods(
                    &regions.clone().into_client(),
                    regions.namespace().unwrap_or("default"),
                    &region.spec.cluster_ref.name,
                    &region.spec.region,
                )
                .await
                .unwrap_or_default();
                let view = RegionView {
                    status: &status,
                    current: status.observed_generation == region.metadata.generation,
                    pods: &pods,
                };
                if accept(&view) {
                    return Ok(status);
                }
                view.describe()
            }
            Err(error) => format!("cannot read CacheRegion {name}: {error}"),
        };
        if started.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {name}: {what}; last: {last}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until CacheRegion `name` is Ready for its current spec.
pub async fn wait_region_ready(
    regions: &Api<CacheRegion>,
    name: &str,
    timeout: Duration,
) -> Result<CacheRegionStatus> {
    wait_region(regions, name, "Ready", timeout, |view| view.ready()).await
}

/// Waits until the region serves `shards` shards with no resharding left.
pub async fn wait_region_settled(
    regions: &Api<CacheRegion>,
    name: &str,
    shards: usize,
    timeout: Duration,
) -> Result<CacheRegionStatus> {
    wait_region(
        regions,
        name,
        &format!("settled at {shards} shards"),
        timeout,
        |view| view.settled(shards),
    )
    .await
}

/// Polls CacheCluster `name` until `accept` holds for its status.
pub async fn wait_cluster(
    clusters: &Api<CacheCluster>,
    name: &str,
    what: &str,
    timeout: Duration,
    accept: impl Fn(&CacheClusterStatus) -> bool,
) -> Result<CacheClusterStatus> {
    let accept = &accept;
    wait_for(&format!("{name}: {what}"), timeout, || async move {
        let cluster = clusters
            .get(name)
            .await
            .map_err(|error| format!("cannot read CacheCluster {name}: {error}"))?;
        let status = cluster.status.unwrap_or_default();
        if accept(&status) {
            Ok(Some(status))
        } else {
            Err(format!("{status:?}"))
        }
    })
    .await
}

/// Waits until CacheCluster `name` is Ready with `regions` ready regions.
pub async fn wait_cluster_ready(
    clusters: &Api<CacheCluster>,
    name: &str,
    regions: i32,
    timeout: Duration,
) -> Result<CacheClusterStatus> {
    wait_cluster(
        clusters,
        name,
        &format!("Ready with {regions} ready regions"),
        timeout,
        |status| condition_true(&status.conditions, "Ready") && status.ready_regions == regions,
    )
    .await
}

/// Sets `spec.shards` of CacheRegion `name`.
pub async fn set_region_shards(regions: &Api<CacheRegion>, name: &str, shards: i32) -> Result<()> {
    regions
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "spec": { "shards": shards } })),
        )
        .await
        .with_context(|| format!("scale {name} to {shards} shards"))?;
    Ok(())
}

/// `ip:6379` of every shard's primary, in shard order.
pub async fn primary_endpoints(
    client: &Client,
    ns: &str,
    status: &CacheRegionStatus,
) -> Result<Vec<String>> {
    let mut endpoints = Vec::new();
    for shard in &status.shards {
        let primary = shard
            .primary
            .as_deref()
            .with_context(|| format!("shard {} without primary", shard.index))?;
        endpoints.push(format!("{}:6379", pod_ip(client, ns, primary).await?));
    }
    Ok(endpoints)
}

/// The slot ranges a shard's status lists.
pub fn shard_slot_ranges(shard: &ShardStatus) -> Result<Vec<SlotRange>> {
    shard
        .slots
        .iter()
        .map(|range| {
            range
                .parse()
                .map_err(|e| anyhow::anyhow!("status slot range {range:?} does not parse: {e:?}"))
        })
        .collect()
}

/// How many slots a shard's status lists.
pub fn shard_slot_count(shard: &ShardStatus) -> Result<usize> {
    Ok(shard_slot_ranges(shard)?
        .iter()
        .map(|range| range.len() as usize)
        .sum())
}

/// How many slots each shard of `status` lists, by shard index.
pub fn slots_per_shard(status: &CacheRegionStatus) -> Result<Vec<usize>> {
    status.shards.iter().map(shard_slot_count).collect()
}

/// [`slots_per_shard`], failing unless together they cover all 16384 slots.
pub fn every_slot_owned(status: &CacheRegionStatus) -> Result<Vec<usize>> {
    let slots = slots_per_shard(status)?;
    if slots.iter().sum::<usize>() != 16384 {
        bail!("not every slot is owned: {slots:?}");
    }
    Ok(slots)
}

/// The first `<prefix><n>` whose slot the shard owns (a key, or a hash tag).
pub fn key_for_shard(shard: &ShardStatus, prefix: &str) -> Result<String> {
    let ranges = shard_slot_ranges(shard)?;
    (0..100_000)
        .map(|n| format!("{prefix}{n}"))
        .find(|key| {
            let slot = meridian_topology::key_slot(key.as_bytes());
            ranges.iter().any(|range| range.contains(slot))
        })
        .with_context(|| format!("no key {prefix}<n> for the slots of shard {}", shard.index))
}

/// Runs `redis-cli --cluster check` through `endpoint`, fails unless every slot is
/// covered, and returns its report for further checks.
pub fn redis_cluster_check(endpoint: &str) -> Result<String> {
    let check = std::process::Command::new("redis-cli")
        .args(["--cluster", "check", endpoint])
        .output()
        .context("redis-cli (Debian redis-tools) is required")?;
    let said = String::from_utf8_lossy(&check.stdout).into_owned();
    if !check.status.success() || !said.contains("[OK] All 16384 slots covered") {
        bail!(
            "redis-cli --cluster check {endpoint} failed: {said}{}",
            String::from_utf8_lossy(&check.stderr)
        );
    }
    Ok(said)
}

/// One Event about a region: the recorder folds repeats of a reason into one Event
/// series that keeps the first note, so `count` is how often it happened.
#[derive(Clone, Debug)]
pub struct RegionEvent {
    pub reason: String,
    pub note: String,
    pub count: i32,
}

/// The Events in `ns` about the CacheRegion `region`.
pub async fn region_events(client: &Client, ns: &str, region: &str) -> Result<Vec<RegionEvent>> {
    Ok(
        Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), ns)
            .list(&Default::default())
            .await?
            .items
            .into_iter()
            .filter(|event| {
                event
                    .regarding
                    .as_ref()
                    .and_then(|regarding| regarding.name.as_deref())
                    == Some(region)
            })
            .map(|event| RegionEvent {
                count: event.series.as_ref().map_or(1, |series| series.count),
                reason: event.reason.unwrap_or_default(),
                note: event.note.unwrap_or_default(),
            })
            .collect(),
    )
}

/// How often events with `reason` happened.
pub fn event_count(events: &[RegionEvent], reason: &str) -> i32 {
    events
        .iter()
        .filter(|event| event.reason == reason)
        .map(|event| event.count)
        .sum()
}
