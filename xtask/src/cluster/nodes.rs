//! The local cluster's nodes: each is a network namespace (see `network.rs`) running its own
//! containerd (with runc and Debian's CNI plugins), an upstream kubelet, kube-proxy in
//! iptables mode and kube-router's firewall for NetworkPolicies (`netpol.rs`), with the
//! images this project builds imported into its containerd.
//!
//! Host specifics handled here: the host has cgroup v1 and no systemd, so kubelets use the
//! cgroupfs driver with `failCgroupV1: false` under a cgroup root created in every
//! hierarchy; root lacks CAP_SYS_RESOURCE, so containerd clamps oom_score_adj
//! (`restrict_oom_score_adj`); swap and disk-pressure eviction are off as kind sets them.

use anyhow::{Context, Result, bail};
use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::netpol;
use super::network::{self, NodeNet};
use super::pki::{self, ClientIdentity, Pki};
use super::process::Component;
use super::skewed_clock;
use crate::images::{self, Image};
use crate::util;

pub const REGIONS: [&str; 2] = ["region-a", "region-b"];
pub const ZONES_PER_REGION: u8 = 3;
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const CONTAINERD_TIMEOUT: Duration = Duration::from_secs(60);
/// kube-router syncs its chains within seconds of starting; a slow machine gets a minute.
const NETWORK_POLICY_TIMEOUT: Duration = Duration::from_secs(60);

/// One node: its name, topology labels and network place.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub name: String,
    pub region: String,
    pub zone: String,
    pub net: NodeNet,
}

/// Two regions of three zones, one node per zone.
pub fn specs() -> Vec<NodeSpec> {
    let mut specs = Vec::new();
    for region in REGIONS {
        for zone in 1..=ZONES_PER_REGION {
            let name = format!("meridian-{region}-{zone}");
            let index = u8::try_from(specs.len() + 1).unwrap_or(u8::MAX);
            specs.push(NodeSpec {
                net: NodeNet { index },
                zone: format!("{region}-{zone}"),
                region: region.to_string(),
                name,
            });
        }
    }
    specs
}

/// Binaries every node runs.
pub struct NodeBinaries {
    pub kube: PathBuf,
    pub containerd: PathBuf,
    pub runc: PathBuf,
    pub kube_router: PathBuf,
}

impl NodeBinaries {
    /// Builds whatever is missing.
    pub fn ensure() -> Result<Self> {
        Ok(NodeBinaries {
            kube: super::binaries::ensure_kube_node()?,
            containerd: super::binaries::ensure_containerd()?,
            runc: super::binaries::ensure_runc()?,
            kube_router: super::binaries::ensure_kube_router()?,
        })
    }

    /// Where they are (or will be), without building anything.
    pub fn locate() -> Self {
        NodeBinaries {
            kube: super::binaries::kube_node_bin_dir(),
            containerd: super::binaries::containerd_dir(),
            runc: super::binaries::runc_dir().join("runc"),
            kube_router: super::binaries::kube_router_dir().join("kube-router"),
        }
    }
}

/// One node's processes and files, below `<state>/nodes/<name>`.
pub struct Node {
    pub spec: NodeSpec,
    dir: PathBuf,
    /// The cluster's state directory (what every node shares).
    cluster_state: PathBuf,
    pub containerd: Component,
    pub kubelet: Component,
    pub kube_proxy: Component,
    /// The NetworkPolicy agent (`netpol.rs`).
    pub kube_router: Component,
}

impl Node {
    pub fn new(state: &Path, spec: NodeSpec, bins: &NodeBinaries) -> Self {
        let dir = state.join("nodes").join(&spec.name);
        let netns = spec.net.netns_path();
        let path = format!(
            "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            bins.containerd.display()
        );
        Node {
            containerd: Component::new(
                state,
                format!("{}-containerd", spec.name),
                bins.containerd.join("containerd"),
            )
            .in_netns(netns.clone())
            // The shim is found on PATH.
            .env("PATH", path),
            kubelet: Component::new(
                state,
                format!("{}-kubelet", spec.name),
                bins.kube.join("kubelet"),
            )
            .in_netns(netns.clone()),
            kube_proxy: Component::new(
                state,
                format!("{}-kube-proxy", spec.name),
                bins.kube.join("kube-proxy"),
            )
            .in_netns(netns.clone()),
            kube_router: Component::new(
                state,
                format!("{}-kube-router", spec.name),
                bins.kube_router.clone(),
            )
            .in_netns(netns),
            dir,
            cluster_state: state.to_path_buf(),
            spec,
        }
    }

