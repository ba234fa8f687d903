//! TLS of every port that carries data, from the files of a kubernetes.io/tls Secret
//! (`tls.crt`, `tls.key`, `ca.crt`, as cert-manager writes them): the RESP port, the
//! HTTP API and the region-link port accept only TLS, and the node's own outbound
//! connections (replication, slot migration, pattern fan-out, region links) dial
//! with TLS, verifying the other node against `ca.crt` and presenting `tls.crt` as
//! their client certificate. Only the metrics/health port stays plain text: kubelet
//! probes and Prometheus read it, and it serves no keys.
//!
//! Client certificates: on the RESP port they are verified when a client presents
//! one; with `--tls-require-peer-certs` a replica must have presented one before
//! PSYNC/SYNC, and the region-link port refuses a handshake without one (mTLS
//! between the cluster's nodes, while applications still connect with a CA only).
//!
//! The files are checked every few seconds (`crate::file_watch`) and reloaded when they change (a renewed
//! certificate takes effect without a restart); connections already open keep
//! their session, and files that do not load keep the previous ones in use.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::net::Stream;

/// A peer must finish the TLS handshake within this time.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the TLS files are and how they are used (from the command line).
#[derive(Clone, Debug)]
pub struct TlsSettings {
    pub dir: PathBuf,
    /// The name other nodes' certificates must carry; None: the dialed host.
    pub server_name: Option<String>,
    /// Replicas and region links must present a client certificate issued by ca.crt.
    pub require_peer_certs: bool,
}

/// The loaded certificates: one acceptor per kind of listener, one connector.
#[derive(Clone)]
pub struct NodeTls {
    /// RESP and HTTP API: client certificates verified when presented.
    pub clients: TlsAcceptor,
    /// Region links: client certificates required with `require_peer_certs`.
    pub links: TlsAcceptor,
    pub dialer: ClientTls,
    pub require_peer_certs: bool,
}

/// How the node dials other nodes over TLS.
#[derive(Clone)]
pub struct ClientTls {
    connector: TlsConnector,
    /// The name other nodes' certificates must carry; None: the dialed host.
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// The same certificates loaded once (a reload makes a different value).
impl PartialEq for ClientTls {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(self.connector.config(), other.connector.config())
            && self.server_name == other.server_name
    }
}

impl Eq for ClientTls {}

impl ClientTls {
    /// The TLS handshake over a connected `stream` to `host` (an IP address or DNS
    /// name, verified unless a fixed server name was configured).
    pub async fn connect(&self, stream: TcpStream, host: &str) -> std::io::Result<Stream> {
        let name = match &self.server_name {
            Some(name) => name.clone(),
            None => host_name(host)?,
        };
        let handshake = self.connector.connect(name, stream);
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
            Ok(Ok(stream)) => Ok(Stream::Dialed(Box::new(stream))),
            Ok(Err(error)) => Err(std::io::Error::new(
                error.kind(),
                format!("TLS handshake with {host} failed: {error}"),
            )),
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("TLS handshake with {host} timed out"),
            )),
        }
    }
}

/// The TLS handshake of an accepted connection, bounded by [`HANDSHAKE_TIMEOUT`].
pub async fn accept(acceptor: &TlsAcceptor, stream: TcpStream) -> std::io::Result<Stream> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => Ok(Stream::Accepted(Box::new(stream))),
        Ok(Err(error)) => Err(std::io::Error::new(
            error.kind(),
            format!("TLS handshake failed: {error}"),
        )),
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "TLS handshake timed out",
        )),
    }
}

/// The TLS name of `host` (`host`, `host:port`, `[v6]:port`): an IP address or DNS name.
fn host_name(host: &str) -> std::io::Result<ServerName<'static>> {
    let host = match host.rsplit_once(':') {
        // `host:port`, but not a bare IPv6 address
        Some((name, port)) if !name.contains(':') || name.ends_with(']') => {
            if port.parse::<u16>().is_ok() {
                name
            } else {
                host
            }
        }
        _ => host,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("'{host}' is neither an IP address nor a DNS name usable for TLS"),
        )
    })
}

impl NodeTls {
    /// Loads `tls.crt`, `tls.key` and `ca.crt`; every file is required, and an error
    /// names the file that is missing or unusable.
    pub fn load(settings: &TlsSettings) -> Result<NodeTls, String> {
        let paths = file_paths(&settings.dir);
        let mut contents = Vec::with_capacity(paths.len());
        for path in &paths {
            contents
                .push(std::fs::read(path).map_err(|error| format!("{}: {error}", path.display()))?);
        }
        NodeTls::from_files(settings, &contents)
    }

