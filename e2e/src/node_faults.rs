//! Faults done to the local cluster's real nodes from the test process, which runs on the
//! same machine as the nodes: a container's process found through its cgroup (the kubelets
//! use the cgroupfs driver, so every container has a cgroup directory named by its ID),
//! signalled in place; a node's processes found through the pid files `cargo xtask cluster`
//! keeps; a node's network namespace for packet drops.
//!
//! On kind or a remote cluster none of this is reachable; the helpers answer `None` and the
//! scenarios skip with the reason.

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Pod;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The pids cgroup hierarchy holds every container's processes (cgroup v1 here; the
/// unified hierarchy on a v2 host).
const PID_HIERARCHIES: [&str; 2] = ["/sys/fs/cgroup/pids", "/sys/fs/cgroup"];

/// The runtime's ID of `container` in `pod`, without the `containerd://` scheme.
pub fn container_id(pod: &Pod, container: &str) -> Option<String> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    let status = statuses.iter().find(|s| s.name == container)?;
    let id = status.container_id.as_deref()?;
    Some(id.split_once("://").map_or(id, |(_, id)| id).to_string())
}

/// The host pid of the container's first process (pid 1 in its pid namespace), when the
/// container runs on this machine.
pub fn container_pid(pod: &Pod, container: &str) -> Option<i32> {
    let cgroup = PID_HIERARCHIES
        .iter()
        .find_map(|root| container_cgroup(pod, container, Path::new(root)))?;
    let procs = fs::read_to_string(cgroup.join("cgroup.procs")).ok()?;
    procs
        .lines()
        .filter_map(|line| line.trim().parse::<i32>().ok())
        .find(|pid| is_namespace_init(*pid))
}

/// The container's cgroup directory in the hierarchy mounted at `hierarchy`
/// (`/sys/fs/cgroup/memory`, ...), when the container runs on this machine.
pub fn container_cgroup(pod: &Pod, container: &str, hierarchy: &Path) -> Option<PathBuf> {
    let id = container_id(pod, container)?;
    find_dir(hierarchy, &id, 8)
}

/// True when `pid` is pid 1 of its own pid namespace (the last NSpid field).
fn is_namespace_init(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("NSpid:"))
            .and_then(|ids| ids.split_whitespace().last())
            == Some("1")
    })
}

fn find_dir(dir: &Path, name: &str, depth: usize) -> Option<PathBuf> {
    let entries = fs::read_dir(dir).ok()?;
    let mut subdirs = Vec::new();
    for entry in entries.flatten() {
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if entry.file_name() == name {
            return Some(entry.path());
        }
        subdirs.push(entry.path());
    }
    if depth == 0 {
        return None;
    }
    subdirs
        .iter()
        .find_map(|sub| find_dir(sub, name, depth - 1))
}

/// The resident set of process `pid` in bytes (`VmRSS`).
pub fn process_rss(pid: i32) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .with_context(|| format!("no VmRSS for {pid}"))?;
    Ok(kib * 1024)
}

/// Sends `signal` (`-STOP`, `-CONT`, `-KILL`, ...) to `pid`.
pub fn signal(which: &str, pid: i32) -> Result<()> {
    let status = Command::new("kill")
        .args([which, &pid.to_string()])
        .status()
        .context("running kill")?;
    if !status.success() {
        bail!("kill {which} {pid} failed with {status}");
    }
    Ok(())
}

/// SIGSTOP on creation, SIGCONT when woken or dropped: a failing test must not leave a
/// frozen process behind.
pub struct Frozen {
    pid: i32,
    awake: bool,
}

impl Frozen {
    pub fn freeze(pid: i32) -> Result<Self> {
        signal("-STOP", pid)?;
        Ok(Self { pid, awake: false })
    }

