//! The local cluster's network: one Linux bridge on the host that every node's network
//! namespace hangs off with a veth pair, like machines on one switch.
//!
//! ```text
//!  host: kube-apiserver on HOST_IP ── bridge mrd0 (10.240.0.1/24)
//!            │ veth                      │ veth
//!   netns meridian-<node-1>          netns meridian-<node-2> ...
//!     eth0 10.240.0.11                 eth0 10.240.0.12
//!     cni0 10.244.1.1/24 ── pods       cni0 10.244.2.1/24 ── pods
//! ```
//!
//! Each node namespace routes the other nodes' pod ranges to them directly and has no
//! default route; the host routes every pod range to its node but does not forward
//! (`ip_forward` stays as it is), so nothing from a pod can leave the machine.

use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::process::Command;

use crate::util;

/// The host's address on the node network: the API server binds it, pods reach it through
/// the `kubernetes` Service.
pub const HOST_IP: &str = "10.240.0.1";
const NODE_NETWORK_PREFIX: u8 = 24;
pub const NODE_NETWORK: &str = "10.240.0.0/24";
pub const BRIDGE: &str = "mrd0";
/// Every pod range; kube-proxy's clusterCIDR.
pub const POD_CIDR: &str = "10.244.0.0/16";
/// The Service range of the API server and controller-manager.
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
/// The cluster DNS Service's address (kubelet's clusterDNS).
pub const DNS_SERVICE_IP: &str = "10.96.0.10";

/// One node's place on the network. `index` starts at 1.
#[derive(Clone, Debug)]
pub struct NodeNet {
    pub index: u8,
}

impl NodeNet {
    pub fn netns(&self) -> String {
        format!("meridian-{}", self.index)
    }
    /// The netns file processes of this node join.
    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(self.netns())
    }
    pub fn ip(&self) -> String {
        format!("10.240.0.{}", 10 + u16::from(self.index))
    }
    pub fn pod_cidr(&self) -> String {
        format!("10.244.{}.0/24", self.index)
    }
    fn host_veth(&self) -> String {
        format!("mrdv{}", self.index)
    }
}

/// Fails with what is missing when this machine cannot host real nodes.
pub fn check_prerequisites() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "the local cluster's nodes need root: network namespaces, mounts and cgroups \
             (run `cargo xtask cluster up` as root)"
        );
    }
    util::ensure_apt(&[
        ("ip", "iproute2"),
        ("iptables", "iptables"),
        ("conntrack", "conntrack"),
        // kube-router's firewall keeps the NetworkPolicies' peers in ipsets
        ("ipset", "ipset"),
        ("mount", "mount"),
    ])?;
    util::ensure_apt_files(&[("/usr/lib/cni/bridge", "containernetworking-plugins")])?;
    for plugin in ["bridge", "host-local", "portmap", "loopback"] {
        if !PathBuf::from("/usr/lib/cni").join(plugin).is_file() {
            bail!(
                "the CNI plugin /usr/lib/cni/{plugin} is missing (Debian package containernetworking-plugins)"
            );
        }
    }
    Ok(())
}

fn ip(args: &[&str]) -> Result<()> {
    util::run_quiet(Command::new("ip").args(args))
}

fn in_netns(net: &NodeNet, program: &str, args: &[&str]) -> Result<()> {
    util::run_quiet(
        Command::new("ip")
            .args(["netns", "exec", &net.netns(), program])
            .args(args),
    )
}

fn link_exists(name: &str) -> bool {
    PathBuf::from("/sys/class/net").join(name).exists()
}

