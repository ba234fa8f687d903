//! Against a real API server (the local control plane: `cargo xtask cluster up`, or any
//! cluster `KUBECONFIG` names). Skips with a printed reason when `KUBECONFIG` is unset.
//!
//! The controllers run in-process, scoped to a fresh namespace, and reach the cache pods
//! at their pod IPs (routed from this machine on the local cluster). Set
//! `MERIDIAN_TEST_WAIT_READY=1` when the cluster's nodes run the `meridian-node` image
//! (`MERIDIAN_NODE_IMAGE`, default the chart's), to also wait for the bootstrap (topology
//! epoch ≥ 1, Ready).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service};
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use meridian_api::{CacheCluster, CacheRegion, labels, ports};
use meridian_operator::controller::{self, Context};
use meridian_operator::leader::{LeaderElector, LeaseTiming};
use meridian_operator::metrics::{KindLabels, Metrics};
use meridian_operator::resources::BuildConfig;

const TEST_MANAGER: &str = "meridian-operator-test";

async fn client_or_skip(test: &str) -> Option<Client> {
    if std::env::var_os("KUBECONFIG").is_none() {
        println!("skipping {test}: KUBECONFIG is not set (run under `cargo xtask cluster up`)");
        return None;
    }
    match Client::try_default().await {
        Ok(client) => Some(client),
        Err(error) => panic!("KUBECONFIG is set but no client could be built: {error}"),
    }
}

/// Installs the CRDs from `crds/` (idempotent server-side apply) and waits until served.
async fn install_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/crds");
    for file in [
        "cache.meridian.dev_cacheclusters.yaml",
        "cache.meridian.dev_cacheregions.yaml",
    ] {
        let text = std::fs::read_to_string(format!("{dir}/{file}")).expect("CRD file");
        let crd: CustomResourceDefinition = serde_yaml::from_str(&text).expect("CRD YAML");
        crds.patch(
            &crd.name_any(),
            &PatchParams::apply(TEST_MANAGER).force(),
            &Patch::Apply(&crd),
        )
        .await
        .expect("apply CRD");
    }
    for name in [
        "cacheclusters.cache.meridian.dev",
        "cacheregions.cache.meridian.dev",
    ] {
        wait_for(
            &format!("CRD {name} established"),
            Duration::from_secs(30),
            || {
                let crds = crds.clone();
                async move {
                    crds.get_opt(name).await.ok().flatten().is_some_and(|crd| {
                        crd.status
                            .and_then(|status| status.conditions)
                            .unwrap_or_default()
                            .iter()
                            .any(|c| c.type_ == "Established" && c.status == "True")
                    })
                }
            },
        )
        .await;
    }
}

async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn fresh_namespace(client: &Client, prefix: &str) -> String {
    let name = format!(
        "{prefix}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_millis())
            .unwrap_or(0)
    );
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
    namespaces
        .create(&PostParams::default(), &namespace)
        .await
        .expect("create namespace");
    name
}

async fn delete_namespace(client: &Client, name: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let _ = namespaces.delete(name, &DeleteParams::background()).await;
}

fn start_operator(client: &Client, namespace: &str) -> tokio::task::JoinHandle<()> {
    start_operator_with(client, namespace, Arc::new(Metrics::default()))
}

fn start_operator_with(
    client: &Client,
    namespace: &str,
    metrics: Arc<Metrics>,
) -> tokio::task::JoinHandle<()> {
    let ctx = Arc::new(Context::new(
        client.clone(),
        metrics,
        BuildConfig {
            default_node_image: std::env::var("MERIDIAN_NODE_IMAGE")
                .unwrap_or_else(|_| "ghcr.io/meridian-dev/meridian-node:0.1.0".to_string()),
            operator_namespace: None,
        },
        Some("kube-api-test".to_string()),
    ));
    let namespace = namespace.to_string();
    tokio::spawn(async move {
        futures::future::join(
            controller::region::run(ctx.clone(), Some(namespace.clone())),
            controller::cluster::run(ctx, Some(namespace)),
        )
        .await;
    })
}

fn condition<'a>(
    conditions: &'a [k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Runs `check` with the operator the e2e suite installed (`meridian-system`, watching
