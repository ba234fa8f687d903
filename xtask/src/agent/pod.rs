//! One worker per pod bound to an agent node: sandbox (address, volumes), init containers,
//! app container supervisors with probes and restart back-off, status reporting through the
//! status subresource, and termination (graceful, forced, or agent shutdown).

use super::envvars::{self, Objects, PodAddresses};
use super::image;
use super::node::{HOST_IP, LocalNode};
use super::probe::{self, ProbeSpec, ProbeTarget};
use super::process::{self, Sandbox};
use super::volumes::PodVolumes;
use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;

const SERVICE_ACCOUNT_MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const BACKOFF_START: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// A container that ran this long has its back-off reset, like kubelet.
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(600);
/// How often a missing binary / config reference is looked for again.
const RETRY_INTERVAL: Duration = Duration::from_secs(5);
/// How often ConfigMap / Secret volumes and tokens are refreshed.
const VOLUME_REFRESH: Duration = Duration::from_secs(30);
/// Grace period for pod processes when the agent itself stops.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Agent-wide settings and the API client shared by every pod worker.
pub struct Ctx {
    pub client: kube::Client,
    pub bin_dir: PathBuf,
    pub pods_dir: PathBuf,
    pub claims_dir: PathBuf,
    pub api_host: String,
    pub api_port: u16,
    pub ca_pem: Vec<u8>,
    pub namespaces: bool,
    pub nodes: Vec<LocalNode>,
}

impl Ctx {
    pub fn node(&self, name: &str) -> Option<&LocalNode> {
        self.nodes.iter().find(|n| n.name == name)
    }
}

/// The main loop's handle on a pod worker.
pub struct PodHandle {
    pub updates: watch::Sender<Arc<Pod>>,
    /// The pod vanished from the API (force delete): kill processes at once.
    pub gone: CancellationToken,
    /// The agent is stopping: kill processes quickly, leave the pod object alone.
    pub shutdown: CancellationToken,
}

pub fn start(ctx: Arc<Ctx>, pod: Pod, done: mpsc::UnboundedSender<String>) -> PodHandle {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let (updates, rx) = watch::channel(Arc::new(pod));
    let gone = CancellationToken::new();
    let shutdown = CancellationToken::new();
    let (g, s) = (gone.clone(), shutdown.clone());
    tokio::spawn(async move {
        run_pod(ctx, rx, g, s).await;
        let _ = done.send(uid);
    });
    PodHandle {
        updates,
        gone,
        shutdown,
    }
}

// ---------------------------------------------------------------------------------------
// Runtime state and status

#[derive(Clone, Debug, PartialEq)]
struct Terminated {
    exit_code: i32,
    signal: Option<i32>,
    reason: String,
    message: Option<String>,
    started_at: Option<Timestamp>,
    finished_at: Timestamp,
    container_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
enum State {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started_at: Timestamp,
    },
    Terminated(Terminated),
}

#[derive(Clone, Debug)]
struct ContainerRt {
    name: String,
    image: String,
    image_id: String,
    container_id: Option<String>,
    state: State,
    last: Option<Terminated>,
    restarts: i32,
    ready: bool,
    started: bool,
}

#[derive(Debug)]
struct PodRt {
    init: Vec<ContainerRt>,
    app: Vec<ContainerRt>,
    sandbox_ready: bool,
    initialized: bool,
    init_failed: bool,
    pod_ip: Option<String>,
    start_time: Timestamp,
    /// Condition type → (status, lastTransitionTime), so repeated reports keep their times.
    conditions: HashMap<String, (bool, Timestamp)>,
}

fn waiting(reason: &str, message: Option<String>) -> State {
    State::Waiting {
        reason: reason.into(),
        message,
    }
}

impl PodRt {
    /// Fresh state; restart counts continue from an existing status (agent restart), with the
    /// previous run's process reported as terminated.
    fn new(pod: &Pod, pod_ip: Option<String>) -> Self {
        let spec = pod.spec.as_ref();
        let status = pod.status.as_ref();
        let build = |containers: &[Container],
                     previous: Option<&Vec<k8s_openapi::api::core::v1::ContainerStatus>>,
                     initial: &str| {
            containers
                .iter()
                .map(|c| {
                    let prev = previous.and_then(|v| v.iter().find(|s| s.name == c.name));
                    let had_run = prev
                        .and_then(|p| p.state.as_ref())
                        .is_some_and(|s| s.running.is_some() || s.terminated.is_some())
                        || prev.and_then(|p| p.last_state.as_ref()).is_some_and(|s| s.terminated.is_some());
                    let (restarts, last) = match prev {
                        Some(p) if had_run => (
                            p.restart_count + 1,
                            Some(Terminated {
                                exit_code: 137,
                                signal: Some(9),
                                reason: "AgentRestarted".into(),
                                message: Some("the local node agent restarted and killed the previous process".into()),
                                started_at: None,
                                finished_at: Timestamp::now(),
                                container_id: p.container_id.clone(),
                            }),
                        ),
                        Some(p) => (p.restart_count, None),
                        None => (0, None),
                    };
                    ContainerRt {
                        name: c.name.clone(),
                        image: c.image.clone().unwrap_or_default(),
                        image_id: String::new(),
                        container_id: None,
                        state: waiting(initial, None),
                        last,
                        restarts,
                        ready: false,
                        started: false,
                    }
                })
                .collect::<Vec<_>>()
        };
        let init = build(
            spec.and_then(|s| s.init_containers.as_deref())
                .unwrap_or(&[]),
            status.and_then(|s| s.init_container_statuses.as_ref()),
            "PodInitializing",
        );
        let app_initial = if init.is_empty() {
            "ContainerCreating"
        } else {
            "PodInitializing"
        };
        let app = build(
            spec.map(|s| s.containers.as_slice()).unwrap_or(&[]),
            status.and_then(|s| s.container_statuses.as_ref()),
            app_initial,
        );
        let start_time = status
            .and_then(|s| s.start_time.as_ref())
            .map(|t| t.0)
            .unwrap_or_else(Timestamp::now);
        let conditions = status
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .map(|c| {
                let time = c
                    .last_transition_time
                    .as_ref()
                    .map(|t| t.0)
                    .unwrap_or_else(Timestamp::now);
                (c.type_.clone(), (c.status == "True", time))
            })
            .collect();
        PodRt {
            init,
            app,
            sandbox_ready: false,
            initialized: false,
            init_failed: false,
            pod_ip,
            start_time,
            conditions,
        }
    }

