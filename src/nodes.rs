//! Talking to cache nodes over RESP, always by pod IP (Services are not routed in every
//! cluster this runs in, and the operator must reach a specific node anyway), with the
//! cluster's credentials and, when the cluster has TLS, over TLS verified against the
//! cluster's CA.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

use meridian_topology::{NodeAddr, TopologyMap, cluster_node_id};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};

use crate::Error;
use crate::names::PodName;
use crate::reshard::OpenSlots;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);
/// `MERIDIAN.MIGRATE SLOT` answers once every key of the slot moved: a big slot takes a
/// while, so the admin connection waits that much longer for it (and only for it).
const MIGRATION_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// Keys per `MIGRATE` round trip inside `MERIDIAN.MIGRATE SLOT`.
const MIGRATION_BATCH: u32 = 200;
/// How long the source waits for the destination per batch.
const MIGRATION_TIMEOUT_MS: u64 = 10_000;

/// How the operator reaches a cluster's nodes: its credentials and TLS, read once per
/// reconcile and used by every connection.
#[derive(Clone, Debug, Default)]
pub struct NodeAccess {
    /// The ACL user the operator logs in as (None: `default`).
    pub user: Option<String>,
    /// The password of `user` (or of `default`), if the cluster has auth.
    pub password: Option<String>,
    /// A node not yet started with the operator's ACL users (before its pod was
    /// replaced after an upgrade) knows only `default`: its password, tried when
    /// logging in as `user` is refused.
    pub fallback_password: Option<String>,
    /// The cluster's TLS (None: plain TCP).
    pub tls: Option<NodeTls>,
}

impl NodeAccess {
    /// The same access logging in as `default` with the fallback password.
    fn as_default(&self) -> Option<NodeAccess> {
        let password = self.fallback_password.clone()?;
        self.user.as_ref()?;
        Some(NodeAccess {
            user: None,
            password: Some(password),
            fallback_password: None,
            tls: self.tls.clone(),
        })
    }

    /// `AUTH2 <user> <password>` / `AUTH <password>` arguments of MIGRATE, for a node
    /// that moves keys to another node of the cluster.
    pub fn migrate_auth(&self) -> Vec<String> {
        match (&self.user, &self.password) {
            (Some(user), Some(password)) => vec!["AUTH2".into(), user.clone(), password.clone()],
            (None, Some(password)) => vec!["AUTH".into(), password.clone()],
            _ => Vec::new(),
        }
    }
}

/// TLS to a cluster's nodes: their certificates are verified against the cluster's
/// CA, for `spec.tls.serverName` when set (one certificate serves every pod) or else
/// for the pod IP dialed.
#[derive(Clone)]
pub struct NodeTls {
    connector: TlsConnector,
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for NodeTls {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("NodeTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl NodeTls {
    /// From the PEM of `ca.crt`; `Err` says what is wrong with it.
    pub fn new(ca_pem: &[u8], server_name: Option<&str>) -> Result<NodeTls, String> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem) {
            let cert = cert.map_err(|error| format!("ca.crt: {error}"))?;
            roots
                .add(cert)
                .map_err(|error| format!("ca.crt: {error}"))?;
        }
        if roots.is_empty() {
            return Err("ca.crt: no PEM certificate found".to_string());
        }
        let server_name = server_name
            .map(|name| {
                ServerName::try_from(name.to_string())
                    .map_err(|_| format!("serverName '{name}' is not a DNS name"))
            })
            .transpose()?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| format!("TLS setup: {error}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(NodeTls {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }

    async fn connect(
        &self,
        stream: TcpStream,
        ip: &str,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let name = match &self.server_name {
            Some(name) => name.clone(),
            None => ServerName::try_from(ip.to_string()).map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("'{ip}' is not an address usable for TLS"),
                )
            })?,
        };
        self.connector.connect(name, stream).await
    }
}

/// Migration state of one slot on one node (`CLUSTER SETSLOT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotState<'a> {
    /// On the destination: accept ASKING commands for the slot from clients sent by
    /// the source (named by pod).
    Importing { source: &'a PodName },
    /// On the source: answer ASK for keys already moved to the destination (by pod).
    Migrating { destination: &'a PodName },
    /// Forget any migration state of the slot.
    Stable,
}

/// Result of `MERIDIAN.TOPOLOGY SET`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PushOutcome {
    Applied,
    /// The node holds a newer epoch; the message is the node's.
    Stale(String),
}

