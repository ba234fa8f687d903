//! Helpers for the HTTP API tests: nodes on their own loopback address (so
//! every node can use the same HTTP port, as in a pod network), a minimal
//! HTTP/1.1 client, and a tiny origin server that counts its requests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct HttpNode {
    pub child: Child,
    pub ip: String,
    pub port: u16,
    pub http_port: u16,
    pub metrics_port: u16,
}

/// A port free on 127.0.0.1; other 127.x addresses are unused by anything else here.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("free port")
}

/// Waits until `child` listens on every port of `ip`; false when it exited first
/// (a port was taken).
fn wait_listening(child: &mut Child, ip: &str, ports: &[u16]) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    for &port in ports {
        while TcpStream::connect((ip, port)).is_err() {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return false;
            }
            assert!(Instant::now() < deadline, "{ip}:{port} did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    true
}

impl HttpNode {
    pub fn start(ip: &str, node_id: &str, http_port: u16, extra: &[&str]) -> HttpNode {
        HttpNode::start_with_env(ip, node_id, http_port, extra, &[])
    }

    /// Starts a node on `ip` with fresh client and metrics ports. A port picked by
    /// [`free_port`] can be taken before the node binds it (a parallel test, or any
    /// outgoing connection's ephemeral port), so a node that exits at startup is
    /// retried with new ports.
    pub fn start_with_env(
        ip: &str,
        node_id: &str,
        http_port: u16,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> HttpNode {
        for _ in 0..5 {
            let (port, metrics_port) = (free_port(), free_port());
            let child = Command::new(env!("CARGO_BIN_EXE_meridian-node"))
                .args(["--bind", ip, "--port", &port.to_string()])
                .args(["--metrics-port", &metrics_port.to_string()])
                .args(["--http-port", &http_port.to_string()])
                .args(["--node-id", node_id, "--shards", "4", "--log", "warn"])
                .args(extra)
                .env("MERIDIAN_LINK_PORT", "0")
                .envs(env.iter().copied())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("start meridian-node");
            let mut node = HttpNode {
                child,
                ip: ip.to_string(),
                port,
                http_port,
                metrics_port,
            };
            if wait_listening(&mut node.child, ip, &[port, http_port]) {
                return node;
            }
        }
        panic!("node {node_id} could not bind free ports on {ip}");
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> HttpResponse {
        http(&self.ip, self.http_port, method, path, headers, body)
    }

    pub fn get(&self, path: &str) -> HttpResponse {
        self.request("GET", path, &[], b"")
    }

    pub fn put(&self, path: &str, body: &[u8]) -> HttpResponse {
        self.request("PUT", path, &[], body)
    }

    pub fn delete(&self, path: &str) -> HttpResponse {
        self.request("DELETE", path, &[], b"")
    }

    pub fn redis(&self) -> redis::Connection {
        redis::Client::open(format!("redis://{}:{}/", self.ip, self.port))
            .expect("client")
            .get_connection()
            .expect("connection")
    }
}

impl Drop for HttpNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names in lower case.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("json body")
    }
}

/// One request on a fresh connection (`Connection: close`), read to the end.
pub fn http(
    ip: &str,
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let mut stream = TcpStream::connect((ip, port)).expect("connect http");
    stream.set_read_timeout(Some(Duration::from_secs(15))).ok();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {ip}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).expect("send head");
    // the server may answer (413) and close before reading a large body
    let _ = stream.write_all(body);
    read_response(stream)
}

fn read_response(stream: TcpStream) -> HttpResponse {
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).expect("status line");
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
        }
    }
    let mut body = Vec::new();
    match headers
        .get("content-length")
        .and_then(|len| len.parse::<usize>().ok())
    {
        Some(len) => {
            body.resize(len, 0);
            reader.read_exact(&mut body).expect("body");
        }
        None => {
            let _ = reader.read_to_end(&mut body);
        }
    }
    HttpResponse {
        status,
        headers,
        body,
    }
}

/// One request the origin received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
    /// Whether the origin answered with success (not the 500 of `fail_writes`).
    pub accepted: bool,
}

/// Test origin: `GET /missing*` → 404, `GET /slow*` → 200 after 3 s,
/// other GETs → 200 `origin:<path>` after 300 ms (so concurrent misses
/// overlap); PUT / DELETE → 204, or 500 while `fail_writes` is set.
pub struct Origin {
    pub port: u16,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub fail_writes: Arc<AtomicBool>,
}

impl Origin {
    pub fn start() -> Origin {
        Origin::start_on(0)
    }

    /// An origin on `port` (0: any free port), e.g. one a node already dials in vain.
    pub fn start_on(port: u16) -> Origin {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("origin listener");
        let port = listener.local_addr().expect("addr").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let fail_writes = Arc::new(AtomicBool::new(false));
        let (log, fail) = (seen.clone(), fail_writes.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (log, fail) = (log.clone(), fail.clone());
                std::thread::spawn(move || serve_origin(stream, &log, &fail));
            }
        });
        Origin {
            port,
            seen,
            fail_writes,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().expect("origin log").clone()
    }

    /// The requests of `method` on `path` the origin accepted, in arrival order.
    pub fn accepted(&self, method: &str, path: &str) -> Vec<Seen> {
        self.requests()
            .into_iter()
            .filter(|seen| seen.accepted && seen.method == method && seen.path == path)
            .collect()
    }

    pub fn count(&self, method: &str, path: &str) -> usize {
        self.requests()
            .iter()
            .filter(|seen| seen.method == method && seen.path == path)
            .count()
    }
}

fn serve_origin(stream: TcpStream, log: &Mutex<Vec<Seen>>, fail_writes: &AtomicBool) {
    let mut reader = BufReader::new(stream);
    // one request per connection is enough (answers close the connection)
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let failing = method != "GET" && fail_writes.load(Ordering::SeqCst);
    log.lock().expect("origin log").push(Seen {
        method: method.clone(),
        path: path.clone(),
        body,
        accepted: !failing,
    });
    let (status, payload) = match method.as_str() {
        "GET" if path.starts_with("/missing") => ("404 Not Found", Vec::new()),
        "GET" if path.starts_with("/slow") => {
            std::thread::sleep(Duration::from_secs(3));
            ("200 OK", b"late".to_vec())
        }
        "GET" => {
            std::thread::sleep(Duration::from_millis(300));
            ("200 OK", format!("origin:{path}").into_bytes())
        }
        _ if failing => ("500 Internal Server Error", Vec::new()),
        _ => ("204 No Content", Vec::new()),
    };
    let mut stream = reader.into_inner();
    let head = if status.starts_with("204") {
        format!("HTTP/1.1 {status}\r\nConnection: close\r\n\r\n")
    } else {
        format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            payload.len()
        )
    };
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&payload);
}