    fn container(&mut self, which: Which) -> Option<&mut ContainerRt> {
        match which {
            Which::Init(i) => self.init.get_mut(i),
            Which::App(i) => self.app.get_mut(i),
        }
    }

    fn phase(&self, restart_policy: &str) -> &'static str {
        if self.init_failed {
            return "Failed";
        }
        if !self.initialized {
            return "Pending";
        }
        let (mut waiting_n, mut running, mut stopped, mut succeeded) = (0, 0, 0, 0);
        for c in &self.app {
            match &c.state {
                State::Running { .. } => running += 1,
                State::Terminated(t) => {
                    stopped += 1;
                    if t.exit_code == 0 {
                        succeeded += 1;
                    }
                }
                State::Waiting { .. } => match &c.last {
                    Some(t) => {
                        stopped += 1;
                        if t.exit_code == 0 {
                            succeeded += 1;
                        }
                    }
                    None => waiting_n += 1,
                },
            }
        }
        if waiting_n > 0 {
            "Pending"
        } else if running > 0 {
            "Running"
        } else if stopped > 0 {
            match restart_policy {
                "Always" => "Running",
                _ if stopped == succeeded => "Succeeded",
                "Never" => "Failed",
                _ => "Running",
            }
        } else {
            "Pending"
        }
    }

    fn condition(
        &mut self,
        type_: &str,
        status: bool,
        reason: Option<&str>,
        message: Option<String>,
    ) -> Value {
        let entry = self
            .conditions
            .entry(type_.to_string())
            .or_insert((status, Timestamp::now()));
        if entry.0 != status {
            *entry = (status, Timestamp::now());
        }
        let mut c = json!({
            "type": type_,
            "status": if status { "True" } else { "False" },
            "lastTransitionTime": entry.1.to_string(),
            "lastProbeTime": null,
        });
        if let Some(reason) = reason {
            c["reason"] = json!(reason);
        }
        if let Some(message) = message {
            c["message"] = json!(message);
        }
        c
    }

    /// The status subresource patch for the current state.
    fn status_patch(&mut self, pod: &Pod) -> Value {
        let spec = pod.spec.as_ref();
        let policy = spec
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".into());
        let phase = self.phase(&policy);
        let gates: Vec<String> = spec
            .and_then(|s| s.readiness_gates.as_ref())
            .into_iter()
            .flatten()
            .map(|g| g.condition_type.clone())
            .collect();
        let existing = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
        let gates_ok = gates.iter().all(|g| {
            existing.is_some_and(|cs| cs.iter().any(|c| &c.type_ == g && c.status == "True"))
        });
        let unready: Vec<&str> = self
            .app
            .iter()
            .filter(|c| !c.ready)
            .map(|c| c.name.as_str())
            .collect();
        let containers_ready = unready.is_empty();
        let not_ready_message = (!unready.is_empty())
            .then(|| format!("containers with unready status: [{}]", unready.join(" ")));
        let terminal = phase == "Succeeded" || phase == "Failed";
        let not_ready_reason = if terminal {
            "PodCompleted"
        } else {
            "ContainersNotReady"
        };
        let uninitialized: Vec<&str> = self
            .init
            .iter()
            .filter(|c| !matches!(&c.state, State::Terminated(t) if t.exit_code == 0) && !c.started)
            .map(|c| c.name.as_str())
            .collect();
        let init_message = (!self.initialized).then(|| {
            format!(
                "containers with incomplete status: [{}]",
                uninitialized.join(" ")
            )
        });

        let sandbox = self.sandbox_ready && !terminal;
        let mut conditions = vec![self.condition("PodReadyToStartContainers", sandbox, None, None)];
        let initialized = self.initialized;
        let init_reason = (!initialized).then_some("ContainersNotInitialized");
        conditions.push(self.condition("Initialized", initialized, init_reason, init_message));
        let cr_reason = (!containers_ready).then_some(not_ready_reason);
        conditions.push(self.condition(
            "ContainersReady",
            containers_ready,
            cr_reason,
            not_ready_message.clone(),
        ));
        let ready = containers_ready && gates_ok && !terminal;
        let ready_reason = if ready {
            None
        } else if !gates_ok && containers_ready {
            Some("ReadinessGatesNotReady")
        } else {
            Some(not_ready_reason)
        };
        conditions.push(self.condition("Ready", ready, ready_reason, not_ready_message));
        if let Some(scheduled) =
            existing.and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"))
        {
            conditions.push(json!(scheduled));
        }

        let mut status = json!({
            "phase": phase,
            "hostIP": HOST_IP,
            "hostIPs": [{"ip": HOST_IP}],
            "startTime": self.start_time.to_string(),
            "conditions": conditions,
            "containerStatuses": self.app.iter().map(container_status).collect::<Vec<_>>(),
        });
        if let Some(ip) = &self.pod_ip {
            status["podIP"] = json!(ip);
            status["podIPs"] = json!([{"ip": ip}]);
        }
        if !self.init.is_empty() {
            status["initContainerStatuses"] =
                json!(self.init.iter().map(container_status).collect::<Vec<_>>());
        }
        json!({ "status": status })
    }
}

