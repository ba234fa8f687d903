//! End-to-end suite against the cluster named by `KUBECONFIG`.
//!
//! The same tests run on kind (users' CI, see `e2e/kind/`) and on the local control plane
//! (`cargo xtask cluster up`, this project's CI). Nothing here knows which one it talks to:
//! nodes are reached by pod IP, which is routable from the test process in both setups
//! when the suite runs where the pods' network is (the local fixture, or inside kind's network).

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod audit;
mod fixtures;
mod load;
mod node_faults;
mod pod_network;
mod shard_writer;
mod tls;
pub use audit::*;
pub use fixtures::*;
pub use load::*;
pub use node_faults::*;
pub use pod_network::*;
pub use shard_writer::*;
pub use tls::*;

/// The field manager the suite applies its own objects with.
pub const MANAGER: &str = "meridian-e2e";

/// Returns a client for `KUBECONFIG`, or `None` (after saying why) when the suite should skip.
pub async fn client_or_skip(test: &str) -> Option<Client> {
    if std::env::var_os("KUBECONFIG").is_none() {
        eprintln!(
            "SKIP {test}: KUBECONFIG is not set. Run `cargo xtask test` (local control plane) \
             or point KUBECONFIG at a kind cluster with Meridian's images loaded."
        );
        return None;
    }
    match Client::try_default().await {
        Ok(c) => Some(c),
        Err(e) => panic!("KUBECONFIG is set but no client could be built from it: {e}"),
    }
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e lives one level below the workspace root")
        .to_path_buf()
}

/// kubectl to use: `$KUBECTL`, else the one on PATH.
pub fn kubectl() -> Command {
    let bin = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".to_string());
    Command::new(bin)
}

/// Runs kubectl with the given arguments and fails with its output when it fails.
pub fn kubectl_run(args: &[&str]) -> Result<String> {
    let out = kubectl()
        .args(args)
        .output()
        .with_context(|| format!("cannot run kubectl {args:?} (set KUBECTL to its path)"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "kubectl {args:?} failed: {}{}",
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(stdout)
}

/// A namespace that is deleted when the test ends, whatever its outcome.
pub struct TestNamespace {
    pub name: String,
    client: Client,
}

impl TestNamespace {
    pub async fn create(client: &Client, prefix: &str) -> Result<Self> {
        let suffix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis()
            % 1_000_000;
        let name = format!("{prefix}-{suffix}");
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": name }
        }))?;
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .with_context(|| format!("create namespace {name}"))?;
        Ok(Self {
            name,
            client: client.clone(),
        })
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if std::env::var_os("MERIDIAN_E2E_KEEP").is_some() {
            eprintln!("keeping namespace {} (MERIDIAN_E2E_KEEP set)", self.name);
            return;
        }
        let client = self.client.clone();
        let name = self.name.clone();
        // Drop cannot be async; the deletion is a single request, so a short-lived runtime is fine.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                Api::<Namespace>::all(client)
                    .delete(&name, &DeleteParams::background())
                    .await
                    .ok()
            })
        })
        .join();
    }
}

/// Starts a scenario that needs the operator: a client for `KUBECONFIG` (`None` when the
/// suite should skip, see [`client_or_skip`]), the operator installed and running, and a
/// fresh namespace `<ns_prefix>-<n>`.
pub async fn operator_scenario(
    test: &str,
    ns_prefix: &str,
) -> Result<Option<(Client, TestNamespace)>> {
    let Some(client) = client_or_skip(test).await else {
        return Ok(None);
    };
    ensure_operator_installed()?;
    let ns = TestNamespace::create(&client, ns_prefix).await?;
    Ok(Some((client, ns)))
}

/// Server-side applies any object given as YAML text.
pub async fn apply_yaml<K>(api: &Api<K>, yaml: &str) -> Result<K>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let obj: K = serde_yaml::from_str(yaml).context("parse YAML")?;
    let name = obj.meta().name.clone().context("object without a name")?;
    let applied = api
        .patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&obj),
        )
        .await
        .with_context(|| format!("apply {name}"))?;
    Ok(applied)
}

