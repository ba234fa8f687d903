//! Startup, readiness and liveness probes: parsing the pod spec into [`ProbeSpec`] and
//! running one check (exec in the pod's sandbox, HTTP GET, TCP connect).

use super::process::{self, Sandbox};
use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeAction {
    Exec(Vec<String>),
    HttpGet {
        host: Option<String>,
        port: u16,
        path: String,
        https: bool,
        headers: Vec<(String, String)>,
    },
    /// Also used for gRPC probes: a gRPC health check needs HTTP/2, which this fixture lacks.
    TcpSocket {
        host: Option<String>,
        port: u16,
    },
    /// A probe the agent cannot run (e.g. an unknown named port): every check fails with
    /// this message, as kubelet's would.
    Invalid(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSpec {
    pub action: ProbeAction,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
    /// Probe-level override of the pod's grace period when a failed probe kills the container.
    pub termination_grace: Option<Duration>,
}

fn seconds(value: Option<i32>, default: i32, min: i32) -> Duration {
    Duration::from_secs(value.unwrap_or(default).max(min) as u64)
}

/// Resolves a probe port given as a number or as the name of one of the container's ports.
pub fn resolve_port(port: &IntOrString, container: &Container) -> Result<u16, String> {
    let number = match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => match name.parse::<i32>() {
            Ok(n) => n,
            Err(_) => container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .map(|p| p.container_port)
                .ok_or_else(|| {
                    format!(
                        "probe port {name:?} is not a named port of container {:?}",
                        container.name
                    )
                })?,
        },
    };
    u16::try_from(number)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("probe port {number} is out of range"))
}

/// Like [`parse`], but an unusable probe becomes one that always fails (keeping its timings).
pub fn parse_or_failing(probe: &Probe, container: &Container) -> ProbeSpec {
    parse(probe, container).unwrap_or_else(|message| {
        let without_handler = Probe {
            exec: Some(k8s_openapi::api::core::v1::ExecAction {
                command: Some(vec!["-".into()]),
            }),
            http_get: None,
            tcp_socket: None,
            grpc: None,
            ..probe.clone()
        };
        let mut spec = parse(&without_handler, container).unwrap_or(ProbeSpec {
            action: ProbeAction::Invalid(String::new()),
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(10),
            timeout: Duration::from_secs(1),
            success_threshold: 1,
            failure_threshold: 3,
            termination_grace: None,
        });
        spec.action = ProbeAction::Invalid(message);
        spec
    })
}

/// Turns a Kubernetes probe into a [`ProbeSpec`] with Kubernetes' defaults (period 10s,
/// timeout 1s, thresholds 1 / 3).
pub fn parse(probe: &Probe, container: &Container) -> Result<ProbeSpec, String> {
    let action = if let Some(exec) = &probe.exec {
        let command = exec.command.clone().unwrap_or_default();
        if command.is_empty() {
            return Err("exec probe has an empty command".into());
        }
        ProbeAction::Exec(command)
    } else if let Some(http) = &probe.http_get {
        let path = http.path.clone().unwrap_or_default();
        ProbeAction::HttpGet {
            host: http.host.clone().filter(|h| !h.is_empty()),
            port: resolve_port(&http.port, container)?,
            path: if path.starts_with('/') {
                path
            } else {
                format!("/{path}")
            },
            https: http
                .scheme
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case("https")),
            headers: http
                .http_headers
                .iter()
                .flatten()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect(),
        }
    } else if let Some(tcp) = &probe.tcp_socket {
        ProbeAction::TcpSocket {
            host: tcp.host.clone().filter(|h| !h.is_empty()),
            port: resolve_port(&tcp.port, container)?,
        }
    } else if let Some(grpc) = &probe.grpc {
        ProbeAction::TcpSocket {
            host: None,
            port: resolve_port(&IntOrString::Int(grpc.port), container)?,
        }
    } else {
        return Err("probe has no handler (exec, httpGet, tcpSocket or grpc)".into());
    };
    Ok(ProbeSpec {
        action,
        initial_delay: seconds(probe.initial_delay_seconds, 0, 0),
        period: seconds(probe.period_seconds, 10, 1),
        timeout: seconds(probe.timeout_seconds, 1, 1),
        success_threshold: probe.success_threshold.unwrap_or(1).max(1) as u32,
        failure_threshold: probe.failure_threshold.unwrap_or(3).max(1) as u32,
        termination_grace: probe
            .termination_grace_period_seconds
            .map(|s| Duration::from_secs(s.max(0) as u64)),
    })
}

