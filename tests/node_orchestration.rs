//! The operator's node client against real `meridian-node` processes on loopback.
//!
//! Uses the binary named by `MERIDIAN_NODE_BIN`, else `meridian-node` next to this test's
//! target directory; skips with a printed reason when neither exists
//! (`cargo build -p meridian-node` first).

mod common;

use std::time::Duration;

use common::{Node, free_port, node_binary, start_node, start_node_with};

use meridian_api::PeerSpec;
use meridian_operator::names::PodName;
use meridian_operator::nodes::{NodeAccess, NodeConnection, NodeTls, PushOutcome, ReplicationRole};
use meridian_operator::peers;
use meridian_operator::topology_plan::{self, NodeReport, ObservedPod, RegionPods};
use meridian_topology::TopologyMap;

/// A plan for one shard whose two "pods" are the local nodes (ports patched in).
fn plan_for(nodes: &[&Node], reports: &[NodeReport], status_epoch: u64) -> TopologyMap {
    let pods = nodes
        .iter()
        .enumerate()
        .map(|(ordinal, node)| ObservedPod {
            name: PodName::of(&node.addr),
            shard: 0,
            ordinal: ordinal as u16,
            ip: Some(node.addr.ip.clone()),
            ready: true,
            running: true,
        })
        .collect();
    let pods = RegionPods::group(pods, 1, nodes.len() as u16);
    let mut map = topology_plan::plan("demo", "region-a", &pods, reports, status_epoch)
        .expect("plan")
        .map()
        .clone();
    for shard in &mut map.shards {
        for addr in std::iter::once(&mut shard.primary).chain(shard.replicas.iter_mut()) {
            if let Some(node) = nodes.iter().find(|node| node.addr.id == addr.id) {
                addr.port = node.addr.port;
            }
        }
    }
    map
}

/// Access with a password and no TLS.
fn password(password: &str) -> NodeAccess {
    NodeAccess {
        password: Some(password.to_string()),
        ..NodeAccess::default()
    }
}