fn terminated_json(t: &Terminated) -> Value {
    let mut v = json!({
        "exitCode": t.exit_code,
        "reason": t.reason,
        "finishedAt": t.finished_at.to_string(),
        "startedAt": t.started_at.map(|s| s.to_string()),
    });
    if let Some(signal) = t.signal {
        v["signal"] = json!(signal);
    }
    if let Some(message) = &t.message {
        v["message"] = json!(message);
    }
    if let Some(id) = &t.container_id {
        v["containerID"] = json!(id);
    }
    v
}

fn container_status(c: &ContainerRt) -> Value {
    let state = match &c.state {
        State::Waiting { reason, message } => {
            let mut w = json!({"reason": reason});
            if let Some(m) = message {
                w["message"] = json!(m);
            }
            json!({"waiting": w})
        }
        State::Running { started_at } => json!({"running": {"startedAt": started_at.to_string()}}),
        State::Terminated(t) => json!({"terminated": terminated_json(t)}),
    };
    let last = c
        .last
        .as_ref()
        .map(|t| json!({"terminated": terminated_json(t)}))
        .unwrap_or(json!({}));
    let mut v = json!({
        "name": c.name,
        "image": c.image,
        "imageID": c.image_id,
        "ready": c.ready,
        "started": c.started,
        "restartCount": c.restarts,
        "state": state,
        "lastState": last,
    });
    if let Some(id) = &c.container_id {
        v["containerID"] = json!(id);
    }
    v
}

// ---------------------------------------------------------------------------------------
// Pod worker

#[derive(Clone, Copy, Debug)]
enum Which {
    Init(usize),
    App(usize),
}

/// Everything a container supervisor needs about its pod.
struct PodCtx {
    ctx: Arc<Ctx>,
    pod: watch::Receiver<Arc<Pod>>,
    rt: Mutex<PodRt>,
    changed: Notify,
    addrs: PodAddresses,
    pod_dir: PathBuf,
    uid_dir: PathBuf,
    hostname: String,
    objects: Mutex<Objects>,
    volumes: tokio::sync::Mutex<PodVolumes>,
    /// Grace period applied when `stop` is cancelled; set just before cancelling.
    stop_grace: Mutex<Duration>,
    key: String,
    namespace: String,
    name: String,
}

impl PodCtx {
    fn update(&self, which: Which, f: impl FnOnce(&mut ContainerRt)) {
        {
            let mut rt = self.rt.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(c) = rt.container(which) {
                f(c);
            }
        }
        self.changed.notify_one();
    }

    fn update_pod(&self, f: impl FnOnce(&mut PodRt)) {
        f(&mut self.rt.lock().unwrap_or_else(|e| e.into_inner()));
        self.changed.notify_one();
    }

    fn latest(&self) -> Arc<Pod> {
        self.pod.borrow().clone()
    }

    fn grace(&self) -> Duration {
        *self.stop_grace.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn pod_key(pod: &Pod) -> (String, String, String) {
    (
        pod.metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        pod.metadata.name.clone().unwrap_or_default(),
        pod.metadata.uid.clone().unwrap_or_default(),
    )
}

/// Deletes the pod object for good once its processes are gone (what kubelet does).
async fn delete_now(client: &kube::Client, pod: &Pod) {
    let (ns, name, uid) = pod_key(pod);
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(&name, &params).await {
        Ok(_) => tracing::info!(pod = %format!("{ns}/{name}"), "pod terminated and deleted"),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
        Err(e) => tracing::warn!(pod = %format!("{ns}/{name}"), "deleting terminated pod: {e}"),
    }
}

/// Waits until the pod is marked for deletion (true), vanishes, or the agent stops (false).
async fn await_deletion(
    rx: &mut watch::Receiver<Arc<Pod>>,
    gone: &CancellationToken,
    shutdown: &CancellationToken,
) -> bool {
    loop {
        if rx.borrow().metadata.deletion_timestamp.is_some() {
            return true;
        }
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return false },
            _ = gone.cancelled() => return false,
            _ = shutdown.cancelled() => return false,
        }
    }
}

enum Stop {
    Graceful(Duration),
    Forced,
    Shutdown,
}

