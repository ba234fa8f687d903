//! The threads that serve client connections, one runtime each.
//!
//! With several I/O threads the node runs one single-threaded runtime per thread,
//! and a connection stays on the thread it was given when accepted, as KeyDB's and
//! Dragonfly's threads keep theirs. tokio's work-stealing runtime moved connections
//! between its workers: each reply's wake-up went through another thread's queue and a
//! futex, which cost more than the request (two threads on two cores, `-P 1`: 5.5 us of
//! kernel time per request against 3.3 us here, 1.4x the requests per CPU second).
//! The thread that runs `run` (with the accept loop and the background tasks) serves
//! its share of connections too.
//!
//! A Lua script runs on its connection's thread until it ends, so the other
//! connections of that thread wait for it, as every client of Redis does; SCRIPT KILL
//! from a connection of another thread stops it, the time limit in any case.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The connection threads besides the one that runs the node.
#[derive(Default)]
pub struct IoThreads {
    /// Live connections of the node's own thread.
    own: Arc<AtomicUsize>,
    threads: Vec<IoThread>,
}

struct IoThread {
    runtime: Handle,
    connections: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Where a new connection runs.
pub enum Placement {
    /// On the node's own thread (`tokio::spawn`).
    Here(Seat),
    /// On another I/O thread's runtime.
    Thread(Handle, Seat),
}

/// A connection's place on its thread; counts it until dropped.
pub struct Seat(Arc<AtomicUsize>);

impl Drop for Seat {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl IoThreads {
    /// Starts `extra` threads (`io-threads` minus the node's own), named `io-1`, ....
    pub fn start(extra: usize) -> std::io::Result<IoThreads> {
        let mut threads = Vec::with_capacity(extra);
        for index in 1..=extra {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (stop, stopped) = oneshot::channel::<()>();
            let handle = runtime.handle().clone();
            let thread = std::thread::Builder::new()
                .name(format!("io-{index}"))
                .spawn(move || {
                    // ends when the node stopped (or the sender was dropped); dropping the
                    // runtime here cancels whatever was left on it
                    let _ = runtime.block_on(stopped);
                })?;
            threads.push(IoThread {
                runtime: handle,
                connections: Arc::default(),
                stop: Some(stop),
                thread: Some(thread),
            });
        }
        Ok(IoThreads {
            own: Arc::default(),
            threads,
        })
    }

    /// All threads serving connections, the node's own included.
    pub fn count(&self) -> usize {
        self.threads.len() + 1
    }

    /// The thread with the fewest live connections (the node's own on a tie, since it
    /// comes first), and a seat there.
    pub fn place(&self) -> Placement {
        let mut best: Option<&IoThread> = None;
        let mut least = self.own.load(Ordering::Relaxed);
        for thread in &self.threads {
            let load = thread.connections.load(Ordering::Relaxed);
            if load < least {
                least = load;
                best = Some(thread);
            }
        }
        match best {
            None => {
                self.own.fetch_add(1, Ordering::Relaxed);
                Placement::Here(Seat(self.own.clone()))
            }
            Some(thread) => {
                thread.connections.fetch_add(1, Ordering::Relaxed);
                Placement::Thread(thread.runtime.clone(), Seat(thread.connections.clone()))
            }
        }
    }
}

impl Drop for IoThreads {
    fn drop(&mut self) {
        for thread in &mut self.threads {
            if let Some(stop) = thread.stop.take() {
                let _ = stop.send(());
            }
        }
        for thread in &mut self.threads {
            if let Some(join) = thread.thread.take() {
                let _ = join.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_go_to_the_least_loaded_thread() {
        let threads = IoThreads::start(2).expect("threads");
        assert_eq!(threads.count(), 3);
        let where_ = |placement: &Placement| match placement {
            Placement::Here(_) => 0,
            Placement::Thread(runtime, _) => {
                1 + threads
                    .threads
                    .iter()
                    .position(|thread| thread.runtime.id() == runtime.id())
                    .expect("one of the threads")
            }
        };
        let first: Vec<Placement> = (0..3).map(|_| threads.place()).collect();
        assert_eq!(first.iter().map(where_).collect::<Vec<_>>(), [0, 1, 2]);
        // a connection that ended frees its seat: the next one takes that thread
        let mut first = first;
        first.remove(1);
        assert_eq!(where_(&threads.place()), 1);
        // and what is spawned there runs on that thread
        let Placement::Thread(runtime, _seat) = threads.place() else {
            panic!("the node's thread is not the least loaded");
        };
        let (sender, receiver) = std::sync::mpsc::channel();
        runtime.spawn(async move {
            let _ = sender.send(std::thread::current().name().map(str::to_owned));
        });
        assert_eq!(receiver.recv().expect("ran"), Some("io-1".to_owned()));
    }
}
