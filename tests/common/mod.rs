//! Real `meridian-node` processes on 127.0.0.1 for the operator's integration tests.
//!
//! Uses the binary named by `MERIDIAN_NODE_BIN`, else `meridian-node` next to the test's
//! target directory (`cargo build -p meridian-node` first).
#![allow(dead_code)]

pub mod plans;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use meridian_topology::NodeAddr;

pub struct Node {
    pub child: Child,
    pub addr: NodeAddr,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn node_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("MERIDIAN_NODE_BIN") {
        return Some(PathBuf::from(path));
    }
    // target/debug/deps/<test> → target/debug/meridian-node
    let exe = std::env::current_exe().ok()?;
    let candidate = exe.parent()?.parent()?.join("meridian-node");
    candidate.exists().then_some(candidate)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free loopback port")
}

pub async fn start_node(binary: &PathBuf, id: &str, password: Option<&str>) -> Node {
    start_node_with(binary, id, password, &[]).await
}

/// Like [`start_node`], with extra environment (later entries override the defaults).
pub async fn start_node_with(
    binary: &PathBuf,
    id: &str,
    password: Option<&str>,
    extra_env: &[(&str, String)],
) -> Node {
    let port = free_port();
    let mut command = Command::new(binary);
    command
        .env("MERIDIAN_BIND", "127.0.0.1")
        .env("MERIDIAN_PORT", port.to_string())
        .env("MERIDIAN_METRICS_PORT", free_port().to_string())
        // Several nodes share 127.0.0.1 here; the HTTP API (8080) is not under test.
        .env("MERIDIAN_HTTP_PORT", "0")
        .env("MERIDIAN_LINK_PORT", "0")
        .env("MERIDIAN_NODE_ID", id)
        .env("MERIDIAN_SHARDS", "4")
        // as in the ConfigMap the operator gives every node it creates
        .env("MERIDIAN_MANAGED", "true")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(password) = password {
        command.env("MERIDIAN_PASSWORD", password);
    }
    for (key, value) in extra_env {
        command.env(key, value);
    }
    let child = command.spawn().expect("start meridian-node");
    let node = Node {
        child,
        addr: NodeAddr {
            id: id.to_string(),
            ip: "127.0.0.1".to_string(),
            port,
        },
    };
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return node;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("meridian-node {id} did not listen on port {port}");
}
