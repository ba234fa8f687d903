//! Region-link wiring: which peer regions every node of a region must stream to
//! (`MERIDIAN.PEERS SET`), and what the nodes report about those links
//! (`MERIDIAN.PEERS GET`). Pure; the controller does the I/O.

use std::collections::BTreeMap;

use meridian_api::{PeerSpec, PeerStatus, ports};
use serde::{Deserialize, Serialize};

/// One peer region as `MERIDIAN.PEERS SET` takes it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PeerConfig {
    pub region: String,
    pub seeds: Vec<String>,
}

/// A node pod of a sibling region (another CacheRegion of the same CacheCluster in this
/// Kubernetes cluster).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiblingPod {
    pub ip: Option<String>,
    pub ready: bool,
}

/// A sibling region and its node pods.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiblingRegion {
    pub region: String,
    pub pods: Vec<SiblingPod>,
}

/// One peer as a node reports it in `MERIDIAN.PEERS GET`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct ReportedPeer {
    pub region: String,
    #[serde(default)]
    pub seeds: Vec<String>,
    #[serde(default)]
    pub up: bool,
    #[serde(default)]
    pub queued: u64,
    #[serde(default)]
    pub dirty_slots: u64,
    #[serde(default)]
    pub last_error: String,
    /// Delivery lag of the node's events to this peer (absent from older nodes).
    #[serde(default)]
    pub lag_ms: Option<u64>,
}

/// The whole `MERIDIAN.PEERS GET` reply.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct PeersReport {
    #[serde(default)]
    pub cluster: String,
    #[serde(default)]
    pub region: String,
    #[serde(default)]
    pub peers: Vec<ReportedPeer>,
}

impl PeersReport {
    /// The configuration the node runs, in the canonical order `desired_peers` uses.
    pub fn configs(&self) -> Vec<PeerConfig> {
        let mut configs: Vec<PeerConfig> = self
            .peers
            .iter()
            .map(|peer| PeerConfig {
                region: peer.region.clone(),
                seeds: peer.seeds.clone(),
            })
            .collect();
        configs.sort();
        configs
    }
}

/// `ip:port` of a pod's link listener; IPv6 addresses are bracketed.
pub fn link_seed(ip: &str) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{}", ports::REGION_LINK)
    } else {
        format!("{ip}:{}", ports::REGION_LINK)
    }
}

/// The peers every node of `own_region` must have, sorted by region, seeds sorted.
///
/// Sibling regions contribute the link endpoints of their Ready pods; when none is Ready,
/// of every pod with an IP; when no pod has an IP, the seeds the nodes already hold
/// (`known`), so a peer restarting all its pods keeps its queued events instead of being
/// dropped. `spec.peers` (regions in other Kubernetes clusters) contribute their address;
/// a region found in this cluster wins over a `spec.peers` entry of the same name.
pub fn desired_peers(
    own_region: &str,
    siblings: &[SiblingRegion],
    remote: &[PeerSpec],
    known: &[PeerConfig],
) -> Vec<PeerConfig> {
    let mut peers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for sibling in siblings
        .iter()
        .filter(|sibling| sibling.region != own_region)
    {
        let seeds_of = |ready_only: bool| -> Vec<String> {
            sibling
                .pods
                .iter()
                .filter(|pod| pod.ready || !ready_only)
                .filter_map(|pod| pod.ip.as_deref().map(link_seed))
                .collect()
        };
        let mut seeds = seeds_of(true);
        if seeds.is_empty() {
            seeds = seeds_of(false);
        }
        if seeds.is_empty() {
            seeds = known
                .iter()
                .find(|config| config.region == sibling.region)
                .map(|config| config.seeds.clone())
                .unwrap_or_default();
        }
        if !seeds.is_empty() {
            peers
                .entry(sibling.region.clone())
                .or_default()
                .extend(seeds);
        }
    }
    for peer in remote.iter().filter(|peer| peer.region != own_region) {
        peers
            .entry(peer.region.clone())
            .or_insert_with(|| vec![peer.address.clone()]);
    }
    peers
        .into_iter()
        .map(|(region, mut seeds)| {
            seeds.sort();
            seeds.dedup();
            PeerConfig { region, seeds }
        })
        .collect()
}

