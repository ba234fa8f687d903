//! A TCP proxy for tests that delays each direction by a fixed one-way
//! latency and can cut (partition) and restore the path.
//!
//! Every chunk read is stamped with its release time and queued; a separate
//! writer forwards chunks in order once due, so the delay is paid once per
//! chunk while throughput and order are kept (a sleep per read would
//! serialize the stream).
//!
//! Include with `#[path = "common/delay_proxy.rs"] mod delay_proxy;` so tests
//! that use `mod common;` are unaffected.
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

struct State {
    one_way: Duration,
    partitioned: AtomicBool,
    stopped: AtomicBool,
    /// Both ends of every open proxied connection, to cut them on partition.
    open: Mutex<Vec<TcpStream>>,
}

impl State {
    fn cut_all(&self) {
        let streams = std::mem::take(&mut *self.open.lock().expect("proxy lock"));
        for stream in streams {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

pub struct DelayProxy {
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl DelayProxy {
    /// Listens on `listen` (port 0 picks one) and forwards to `upstream`.
    pub fn start(listen: SocketAddr, upstream: SocketAddr, one_way: Duration) -> DelayProxy {
        let listener = TcpListener::bind(listen).expect("proxy listen");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let addr = listener.local_addr().expect("proxy addr");
        let state = Arc::new(State {
            one_way,
            partitioned: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            open: Mutex::new(Vec::new()),
        });
        let accept_state = state.clone();
        std::thread::spawn(move || accept_loop(listener, upstream, accept_state));
        DelayProxy { addr, state }
    }

    /// Drops every open connection and closes new ones at once until [`heal`](Self::heal).
    pub fn partition(&self) {
        self.state.partitioned.store(true, Ordering::SeqCst);
        self.state.cut_all();
    }

    pub fn heal(&self) {
        self.state.partitioned.store(false, Ordering::SeqCst);
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.state.stopped.store(true, Ordering::SeqCst);
        self.state.cut_all();
    }
}

fn accept_loop(listener: TcpListener, upstream: SocketAddr, state: Arc<State>) {
    while !state.stopped.load(Ordering::SeqCst) {
        let client = match listener.accept() {
            Ok((client, _)) => client,
            Err(error) if error.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            Err(_) => continue,
        };
        if state.partitioned.load(Ordering::SeqCst) {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        let _ = client.set_nonblocking(false);
        let Ok(server) = TcpStream::connect(upstream) else {
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let clones = (
            client.try_clone(),
            server.try_clone(),
            client.try_clone(),
            server.try_clone(),
        );
        let (Ok(client_keep), Ok(server_keep), Ok(client_write), Ok(server_write)) = clones else {
            continue;
        };
        state
            .open
            .lock()
            .expect("proxy lock")
            .extend([client_keep, server_keep]);
        pump(client, server_write, state.one_way);
        pump(server, client_write, state.one_way);
    }
}

/// Forwards `from` to `to` on two threads: a reader that stamps chunks and a
/// writer that releases them `delay` after they were read.
fn pump(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    let (queue, released) = mpsc::channel::<(Instant, Vec<u8>)>();
    std::thread::spawn(move || {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(read) => {
                    if queue
                        .send((Instant::now() + delay, buffer[..read].to_vec()))
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    });
    std::thread::spawn(move || {
        for (due, chunk) in released {
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if to.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}
