//! The two controllers and what they share.

pub mod cluster;
pub mod executor;
pub mod failover;
pub mod links;
pub mod observe;
pub mod orchestration;
pub mod region;
pub mod resharding;
pub mod rollout;
pub mod status;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use meridian_api::{CacheCluster, FIELD_MANAGER, PasswordSource};
use serde::Serialize;

use crate::metrics::Metrics;
use crate::nodes::{NodeAccess, NodeTls};
use crate::probe::PrimaryProbes;
use crate::resources::BuildConfig;
use crate::{Error, error::backoff_delay};

/// One reconcile of one CacheRegion: what every step needs, carried once.
pub struct Scope<'a> {
    pub ctx: &'a Context,
    pub region: &'a meridian_api::CacheRegion,
    /// The region, as events name it.
    pub reference: ObjectReference,
    pub namespace: String,
    /// `namespace/name`: the key the primary probes know the region by.
    pub key: String,
    /// The cluster's credentials and TLS: every node connection uses them.
    pub access: NodeAccess,
}

impl<'a> Scope<'a> {
    pub fn new(
        ctx: &'a Context,
        region: &'a meridian_api::CacheRegion,
        namespace: String,
        access: NodeAccess,
    ) -> Self {
        Scope {
            ctx,
            reference: region.object_ref(&()),
            key: region_key(region),
            region,
            namespace,
            access,
        }
    }
}

