//! End-to-end suite against the cluster named by KUBECONFIG.