    pub fn wake(mut self) -> Result<()> {
        self.awake = true;
        signal("-CONT", self.pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if !self.awake {
            let _ = signal("-CONT", self.pid);
        }
    }
}

/// Kills the container's first process with SIGKILL, as a crash or the kernel's OOM killer
/// would: the kubelet restarts the container in place (same pod, same IP, empty memory).
/// `None` when the container's process is not on this machine.
pub fn kill_container(pod: &Pod, container: &str) -> Result<Option<i32>> {
    let Some(pid) = container_pid(pod, container) else {
        return Ok(None);
    };
    signal("-KILL", pid)?;
    Ok(Some(pid))
}

/// How often the kubelet restarted `container` of `pod`.
pub fn restart_count(pod: &Pod, container: &str) -> i32 {
    pod.status
        .as_ref()
        .and_then(|status| status.container_statuses.as_ref())
        .and_then(|statuses| statuses.iter().find(|s| s.name == container))
        .map_or(0, |status| status.restart_count)
}

/// The local cluster's state directory (`cargo xtask cluster`): node pid files live below.
pub fn cluster_state_dir() -> PathBuf {
    std::env::var_os("MERIDIAN_CLUSTER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join("target").join("localkube"))
}

/// The pid of one of `node`'s processes (`kubelet`, `containerd`, `kube-proxy`) when the
/// local cluster on this machine runs it.
pub fn node_process(node: &str, component: &str) -> Option<i32> {
    let pid_file = cluster_state_dir()
        .join("pids")
        .join(format!("{node}-{component}.pid"));
    let pid: i32 = fs::read_to_string(pid_file).ok()?.trim().parse().ok()?;
    Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}

/// A node whose kubelet, containerd and kube-proxy are frozen (SIGSTOP): the API server
/// stops hearing from it (its Lease is not renewed) and nothing on it starts, stops or
/// restarts a container, while the containers it runs keep running. Thawed on
/// [`FrozenNode::thaw`] or drop. Combined with [`Partition`] it is a lost machine.
pub struct FrozenNode {
    processes: Vec<Frozen>,
}

impl FrozenNode {
    /// `None` when `node`'s processes are not on this machine.
    pub fn freeze(node: &str) -> Result<Option<Self>> {
        let mut processes = Vec::new();
        for component in ["kubelet", "containerd", "kube-proxy"] {
            let Some(pid) = node_process(node, component) else {
                return Ok(None);
            };
            processes.push(Frozen::freeze(pid)?);
        }
        Ok(Some(Self { processes }))
    }

    pub fn thaw(self) -> Result<()> {
        for process in self.processes {
            process.wake()?;
        }
        Ok(())
    }
}

/// The network namespace of the node whose address is `node_ip` (the local cluster's
/// nodes are `meridian-<n>` namespaces with the node IP on `eth0`).
pub fn node_netns(node_ip: &str) -> Option<String> {
    let entries = fs::read_dir("/run/netns").ok()?;
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| name.starts_with("meridian-"))
        .find(|name| {
            Command::new("ip")
                .args(["-n", name, "-o", "-4", "addr", "show", "dev", "eth0"])
                .output()
                .is_ok_and(|out| {
                    String::from_utf8_lossy(&out.stdout).contains(&format!("inet {node_ip}/"))
                })
        })
}

/// Packets dropped by iptables rules in node network namespaces: a node cut off from the
/// rest of the cluster ([`Partition::isolate`]), or one port's traffic cut on several
/// nodes ([`Partition::port`]). The rules go on [`Partition::heal`] or drop.
pub struct Partition {
    /// `(namespace, rule)` of every rule inserted, in order.
    rules: Vec<(String, Vec<String>)>,
}

impl Partition {
    /// Every packet between a node (with its pods) and the rest of the cluster dropped in
    /// the node's namespace: a network partition of one machine.
    pub fn isolate(netns: &str) -> Result<Self> {
        let rules = [
            ["INPUT", "-i", "eth0"],
            ["OUTPUT", "-o", "eth0"],
            ["FORWARD", "-i", "eth0"],
            // forwarded pod traffic leaving through eth0 as well
            ["FORWARD", "-o", "eth0"],
        ];
        Self::insert(rules.iter().map(|rule| (netns, &rule[..])))
    }

    /// Every TCP packet to or from `port` dropped where pod traffic is forwarded in each
    /// of `netns` (e.g. the nodes of one region and the link port: the region's links go
    /// silent while clients, replication and the operator still get through).
    pub fn port(netns: &[String], port: u16) -> Result<Self> {
        let port = port.to_string();
        let rules: Vec<(&str, [&str; 5])> = netns
            .iter()
            .flat_map(|namespace| {
                ["--dport", "--sport"].map(|direction| {
                    (
                        namespace.as_str(),
                        ["FORWARD", "-p", "tcp", direction, port.as_str()],
                    )
                })
            })
            .collect();
        Self::insert(
            rules
                .iter()
                .map(|(namespace, rule)| (*namespace, &rule[..])),
        )
    }

