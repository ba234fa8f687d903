//! Issue 16 scenario: a CacheCluster with TLS on every port (mutual TLS between nodes)
//! and the secure defaults, in two regions. The operator generates the client password;
//! clients need TLS and the password; a failover and a cross-region invalidation work
//! with every connection (operator to node, replication, region links) over TLS.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DeleteParams};
use meridian_api::ports;
use meridian_e2e::*;

const REGIONS: [(&str, &str); 2] = [("vault-a", "region-a"), ("vault-b", "region-b")];
const SERVER_NAME: &str = "nodes.vault.meridian.test";

#[tokio::test(flavor = "multi_thread")]
async fn tls_everywhere_and_a_generated_password_across_two_regions() -> Result<()> {
    let Some((client, ns)) = operator_scenario("security", "e2e-security").await? else {
        return Ok(());
    };
    let pki = TestPki::new(SERVER_NAME)?;
    pki.create_secret(&client, &ns.name, "vault-tls").await?;
    create_password_secret(&client, &ns.name, "checkout-redis", "checkout-pw").await?;
    let Deployed { clusters, regions } = ClusterFixture {
        name: "vault".into(),
        shards: 1,
        replicas_per_shard: 1,
        consistency: Some("eventual".into()),
        // no password named: the default, a generated one; one application user
        security: Some(format!(
            "  auth:\n    users:\n      - name: checkout\n        passwordSecretRef:\n          name: checkout-redis\n        commands: [\"+@read\", \"+@write\"]\n        keys: [\"cart:*\"]\n  tls:\n    secretName: vault-tls\n    serverName: {SERVER_NAME}\n    requirePeerCertificates: true"
        )),
        ..ClusterFixture::default()
    }
    .with_regions(&REGIONS)
    .apply(&client, &ns.name)
    .await?;
    let mut statuses = Vec::new();
    for (name, _) in REGIONS {
        statuses.push(wait_region_ready(&regions, name, Duration::from_secs(300)).await?);
    }
    // every region's cache pods get their NetworkPolicy (by default)
    let policies: Api<k8s_openapi::api::networking::v1::NetworkPolicy> =
        Api::namespaced(client.clone(), &ns.name);
    for (name, _) in REGIONS {
        let policy = policies.get(&format!("{name}-nodes")).await?;
        let ingress = policy
            .spec
            .and_then(|spec| spec.ingress)
            .unwrap_or_default();
        ensure!(
            ingress.len() >= 4,
            "{name}-nodes admits clients, the cluster, metrics, the operator"
        );
    }

    // The generated password: in the Secret the status names, owned by the cluster.
    let cluster = clusters.get("vault").await?;
    let at = cluster
        .status
        .and_then(|status| status.password_secret)
        .context("status.passwordSecret")?;
    assert_eq!(
        (at.name.as_str(), at.key.as_str()),
        ("vault-auth", "password")
    );
    let secret = Api::<Secret>::namespaced(client.clone(), &ns.name)
        .get("vault-auth")
        .await?;
    let owner = secret.metadata.owner_references.clone().unwrap_or_default();
    ensure!(
        owner
            .iter()
            .any(|owner| owner.kind == "CacheCluster" && owner.name == "vault"),
        "the generated Secret is owned by the cluster: {owner:?}"
    );
    let password = String::from_utf8(
        secret
            .data
            .and_then(|data| data.get("password").cloned())
            .context("password key")?
            .0,
    )?;
    ensure!(password.len() == 32, "a 32-character password");

    let endpoint = |region: usize| -> Result<String> {
        let primary = statuses[region].shards[0]
            .primary
            .clone()
            .context("primary")?;
        Ok(primary)
    };
    let primary_a = endpoint(0)?;
    let ip_a = pod_ip(&client, &ns.name, &primary_a).await?;
    let ip_b = pod_ip(&client, &ns.name, &endpoint(1)?).await?;
    let (addr_a, addr_b) = (format!("{ip_a}:6379"), format!("{ip_b}:6379"));
    network_policy_is_enforced(&client, &ns.name, &ip_a).await?;

    // Plain text is refused on the RESP port; TLS without the password gets NOAUTH.
    let plain = async {
        let mut conn = quick_connection(&addr_a).await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await?;
        anyhow::Ok(())
    };
    ensure!(
        tokio::time::timeout(Duration::from_secs(15), plain)
            .await
            .map_or(true, |answered| answered.is_err()),
        "a plain-text client was served"
    );
    let mut anonymous = pki.connection(&addr_a, None).await?;
    let refused = redis::cmd("GET")
        .arg("k")
        .query_async::<Option<String>>(&mut anonymous)
        .await
        .expect_err("NOAUTH");
    ensure!(refused.to_string().contains("NOAUTH"), "{refused}");

    // ACL users: default (the cluster password) and the application user are refused
    // the admin surface; the application user is kept to its keys.
    let mut default_user = pki.connection(&addr_a, Some(&password)).await?;
    for admin in [
        vec!["FLUSHALL"],
        vec!["CONFIG", "SET", "maxmemory", "1"],
        vec!["MERIDIAN.TOPOLOGY", "GET"],
        vec!["CLUSTER", "SETSLOT", "0", "STABLE"],
        vec!["REPLICAOF", "NO", "ONE"],
    ] {
        let error = redis::cmd(admin[0])
            .arg(&admin[1..])
            .query_async::<redis::Value>(&mut default_user)
            .await
            .expect_err("the admin surface is the operator's");
        ensure!(
            error.to_string().contains("no permissions"),
            "{admin:?}: {error}"
        );
    }
    let mut checkout = pki
        .user_connection(&addr_a, "checkout", "checkout-pw")
        .await?;
    // one shard per region: every key is served by this primary
    let () = redis::cmd("SET")
        .arg("cart:7")
        .arg("3 items")
        .query_async(&mut checkout)
        .await?;
    let got: Option<String> = redis::cmd("GET")
        .arg("cart:7")
        .query_async(&mut checkout)
        .await?;
    ensure!(got.as_deref() == Some("3 items"), "{got:?}");
    let refused = redis::cmd("SET")
        .arg("price:7")
        .arg("9")
        .query_async::<()>(&mut checkout)
        .await
        .expect_err("outside its keys");
    ensure!(
        refused
            .to_string()
            .contains("no permissions to access one of the keys"),
        "{refused}"
    );

    // Over TLS with the password: a write in region-b, then a newer one in region-a,
    // invalidates region-b's copy through the TLS region link.
    let mut conn_a = pki.connection(&addr_a, Some(&password)).await?;
    let mut conn_b = pki.connection(&addr_b, Some(&password)).await?;
    let () = redis::cmd("SET")
        .arg("greeting")
        .arg("hello")
        .query_async(&mut conn_b)
        .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let () = redis::cmd("SET")
        .arg("greeting")
        .arg("bonjour")
        .query_async(&mut conn_a)
        .await?;
    wait_for(
        "region-b's copy invalidated over the TLS link",
        Duration::from_secs(30),
        || {
            let mut conn = conn_b.clone();
            async move {
                let value: Option<String> = redis::cmd("GET")
                    .arg("greeting")
                    .query_async(&mut conn)
                    .await
                    .map_err(|error| error.to_string())?;
                match value {
                    None => Ok(Some(())),
                    Some(value) => Err(format!("region-b still has {value:?}")),
                }
            }
        },
    )
    .await?;

    // Writes acknowledged by the replica (replication over mutual TLS) survive a
    // failover the operator carries out over TLS.
    for i in 0..50 {
        let () = redis::cmd("SET")
            .arg(format!("durable:{i}"))
            .arg(i)
            .query_async(&mut conn_a)
            .await?;
    }
    let acked: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(5000)
        .query_async(&mut conn_a)
        .await?;
    ensure!(
        acked == 1,
        "the replica acknowledged over mutual TLS ({acked})"
    );
    let replica = statuses[0].shards[0].replicas[0].clone();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    pods.delete(&primary_a, &DeleteParams::default().grace_period(0))
        .await?;
    let promoted = wait_region(
        &regions,
        "vault-a",
        "the replica promoted",
        Duration::from_secs(120),
        |view| {
            view.status
                .shards
                .first()
                .is_some_and(|shard| shard.primary.as_deref() == Some(replica.as_str()))
        },
    )
    .await?;
    ensure!(promoted.epoch > statuses[0].epoch);
    let new_ip = pod_ip(&client, &ns.name, &replica).await?;
    let mut conn = pki
        .connection(&format!("{new_ip}:6379"), Some(&password))
        .await?;
    for i in 0..50 {
        let value: Option<i64> = redis::cmd("GET")
            .arg(format!("durable:{i}"))
            .query_async(&mut conn)
            .await?;
        ensure!(
            value == Some(i),
            "durable:{i} after the failover: {value:?}"
        );
    }
    wait_region_ready(&regions, "vault-a", Duration::from_secs(300)).await?;

    // Resharding moves keys node to node over TLS, the source logging in to the
    // destination as the operator's user (MIGRATE ... AUTH2): nothing is lost.
    let keys_before: i64 = redis::cmd("DBSIZE").query_async(&mut conn).await?;
    set_region_shards(&regions, "vault-a", 2).await?;
    let settled = wait_region_settled(&regions, "vault-a", 2, Duration::from_secs(300)).await?;
    let mut keys_after = 0i64;
    for shard in &settled.shards {
        let primary = shard.primary.clone().context("primary")?;
        let ip = pod_ip(&client, &ns.name, &primary).await?;
        let mut conn = pki
            .connection(&format!("{ip}:6379"), Some(&password))
            .await?;
        keys_after += redis::cmd("DBSIZE").query_async::<i64>(&mut conn).await?;
    }
    ensure!(
        keys_after == keys_before
            && settled
                .shards
                .iter()
                .all(|shard| shard_slot_count(shard).is_ok_and(|slots| slots > 0)),
        "{keys_before} keys before resharding to 2 shards, {keys_after} after: {settled:?}"
    );
    Ok(())
}