/// every namespace) scaled to zero, so that only this test's operator reconciles and
/// connects; gives it its replicas back afterwards, also when `check` panics.
async fn without_installed_operator(
    client: &Client,
    check: impl std::future::Future<Output = ()> + Send + 'static,
) {
    const NAMESPACE: &str = "meridian-system";
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    let scale = async |replicas: i32| {
        deployments
            .patch(
                "meridian-operator",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"spec": {"replicas": replicas}})),
            )
            .await
            .expect("scale the installed operator");
    };
    let installed = deployments
        .get_opt("meridian-operator")
        .await
        .expect("read the installed operator")
        .and_then(|deployment| deployment.spec?.replicas)
        .filter(|replicas| *replicas > 0);
    if installed.is_some() {
        scale(0).await;
        let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
        wait_for(
            "the installed operator's pods gone",
            Duration::from_secs(60),
            || {
                let pods = pods.clone();
                async move {
                    pods.list(
                        &ListParams::default().labels("app.kubernetes.io/name=meridian-operator"),
                    )
                    .await
                    .is_ok_and(|listed| listed.items.is_empty())
                }
            },
        )
        .await;
    }
    let outcome = tokio::spawn(check).await;
    if let Some(replicas) = installed {
        scale(replicas).await;
    }
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}

/// `total_connections_received` of every cache node pod in `namespace`, by pod IP (this
/// read's own connection included).
async fn connections_received(client: &Client, namespace: &str) -> BTreeMap<String, u64> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let mut received = BTreeMap::new();
    let listed = pods
        .list(&ListParams::default().labels(&format!(
            "{}={}",
            labels::COMPONENT,
            meridian_operator::names::COMPONENT_NODE
        )))
        .await
        .expect("list pods");
    for pod in listed {
        let Some(ip) = pod.status.and_then(|status| status.pod_ip) else {
            continue;
        };
        let node = redis::Client::open(format!("redis://{ip}:{}/", ports::RESP)).unwrap();
        let mut connection = node
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|error| panic!("connect to {ip}: {error}"));
        let stats: String = redis::cmd("INFO")
            .arg("stats")
            .query_async(&mut connection)
            .await
            .expect("INFO stats");
        let total = stats
            .lines()
            .find_map(|line| line.strip_prefix("total_connections_received:"))
            .and_then(|value| value.trim().parse().ok())
            .expect("total_connections_received");
        received.insert(ip, total);
    }
    received
}

