//! Files the node re-reads when they change: Kubernetes updates a mounted Secret
//! or ConfigMap in place (an atomic symlink swap), without a signal, so the files
//! are polled and their contents compared. Used by the region-link TLS
//! certificates and the ACL file.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;

/// How often watched files are read again.
pub const POLL_INTERVAL: Duration = Duration::from_secs(5);

/// The contents of `paths`, read off the async workers; a file that cannot be
/// read counts as empty (its next good version is a change).
pub async fn read_all(paths: &[PathBuf]) -> Vec<Vec<u8>> {
    let mut contents = Vec::with_capacity(paths.len());
    for path in paths {
        contents.push(tokio::fs::read(path).await.unwrap_or_default());
    }
    contents
}

/// Calls `changed` with the new contents whenever the files differ from what was
/// last seen (first: their contents when the watch starts), until shutdown. A
/// change is reported once, even when `changed` cannot use it: a broken file is
/// logged once, not every tick.
pub async fn on_change(
    paths: Vec<PathBuf>,
    mut shutdown: watch::Receiver<bool>,
    mut changed: impl FnMut(&[Vec<u8>]),
) {
    let mut seen = read_all(&paths).await;
    let mut ticker = tokio::time::interval(POLL_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => return,
        }
        let current = read_all(&paths).await;
        if current != seen {
            seen = current;
            changed(&seen);
        }
    }
}
