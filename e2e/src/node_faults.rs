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
    let id = container_id(pod, container)?;
    let cgroup = PID_HIERARCHIES
        .iter()
        .find_map(|root| find_dir(Path::new(root), &id, 8))?;
    let procs = fs::read_to_string(cgroup.join("cgroup.procs")).ok()?;
    procs
        .lines()
        .filter_map(|line| line.trim().parse::<i32>().ok())
        .find(|pid| is_namespace_init(*pid))
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
