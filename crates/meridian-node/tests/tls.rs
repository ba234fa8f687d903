//! TLS on every data port (`--tls-dir`): certificates are made at test time
//! (rcgen). Region links: an invalidation crosses, a node whose certificate comes
//! from another CA never gets a link up, plain TCP gets nothing usable. RESP:
//! `redis-cli --tls --cacert` works and plain text is refused; replication, slot
//! migration and the HTTP API run over TLS; with `--tls-require-peer-certs` only a
//! client certificate of the cluster's CA may replicate. A missing file stops the
//! node at startup.

#[path = "common/node_process.rs"]
mod node_process;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use node_process::{NodeProcess, wait_until};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

const LINK_PORT: u16 = 16379;

/// A throw-away directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        // Unique per call: the tests run in parallel and reuse node ids, and a node
        // now rereads its files while it runs.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let serial = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "meridian-tls-{name}-{}-{serial}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("ca key");
        TestCa {
            issuer: CertifiedIssuer::self_signed(params, key).expect("ca certificate"),
        }
    }

    /// Writes a kubernetes.io/tls Secret's files for a certificate naming `san`
    /// (an IP address or DNS name).
    fn write_node_dir(&self, dir: &Path, san: &str) {
        let key = KeyPair::generate().expect("node key");
        let cert = CertificateParams::new(vec![san.to_string()])
            .expect("node params")
            .signed_by(&key, &self.issuer)
            .expect("node certificate");
        std::fs::write(dir.join("tls.crt"), cert.pem()).expect("tls.crt");
        std::fs::write(dir.join("tls.key"), key.serialize_pem()).expect("tls.key");
        std::fs::write(dir.join("ca.crt"), self.issuer.pem()).expect("ca.crt");
    }
}

struct TlsNode {
    process: NodeProcess,
    ip: String,
    /// The name its certificate carries.
    san: String,
    /// Its kubernetes.io/tls files; rewriting them renews the certificate.
    dir: TempDir,
    /// The CA it started with (clients trust it and whatever ca.crt says now, so
    /// they keep working while a renewal is being picked up).
    first_ca: Vec<u8>,
}

impl TlsNode {
    /// A node whose certificate carries its IP address.
    fn start(ca: &TestCa, ip: &str, id: &str, region: &str) -> TlsNode {
        TlsNode::start_with(ca, ip, ip, id, region, &[])
    }

    fn start_with(
        ca: &TestCa,
        ip: &str,
        san: &str,
        id: &str,
        region: &str,
        extra: &[&str],
    ) -> TlsNode {
        let dir = TempDir::new(id);
        ca.write_node_dir(&dir.0, san);
        let port = LINK_PORT.to_string();
        let tls_dir = dir.0.to_string_lossy().into_owned();
        let mut args = vec![
            "--region",
            region,
            "--region-port",
            &port,
            "--tls-dir",
            &tls_dir,
        ];
        args.extend_from_slice(extra);
        let process = NodeProcess::start(ip, id, &args, &[]);
        let first_ca = std::fs::read(dir.0.join("ca.crt")).expect("ca.crt");
        TlsNode {
            process,
            ip: ip.to_string(),
            san: san.to_string(),
            dir,
            first_ca,
        }
    }

    /// A TLS client of the RESP port trusting the node's CA (no client certificate).
    fn client(&self) -> TlsClient {
        let current = std::fs::read(self.dir.0.join("ca.crt")).expect("ca.crt");
        TlsClient::connect(
            &self.ip,
            self.process.port,
            &self.san,
            &[&self.first_ca, &current],
            None,
        )
    }

    /// Runs one command on a new TLS connection; its reply as text (errors too).
    fn cmd(&self, args: &[&str]) -> String {
        self.client().cmd(args)
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.0.join("ca.crt")
    }

    fn seed(&self) -> String {
        format!("{}:{LINK_PORT}", self.ip)
    }

    fn set_peers(&self, peers: &[(&str, &TlsNode)]) {
        let json = serde_json::to_string(
            &peers
                .iter()
                .map(|(region, node)| serde_json::json!({"region": region, "seeds": [node.seed()]}))
                .collect::<Vec<_>>(),
        )
        .expect("json");
        assert_eq!(self.cmd(&["MERIDIAN.PEERS", "SET", &json]), "OK");
    }