async fn run_pod(
    ctx: Arc<Ctx>,
    mut rx: watch::Receiver<Arc<Pod>>,
    gone: CancellationToken,
    shutdown: CancellationToken,
) {
    let pod = rx.borrow().clone();
    let (ns, name, uid) = pod_key(&pod);
    let key = format!("{ns}/{name}");
    let node_name = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default();
    let Some(node) = ctx.node(&node_name) else {
        return;
    };
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();

    if pod.metadata.deletion_timestamp.is_some() {
        // Its processes (if any) died with the previous agent run.
        delete_now(&ctx.client, &pod).await;
        return;
    }
    if phase == "Succeeded" || phase == "Failed" {
        tracing::debug!(pod = %key, phase, "pod already finished; waiting for its deletion");
        if await_deletion(&mut rx, &gone, &shutdown).await {
            let latest = rx.borrow().clone();
            delete_now(&ctx.client, &latest).await;
        }
        return;
    }

    let host_network = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false);
    let previous_ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone());
    let allocated: Option<Ipv4Addr> = if host_network {
        None
    } else {
        node.allocate_ip(previous_ip.as_deref())
    };
    let pod_ip = if host_network {
        Some(HOST_IP.to_string())
    } else {
        allocated.map(|ip| ip.to_string())
    };
    let pod_dir = ctx.pods_dir.join(format!("{ns}_{name}"));
    let uid_dir = pod_dir.join(&uid);
    let hostname = pod
        .spec
        .as_ref()
        .and_then(|s| s.hostname.clone())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| name.chars().take(63).collect());
    let pc = Arc::new(PodCtx {
        ctx: ctx.clone(),
        pod: rx.clone(),
        rt: Mutex::new(PodRt::new(&pod, pod_ip.clone())),
        changed: Notify::new(),
        addrs: PodAddresses {
            pod_ip: pod_ip.clone().unwrap_or_default(),
            host_ip: HOST_IP.into(),
        },
        pod_dir: pod_dir.clone(),
        uid_dir: uid_dir.clone(),
        hostname,
        objects: Mutex::new(Objects::default()),
        volumes: tokio::sync::Mutex::new(PodVolumes::new(
            uid_dir.join("volumes"),
            ctx.claims_dir.clone(),
        )),
        stop_grace: Mutex::new(Duration::ZERO),
        key: key.clone(),
        namespace: ns.clone(),
        name: name.clone(),
    });
    tracing::info!(pod = %key, node = %node_name, ip = ?pod_ip, "starting pod");

    let stop = CancellationToken::new();
    let writer_stop = CancellationToken::new();
    let writer = tokio::spawn(status_writer(pc.clone(), writer_stop.clone()));
    if pod_ip.is_none() {
        tracing::error!(pod = %key, node = %node_name, "no free pod address on this node");
        pc.update_pod(|rt| {
            for c in rt.app.iter_mut() {
                c.state = waiting(
                    "ContainerCreating",
                    Some(format!("no free pod address in {}", node.cidr())),
                );
            }
        });
    }
    let mut lifecycle = if pod_ip.is_some() {
        Some(tokio::spawn(lifecycle(pc.clone(), stop.clone())))
    } else {
        None
    };

    let how = loop {
        let latest = rx.borrow().clone();
        if latest.metadata.deletion_timestamp.is_some() {
            let seconds = latest
                .metadata
                .deletion_grace_period_seconds
                .or_else(|| {
                    latest
                        .spec
                        .as_ref()
                        .and_then(|s| s.termination_grace_period_seconds)
                })
                .unwrap_or(30)
                .max(0);
            break Stop::Graceful(Duration::from_secs(seconds as u64));
        }
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { break Stop::Forced },
            _ = gone.cancelled() => break Stop::Forced,
            _ = shutdown.cancelled() => break Stop::Shutdown,
            _ = async { match lifecycle.as_mut() { Some(h) => { let _ = h.await; } None => std::future::pending().await } } => {
                tracing::info!(pod = %key, "all containers finished");
                lifecycle = None;
            }
        }
    };

    let grace = match &how {
        Stop::Graceful(g) => *g,
        Stop::Forced => Duration::ZERO,
        Stop::Shutdown => SHUTDOWN_GRACE,
    };
    match &how {
        Stop::Graceful(g) => {
            tracing::info!(pod = %key, grace = ?g, "pod marked for deletion: stopping containers")
        }
        Stop::Forced => {
            tracing::info!(pod = %key, "pod removed from the API: killing its processes")
        }
        Stop::Shutdown => tracing::info!(pod = %key, "agent stopping: killing the pod's processes"),
    }
    *pc.stop_grace.lock().unwrap_or_else(|e| e.into_inner()) = grace;
    stop.cancel();
    if let Some(handle) = lifecycle {
        let _ = tokio::time::timeout(grace + Duration::from_secs(10), handle).await;
    }
    writer_stop.cancel();
    let _ = writer.await;
    if let Stop::Graceful(_) = how {
        write_status(&pc, &mut None).await;
        let latest = rx.borrow().clone();
        delete_now(&ctx.client, &latest).await;
    }
    if let Some(ip) = allocated {
        node.release_ip(ip);
    }
    if !matches!(how, Stop::Shutdown) {
        // Volumes (secrets, tokens) and pid files go; the container logs next to them stay.
        let _ = std::fs::remove_dir_all(&uid_dir);
    }
}