/// A node's replication role as `INFO replication` reports it (`role:master|slave`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReplicationRole {
    Primary,
    Replica,
    /// Missing or a word this operator does not know.
    #[default]
    Unknown,
}

impl ReplicationRole {
    /// The `role:` value of `INFO replication`.
    pub fn parse(value: &str) -> Self {
        match value {
            "master" => ReplicationRole::Primary,
            "slave" => ReplicationRole::Replica,
            _ => ReplicationRole::Unknown,
        }
    }
}

impl std::fmt::Display for ReplicationRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ReplicationRole::Primary => "primary",
            ReplicationRole::Replica => "replica",
            ReplicationRole::Unknown => "unknown",
        })
    }
}

/// What `INFO replication` says about a node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicationInfo {
    pub role: ReplicationRole,
    /// The replication offset the node has reached: `slave_repl_offset` on a replica,
    /// `master_repl_offset` otherwise.
    pub offset: u64,
    /// `master_link_status:up` (replicas only).
    pub link_up: bool,
    /// `master_host`: the primary a replica follows (empty on a primary).
    pub master_host: String,
    pub connected_replicas: u32,
    /// `master_replid` / `master_replid2`: the replication history the node's data
    /// belongs to, and the one it continued from (after a promotion).
    pub replid: String,
    pub replid2: String,
    /// `master_full_sync_refused` (replicas only): full syncs the replica refused since
    /// its link last synced, because they would have replaced its data with another
    /// history (its primary restarted without its data).
    pub full_sync_refused: u64,
    /// The replicas a primary lists (`slaveN:ip=…,port=…,state=…,offset=…,lag=…`), with
    /// the offsets they acknowledged.
    pub attached: Vec<AttachedReplica>,
}

/// A replica as its primary lists it in `INFO replication`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttachedReplica {
    pub ip: String,
    /// The offset the replica acknowledged (never more than the primary sent it).
    pub offset: u64,
}

impl AttachedReplica {
    /// Parses the value of a `slaveN` line; `None` without an ip or offset.
    fn parse(value: &str) -> Option<AttachedReplica> {
        let mut ip = None;
        let mut offset = None;
        for pair in value.split(',') {
            match pair.split_once('=') {
                Some(("ip", value)) => ip = Some(value.to_string()),
                Some(("offset", value)) => offset = value.parse().ok(),
                _ => {}
            }
        }
        Some(AttachedReplica {
            ip: ip?,
            offset: offset?,
        })
    }
}

impl ReplicationInfo {
    /// Parses the `key:value` lines of `INFO replication`; unknown lines are ignored.
    pub fn parse(text: &str) -> ReplicationInfo {
        let mut info = ReplicationInfo::default();
        let mut master_offset = None;
        let mut replica_offset = None;
        for line in text.lines() {
            let Some((key, value)) = line.trim().split_once(':') else {
                continue;
            };
            match key {
                "role" => info.role = ReplicationRole::parse(value),
                "master_repl_offset" => master_offset = value.parse().ok(),
                "slave_repl_offset" => replica_offset = value.parse().ok(),
                "master_link_status" => info.link_up = value == "up",
                "master_host" => info.master_host = value.to_string(),
                "connected_slaves" => info.connected_replicas = value.parse().unwrap_or(0),
                "master_replid" => info.replid = value.to_string(),
                "master_replid2" => info.replid2 = value.to_string(),
                "master_full_sync_refused" => info.full_sync_refused = value.parse().unwrap_or(0),
                key if key.strip_prefix("slave").is_some_and(|index| {
                    !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit())
                }) =>
                {
                    info.attached.extend(AttachedReplica::parse(value));
                }
                _ => {}
            }
        }
        info.offset = replica_offset.or(master_offset).unwrap_or(0);
        info
    }

    /// A replica whose configured primary is `primary_ip` (its link up or not).
    pub fn follows(&self, primary_ip: &str) -> bool {
        self.role == ReplicationRole::Replica && self.master_host == primary_ip
    }
}