/// Creates the bridge, every node's namespace and the routes between them (idempotent).
pub fn up(nodes: &[NodeNet]) -> Result<()> {
    // Kubelet mounts volumes that containers must see: mounts propagate only on shared
    // mounts, and this host's root is private.
    util::run_quiet(Command::new("mount").args(["--make-rshared", "/"]))
        .context("mount --make-rshared / failed")?;
    if !link_exists(BRIDGE) {
        ip(&["link", "add", BRIDGE, "type", "bridge"])?;
    }
    let host_cidr = format!("{HOST_IP}/{NODE_NETWORK_PREFIX}");
    let addresses = util::output(Command::new("ip").args(["-o", "addr", "show", "dev", BRIDGE]))?;
    if !addresses.contains(&host_cidr) {
        ip(&["addr", "add", &host_cidr, "dev", BRIDGE])?;
    }
    ip(&["link", "set", BRIDGE, "up"])?;
    // Bridged frames between nodes pass the host's FORWARD chain when br_netfilter is on;
    // a host whose FORWARD policy drops (Docker sets that) must still let them through.
    let accept = ["FORWARD", "-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT"];
    if util::run_quiet(Command::new("iptables").arg("-C").args(accept)).is_err() {
        util::run_quiet(Command::new("iptables").arg("-I").args(accept))?;
    }

    for net in nodes {
        if !net.netns_path().exists() {
            ip(&["netns", "add", &net.netns()])?;
        }
        if !link_exists(&net.host_veth()) {
            ip(&[
                "link",
                "add",
                &net.host_veth(),
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &net.netns(),
            ])?;
        }
        ip(&["link", "set", &net.host_veth(), "master", BRIDGE, "up"])?;
        let node_cidr = format!("{}/{NODE_NETWORK_PREFIX}", net.ip());
        let inside = util::output(Command::new("ip").args([
            "-n",
            &net.netns(),
            "-o",
            "addr",
            "show",
            "dev",
            "eth0",
        ]))?;
        if !inside.contains(&node_cidr) {
            ip(&["-n", &net.netns(), "addr", "add", &node_cidr, "dev", "eth0"])?;
        }
        ip(&["-n", &net.netns(), "link", "set", "lo", "up"])?;
        ip(&["-n", &net.netns(), "link", "set", "eth0", "up"])?;
        // Locally originated Service traffic needs a route before kube-proxy's DNAT.
        ip(&[
            "-n",
            &net.netns(),
            "route",
            "replace",
            SERVICE_CIDR,
            "dev",
            "eth0",
            "src",
            &net.ip(),
        ])?;
        for other in nodes.iter().filter(|o| o.index != net.index) {
            ip(&[
                "-n",
                &net.netns(),
                "route",
                "replace",
                &other.pod_cidr(),
                "via",
                &other.ip(),
            ])?;
        }
        for (key, value) in [
            ("net.ipv4.ip_forward", "1"),
            ("net.bridge.bridge-nf-call-iptables", "1"),
            ("net.ipv4.conf.all.route_localnet", "1"),
        ] {
            in_netns(net, "sysctl", &["-q", "-w", &format!("{key}={value}")])
                .with_context(|| format!("cannot set {key} in {}", net.netns()))?;
        }
        ip(&["route", "replace", &net.pod_cidr(), "via", &net.ip()])?;
    }
    Ok(())
}

/// Removes what [`up`] made. Processes in the namespaces must be gone already.
pub fn down(nodes: &[NodeNet]) -> Result<()> {
    let mut failures = Vec::new();
    for net in nodes {
        let _ = ip(&["route", "del", &net.pod_cidr()]);
        if link_exists(&net.host_veth())
            && let Err(e) = ip(&["link", "del", &net.host_veth()])
        {
            failures.push(format!("{e:#}"));
        }
        if net.netns_path().exists()
            && let Err(e) = ip(&["netns", "del", &net.netns()])
        {
            failures.push(format!("{e:#}"));
        }
    }
    let accept = ["FORWARD", "-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT"];
    while util::run_quiet(Command::new("iptables").arg("-C").args(accept)).is_ok() {
        util::run_quiet(Command::new("iptables").arg("-D").args(accept))?;
    }
    if link_exists(BRIDGE)
        && let Err(e) = ip(&["link", "del", BRIDGE])
    {
        failures.push(format!("{e:#}"));
    }
    if !failures.is_empty() {
        bail!("cannot remove the node network:\n{}", failures.join("\n"));
    }
    Ok(())
}

/// The CNI configuration of `net`'s pods: a bridge with `net`'s pod range, portmap.
pub fn cni_conflist(net: &NodeNet, ipam_dir: &std::path::Path) -> String {
    serde_json::json!({
        "cniVersion": "0.4.0",
        "name": "meridian-pods",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "dataDir": ipam_dir,
                    "ranges": [[{ "subnet": net.pod_cidr() }]],
                    "routes": [{ "dst": "0.0.0.0/0" }]
                }
            },
            { "type": "portmap", "capabilities": { "portMappings": true } }
        ]
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_addresses_do_not_overlap() {
        let nets: Vec<NodeNet> = (1..=6).map(|index| NodeNet { index }).collect();
        let ips: std::collections::BTreeSet<String> = nets.iter().map(NodeNet::ip).collect();
        let cidrs: std::collections::BTreeSet<String> =
            nets.iter().map(NodeNet::pod_cidr).collect();
        assert_eq!(ips.len(), 6);
        assert_eq!(cidrs.len(), 6);
        assert!(!ips.contains(HOST_IP));
        assert!(cidrs.iter().all(|c| c.starts_with("10.244.")));
        // NODE_NETWORK (what e2e clients and the demo admit) holds the host and every node
        let prefix = NODE_NETWORK.trim_end_matches("0/24");
        assert_eq!(NODE_NETWORK, format!("{prefix}0/{NODE_NETWORK_PREFIX}"));
        assert!(HOST_IP.starts_with(prefix) && ips.iter().all(|ip| ip.starts_with(prefix)));
    }

    #[test]
    fn cni_config_uses_the_nodes_range() -> Result<()> {
        let net = NodeNet { index: 3 };
        let conf: serde_json::Value =
            serde_json::from_str(&cni_conflist(&net, std::path::Path::new("/x")))?;
        assert_eq!(
            conf["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            "10.244.3.0/24"
        );
        Ok(())
    }
}
