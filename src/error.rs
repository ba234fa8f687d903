//! The operator's one error type.

use std::time::Duration;

/// Everything a reconcile, the leader elector or the HTTP server can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[source] Box<kube::Error>),

    #[error("CacheCluster '{name}' referenced by clusterRef does not exist")]
    ClusterNotFound { name: String },

    #[error("auth Secret '{name}' does not exist")]
    AuthSecretMissing { name: String },

    #[error("auth Secret '{name}' has no key '{key}'")]
    AuthSecretKeyMissing { name: String, key: String },

    #[error("TLS Secret '{name}' {problem}")]
    TlsSecret { name: String, problem: String },

    #[error("invalid spec: {0}")]
    InvalidSpec(String),

    #[error("object is missing {0}")]
    MissingObjectField(&'static str),

    #[error("node {node} at {endpoint}: {source}")]
    Node {
        node: String,
        endpoint: String,
        #[source]
        source: redis::RedisError,
    },

    #[error("node {node} answered with an unexpected topology: {detail}")]
    NodeTopology { node: String, detail: String },

    #[error("planned topology is invalid: {0}")]
    Topology(#[from] meridian_topology::TopologyError),

    #[error("could not serialize: {0}")]
    Serialization(#[from] serde_json::Error),

    #[error("leader election: {0}")]
    LeaderElection(String),

    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

impl From<kube::Error> for Error {
    fn from(error: kube::Error) -> Self {
        Error::Kube(Box::new(error))
    }
}

impl Error {
    /// Low-cardinality value of the `reason` label of `reconcile_errors_total`.
    /// The node did not answer: connection refused, dropped or timed out (not a
    /// reply it gave, such as an error for a command).
    pub fn is_unanswered(&self) -> bool {
        match self {
            Error::Node { source, .. } => {
                source.is_timeout()
                    || source.is_io_error()
                    || source.is_connection_dropped()
                    || source.is_connection_refusal()
            }
            _ => false,
        }
    }

    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube_api",
            Error::ClusterNotFound { .. } => "cluster_not_found",
            Error::AuthSecretMissing { .. } | Error::AuthSecretKeyMissing { .. } => {
                "auth_secret_missing"
            }
            Error::TlsSecret { .. } => "tls_secret",
            Error::InvalidSpec(_) => "invalid_spec",
            Error::MissingObjectField(_) => "missing_object_field",
            Error::Node { .. } => "node_unreachable",
            Error::NodeTopology { .. } => "node_topology",
            Error::Topology(_) => "topology_plan",
            Error::Serialization(_) => "serialization",
            Error::LeaderElection(_) => "leader_election",
            Error::Io(_) => "io",
        }
    }

    /// `Reason` of the Degraded condition and of the Warning event for this error.
    pub fn condition_reason(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubernetesApiError",
            Error::ClusterNotFound { .. } => "ClusterNotFound",
            Error::AuthSecretMissing { .. } | Error::AuthSecretKeyMissing { .. } => {
                "AuthSecretMissing"
            }
            Error::TlsSecret { .. } => "TlsSecretInvalid",
            Error::InvalidSpec(_) => "InvalidSpec",
            Error::MissingObjectField(_) => "InvalidObject",
            Error::Node { .. } | Error::NodeTopology { .. } => "NodeUnreachable",
            Error::Topology(_) => "TopologyPlanInvalid",
            Error::Serialization(_) => "SerializationError",
            Error::LeaderElection(_) => "LeaderElection",
            Error::Io(_) => "IoError",
        }
    }

    /// True when retrying quickly cannot help: the user must change the spec or create
    /// the missing object. These become a Degraded condition, not a failed reconcile.
    pub fn is_user_actionable(&self) -> bool {
        matches!(
            self,
            Error::ClusterNotFound { .. }
                | Error::AuthSecretMissing { .. }
                | Error::AuthSecretKeyMissing { .. }
                | Error::TlsSecret { .. }
                | Error::InvalidSpec(_)
        )
    }
}

/// Exponential requeue delay after `consecutive_failures` failed reconciles of one object:
/// 5s, 10s, 20s … capped at 5 minutes.
pub fn backoff_delay(consecutive_failures: u32) -> Duration {
    let exponent = consecutive_failures.saturating_sub(1).min(6);
    Duration::from_secs(5u64 << exponent).min(Duration::from_secs(300))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff_delay(0), Duration::from_secs(5));
        assert_eq!(backoff_delay(1), Duration::from_secs(5));
        assert_eq!(backoff_delay(2), Duration::from_secs(10));
        assert_eq!(backoff_delay(4), Duration::from_secs(40));
        assert_eq!(backoff_delay(7), Duration::from_secs(300));
        assert_eq!(backoff_delay(u32::MAX), Duration::from_secs(300));
    }

    #[test]
    fn user_actionable_errors_are_the_spec_problems() {
        let missing = Error::ClusterNotFound {
            name: "orders".into(),
        };
        assert!(missing.is_user_actionable());
        assert_eq!(missing.metric_label(), "cluster_not_found");
        assert_eq!(missing.condition_reason(), "ClusterNotFound");
        let io = Error::Io(std::io::Error::other("boom"));
        assert!(!io.is_user_actionable());
        assert_eq!(io.metric_label(), "io");
    }
}
