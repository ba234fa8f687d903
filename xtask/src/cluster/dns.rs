//! Cluster DNS: CoreDNS (built from its Go module, see `images.rs`) as a Deployment behind
//! the `kube-dns` Service at the address kubelets hand to pods, as kubeadm sets it up.
//! It answers for `cluster.local` only; there is no upstream to forward to.

use crate::cluster::binaries::COREDNS_VERSION;
use crate::cluster::network::DNS_SERVICE_IP;
use crate::images::COREDNS_REPOSITORY;

pub fn manifest() -> String {
    format!(
        r#"apiVersion: v1
kind: ServiceAccount
metadata:
  name: coredns
  namespace: kube-system
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: system:coredns
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: system:coredns
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: system:coredns
subjects:
- kind: ServiceAccount
  name: coredns
  namespace: kube-system
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: coredns
  namespace: kube-system
data:
  Corefile: |
    .:53 {{
        errors
        health {{
            lameduck 5s
        }}
        ready
        kubernetes cluster.local in-addr.arpa ip6.arpa {{
            pods insecure
            fallthrough in-addr.arpa ip6.arpa
            ttl 5
        }}
        cache 5
        loop
        reload
    }}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: coredns
  namespace: kube-system
  labels: {{k8s-app: kube-dns}}
spec:
  replicas: 2
  selector:
    matchLabels: {{k8s-app: kube-dns}}
  template:
    metadata:
      labels: {{k8s-app: kube-dns}}
    spec:
      serviceAccountName: coredns
      priorityClassName: system-cluster-critical
      affinity:
        podAntiAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
          - weight: 100
            podAffinityTerm:
              labelSelector:
                matchLabels: {{k8s-app: kube-dns}}
              topologyKey: topology.kubernetes.io/region
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        seccompProfile: {{type: RuntimeDefault}}
        # Port 53 without capabilities, as upstream's own port: a NetworkPolicy that
        # admits DNS on 53 (the chart's does) then matches the pod after the Service's DNAT.
        sysctls:
        - {{name: net.ipv4.ip_unprivileged_port_start, value: "53"}}
      containers:
      - name: coredns
        image: {COREDNS_REPOSITORY}:{COREDNS_VERSION}
        imagePullPolicy: IfNotPresent
        args: ["-conf", "/etc/coredns/Corefile"]
        ports:
        - {{name: dns, containerPort: 53, protocol: UDP}}
        - {{name: dns-tcp, containerPort: 53, protocol: TCP}}
        resources:
          requests: {{cpu: 20m, memory: 32Mi}}
          limits: {{memory: 128Mi}}
        securityContext:
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities: {{drop: [ALL]}}
        volumeMounts:
        - {{name: config, mountPath: /etc/coredns, readOnly: true}}
        livenessProbe:
          httpGet: {{path: /health, port: 8080}}
          initialDelaySeconds: 10
        readinessProbe:
          httpGet: {{path: /ready, port: 8181}}
      volumes:
      - name: config
        configMap:
          name: coredns
          items: [{{key: Corefile, path: Corefile}}]
---
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {{k8s-app: kube-dns}}
spec:
  clusterIP: {DNS_SERVICE_IP}
  selector: {{k8s-app: kube-dns}}
  ports:
  - {{name: dns, port: 53, targetPort: 53, protocol: UDP}}
  - {{name: dns-tcp, port: 53, targetPort: 53, protocol: TCP}}
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_is_valid_yaml_documents() -> anyhow::Result<()> {
        let text = manifest();
        let mut kinds = Vec::new();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_yaml::Value::deserialize(doc)?;
            kinds.push(value["kind"].as_str().unwrap_or_default().to_string());
        }
        assert_eq!(
            kinds,
            [
                "ServiceAccount",
                "ClusterRole",
                "ClusterRoleBinding",
                "ConfigMap",
                "Deployment",
                "Service"
            ]
        );
        assert!(text.contains(&format!("clusterIP: {DNS_SERVICE_IP}")));
        // The Corefile's own port wins over -dns.port; the Service targets it, and the
        // unprivileged pod may bind it.
        assert!(text.contains(".:53 {") && text.contains("targetPort: 53"));
        assert!(text.contains("ip_unprivileged_port_start, value: \"53\""));
        Ok(())
    }
    use serde::Deserialize as _;
}