/// Reports status whenever the runtime state changes (coalescing bursts).
async fn status_writer(pc: Arc<PodCtx>, stop: CancellationToken) {
    let mut last_sent: Option<Value> = None;
    loop {
        write_status(&pc, &mut last_sent).await;
        tokio::select! {
            _ = pc.changed.notified() => {},
            _ = tokio::time::sleep(Duration::from_secs(30)) => {},
            _ = stop.cancelled() => return,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn write_status(pc: &PodCtx, last_sent: &mut Option<Value>) {
    let pod = pc.latest();
    let patch = pc
        .rt
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .status_patch(&pod);
    if last_sent.as_ref() == Some(&patch) {
        return;
    }
    let (ns, name, _) = pod_key(&pod);
    let api: Api<Pod> = Api::namespaced(pc.ctx.client.clone(), &ns);
    // A JSON merge patch replaces lists wholesale. The agent computes the whole status, and
    // a strategic merge would keep a restarted pod's old address in `podIPs` (merged by
    // `ip`), which the API server then refuses ("no more than one IP for each IP family").
    match api
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => *last_sent = Some(patch),
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => tracing::warn!(pod = %pc.key, "updating pod status: {e}"),
    }
}

/// Sandbox, init containers in order, then app containers side by side.
async fn lifecycle(pc: Arc<PodCtx>, stop: CancellationToken) {
    // Volumes first: like kubelet, containers do not start until every volume is ready.
    loop {
        match prepare_volumes(&pc).await {
            Ok(()) => break,
            Err(message) => {
                tracing::warn!(pod = %pc.key, "volumes not ready: {message}");
                pc.update_pod(|rt| {
                    let containers = if rt.init.is_empty() {
                        &mut rt.app
                    } else {
                        &mut rt.init
                    };
                    if let Some(first) = containers.first_mut() {
                        first.state = waiting("ContainerCreating", Some(message.clone()));
                    }
                });
                if sleep_or_stop(RETRY_INTERVAL, &stop).await {
                    return;
                }
            }
        }
    }
    write_fallback_kubeconfig(&pc);
    pc.update_pod(|rt| rt.sandbox_ready = true);
    let refresher = tokio::spawn(refresh_volumes(pc.clone(), stop.clone()));

    let pod = pc.latest();
    let spec = pod.spec.clone().unwrap_or_default();
    let policy = spec
        .restart_policy
        .clone()
        .unwrap_or_else(|| "Always".into());
    let sidecar_stop = CancellationToken::new();
    let mut sidecars = Vec::new();
    for (i, container) in spec.init_containers.iter().flatten().enumerate() {
        let is_sidecar = container.restart_policy.as_deref() == Some("Always");
        if is_sidecar {
            let stop_both = stop.child_token();
            let (s1, s2) = (stop_both.clone(), sidecar_stop.clone());
            tokio::spawn(async move {
                s2.cancelled().await;
                s1.cancel();
            });
            sidecars.push(tokio::spawn(supervise(
                pc.clone(),
                Which::Init(i),
                container.clone(),
                "Always".into(),
                stop_both,
            )));
            // The next init container starts once the sidecar has started.
            loop {
                let started = pc
                    .rt
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .init
                    .get(i)
                    .is_some_and(|c| c.started);
                if started {
                    break;
                }
                if sleep_or_stop(Duration::from_millis(200), &stop).await {
                    return;
                }
            }
            continue;
        }
        let init_policy = if policy == "Never" {
            "Never"
        } else {
            "OnFailure"
        };
        match supervise(
            pc.clone(),
            Which::Init(i),
            container.clone(),
            init_policy.into(),
            stop.clone(),
        )
        .await
        {
            Outcome::Completed => {}
            Outcome::Failed => {
                tracing::warn!(pod = %pc.key, container = %container.name, "init container failed; pod failed");
                pc.update_pod(|rt| rt.init_failed = true);
                sidecar_stop.cancel();
                return;
            }
            Outcome::Stopped => return,
        }
    }
    pc.update_pod(|rt| {
        rt.initialized = true;
        for c in rt.app.iter_mut() {
            if matches!(&c.state, State::Waiting { reason, .. } if reason == "PodInitializing") {
                c.state = waiting("ContainerCreating", None);
            }
        }
    });
    let apps: Vec<_> = spec
        .containers
        .iter()
        .enumerate()
        .map(|(i, c)| {
            tokio::spawn(supervise(
                pc.clone(),
                Which::App(i),
                c.clone(),
                policy.clone(),
                stop.clone(),
            ))
        })
        .collect();
    for app in apps {
        let _ = app.await;
    }
    // Sidecars end with the app containers.
    *pc.stop_grace.lock().unwrap_or_else(|e| e.into_inner()) = Duration::from_secs(5);
    sidecar_stop.cancel();
    for s in sidecars {
        let _ = s.await;
    }
    refresher.abort();
}

/// Sleeps; true when `stop` fired first.
async fn sleep_or_stop(d: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = stop.cancelled() => true,
    }
}

async fn prepare_volumes(pc: &PodCtx) -> Result<(), String> {
    let pod = pc.latest();
    let objects = super::volumes::fetch_objects(&pc.ctx.client, &pod, &pc.ctx.ca_pem).await?;
    let mut volumes = pc.volumes.lock().await;
    volumes
        .materialize(&pc.ctx.client, &pod, &pc.addrs, &objects)
        .await?;
    *pc.objects.lock().unwrap_or_else(|e| e.into_inner()) = objects;
    Ok(())
}

async fn refresh_volumes(pc: Arc<PodCtx>, stop: CancellationToken) {
    while !sleep_or_stop(VOLUME_REFRESH, &stop).await {
        if let Err(message) = prepare_volumes(&pc).await {
            tracing::warn!(pod = %pc.key, "refreshing volumes: {message}");
        }
    }
}

/// Without mount namespaces the service-account files are not at their usual path, so
/// clients get a kubeconfig pointing at them instead.
fn write_fallback_kubeconfig(pc: &PodCtx) {
    if pc.ctx.namespaces {
        return;
    }
    let pod = pc.latest();
    let Some(spec) = pod.spec.as_ref() else {
        return;
    };
    let sa_volume = spec
        .containers
        .iter()
        .flat_map(|c| c.volume_mounts.iter().flatten())
        .find(|m| m.mount_path.trim_end_matches('/') == SERVICE_ACCOUNT_MOUNT)
        .map(|m| m.name.clone());
    let Some(volume) = sa_volume else { return };
    let dir = pc.uid_dir.join("volumes").join(volume);
    let server = format!("https://{}:{}", pc.ctx.api_host, pc.ctx.api_port);
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let config = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\n\
         users:\n- name: sa\n  user:\n    tokenFile: {token}\ncontexts:\n- name: sa\n  context:\n    cluster: local\n    user: sa\n    namespace: {ns}\n\
         current-context: sa\n",
        ca = dir.join("ca.crt").display(),
        token = dir.join("token").display(),
    );
    if let Err(e) = std::fs::write(pc.uid_dir.join("kubeconfig"), config) {
        tracing::warn!(pod = %pc.key, "writing fallback kubeconfig: {e}");
    }
}

// ---------------------------------------------------------------------------------------
// Container supervision

enum Outcome {
    Completed,
    Failed,
    Stopped,
}

enum ProbeEvent {
    Started,
    Ready(bool),
    Unhealthy {
        probe: &'static str,
        message: String,
        grace: Option<Duration>,
    },
}

