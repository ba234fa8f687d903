//! A TCP proxy that delays every byte by a fixed one-way latency in each
//! direction, to emulate the round trip between regions on loopback.
//!
//! Each direction is a reader that stamps every chunk with its release time
//! and a writer that forwards chunks in order once their time has come: the
//! delay is added once per chunk, not per read, so the link keeps its
//! throughput and order (a sleep per read would serialize the stream and cut
//! throughput to one chunk per delay).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// A running proxy; stops accepting (existing connections end with their peers) on drop.
pub struct DelayProxy {
    accept: JoinHandle<()>,
}

impl DelayProxy {
    /// Listens on `listen` and forwards to `upstream`, delaying each direction by `one_way`.
    pub async fn start(
        listen: SocketAddr,
        upstream: SocketAddr,
        one_way: Duration,
    ) -> Result<DelayProxy> {
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("proxy listen on {listen}"))?;
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::join!(
                        pump(client_read, server_write, one_way),
                        pump(server_read, client_write, one_way)
                    );
                });
            }
        });
        Ok(DelayProxy { accept })
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Copies `from` to `to`, releasing each chunk `delay` after it was read.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay: Duration) {
    let (queue, mut released) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reader = async move {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => {
                    let due = Instant::now() + delay;
                    if queue.send((due, buffer[..read].to_vec())).is_err() {
                        break;
                    }
                }
            }
        }
        // dropping the sender lets the writer finish the backlog, then close
    };
    let writer = async move {
        while let Some((due, chunk)) = released.recv().await {
            if !delay.is_zero() {
                tokio::time::sleep_until(due).await;
            }
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}
