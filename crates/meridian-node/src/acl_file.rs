//! The node's `--acl-file`: loaded at start (a bad file stops the node), by ACL
//! LOAD, and again whenever it changes (a bad version keeps the users in force).

use std::path::Path;
use std::sync::Arc;

use tokio::sync::watch;

use crate::error::AclFileError;
use crate::state::Shared;

/// Reads the file (off the async workers) and replaces the users with its own.
pub async fn load(shared: &Shared) -> Result<(), AclFileError> {
    let Some(path) = shared.acl_file.as_deref() else {
        return Ok(());
    };
    let text = tokio::fs::read(path).await.map_err(|error| {
        AclFileError(format!(
            "Error loading ACLs, opening file '{}': {error}",
            path.display()
        ))
    })?;
    apply(shared, path, &text)
}

/// Replaces the users with those of `text`; connections of users it no longer
/// has are closed, as Redis's ACL LOAD does.
fn apply(shared: &Shared, path: &Path, text: &[u8]) -> Result<(), AclFileError> {
    let text = std::str::from_utf8(text).map_err(|_| {
        AclFileError(format!(
            "Error loading ACLs, file '{}' is not UTF-8",
            path.display()
        ))
    })?;
    let requirepass = shared.requirepass();
    let removed = shared.acl.load(
        &path.display().to_string(),
        text,
        requirepass.as_deref().map(str::as_bytes),
    )?;
    shared.disconnect_users(&removed, 0);
    Ok(())
}

/// Reloads the file each time its contents change, until shutdown.
pub async fn watch(shared: Arc<Shared>, shutdown: watch::Receiver<bool>) {
    let Some(path) = shared.acl_file.clone() else {
        return;
    };
    crate::file_watch::on_change(vec![path.clone()], shutdown, |contents| {
        let text = contents.first().map(Vec::as_slice).unwrap_or_default();
        match apply(&shared, &path, text) {
            Ok(()) => tracing::info!(file = %path.display(), "ACL file reloaded"),
            Err(error) => tracing::warn!(
                file = %path.display(),
                %error,
                "changed ACL file does not load; the previous users stay in force"
            ),
        }
    })
    .await;
}