/// One reconcile reads every node over one connection and acts over the same one: over a
/// run of reconciles (forced by annotating the region), no node receives more connections
/// than there were reconciles (plus this test's own reads).
async fn at_most_one_connection_per_node_per_reconcile(
    client: Client,
    namespace: String,
    regions: Api<CacheRegion>,
    metrics: Arc<Metrics>,
) {
    let (client, namespace) = (&client, namespace.as_str());
    let reconciles = || {
        metrics
            .reconciles
            .get_or_create(&KindLabels {
                kind: controller::region::KIND,
            })
            .get()
    };
    // Let the primary probes open their one lasting connection and any reconcile under
    // way finish, so neither counts against the reconciles below.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = connections_received(client, namespace).await;
    let reconciles_before = reconciles();
    for round in 0..5 {
        regions
            .patch(
                "demo-a",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({
                    "metadata": {"annotations": {"test.meridian.dev/round": round.to_string()}}
                })),
            )
            .await
            .expect("annotate region");
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let reconciles_during = reconciles() - reconciles_before;
    let after = connections_received(client, namespace).await;
    assert!(
        reconciles_during >= 5,
        "only {reconciles_during} reconciles ran"
    );
    assert_eq!(before.len(), 4, "four node pods: {before:?}");
    for (ip, total) in &after {
        let opened = total - before.get(ip).copied().unwrap_or_default();
        // `opened` counts this test's second read too, and a reconcile that started
        // before `reconciles_before` may have connected after `before`.
        assert!(
            opened <= reconciles_during + 2,
            "node {ip} received {opened} connections over {reconciles_during} reconciles"
        );
    }
    println!("connections per node over {reconciles_during} reconciles: {before:?} -> {after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn region_objects_status_scale_in_and_garbage_collection() {
    let Some(client) =
        client_or_skip("region_objects_status_scale_in_and_garbage_collection").await
    else {
        return;
    };
    install_crds(&client).await;
    let ns = fresh_namespace(&client, "mop-region").await;
    let metrics = Arc::new(Metrics::default());
    let operator = start_operator_with(&client, &ns, metrics.clone());

    let clusters: Api<CacheCluster> = Api::namespaced(client.clone(), &ns);
    let regions: Api<CacheRegion> = Api::namespaced(client.clone(), &ns);
    let cluster: CacheCluster = serde_json::from_value(serde_json::json!({
        "apiVersion": "cache.meridian.dev/v1alpha1", "kind": "CacheCluster",
        "metadata": {"name": "demo"},
        // authentication off, explicitly: this test reads the nodes' INFO without
        // credentials (the secure default has its own e2e scenario, security.rs)
        "spec": {"shards": 2, "replicasPerShard": 1, "memory": {"maxmemory": "64Mi"},
                 "auth": {"mode": "Disabled"}}
    }))
    .unwrap();
    clusters
        .create(&PostParams::default(), &cluster)
        .await
        .expect("create cluster");
    let region: CacheRegion = serde_json::from_value(serde_json::json!({
        "apiVersion": "cache.meridian.dev/v1alpha1", "kind": "CacheRegion",
        "metadata": {"name": "demo-a"},
        "spec": {"clusterRef": {"name": "demo"}, "region": "region-a"}
    }))
    .unwrap();
    regions
        .create(&PostParams::default(), &region)
        .await
        .expect("create region");

    let stateful_sets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &ns);
    wait_for("StatefulSets demo-a-0/1", Duration::from_secs(60), || {
        let stateful_sets = stateful_sets.clone();
        async move {
            stateful_sets
                .get_opt("demo-a-0")
                .await
                .ok()
                .flatten()
                .is_some()
                && stateful_sets
                    .get_opt("demo-a-1")
                    .await
                    .ok()
                    .flatten()
                    .is_some()
        }
    })
    .await;
    let region_now = regions.get("demo-a").await.unwrap();
    let sts = stateful_sets.get("demo-a-0").await.unwrap();
    assert_eq!(sts.spec.as_ref().unwrap().replicas, Some(2));
    let owner = &sts.owner_references()[0];
    assert_eq!(owner.kind, "CacheRegion");
    assert_eq!(Some(&owner.uid), region_now.metadata.uid.as_ref());
    assert_eq!(owner.controller, Some(true));
    assert!(
        sts.metadata
            .managed_fields
            .iter()
            .flatten()
            .any(
                |field| field.manager.as_deref() == Some("meridian-operator")
                    && field.operation.as_deref() == Some("Apply")
            ),
        "applied server-side by meridian-operator"
    );
    for name in ["demo-a", "demo-a-nodes", "demo-a-link"] {
        services
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("service {name}: {e}"));
    }
    config_maps.get("demo-a-config").await.expect("config map");
    pdbs.get("demo-a-0").await.expect("pdb 0");
    pdbs.get("demo-a-1").await.expect("pdb 1");

    wait_for(
        "CacheRegion owner reference and status",
        Duration::from_secs(60),
        || {
            let regions = regions.clone();
            async move {
                let Ok(region) = regions.get("demo-a").await else {
                    return false;
                };
                let owned = region
                    .owner_references()
                    .iter()
                    .any(|owner| owner.kind == "CacheCluster" && owner.name == "demo");
                let status = region.status.unwrap_or_default();
                owned
                    && status.observed_generation == region.metadata.generation
                    && condition(&status.conditions, "Ready").is_some()
                    && condition(&status.conditions, "Progressing").is_some()
                    && status.shards.len() == 2
            }
        },
    )
    .await;
    wait_for(
        "CacheCluster status lists the region",
        Duration::from_secs(60),
        || {
            let clusters = clusters.clone();
            async move {
                let Ok(cluster) = clusters.get("demo").await else {
                    return false;
                };
                let status = cluster.status.unwrap_or_default();
                status
                    .regions
                    .iter()
                    .any(|r| r.name == "demo-a" && r.region == "region-a" && r.shards == 2)
                    && condition(&status.conditions, "Ready").is_some()
            }
        },
    )
    .await;

    if std::env::var("MERIDIAN_TEST_WAIT_READY").as_deref() == Ok("1") {
        wait_for(
            "bootstrap: topology epoch and Ready",
            Duration::from_secs(240),
            || {
                let regions = regions.clone();
                async move {
                    let Ok(region) = regions.get("demo-a").await else {
                        return false;
                    };
                    let status = region.status.unwrap_or_default();
                    status.epoch >= 1
                        && status.ready_shards == 2
                        && status
                            .shards
                            .iter()
                            .all(|s| s.primary.is_some() && s.slots.len() == 1)
                        && condition(&status.conditions, "Ready")
                            .is_some_and(|c| c.status == "True")
                }
            },
        )
        .await;
        let check = at_most_one_connection_per_node_per_reconcile(
            client.clone(),
            ns.clone(),
            regions.clone(),
            metrics.clone(),
        );
        without_installed_operator(&client, check).await;
    } else {
        println!("not waiting for node bootstrap: set MERIDIAN_TEST_WAIT_READY=1 when pods run");
    }

    // Scale-in: shard 1's StatefulSet and PDB go away.
    regions
        .patch(
            "demo-a",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"shards": 1}})),
        )
        .await
        .expect("scale in");
    wait_for("shard 1 removed", Duration::from_secs(60), || {
        let (stateful_sets, pdbs) = (stateful_sets.clone(), pdbs.clone());
        async move {
            stateful_sets
                .get_opt("demo-a-1")
                .await
                .ok()
                .flatten()
                .is_none()
                && pdbs.get_opt("demo-a-1").await.ok().flatten().is_none()
                && stateful_sets
                    .get_opt("demo-a-0")
                    .await
                    .ok()
                    .flatten()
                    .is_some()
        }
    })
    .await;

    // Deleting the CacheCluster removes the region through garbage collection.
    clusters
        .delete("demo", &DeleteParams::foreground())
        .await
        .expect("delete cluster");
    wait_for(
        "CacheRegion garbage-collected",
        Duration::from_secs(90),
        || {
            let regions = regions.clone();
            async move { regions.get_opt("demo-a").await.ok().flatten().is_none() }
        },
    )
    .await;

    operator.abort();
    delete_namespace(&client, &ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_cluster_and_secret_degrade_without_crash_looping() {
    let Some(client) =
        client_or_skip("missing_cluster_and_secret_degrade_without_crash_looping").await
    else {
        return;
    };
    install_crds(&client).await;
    let ns = fresh_namespace(&client, "mop-degraded").await;
    let operator = start_operator(&client, &ns);
    let clusters: Api<CacheCluster> = Api::namespaced(client.clone(), &ns);
    let regions: Api<CacheRegion> = Api::namespaced(client.clone(), &ns);

    let orphan: CacheRegion = serde_json::from_value(serde_json::json!({
        "apiVersion": "cache.meridian.dev/v1alpha1", "kind": "CacheRegion",
        "metadata": {"name": "orphan"},
        "spec": {"clusterRef": {"name": "nowhere"}, "region": "region-x"}
    }))
    .unwrap();
    regions
        .create(&PostParams::default(), &orphan)
        .await
        .unwrap();
    let degraded_with = |name: &'static str, reason: &'static str| {
        let regions = regions.clone();
        move || {
            let regions = regions.clone();
            async move {
                let Ok(region) = regions.get(name).await else {
                    return false;
                };
                let status = region.status.unwrap_or_default();
                condition(&status.conditions, "Degraded")
                    .is_some_and(|c| c.status == "True" && c.reason == reason)
                    && condition(&status.conditions, "Ready").is_some_and(|c| c.status == "False")
            }
        }
    };
    wait_for(
        "orphan Degraded/ClusterNotFound",
        Duration::from_secs(60),
        degraded_with("orphan", "ClusterNotFound"),
    )
    .await;
    let events: Api<K8sEvent> = Api::namespaced(client.clone(), &ns);
    wait_for("ClusterNotFound event", Duration::from_secs(30), || {
        let events = events.clone();
        async move {
            events
                .list(&ListParams::default())
                .await
                .map(|list| {
                    list.items.iter().any(|event| {
                        event.reason.as_deref() == Some("ClusterNotFound")
                            && event.regarding.as_ref().and_then(|r| r.name.as_deref())
                                == Some("orphan")
                    })
                })
                .unwrap_or(false)
        }
    })
    .await;
    let first_transition = condition(
        &regions
            .get("orphan")
            .await
            .unwrap()
            .status
            .unwrap()
            .conditions,
        "Degraded",
    )
    .unwrap()
    .last_transition_time
    .clone();

    // A cluster whose auth Secret does not exist.
    let cluster: CacheCluster = serde_json::from_value(serde_json::json!({
        "apiVersion": "cache.meridian.dev/v1alpha1", "kind": "CacheCluster",
        "metadata": {"name": "secured"},
        "spec": {"shards": 1, "replicasPerShard": 0, "auth": {"secretRef": {"name": "no-such-secret"}}}
    }))
    .unwrap();
    clusters
        .create(&PostParams::default(), &cluster)
        .await
        .unwrap();
    let secured: CacheRegion = serde_json::from_value(serde_json::json!({
        "apiVersion": "cache.meridian.dev/v1alpha1", "kind": "CacheRegion",
        "metadata": {"name": "secured-a"},
        "spec": {"clusterRef": {"name": "secured"}, "region": "region-a"}
    }))
    .unwrap();
    regions
        .create(&PostParams::default(), &secured)
        .await
        .unwrap();
    wait_for(
        "secured-a Degraded/AuthSecretMissing",
        Duration::from_secs(60),
        degraded_with("secured-a", "AuthSecretMissing"),
    )
    .await;
    wait_for(
        "cluster Degraded/AuthSecretMissing",
        Duration::from_secs(60),
        || {
            let clusters = clusters.clone();
            async move {
                let Ok(cluster) = clusters.get("secured").await else {
                    return false;
                };
                condition(&cluster.status.unwrap_or_default().conditions, "Degraded")
                    .is_some_and(|c| c.status == "True" && c.reason == "AuthSecretMissing")
            }
        },
    )
    .await;

    // Re-reconciling the orphan (a spec touch) keeps the Degraded transition time.
    regions
        .patch(
            "orphan",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"labels": {"touched": "yes"}}})),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let later = regions.get("orphan").await.unwrap().status.unwrap();
    assert_eq!(
        condition(&later.conditions, "Degraded")
            .unwrap()
            .last_transition_time,
        first_transition
    );
    assert!(!operator.is_finished(), "controllers keep running");

    operator.abort();
    delete_namespace(&client, &ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_has_one_holder_and_is_handed_over_on_release() {
    let Some(client) = client_or_skip("lease_has_one_holder_and_is_handed_over_on_release").await
    else {
        return;
    };
    let ns = fresh_namespace(&client, "mop-lease").await;
    let timing = LeaseTiming {
        duration: Duration::from_secs(3),
        renew_every: Duration::from_millis(500),
    };
    let first = LeaderElector::new(client.clone(), &ns, "leader", "replica-a", timing);
    let second = LeaderElector::new(client.clone(), &ns, "leader", "replica-b", timing);
    assert!(first.try_acquire_or_renew().await.unwrap());
    assert!(!second.try_acquire_or_renew().await.unwrap());
    assert!(first.try_acquire_or_renew().await.unwrap(), "holder renews");
    assert!(!second.try_acquire_or_renew().await.unwrap());

    first.release().await.unwrap();
    assert!(
        second.try_acquire_or_renew().await.unwrap(),
        "released lease is free"
    );
    assert!(!first.try_acquire_or_renew().await.unwrap());

    // replica-b stops renewing: replica-a takes over after one lease duration.
    let takeover = tokio::time::timeout(Duration::from_secs(15), first.acquire()).await;
    assert!(matches!(takeover, Ok(Ok(()))), "takeover after expiry");
    assert!(!second.try_acquire_or_renew().await.unwrap());
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), &ns);
    let lease = leases.get("leader").await.unwrap();
    let spec = lease.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("replica-a"));
    assert!(spec.lease_transitions.unwrap_or(0) >= 2);
    delete_namespace(&client, &ns).await;
}
