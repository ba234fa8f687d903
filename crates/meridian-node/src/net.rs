//! Socket helpers shared by the listeners, and the one stream type every
//! connection of the node reads and writes: plain TCP, or TLS accepted or dialed.

use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;

/// A connection: plain TCP, or TLS over it. Writes to a TLS stream are held in
/// records until flushed, so writers flush after each batch (a no-op on TCP).
pub enum Stream {
    Plain(TcpStream),
    /// A TLS connection this node accepted.
    Accepted(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// A TLS connection this node dialed.
    Dialed(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Stream {
    /// Whether the other side presented a client certificate that ca.crt verified
    /// (only an accepted TLS connection can have one).
    pub fn peer_certified(&self) -> bool {
        match self {
            Stream::Accepted(tls) => tls
                .get_ref()
                .1
                .peer_certificates()
                .is_some_and(|certs| !certs.is_empty()),
            _ => false,
        }
    }

    pub fn is_tls(&self) -> bool {
        !matches!(self, Stream::Plain(_))
    }

    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(tcp) => tcp,
            Stream::Accepted(tls) => tls.get_ref().0,
            Stream::Dialed(tls) => tls.get_ref().0,
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Stream::Accepted(tls) => Pin::new(&mut **tls).poll_read(cx, buf),
            Stream::Dialed(tls) => Pin::new(&mut **tls).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Stream::Accepted(tls) => Pin::new(&mut **tls).poll_write(cx, buf),
            Stream::Dialed(tls) => Pin::new(&mut **tls).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Stream::Accepted(tls) => Pin::new(&mut **tls).poll_write_vectored(cx, bufs),
            Stream::Dialed(tls) => Pin::new(&mut **tls).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(tcp) => tcp.is_write_vectored(),
            Stream::Accepted(tls) => tls.is_write_vectored(),
            Stream::Dialed(tls) => tls.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Stream::Accepted(tls) => Pin::new(&mut **tls).poll_flush(cx),
            Stream::Dialed(tls) => Pin::new(&mut **tls).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Stream::Accepted(tls) => Pin::new(&mut **tls).poll_shutdown(cx),
            Stream::Dialed(tls) => Pin::new(&mut **tls).poll_shutdown(cx),
        }
    }
}

/// Writes `answer` (a refusal) and closes the connection, within a second. What the
/// client sent is read and dropped after the answer: closing with unread input would
/// reset the connection and could discard the answer before the client read it.
pub async fn answer_and_close(mut stream: Stream, answer: &[u8]) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(answer).await?;
        stream.flush().await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}

/// Descriptors the node needs besides its RESP clients: listeners, replication, region
/// links, migrations, HTTP connections, files (redis-server reserves 32; the node's
/// HTTP API alone may hold its connection cap).
const RESERVED_FILES: u64 = 2048;

/// Raises the open-file limit toward what `maxclients` clients, the over-limit
/// connections waiting for a login (`pending`) and the node's own files need, as
/// redis-server does at start: the hard limit too when the process may (root, or
/// CAP_SYS_RESOURCE), else the soft limit up to the hard one. Returns the soft limit
/// in force afterwards and the number that was wanted.
pub fn raise_open_files_limit(maxclients: u64, pending: u64) -> (u64, u64) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let wanted = maxclients
        .saturating_add(pending)
        .saturating_add(RESERVED_FILES);
    let current = getrlimit(Resource::Nofile);
    let soft = current.current.unwrap_or(u64::MAX);
    if soft >= wanted {
        return (soft, wanted);
    }
    let hard = current.maximum.unwrap_or(u64::MAX);
    let both = Rlimit {
        current: Some(wanted),
        maximum: Some(hard.max(wanted)),
    };
    if setrlimit(Resource::Nofile, both).is_ok() {
        return (wanted, wanted);
    }
    let within_hard = Rlimit {
        current: Some(hard.min(wanted)),
        maximum: current.maximum,
    };
    if setrlimit(Resource::Nofile, within_hard).is_ok() {
        return (hard.min(wanted), wanted);
    }
    (soft, wanted)
}
