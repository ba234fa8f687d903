//! Node registration: Node objects with topology labels, capacity and Ready status,
//! node Leases renewed every 10s, and per-node loopback pod address blocks.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Node, NodeSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::time::Duration;

pub const HOST_IP: &str = "127.0.0.1";
const LEASE_NAMESPACE: &str = "kube-node-lease";
const LEASE_DURATION_SECONDS: i32 = 40;
pub const LEASE_RENEW_INTERVAL: Duration = Duration::from_secs(10);
pub const STATUS_INTERVAL: Duration = Duration::from_secs(60);

/// One node this agent plays, with its loopback pod address block 127.0.(10+index).0/24.
pub struct LocalNode {
    pub name: String,
    pub index: u8,
    pub region: String,
    pub zone: String,
    pool: Mutex<IpPool>,
}

/// Addresses .2–.254 of the node's /24, handed out round-robin so a deleted pod's address
/// is not immediately reused by its replacement.
#[derive(Debug, Default)]
struct IpPool {
    used: BTreeSet<u8>,
    cursor: u8,
}

impl IpPool {
    fn allocate(&mut self, preferred: Option<u8>) -> Option<u8> {
        if let Some(p) = preferred.filter(|p| (2..=254).contains(p) && !self.used.contains(p)) {
            self.used.insert(p);
            return Some(p);
        }
        for step in 0..253u16 {
            let candidate = 2 + ((self.cursor as u16 + step) % 253) as u8;
            if !self.used.contains(&candidate) {
                self.used.insert(candidate);
                self.cursor = candidate - 1; // next search starts after this one
                return Some(candidate);
            }
        }
        None
    }
}

impl LocalNode {
    pub fn cidr(&self) -> String {
        format!("127.0.{}.0/24", 10 + self.index as u16)
    }

    fn prefix(&self) -> u8 {
        10 + self.index
    }

    /// Allocates a pod address, keeping `previous` (from an existing pod status) when it
    /// lies in this node's block and is free.
    pub fn allocate_ip(&self, previous: Option<&str>) -> Option<Ipv4Addr> {
        let preferred = previous
            .and_then(|p| p.parse::<Ipv4Addr>().ok())
            .filter(|ip| ip.octets()[..3] == [127, 0, self.prefix()])
            .map(|ip| ip.octets()[3]);
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        pool.allocate(preferred)
            .map(|last| Ipv4Addr::new(127, 0, self.prefix(), last))
    }

    pub fn release_ip(&self, ip: Ipv4Addr) {
        if ip.octets()[..3] == [127, 0, self.prefix()] {
            let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
            pool.used.remove(&ip.octets()[3]);
        }
    }
}

/// `region-a`, `region-b`, … (then `region-aa` style names past 26 — never needed in tests).
fn region_name(i: usize) -> String {
    let letters = b"abcdefghijklmnopqrstuvwxyz";
    let mut suffix = String::new();
    let mut n = i;
    loop {
        suffix.insert(0, letters[n % 26] as char);
        if n < 26 {
            break;
        }
        n = n / 26 - 1;
    }
    format!("region-{suffix}")
}

/// The node set: `local-region-a-1` … (with a `-<k>` suffix when there are several nodes
/// per zone). At most 240 nodes fit the 127.0.10–249.x address plan.
pub fn plan(
    regions: usize,
    zones_per_region: usize,
    nodes_per_zone: usize,
) -> anyhow::Result<Vec<LocalNode>> {
    let total = regions * zones_per_region * nodes_per_zone;
    anyhow::ensure!(total > 0, "at least one node is needed");
    anyhow::ensure!(
        total <= 240,
        "{total} nodes do not fit the 127.0.10.0–127.0.249.0 pod address plan"
    );
    let mut nodes = Vec::with_capacity(total);
    for r in 0..regions {
        let region = region_name(r);
        for z in 1..=zones_per_region {
            let zone = format!("{region}-{z}");
            for k in 1..=nodes_per_zone {
                let name = if nodes_per_zone == 1 {
                    format!("local-{zone}")
                } else {
                    format!("local-{zone}-{k}")
                };
                nodes.push(LocalNode {
                    name,
                    index: nodes.len() as u8,
                    region: region.clone(),
                    zone: zone.clone(),
                    pool: Mutex::new(IpPool::default()),
                });
            }
        }
    }
    Ok(nodes)
}

fn node_object(node: &LocalNode) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(node.name.clone()),
            labels: Some(labels(node)),
            annotations: Some(
                [(
                    "meridian.dev/node-agent".to_string(),
                    "test fixture; not a kubelet".to_string(),
                )]
                .into(),
            ),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            pod_cidr: Some(node.cidr()),
            pod_cidrs: Some(vec![node.cidr()]),
            ..Default::default()
        }),
        status: None,
    }
}

