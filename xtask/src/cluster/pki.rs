//! Certificates and kubeconfigs for the local control plane, generated with rcgen.
//!
//! One CA signs everything: the API server's serving certificate, the client certificates
//! of the admin, controller-manager and scheduler, and (through the controller-manager's
//! `--cluster-signing-*` flags) CSRs. The service-account signing key is a separate key.

use anyhow::{Context, Result};
use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::borrow::Cow;
use std::fs;
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// Subject alternative names of the API server's serving certificate: loopback, the
/// address nodes and pods reach it at, and the `kubernetes` Service.
const APISERVER_SANS: [&str; 7] = [
    "127.0.0.1",
    super::network::HOST_IP,
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "10.96.0.1",
];

/// A client identity: file stem, common name (user) and organisation (group).
pub struct ClientIdentity {
    pub name: Cow<'static, str>,
    pub common_name: Cow<'static, str>,
    pub organisation: Option<&'static str>,
}

impl ClientIdentity {
    const fn fixed(
        name: &'static str,
        common_name: &'static str,
        organisation: Option<&'static str>,
    ) -> Self {
        ClientIdentity {
            name: Cow::Borrowed(name),
            common_name: Cow::Borrowed(common_name),
            organisation,
        }
    }

    /// A kubelet's identity: `system:node:<node>` in `system:nodes`, what the Node
    /// authorizer and the NodeRestriction admission plugin expect.
    pub fn node(node: &str) -> Self {
        ClientIdentity {
            name: Cow::Owned(format!("node-{node}")),
            common_name: Cow::Owned(format!("system:node:{node}")),
            organisation: Some("system:nodes"),
        }
    }
}

pub static ADMIN: ClientIdentity =
    ClientIdentity::fixed("admin", "kubernetes-admin", Some("system:masters"));
pub static CONTROLLER_MANAGER: ClientIdentity =
    ClientIdentity::fixed("controller-manager", "system:kube-controller-manager", None);
pub static SCHEDULER: ClientIdentity =
    ClientIdentity::fixed("scheduler", "system:kube-scheduler", None);
/// kube-proxy's user, bound to `system:node-proxier` by the API server's default RBAC.
pub static KUBE_PROXY: ClientIdentity =
    ClientIdentity::fixed("kube-proxy", "system:kube-proxy", None);
/// kube-router's user (the NetworkPolicy agent), bound by `netpol::rbac_manifest`.
pub static KUBE_ROUTER: ClientIdentity =
    ClientIdentity::fixed("kube-router", "system:kube-router", None);
/// The API server's identity towards kubelets (logs, exec, port-forward).
pub static KUBELET_CLIENT: ClientIdentity = ClientIdentity::fixed(
    "apiserver-kubelet-client",
    "kube-apiserver-kubelet-client",
    Some("system:masters"),
);
/// The API server's identity towards aggregated API servers, signed by the front-proxy CA.
pub static FRONT_PROXY_CLIENT: ClientIdentity =
    ClientIdentity::fixed("front-proxy-client", "front-proxy-client", None);

/// Paths of every PKI file below `<state>/pki`.
pub struct Pki {
    pub dir: PathBuf,
    /// Kubelet identities to issue, one per node.
    nodes: Vec<ClientIdentity>,
}

impl Pki {
    pub fn new(state: &Path, nodes: &[&str]) -> Self {
        Pki {
            dir: state.join("pki"),
            nodes: nodes.iter().map(|n| ClientIdentity::node(n)).collect(),
        }
    }