#[tokio::test]
async fn bootstrap_push_get_stale_epoch_and_replica_attach() {
    let Some(binary) = node_binary() else {
        println!(
            "skipping: no meridian-node binary (set MERIDIAN_NODE_BIN or build -p meridian-node)"
        );
        return;
    };
    let primary = start_node(&binary, "demo-a-0-0", None).await;
    let replica = start_node(&binary, "demo-a-0-1", None).await;

    let mut connections = Vec::new();
    let mut reports = Vec::new();
    for node in [&primary, &replica] {
        let mut connection = NodeConnection::open(&node.addr, &NodeAccess::default())
            .await
            .unwrap();
        reports.push(NodeReport {
            pod: PodName::of(&node.addr),
            map: connection.topology().await.unwrap(),
        });
        connections.push(connection);
    }
    assert!(
        reports.iter().all(|report| report.map.is_none()),
        "fresh nodes have no map"
    );

    let map = plan_for(&[&primary, &replica], &reports, 0);
    assert_eq!(map.epoch, 1);
    for connection in &mut connections {
        assert_eq!(
            connection.push_topology(&map).await.unwrap(),
            PushOutcome::Applied
        );
        // Same epoch, same map: idempotent.
        assert_eq!(
            connection.push_topology(&map).await.unwrap(),
            PushOutcome::Applied
        );
        assert_eq!(connection.topology().await.unwrap().as_ref(), Some(&map));
    }

    // A newer epoch is accepted; going back is refused as STALEEPOCH.
    let mut newer = map.clone();
    newer.epoch = 5;
    assert_eq!(
        connections[0].push_topology(&newer).await.unwrap(),
        PushOutcome::Applied
    );
    match connections[0].push_topology(&map).await.unwrap() {
        PushOutcome::Stale(message) => assert!(message.contains("STALEEPOCH"), "{message}"),
        other => panic!("expected STALEEPOCH, got {other:?}"),
    }

    // Re-planning from what the nodes report: membership is unchanged, so the newest
    // reported map (epoch 5) is re-sent to the lagging replica instead of a new epoch.
    let reports: Vec<NodeReport> = vec![
        NodeReport {
            pod: PodName::of(&primary.addr),
            map: connections[0].topology().await.unwrap(),
        },
        NodeReport {
            pod: PodName::of(&replica.addr),
            map: connections[1].topology().await.unwrap(),
        },
    ];
    let replanned = plan_for(&[&primary, &replica], &reports, 1);
    assert_eq!(replanned, newer);
    assert_eq!(
        connections[1].push_topology(&replanned).await.unwrap(),
        PushOutcome::Applied
    );
    assert_eq!(
        connections[1].topology().await.unwrap().map(|m| m.epoch),
        Some(5)
    );

    // The map lists the replica as such: it attaches to its primary on its own, and the
    // offsets the operator reads for failover decisions come from INFO replication.
    let mut attached = None;
    for _ in 0..50 {
        let info = connections[1].replication_info().await.unwrap();
        if info.role == ReplicationRole::Replica && info.link_up {
            attached = Some(info);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let attached = attached.expect("replica attached to its primary within 5 s");
    let primary_info = connections[0].replication_info().await.unwrap();
    assert_eq!(primary_info.role, ReplicationRole::Primary);
    assert_eq!(primary_info.connected_replicas, 1);
    assert!(attached.offset <= primary_info.offset);
}

#[tokio::test]
async fn auth_is_sent_when_the_cluster_has_a_password() {
    let Some(binary) = node_binary() else {
        println!(
            "skipping: no meridian-node binary (set MERIDIAN_NODE_BIN or build -p meridian-node)"
        );
        return;
    };
    let node = start_node(&binary, "secure-0-0", Some("s3cret")).await;
    let mut authed = NodeConnection::open(&node.addr, &password("s3cret"))
        .await
        .unwrap();
    assert_eq!(authed.topology().await.unwrap(), None);
    let refused = match NodeConnection::open(&node.addr, &NodeAccess::default()).await {
        Ok(mut connection) => connection.topology().await.is_err(),
        Err(_) => true,
    };
    assert!(
        refused,
        "without the password the node refuses admin commands"
    );
}

/// The ACL file the operator renders loads on a real node: the operator's own user
/// runs the admin surface, `default` (the cluster password) and an application user
/// are refused it, and replication logs in as its user. A node that does not know the
/// operator's user yet (started before the upgrade) is reached through `default`.
#[tokio::test]
async fn the_operator_logs_in_as_its_own_acl_user_and_applications_cannot_run_admin_commands() {
    let Some(binary) = node_binary() else {
        println!(
            "skipping: no meridian-node binary (set MERIDIAN_NODE_BIN or build -p meridian-node)"
        );
        return;
    };
    let reader = meridian_api::AclUserSpec {
        name: "reader".into(),
        password_secret_ref: Default::default(),
        commands: vec!["+@read".into()],
        keys: vec!["cart:*".into()],
        channels: Vec::new(),
    };
    let file = meridian_operator::acl::render(&meridian_operator::acl::Credentials {
        cluster: "cluster-pw",
        operator: "operator-pw",
        replication: "replication-pw",
        users: vec![(&reader, "reader-pw".to_string())],
    });
    let path =
        std::env::temp_dir().join(format!("meridian-operator-acl-{}.acl", std::process::id()));
    std::fs::write(&path, &file).unwrap();
    let env = |id: &str| {
        vec![
            ("MERIDIAN_ACL_FILE", path.display().to_string()),
            (
                "MERIDIAN_PRIMARY_USER",
                meridian_operator::acl::REPLICATION_USER.to_string(),
            ),
            ("MERIDIAN_PRIMARY_AUTH", "replication-pw".to_string()),
            ("MERIDIAN_NODE_ID", id.to_string()),
        ]
    };
    let primary = start_node_with(&binary, "acl-0-0", Some("cluster-pw"), &env("acl-0-0")).await;
    let replica = start_node_with(&binary, "acl-0-1", Some("cluster-pw"), &env("acl-0-1")).await;
    let operator = NodeAccess {
        user: Some(meridian_operator::acl::OPERATOR_USER.into()),
        password: Some("operator-pw".into()),
        fallback_password: Some("cluster-pw".into()),
        tls: None,
    };
    let reports = vec![report(&primary), report(&replica)];
    let map = plan_for(&[&primary, &replica], &reports, 0);
    for node in [&primary, &replica] {
        let mut connection = NodeConnection::open(&node.addr, &operator).await.unwrap();
        assert_eq!(
            connection.push_topology(&map).await.unwrap(),
            PushOutcome::Applied
        );
    }
    // replication logs in as its own user
    let mut replica_connection = NodeConnection::open(&replica.addr, &operator)
        .await
        .unwrap();
    let mut attached = false;
    for _ in 0..50 {
        let info = replica_connection.replication_info().await.unwrap();
        if info.role == ReplicationRole::Replica && info.link_up {
            attached = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(attached, "the replica synced as meridian-replication");

    // applications: default and the reader are refused the admin surface
    let refused = |user: Option<&str>, password: &str| NodeAccess {
        user: user.map(str::to_string),
        password: Some(password.to_string()),
        ..NodeAccess::default()
    };
    for access in [
        refused(None, "cluster-pw"),
        refused(Some("reader"), "reader-pw"),
    ] {
        let mut connection = NodeConnection::open(&primary.addr, &access).await.unwrap();
        let error = connection
            .push_topology(&map)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("no permissions to run the 'meridian.topology' command"),
            "{error}"
        );
    }
    // a node started without the ACL file (before the upgrade) knows only default:
    // the operator reaches it through the fallback
    let plain = start_node(&binary, "legacy-0-0", Some("cluster-pw")).await;
    let mut legacy = NodeConnection::open(&plain.addr, &operator).await.unwrap();
    assert_eq!(
        legacy.topology().await.unwrap(),
        None,
        "reached through default"
    );
    let _ = std::fs::remove_file(&path);
}

/// A node's report as the operator reads it before bootstrapping (no map yet).
fn report(node: &Node) -> NodeReport {
    NodeReport {
        pod: PodName::of(&node.addr),
        map: None,
    }
}

/// A cluster with TLS: the operator reaches its nodes over TLS, verifying them against
/// the Secret's CA for `spec.tls.serverName`; a certificate of another CA, or the name
/// missing from the certificate, is refused, and so is plain text.
#[tokio::test]
async fn admin_connections_use_tls_verified_against_the_cluster_ca() {
    let Some(binary) = node_binary() else {
        println!(
            "skipping: no meridian-node binary (set MERIDIAN_NODE_BIN or build -p meridian-node)"
        );
        return;
    };
    let ca = test_ca("cluster ca");
    let dir = std::env::temp_dir().join(format!("meridian-operator-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let node_name = "nodes.orders.example";
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![node_name.to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    std::fs::write(dir.join("tls.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("tls.key"), key.serialize_pem()).unwrap();
    std::fs::write(dir.join("ca.crt"), ca.pem()).unwrap();
    let node = start_node_with(
        &binary,
        "tls-0-0",
        Some("s3cret"),
        &[("MERIDIAN_TLS_DIR", dir.display().to_string())],
    )
    .await;
    let access = |ca_pem: &str, name: &str| NodeAccess {
        password: Some("s3cret".to_string()),
        tls: Some(NodeTls::new(ca_pem.as_bytes(), Some(name)).unwrap()),
        ..NodeAccess::default()
    };

    let mut connection = NodeConnection::open(&node.addr, &access(&ca.pem(), node_name))
        .await
        .unwrap();
    assert_eq!(connection.topology().await.unwrap(), None);
    assert_eq!(
        connection.replication_info().await.unwrap().role,
        ReplicationRole::Primary
    );

    let other = test_ca("another ca");
    assert!(
        NodeConnection::open(&node.addr, &access(&other.pem(), node_name))
            .await
            .is_err(),
        "a node certificate of another CA is refused"
    );
    assert!(
        NodeConnection::open(&node.addr, &access(&ca.pem(), "elsewhere.example"))
            .await
            .is_err(),
        "a certificate without the server name is refused"
    );
    let plain = match NodeConnection::open(&node.addr, &password("s3cret")).await {
        Ok(mut connection) => connection.topology().await.is_err(),
        Err(_) => true,
    };
    assert!(plain, "plain text is refused on a TLS node");
    assert!(NodeTls::new(b"not a certificate", None).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

fn test_ca(name: &str) -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap()
}

/// One standalone node per region, wired the way the CacheRegion controller wires them:
/// `desired_peers` → `MERIDIAN.PEERS SET` only where `MERIDIAN.PEERS GET` differs, link
/// state read back into `PeerStatus`, and a write in one region invalidating the other.
#[tokio::test]
async fn region_links_are_pushed_idempotently_and_carry_invalidations() {
    let Some(binary) = node_binary() else {
        println!(
            "skipping: no meridian-node binary (set MERIDIAN_NODE_BIN or build -p meridian-node)"
        );
        return;
    };
    let link_a = free_port();
    let link_b = free_port();
    let env = |region: &str, link: u16| {
        vec![
            ("MERIDIAN_CLUSTER", "demo".to_string()),
            ("MERIDIAN_REGION", region.to_string()),
            ("MERIDIAN_LINK_PORT", link.to_string()),
        ]
    };
    let node_a = start_node_with(&binary, "demo-a-0-0", Some("pw"), &env("region-a", link_a)).await;
    let node_b = start_node_with(&binary, "demo-b-0-0", Some("pw"), &env("region-b", link_b)).await;
    let mut a = NodeConnection::open(&node_a.addr, &password("pw"))
        .await
        .unwrap();
    let mut b = NodeConnection::open(&node_b.addr, &password("pw"))
        .await
        .unwrap();
    // Sibling pods' IPs carry the default link port; these nodes share 127.0.0.1, so the
    // test wires them as remote peers with explicit ports.
    let want_a = peers::desired_peers(
        "region-a",
        &[],
        &[PeerSpec {
            region: "region-b".into(),
            address: format!("127.0.0.1:{link_b}"),
        }],
        &[],
    );
    let want_b = peers::desired_peers(
        "region-b",
        &[],
        &[PeerSpec {
            region: "region-a".into(),
            address: format!("127.0.0.1:{link_a}"),
        }],
        &[],
    );
    let before = a.peers().await.unwrap();
    assert_eq!(
        (before.cluster.as_str(), before.region.as_str()),
        ("demo", "region-a")
    );
    assert!(peers::needs_push(&want_a, &before));
    a.set_peers(&want_a).await.unwrap();
    b.set_peers(&want_b).await.unwrap();
    assert!(!peers::needs_push(&want_a, &a.peers().await.unwrap()));

    let mut connected = false;
    for _ in 0..100 {
        let (ra, rb) = (a.peers().await.unwrap(), b.peers().await.unwrap());
        let status_a = peers::peer_statuses(&want_a, &[Some(&ra)]);
        let status_b = peers::peer_statuses(&want_b, &[Some(&rb)]);
        if status_a
            .iter()
            .chain(&status_b)
            .all(|status| status.connected)
        {
            connected = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(connected, "links did not come up: {:?}", a.peers().await);

    let mut client_a = redis::Client::open(format!("redis://:pw@127.0.0.1:{}/", node_a.addr.port))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut client_b = redis::Client::open(format!("redis://:pw@127.0.0.1:{}/", node_b.addr.port))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    // Managed nodes serve keys once told their role; no map is pushed here, so each is
    // named primary directly.
    for client in [&mut client_a, &mut client_b] {
        let _: () = redis::cmd("REPLICAOF")
            .arg("NO")
            .arg("ONE")
            .query_async(client)
            .await
            .unwrap();
    }
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v1")
        .query_async(&mut client_b)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v2")
        .query_async(&mut client_a)
        .await
        .unwrap();
    let mut gone = false;
    for _ in 0..100 {
        let value: Option<String> = redis::cmd("GET")
            .arg("k")
            .query_async(&mut client_b)
            .await
            .unwrap();
        if value.is_none() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone, "region-b still serves the stale copy");

    // `[]` turns the links off again.
    a.set_peers(&[]).await.unwrap();
    assert!(a.peers().await.unwrap().peers.is_empty());
}