/// Whether a node reporting `reported` needs `MERIDIAN.PEERS SET desired`.
pub fn needs_push(desired: &[PeerConfig], reported: &PeersReport) -> bool {
    reported.configs() != desired
}

/// Link state per desired peer, from the reports of the region's primaries.
///
/// `primaries` holds one entry per primary of the current map; `None` is a primary that
/// could not be asked. A peer is connected only when every primary reports its link up
/// (each primary streams its own slots' writes); its lag is the largest any primary
/// reports.
pub fn peer_statuses(
    desired: &[PeerConfig],
    primaries: &[Option<&PeersReport>],
) -> Vec<PeerStatus> {
    desired
        .iter()
        .map(|config| {
            let connected = !primaries.is_empty()
                && primaries.iter().all(|report| {
                    report.is_some_and(|report| {
                        report
                            .peers
                            .iter()
                            .any(|peer| peer.region == config.region && peer.up)
                    })
                });
            let lag_ms = primaries
                .iter()
                .flatten()
                .flat_map(|report| report.peers.iter())
                .filter(|peer| peer.region == config.region)
                .filter_map(|peer| peer.lag_ms)
                .max()
                .map(|lag| i64::try_from(lag).unwrap_or(i64::MAX));
            let errors = if connected {
                Vec::new()
            } else {
                link_errors(&config.region, primaries)
            };
            PeerStatus {
                region: config.region.clone(),
                connected,
                lag_ms,
                message: (!errors.is_empty()).then(|| errors.join("; ")),
            }
        })
        .collect()
}

