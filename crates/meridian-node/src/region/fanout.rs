//! Pattern invalidation inside the region: a key matching `INVALIDATE user:*`
//! may live on any primary, so the node that takes the command tells every
//! other primary of its topology map (`INVALIDATE <pattern> LOCAL`). Peer
//! regions are reached by the region links instead, where a pattern event goes
//! to every primary.

use std::time::Duration;

use crate::migration::PeerConnection;
use crate::protocol::Reply;
use crate::state::Shared;

/// Per-primary bound: the reply to the client waits for the whole fan-out.
const FANOUT_TIMEOUT: Duration = Duration::from_secs(2);

/// The other primaries of this region that must drop `pattern` too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fanout {
    pub pattern: Vec<u8>,
    /// `ip:port` of every other primary.
    pub targets: Vec<(String, u16)>,
    pub password: Option<String>,
    /// The node's TLS dialer (None: plain TCP).
    pub tls: Option<crate::tls::ClientTls>,
    /// `--region-link-user`: logs in as this ACL user (which needs `+invalidate ~*`).
    pub user: Option<String>,
}

impl Fanout {
    /// `None` when this node is the only primary it knows (standalone, or one shard).
    pub fn plan(shared: &Shared, pattern: &[u8]) -> Option<Fanout> {
        let map = shared.topology.load_full()?;
        let targets: Vec<(String, u16)> = map
            .shards
            .iter()
            .map(|shard| &shard.primary)
            .filter(|primary| primary.id != shared.node_id)
            .map(|primary| (primary.ip.clone(), primary.port))
            .collect();
        (!targets.is_empty()).then(|| Fanout {
            pattern: pattern.to_vec(),
            targets,
            password: shared.requirepass(),
            tls: shared.tls.dialer(),
            user: shared.regions.settings.link_user.clone(),
        })
    }

    /// Sends the pattern to every target at once; returns `ip:port (reason)` of each
    /// primary that did not confirm.
    pub async fn run(self) -> Vec<String> {
        // spawned before any is awaited, so the targets are asked concurrently
        let calls: Vec<_> = self
            .targets
            .into_iter()
            .map(|(ip, port)| {
                let pattern = self.pattern.clone();
                let password = self.password.clone();
                let tls = self.tls.clone();
                let user = self.user.clone();
                tokio::spawn(async move {
                    invalidate_on(
                        &ip,
                        port,
                        tls.as_ref(),
                        &pattern,
                        user.as_deref(),
                        password.as_deref(),
                    )
                    .await
                    .err()
                    .map(|error| format!("{ip}:{port} ({error})"))
                })
            })
            .collect();
        let mut failed = Vec::new();
        for call in calls {
            match call.await {
                Ok(None) => {}
                Ok(Some(error)) => failed.push(error),
                Err(error) => failed.push(error.to_string()),
            }
        }
        failed
    }
}

async fn invalidate_on(
    ip: &str,
    port: u16,
    tls: Option<&crate::tls::ClientTls>,
    pattern: &[u8],
    user: Option<&str>,
    password: Option<&str>,
) -> Result<(), String> {
    let mut connection = PeerConnection::connect(ip, port, tls, FANOUT_TIMEOUT)
        .await
        .map_err(|error| error.to_string())?;
    let mut commands: Vec<Vec<&[u8]>> = Vec::with_capacity(2);
    match (user, password) {
        (Some(user), password) => commands.push(vec![
            b"AUTH",
            user.as_bytes(),
            password.unwrap_or_default().as_bytes(),
        ]),
        (None, Some(password)) => commands.push(vec![b"AUTH", password.as_bytes()]),
        (None, None) => {}
    }
    commands.push(vec![b"INVALIDATE", pattern, b"LOCAL"]);
    let replies = connection
        .pipeline(&commands)
        .await
        .map_err(|error| error.to_string())?;
    for reply in replies {
        if let Reply::Error(error) = reply {
            return Err(error);
        }
    }
    Ok(())
}

/// Error reply when some primaries of the region did not confirm.
pub fn fanout_message(failed: &[String]) -> String {
    format!(
        "ERR invalidation applied on this node but not confirmed by primaries: {}",
        failed.join(", ")
    )
}
