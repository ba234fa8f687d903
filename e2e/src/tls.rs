//! TLS for scenarios that run a cluster with `spec.tls`: a test CA and the node
//! certificate it signs (as cert-manager would put them in a `kubernetes.io/tls`
//! Secret), and RESP connections to nodes over TLS.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

/// A CA and one certificate for `server_name` that every node of a cluster shares.
pub struct TestPki {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub server_name: String,
}

impl TestPki {
    pub fn new(server_name: &str) -> Result<TestPki> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "meridian e2e ca");
        let ca = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate()?)?;
        let key = rcgen::KeyPair::generate()?;
        let cert =
            rcgen::CertificateParams::new(vec![server_name.to_string()])?.signed_by(&key, &ca)?;
        Ok(TestPki {
            ca_pem: ca.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            server_name: server_name.to_string(),
        })
    }

    /// Creates the `kubernetes.io/tls` Secret `name` in `ns`.
    pub async fn create_secret(&self, client: &Client, ns: &str, name: &str) -> Result<()> {
        let data = [
            ("tls.crt", &self.cert_pem),
            ("tls.key", &self.key_pem),
            ("ca.crt", &self.ca_pem),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_string(), ByteString(value.as_bytes().to_vec())))
        .collect();
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                ..Default::default()
            },
            type_: Some("kubernetes.io/tls".to_string()),
            data: Some(data),
            ..Default::default()
        };
        Api::<Secret>::namespaced(client.clone(), ns)
            .create(&PostParams::default(), &secret)
            .await
            .with_context(|| format!("create Secret {name}"))?;
        Ok(())
    }

    /// A RESP connection to `endpoint` (`ip:port`) over TLS, verifying the node for the
    /// shared server name against the CA, authenticated with `password` when given.
    pub async fn connection(
        &self,
        endpoint: &str,
        password: Option<&str>,
    ) -> Result<redis::aio::MultiplexedConnection> {
        self.connect(endpoint, None, password).await
    }

    /// Like [`TestPki::connection`], logged in as ACL user `user`.
    pub async fn user_connection(
        &self,
        endpoint: &str,
        user: &str,
        password: &str,
    ) -> Result<redis::aio::MultiplexedConnection> {
        self.connect(endpoint, Some(user), Some(password)).await
    }

    async fn connect(
        &self,
        endpoint: &str,
        user: Option<&str>,
        password: Option<&str>,
    ) -> Result<redis::aio::MultiplexedConnection> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots.add(cert?)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from(self.server_name.clone())?;
        let stream = tokio::time::timeout(Duration::from_secs(10), async {
            let tcp = tokio::net::TcpStream::connect(endpoint).await?;
            TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await
        })
        .await
        .with_context(|| format!("TLS connect to {endpoint} timed out"))?
        .with_context(|| format!("TLS connect to {endpoint}"))?;
        let mut info = redis::RedisConnectionInfo::default();
        if let Some(password) = password {
            info = info.set_password(password);
        }
        if let Some(user) = user {
            info = info.set_username(user);
        }
        let config =
            redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(10)));
        let (connection, driver) =
            redis::aio::MultiplexedConnection::new_with_config(&info, stream, config)
                .await
                .with_context(|| format!("RESP over TLS to {endpoint}"))?;
        tokio::spawn(driver);
        Ok(connection)
    }
}
