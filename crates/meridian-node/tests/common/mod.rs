//! Test harness: starts the real `meridian-node` binary on loopback and talks
//! raw RESP to it.
#![allow(dead_code)]

pub mod node_process;
pub mod redis_server;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Node {
    pub child: Child,
    pub port: u16,
    pub metrics_port: u16,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("free port")
}

/// Whether the node on `port` is process `pid` and serving. A bare TCP connect
/// is not enough: the kernel accepts connections on a listener the node bound
/// before it found another of its ports taken by a parallel test (and exited),
/// and a port can belong to another test's node.
fn answers_as(port: u16, pid: u32) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let asked = stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .and_then(|()| stream.write_all(&encode(&[b"INFO", b"server"])));
    if asked.is_err() {
        return false;
    }
    let mut reply = Vec::new();
    let mut chunk = [0u8; 4096];
    // the section is a few hundred bytes; read until the pid line arrived
    loop {
        let text = String::from_utf8_lossy(&reply);
        if text.contains("\r\ntcp_port:") {
            return text.contains(&format!("\r\nprocess_id:{pid}\r\n"));
        }
        // -NOAUTH: a node with a password serves (its pid cannot be asked)
        if text.starts_with('-') && text.ends_with("\r\n") {
            return true;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return false,
            Ok(read) => reply.extend_from_slice(&chunk[..read]),
        }
    }
}