/// The environment every container gets before its own `env`: PATH, HOSTNAME, a private
/// HOME (so no host kubeconfig is picked up) and the API server address.
fn base_env(pc: &PodCtx) -> Vec<(String, String)> {
    let host = &pc.ctx.api_host;
    let port = pc.ctx.api_port;
    let mut env = vec![
        ("PATH".to_string(), DEFAULT_PATH.to_string()),
        ("HOSTNAME".to_string(), pc.hostname.clone()),
        (
            "HOME".to_string(),
            pc.uid_dir.join("home").display().to_string(),
        ),
        ("KUBERNETES_SERVICE_HOST".to_string(), host.clone()),
        ("KUBERNETES_SERVICE_PORT".to_string(), port.to_string()),
        (
            "KUBERNETES_SERVICE_PORT_HTTPS".to_string(),
            port.to_string(),
        ),
        (
            "KUBERNETES_PORT".to_string(),
            format!("tcp://{host}:{port}"),
        ),
    ];
    if !pc.ctx.namespaces && pc.uid_dir.join("kubeconfig").exists() {
        env.push((
            "KUBECONFIG".to_string(),
            pc.uid_dir.join("kubeconfig").display().to_string(),
        ));
    }
    env
}

struct Prepared {
    program: PathBuf,
    argv: Vec<String>,
    sandbox: Sandbox,
}

/// Resolves program, environment and mounts; `Err((reason, message))` becomes the waiting state.
async fn prepare_container(
    pc: &PodCtx,
    container: &Container,
) -> Result<Prepared, (&'static str, String)> {
    let pod = pc.latest();
    let resolved = image::resolve(
        container.image.as_deref().unwrap_or(""),
        container.command.as_deref().unwrap_or(&[]),
        container.args.as_deref().unwrap_or(&[]),
        &pc.ctx.bin_dir,
        Some(std::ffi::OsStr::new(DEFAULT_PATH)),
    )
    .map_err(|m| ("ErrImagePull", m))?;
    let objects = pc.objects.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let env = envvars::build_env(&pod, container, &pc.addrs, &base_env(pc), &objects)
        .map_err(|m| ("CreateContainerConfigError", m))?;
    let argv = envvars::expand_all(&resolved.argv_tail, &env);
    let mounts = pc
        .volumes
        .lock()
        .await
        .mounts_for(&pod, container, &env)
        .map_err(|m| ("CreateContainerConfigError", m))?;
    let working_dir = container
        .working_dir
        .clone()
        .filter(|w| w.starts_with('/'))
        .map(PathBuf::from)
        .unwrap_or_else(|| pc.uid_dir.join("cwd").join(&container.name));
    Ok(Prepared {
        program: resolved.program,
        argv,
        sandbox: Sandbox {
            env,
            mounts,
            hostname: pc.hostname.clone(),
            working_dir,
            namespaces: pc.ctx.namespaces,
        },
    })
}

fn exit_details(status: Option<std::process::ExitStatus>) -> (i32, Option<i32>) {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Some(s) => match (s.code(), s.signal()) {
            (Some(code), _) => (code, None),
            (None, Some(sig)) => (128 + sig, Some(sig)),
            _ => (255, None),
        },
        None => (137, Some(9)),
    }
}