fn labels(node: &LocalNode) -> std::collections::BTreeMap<String, String> {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    [
        ("topology.kubernetes.io/region", node.region.as_str()),
        ("topology.kubernetes.io/zone", node.zone.as_str()),
        ("kubernetes.io/hostname", node.name.as_str()),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", arch),
        ("node.kubernetes.io/instance-type", "meridian-local"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The status the agent reports: capacity, addresses, conditions (Ready or not).
fn status_patch(node: &LocalNode, ready: bool, since: &Timestamp) -> serde_json::Value {
    let now = Timestamp::now().to_string();
    let since = since.to_string();
    let resources =
        json!({"cpu": "8", "memory": "16Gi", "pods": "110", "ephemeral-storage": "100Gi"});
    let condition = |type_: &str, status: &str, reason: &str, message: &str| {
        json!({"type": type_, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": now, "lastTransitionTime": since})
    };
    let ready_condition = if ready {
        condition(
            "Ready",
            "True",
            "KubeletReady",
            "meridian local node agent (test fixture) is posting ready status",
        )
    } else {
        condition(
            "Ready",
            "False",
            "AgentStopped",
            "meridian local node agent stopped",
        )
    };
    json!({
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "addresses": [
                {"type": "InternalIP", "address": HOST_IP},
                {"type": "Hostname", "address": node.name},
            ],
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "no memory pressure"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "no disk pressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID", "sufficient PIDs"),
                ready_condition,
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "architecture": std::env::consts::ARCH,
                "bootID": "",
                "containerRuntimeVersion": "meridian-local://0",
                "kernelVersion": kernel_version(),
                "kubeProxyVersion": "",
                "kubeletVersion": "v1.35.4-meridian-agent",
                "machineID": node.name,
                "operatingSystem": "linux",
                "osImage": "meridian local node agent (test fixture)",
                "systemUUID": node.name,
            },
        }
    })
}

fn kernel_version() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Creates the Node (or refreshes labels of an existing one) and reports it Ready.
pub async fn register(
    client: &kube::Client,
    node: &LocalNode,
    since: &Timestamp,
) -> Result<(), kube::Error> {
    let api: Api<Node> = Api::all(client.clone());
    match api.create(&PostParams::default(), &node_object(node)).await {
        Ok(_) => tracing::info!(node = %node.name, cidr = %node.cidr(), "registered node"),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let existing = api.get(&node.name).await?;
            let cidr = existing.spec.as_ref().and_then(|s| s.pod_cidr.clone());
            if cidr.as_deref().is_some_and(|c| c != node.cidr()) {
                tracing::warn!(node = %node.name, existing = ?cidr, ours = %node.cidr(),
                    "node has a different podCIDR (immutable); pods still get addresses from ours");
            }
            let patch = json!({"metadata": {"labels": labels(node)}});
            api.patch(&node.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            tracing::info!(node = %node.name, "node already registered; taking it over");
        }
        Err(e) => return Err(e),
    }
    report_status(client, node, true, since).await
}

pub async fn report_status(
    client: &kube::Client,
    node: &LocalNode,
    ready: bool,
    since: &Timestamp,
) -> Result<(), kube::Error> {
    let api: Api<Node> = Api::all(client.clone());
    api.patch_status(
        &node.name,
        &PatchParams::default(),
        &Patch::Strategic(status_patch(node, ready, since)),
    )
    .await
    .map(|_| ())
}

/// Creates or renews the node's Lease, which keeps the node-lifecycle controller content.
pub async fn renew_lease(
    client: &kube::Client,
    node: &LocalNode,
    node_uid: Option<&str>,
) -> Result<(), kube::Error> {
    let api: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let now = MicroTime(Timestamp::now());
    let patch = json!({"spec": {"holderIdentity": node.name, "leaseDurationSeconds": LEASE_DURATION_SECONDS, "renewTime": now}});
    match api
        .patch(&node.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(node.name.clone()),
                    namespace: Some(LEASE_NAMESPACE.into()),
                    owner_references: node_uid.map(|uid| {
                        vec![OwnerReference {
                            api_version: "v1".into(),
                            kind: "Node".into(),
                            name: node.name.clone(),
                            uid: uid.to_string(),
                            ..Default::default()
                        }]
                    }),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(node.name.clone()),
                    lease_duration_seconds: Some(LEASE_DURATION_SECONDS),
                    renew_time: Some(now),
                    ..Default::default()
                }),
            };
            api.create(&PostParams::default(), &lease).await.map(|_| ())
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_plan_has_six_nodes_with_topology() {
        let nodes = plan(2, 3, 1).unwrap();
        let names: Vec<_> = nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "local-region-a-1",
                "local-region-a-2",
                "local-region-a-3",
                "local-region-b-1",
                "local-region-b-2",
                "local-region-b-3"
            ]
        );
        assert_eq!(nodes[4].region, "region-b");
        assert_eq!(nodes[4].zone, "region-b-2");
        assert_eq!(nodes[0].cidr(), "127.0.10.0/24");
        assert_eq!(nodes[5].cidr(), "127.0.15.0/24");
        let l = labels(&nodes[3]);
        assert_eq!(l["topology.kubernetes.io/zone"], "region-b-1");
        assert_eq!(l["kubernetes.io/hostname"], "local-region-b-1");
        let multi = plan(1, 1, 2).unwrap();
        assert_eq!(multi[1].name, "local-region-a-1-2");
        assert!(plan(0, 3, 1).is_err());
        assert!(plan(30, 3, 3).is_err());
        assert_eq!(region_name(27), "region-ab");
    }

    #[test]
    fn addresses_are_distinct_and_prefer_previous() {
        let nodes = plan(1, 1, 1).unwrap();
        let n = &nodes[0];
        let a = n.allocate_ip(None).unwrap();
        let b = n.allocate_ip(None).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.octets()[..3], [127, 0, 10]);
        assert_eq!(
            n.allocate_ip(Some("127.0.10.77")).unwrap(),
            Ipv4Addr::new(127, 0, 10, 77)
        );
        // Taken or foreign previous addresses fall back to a fresh one.
        let c = n.allocate_ip(Some("127.0.10.77")).unwrap();
        assert_ne!(c, Ipv4Addr::new(127, 0, 10, 77));
        assert_ne!(n.allocate_ip(Some("127.0.11.5")).unwrap().octets()[2], 11);
        n.release_ip(a);
        // Round-robin: the released address is not handed out right away.
        assert_ne!(n.allocate_ip(None).unwrap(), a);
        let mut all = BTreeSet::new();
        while let Some(ip) = n.allocate_ip(None) {
            all.insert(ip);
        }
        assert!(all.contains(&a), "released addresses come back eventually");
    }
}