impl Node {
    pub fn start() -> Node {
        Node::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Node {
        Node::start_named("test-node-0", 16, extra)
    }

    /// Starts a node with id `node_id` and `shards` store shards on fresh loopback
    /// ports. A port picked by [`free_port`] can be taken by a parallel test before the
    /// node binds it, so a node that exits at startup is retried with new ports.
    pub fn start_named(node_id: &str, shards: u32, extra: &[&str]) -> Node {
        for _ in 0..5 {
            if let Some(node) = Node::spawn_on(node_id, shards, extra, free_port(), free_port()) {
                return node;
            }
        }
        panic!("node {node_id} could not bind a free port");
    }

    /// Kills the process with SIGKILL (no shutdown, no data kept: the node has no
    /// persistence) and starts `node_id` again on the same ports, as a container
    /// restarted in place does.
    pub fn kill_and_restart(&mut self, node_id: &str, shards: u32, extra: &[&str]) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // the ports were the dead process's; a parallel test may grab one in between
        for _ in 0..50 {
            if let Some(node) = Node::spawn_on(node_id, shards, extra, self.port, self.metrics_port)
            {
                *self = node;
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("node {node_id} could not restart on port {}", self.port);
    }

    /// Starts a node on the given ports; `None` when it exited (a port taken).
    fn spawn_on(
        node_id: &str,
        shards: u32,
        extra: &[&str],
        port: u16,
        metrics_port: u16,
    ) -> Option<Node> {
        let child = Command::new(env!("CARGO_BIN_EXE_meridian-node"))
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--metrics-port", &metrics_port.to_string()])
            .args(["--node-id", node_id, "--shards", &shards.to_string()])
            .args(["--log", "warn"])
            .args(extra)
            // several nodes share 127.0.0.1: the HTTP API (default 8080) stays off
            .env("MERIDIAN_HTTP_PORT", "0")
            .env("MERIDIAN_LINK_PORT", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start meridian-node");
        let mut node = Node {
            child,
            port,
            metrics_port,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if answers_as(port, node.child.id()) {
                node.wait_probe_gone();
                return Some(node);
            }
            if matches!(node.child.try_wait(), Ok(Some(_))) {
                return None;
            }
            assert!(Instant::now() < deadline, "node {node_id} did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn redis(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .expect("client")
            .get_connection()
            .expect("connection")
    }

    pub fn raw(&self) -> Raw {
        Raw::connect(self.port)
    }

    /// GET over HTTP on the metrics port: (status code, body).
    /// The start-up probe's connection counts as a client until the node has read its
    /// close; on a busy machine that can come after the test's first commands. Waits (up
    /// to 2 s, through the metrics, which are no RESP client) until none is counted, so
    /// tests that count clients start from zero.
    fn wait_probe_gone(&self) {
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.metrics_port)) else {
                return;
            };
            stream.set_read_timeout(Some(Duration::from_secs(2))).ok();
            let mut response = String::new();
            let asked = write!(stream, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
                .and_then(|()| stream.read_to_string(&mut response));
            if asked.is_err() || !response.starts_with("HTTP/1.1 200") {
                return;
            }
            if response.contains("\nmeridian_connected_clients 0\n") {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn http_get(&self, path: &str) -> (u16, String) {
        let mut stream =
            TcpStream::connect(("127.0.0.1", self.metrics_port)).expect("metrics port");
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok();
        write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read");
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or(0);
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_string())
            .unwrap_or_default();
        (status, body)
    }

    /// A `/proc/<pid>/status` field of the node in kB (VmRSS, VmHWM).
    pub fn status_kb(&self, field: &str) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("status");
        status
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{field}:")))
            .and_then(|value| value.split_whitespace().next())
            .and_then(|kb| kb.parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc status"))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The node's exit status once it exited, `None` if it still runs after `within`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(exit) = self.child.try_wait().expect("wait") {
                return Some(exit);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` (`STOP`, `CONT`, ...) to the node's process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal} {}", self.pid());
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A decoded reply, enough for assertions.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    Nil,
    Array(Vec<Reply>),
    Map(Vec<(Reply, Reply)>),
    Set(Vec<Reply>),
    Push(Vec<Reply>),
    Double(String),
    Verbatim(String),
}

impl Reply {
    pub fn bulk(text: &str) -> Reply {
        Reply::Bulk(text.as_bytes().to_vec())
    }

    pub fn ok() -> Reply {
        Reply::Simple("OK".into())
    }

    pub fn err(text: &str) -> Reply {
        Reply::Error(text.into())
    }
}

pub struct Raw {
    pub reader: BufReader<TcpStream>,
    pub writer: TcpStream,
}

pub fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend(format!("${}\r\n", arg.len()).into_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

impl Raw {
    pub fn connect(port: u16) -> Raw {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
        stream.set_nodelay(true).ok();
        Raw {
            reader: BufReader::new(stream.try_clone().expect("clone")),
            writer: stream,
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("write");
    }

    /// Sends a request the server refuses part way (a protocol error): it replies and
    /// closes while the rest is still being written, so the write may fail with a
    /// broken pipe or a reset; the reply is read after that.
    pub fn send_refused(&mut self, bytes: &[u8]) {
        match self.writer.write_all(bytes) {
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                ) => {}
            other => other.expect("write"),
        }
    }

    pub fn cmd(&mut self, args: &[&str]) -> Reply {
        let args: Vec<&[u8]> = args.iter().map(|arg| arg.as_bytes()).collect();
        self.send(&encode(&args));
        self.read()
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("read line");
        assert!(line.ends_with("\r\n"), "truncated reply line {line:?}");
        line.truncate(line.len() - 2);
        line
    }

    pub fn read(&mut self) -> Reply {
        let line = self.line();
        let (kind, rest) = line.split_at(1);
        let count = || rest.parse::<i64>().expect("length");
        match kind {
            "+" => Reply::Simple(rest.to_string()),
            "-" => Reply::Error(rest.to_string()),
            ":" => Reply::Int(count()),
            "_" => Reply::Nil,
            "," => Reply::Double(rest.to_string()),
            "$" | "=" => {
                let len = count();
                if len < 0 {
                    return Reply::Nil;
                }
                let mut data = vec![0u8; len as usize + 2];
                self.reader.read_exact(&mut data).expect("bulk");
                data.truncate(len as usize);
                if kind == "=" {
                    Reply::Verbatim(String::from_utf8_lossy(&data[4..]).into_owned())
                } else {
                    Reply::Bulk(data)
                }
            }
            "*" | "~" | ">" => {
                let len = count();
                if len < 0 {
                    return Reply::Nil;
                }
                let items = (0..len).map(|_| self.read()).collect();
                match kind {
                    "*" => Reply::Array(items),
                    "~" => Reply::Set(items),
                    _ => Reply::Push(items),
                }
            }
            "%" => Reply::Map((0..count()).map(|_| (self.read(), self.read())).collect()),
            other => panic!("unexpected reply type {other:?} in {line:?}"),
        }
    }

    /// Sends a command and returns its reply's exact bytes (a null bulk and a null
    /// array differ here, as they do for clients).
    pub fn cmd_bytes(&mut self, args: &[&[u8]]) -> Vec<u8> {
        self.send(&encode(args));
        let mut bytes = Vec::new();
        self.read_bytes(&mut bytes);
        bytes
    }

    /// Appends one whole reply's bytes to `bytes`.
    pub fn read_bytes(&mut self, bytes: &mut Vec<u8>) {
        let start = bytes.len();
        self.reader.read_until(b'\n', bytes).expect("reply line");
        let line = String::from_utf8_lossy(&bytes[start..]).into_owned();
        assert!(line.ends_with("\r\n"), "truncated reply line {line:?}");
        let (kind, rest) = line.trim_end().split_at(1);
        let count = || rest.parse::<i64>().expect("length");
        match kind {
            "$" | "=" | "!" if count() >= 0 => {
                let mut data = vec![0u8; count() as usize + 2];
                self.reader.read_exact(&mut data).expect("bulk");
                bytes.extend_from_slice(&data);
            }
            "*" | "~" | ">" | "%" | "|" if count() > 0 => {
                let items = if matches!(kind, "%" | "|") {
                    2 * count()
                } else {
                    count()
                };
                for _ in 0..items {
                    self.read_bytes(bytes);
                }
            }
            _ => {}
        }
    }

    /// True when the server closed the connection (EOF on read).
    pub fn closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.reader.read(&mut byte), Ok(0))
    }
}

/// Reads one RESP command from a raw replica connection.
pub fn read_command(reader: &mut BufReader<TcpStream>) -> Vec<String> {
    let mut line = String::new();
    reader.read_line(&mut line).expect("header");
    let count: usize = line.trim_end()[1..].parse().expect("array length");
    (0..count)
        .map(|_| {
            let mut header = String::new();
            reader.read_line(&mut header).expect("bulk header");
            let len: usize = header.trim_end()[1..].parse().expect("bulk length");
            let mut data = vec![0u8; len + 2];
            reader.read_exact(&mut data).expect("bulk");
            data.truncate(len);
            String::from_utf8_lossy(&data).into_owned()
        })
        .collect()
}

/// A fake primary: accepts a replica's connection on `listener` (within 20 s) and
/// answers its handshake up to (and returning) its PSYNC arguments.
pub fn accept_replica(listener: &TcpListener) -> (BufReader<TcpStream>, TcpStream, Vec<String>) {
    listener.set_nonblocking(true).expect("nonblocking");
    let deadline = Instant::now() + Duration::from_secs(20);
    let stream = loop {
        match listener.accept() {
            Ok((stream, _)) => break stream,
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "no replica connected");
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(error) => panic!("accept: {error}"),
        }
    };
    stream.set_nonblocking(false).expect("blocking");
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut writer = stream.try_clone().expect("clone");
    let mut reader = BufReader::new(stream);
    loop {
        let command = read_command(&mut reader);
        if command[0].eq_ignore_ascii_case("PSYNC") {
            return (reader, writer, command);
        }
        writer.write_all(b"+OK\r\n").expect("reply");
    }
}

/// Fails loudly when redis-cli is missing instead of skipping.
pub fn redis_cli() -> &'static str {
    let found = Command::new("redis-cli")
        .arg("--version")
        .output()
        .map(|output| output.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "redis-cli not found: install Debian package redis-tools (cargo xtask installs it in CI)"
    );
    "redis-cli"
}

/// The value of `field` in `INFO <section>`; empty when the node does not report it.
pub fn info_field(node: &Node, section: &str, field: &str) -> String {
    let Reply::Bulk(text) = node.raw().cmd(&["INFO", section]) else {
        panic!("INFO {section} did not return a bulk string");
    };
    String::from_utf8_lossy(&text)
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .map(str::to_string)
        .unwrap_or_default()
}

/// A one-shard map (every slot) as JSON for `MERIDIAN.TOPOLOGY SET`: `primary` and
/// `replicas` as `(node id, node)` on 127.0.0.1.
pub fn shard_map(epoch: u64, primary: (&str, &Node), replicas: &[(&str, &Node)]) -> String {
    use meridian_topology::{NodeAddr, ShardTopology, SlotRange, TopologyMap};
    let addr = |(id, node): (&str, &Node)| NodeAddr {
        id: id.to_string(),
        ip: "127.0.0.1".into(),
        port: node.port,
    };
    let map = TopologyMap {
        epoch,
        cluster: "demo".into(),
        region: "local".into(),
        shards: vec![ShardTopology {
            index: 0,
            slots: vec![SlotRange::new(0, 16383).expect("range")],
            primary: addr(primary),
            replicas: replicas.iter().map(|&node| addr(node)).collect(),
        }],
    };
    serde_json::to_string(&map).expect("json")
}