    fn clients(&self) -> impl Iterator<Item = &ClientIdentity> {
        [
            &ADMIN,
            &CONTROLLER_MANAGER,
            &SCHEDULER,
            &KUBE_PROXY,
            &KUBE_ROUTER,
            &KUBELET_CLIENT,
        ]
        .into_iter()
        .chain(&self.nodes)
    }
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    pub fn apiserver_cert(&self) -> PathBuf {
        self.dir.join("apiserver.crt")
    }
    pub fn apiserver_key(&self) -> PathBuf {
        self.dir.join("apiserver.key")
    }
    pub fn client_cert(&self, who: &ClientIdentity) -> PathBuf {
        self.dir.join(format!("{}.crt", who.name))
    }
    pub fn client_key(&self, who: &ClientIdentity) -> PathBuf {
        self.dir.join(format!("{}.key", who.name))
    }
    /// Trusted by the controller-manager, scheduler and aggregated API servers for
    /// requests the API server proxies with X-Remote-User headers.
    pub fn front_proxy_ca_cert(&self) -> PathBuf {
        self.dir.join("front-proxy-ca.crt")
    }
    pub fn service_account_key(&self) -> PathBuf {
        self.dir.join("sa.key")
    }
    pub fn service_account_pub(&self) -> PathBuf {
        self.dir.join("sa.pub")
    }

    fn all_files(&self) -> Vec<PathBuf> {
        let mut files = vec![
            self.ca_cert(),
            self.ca_key(),
            self.apiserver_cert(),
            self.apiserver_key(),
            self.service_account_key(),
            self.service_account_pub(),
            self.front_proxy_ca_cert(),
            self.client_cert(&FRONT_PROXY_CLIENT),
            self.client_key(&FRONT_PROXY_CLIENT),
        ];
        for who in self.clients() {
            files.push(self.client_cert(who));
            files.push(self.client_key(who));
        }
        files
    }

    /// Generates the whole PKI unless every file already exists (a kept state dir reuses it,
    /// so service-account tokens stored in etcd stay valid).
    pub fn ensure(&self) -> Result<()> {
        if self.all_files().iter().all(|f| f.is_file()) {
            return Ok(());
        }
        fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;

        let ca = self_signed_ca("meridian-local-ca", &self.ca_cert(), &self.ca_key())?;
        let front_proxy_ca = self_signed_ca(
            "meridian-local-front-proxy-ca",
            &self.front_proxy_ca_cert(),
            &self.dir.join("front-proxy-ca.key"),
        )?;
        self.client(&FRONT_PROXY_CLIENT, &front_proxy_ca)?;

        let server_key = KeyPair::generate()?;
        let mut server = base_params("kube-apiserver", None)?;
        server.subject_alt_names = CertificateParams::new(
            APISERVER_SANS
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        )?
        .subject_alt_names;
        server.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server.signed_by(&server_key, &ca)?;
        write_secret(&self.apiserver_key(), &server_key.serialize_pem())?;
        fs::write(self.apiserver_cert(), server_cert.pem())?;

        for who in self.clients() {
            self.client(who, &ca)?;
        }

        // ECDSA P-256: the API server signs tokens with ES256 and verifies with the public key.
        let sa = KeyPair::generate()?;
        write_secret(&self.service_account_key(), &sa.serialize_pem())?;
        fs::write(self.service_account_pub(), sa.public_key_pem())?;
        Ok(())
    }

    fn client(&self, who: &ClientIdentity, ca: &Issuer<'_, KeyPair>) -> Result<()> {
        let key = KeyPair::generate()?;
        let mut params = base_params(&who.common_name, who.organisation)?;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, ca)?;
        write_secret(&self.client_key(who), &key.serialize_pem())?;
        fs::write(self.client_cert(who), cert.pem())?;
        Ok(())
    }

    /// Writes a kubeconfig for `who` with the certificates embedded, so it can be copied.
    pub fn write_kubeconfig(&self, path: &Path, who: &ClientIdentity, server: &str) -> Result<()> {
        let b64 = |p: PathBuf| -> Result<String> {
            let bytes = fs::read(&p).with_context(|| format!("cannot read {}", p.display()))?;
            Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
        };
        let text = format!(
            "apiVersion: v1
kind: Config
clusters:
- name: meridian-local
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: {user}
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
contexts:
- name: meridian-local
  context:
    cluster: meridian-local
    user: {user}
current-context: meridian-local
",
            ca = b64(self.ca_cert())?,
            user = &who.name,
            cert = b64(self.client_cert(who))?,
            key = b64(self.client_key(who))?,
        );
        write_secret(path, &text)
    }
}

