//! `cargo xtask cluster up|down|status`: a local Kubernetes cluster built from the pinned
//! upstream sources: etcd, kube-apiserver, kube-controller-manager and kube-scheduler on the
//! host, and real nodes (kubelet, containerd, runc, CNI, kube-proxy), each in a network
//! namespace of its own, running the images this project builds. Cluster DNS is CoreDNS.
//! Everything lives in one state directory; nothing listens beyond loopback and the node
//! network (`network.rs`), which exists only on this machine.

pub(crate) mod binaries;
mod dns;
mod netpol;
mod network;
mod nodes;
mod pki;
mod process;
mod skewed_clock;

pub use binaries::go_install_helm;

use crate::util;
use anyhow::{Context, Result, bail};
use process::Component;
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The API server's port on 127.0.0.1 (fixed, so kubeconfigs stay valid across restarts).
const APISERVER_PORT: u16 = 6443;
/// Nodes `up` starts: two regions of three zones.
const EXPECTED_NODES: usize = nodes::REGIONS.len() * nodes::ZONES_PER_REGION as usize;
const REGION_LABEL: &str = "topology.kubernetes.io/region";
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// Marks a directory as ours so `down` never deletes anything else.
const STATE_MARKER: &str = ".meridian-localkube";

// Generous: the machine running this may have two busy cores.
const ETCD_TIMEOUT: Duration = Duration::from_secs(120);
const APISERVER_TIMEOUT: Duration = Duration::from_secs(300);
const CONTROLLER_TIMEOUT: Duration = Duration::from_secs(180);
const NODES_TIMEOUT: Duration = Duration::from_secs(300);
/// How long CoreDNS may take to roll out.
const ROLLOUT_TIMEOUT: Duration = Duration::from_secs(180);

#[derive(clap::Args)]
pub struct ClusterArgs {
    #[command(subcommand)]
    pub command: ClusterCommand,
}

#[derive(clap::Subcommand)]
pub enum ClusterCommand {
    /// Build the binaries and images if needed, start the control plane and the nodes (idempotent).
    Up,
    /// Stop every component and remove the state directory.
    Down {
        /// Keep the state directory (PKI, etcd data, logs).
        #[arg(long)]
        keep_state: bool,
    },
    /// Show each component's health.
    Status,
    /// Only build (or verify the cache of) the upstream binaries.
    Build,
}

pub fn run(args: ClusterArgs) -> Result<()> {
    match args.command {
        ClusterCommand::Up => up(),
        ClusterCommand::Down { keep_state } => down_with(keep_state),
        ClusterCommand::Status => status(),
        ClusterCommand::Build => {
            ensure_binaries()?;
            println!("binaries in {}", binaries::kube_bin_dir().display());
            println!("etcd: {}", binaries::etcd_path().display());
            Ok(())
        }
    }
}

/// The kubectl built with the control plane (matches the server version).
pub fn kubectl_path() -> PathBuf {
    binaries::kube_bin_dir().join("kubectl")
}

/// The network namespace of the `index`th node (from 0), for commands run "on a node".
/// The node network: this machine reaches pods from its address there.
pub const NODE_NETWORK: &str = network::NODE_NETWORK;

pub fn node_netns(index: usize) -> String {
    nodes::specs()
        .get(index)
        .map(|spec| spec.net.netns())
        .unwrap_or_default()
}

/// The admin kubeconfig users and tests get.
pub fn kubeconfig_path() -> PathBuf {
    state_dir().join("kubeconfig")
}

/// Builds etcd and the Kubernetes binaries into the cache unless already there.
pub fn ensure_binaries() -> Result<()> {
    binaries::ensure_all()
}