    fn first_peer(&self) -> serde_json::Value {
        let text = self.cmd(&["MERIDIAN.PEERS", "GET"]);
        let status: serde_json::Value = serde_json::from_str(&text).expect("status json");
        status["peers"][0].clone()
    }
}

/// A blocking RESP client over TLS (rustls), verifying the server for `name`.
struct TlsClient {
    reader: BufReader<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>,
}

impl TlsClient {
    fn connect(
        ip: &str,
        port: u16,
        name: &str,
        cas: &[&[u8]],
        client_cert: Option<&Path>,
    ) -> TlsClient {
        let mut roots = rustls::RootCertStore::empty();
        for ca in cas {
            for cert in CertificateDer::pem_slice_iter(ca) {
                roots.add(cert.expect("ca pem")).expect("root");
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots);
        let config = match client_cert {
            None => builder.with_no_client_auth(),
            Some(dir) => {
                let certs = CertificateDer::pem_file_iter(dir.join("tls.crt"))
                    .expect("tls.crt")
                    .collect::<Result<Vec<_>, _>>()
                    .expect("certs");
                let key = PrivateKeyDer::from_pem_file(dir.join("tls.key")).expect("tls.key");
                builder
                    .with_client_auth_cert(certs, key)
                    .expect("client cert")
            }
        };
        let name = ServerName::try_from(name.to_string()).expect("server name");
        let connection = rustls::ClientConnection::new(Arc::new(config), name).expect("tls");
        let tcp = TcpStream::connect((ip, port)).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_secs(10))).ok();
        TlsClient {
            reader: BufReader::new(rustls::StreamOwned::new(connection, tcp)),
        }
    }

    fn send(&mut self, args: &[&str]) {
        let mut request = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            request.extend(format!("${}\r\n{arg}\r\n", arg.len()).into_bytes());
        }
        let stream = self.reader.get_mut();
        stream.write_all(&request).expect("write");
        stream.flush().expect("flush");
    }

    fn cmd(&mut self, args: &[&str]) -> String {
        self.send(args);
        self.read()
    }

    /// One reply as text: `OK`, `ERR ...`, `(nil)`, an integer, a bulk's text, or an
    /// array's elements joined by newlines.
    fn read(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("reply line");
        let line = line.trim_end_matches("\r\n");
        let (kind, rest) = line.split_at(1);
        match kind {
            "+" | "-" | ":" => rest.to_string(),
            "$" if rest == "-1" => "(nil)".to_string(),
            "$" => {
                let len: usize = rest.parse().expect("bulk length");
                let mut data = vec![0u8; len + 2];
                self.reader.read_exact(&mut data).expect("bulk");
                String::from_utf8_lossy(&data[..len]).into_owned()
            }
            "*" => {
                let len: i64 = rest.parse().expect("array length");
                (0..len.max(0))
                    .map(|_| self.read())
                    .collect::<Vec<_>>()
                    .join("\n")
            }
            other => panic!("unexpected reply type {other} in {line:?}"),
        }
    }
}