    /// Inserts each DROP rule; the ones inserted before a failure are removed on drop.
    fn insert<'a>(rules: impl Iterator<Item = (&'a str, &'a [&'a str])>) -> Result<Self> {
        let mut partition = Self { rules: Vec::new() };
        for (netns, rule) in rules {
            let rule: Vec<String> = rule.iter().map(|part| part.to_string()).collect();
            iptables_drop(netns, "-I", &rule)?;
            partition.rules.push((netns.to_string(), rule));
        }
        Ok(partition)
    }

    pub fn heal(mut self) -> Result<()> {
        self.remove_rules()
    }

    fn remove_rules(&mut self) -> Result<()> {
        while let Some((netns, rule)) = self.rules.pop() {
            iptables_drop(&netns, "-D", &rule)?;
        }
        Ok(())
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        let _ = self.remove_rules();
    }
}

/// `iptables -t mangle <action> <rule> -j DROP` in the network namespace `netns`. The
/// mangle table's chains run before the filter table's, where the NetworkPolicy agent
/// (kube-router) keeps its jump first and accepts what the policies allow: a DROP there
/// could end up behind that ACCEPT.
fn iptables_drop(netns: &str, action: &str, rule: &[String]) -> Result<()> {
    let status = Command::new("ip")
        .args(["netns", "exec", netns, "iptables", "-t", "mangle", action])
        .args(rule)
        .args(["-j", "DROP"])
        .status()
        .context("running iptables in the node's namespace")?;
    if !status.success() {
        bail!("iptables -t mangle {action} {rule:?} DROP in {netns} failed");
    }
    Ok(())
}

/// Whether the kubelet reports `container`'s last run as killed by the kernel's OOM killer.
pub fn oom_killed(pod: &Pod, container: &str) -> bool {
    pod.status
        .as_ref()
        .and_then(|status| status.container_statuses.as_ref())
        .and_then(|statuses| statuses.iter().find(|s| s.name == container))
        .and_then(|status| status.last_state.as_ref())
        .and_then(|state| state.terminated.as_ref())
        .is_some_and(|terminated| terminated.reason.as_deref() == Some("OOMKilled"))
}

/// A lost machine: the node's kubelet, containerd and kube-proxy frozen, every container on
/// it frozen (the cgroup freezer of the node's cgroup root), and every packet between its
/// namespace and the rest dropped. Nothing on it runs or answers until [`LostNode::restore`]
/// (or drop), when it comes back with the state it had, as a machine back from a hang.
pub struct LostNode {
    freezer: PathBuf,
    node: Option<FrozenNode>,
    partition: Option<Partition>,
}

impl LostNode {
    /// `None` when the node's processes or cgroups are not on this machine.
    pub fn lose(node: &str, netns: &str) -> Result<Option<Self>> {
        let freezer = Path::new("/sys/fs/cgroup/freezer").join(node);
        if !freezer.join("freezer.state").exists() {
            return Ok(None);
        }
        let Some(frozen) = FrozenNode::freeze(node)? else {
            return Ok(None);
        };
        let mut lost = Self {
            freezer,
            node: Some(frozen),
            partition: None,
        };
        fs::write(lost.freezer.join("freezer.state"), "FROZEN")
            .context("freezing the node's containers")?;
        lost.partition = Some(Partition::isolate(netns)?);
        Ok(Some(lost))
    }

    pub fn restore(mut self) -> Result<()> {
        self.thaw()
    }

    fn thaw(&mut self) -> Result<()> {
        if let Some(partition) = self.partition.take() {
            partition.heal()?;
        }
        fs::write(self.freezer.join("freezer.state"), "THAWED")
            .context("thawing the node's containers")?;
        if let Some(node) = self.node.take() {
            node.thaw()?;
        }
        Ok(())
    }
}

impl Drop for LostNode {
    fn drop(&mut self) {
        let _ = self.thaw();
    }
}

/// The container's memory limit set to `bytes` in its cgroup, below what the pod spec
/// allows: what it takes to make one container (not its whole StatefulSet) outgrow its
/// limit. The kubelet's next container for the pod gets the spec's limit again.
pub fn lower_memory_limit(pod: &Pod, container: &str, headroom: u64) -> Result<Option<u64>> {
    let Some(cgroup) = container_cgroup(pod, container, Path::new("/sys/fs/cgroup/memory")) else {
        return Ok(None);
    };
    let usage: u64 = fs::read_to_string(cgroup.join("memory.usage_in_bytes"))
        .context("reading the container's memory usage")?
        .trim()
        .parse()
        .context("memory.usage_in_bytes is not a number")?;
    let limit = usage + headroom;
    fs::write(cgroup.join("memory.limit_in_bytes"), limit.to_string())
        .context("lowering the container's memory limit")?;
    Ok(Some(limit))
}