    /// Builds the TLS configurations from the contents of `tls.crt`, `tls.key` and
    /// `ca.crt` (in that order).
    fn from_files(settings: &TlsSettings, contents: &[Vec<u8>]) -> Result<NodeTls, String> {
        let server_name = settings
            .server_name
            .as_deref()
            .map(|name| {
                ServerName::try_from(name.to_string()).map_err(|_| {
                    format!("--tls-server-name '{name}' is not a DNS name or IP address")
                })
            })
            .transpose()?;
        let [cert_path, key_path, ca_path] = file_paths(&settings.dir);
        let [cert_pem, key_pem, ca_pem] = contents else {
            return Err("TLS setup: tls.crt, tls.key and ca.crt expected".to_string());
        };
        let certs = read_certs(&cert_path, cert_pem)?;
        let key = || {
            PrivateKeyDer::from_pem_slice(key_pem)
                .map_err(|error| format!("{}: no usable private key: {error}", key_path.display()))
        };
        let mut roots = rustls::RootCertStore::empty();
        for ca in read_certs(&ca_path, ca_pem)? {
            roots
                .add(ca)
                .map_err(|error| format!("{}: {error}", ca_path.display()))?;
        }
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = |optional: bool| {
            let builder =
                WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone());
            let builder = if optional {
                builder.allow_unauthenticated()
            } else {
                builder
            };
            builder
                .build()
                .map_err(|error| format!("{}: {error}", ca_path.display()))
        };
        let cert_error = |error: rustls::Error| {
            format!("{} / {}: {error}", cert_path.display(), key_path.display())
        };
        let server = |optional: bool| -> Result<TlsAcceptor, String> {
            let config = rustls::ServerConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|error| format!("TLS setup: {error}"))?
                .with_client_cert_verifier(verifier(optional)?)
                .with_single_cert(certs.clone(), key()?)
                .map_err(cert_error)?;
            Ok(TlsAcceptor::from(Arc::new(config)))
        };
        let client = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|error| format!("TLS setup: {error}"))?
            .with_root_certificates(roots.clone())
            .with_client_auth_cert(certs.clone(), key()?)
            .map_err(cert_error)?;
        Ok(NodeTls {
            clients: server(true)?,
            links: server(!settings.require_peer_certs)?,
            dialer: ClientTls {
                connector: TlsConnector::from(Arc::new(client)),
                server_name,
            },
            require_peer_certs: settings.require_peer_certs,
        })
    }
}

/// `tls.crt`, `tls.key` and `ca.crt` in `dir`.
fn file_paths(dir: &Path) -> [PathBuf; 3] {
    ["tls.crt", "tls.key", "ca.crt"].map(|name| dir.join(name))
}

fn read_certs(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("{}: {error}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate found", path.display()));
    }
    Ok(certs)
}

/// The node's TLS as it stands: none, or the certificates last loaded.
#[derive(Default)]
pub struct Tls {
    settings: Option<TlsSettings>,
    current: RwLock<Option<NodeTls>>,
}

impl Tls {
    /// Loads the files once (an error stops the node from starting); no settings: no TLS.
    pub fn start(settings: Option<TlsSettings>) -> Result<Tls, String> {
        let current = settings.as_ref().map(NodeTls::load).transpose()?;
        Ok(Tls {
            settings,
            current: RwLock::new(current),
        })
    }

    /// The certificates in use (None: every port speaks plain text).
    pub fn current(&self) -> Option<NodeTls> {
        self.current.read().clone()
    }

    /// How to dial another node (None: plain TCP).
    pub fn dialer(&self) -> Option<ClientTls> {
        self.current.read().as_ref().map(|tls| tls.dialer.clone())
    }

    /// Connects to `host:port`, with TLS when the node has it.
    pub async fn dial(&self, host: &str, port: u16) -> std::io::Result<Stream> {
        let stream = TcpStream::connect((host, port)).await?;
        stream.set_nodelay(true)?;
        match self.dialer() {
            Some(dialer) => dialer.connect(stream, host).await,
            None => Ok(Stream::Plain(stream)),
        }
    }

    /// Whether replicas and region links must present a client certificate.
    pub fn requires_peer_certs(&self) -> bool {
        self.current
            .read()
            .as_ref()
            .is_some_and(|tls| tls.require_peer_certs)
    }

    /// Reloads the files when their content changes, until shutdown. Kubernetes
    /// updates a mounted Secret in place (cert-manager renewing it): new connections
    /// get the new certificate and trust the new CA. Files that do not load keep the
    /// previous certificates in use, with a warning (once per change).
    pub async fn reload_on_change(self: Arc<Self>, shutdown: watch::Receiver<bool>) {
        let Some(settings) = self.settings.clone() else {
            return;
        };
        let paths = file_paths(&settings.dir).to_vec();
        crate::file_watch::on_change(paths, shutdown, |contents| {
            match NodeTls::from_files(&settings, contents) {
                Ok(tls) => {
                    *self.current.write() = Some(tls);
                    tracing::info!(dir = %settings.dir.display(), "TLS certificates reloaded");
                }
                Err(error) => {
                    tracing::warn!(%error, "changed TLS certificates do not load; the previous ones stay in use");
                }
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_from_addresses() {
        let name = |text: &str| host_name(text).map(|name| name.to_str().into_owned());
        assert_eq!(name("10.0.0.1:6379").unwrap(), "10.0.0.1");
        assert_eq!(name("10.0.0.1").unwrap(), "10.0.0.1");
        assert_eq!(name("[::1]:6379").unwrap(), "::1");
        assert_eq!(name("::1").unwrap(), "::1");
        assert_eq!(name("node-0.cache.svc:6379").unwrap(), "node-0.cache.svc");
        assert!(name("not a host").is_err());
    }
}