/// What pushing one map to several nodes did, node by node.
#[derive(Debug, Default)]
pub struct PushReport {
    /// Nodes that applied the map, in push order.
    pub applied: Vec<PodName>,
    /// `pod: message` of nodes that refused it because they hold a newer epoch.
    pub stale: Vec<String>,
    /// Nodes the push did not reach, with the error.
    pub failed: Vec<(PodName, Error)>,
}

impl PushReport {
    /// The first node error, for steps that cannot go on without every node.
    pub fn into_first_error(mut self) -> Result<Self, Error> {
        if self.failed.is_empty() {
            Ok(self)
        } else {
            Err(self.failed.remove(0).1)
        }
    }
}

/// The admin connections one reconcile holds, one per node, by pod name.
#[derive(Default)]
pub struct NodeConnections {
    by_pod: HashMap<PodName, NodeConnection>,
}

impl NodeConnections {
    pub fn insert(&mut self, pod: PodName, connection: NodeConnection) {
        self.by_pod.insert(pod, connection);
    }

    pub fn get_mut(&mut self, pod: &str) -> Option<&mut NodeConnection> {
        self.by_pod.get_mut(pod)
    }

    /// Two different nodes' connections at once (a slot move talks to both).
    pub fn pair_mut(
        &mut self,
        first: &str,
        second: &str,
    ) -> Option<(&mut NodeConnection, &mut NodeConnection)> {
        match self.by_pod.get_disjoint_mut([first, second]) {
            [Some(first), Some(second)] => Some((first, second)),
            _ => None,
        }
    }

    pub fn contains(&self, pod: &str) -> bool {
        self.by_pod.contains_key(pod)
    }

    /// Pod names, sorted (a stable push order).
    pub fn pods(&self) -> Vec<PodName> {
        let mut pods: Vec<PodName> = self.by_pod.keys().cloned().collect();
        pods.sort();
        pods
    }

    /// Keeps the connections `keep(pod, connection)` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(&PodName, &NodeConnection) -> bool) {
        self.by_pod.retain(|pod, connection| keep(pod, connection));
    }

    pub fn extend(&mut self, other: NodeConnections) {
        self.by_pod.extend(other.by_pod);
    }

    /// Runs `query` on every connection at once; the answers by pod name.
    pub async fn query_all<T>(
        &mut self,
        query: impl AsyncFn(&mut NodeConnection) -> Result<T, Error>,
    ) -> Vec<(PodName, Result<T, Error>)> {
        let query = &query;
        futures::future::join_all(
            self.by_pod
                .iter_mut()
                .map(|(pod, connection)| async move { (pod.clone(), query(connection).await) }),
        )
        .await
    }

    /// The one way a map reaches nodes: `MERIDIAN.TOPOLOGY SET` to the pods in `order`
    /// this reconcile holds a connection to, one after the other (the order matters in a
    /// failover, a handover and a slot move), every outcome reported.
    pub async fn push(&mut self, map: &TopologyMap, order: &[PodName]) -> PushReport {
        let mut report = PushReport::default();
        // Serialized once for every node (a 1000-shard map is 176 KiB of JSON).
        let json = serde_json::to_string(map);
        for pod in order {
            let Some(connection) = self.by_pod.get_mut(pod) else {
                continue;
            };
            let outcome = match &json {
                Ok(json) => connection.push_topology_json(json).await,
                Err(_) => connection.push_topology(map).await,
            };
            match outcome {
                Ok(PushOutcome::Applied) => report.applied.push(pod.clone()),
                Ok(PushOutcome::Stale(message)) => report.stale.push(format!("{pod}: {message}")),
                Err(error) => report.failed.push((pod.clone(), error)),
            }
        }
        report
    }
}

impl From<HashMap<PodName, NodeConnection>> for NodeConnections {
    fn from(by_pod: HashMap<PodName, NodeConnection>) -> Self {
        NodeConnections { by_pod }
    }
}

/// An open admin connection to one node.
pub struct NodeConnection {
    node: String,
    endpoint: String,
    connection: MultiplexedConnection,
    /// What replies are waited for (a slot move waits longer, then goes back to this).
    response_timeout: Duration,
}

