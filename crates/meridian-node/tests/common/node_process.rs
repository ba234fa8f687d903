//! A meridian-node process on a loopback address of its own, for tests that run
//! several nodes (regions, tracking across regions). Killed on drop.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct NodeProcess {
    pub child: Child,
    pub port: u16,
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        // a test may have stopped it with SIGSTOP
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("free port")
}

impl NodeProcess {
    /// Starts a node with id `id` on `ip` (HTTP API off, 4 store shards) and waits
    /// until it accepts connections; `args` and `env` come on top.
    pub fn start(ip: &str, id: &str, args: &[&str], env: &[(&str, String)]) -> NodeProcess {
        let port = free_port(ip);
        let metrics_port = free_port(ip);
        let mut command = Command::new(env!("CARGO_BIN_EXE_meridian-node"));
        command
            .args(["--bind", ip, "--port", &port.to_string()])
            .args(["--metrics-port", &metrics_port.to_string()])
            .args(["--node-id", id, "--shards", "4", "--log", "warn"])
            .args(args)
            .env("MERIDIAN_HTTP_PORT", "0")
            .env_remove("MERIDIAN_CLUSTER")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.spawn().expect("start meridian-node");
        let node = NodeProcess { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect((ip, port)).is_err() {
            assert!(Instant::now() < deadline, "{id} did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        node
    }
}

/// Polls `check` every 20 ms; panics naming `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