/// Polls `check` until it returns `Some`, or fails after `timeout` with the last state it saw.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, String>>,
{
    poll_every(Duration::from_secs(2), what, timeout, check).await
}

/// [`wait_for`], polling every `interval`: for states that settle in milliseconds.
pub async fn poll_every<T, F, Fut>(
    interval: Duration,
    what: &str,
    timeout: Duration,
    mut check: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, String>>,
{
    let start = Instant::now();
    let mut last = String::from("(not checked yet)");
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(state) => last = state,
        }
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}; last state: {last}");
        }
        tokio::time::sleep(interval).await;
    }
}

/// The label selector of one region's pods of a CacheCluster.
pub fn region_selector(cluster: &str, region: &str) -> String {
    format!(
        "{}={cluster},{}={region}",
        meridian_api::labels::CLUSTER,
        meridian_api::labels::REGION
    )
}

/// Pods of one region of a CacheCluster, by label.
pub async fn region_pods(
    client: &Client,
    ns: &str,
    cluster: &str,
    region: &str,
) -> Result<Vec<Pod>> {
    let pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&region_selector(cluster, region)))
        .await?;
    Ok(pods.items)
}

/// Pod IP of a named pod.
pub async fn pod_ip(client: &Client, ns: &str, pod: &str) -> Result<String> {
    let p = Api::<Pod>::namespaced(client.clone(), ns).get(pod).await?;
    p.status
        .and_then(|s| s.pod_ip)
        .with_context(|| format!("pod {} has no IP", p.metadata.name.unwrap_or_default()))
}