/// `$MERIDIAN_CLUSTER_DIR`, or `<workspace>/target/localkube`.
fn state_dir() -> PathBuf {
    std::env::var_os("MERIDIAN_CLUSTER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| util::workspace_root().join("target").join("localkube"))
}

/// Ports chosen at first start and kept for the life of the state dir.
#[derive(Serialize, Deserialize, Clone, Copy)]
struct Ports {
    etcd_client: u16,
    etcd_peer: u16,
    controller_manager: u16,
    scheduler: u16,
}

impl Ports {
    fn load_or_pick(state: &Path) -> Result<Ports> {
        let path = state.join("ports.json");
        if let Ok(text) = fs::read_to_string(&path)
            && let Ok(ports) = serde_json::from_str(&text)
        {
            return Ok(ports);
        }
        let ports = Ports {
            etcd_client: process::pick_port(2379)?,
            etcd_peer: process::pick_port(2380)?,
            controller_manager: process::pick_port(10257)?,
            scheduler: process::pick_port(10259)?,
        };
        fs::write(&path, serde_json::to_string_pretty(&ports)?)?;
        Ok(ports)
    }

    fn load(state: &Path) -> Option<Ports> {
        serde_json::from_str(&fs::read_to_string(state.join("ports.json")).ok()?).ok()
    }
}

/// The processes of the local cluster, in start order.
struct Cluster {
    state: PathBuf,
    pki: pki::Pki,
    etcd: Component,
    apiserver: Component,
    controller_manager: Component,
    scheduler: Component,
    nodes: Vec<nodes::Node>,
}

impl Cluster {
    fn new() -> Result<Cluster> {
        let state = state_dir();
        let kube = binaries::kube_bin_dir();
        let specs = nodes::specs();
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        let bins = nodes::NodeBinaries::locate();
        Ok(Cluster {
            pki: pki::Pki::new(&state, &names),
            nodes: specs
                .iter()
                .map(|spec| nodes::Node::new(&state, spec.clone(), &bins))
                .collect(),
            etcd: Component::new(&state, "etcd", binaries::etcd_path()),
            apiserver: Component::new(&state, "kube-apiserver", kube.join("kube-apiserver")),
            controller_manager: Component::new(
                &state,
                "kube-controller-manager",
                kube.join("kube-controller-manager"),
            ),
            scheduler: Component::new(&state, "kube-scheduler", kube.join("kube-scheduler")),
            state,
        })
    }

    fn control_plane(&self) -> [&Component; 4] {
        [
            &self.etcd,
            &self.apiserver,
            &self.controller_manager,
            &self.scheduler,
        ]
    }

    fn kubeconfig(&self, who: &pki::ClientIdentity) -> PathBuf {
        if who.name == pki::ADMIN.name {
            self.state.join("kubeconfig")
        } else {
            self.state.join(format!("{}.kubeconfig", who.name))
        }
    }

    fn path(p: PathBuf) -> String {
        p.to_string_lossy().into_owned()
    }

    fn etcd_args(&self, ports: Ports) -> Vec<String> {
        let client = format!("http://127.0.0.1:{}", ports.etcd_client);
        let peer = format!("http://127.0.0.1:{}", ports.etcd_peer);
        vec![
            "--name=localkube".into(),
            format!("--data-dir={}", self.state.join("etcd-data").display()),
            format!("--listen-client-urls={client}"),
            format!("--advertise-client-urls={client}"),
            format!("--listen-peer-urls={peer}"),
            format!("--initial-advertise-peer-urls={peer}"),
            format!("--initial-cluster=localkube={peer}"),
            "--initial-cluster-state=new".into(),
            // A throwaway test fixture: durability is not worth the fsync latency.
            "--unsafe-no-fsync".into(),
            "--log-level=warn".into(),
        ]
    }

    fn apiserver_args(&self, ports: Ports) -> Vec<String> {
        let pki = &self.pki;
        vec![
            // Nodes and pods reach the API server on the node network (pods through the
            // `kubernetes` Service, whose endpoint is the advertised address).
            format!("--bind-address={}", network::HOST_IP),
            format!("--advertise-address={}", network::HOST_IP),
            format!("--secure-port={APISERVER_PORT}"),
            format!("--etcd-servers=http://127.0.0.1:{}", ports.etcd_client),
            format!("--tls-cert-file={}", Self::path(pki.apiserver_cert())),
            format!("--tls-private-key-file={}", Self::path(pki.apiserver_key())),
            format!("--client-ca-file={}", Self::path(pki.ca_cert())),
            "--authorization-mode=Node,RBAC".into(),
            format!("--service-cluster-ip-range={}", network::SERVICE_CIDR),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!(
                "--service-account-signing-key-file={}",
                Self::path(pki.service_account_key())
            ),
            format!(
                "--service-account-key-file={}",
                Self::path(pki.service_account_pub())
            ),
            "--api-audiences=https://kubernetes.default.svc.cluster.local".into(),
            "--enable-admission-plugins=NamespaceLifecycle,LimitRanger,ServiceAccount,\
             DefaultStorageClass,DefaultTolerationSeconds,NodeRestriction,Priority,\
             MutatingAdmissionWebhook,ValidatingAdmissionWebhook,ResourceQuota"
                .into(),
            "--allow-privileged=true".into(),
            // Webhooks and aggregated APIs are dialled at their pod endpoints: the host
            // runs no kube-proxy, so it cannot reach Service addresses.
            "--enable-aggregator-routing=true".into(),
            // Logs and exec go to the node's InternalIP only (no hostname lookups).
            "--kubelet-preferred-address-types=InternalIP".into(),
            format!(
                "--kubelet-client-certificate={}",
                Self::path(pki.client_cert(&pki::KUBELET_CLIENT))
            ),
            format!(
                "--kubelet-client-key={}",
                Self::path(pki.client_key(&pki::KUBELET_CLIENT))
            ),
            // Front proxy: lets aggregated API servers and the controller-manager/scheduler
            // authenticate requests the API server forwards.
            format!(
                "--requestheader-client-ca-file={}",
                Self::path(pki.front_proxy_ca_cert())
            ),
            "--requestheader-allowed-names=front-proxy-client".into(),
            "--requestheader-username-headers=X-Remote-User".into(),
            "--requestheader-group-headers=X-Remote-Group".into(),
            "--requestheader-extra-headers-prefix=X-Remote-Extra-".into(),
            format!(
                "--proxy-client-cert-file={}",
                Self::path(pki.client_cert(&pki::FRONT_PROXY_CLIENT))
            ),
            format!(
                "--proxy-client-key-file={}",
                Self::path(pki.client_key(&pki::FRONT_PROXY_CLIENT))
            ),
            "--profiling=false".into(),
        ]
    }

    fn component_args(&self, who: &pki::ClientIdentity, port: u16) -> Vec<String> {
        let kubeconfig = Self::path(self.kubeconfig(who));
        vec![
            format!("--kubeconfig={kubeconfig}"),
            format!("--authentication-kubeconfig={kubeconfig}"),
            format!("--authorization-kubeconfig={kubeconfig}"),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={port}"),
            "--leader-elect=false".into(),
            "--profiling=false".into(),
        ]
    }

    fn controller_manager_args(&self, ports: Ports) -> Vec<String> {
        let pki = &self.pki;
        let mut args = self.component_args(&pki::CONTROLLER_MANAGER, ports.controller_manager);
        args.extend([
            "--controllers=*".into(),
            "--use-service-account-credentials=true".into(),
            format!(
                "--service-account-private-key-file={}",
                Self::path(pki.service_account_key())
            ),
            format!("--root-ca-file={}", Self::path(pki.ca_cert())),
            format!("--cluster-signing-cert-file={}", Self::path(pki.ca_cert())),
            format!("--cluster-signing-key-file={}", Self::path(pki.ca_key())),
            format!("--service-cluster-ip-range={}", network::SERVICE_CIDR),
        ]);
        args
    }

    /// kubectl against this cluster as admin.
    fn kubectl(&self, args: &[&str]) -> Result<String> {
        util::output(
            Command::new(kubectl_path())
                .arg(format!(
                    "--kubeconfig={}",
                    self.kubeconfig(&pki::ADMIN).display()
                ))
                .arg("--request-timeout=10s")
                .args(args),
        )
    }

    fn apiserver_ready(&self) -> bool {
        self.kubectl(&["get", "--raw", "/readyz"])
            .is_ok_and(|out| out.trim() == "ok")
    }

    fn ready_nodes(&self) -> Result<NodeSummary> {
        let json = self.kubectl(&["get", "nodes", "-o", "json"])?;
        NodeSummary::from_json(&json)
    }
}

/// curl on loopback; a test fixture tool that `up` installs from Debian when missing.
fn http_ok(url: &str, expect: &str) -> bool {
    util::output(Command::new("curl").args(["-sS", "-k", "--max-time", "5", url]))
        .is_ok_and(|body| body.contains(expect))
}

fn etcd_healthy(ports: Ports) -> bool {
    http_ok(
        &format!("http://127.0.0.1:{}/health", ports.etcd_client),
        "\"health\":\"true\"",
    )
}

fn healthz(port: u16) -> bool {
    http_ok(&format!("https://127.0.0.1:{port}/healthz"), "ok")
}

/// The API server's URL, for kubeconfigs.
fn server_url() -> String {
    format!("https://{}:{APISERVER_PORT}", network::HOST_IP)
}

/// Starts the local cluster, or checks it when it already runs.
pub fn up() -> Result<()> {
    network::check_prerequisites()?;
    ensure_binaries()?;
    let node_bins = nodes::NodeBinaries::ensure()?;
    util::ensure_apt(&[("curl", "curl")])?;
    let cluster = Cluster::new()?;
    let state = &cluster.state;
    fs::create_dir_all(state).with_context(|| format!("cannot create {}", state.display()))?;
    fs::write(
        state.join(STATE_MARKER),
        "local cluster state (cargo xtask cluster)\n",
    )?;
    let ports = Ports::load_or_pick(state)?;

    cluster
        .pki
        .ensure()
        .context("cannot generate certificates")?;
    let server = server_url();
    for who in [&pki::ADMIN, &pki::CONTROLLER_MANAGER, &pki::SCHEDULER] {
        cluster
            .pki
            .write_kubeconfig(&cluster.kubeconfig(who), who, &server)?;
    }
    // The API server binds the node network's host address.
    let nets: Vec<network::NodeNet> = cluster.nodes.iter().map(|n| n.spec.net.clone()).collect();
    network::up(&nets)?;

    if cluster.etcd.running_pid().is_none() {
        if !process::port_is_free(ports.etcd_client) {
            bail!(
                "127.0.0.1:{} is taken by another process; run `cargo xtask cluster down` or free the port",
                ports.etcd_client
            );
        }
        cluster.etcd.start(&cluster.etcd_args(ports))?;
    }
    cluster
        .etcd
        .wait_until("etcd health", ETCD_TIMEOUT, || etcd_healthy(ports))?;

    if cluster.apiserver.running_pid().is_none() {
        if std::net::TcpListener::bind((network::HOST_IP, APISERVER_PORT)).is_err() {
            bail!(
                "{}:{APISERVER_PORT} is taken by a process this cluster did not start; stop it first",
                network::HOST_IP
            );
        }
        cluster.apiserver.start(&cluster.apiserver_args(ports))?;
    }
    cluster
        .apiserver
        .wait_until("kube-apiserver /readyz", APISERVER_TIMEOUT, || {
            cluster.apiserver_ready()
        })?;

    if cluster.controller_manager.running_pid().is_none() {
        cluster
            .controller_manager
            .start(&cluster.controller_manager_args(ports))?;
    }
    if cluster.scheduler.running_pid().is_none() {
        cluster
            .scheduler
            .start(&cluster.component_args(&pki::SCHEDULER, ports.scheduler))?;
    }
    cluster.controller_manager.wait_until(
        "kube-controller-manager /healthz",
        CONTROLLER_TIMEOUT,
        || healthz(ports.controller_manager),
    )?;
    cluster
        .scheduler
        .wait_until("kube-scheduler /healthz", CONTROLLER_TIMEOUT, || {
            healthz(ports.scheduler)
        })?;
    // Pods are refused until the service-account controller created the namespace's
    // default ServiceAccount; waiting here also proves the controller-manager works.
    cluster.controller_manager.wait_until(
        "the default ServiceAccount",
        CONTROLLER_TIMEOUT,
        || {
            cluster
                .kubectl(&[
                    "-n",
                    "default",
                    "get",
                    "serviceaccount",
                    "default",
                    "-o",
                    "name",
                ])
                .is_ok()
        },
    )?;

    skewed_clock::prepare(state, &node_bins.containerd.join("ctr"))?;
    // What the nodes' NetworkPolicy agents may read, before they start.
    let rbac = state.join("kube-router-rbac.yaml");
    fs::write(&rbac, netpol::rbac_manifest())?;
    cluster.kubectl(&["apply", "--server-side", "-f", &Cluster::path(rbac)])?;
    nodes::up(&cluster.nodes, &cluster.pki, &node_bins, &server)?;
    wait_for_nodes(&cluster)?;
    nodes::start_network_policies(&cluster.nodes)?;
    start_dns(&cluster)?;
    let runtime_class = state.join("runtime-class.yaml");
    fs::write(&runtime_class, skewed_clock::runtime_class_manifest())?;
    cluster.kubectl(&[
        "apply",
        "--server-side",
        "-f",
        &Cluster::path(runtime_class),
    ])?;
    println!("local cluster is up ({EXPECTED_NODES} nodes)");
    println!("  kubeconfig: {}", kubeconfig_path().display());
    println!("  kubectl:    {}", kubectl_path().display());
    println!("  logs:       {}", state.join("logs").display());
    Ok(())
}

/// Waits until every node is registered, Ready and labelled with its region and zone.
fn wait_for_nodes(cluster: &Cluster) -> Result<()> {
    let first = &cluster.nodes.first().context("no nodes")?.kubelet;
    let mut summary = NodeSummary::default();
    first
        .wait_until(
            &format!("{EXPECTED_NODES} Ready nodes with region and zone labels"),
            NODES_TIMEOUT,
            || {
                if let Ok(s) = cluster.ready_nodes() {
                    summary = s;
                }
                summary.ready_labelled >= EXPECTED_NODES
                    || cluster
                        .nodes
                        .iter()
                        .flat_map(nodes::Node::registration_components)
                        .any(|c| c.running_pid().is_none())
            },
        )
        .and_then(|()| {
            for node in &cluster.nodes {
                for component in node.registration_components() {
                    if component.running_pid().is_none() {
                        bail!(
                            "{} exited; see {}\n{}",
                            component.name,
                            component.log_file.display(),
                            component.log_tail()
                        );
                    }
                }
            }
            Ok(())
        })
        .with_context(|| {
            format!(
                "only {} of {EXPECTED_NODES} nodes are Ready and labelled",
                summary.ready_labelled
            )
        })
}

/// Deploys CoreDNS and waits until it serves.
fn start_dns(cluster: &Cluster) -> Result<()> {
    apply_and_roll_out(
        cluster,
        "coredns.yaml",
        &dns::manifest(),
        "deployment/coredns",
    )
    .context("cluster DNS (CoreDNS) did not become available")
}

/// Applies `manifest` (kept as `file` in the state directory) and waits for `workload`'s
/// rollout in kube-system.
fn apply_and_roll_out(cluster: &Cluster, file: &str, manifest: &str, workload: &str) -> Result<()> {
    let path = cluster.state.join(file);
    fs::write(&path, manifest)?;
    cluster.kubectl(&["apply", "--server-side", "-f", &Cluster::path(path)])?;
    util::output(
        Command::new(kubectl_path())
            .arg(format!(
                "--kubeconfig={}",
                cluster.kubeconfig(&pki::ADMIN).display()
            ))
            .args(["-n", "kube-system", "rollout", "status", workload])
            .arg(format!("--timeout={}s", ROLLOUT_TIMEOUT.as_secs())),
    )?;
    Ok(())
}

/// Stops the cluster and removes its state directory.
pub fn down() -> Result<()> {
    down_with(false)
}

fn down_with(keep_state: bool) -> Result<()> {
    let cluster = Cluster::new()?;
    let mut failures = Vec::new();
    // Nodes first (they hold containers, mounts and namespaces), then the control plane in
    // reverse start order.
    if let Err(e) = nodes::down(&cluster.nodes) {
        failures.push(format!("{e:#}"));
    }
    for component in cluster.control_plane().into_iter().rev() {
        if let Err(e) = component.stop(Duration::from_secs(30)) {
            failures.push(format!("{e:#}"));
        }
    }
    if !failures.is_empty() {
        bail!("some components did not stop:\n{}", failures.join("\n"));
    }
    let state = &cluster.state;
    if keep_state {
        println!("local cluster stopped; state kept in {}", state.display());
    } else if state.join(STATE_MARKER).is_file() {
        fs::remove_dir_all(state).with_context(|| format!("cannot remove {}", state.display()))?;
        println!("local cluster stopped; removed {}", state.display());
    } else if state.exists() {
        println!(
            "local cluster stopped; {} is not a cluster state dir, left alone",
            state.display()
        );
    } else {
        println!("local cluster is not running");
    }
    Ok(())
}

fn status() -> Result<()> {
    let cluster = Cluster::new()?;
    let Some(ports) = Ports::load(&cluster.state) else {
        println!(
            "local cluster: not set up ({} has no state)",
            cluster.state.display()
        );
        return Ok(());
    };
    let health = |c: &Component, healthy: &dyn Fn() -> bool| -> bool {
        let pid = c.running_pid();
        let ok = pid.is_some() && healthy();
        let state = match (pid, ok) {
            (None, _) => "not running".to_string(),
            (Some(pid), true) => format!("healthy (pid {pid})"),
            (Some(pid), false) => format!("running but unhealthy (pid {pid})"),
        };
        println!("{:<34} {state:<36} log: {}", c.name, c.log_file.display());
        ok
    };
    let mut all = true;
    all &= health(&cluster.etcd, &|| etcd_healthy(ports));
    all &= health(&cluster.apiserver, &|| cluster.apiserver_ready());
    all &= health(&cluster.controller_manager, &|| {
        healthz(ports.controller_manager)
    });
    all &= health(&cluster.scheduler, &|| healthz(ports.scheduler));
    // Node processes: their Nodes' readiness below is their health.
    for component in cluster.nodes.iter().flat_map(nodes::Node::components) {
        all &= health(component, &|| true);
    }
    if let Ok(nodes) = cluster.ready_nodes() {
        println!(
            "{:<34} {} of {} Ready with region/zone labels (want {EXPECTED_NODES})",
            "nodes", nodes.ready_labelled, nodes.total
        );
    }
    println!("kubeconfig: {}", kubeconfig_path().display());
    if !all {
        bail!("the cluster is not healthy; `cargo xtask cluster up` restarts missing components");
    }
    Ok(())
}

/// Counts of registered nodes and of those that are Ready and carry both topology labels.
#[derive(Default, Debug, PartialEq)]
struct NodeSummary {
    total: usize,
    ready_labelled: usize,
}

impl NodeSummary {
    fn from_json(json: &str) -> Result<NodeSummary> {
        let list: serde_json::Value =
            serde_json::from_str(json).context("kubectl returned invalid JSON for nodes")?;
        let items = list
            .get("items")
            .and_then(|v| v.as_array())
            .cloned()
            .unwrap_or_default();
        let ready_labelled = items
            .iter()
            .filter(|node| {
                let labels = &node["metadata"]["labels"];
                let labelled =
                    labels.get(REGION_LABEL).is_some() && labels.get(ZONE_LABEL).is_some();
                let ready = node["status"]["conditions"]
                    .as_array()
                    .is_some_and(|conds| {
                        conds
                            .iter()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    });
                labelled && ready
            })
            .count();
        Ok(NodeSummary {
            total: items.len(),
            ready_labelled,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_summary_counts_only_ready_labelled_nodes() -> Result<()> {
        let json = r#"{"items":[
          {"metadata":{"labels":{"topology.kubernetes.io/region":"eu","topology.kubernetes.io/zone":"eu-a"}},
           "status":{"conditions":[{"type":"Ready","status":"True"}]}},
          {"metadata":{"labels":{"topology.kubernetes.io/region":"eu"}},
           "status":{"conditions":[{"type":"Ready","status":"True"}]}},
          {"metadata":{"labels":{"topology.kubernetes.io/region":"us","topology.kubernetes.io/zone":"us-a"}},
           "status":{"conditions":[{"type":"Ready","status":"False"}]}}
        ]}"#;
        assert_eq!(
            NodeSummary::from_json(json)?,
            NodeSummary {
                total: 3,
                ready_labelled: 1
            }
        );
        assert!(NodeSummary::from_json("not json").is_err());
        Ok(())
    }

    #[test]
    fn every_address_the_control_plane_uses_is_local() -> Result<()> {
        let cluster = Cluster::new()?;
        let ports = Ports {
            etcd_client: 2379,
            etcd_peer: 2380,
            controller_manager: 10257,
            scheduler: 10259,
        };
        let mut args = cluster.etcd_args(ports);
        args.extend(cluster.apiserver_args(ports));
        args.extend(cluster.controller_manager_args(ports));
        for arg in args {
            for scheme in ["http://", "https://"] {
                if let Some((_, rest)) = arg.split_once(scheme) {
                    assert!(
                        rest.starts_with("127.0.0.1:")
                            || rest.starts_with("kubernetes.default.svc"),
                        "{arg}"
                    );
                }
            }
            if let Some(addr) = arg.strip_prefix("--bind-address=") {
                assert!(addr == "127.0.0.1" || addr == network::HOST_IP, "{arg}");
            }
        }
        Ok(())
    }
}