#[test]
fn invalidations_cross_tls_links_and_foreign_certificates_are_refused() {
    let ca = TestCa::new("meridian test ca");
    let a0 = TlsNode::start(&ca, "127.0.72.1", "a-0", "region-a");
    let b0 = TlsNode::start(&ca, "127.0.72.2", "b-0", "region-b");
    a0.set_peers(&[("region-b", &b0)]);
    b0.set_peers(&[("region-a", &a0)]);
    for node in [&a0, &b0] {
        wait_until("TLS links up", Duration::from_secs(10), || {
            node.first_peer()["up"] == true
        });
    }

    assert_eq!(b0.cmd(&["SET", "user:1", "old"]), "OK");
    // Region-a must have seen b's write before it writes, or both writes can fall in
    // the same millisecond and region-b's wins the tie (last writer wins by clock,
    // then region): then b rightly keeps its copy.
    wait_until(
        "region-b's own event acknowledged by region-a",
        Duration::from_secs(5),
        || b0.first_peer()["queued"] == 0,
    );
    assert_eq!(a0.cmd(&["SET", "user:1", "new"]), "OK");
    wait_until(
        "invalidation over TLS reaches region-b",
        Duration::from_secs(5),
        || b0.cmd(&["GET", "user:1"]) == "(nil)",
    );

    // same cluster and password, but a certificate from another CA: the
    // foreign node cannot verify region-a's certificate, so its link never
    // comes up and the status says why
    let other_ca = TestCa::new("another ca");
    let x0 = TlsNode::start(&other_ca, "127.0.72.3", "x-0", "region-x");
    x0.set_peers(&[("region-a", &a0)]);
    wait_until(
        "certificate error recorded",
        Duration::from_secs(10),
        || {
            let peer = x0.first_peer();
            peer["up"] == false
                && peer["last_error"]
                    .as_str()
                    .is_some_and(|error| error.contains("certificate"))
        },
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(x0.first_peer()["up"], false);

    // a plain-TCP client to the TLS link port is never answered in RESP
    let mut plain = TcpStream::connect(a0.seed()).expect("connect link port");
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    plain
        .write_all(b"*4\r\n$10\r\nLINK.HELLO\r\n$8\r\nmeridian\r\n$1\r\nz\r\n$0\r\n\r\n*1\r\n$13\r\nLINK.TOPOLOGY\r\n")
        .expect("write");
    let mut received = Vec::new();
    // the server closes (possibly after a TLS alert) or stays silent until the timeout
    let _ = plain.read_to_end(&mut received);
    assert!(
        !received.starts_with(b"+") && !received.starts_with(b"-") && !received.starts_with(b"$"),
        "plain TCP got a RESP reply: {:?}",
        String::from_utf8_lossy(&received)
    );
    // and the TLS link between the regions is still fine
    assert_eq!(a0.first_peer()["up"], true);
}

#[test]
fn a_fixed_server_name_lets_one_dns_certificate_serve_every_node() {
    let ca = TestCa::new("meridian test ca");
    let name = "link.meridian.test";
    let extra = ["--tls-server-name", name];
    let a0 = TlsNode::start_with(&ca, "127.0.72.5", name, "a-0", "region-a", &extra);
    let b0 = TlsNode::start_with(&ca, "127.0.72.6", name, "b-0", "region-b", &extra);
    // without the fixed name, the dialed IP is not in the certificate
    let c0 = TlsNode::start_with(&ca, "127.0.72.7", name, "c-0", "region-c", &[]);
    a0.set_peers(&[("region-b", &b0)]);
    b0.set_peers(&[("region-a", &a0)]);
    c0.set_peers(&[("region-a", &a0)]);
    for node in [&a0, &b0] {
        wait_until("TLS links up", Duration::from_secs(10), || {
            node.first_peer()["up"] == true
        });
    }
    wait_until("name mismatch recorded", Duration::from_secs(10), || {
        let peer = c0.first_peer();
        peer["up"] == false
            && peer["last_error"]
                .as_str()
                .is_some_and(|error| error.contains("certificate"))
    });
}

fn certificate_refused(node: &TlsNode) -> bool {
    let peer = node.first_peer();
    peer["up"] == false
        && peer["last_error"]
            .as_str()
            .is_some_and(|error| error.contains("certificate"))
}

/// A renewed Secret (new certificate and CA written over the old files, as the
/// kubelet does) takes effect without a restart, in both directions: peers
/// dialing in see the new certificate, and the node's own dials trust the new
/// CA. Files that do not load leave the previous certificates in use.
#[test]
fn renewed_certificates_take_effect_without_a_restart() {
    let (old_ca, new_ca) = (TestCa::new("old ca"), TestCa::new("renewed ca"));
    let a0 = TlsNode::start(&old_ca, "127.0.72.10", "a-0", "region-a");
    let x0 = TlsNode::start(&new_ca, "127.0.72.11", "x-0", "region-x");
    a0.set_peers(&[("region-x", &x0)]);
    x0.set_peers(&[("region-a", &a0)]);
    for node in [&a0, &x0] {
        wait_until(
            "certificates of different CAs refused",
            Duration::from_secs(10),
            || certificate_refused(node),
        );
    }

    new_ca.write_node_dir(&a0.dir.0, "127.0.72.10");
    for node in [&a0, &x0] {
        wait_until(
            "links up with the renewed certificates",
            Duration::from_secs(30),
            || node.first_peer()["up"] == true,
        );
    }

    // A broken renewal: the key no longer loads. The node keeps serving the
    // certificate it has, to links made after the failed reload too.
    std::fs::write(a0.dir.0.join("tls.key"), "not a key").expect("tls.key");
    std::thread::sleep(Duration::from_secs(7));
    let y0 = TlsNode::start(&new_ca, "127.0.72.12", "y-0", "region-y");
    y0.set_peers(&[("region-a", &a0)]);
    wait_until(
        "a new link to the node with a broken renewal",
        Duration::from_secs(15),
        || y0.first_peer()["up"] == true,
    );
}

#[test]
fn a_missing_tls_file_stops_the_node_at_startup_naming_it() {
    let ca = TestCa::new("meridian test ca");
    let dir = TempDir::new("missing-ca");
    ca.write_node_dir(&dir.0, "127.0.72.9");
    std::fs::remove_file(dir.0.join("ca.crt")).expect("remove ca.crt");
    let port = node_process::free_port("127.0.72.9");
    let mut child = Command::new(env!("CARGO_BIN_EXE_meridian-node"))
        .args(["--bind", "127.0.72.9", "--port", &port.to_string()])
        .args([
            "--metrics-port",
            "0",
            "--http-port",
            "0",
            "--region-port",
            "0",
        ])
        .arg("--tls-dir")
        .arg(&dir.0)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start meridian-node");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("node started without ca.crt");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    assert!(!status.success());
    assert!(stderr.contains("ca.crt"), "stderr: {stderr}");
}

/// `redis-cli --tls --cacert ca.crt` (hiredis + OpenSSL, as users run it) talks to the
/// RESP port; a plain-text client gets no RESP answer there.
#[test]
fn resp_speaks_tls_to_redis_cli_and_refuses_plain_text() {
    let ca = TestCa::new("meridian test ca");
    let node = TlsNode::start(&ca, "127.0.72.20", "n-0", "region-a");
    let cli = |args: &[&str]| {
        let output = Command::new("redis-cli")
            .args(["--tls", "--cacert"])
            .arg(node.ca_file())
            .args(["-h", &node.ip, "-p", &node.process.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    };
    assert_eq!(cli(&["PING"]), "PONG");
    assert_eq!(cli(&["SET", "greeting", "hello"]), "OK");
    assert_eq!(cli(&["GET", "greeting"]), "hello");
    assert_eq!(node.cmd(&["GET", "greeting"]), "hello");

    let mut plain = TcpStream::connect((node.ip.as_str(), node.process.port)).expect("connect");
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    plain.write_all(b"*1\r\n$4\r\nPING\r\n").expect("write");
    let mut received = Vec::new();
    let _ = plain.read_to_end(&mut received);
    assert!(
        !received.starts_with(b"+PONG"),
        "plain text was answered: {:?}",
        String::from_utf8_lossy(&received)
    );
    // the node still serves TLS clients after the plain-text attempt
    assert_eq!(cli(&["PING"]), "PONG");
}

/// The HTTP API speaks TLS on its own port (curl with the CA), and forwards a key it
/// does not own to the owner's API over TLS.
#[test]
fn the_http_api_speaks_tls_and_forwards_over_tls() {
    let ca = TestCa::new("meridian test ca");
    let http_port = node_process::free_port("127.0.72.21").to_string();
    let extra = ["--http-port", &http_port];
    let a = TlsNode::start_with(&ca, "127.0.72.21", "127.0.72.21", "a-0", "region-a", &extra);
    let b = TlsNode::start_with(&ca, "127.0.72.22", "127.0.72.22", "b-0", "region-a", &extra);
    let map = serde_json::json!({
        "epoch": 1, "cluster": "meridian", "region": "region-a",
        "shards": [
            {"index": 0, "slots": [{"start": 0, "end": 8191}],
             "primary": {"id": "a-0", "ip": a.ip, "port": a.process.port}, "replicas": []},
            {"index": 1, "slots": [{"start": 8192, "end": 16383}],
             "primary": {"id": "b-0", "ip": b.ip, "port": b.process.port}, "replicas": []},
        ],
    })
    .to_string();
    for node in [&a, &b] {
        assert_eq!(node.cmd(&["MERIDIAN.TOPOLOGY", "SET", &map]), "OK");
    }
    // "a" hashes to slot 15495: owned by b-0, so a-0 forwards
    let curl = |method: &str, url: String, body: Option<&str>| {
        let mut command = Command::new("curl");
        command
            .args(["-sS", "--max-time", "10", "-X", method, "--cacert"])
            .arg(a.ca_file())
            .arg(url);
        if let Some(body) = body {
            command.args(["--data-binary", body]);
        }
        let output = command.output().expect("curl");
        assert!(
            output.status.success(),
            "curl: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let url = |node: &TlsNode, key: &str| format!("https://{}:{http_port}/cache/{key}", node.ip);
    curl("PUT", url(&a, "a"), Some("over-tls"));
    assert_eq!(curl("GET", url(&a, "a"), None), "over-tls");
    assert_eq!(b.cmd(&["GET", "a"]), "over-tls", "stored on the owner");
    let plain = Command::new("curl")
        .args(["-sS", "--max-time", "5"])
        .arg(format!("http://{}:{http_port}/cache/a", a.ip))
        .output()
        .expect("curl");
    assert!(
        !String::from_utf8_lossy(&plain.stdout).contains("over-tls"),
        "plain HTTP was served"
    );
}

/// A replica syncs from its primary and MIGRATE moves keys, both over TLS.
#[test]
fn replication_and_migrate_run_over_tls() {
    let ca = TestCa::new("meridian test ca");
    let primary = TlsNode::start(&ca, "127.0.72.23", "p-0", "region-a");
    let replica = TlsNode::start(&ca, "127.0.72.24", "r-0", "region-a");
    let target = TlsNode::start(&ca, "127.0.72.25", "t-0", "region-a");
    assert_eq!(primary.cmd(&["SET", "before", "1"]), "OK");
    let port = primary.process.port.to_string();
    assert_eq!(replica.cmd(&["REPLICAOF", &primary.ip, &port]), "OK");
    wait_until("full sync over TLS", Duration::from_secs(10), || {
        replica.cmd(&["GET", "before"]) == "1"
    });
    assert_eq!(primary.cmd(&["SET", "after", "2"]), "OK");
    wait_until("streamed over TLS", Duration::from_secs(10), || {
        replica.cmd(&["GET", "after"]) == "2"
    });
    let target_port = target.process.port.to_string();
    assert_eq!(
        primary.cmd(&["MIGRATE", &target.ip, &target_port, "before", "0", "5000"]),
        "OK"
    );
    assert_eq!(target.cmd(&["GET", "before"]), "1");
    assert_eq!(primary.cmd(&["EXISTS", "before"]), "0");
}

/// With `--tls-require-peer-certs`, a copy of the data (PSYNC) needs a client
/// certificate of the cluster's CA; applications without one still work, and a
/// replica (which presents its node certificate) syncs.
#[test]
fn replication_requires_a_client_certificate_when_asked() {
    let ca = TestCa::new("meridian test ca");
    let extra = ["--tls-require-peer-certs"];
    let primary = TlsNode::start_with(&ca, "127.0.72.26", "127.0.72.26", "p-0", "region-a", &extra);
    assert_eq!(primary.cmd(&["SET", "secret", "data"]), "OK");
    let refused = primary.cmd(&["PSYNC", "?", "-1"]);
    assert!(
        refused.starts_with("NOPERM PSYNC needs a TLS client certificate"),
        "{refused}"
    );
    assert!(primary.cmd(&["SYNC"]).starts_with("NOPERM SYNC needs"));

    // a certificate from the cluster's CA may
    let holder = TempDir::new("client-cert");
    ca.write_node_dir(&holder.0, "127.0.72.27");
    let current = std::fs::read(primary.ca_file()).expect("ca");
    let mut certified = TlsClient::connect(
        &primary.ip,
        primary.process.port,
        &primary.san,
        &[&current],
        Some(&holder.0),
    );
    certified.send(&["PSYNC", "?", "-1"]);
    let mut line = String::new();
    certified.reader.read_line(&mut line).expect("psync reply");
    assert!(line.starts_with("+FULLRESYNC"), "{line}");

    let replica = TlsNode::start_with(&ca, "127.0.72.27", "127.0.72.27", "r-0", "region-a", &extra);
    let port = primary.process.port.to_string();
    assert_eq!(replica.cmd(&["REPLICAOF", &primary.ip, &port]), "OK");
    wait_until("mutual-TLS sync", Duration::from_secs(10), || {
        replica.cmd(&["GET", "secret"]) == "data"
    });
}