/// Human-readable summary of pods for failure messages.
pub fn describe_pods(pods: &[Pod]) -> String {
    pods.iter()
        .map(|p| {
            let st = p.status.clone().unwrap_or_default();
            format!(
                "{}: phase={:?} ip={:?} node={:?}",
                p.name_any(),
                st.phase,
                st.pod_ip,
                p.spec.as_ref().and_then(|s| s.node_name.clone())
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The Helm release and namespace the suite installs the operator as.
pub const RELEASE: &str = "meridian";
pub const OPERATOR_NAMESPACE: &str = "meridian-system";

/// Installs the CRDs and the operator unless `MERIDIAN_E2E_SKIP_INSTALL` says the cluster
/// already has them (e.g. installed with `helm install` on kind), then waits for the
/// operator. With `HELM` (the path of a helm v3 binary, which `cargo xtask test` sets) it is
/// `helm install` of `charts/meridian`, as users install it; without, `kubectl apply` of
/// `manifests/install.yaml` (rendered from the same chart, RBAC included).
pub fn ensure_operator_installed() -> Result<()> {
    if std::env::var_os("MERIDIAN_E2E_SKIP_INSTALL").is_none() {
        match std::env::var_os("HELM") {
            // An operator installed from install.yaml (e.g. by `cargo xtask demo`) is not
            // helm's to adopt: keep updating it the way it came.
            Some(helm) if !installed_without_helm()? => helm_install(Path::new(&helm))?,
            _ => {
                let root = workspace_root();
                kubectl_run(&[
                    "apply",
                    "--server-side",
                    "--force-conflicts",
                    "-f",
                    &root.join("manifests/install.yaml").to_string_lossy(),
                ])?;
            }
        }
    }
    for crd in [
        "cacheclusters.cache.meridian.dev",
        "cacheregions.cache.meridian.dev",
    ] {
        kubectl_run(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            &format!("crd/{crd}"),
        ])?;
    }
    kubectl_run(&[
        "-n",
        "meridian-system",
        "rollout",
        "status",
        "deployment/meridian-operator",
        "--timeout=180s",
    ])
    .context("the operator Deployment did not become available: is the operator running?")?;
    Ok(())
}

/// Whether the operator's Deployment exists without helm's release annotation.
fn installed_without_helm() -> Result<bool> {
    let out = kubectl()
        .args([
            "-n",
            OPERATOR_NAMESPACE,
            "get",
            "deployment",
            "meridian-operator",
            "--ignore-not-found",
            "-o",
            "jsonpath={.metadata.name}/{.metadata.annotations.meta\\.helm\\.sh/release-name}",
        ])
        .output()
        .context("cannot run kubectl")?;
    let seen = String::from_utf8_lossy(&out.stdout);
    Ok(seen.trim() == "meridian-operator/")
}

/// `helm install` of the chart once per cluster: tests of one binary run in parallel and
/// helm refuses concurrent operations on one release, so they take turns here, and a
/// release that is already deployed is left as it is.
fn helm_install(helm: &Path) -> Result<()> {
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = INSTALL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let run = |args: &[&str]| -> Result<std::process::Output> {
        Command::new(helm)
            .args(args)
            .output()
            .with_context(|| format!("cannot run {}", helm.display()))
    };
    let deployed = run(&["status", RELEASE, "-n", OPERATOR_NAMESPACE])?;
    if deployed.status.success() {
        return Ok(());
    }
    let chart = workspace_root().join("charts/meridian");
    let out = run(&[
        "install",
        RELEASE,
        &chart.to_string_lossy(),
        "-n",
        OPERATOR_NAMESPACE,
        "--create-namespace",
        // The operator's own NetworkPolicy too: the local cluster enforces it, so every
        // scenario proves the operator needs nothing it does not allow.
        "--set",
        "networkPolicy.enabled=true",
    ])?;
    if !out.status.success() {
        bail!(
            "helm install {RELEASE} {} failed: {}{}",
            chart.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The suite's Redis timeouts: generous, because CI machines are shared and slow (the
/// redis crate's defaults, 1 s to connect and 500 ms per reply, fail spuriously there).
const REDIS_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to one node, `endpoint` being `ip:port`.
pub async fn redis_connection(endpoint: &str) -> Result<redis::aio::MultiplexedConnection> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(REDIS_TIMEOUT))
        .set_response_timeout(Some(REDIS_TIMEOUT));
    redis::Client::open(format!("redis://{endpoint}/"))?
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .with_context(|| format!("connect to {endpoint}"))
}

/// A cluster-aware connection seeded with `endpoints` (`ip:port` each). It retries a
/// command up to 30 times, refreshing its slot map, so it rides over failovers and
/// slot migrations.
pub async fn cluster_connection(
    endpoints: &[String],
) -> Result<redis::cluster_async::ClusterConnection> {
    let urls: Vec<String> = endpoints
        .iter()
        .map(|endpoint| format!("redis://{endpoint}/"))
        .collect();
    redis::cluster::ClusterClient::builder(urls)
        .connection_timeout(REDIS_TIMEOUT)
        .response_timeout(REDIS_TIMEOUT)
        .retries(30)
        .build()?
        .get_async_connection()
        .await
        .with_context(|| format!("cluster connection through {}", endpoints.join(", ")))
}

/// The body of `GET path` from an HTTP/1.0 server at `addr` (`ip:port`): enough for the
/// nodes' `/metrics`, without an HTTP client crate.
pub async fn http_get(addr: &str, path: &str) -> Result<String> {
    let (status, body) = http_request(addr, "GET", path, b"").await?;
    if status != 200 {
        bail!("GET {path} from {addr}: HTTP {status}: {body}");
    }
    Ok(body)
}

/// One HTTP/1.0 request (`method path` with `body`) to `addr` (`ip:port`): the status
/// and the body of the answer, whatever the status.
pub async fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream =
        tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
            .await
            .with_context(|| format!("connect to {addr} timed out"))??;
    let mut request = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    stream.write_all(&request).await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response))
        .await
        .with_context(|| format!("{method} {path} to {addr} timed out"))??;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response
        .split_once("\r\n\r\n")
        .with_context(|| format!("{method} {path} to {addr}: no HTTP response"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|status| status.parse().ok())
        .with_context(|| format!("{method} {path} to {addr}: no status in {head:?}"))?;
    Ok((status, body.to_string()))
}

/// The largest value of the Prometheus series `name` (any labels) in `metrics`.
pub fn largest_metric(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .reduce(f64::max)
}