async fn supervise(
    pc: Arc<PodCtx>,
    which: Which,
    container: Container,
    policy: String,
    stop: CancellationToken,
) -> Outcome {
    let name = container.name.clone();
    let mut backoff = Duration::ZERO;
    let mut last_problem: Option<String> = None;
    let log_path = log_path(&pc.ctx.pods_dir, &pc.namespace, &pc.name, &name);
    let pid_path = pc.uid_dir.join("pids").join(format!("{name}.pid"));
    let _ = std::fs::create_dir_all(&pc.pod_dir);
    loop {
        if stop.is_cancelled() {
            return Outcome::Stopped;
        }
        let prepared = match prepare_container(&pc, &container).await {
            Ok(p) => p,
            Err((reason, message)) => {
                // Retried every few seconds: say it once per distinct problem.
                if last_problem.as_deref() != Some(message.as_str()) {
                    tracing::warn!(pod = %pc.key, container = %name, reason, "{message}");
                    last_problem = Some(message.clone());
                }
                pc.update(which, |c| c.state = waiting(reason, Some(message.clone())));
                if sleep_or_stop(RETRY_INTERVAL, &stop).await {
                    return Outcome::Stopped;
                }
                continue;
            }
        };
        let startup = container
            .startup_probe
            .as_ref()
            .map(|p| probe::parse_or_failing(p, &container));
        let readiness = container
            .readiness_probe
            .as_ref()
            .map(|p| probe::parse_or_failing(p, &container));
        let liveness = container
            .liveness_probe
            .as_ref()
            .map(|p| probe::parse_or_failing(p, &container));
        let has_readiness = readiness.is_some();
        let started_at = Timestamp::now();
        let run_start = Instant::now();

        let spawned = process::spawn(
            &prepared.program,
            &prepared.argv,
            &prepared.sandbox,
            Some(&log_path),
        );
        let failed_spawn = spawned.is_err();
        let exit = match spawned {
            Err(e) => {
                let message = format!("starting {}: {e}", prepared.program.display());
                tracing::warn!(pod = %pc.key, container = %name, "{message}");
                Terminated {
                    exit_code: 128,
                    signal: None,
                    reason: "StartError".into(),
                    message: Some(message),
                    started_at: None,
                    finished_at: Timestamp::now(),
                    container_id: None,
                }
            }
            Ok(mut child) => {
                let pid = child.id().unwrap_or(0);
                let container_id = format!("meridian-local://{}/{name}/{pid}", pc.addrs.pod_ip);
                if let Err(e) = process::write_pid_file(&pid_path, pid) {
                    tracing::warn!(pod = %pc.key, container = %name, "writing pid file: {e}");
                }
                tracing::info!(pod = %pc.key, container = %name, pid, program = %prepared.program.display(),
                    args = ?prepared.argv, log = %log_path.display(), "container started");
                let image_id = format!("local://{}", prepared.program.display());
                pc.update(which, |c| {
                    if let State::Terminated(t) = &c.state {
                        c.last = Some(t.clone());
                    }
                    c.state = State::Running { started_at };
                    c.container_id = Some(container_id.clone());
                    c.image_id = image_id;
                    c.started = startup.is_none();
                    c.ready = startup.is_none() && !has_readiness;
                });
                let (tx, mut events) = mpsc::channel(8);
                let probes = tokio::spawn(run_probes(
                    startup,
                    readiness,
                    liveness,
                    pc.addrs.pod_ip.clone(),
                    prepared.sandbox.clone(),
                    pc.ctx.bin_dir.clone(),
                    run_start,
                    tx,
                ));
                let (status, reason_override, message) = loop {
                    tokio::select! {
                        status = child.wait() => break (status.ok(), None, None),
                        Some(event) = events.recv() => match event {
                            ProbeEvent::Started => pc.update(which, |c| {
                                c.started = true;
                                if !has_readiness { c.ready = true; }
                            }),
                            ProbeEvent::Ready(r) => pc.update(which, |c| c.ready = r && c.started),
                            ProbeEvent::Unhealthy { probe, message, grace } => {
                                tracing::warn!(pod = %pc.key, container = %name, probe, "{message}; killing the container");
                                let g = grace.unwrap_or_else(|| termination_grace(&pc));
                                let status = process::terminate(&mut child, g).await;
                                break (status, None, Some(format!("{probe} probe failed: {message}")));
                            }
                        },
                        _ = stop.cancelled() => {
                            let status = process::terminate(&mut child, pc.grace()).await;
                            break (status, None, None);
                        }
                    }
                };
                probes.abort();
                process::signal_group(pid, nix::sys::signal::Signal::SIGKILL);
                let _ = std::fs::remove_file(&pid_path);
                let (exit_code, signal) = exit_details(status);
                let reason: String = reason_override
                    .unwrap_or(if exit_code == 0 { "Completed" } else { "Error" })
                    .into();
                tracing::info!(pod = %pc.key, container = %name, exit_code, ?signal, "container exited");
                Terminated {
                    exit_code,
                    signal,
                    reason,
                    message,
                    started_at: Some(started_at),
                    finished_at: Timestamp::now(),
                    container_id: Some(container_id),
                }
            }
        };
        let success = exit.exit_code == 0;
        pc.update(which, |c| {
            c.state = State::Terminated(exit.clone());
            c.ready = false;
            c.started = false;
        });
        if stop.is_cancelled() {
            return Outcome::Stopped;
        }
        let restart = match policy.as_str() {
            "Never" => false,
            "OnFailure" => !success,
            _ => true,
        };
        if !restart {
            return if success {
                Outcome::Completed
            } else {
                Outcome::Failed
            };
        }
        if run_start.elapsed() >= BACKOFF_RESET_AFTER {
            backoff = Duration::ZERO;
        }
        let delay = backoff;
        backoff = if backoff.is_zero() {
            BACKOFF_START
        } else {
            (backoff * 2).min(BACKOFF_MAX)
        };
        pc.update(which, |c| {
            c.last = Some(exit.clone());
            c.restarts += 1;
            let reason = if failed_spawn {
                "RunContainerError"
            } else {
                "CrashLoopBackOff"
            };
            c.state = waiting(
                reason,
                Some(format!(
                    "back-off {}s restarting failed container={name} pod={}",
                    delay.as_secs(),
                    pc.key
                )),
            );
        });
        if !delay.is_zero() && sleep_or_stop(delay, &stop).await {
            return Outcome::Stopped;
        }
    }
}

fn termination_grace(pc: &PodCtx) -> Duration {
    let seconds = pc
        .latest()
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(30)
        .max(0);
    Duration::from_secs(seconds as u64)
}

/// Startup probe first; once it passes, readiness and liveness run side by side.
#[allow(clippy::too_many_arguments)]
async fn run_probes(
    startup: Option<ProbeSpec>,
    readiness: Option<ProbeSpec>,
    liveness: Option<ProbeSpec>,
    pod_ip: String,
    sandbox: Sandbox,
    bin_dir: PathBuf,
    container_start: Instant,
    tx: mpsc::Sender<ProbeEvent>,
) {
    let target = ProbeTarget {
        pod_ip: &pod_ip,
        sandbox: &sandbox,
        bin_dir: &bin_dir,
    };
    if let Some(spec) = &startup {
        tokio::time::sleep_until((container_start + spec.initial_delay).into()).await;
        let mut failures = 0;
        loop {
            match probe::run_once(spec, &target).await {
                Ok(()) => break,
                Err(message) => {
                    failures += 1;
                    if failures >= spec.failure_threshold {
                        let _ = tx
                            .send(ProbeEvent::Unhealthy {
                                probe: "Startup",
                                message,
                                grace: spec.termination_grace,
                            })
                            .await;
                        return;
                    }
                }
            }
            tokio::time::sleep(spec.period).await;
        }
    }
    let _ = tx.send(ProbeEvent::Started).await;
    let readiness_loop = async {
        let Some(spec) = &readiness else { return };
        tokio::time::sleep_until((container_start + spec.initial_delay).into()).await;
        let (mut successes, mut failures, mut ready) = (0u32, 0u32, false);
        loop {
            match probe::run_once(spec, &target).await {
                Ok(()) => {
                    successes += 1;
                    failures = 0;
                    if !ready && successes >= spec.success_threshold {
                        ready = true;
                        let _ = tx.send(ProbeEvent::Ready(true)).await;
                    }
                }
                Err(message) => {
                    failures += 1;
                    successes = 0;
                    tracing::debug!(probe = "Readiness", "{message}");
                    if ready && failures >= spec.failure_threshold {
                        ready = false;
                        let _ = tx.send(ProbeEvent::Ready(false)).await;
                    }
                }
            }
            tokio::time::sleep(spec.period).await;
        }
    };
    let liveness_loop = async {
        let Some(spec) = &liveness else { return };
        tokio::time::sleep_until((container_start + spec.initial_delay).into()).await;
        let mut failures = 0;
        loop {
            match probe::run_once(spec, &target).await {
                Ok(()) => failures = 0,
                Err(message) => {
                    failures += 1;
                    if failures >= spec.failure_threshold {
                        let _ = tx
                            .send(ProbeEvent::Unhealthy {
                                probe: "Liveness",
                                message,
                                grace: spec.termination_grace,
                            })
                            .await;
                        return;
                    }
                }
            }
            tokio::time::sleep(spec.period).await;
        }
    };
    tokio::join!(readiness_loop, liveness_loop);
}