/// A container held to `quota` of one core by the CFS bandwidth controller of its cgroup
/// (what a CPU limit does on a crowded node, far below what the pod spec allows); the
/// quota it had is put back on [`CpuThrottle::release`] or drop.
pub struct CpuThrottle {
    quota_file: PathBuf,
    before: String,
    released: bool,
}

impl CpuThrottle {
    /// `percent` of one core (at least 1). `None` when the container's cgroup is not on
    /// this machine.
    pub fn limit(pod: &Pod, container: &str, percent: u32) -> Result<Option<Self>> {
        let Some(cgroup) = CPU_HIERARCHIES
            .iter()
            .find_map(|root| container_cgroup(pod, container, Path::new(root)))
        else {
            return Ok(None);
        };
        let quota_file = cgroup.join("cpu.cfs_quota_us");
        let period: u64 = fs::read_to_string(cgroup.join("cpu.cfs_period_us"))
            .context("reading the container's CFS period")?
            .trim()
            .parse()
            .context("cpu.cfs_period_us is not a number")?;
        let before = fs::read_to_string(&quota_file).context("reading the CFS quota")?;
        // The kernel's smallest quota is 1 ms per period.
        let quota = (period * u64::from(percent.max(1)) / 100).max(1000);
        fs::write(&quota_file, quota.to_string()).context("throttling the container")?;
        Ok(Some(Self {
            quota_file,
            before: before.trim().to_string(),
            released: false,
        }))
    }

    pub fn release(mut self) -> Result<()> {
        self.released = true;
        fs::write(&self.quota_file, &self.before).context("restoring the CFS quota")
    }
}

impl Drop for CpuThrottle {
    fn drop(&mut self) {
        if !self.released {
            let _ = fs::write(&self.quota_file, &self.before);
        }
    }
}

/// Where the cpu controller is mounted (cgroup v1 mounts it with cpuacct).
const CPU_HIERARCHIES: [&str; 2] = ["/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/cpu"];

/// The wall clock of every pod that runs with the RuntimeClass `skewed-clock` (`cargo
/// xtask cluster` gives every node that containerd runtime: runc with libfaketime
/// preloaded, reading its offset from one file of the cluster's state), moved by an offset
/// in seconds; back to none on [`ClockSkew::reset`] or drop. libfaketime re-reads the file
/// once a second.
pub struct ClockSkew {
    file: PathBuf,
    reset: bool,
}

/// The RuntimeClass that runs a pod on the skewable clock.
pub const SKEWED_CLOCK_RUNTIME_CLASS: &str = "skewed-clock";

impl ClockSkew {
    /// `None` when the cluster has no skewable clock (not the local cluster).
    pub fn set(seconds: i64) -> Result<Option<Self>> {
        let file = cluster_state_dir()
            .join("skewed-clock")
            .join("clock")
            .join("skew");
        if !file.is_file() {
            return Ok(None);
        }
        let skew = Self { file, reset: false };
        skew.change(seconds)?;
        Ok(Some(skew))
    }

    /// Moves the offset to `seconds` (takes effect within a second).
    pub fn change(&self, seconds: i64) -> Result<()> {
        fs::write(&self.file, format!("{seconds:+}\n")).context("writing the clock offset")
    }

    pub fn reset(mut self) -> Result<()> {
        self.reset = true;
        self.change(0)
    }
}

impl Drop for ClockSkew {
    fn drop(&mut self) {
        if !self.reset {
            let _ = self.change(0);
        }
    }
}

/// The API server stopped (SIGKILL) and, on [`ApiServerOutage::end`], started again with
/// the command line, environment and working directory it had, its output appended to
/// its log and its pid file updated (so `cargo xtask cluster down` stops the new one).
pub struct ApiServerOutage {
    argv: Vec<String>,
    env: Vec<(String, String)>,
    cwd: PathBuf,
}