/// Where a probe runs: the pod's address and sandbox (for exec probes).
pub struct ProbeTarget<'a> {
    pub pod_ip: &'a str,
    pub sandbox: &'a Sandbox,
    pub bin_dir: &'a Path,
}

/// Runs one check; `Err` carries the failure message (shown in events / logs).
pub async fn run_once(spec: &ProbeSpec, target: &ProbeTarget<'_>) -> Result<(), String> {
    match tokio::time::timeout(spec.timeout, check(&spec.action, target)).await {
        Ok(result) => result,
        Err(_) => Err(format!("probe timed out after {:?}", spec.timeout)),
    }
}

async fn check(action: &ProbeAction, target: &ProbeTarget<'_>) -> Result<(), String> {
    match action {
        ProbeAction::TcpSocket { host, port } => {
            let host = host.as_deref().unwrap_or(target.pod_ip);
            tokio::net::TcpStream::connect((host, *port))
                .await
                .map(|_| ())
                .map_err(|e| format!("dial tcp {host}:{port}: {e}"))
        }
        ProbeAction::HttpGet {
            host,
            port,
            path,
            https,
            headers,
        } => {
            let host = host.as_deref().unwrap_or(target.pod_ip);
            if *https {
                // Kubelet does not verify probe certificates; without a TLS stack here a
                // successful connection is the closest honest check.
                return tokio::net::TcpStream::connect((host, *port))
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("dial tcp {host}:{port}: {e}"));
            }
            http_get(host, *port, path, headers).await
        }
        ProbeAction::Exec(command) => exec(command, target).await,
        ProbeAction::Invalid(message) => Err(message.clone()),
    }
}

/// Minimal HTTP/1.1 GET: 200 ≤ status < 400 is success, like kubelet.
async fn http_get(
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
) -> Result<(), String> {
    let mut stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("Get http://{host}:{port}{path}: {e}"))?;
    let mut request = format!("GET {path} HTTP/1.1\r\n");
    let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    if !has("host") {
        request.push_str(&format!("Host: {host}:{port}\r\n"));
    }
    if !has("user-agent") {
        request.push_str("User-Agent: kube-probe/1.35\r\n");
    }
    if !has("accept") {
        request.push_str("Accept: */*\r\n");
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("Connection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("write to {host}:{port}: {e}"))?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 4096 {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("read from {host}:{port}: {e}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("malformed HTTP response from {host}:{port}{path}"))?;
    if (200..400).contains(&status) {
        Ok(())
    } else {
        Err(format!("HTTP probe failed with statuscode: {status}"))
    }
}

