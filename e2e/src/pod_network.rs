//! Connections made from inside a pod's network namespace, to see what a NetworkPolicy
//! really lets through: the probe pod runs the pause image (every node has it: it is the
//! sandbox image), and the test process, on the same machine as the nodes, opens the
//! connection from a thread that joined the pod's network namespace. The source address
//! is then the pod's, exactly as for an application in that pod.
//!
//! On kind or a remote cluster the pod's namespace is out of reach and the helpers answer
//! `None`.

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, PostParams};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::{container_pid, wait_for};

/// The sandbox image of the local cluster's containerd (`images.rs`).
const PAUSE_IMAGE: &str = "registry.k8s.io/pause:3.10.1";
const PROBE_CONTAINER: &str = "probe";

/// Starts a pause pod `name` in `ns` with `labels` and waits until it runs.
pub async fn start_probe_pod(
    client: &Client,
    ns: &str,
    name: &str,
    labels: &[(&str, &str)],
) -> Result<Pod> {
    start_pod(client, ns, name, labels, PROBE_CONTAINER, PAUSE_IMAGE, &[]).await
}

/// Starts a pod `name` in `ns` with `labels` and one container of `image` with `env`,
/// restricted as the cache pods are (non-root, read-only root, no capabilities), and
/// waits until it runs.
pub async fn start_pod(
    client: &Client,
    ns: &str,
    name: &str,
    labels: &[(&str, &str)],
    container: &str,
    image: &str,
    env: &[(&str, &str)],
) -> Result<Pod> {
    let labels: serde_json::Map<String, serde_json::Value> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
        .collect();
    let env: Vec<serde_json::Value> = env
        .iter()
        .map(|(name, value)| serde_json::json!({"name": name, "value": value}))
        .collect();
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "securityContext": {
                "runAsNonRoot": true,
                "runAsUser": 65532,
                "seccompProfile": {"type": "RuntimeDefault"}
            },
            "containers": [{
                "name": container,
                "image": image,
                "imagePullPolicy": "IfNotPresent",
                "env": env,
                "securityContext": {
                    "allowPrivilegeEscalation": false,
                    "readOnlyRootFilesystem": true,
                    "capabilities": {"drop": ["ALL"]}
                }
            }]
        }
    }))?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    pods.create(&PostParams::default(), &pod)
        .await
        .with_context(|| format!("create pod {ns}/{name}"))?;
    wait_for(
        &format!("pod {ns}/{name} running"),
        Duration::from_secs(120),
        || {
            let pods = pods.clone();
            async move {
                let pod = pods.get(name).await.map_err(|e| e.to_string())?;
                let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
                if phase.as_deref() != Some("Running") {
                    return Err(format!("phase {phase:?}"));
                }
                Ok(Some(pod))
            }
        },
    )
    .await
}

/// Whether a TCP connection from inside `pod` to `addr` is established within `timeout`
/// (`Some(false)`: refused or unanswered); `None` when the pod's network namespace is not on
/// this machine.
pub async fn connects_from(pod: &Pod, addr: SocketAddr, timeout: Duration) -> Result<Option<bool>> {
    let Some(pid) = container_pid(pod, PROBE_CONTAINER) else {
        return Ok(None);
    };
    tokio::task::spawn_blocking(move || connect_in_netns(pid, addr, timeout))
        .await?
        .map(Some)
}

/// Joins `pid`'s network namespace on a thread of its own (the namespace is per thread, so
/// nothing else of the test process moves) and connects from there.
fn connect_in_netns(pid: i32, addr: SocketAddr, timeout: Duration) -> Result<bool> {
    let netns = std::fs::File::open(format!("/proc/{pid}/ns/net"))
        .with_context(|| format!("open the network namespace of pid {pid}"))?;
    std::thread::spawn(move || -> Result<bool> {
        rustix::thread::move_into_link_name_space(
            std::os::fd::AsFd::as_fd(&netns),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .context("setns into the pod's network namespace (needs root)")?;
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(_) => Ok(true),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                Ok(false)
            }
            Err(e) => bail!("connect to {addr} from pid {pid}'s network: {e}"),
        }
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the probe thread panicked"))?
}