impl ApiServerOutage {
    /// `None` when the local cluster's API server does not run on this machine.
    pub fn begin() -> Result<Option<Self>> {
        let pid_file = cluster_state_dir().join("pids").join("kube-apiserver.pid");
        let Some(pid) = fs::read_to_string(&pid_file)
            .ok()
            .and_then(|pid| pid.trim().parse::<i32>().ok())
        else {
            return Ok(None);
        };
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        let Ok(cmdline) = fs::read(proc_dir.join("cmdline")) else {
            return Ok(None);
        };
        let split = |bytes: Vec<u8>| -> Vec<String> {
            bytes
                .split(|b| *b == 0)
                .filter(|part| !part.is_empty())
                .map(|part| String::from_utf8_lossy(part).into_owned())
                .collect()
        };
        let argv = split(cmdline);
        let env = split(fs::read(proc_dir.join("environ")).context("reading its environment")?)
            .into_iter()
            .filter_map(|pair| {
                pair.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect();
        let cwd = fs::read_link(proc_dir.join("cwd")).context("reading its directory")?;
        signal("-KILL", pid)?;
        // Gone when its /proc entry is (a zombie is reaped by its parent, `cargo xtask`'s
        // launcher having exited: by init).
        for _ in 0..100 {
            if fs::read_to_string(proc_dir.join("stat")).map_or(true, |stat| stat.contains(") Z "))
            {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Ok(Some(Self { argv, env, cwd }))
    }

    pub fn end(self) -> Result<()> {
        use std::os::unix::process::CommandExt;
        let log_path = cluster_state_dir().join("logs").join("kube-apiserver.log");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let (program, args) = self.argv.split_first().context("empty command line")?;
        let child = Command::new(program)
            .args(args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.cwd)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group: it outlives the test, as the first one outlived xtask.
            .process_group(0)
            .spawn()
            .with_context(|| format!("restarting {program}"))?;
        fs::write(
            cluster_state_dir().join("pids").join("kube-apiserver.pid"),
            child.id().to_string(),
        )?;
        Ok(())
    }
}

/// The operator's pods (every replica, the leader and the standbys).
pub async fn operator_pods(client: &kube::Client) -> Result<Vec<Pod>> {
    let pods: kube::Api<Pod> = kube::Api::namespaced(client.clone(), crate::OPERATOR_NAMESPACE);
    Ok(pods
        .list(&kube::api::ListParams::default().labels("app.kubernetes.io/name=meridian-operator"))
        .await?
        .items)
}

/// Freezes every operator replica's process (SIGSTOP), so the cluster has no operator
/// until the returned guards are dropped or woken.
pub async fn freeze_operator(client: &kube::Client) -> Result<Vec<Frozen>> {
    let mut frozen = Vec::new();
    for pod in operator_pods(client).await? {
        let pid = container_pid(&pod, "operator").with_context(|| {
            format!(
                "the operator pod {} has no process on this machine",
                pod.metadata.name.as_deref().unwrap_or_default()
            )
        })?;
        frozen.push(Frozen::freeze(pid)?);
    }
    Ok(frozen)
}

/// The network namespaces of the nodes labelled with `region` (empty when they are not
/// namespaces on this machine).
pub async fn region_node_namespaces(client: &kube::Client, region: &str) -> Result<Vec<String>> {
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client.clone());
    let listed = nodes
        .list(
            &kube::api::ListParams::default()
                .labels(&format!("topology.kubernetes.io/region={region}")),
        )
        .await?;
    Ok(listed
        .items
        .iter()
        .filter_map(|node| {
            node.status
                .as_ref()?
                .addresses
                .as_ref()?
                .iter()
                .find(|address| address.type_ == "InternalIP")
                .and_then(|address| node_netns(&address.address))
        })
        .collect())
}

/// Waits until the kubelet restarted `pod`'s node container at least `restarts` times and
/// the node answers again.
pub async fn wait_restarted(
    pods: &kube::Api<Pod>,
    pod: &str,
    restarts: i32,
    endpoint: &str,
) -> Result<()> {
    crate::wait_for(
        &format!("{pod} restarted in place and answering"),
        std::time::Duration::from_secs(180),
        || {
            let pods = pods.clone();
            let (pod, endpoint) = (pod.to_string(), endpoint.to_string());
            async move {
                let current = pods.get(&pod).await.map_err(|e| e.to_string())?;
                let count = restart_count(&current, "node");
                if count < restarts {
                    return Err(format!("restart count {count}"));
                }
                let mut connection = crate::quick_connection(&endpoint)
                    .await
                    .map_err(|e| e.to_string())?;
                let pong: String = redis::cmd("PING")
                    .query_async(&mut connection)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok((pong == "PONG").then_some(()))
            }
        },
    )
    .await
}
