//! Region links over TLS (`--tls-dir`): certificates with IP SANs are made at
//! test time (rcgen); an invalidation crosses, a node whose certificate comes
//! from another CA never gets a link up, plain TCP gets nothing usable, and a
//! missing file stops the node at startup.

#[path = "common/node_process.rs"]
mod node_process;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
    /// Its kubernetes.io/tls files; rewriting them renews the certificate.
    dir: TempDir,
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
        TlsNode {
            process,
            ip: ip.to_string(),
            dir,
        }
    }

    fn redis(&self) -> redis::Connection {
        redis::Client::open(format!("redis://{}:{}/", self.ip, self.process.port))
            .and_then(|client| client.get_connection())
            .expect("connection")
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
        let reply: String = redis::cmd("MERIDIAN.PEERS")
            .arg("SET")
            .arg(json)
            .query(&mut self.redis())
            .expect("peers set");
        assert_eq!(reply, "OK");
    }

    fn first_peer(&self) -> serde_json::Value {
        let text: String = redis::cmd("MERIDIAN.PEERS")
            .arg("GET")
            .query(&mut self.redis())
            .expect("peers get");
        let status: serde_json::Value = serde_json::from_str(&text).expect("status json");
        status["peers"][0].clone()
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

    let reply: String = redis::cmd("SET")
        .arg("user:1")
        .arg("old")
        .query(&mut b0.redis())
        .expect("set on b");
    assert_eq!(reply, "OK");
    // Region-a must have seen b's write before it writes, or both writes can fall in
    // the same millisecond and region-b's wins the tie (last writer wins by clock,
    // then region): then b rightly keeps its copy.
    wait_until(
        "region-b's own event acknowledged by region-a",
        Duration::from_secs(5),
        || b0.first_peer()["queued"] == 0,
    );
    let reply: String = redis::cmd("SET")
        .arg("user:1")
        .arg("new")
        .query(&mut a0.redis())
        .expect("set on a");
    assert_eq!(reply, "OK");
    wait_until(
        "invalidation over TLS reaches region-b",
        Duration::from_secs(5),
        || {
            let value: Option<String> = redis::cmd("GET")
                .arg("user:1")
                .query(&mut b0.redis())
                .expect("get");
            value.is_none()
        },
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