/// State shared by every reconcile.
pub struct Context {
    pub client: Client,
    /// The one event recorder of the process.
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub build: BuildConfig,
    /// Direct probes of shard primaries (filled by reconciles, run by the region controller).
    pub probes: Arc<PrimaryProbes>,
    /// Consecutive failures per object, for the error policy's backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        build: BuildConfig,
        instance: Option<String>,
    ) -> Context {
        let reporter = Reporter {
            controller: FIELD_MANAGER.to_string(),
            instance,
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            build,
            probes: Arc::new(PrimaryProbes::default()),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Publishes an event; failing to do so is logged, never fatal.
    pub async fn event(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: impl Into<String>,
    ) {
        let note = note.into();
        tracing::info!(
            object = regarding.name.as_deref().unwrap_or_default(),
            reason,
            %note,
            "event"
        );
        let event = Event {
            type_,
            reason: reason.to_string(),
            note: Some(truncate(note, 1000)),
            action: action.to_string(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, regarding).await {
            tracing::warn!(%error, reason, "could not publish event");
        }
    }

    fn failures_key<K: Resource<DynamicType = ()>>(object: &K) -> String {
        format!(
            "{}/{}/{}",
            K::kind(&()),
            object.namespace().unwrap_or_default(),
            object.name_any()
        )
    }

    pub fn reset_failures<K: Resource<DynamicType = ()>>(&self, object: &K) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(&Self::failures_key(object));
        }
    }

    /// Counts a failure and returns the requeue action with exponential backoff.
    pub fn backoff<K: Resource<DynamicType = ()>>(&self, object: &K) -> Action {
        let count = match self.failures.lock() {
            Ok(mut failures) => {
                let count = failures.entry(Self::failures_key(object)).or_insert(0);
                *count = count.saturating_add(1);
                *count
            }
            Err(_) => 1,
        };
        Action::requeue(backoff_delay(count))
    }

    /// Server-side applies `status` to the status subresource of `object`.
    pub async fn apply_status<K, S>(&self, object: &K, status: &S) -> Result<(), Error>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        S: Serialize,
    {
        let namespace = object
            .namespace()
            .ok_or(Error::MissingObjectField("metadata.namespace"))?;
        let api: Api<K> = Api::namespaced(self.client.clone(), &namespace);
        let patch = serde_json::json!({
            "apiVersion": K::api_version(&()),
            "kind": K::kind(&()),
            "metadata": { "name": object.name_any() },
            "status": status,
        });
        api.patch_status(
            &object.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
        Ok(())
    }

    /// Reads how to reach the cluster's nodes and what they authenticate: the cluster
    /// password, the operator's own users (generated once), the application users'
    /// passwords, and the CA of the TLS Secret. With authentication on, the operator
    /// logs in as its own ACL user and the nodes get the ACL file.
    pub async fn credentials(&self, cluster: &CacheCluster) -> Result<Credentials, Error> {
        let password = self.auth_password(cluster).await?;
        let tls = self.node_tls(cluster).await?;
        let Some(cluster_password) = password else {
            let access = NodeAccess {
                tls,
                ..NodeAccess::default()
            };
            return Ok(Credentials {
                access,
                acl_file: None,
            });
        };
        let secrets = self.secrets_of(cluster)?;
        let internal_name = meridian_api::internal_users_secret(&cluster.name_any());
        let internal = match secrets.get_opt(&internal_name).await? {
            Some(secret) => secret,
            None => {
                self.generate_secret(
                    cluster,
                    &secrets,
                    &internal_name,
                    &["operator", "replication"],
                )
                .await?
            }
        };
        let internal_key = |key: &str| {
            secret_value(&internal, key).ok_or_else(|| Error::AuthSecretKeyMissing {
                name: internal_name.clone(),
                key: key.to_string(),
            })
        };
        let (operator, replication) = (internal_key("operator")?, internal_key("replication")?);
        let auth = cluster.spec.auth.clone().unwrap_or_default();
        let mut users = Vec::with_capacity(auth.users.len());
        for user in &auth.users {
            let at = &user.password_secret_ref;
            let secret =
                secrets
                    .get_opt(&at.name)
                    .await?
                    .ok_or_else(|| Error::AuthSecretMissing {
                        name: at.name.clone(),
                    })?;
            let password =
                secret_value(&secret, &at.key).ok_or_else(|| Error::AuthSecretKeyMissing {
                    name: at.name.clone(),
                    key: at.key.clone(),
                })?;
            users.push((user, password));
        }
        let acl_file = crate::acl::render(&crate::acl::Credentials {
            cluster: &cluster_password,
            operator: &operator,
            replication: &replication,
            users,
        });
        Ok(Credentials {
            access: NodeAccess {
                user: Some(crate::acl::OPERATOR_USER.to_string()),
                password: Some(operator),
                fallback_password: Some(cluster_password),
                tls,
            },
            acl_file: Some(acl_file),
        })
    }

    /// The Secrets of the cluster's namespace.
    fn secrets_of(&self, cluster: &CacheCluster) -> Result<Api<Secret>, Error> {
        let namespace = cluster
            .namespace()
            .ok_or(Error::MissingObjectField("CacheCluster metadata.namespace"))?;
        Ok(Api::namespaced(self.client.clone(), &namespace))
    }

    /// The CA of the cluster's TLS Secret, if it has TLS.
    async fn node_tls(&self, cluster: &CacheCluster) -> Result<Option<NodeTls>, Error> {
        let Some(tls) = &cluster.spec.tls else {
            return Ok(None);
        };
        let secrets = self.secrets_of(cluster)?;
        let problem = |problem: String| Error::TlsSecret {
            name: tls.secret_name.clone(),
            problem,
        };
        let secret = secrets
            .get_opt(&tls.secret_name)
            .await?
            .ok_or_else(|| problem("does not exist".to_string()))?;
        let ca = secret
            .data
            .as_ref()
            .and_then(|data| data.get("ca.crt"))
            .ok_or_else(|| {
                problem(
                    "has no key 'ca.crt' (the CA the nodes' certificates are verified against)"
                        .to_string(),
                )
            })?;
        NodeTls::new(&ca.0, tls.server_name.as_deref())
            .map(Some)
            .map_err(problem)
    }

    /// Reads the cluster's client password; None when authentication is disabled. The
    /// Secret the operator generates a password in is created when missing.
    pub async fn auth_password(&self, cluster: &CacheCluster) -> Result<Option<String>, Error> {
        let Some(source) = cluster.spec.password_source(&cluster.name_any()) else {
            return Ok(None);
        };
        let secrets = self.secrets_of(cluster)?;
        let at = source.secret();
        let secret = match (secrets.get_opt(&at.name).await?, &source) {
            (Some(secret), _) => secret,
            (None, PasswordSource::Generated(at)) => {
                let secret = self
                    .generate_secret(cluster, &secrets, &at.name, &[at.key.as_str()])
                    .await?;
                self.event(
                    &cluster.object_ref(&()),
                    EventType::Normal,
                    "PasswordGenerated",
                    "Authenticate",
                    format!(
                        "generated the client password in Secret {} (key {}); clients AUTH \
                         with it. Set spec.auth.secretRef to use your own, or spec.auth.mode: \
                         Disabled to turn authentication off",
                        at.name, at.key
                    ),
                )
                .await;
                secret
            }
            (None, PasswordSource::Given(at)) => {
                return Err(Error::AuthSecretMissing {
                    name: at.name.clone(),
                });
            }
        };
        secret_value(&secret, &at.key)
            .map(Some)
            .ok_or_else(|| Error::AuthSecretKeyMissing {
                name: at.name.clone(),
                key: at.key.clone(),
            })
    }

    /// Creates Secret `name` with a random password under each of `keys` (owned by the
    /// cluster, so deleting the cluster deletes it); a Secret another reconcile created
    /// meanwhile is used as it is. Never overwrites a password.
    async fn generate_secret(
        &self,
        cluster: &CacheCluster,
        secrets: &Api<Secret>,
        name: &str,
        keys: &[&str],
    ) -> Result<Secret, Error> {
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.to_string()),
                owner_references: cluster.controller_owner_ref(&()).map(|owner| vec![owner]),
                labels: Some(
                    [(
                        "app.kubernetes.io/managed-by".to_string(),
                        "meridian-operator".to_string(),
                    )]
                    .into(),
                ),
                ..Default::default()
            },
            type_: Some("Opaque".to_string()),
            data: Some(
                keys.iter()
                    .map(|key| {
                        let password = crate::names::random_password().into_bytes();
                        (key.to_string(), k8s_openapi::ByteString(password))
                    })
                    .collect(),
            ),
            ..Default::default()
        };
        match secrets
            .create(&kube::api::PostParams::default(), &secret)
            .await
        {
            Ok(created) => Ok(created),
            Err(kube::Error::Api(response)) if response.code == 409 => {
                Ok(secrets.get(name).await?)
            }
            Err(error) => Err(error.into()),
        }
    }
}

fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

/// The key a region is known by to the probes: `namespace/name`.
pub fn region_key(region: &meridian_api::CacheRegion) -> String {
    format!(
        "{}/{}",
        region.namespace().unwrap_or_default(),
        region.name_any()
    )
}

/// How the operator reaches a cluster's nodes, and the ACL file they load (None when
/// authentication is disabled).
pub struct Credentials {
    pub access: NodeAccess,
    pub acl_file: Option<String>,
}

/// The text under `key` of a Secret (`data`, or `stringData` not yet folded in).
fn secret_value(secret: &Secret, key: &str) -> Option<String> {
    if let Some(bytes) = secret.data.as_ref().and_then(|data| data.get(key)) {
        return String::from_utf8(bytes.0.clone()).ok();
    }
    secret
        .string_data
        .as_ref()
        .and_then(|data| data.get(key))
        .cloned()
}