/// The container log path for `pod` / `container` (documented for tests).
pub fn log_path(pods_dir: &Path, namespace: &str, pod: &str, container: &str) -> PathBuf {
    pods_dir
        .join(format!("{namespace}_{pod}"))
        .join(format!("{container}.log"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;

    fn pod_with(policy: &str, containers: &[&str]) -> Pod {
        Pod {
            spec: Some(PodSpec {
                restart_policy: Some(policy.into()),
                containers: containers
                    .iter()
                    .map(|n| Container {
                        name: (*n).into(),
                        image: Some("busybox".into()),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn term(code: i32) -> Terminated {
        Terminated {
            exit_code: code,
            signal: None,
            reason: if code == 0 {
                "Completed".into()
            } else {
                "Error".into()
            },
            message: None,
            started_at: None,
            finished_at: Timestamp::now(),
            container_id: None,
        }
    }

    #[test]
    fn phases_follow_kubelet_rules() {
        let pod = pod_with("Never", &["a", "b"]);
        let mut rt = PodRt::new(&pod, Some("127.0.10.2".into()));
        assert_eq!(rt.phase("Never"), "Pending");
        rt.initialized = true;
        assert_eq!(rt.phase("Never"), "Pending", "containers not started yet");
        rt.app[0].state = State::Running {
            started_at: Timestamp::now(),
        };
        rt.app[1].state = State::Running {
            started_at: Timestamp::now(),
        };
        assert_eq!(rt.phase("Never"), "Running");
        rt.app[0].state = State::Terminated(term(0));
        rt.app[1].state = State::Terminated(term(0));
        assert_eq!(rt.phase("Never"), "Succeeded");
        rt.app[1].state = State::Terminated(term(2));
        assert_eq!(rt.phase("Never"), "Failed");
        assert_eq!(rt.phase("OnFailure"), "Running");
        assert_eq!(rt.phase("Always"), "Running");
        // Crash-looping containers are "stopped", not "waiting".
        rt.app[1].state = waiting("CrashLoopBackOff", None);
        rt.app[1].last = Some(term(1));
        assert_eq!(rt.phase("Always"), "Running");
        rt.init_failed = true;
        assert_eq!(rt.phase("Never"), "Failed");
    }

    #[test]
    fn status_reports_ready_conditions_and_addresses() {
        let pod = pod_with("Always", &["app"]);
        let mut rt = PodRt::new(&pod, Some("127.0.11.4".into()));
        rt.sandbox_ready = true;
        rt.initialized = true;
        rt.app[0].state = State::Running {
            started_at: Timestamp::now(),
        };
        rt.app[0].started = true;
        rt.app[0].ready = true;
        let patch = rt.status_patch(&pod);
        let status = &patch["status"];
        assert_eq!(status["phase"], "Running");
        assert_eq!(status["podIP"], "127.0.11.4");
        assert_eq!(status["podIPs"][0]["ip"], "127.0.11.4");
        assert_eq!(status["hostIP"], "127.0.0.1");
        let cond = |t: &str| {
            status["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["type"] == t)
                .unwrap()["status"]
                .clone()
        };
        assert_eq!(cond("Ready"), "True");
        assert_eq!(cond("ContainersReady"), "True");
        assert_eq!(cond("Initialized"), "True");
        assert!(status["containerStatuses"][0]["state"]["running"]["startedAt"].is_string());
        // Unchanged state → identical patch (transition times are kept).
        assert_eq!(rt.status_patch(&pod), patch);
        rt.app[0].ready = false;
        let patch = rt.status_patch(&pod);
        let ready = patch["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap()
            .clone();
        assert_eq!(ready["status"], "False");
        assert_eq!(ready["reason"], "ContainersNotReady");
    }

    #[test]
    fn restart_counts_continue_after_agent_restart() {
        let mut pod = pod_with("Always", &["app"]);
        pod.status = Some(k8s_openapi::api::core::v1::PodStatus {
            container_statuses: Some(vec![k8s_openapi::api::core::v1::ContainerStatus {
                name: "app".into(),
                restart_count: 2,
                state: Some(k8s_openapi::api::core::v1::ContainerState {
                    running: Some(Default::default()),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        });
        let rt = PodRt::new(&pod, None);
        assert_eq!(rt.app[0].restarts, 3);
        assert_eq!(
            rt.app[0].last.as_ref().map(|t| t.reason.as_str()),
            Some("AgentRestarted")
        );
    }

    #[test]
    fn log_path_layout() {
        assert_eq!(
            log_path(Path::new("/s/pods"), "ns", "web-0", "app"),
            PathBuf::from("/s/pods/ns_web-0/app.log")
        );
    }
}
