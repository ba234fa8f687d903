//! NetworkPolicy enforcement. The bridge CNI enforces none, so every node also runs
//! kube-router's firewall (built from its Go module) next to kube-proxy, in the node's
//! network namespace, with only its network policy controller on: it turns the
//! NetworkPolicies into iptables chains and ipsets of that node, judging every packet from
//! or to a local pod, including pods bridged on the same node (br_netfilter). Traffic of
//! the node's own processes to its pods (kubelet probes) is let through, as kube-router
//! does everywhere.
//!
//! Why not kube-network-policies, SIG Network's agent (and kindnet's): it queues packets
//! with nftables' `queue` statement, and these machines' kernels are built without
//! nft_queue (`CONFIG_NFT_QUEUE` unset), so its rules never load.

use std::path::Path;

use crate::cluster::network;

/// What kube-router may read: the objects its network policy controller watches (its
/// informers for Services and Endpoints start even with the proxy off).
pub fn rbac_manifest() -> String {
    format!(
        r#"apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: meridian-local:kube-router
rules:
- apiGroups: [""]
  resources: [pods, namespaces, nodes, services, endpoints]
  verbs: [get, list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, list, watch]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: meridian-local:kube-router
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: meridian-local:kube-router
subjects:
- apiGroup: rbac.authorization.k8s.io
  kind: User
  name: {user}
"#,
        user = super::pki::KUBE_ROUTER.common_name,
    )
}

/// kube-router's arguments on node `node`: the firewall only (routes, the service proxy
/// and the CNI config stay with the bridge CNI and kube-proxy).
pub fn kube_router_args(node: &str, kubeconfig: &Path) -> Vec<String> {
    vec![
        "--run-firewall=true".into(),
        "--run-router=false".into(),
        "--run-service-proxy=false".into(),
        "--enable-cni=false".into(),
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--hostname-override={node}"),
        // traffic to Services is judged after kube-proxy's DNAT, at the pod
        format!("--service-cluster-ip-range={}", network::SERVICE_CIDR),
        // no health endpoint: nothing probes it, and a port would be one more to pick
        "--health-port=0".into(),
        "--v=1".into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize as _;

    #[test]
    fn rbac_binds_the_kube_router_user_to_what_it_watches() -> anyhow::Result<()> {
        let text = rbac_manifest();
        let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&text)
            .map(serde_yaml::Value::deserialize)
            .collect::<Result<_, _>>()?;
        assert_eq!(docs.len(), 2);
        assert_eq!(
            docs[1]["subjects"][0]["name"].as_str(),
            Some("system:kube-router")
        );
        assert!(text.contains("networkpolicies"));
        Ok(())
    }

    #[test]
    fn only_the_firewall_runs() {
        let args = kube_router_args("n1", Path::new("/k"));
        for wanted in [
            "--run-firewall=true",
            "--run-router=false",
            "--run-service-proxy=false",
            "--enable-cni=false",
            "--hostname-override=n1",
        ] {
            assert!(args.iter().any(|a| a == wanted), "{wanted} in {args:?}");
        }
    }
}