async fn exec(command: &[String], target: &ProbeTarget<'_>) -> Result<(), String> {
    let path_var = target
        .sandbox
        .env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| std::ffi::OsString::from(v))
        .or_else(|| std::env::var_os("PATH"));
    let (first, rest) = command.split_first().ok_or("empty exec probe command")?;
    let program: PathBuf =
        super::image::resolve_command(first, target.bin_dir, path_var.as_deref())
            .ok_or_else(|| format!("exec probe: {first:?} not found"))?;
    let mut child = process::spawn(&program, rest, target.sandbox, None)
        .map_err(|e| format!("exec probe {first:?}: {e}"))?;
    // If the caller's timeout drops this future, the guard kills the probe's process group.
    struct KillOnDrop(Option<u32>);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            if let Some(pid) = self.0 {
                process::signal_group(pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
    let mut guard = KillOnDrop(child.id());
    let status = child.wait().await.map_err(|e| format!("exec probe: {e}"))?;
    guard.0 = None;
    if status.success() {
        Ok(())
    } else {
        Err(format!("exec probe {command:?} exited with {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerPort, ExecAction, HTTPGetAction, HTTPHeader, TCPSocketAction,
    };

    fn container() -> Container {
        Container {
            name: "web".into(),
            ports: Some(vec![ContainerPort {
                name: Some("http".into()),
                container_port: 8000,
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_follow_kubernetes() {
        let probe = Probe {
            exec: Some(ExecAction {
                command: Some(vec!["true".into()]),
            }),
            ..Default::default()
        };
        let spec = parse(&probe, &container()).unwrap();
        assert_eq!(spec.action, ProbeAction::Exec(vec!["true".into()]));
        assert_eq!(spec.initial_delay, Duration::ZERO);
        assert_eq!(spec.period, Duration::from_secs(10));
        assert_eq!(spec.timeout, Duration::from_secs(1));
        assert_eq!(spec.success_threshold, 1);
        assert_eq!(spec.failure_threshold, 3);
    }

    #[test]
    fn http_probe_resolves_named_port_and_fields() {
        let probe = Probe {
            http_get: Some(HTTPGetAction {
                port: IntOrString::String("http".into()),
                path: Some("healthz".into()),
                http_headers: Some(vec![HTTPHeader {
                    name: "X-A".into(),
                    value: "b".into(),
                }]),
                ..Default::default()
            }),
            initial_delay_seconds: Some(2),
            period_seconds: Some(3),
            timeout_seconds: Some(4),
            success_threshold: Some(2),
            failure_threshold: Some(5),
            ..Default::default()
        };
        let spec = parse(&probe, &container()).unwrap();
        assert_eq!(
            spec.action,
            ProbeAction::HttpGet {
                host: None,
                port: 8000,
                path: "/healthz".into(),
                https: false,
                headers: vec![("X-A".into(), "b".into())],
            }
        );
        assert_eq!(spec.initial_delay, Duration::from_secs(2));
        assert_eq!(spec.period, Duration::from_secs(3));
        assert_eq!(spec.timeout, Duration::from_secs(4));
        assert_eq!((spec.success_threshold, spec.failure_threshold), (2, 5));
    }

    #[test]
    fn bad_ports_and_empty_probes_are_errors() {
        let unknown = Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::String("nope".into()),
                host: None,
            }),
            ..Default::default()
        };
        assert!(parse(&unknown, &container()).is_err());
        let out_of_range = Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(70000),
                host: None,
            }),
            ..Default::default()
        };
        assert!(parse(&out_of_range, &container()).is_err());
        assert!(parse(&Probe::default(), &container()).is_err());
        let failing = parse_or_failing(
            &Probe {
                period_seconds: Some(7),
                ..unknown
            },
            &container(),
        );
        assert!(matches!(failing.action, ProbeAction::Invalid(ref m) if m.contains("nope")));
        assert_eq!(failing.period, Duration::from_secs(7));
    }

    #[tokio::test]
    async fn http_and_tcp_checks_against_a_local_server() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let status = if req.starts_with("GET /ok ") {
                    "200 OK"
                } else {
                    "503 Unavailable"
                };
                let _ = s
                    .write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        let sandbox = Sandbox {
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            mounts: vec![],
            hostname: String::new(),
            working_dir: std::env::temp_dir(),
            namespaces: false,
        };
        let target = ProbeTarget {
            pod_ip: "127.0.0.1",
            sandbox: &sandbox,
            bin_dir: Path::new("/nonexistent"),
        };
        let mk = |action| ProbeSpec {
            action,
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
            success_threshold: 1,
            failure_threshold: 1,
            termination_grace: None,
        };
        let http = |path: &str| ProbeAction::HttpGet {
            host: None,
            port,
            path: path.into(),
            https: false,
            headers: vec![],
        };
        assert!(run_once(&mk(http("/ok")), &target).await.is_ok());
        assert!(run_once(&mk(http("/bad")), &target).await.is_err());
        assert!(
            run_once(&mk(ProbeAction::TcpSocket { host: None, port }), &target)
                .await
                .is_ok()
        );
        assert!(
            run_once(
                &mk(ProbeAction::Exec(vec![
                    "sh".into(),
                    "-c".into(),
                    "exit 0".into()
                ])),
                &target
            )
            .await
            .is_ok()
        );
        assert!(
            run_once(
                &mk(ProbeAction::Exec(vec![
                    "sh".into(),
                    "-c".into(),
                    "exit 3".into()
                ])),
                &target
            )
            .await
            .is_err()
        );
        let slow = ProbeSpec {
            timeout: Duration::from_millis(200),
            ..mk(ProbeAction::Exec(vec!["sleep".into(), "5".into()]))
        };
        assert!(run_once(&slow, &target).await.is_err());
    }
}