    fn containerd_socket(&self) -> PathBuf {
        self.dir.join("containerd").join("containerd.sock")
    }

    fn cgroup_root(&self) -> String {
        format!("/{}", self.spec.name)
    }

    fn containerd_config(&self, runc: &Path) -> String {
        let c = self.dir.join("containerd");
        format!(
            r#"version = 3
root = "{root}"
state = "{state}"
# One NRI socket per machine: several containerds would fight over it.
disabled_plugins = ["io.containerd.nri.v1.nri"]

[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"

[plugins.'io.containerd.internal.v1.opt']
  path = "{opt}"
[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "{pause}"
[plugins.'io.containerd.cri.v1.runtime']
  # Root here lacks CAP_SYS_RESOURCE: never ask for a lower oom_score_adj than ours.
  restrict_oom_score_adj = true
  # Pod network namespaces below this node's state, not in the host's /run/netns.
  netns_mounts_under_state_dir = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
      BinaryName = "{runc}"
{skewed_clock}  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "{cni}"
[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
"#,
            root = c.join("root").display(),
            state = c.join("state").display(),
            sock = self.containerd_socket().display(),
            opt = c.join("opt").display(),
            pause = format_args!("{}:{}", images::PAUSE_REPOSITORY, images::PAUSE_TAG),
            runc = runc.display(),
            skewed_clock = skewed_clock::containerd_runtime(&self.cluster_state, runc),
            cni = self.dir.join("cni").display(),
        )
    }

    fn kubelet_config(&self, pki: &Pki) -> String {
        let sock = self.containerd_socket();
        format!(
            r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This host has cgroup v1 and no systemd.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: {cgroup_root}
containerRuntimeEndpoint: unix://{sock}
podLogsDir: {logs}
address: {ip}
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
clusterDNS: [{dns}]
clusterDomain: cluster.local
# Pods with dnsPolicy Default get no resolver: nothing resolves outside the cluster.
resolvConf: ""
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: {ca}}}
authorization:
  mode: Webhook
# As kind sets them: no swap check, no disk-pressure eviction, no image GC on a shared disk.
failSwapOn: false
imageGCHighThresholdPercent: 100
evictionHard: {{nodefs.available: "0%", nodefs.inodesFree: "0%", imagefs.available: "0%"}}
localStorageCapacityIsolation: false
serializeImagePulls: false
"#,
            cgroup_root = self.cgroup_root(),
            sock = sock.display(),
            logs = self.dir.join("pod-logs").display(),
            ip = self.spec.net.ip(),
            dns = network::DNS_SERVICE_IP,
            ca = pki.ca_cert().display(),
        )
    }

    fn kube_proxy_config(&self, kubeconfig: &Path) -> String {
        format!(
            r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection:
  kubeconfig: {kubeconfig}
hostnameOverride: {name}
bindAddress: {ip}
clusterCIDR: {pods}
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
# Conntrack limits are host-wide: leave them as they are.
conntrack:
  maxPerCore: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
"#,
            kubeconfig = kubeconfig.display(),
            name = self.spec.name,
            ip = self.spec.net.ip(),
            pods = network::POD_CIDR,
        )
    }

    /// Writes every config file of this node.
    fn write_configs(&self, pki: &Pki, bins: &NodeBinaries, server: &str) -> Result<()> {
        util::write_file(
            &self.dir.join("containerd").join("config.toml"),
            &self.containerd_config(&bins.runc),
        )?;
        util::write_file(
            &self.dir.join("cni").join("10-meridian.conflist"),
            &network::cni_conflist(&self.spec.net, &self.dir.join("cni-ipam")),
        )?;
        let kubelet_kubeconfig = self.dir.join("kubelet.kubeconfig");
        pki.write_kubeconfig(
            &kubelet_kubeconfig,
            &ClientIdentity::node(&self.spec.name),
            server,
        )?;
        util::write_file(&self.dir.join("kubelet.yaml"), &self.kubelet_config(pki))?;
        let proxy_kubeconfig = self.dir.join("kube-proxy.kubeconfig");
        pki.write_kubeconfig(&proxy_kubeconfig, &pki::KUBE_PROXY, server)?;
        pki.write_kubeconfig(&self.kube_router_kubeconfig(), &pki::KUBE_ROUTER, server)?;
        util::write_file(
            &self.dir.join("kube-proxy.yaml"),
            &self.kube_proxy_config(&proxy_kubeconfig),
        )
    }

    /// The kubelet's cgroup root in every v1 hierarchy (and the unified one), with the
    /// cpuset of the host so the cpuset controller lets tasks in.
    fn ensure_cgroups(&self) -> Result<()> {
        for hierarchy in cgroup_hierarchies()? {
            let dir = hierarchy.join(&self.spec.name);
            fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create cgroup {}", dir.display()))?;
            for file in ["cpuset.cpus", "cpuset.mems"] {
                let parent = hierarchy.join(file);
                if parent.is_file() {
                    let value = fs::read_to_string(&parent)?;
                    let current = fs::read_to_string(dir.join(file)).unwrap_or_default();
                    if current.trim().is_empty() {
                        fs::write(dir.join(file), value.trim()).with_context(|| {
                            format!("cannot write {}", dir.join(file).display())
                        })?;
                    }
                }
            }
        }
        Ok(())
    }

    fn ctr(&self) -> Command {
        let mut cmd = Command::new(self.containerd.program.with_file_name("ctr"));
        cmd.arg("--address")
            .arg(self.containerd_socket())
            .args(["--namespace", "k8s.io"]);
        cmd
    }

    /// Starts containerd (unless running) and waits until it answers.
    fn start_containerd(&self) -> Result<()> {
        if self.containerd.running_pid().is_none() {
            self.containerd.start(&[
                "--config".into(),
                path(&self.dir.join("containerd").join("config.toml")),
            ])?;
        }
        self.containerd.wait_until(
            &format!("{}'s containerd", self.spec.name),
            CONTAINERD_TIMEOUT,
            || util::run_quiet(self.ctr().arg("version")).is_ok(),
        )
    }

    fn import(&self, image: &Image) -> Result<()> {
        util::run_quiet(
            self.ctr()
                .args(["images", "import", "--base-name", &image.repository])
                .arg(&image.archive),
        )
        .with_context(|| {
            format!(
                "cannot import {} into {}'s containerd",
                image.archive.display(),
                self.spec.name
            )
        })
    }

    fn start_kubelet(&self) -> Result<()> {
        if self.kubelet.running_pid().is_some() {
            return Ok(());
        }
        let labels = format!(
            "topology.kubernetes.io/region={},topology.kubernetes.io/zone={}",
            self.spec.region, self.spec.zone
        );
        self.kubelet.start(&[
            format!("--config={}", path(&self.dir.join("kubelet.yaml"))),
            format!(
                "--kubeconfig={}",
                path(&self.dir.join("kubelet.kubeconfig"))
            ),
            format!("--root-dir={}", path(&self.dir.join("kubelet"))),
            format!("--cert-dir={}", path(&self.dir.join("kubelet-pki"))),
            format!("--hostname-override={}", self.spec.name),
            format!("--node-ip={}", self.spec.net.ip()),
            format!("--node-labels={labels}"),
            "--v=1".into(),
        ])?;
        Ok(())
    }

    fn start_kube_proxy(&self) -> Result<()> {
        if self.kube_proxy.running_pid().is_some() {
            return Ok(());
        }
        self.kube_proxy.start(&[format!(
            "--config={}",
            path(&self.dir.join("kube-proxy.yaml"))
        )])?;
        Ok(())
    }

    fn kube_router_kubeconfig(&self) -> PathBuf {
        self.dir.join("kube-router.kubeconfig")
    }

    fn start_kube_router(&self) -> Result<()> {
        if self.kube_router.running_pid().is_some() {
            return Ok(());
        }
        self.kube_router.start(&netpol::kube_router_args(
            &self.spec.name,
            &self.kube_router_kubeconfig(),
        ))?;
        Ok(())
    }

    /// What runs before the node registers (the NetworkPolicy agent starts after).
    pub fn registration_components(&self) -> [&Component; 3] {
        [&self.kube_proxy, &self.kubelet, &self.containerd]
    }

    /// Everything this node runs, in stop order.
    pub fn components(&self) -> [&Component; 4] {
        [
            &self.kube_router,
            &self.kube_proxy,
            &self.kubelet,
            &self.containerd,
        ]
    }

    /// Kills the node and everything it ran (containers, shims, mounts, cgroups) and
    /// removes its files. Containers are killed, not stopped: the cluster goes away whole.
    pub fn destroy(&self) -> Result<()> {
        for component in [&self.kube_router, &self.kube_proxy, &self.kubelet] {
            component.stop(Duration::from_secs(10))?;
        }
        // Containers live in the kubelet's cgroup root, shims in the node's namespace.
        kill_until_gone(&format!("containers in cgroup {}", self.spec.name), || {
            cgroup_tasks(&self.spec.name)
        })?;
        let netns = self.spec.net.netns_path();
        kill_until_gone(&format!("processes in {}", netns.display()), || {
            netns_processes(&netns)
        })?;
        self.containerd.stop(Duration::from_secs(10))?;
        unmount_below(&self.dir)?;
        remove_cgroups(&self.spec.name)?;
        if self.dir.exists() {
            fs::remove_dir_all(&self.dir)
                .with_context(|| format!("cannot remove {}", self.dir.display()))?;
        }
        Ok(())
    }
}

/// Brings every node up (on a network `network::up` made): containerd with the images,
/// kubelet, kube-proxy. The NetworkPolicy agents follow once the nodes are registered
/// ([`start_network_policies`]).
pub fn up(nodes: &[Node], pki: &Pki, bins: &NodeBinaries, server: &str) -> Result<()> {
    let images = images::build_all()?;
    for node in nodes {
        node.write_configs(pki, bins, server)?;
        node.ensure_cgroups()?;
        node.start_containerd()?;
        let started = Instant::now();
        for image in &images {
            node.import(image)?;
        }
        eprintln!(
            "{}: containerd up, {} images imported in {:.1}s",
            node.spec.name,
            images.len(),
            started.elapsed().as_secs_f64()
        );
        node.start_kubelet()?;
        node.start_kube_proxy()?;
    }
    Ok(())
}

/// Starts kube-router's firewall on every node (it needs its Node object, so after the
/// kubelets registered; its RBAC applied before) and waits until each one has installed
/// its chains.
pub fn start_network_policies(nodes: &[Node]) -> Result<()> {
    for node in nodes {
        node.start_kube_router()?;
    }
    for node in nodes {
        let netns = node.spec.net.netns();
        node.kube_router.wait_until(
            &format!("{}: kube-router's NetworkPolicy chains", node.spec.name),
            NETWORK_POLICY_TIMEOUT,
            || {
                util::run_quiet(Command::new("ip").args([
                    "netns",
                    "exec",
                    &netns,
                    "iptables",
                    "-S",
                    "KUBE-ROUTER-FORWARD",
                ]))
                .is_ok()
            },
        )?;
    }
    Ok(())
}

/// Destroys every node, then the network.
pub fn down(nodes: &[Node]) -> Result<()> {
    let mut failures = Vec::new();
    for node in nodes {
        if let Err(e) = node.destroy() {
            failures.push(format!("{}: {e:#}", node.spec.name));
        }
    }
    let nets: Vec<NodeNet> = nodes.iter().map(|n| n.spec.net.clone()).collect();
    if let Err(e) = network::down(&nets) {
        failures.push(format!("{e:#}"));
    }
    if !failures.is_empty() {
        bail!(
            "some nodes did not go away cleanly:\n{}",
            failures.join("\n")
        );
    }
    Ok(())
}

fn path(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Every mounted cgroup hierarchy (v1 controllers, named ones and the unified v2 one).
fn cgroup_hierarchies() -> Result<Vec<PathBuf>> {
    let mounts = fs::read_to_string("/proc/self/mounts")?;
    let hierarchies: Vec<PathBuf> = mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let _source = fields.next()?;
            let target = fields.next()?;
            let fstype = fields.next()?;
            (matches!(fstype, "cgroup" | "cgroup2") && target.starts_with(CGROUP_ROOT))
                .then(|| PathBuf::from(target))
        })
        .collect();
    if hierarchies.is_empty() {
        bail!("no cgroup hierarchy is mounted under {CGROUP_ROOT}");
    }
    Ok(hierarchies)
}