/// The cache pods' NetworkPolicy in effect (the local cluster's nodes run an agent that
/// enforces it): a pod of the cluster's namespace reaches RESP and the HTTP API; a pod of
/// another namespace reaches the metrics port, open to all, but neither of those.
async fn network_policy_is_enforced(client: &kube::Client, ns: &str, ip: &str) -> Result<()> {
    let outsiders = TestNamespace::create(client, "e2e-outsider").await?;
    let insider = start_probe_pod(client, ns, "probe-insider", &[]).await?;
    let outsider = start_probe_pod(client, &outsiders.name, "probe-outsider", &[]).await?;
    let at = |port: i32| -> Result<std::net::SocketAddr> { Ok(format!("{ip}:{port}").parse()?) };
    let (resp, http, metrics) = (at(ports::RESP)?, at(ports::HTTP)?, at(ports::METRICS)?);
    let quick = Duration::from_secs(3);
    // The agent learns of new pods from the API server: wait until both probes are known
    // (the insider admitted, the outsider reaching what is open to everyone).
    let local = wait_for(
        "the insider reaching RESP and the outsider the metrics port",
        Duration::from_secs(90),
        || {
            let (insider, outsider) = (insider.clone(), outsider.clone());
            async move {
                let inside = connects_from(&insider, resp, quick)
                    .await
                    .map_err(|e| e.to_string())?;
                let outside = connects_from(&outsider, metrics, quick)
                    .await
                    .map_err(|e| e.to_string())?;
                match (inside, outside) {
                    (Some(true), Some(true)) => Ok(Some(true)),
                    (None, _) | (_, None) => Ok(Some(false)),
                    seen => Err(format!("(insider to RESP, outsider to metrics): {seen:?}")),
                }
            }
        },
    )
    .await?;
    if !local {
        eprintln!(
            "SKIP the NetworkPolicy's effect: the probe pods' networks are not on this machine"
        );
        return Ok(());
    }
    ensure!(
        connects_from(&insider, http, quick).await? == Some(true),
        "a pod of the namespace could not reach the HTTP API on {http}"
    );
    for port in [resp, http] {
        ensure!(
            connects_from(&outsider, port, quick).await? == Some(false),
            "a pod of namespace {} reached {port}: the NetworkPolicy is not enforced",
            outsiders.name
        );
    }
    Ok(())
}

async fn create_password_secret(
    client: &kube::Client,
    ns: &str,
    name: &str,
    password: &str,
) -> Result<()> {
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_string()),
            ..Default::default()
        },
        string_data: Some([("password".to_string(), password.to_string())].into()),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(&kube::api::PostParams::default(), &secret)
        .await
        .with_context(|| format!("create Secret {name}"))?;
    Ok(())
}