impl NodeConnection {
    /// `ip:port` this connection goes to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Connects (with timeouts, over TLS when `access` has it) and authenticates when
    /// `access` has a password.
    pub async fn open(node: &NodeAddr, access: &NodeAccess) -> Result<NodeConnection, Error> {
        Self::open_with_timeout(node, access, CONNECT_TIMEOUT, RESPONSE_TIMEOUT).await
    }

    /// Like [`NodeConnection::open`] with explicit timeouts (probes use short ones so a
    /// dead node costs little). A node that refuses the operator's user (it runs without
    /// the ACL file yet) is logged in to as `default` when the access has a fallback.
    pub async fn open_with_timeout(
        node: &NodeAddr,
        access: &NodeAccess,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> Result<NodeConnection, Error> {
        let opened = Self::open_as(node, access, connect_timeout, response_timeout).await;
        match (opened, access.as_default()) {
            (Err(Error::Node { source, .. }), Some(fallback))
                if source.kind() == redis::ErrorKind::AuthenticationFailed
                    || source.to_string().contains("WRONGPASS") =>
            {
                Self::open_as(node, &fallback, connect_timeout, response_timeout).await
            }
            (opened, _) => opened,
        }
    }

    async fn open_as(
        node: &NodeAddr,
        access: &NodeAccess,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> Result<NodeConnection, Error> {
        let endpoint = node.endpoint();
        let fail = |source| Error::Node {
            node: node.id.clone(),
            endpoint: endpoint.clone(),
            source,
        };
        let mut settings = RedisConnectionInfo::default();
        if let Some(password) = &access.password {
            settings = settings.set_password(password);
        }
        if let Some(user) = &access.user {
            settings = settings.set_username(user);
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(Some(response_timeout));
        if let Some(tls) = &access.tls {
            let io_error = |error: std::io::Error| {
                fail(redis::RedisError::from(std::io::Error::new(
                    error.kind(),
                    format!("TLS to {endpoint}: {error}"),
                )))
            };
            let handshake = async {
                let stream = TcpStream::connect((node.ip.as_str(), node.port)).await?;
                stream.set_nodelay(true)?;
                tls.connect(stream, &node.ip).await
            };
            let stream = tokio::time::timeout(connect_timeout, handshake)
                .await
                .map_err(|_| {
                    io_error(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "connect timed out",
                    ))
                })?
                .map_err(io_error)?;
            let (connection, driver) =
                MultiplexedConnection::new_with_config(&settings, stream, config)
                    .await
                    .map_err(fail)?;
            tokio::spawn(driver);
            return Ok(NodeConnection {
                node: node.id.clone(),
                endpoint,
                connection,
                response_timeout,
            });
        }
        let info = (node.ip.clone(), node.port)
            .into_connection_info()
            .map_err(fail)?
            .set_addr(ConnectionAddr::Tcp(node.ip.clone(), node.port))
            .set_redis_settings(settings);
        let client = redis::Client::open(info).map_err(fail)?;
        let connection = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(fail)?;
        Ok(NodeConnection {
            node: node.id.clone(),
            endpoint,
            connection,
            response_timeout,
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
        self.push_topology_json(&json).await
    }

    /// `MERIDIAN.TOPOLOGY SET <json>` with the map already serialized.
    pub async fn push_topology_json(&mut self, json: &str) -> Result<PushOutcome, Error> {
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

    /// `MERIDIAN.PEERS GET`: the node's region links and their state.
    pub async fn peers(&mut self) -> Result<crate::peers::PeersReport, Error> {
        let json: String = redis::cmd("MERIDIAN.PEERS")
            .arg("GET")
            .query_async(&mut self.connection)
            .await
            .map_err(|source| self.error(source))?;
        serde_json::from_str(&json).map_err(|error| Error::NodeTopology {
            node: self.node.clone(),
            detail: format!("unreadable MERIDIAN.PEERS GET reply: {error}"),
        })
    }

    /// `MERIDIAN.PEERS SET <json>`: replaces the node's peer regions.
    pub async fn set_peers(&mut self, peers: &[crate::peers::PeerConfig]) -> Result<(), Error> {
        let json = serde_json::to_string(peers)?;
        self.run_command(redis::cmd("MERIDIAN.PEERS").arg("SET").arg(json))
            .await
    }

    /// `PING`.
    pub async fn ping(&mut self) -> Result<(), Error> {
        self.run_command(&redis::cmd("PING")).await
    }

    /// `CLIENT PAUSE <timeout_ms> WRITE`: write commands block (they are routed again
    /// when released) until `CLIENT UNPAUSE` or the timeout, which bounds the pause if the
    /// operator goes away mid-handover.
    pub async fn pause_writes(&mut self, timeout: Duration) -> Result<(), Error> {
        self.run_command(
            redis::cmd("CLIENT")
                .arg("PAUSE")
                .arg(timeout.as_millis().min(u128::from(u64::MAX)) as u64)
                .arg("WRITE"),
        )
        .await
    }

    /// `CLIENT UNPAUSE`.
    pub async fn unpause(&mut self) -> Result<(), Error> {
        self.run_command(redis::cmd("CLIENT").arg("UNPAUSE")).await
    }

    /// `INFO replication`, parsed.
    pub async fn replication_info(&mut self) -> Result<ReplicationInfo, Error> {
        let text: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut self.connection)
            .await
            .map_err(|source| self.error(source))?;
        Ok(ReplicationInfo::parse(&text))
    }

    /// The slots the node reports MIGRATING / IMPORTING (its `CLUSTER NODES` line).
    pub async fn open_slots(&mut self) -> Result<OpenSlots, Error> {
        let text: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut self.connection)
            .await
            .map_err(|source| self.error(source))?;
        Ok(OpenSlots::parse_cluster_nodes(&text))
    }

    /// `CLUSTER SETSLOT <slot> IMPORTING|MIGRATING <id>|STABLE`, peers named by pod.
    pub async fn set_slot(&mut self, slot: u16, state: SlotState<'_>) -> Result<(), Error> {
        let mut command = redis::cmd("CLUSTER");
        command.arg("SETSLOT").arg(slot);
        match state {
            SlotState::Importing { source } => {
                command
                    .arg("IMPORTING")
                    .arg(cluster_node_id(source.as_str()));
            }
            SlotState::Migrating { destination } => {
                command
                    .arg("MIGRATING")
                    .arg(cluster_node_id(destination.as_str()));
            }
            SlotState::Stable => {
                command.arg("STABLE");
            }
        }
        self.run_command(&command).await
    }

    /// `MERIDIAN.MIGRATE SLOT`: moves every key of `slot` to `destination` (in batches,
    /// REPLACE semantics so a retry is harmless); returns how many keys moved.
    pub async fn migrate_slot(
        &mut self,
        slot: u16,
        destination: &NodeAddr,
        access: &NodeAccess,
    ) -> Result<u64, Error> {
        let mut command = redis::cmd("MERIDIAN.MIGRATE");
        command
            .arg("SLOT")
            .arg(slot)
            .arg(&destination.ip)
            .arg(destination.port)
            .arg("BATCH")
            .arg(MIGRATION_BATCH)
            .arg("TIMEOUT")
            .arg(MIGRATION_TIMEOUT_MS);
        // the source logs in to the destination as the operator does
        for arg in access.migrate_auth() {
            command.arg(arg);
        }
        command
            .query_async(&mut self.connection)
            .await
            .map_err(|source| self.error(source))
    }

    /// Runs `command`, whose reply carries nothing beyond success.
    async fn run_command(&mut self, command: &redis::Cmd) -> Result<(), Error> {
        command
            .query_async::<redis::Value>(&mut self.connection)
            .await
            .map(|_| ())
            .map_err(|source| self.error(source))
    }

    /// Runs `pipeline`, failing on the first error reply.
    async fn run_pipeline(&mut self, pipeline: &redis::Pipeline) -> Result<(), Error> {
        pipeline
            .query_async::<()>(&mut self.connection)
            .await
            .map_err(|source| self.error(source))
    }

    /// `CLUSTER COUNTKEYSINSLOT <slot>`.
    pub async fn count_keys_in_slot(&mut self, slot: u16) -> Result<u64, Error> {
        redis::cmd("CLUSTER")
            .arg("COUNTKEYSINSLOT")
            .arg(slot)
            .query_async(&mut self.connection)
            .await
            .map_err(|source| self.error(source))
    }

    /// `REPLICAOF <ip> <port>`. Nodes attach on their own when a pushed map lists them
    /// as replica; this is for manual repair and tests.
    pub async fn replicate_from(&mut self, primary: &NodeAddr) -> Result<(), Error> {
        self.run_command(redis::cmd("REPLICAOF").arg(&primary.ip).arg(primary.port))
            .await
    }
}

/// Moves the keys of `slots` from the source primary to the destination primary: for
/// each slot IMPORTING on the destination, then MIGRATING on the source (so clients
/// follow ASK for keys already moved), then `MERIDIAN.MIGRATE SLOT`. Ownership changes
/// only with the next map, which the caller pushes (see `reshard::push_order`). Every
/// command is idempotent, so a step interrupted anywhere is finished by running it again.
/// Returns how many keys moved.
pub async fn move_slots(
    source: &mut NodeConnection,
    source_addr: &NodeAddr,
    destination: &mut NodeConnection,
    destination_addr: &NodeAddr,
    slots: &[u16],
    access: &NodeAccess,
) -> Result<u64, Error> {
    if slots.is_empty() {
        return Ok(0);
    }
    // One pipeline per node and phase: a batch costs three round trips, not three per slot.
    let source_id = cluster_node_id(&source_addr.id);
    let mut importing = redis::pipe();
    for slot in slots {
        importing
            .cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(*slot)
            .arg("IMPORTING")
            .arg(&source_id)
            .ignore();
    }
    destination.run_pipeline(&importing).await?;
    let destination_id = cluster_node_id(&destination_addr.id);
    let mut migrating = redis::pipe();
    for slot in slots {
        migrating
            .cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(*slot)
            .arg("MIGRATING")
            .arg(&destination_id)
            .ignore();
    }
    source.run_pipeline(&migrating).await?;
    let mut migrate = redis::pipe();
    for slot in slots {
        let command = migrate
            .cmd("MERIDIAN.MIGRATE")
            .arg("SLOT")
            .arg(*slot)
            .arg(&destination_addr.ip)
            .arg(destination_addr.port)
            .arg("BATCH")
            .arg(MIGRATION_BATCH)
            .arg("TIMEOUT")
            .arg(MIGRATION_TIMEOUT_MS);
        // the source logs in to the destination as the operator does
        for arg in access.migrate_auth() {
            command.arg(arg);
        }
    }
    // Each slot answers once all its keys moved: wait for that longer than for an admin
    // command, on the same connection.
    source
        .connection
        .set_response_timeout(MIGRATION_RESPONSE_TIMEOUT);
    let moved: Result<Vec<u64>, _> = migrate.query_async(&mut source.connection).await;
    source
        .connection
        .set_response_timeout(source.response_timeout);
    let moved = moved.map_err(|error| source.error(error))?;
    Ok(moved.iter().sum())
}

fn is_stale_epoch(error: &redis::RedisError) -> bool {
    error.code() == Some("STALEEPOCH") || error.to_string().contains("STALEEPOCH")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_info_replication_of_primary_and_replica() {
        let primary = ReplicationInfo::parse(
            "# Replication\r\nrole:master\r\nconnected_slaves:1\r\nslave0:ip=10.0.0.7,port=6379,state=online,offset=4000,lag=1\r\nslave1:ip=10.0.0.8,state=online\r\nmaster_repl_offset:4242\r\n",
        );
        assert_eq!(
            primary,
            ReplicationInfo {
                role: ReplicationRole::Primary,
                offset: 4242,
                link_up: false,
                master_host: String::new(),
                connected_replicas: 1,
                attached: vec![AttachedReplica {
                    ip: "10.0.0.7".into(),
                    offset: 4000,
                }],
                ..ReplicationInfo::default()
            }
        );
        let replica = ReplicationInfo::parse(
            "role:slave\nmaster_host:127.0.11.4\nmaster_link_status:up\nslave_repl_offset:17\nmaster_repl_offset:20\nmaster_full_sync_refused:3\nmaster_replid:aaaa\nmaster_replid2:0000\n",
        );
        assert_eq!(replica.full_sync_refused, 3);
        assert_eq!(
            (replica.replid.as_str(), replica.replid2.as_str()),
            ("aaaa", "0000")
        );
        assert_eq!(replica.role, ReplicationRole::Replica);
        assert_eq!(replica.master_host, "127.0.11.4");
        assert_eq!(replica.offset, 17);
        assert!(replica.link_up);
    }
}