/// The cgroup directories below `root` in `hierarchy`, deepest first.
fn cgroup_dirs_deepest_first(dir: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                cgroup_dirs_deepest_first(&entry.path(), out);
            }
        }
    }
    out.push(dir.to_path_buf());
}

/// SIGKILLs whatever `pids` finds until it finds nothing (5 s at most).
fn kill_until_gone(what: &str, pids: impl Fn() -> Result<Vec<i32>>) -> Result<()> {
    for _ in 0..20 {
        let found = pids()?;
        if found.is_empty() {
            return Ok(());
        }
        for pid in found {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    bail!("{what} survived SIGKILL")
}

/// Every process in the cgroup `root` or below, in any hierarchy (a node's containers).
fn cgroup_tasks(root: &str) -> Result<Vec<i32>> {
    let mut pids = Vec::new();
    for hierarchy in cgroup_hierarchies()? {
        let mut dirs = Vec::new();
        cgroup_dirs_deepest_first(&hierarchy.join(root), &mut dirs);
        for dir in dirs {
            let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            pids.extend(procs.lines().filter_map(|p| p.trim().parse::<i32>().ok()));
        }
    }
    Ok(pids)
}

/// Every process whose network namespace is `netns` (a node's containerd and its shims).
fn netns_processes(netns: &Path) -> Result<Vec<i32>> {
    let Ok(target) = fs::metadata(netns) else {
        return Ok(Vec::new());
    };
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc")?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if fs::metadata(entry.path().join("ns/net"))
            .is_ok_and(|m| m.ino() == target.ino() && m.dev() == target.dev())
        {
            pids.push(pid);
        }
    }
    Ok(pids)
}

/// Unmounts every mount at or below `dir`, deepest first (lazily: a container's last
/// process may still be exiting).
fn unmount_below(dir: &Path) -> Result<()> {
    let prefix = path(dir);
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
    let mut targets: Vec<String> = mountinfo
        .lines()
        .filter_map(|line| line.split_whitespace().nth(4))
        .map(|target| target.replace("\\040", " "))
        .filter(|target| target == &prefix || target.starts_with(&format!("{prefix}/")))
        .collect();
    targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
    targets.dedup();
    for target in targets {
        let _ = nix::mount::umount2(target.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
    Ok(())
}

fn remove_cgroups(root: &str) -> Result<()> {
    for hierarchy in cgroup_hierarchies()? {
        let mut dirs = Vec::new();
        let top = hierarchy.join(root);
        if !top.exists() {
            continue;
        }
        cgroup_dirs_deepest_first(&top, &mut dirs);
        for dir in dirs {
            fs::remove_dir(&dir)
                .with_context(|| format!("cannot remove cgroup {}", dir.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_regions_of_three_zones() {
        let specs = specs();
        assert_eq!(specs.len(), 6);
        assert_eq!(specs[0].name, "meridian-region-a-1");
        assert_eq!(specs[0].zone, "region-a-1");
        assert_eq!(specs[5].region, "region-b");
        assert_eq!(specs[5].net.index, 6);
    }
}
