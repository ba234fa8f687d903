//! Talking to cache nodes over RESP, always by pod IP (Services are not routed in every
//! cluster this runs in, and the operator must reach a specific node anyway).

use std::time::Duration;

use meridian_topology::{NodeAddr, TopologyMap};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};

use crate::Error;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);

/// Result of `MERIDIAN.TOPOLOGY SET`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PushOutcome {
    Applied,
    /// The node holds a newer epoch; the message is the node's.
    Stale(String),
}

/// Result of attaching a replica to its primary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttachOutcome {
    Attached,
    /// The node does not implement replication commands yet.
    Unsupported(String),
}

/// An open admin connection to one node.
pub struct NodeConnection {
    node: String,
    endpoint: String,
    connection: MultiplexedConnection,
}

impl NodeConnection {
    /// Connects (with timeouts) and authenticates when `password` is set.
    pub async fn open(
        node: &NodeAddr,
        password: Option<&str>,
        loopback_only: bool,
    ) -> Result<NodeConnection, Error> {
        let endpoint = node.endpoint();
        if loopback_only && !is_loopback(&node.ip) {
            return Err(Error::NodeTopology {
                node: node.id.clone(),
                detail: format!(
                    "refusing to connect to non-loopback address {endpoint} (loopback-only mode)"
                ),
            });
        }
        let fail = |source| Error::Node {
            node: node.id.clone(),
            endpoint: endpoint.clone(),
            source,
        };
        let mut settings = RedisConnectionInfo::default();
        if let Some(password) = password {
            settings = settings.set_password(password);
        }
        let info = (node.ip.clone(), node.port)
            .into_connection_info()
            .map_err(fail)?
            .set_addr(ConnectionAddr::Tcp(node.ip.clone(), node.port))
            .set_redis_settings(settings);
        let client = redis::Client::open(info).map_err(fail)?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let connection = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(fail)?;
        Ok(NodeConnection {
            node: node.id.clone(),
            endpoint,
            connection,
        })
    }

    fn error(&self, source: redis::RedisError) -> Error {
        Error::Node {
            node: self.node.clone(),
            endpoint: self.endpoint.clone(),
            source,
        }
    }

    /// `MERIDIAN.TOPOLOGY GET`: the node's map, `None` when it has none yet.
    pub async fn topology(&mut self) -> Result<Option<TopologyMap>, Error> {
        let reply: Option<String> = redis::cmd("MERIDIAN.TOPOLOGY")
            .arg("GET")
            .query_async(&mut self.connection)
            .await
            .map_err(|source| self.error(source))?;
        reply
            .map(|json| {
                serde_json::from_str(&json).map_err(|error| Error::NodeTopology {
                    node: self.node.clone(),
                    detail: error.to_string(),
                })
            })
            .transpose()
    }

    /// `MERIDIAN.TOPOLOGY SET <json>`.
    pub async fn push_topology(&mut self, map: &TopologyMap) -> Result<PushOutcome, Error> {
        let json = serde_json::to_string(map)?;
        let reply: Result<String, redis::RedisError> = redis::cmd("MERIDIAN.TOPOLOGY")
            .arg("SET")
            .arg(json)
            .query_async(&mut self.connection)
            .await;
        match reply {
            Ok(_) => Ok(PushOutcome::Applied),
            Err(error) if is_stale_epoch(&error) => Ok(PushOutcome::Stale(error.to_string())),
            Err(error) => Err(self.error(error)),
        }
    }

    /// `REPLICAOF <ip> <port>`; tolerates nodes that do not know the command yet.
    pub async fn replicate_from(&mut self, primary: &NodeAddr) -> Result<AttachOutcome, Error> {
        let reply: Result<redis::Value, redis::RedisError> = redis::cmd("REPLICAOF")
            .arg(&primary.ip)
            .arg(primary.port)
            .query_async(&mut self.connection)
            .await;
        match reply {
            Ok(_) => Ok(AttachOutcome::Attached),
            Err(error) if is_unknown_command(&error) => {
                Ok(AttachOutcome::Unsupported(error.to_string()))
            }
            Err(error) => Err(self.error(error)),
        }
    }

    /// `REPLICAOF NO ONE` for a primary; tolerates nodes without replication.
    pub async fn become_primary(&mut self) -> Result<AttachOutcome, Error> {
        let reply: Result<redis::Value, redis::RedisError> = redis::cmd("REPLICAOF")
            .arg("NO")
            .arg("ONE")
            .query_async(&mut self.connection)
            .await;
        match reply {
            Ok(_) => Ok(AttachOutcome::Attached),
            Err(error) if is_unknown_command(&error) => {
                Ok(AttachOutcome::Unsupported(error.to_string()))
            }
            Err(error) => Err(self.error(error)),
        }
    }
}

fn is_stale_epoch(error: &redis::RedisError) -> bool {
    error.code() == Some("STALEEPOCH") || error.to_string().contains("STALEEPOCH")
}

fn is_unknown_command(error: &redis::RedisError) -> bool {
    let text = error.to_string().to_ascii_lowercase();
    text.contains("unknown command") || text.contains("unknown subcommand")
}

/// Whether `ip` parses as a loopback address (127.0.0.0/8 or ::1).
pub fn is_loopback(ip: &str) -> bool {
    ip.parse::<std::net::IpAddr>()
        .is_ok_and(|address| address.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_detection() {
        assert!(is_loopback("127.0.10.7"));
        assert!(is_loopback("::1"));
        assert!(!is_loopback("10.0.0.1"));
        assert!(!is_loopback("not-an-ip"));
    }

    #[tokio::test]
    async fn loopback_only_mode_refuses_other_addresses_without_connecting() {
        let node = NodeAddr {
            id: "orders-eu-0-0".into(),
            ip: "10.1.2.3".into(),
            port: 6379,
        };
        let result = NodeConnection::open(&node, None, true).await;
        assert!(matches!(result, Err(Error::NodeTopology { .. })));
    }
}