/// Human-readable reasons why the links to `region` are down, each different error that
/// a primary reported once (every primary refused by the same peer says the same).
pub fn link_errors(region: &str, primaries: &[Option<&PeersReport>]) -> Vec<String> {
    let mut errors: Vec<String> = Vec::new();
    for peer in primaries
        .iter()
        .flatten()
        .flat_map(|report| report.peers.iter())
        .filter(|peer| peer.region == region && !peer.up && !peer.last_error.is_empty())
    {
        if !errors.contains(&peer.last_error) {
            errors.push(peer.last_error.clone());
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ip: &str, ready: bool) -> SiblingPod {
        SiblingPod {
            ip: Some(ip.to_string()),
            ready,
        }
    }

    fn config(region: &str, seeds: &[&str]) -> PeerConfig {
        PeerConfig {
            region: region.to_string(),
            seeds: seeds.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn siblings_contribute_ready_pods_sorted_and_own_region_is_skipped() {
        let siblings = vec![
            SiblingRegion {
                region: "region-c".into(),
                pods: vec![pod("127.0.3.2", true), pod("127.0.3.1", true)],
            },
            SiblingRegion {
                region: "region-b".into(),
                pods: vec![
                    pod("127.0.2.9", false),
                    pod("127.0.2.1", true),
                    SiblingPod {
                        ip: None,
                        ready: false,
                    },
                ],
            },
            SiblingRegion {
                region: "region-a".into(),
                pods: vec![pod("127.0.1.1", true)],
            },
        ];
        let peers = desired_peers("region-a", &siblings, &[], &[]);
        assert_eq!(
            peers,
            vec![
                config("region-b", &["127.0.2.1:16379"]),
                config("region-c", &["127.0.3.1:16379", "127.0.3.2:16379"]),
            ]
        );
    }

    #[test]
    fn no_ready_pod_falls_back_to_any_ip_then_to_what_nodes_hold() {
        let starting = SiblingRegion {
            region: "region-b".into(),
            pods: vec![pod("127.0.2.5", false)],
        };
        assert_eq!(
            desired_peers("region-a", &[starting], &[], &[]),
            vec![config("region-b", &["127.0.2.5:16379"])]
        );
        let restarting = SiblingRegion {
            region: "region-b".into(),
            pods: vec![SiblingPod {
                ip: None,
                ready: false,
            }],
        };
        let known = vec![config("region-b", &["127.0.2.1:16379"])];
        assert_eq!(
            desired_peers("region-a", std::slice::from_ref(&restarting), &[], &known),
            known
        );
        assert!(desired_peers("region-a", &[restarting], &[], &[]).is_empty());
    }

    #[test]
    fn remote_peers_use_their_address_and_in_cluster_regions_win() {
        let siblings = vec![SiblingRegion {
            region: "region-b".into(),
            pods: vec![pod("127.0.2.1", true)],
        }];
        let remote = vec![
            PeerSpec {
                region: "us-east-1".into(),
                address: "meridian-us.example.com:16379".into(),
            },
            PeerSpec {
                region: "region-b".into(),
                address: "elsewhere.example.com:16379".into(),
            },
        ];
        assert_eq!(
            desired_peers("region-a", &siblings, &remote, &[]),
            vec![
                config("region-b", &["127.0.2.1:16379"]),
                config("us-east-1", &["meridian-us.example.com:16379"]),
            ]
        );
    }

    #[test]
    fn ipv6_seeds_are_bracketed() {
        assert_eq!(link_seed("fd00::5"), "[fd00::5]:16379");
        assert_eq!(link_seed("127.0.0.9"), "127.0.0.9:16379");
    }

    fn report(json: &str) -> PeersReport {
        serde_json::from_str(json).expect("valid report")
    }

    #[test]
    fn push_only_when_the_node_runs_something_else() {
        let node = report(
            r#"{"cluster":"demo","region":"region-a","mode":"invalidate","consistency":"eventual",
               "peers":[{"region":"region-c","seeds":["127.0.3.1:16379"],"up":true,"queued":0,
                         "dirty_slots":0,"epoch":3,"last_error":""},
                        {"region":"region-b","seeds":["127.0.2.1:16379"],"up":false,"queued":4,
                         "dirty_slots":0,"epoch":null,"last_error":"connection refused"}]}"#,
        );
        let same = vec![
            config("region-b", &["127.0.2.1:16379"]),
            config("region-c", &["127.0.3.1:16379"]),
        ];
        assert!(!needs_push(&same, &node));
        let moved = vec![
            config("region-b", &["127.0.2.7:16379"]),
            config("region-c", &["127.0.3.1:16379"]),
        ];
        assert!(needs_push(&moved, &node));
        assert!(needs_push(&[], &node));
        assert!(!needs_push(&[], &PeersReport::default()));
    }

    #[test]
    fn connected_only_when_every_primary_reports_the_link_up() {
        let desired = vec![
            config("region-b", &["x:16379"]),
            config("region-c", &["y:1"]),
        ];
        let first = report(
            r#"{"peers":[{"region":"region-b","up":true,"lag_ms":4},{"region":"region-c","up":true}]}"#,
        );
        let second = report(
            r#"{"peers":[{"region":"region-b","up":true,"lag_ms":9},
                         {"region":"region-c","up":false,"last_error":"DENIED wrong cluster"}]}"#,
        );
        let statuses = peer_statuses(&desired, &[Some(&first), Some(&second)]);
        assert_eq!(
            statuses
                .iter()
                .map(|status| (status.region.as_str(), status.connected))
                .collect::<Vec<_>>(),
            vec![("region-b", true), ("region-c", false)]
        );
        assert_eq!(statuses[0].lag_ms, Some(9), "the slowest primary's lag");
        assert_eq!(statuses[1].lag_ms, None, "no primary measured region-c");
        assert_eq!(statuses[0].message, None, "a connected link has no error");
        assert_eq!(
            statuses[1].message.as_deref(),
            Some("DENIED wrong cluster"),
            "the primaries' reason for a link that is down"
        );
        assert_eq!(
            link_errors("region-c", &[Some(&first), Some(&second)]),
            vec!["DENIED wrong cluster".to_string()]
        );
        // An unreachable primary cannot vouch for its links.
        let statuses = peer_statuses(&desired, &[Some(&first), None]);
        assert!(statuses.iter().all(|status| !status.connected));
        assert!(peer_statuses(&desired, &[]).iter().all(|s| !s.connected));
    }
}