fn self_signed_ca(
    common_name: &str,
    cert_path: &Path,
    key_path: &Path,
) -> Result<Issuer<'static, KeyPair>> {
    let key = KeyPair::generate()?;
    let mut params = base_params(common_name, None)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key)?;
    write_secret(key_path, &key.serialize_pem())?;
    fs::write(cert_path, cert.pem())?;
    Ok(Issuer::new(params, key))
}

fn base_params(common_name: &str, organisation: Option<&str>) -> Result<CertificateParams> {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    if let Some(org) = organisation {
        params
            .distinguished_name
            .push(DnType::OrganizationName, org);
    }
    // Backdated an hour so small clock differences never make a fresh cert "not yet valid".
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(365);
    Ok(params)
}

/// Writes a file readable only by its owner (keys and kubeconfigs).
fn write_secret(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("meridian-pki-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn generates_every_file_once_and_reuses_them() -> Result<()> {
        let state = temp_dir("reuse");
        let pki = Pki::new(&state, &["node-1"]);
        pki.ensure()?;
        for f in pki.all_files() {
            assert!(f.is_file(), "{} missing", f.display());
        }
        let ca_before = fs::read_to_string(pki.ca_cert())?;
        pki.ensure()?;
        assert_eq!(ca_before, fs::read_to_string(pki.ca_cert())?);
        let kubeconfig = state.join("kubeconfig");
        pki.write_kubeconfig(&kubeconfig, &ADMIN, "https://127.0.0.1:6443")?;
        let text = fs::read_to_string(&kubeconfig)?;
        assert!(text.contains("server: https://127.0.0.1:6443"));
        assert!(text.contains("client-key-data: "));
        fs::remove_dir_all(&state)?;
        Ok(())
    }

    #[test]
    fn certificates_verify_with_openssl_when_available() -> Result<()> {
        if !crate::util::have("openssl") {
            return Ok(());
        }
        let state = temp_dir("openssl");
        let pki = Pki::new(&state, &["meridian-region-a-1"]);
        pki.ensure()?;
        let text = |args: &[&str]| -> Result<String> {
            crate::util::output(std::process::Command::new("openssl").args(args))
        };
        let ca = pki.ca_cert();
        let ca = ca.to_string_lossy();
        for cert in [pki.apiserver_cert(), pki.client_cert(&ADMIN)] {
            let verified = text(&["verify", "-CAfile", &ca, &cert.to_string_lossy()])?;
            assert!(verified.trim_end().ends_with("OK"), "{verified}");
        }
        let server = text(&[
            "x509",
            "-noout",
            "-ext",
            "subjectAltName",
            "-in",
            &pki.apiserver_cert().to_string_lossy(),
        ])?;
        for san in [
            "IP Address:10.96.0.1",
            "DNS:kubernetes.default.svc",
            "IP Address:127.0.0.1",
            "IP Address:10.240.0.1",
        ] {
            assert!(server.contains(san), "{server}");
        }
        let node = text(&[
            "x509",
            "-noout",
            "-subject",
            "-in",
            &pki.client_cert(&ClientIdentity::node("meridian-region-a-1"))
                .to_string_lossy(),
        ])?;
        assert!(
            node.contains("CN = system:node:meridian-region-a-1")
                && node.contains("O = system:nodes"),
            "{node}"
        );
        let admin = text(&[
            "x509",
            "-noout",
            "-subject",
            "-in",
            &pki.client_cert(&ADMIN).to_string_lossy(),
        ])?;
        assert!(admin.contains("O = system:masters"), "{admin}");
        fs::remove_dir_all(&state)?;
        Ok(())
    }
}
