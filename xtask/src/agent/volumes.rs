//! Pod volumes materialised as directories under the pod's state dir: ConfigMap, Secret,
//! emptyDir, downwardAPI, projected (incl. bound service-account tokens from the TokenRequest
//! API), hostPath and a per-claim directory for persistentVolumeClaim.

use super::envvars::{self, Objects, PodAddresses};
use super::process::BindMount;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, DownwardAPIVolumeFile, KeyToPath, Pod, Secret, ServiceAccount, Volume,
};
use kube::api::{Api, PostParams};
use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

/// CA bundle name every namespace gets; served from the agent's kubeconfig so it always
/// matches the API server pods are pointed at.
pub const ROOT_CA_CONFIG_MAP: &str = "kube-root-ca.crt";

/// Names of every ConfigMap and Secret a pod refers to (volumes, env, envFrom).
fn referenced_objects(pod: &Pod) -> (Vec<String>, Vec<String>) {
    let mut cms = Vec::new();
    let mut secrets = Vec::new();
    let Some(spec) = pod.spec.as_ref() else {
        return (cms, secrets);
    };
    for v in spec.volumes.iter().flatten() {
        if let Some(cm) = &v.config_map {
            cms.push(cm.name.clone());
        }
        if let Some(name) = v.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            secrets.push(name);
        }
        for src in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(cm) = &src.config_map {
                cms.push(cm.name.clone());
            }
            if let Some(s) = &src.secret {
                secrets.push(s.name.clone());
            }
        }
    }
    let containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    for c in containers {
        for from in c.env_from.iter().flatten() {
            if let Some(cm) = &from.config_map_ref {
                cms.push(cm.name.clone());
            }
            if let Some(s) = &from.secret_ref {
                secrets.push(s.name.clone());
            }
        }
        for var in c.env.iter().flatten() {
            if let Some(k) = var
                .value_from
                .as_ref()
                .and_then(|f| f.config_map_key_ref.as_ref())
            {
                cms.push(k.name.clone());
            }
            if let Some(k) = var
                .value_from
                .as_ref()
                .and_then(|f| f.secret_key_ref.as_ref())
            {
                secrets.push(k.name.clone());
            }
        }
    }
    cms.sort();
    cms.dedup();
    secrets.sort();
    secrets.dedup();
    (cms, secrets)
}

/// Fetches the ConfigMaps and Secrets the pod refers to; missing ones are left out so
/// optional references can be told apart from transport errors (which fail).
pub async fn fetch_objects(
    client: &kube::Client,
    pod: &Pod,
    ca_pem: &[u8],
) -> Result<Objects, String> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let (cms, secrets) = referenced_objects(pod);
    let mut objects = Objects::default();
    let cm_api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    for name in cms {
        if name == ROOT_CA_CONFIG_MAP {
            objects.config_maps.insert(
                name,
                BTreeMap::from([("ca.crt".to_string(), ca_pem.to_vec())]),
            );
            continue;
        }
        match cm_api.get_opt(&name).await {
            Ok(Some(cm)) => {
                let mut data: BTreeMap<String, Vec<u8>> = cm
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes()))
                    .collect();
                data.extend(
                    cm.binary_data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0)),
                );
                objects.config_maps.insert(name, data);
            }
            Ok(None) => {}
            Err(e) => return Err(format!("reading ConfigMap {ns}/{name}: {e}")),
        }
    }
    let secret_api: Api<Secret> = Api::namespaced(client.clone(), ns);
    for name in secrets {
        match secret_api.get_opt(&name).await {
            Ok(Some(s)) => {
                let mut data: BTreeMap<String, Vec<u8>> = s
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect();
                data.extend(
                    s.string_data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.into_bytes())),
                );
                objects.secrets.insert(name, data);
            }
            Ok(None) => {}
            Err(e) => return Err(format!("reading Secret {ns}/{name}: {e}")),
        }
    }
    Ok(objects)
}

struct CachedToken {
    token: String,
    refresh_at: Instant,
}

/// The materialised volumes of one pod.
pub struct PodVolumes {
    root: PathBuf,
    claims_root: PathBuf,
    tokens: HashMap<(String, String), CachedToken>,
}

impl PodVolumes {
    /// `root`: `<pod state dir>/volumes`; `claims_root`: shared dir for PVC-backed volumes.
    pub fn new(root: PathBuf, claims_root: PathBuf) -> Self {
        PodVolumes {
            root,
            claims_root,
            tokens: HashMap::new(),
        }
    }

    /// Directory (or host path) backing volume `volume`.
    fn source_of(&self, pod: &Pod, volume: &Volume) -> PathBuf {
        if let Some(host) = &volume.host_path {
            return PathBuf::from(&host.path);
        }
        if let Some(claim) = &volume.persistent_volume_claim {
            let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
            return self.claims_root.join(format!("{ns}_{}", claim.claim_name));
        }
        self.root.join(&volume.name)
    }

    /// Writes every volume's content (again: called periodically so ConfigMap / Secret edits
    /// and token refreshes reach the files, as in Kubernetes). Tokens are renewed at 80% of
    /// their lifetime.
    pub async fn materialize(
        &mut self,
        client: &kube::Client,
        pod: &Pod,
        addrs: &PodAddresses,
        objects: &Objects,
    ) -> Result<(), String> {
        let Some(spec) = pod.spec.as_ref() else {
            return Ok(());
        };
        for volume in spec.volumes.iter().flatten() {
            let dir = self.source_of(pod, volume);
            let vname = volume.name.as_str();
            if let Some(host) = &volume.host_path {
                let kind = host.type_.as_deref().unwrap_or("");
                if kind == "DirectoryOrCreate" {
                    std::fs::create_dir_all(&dir)
                        .map_err(|e| format!("hostPath {}: {e}", dir.display()))?;
                } else if !dir.exists() && !kind.is_empty() {
                    return Err(format!(
                        "hostPath {} ({kind}) does not exist",
                        dir.display()
                    ));
                }
                continue;
            }
            std::fs::create_dir_all(&dir).map_err(|e| format!("volume {vname}: {e}"))?;
            if volume.empty_dir.is_some() || volume.persistent_volume_claim.is_some() {
                continue;
            }
            if let Some(cm) = &volume.config_map {
                let data = objects.config_maps.get(&cm.name);
                write_keyed(
                    &dir,
                    "ConfigMap",
                    &cm.name,
                    data,
                    cm.items.as_deref(),
                    cm.optional,
                    cm.default_mode.unwrap_or(0o644),
                )?;
            } else if let Some(s) = &volume.secret {
                let name = s.secret_name.clone().unwrap_or_default();
                let data = objects.secrets.get(&name);
                write_keyed(
                    &dir,
                    "Secret",
                    &name,
                    data,
                    s.items.as_deref(),
                    s.optional,
                    s.default_mode.unwrap_or(0o644),
                )?;
            } else if let Some(d) = &volume.downward_api {
                write_downward(
                    &dir,
                    pod,
                    addrs,
                    d.items.as_deref().unwrap_or(&[]),
                    d.default_mode.unwrap_or(0o644),
                )?;
            } else if let Some(p) = &volume.projected {
                let mode = p.default_mode.unwrap_or(0o644);
                for source in p.sources.iter().flatten() {
                    if let Some(cm) = &source.config_map {
                        let data = objects.config_maps.get(&cm.name);
                        write_keyed(
                            &dir,
                            "ConfigMap",
                            &cm.name,
                            data,
                            cm.items.as_deref(),
                            cm.optional,
                            mode,
                        )?;
                    }
                    if let Some(s) = &source.secret {
                        let data = objects.secrets.get(&s.name);
                        write_keyed(
                            &dir,
                            "Secret",
                            &s.name,
                            data,
                            s.items.as_deref(),
                            s.optional,
                            mode,
                        )?;
                    }
                    if let Some(d) = &source.downward_api {
                        write_downward(&dir, pod, addrs, d.items.as_deref().unwrap_or(&[]), mode)?;
                    }
                    if let Some(t) = &source.service_account_token {
                        let token = self
                            .token(
                                client,
                                pod,
                                vname,
                                &t.path,
                                t.audience.as_deref(),
                                t.expiration_seconds,
                            )
                            .await?;
                        write_file(&dir, &t.path, token.as_bytes(), mode)?;
                    }
                }
            } else {
                return Err(format!(
                    "volume {vname:?}: only configMap, secret, emptyDir, downwardAPI, projected, hostPath and \
                     persistentVolumeClaim volumes are supported by the local node agent"
                ));
            }
        }
        Ok(())
    }

    /// A bound token for the pod's service account, reused until 80% of its lifetime passed.
    async fn token(
        &mut self,
        client: &kube::Client,
        pod: &Pod,
        volume: &str,
        path: &str,
        audience: Option<&str>,
        expiration_seconds: Option<i64>,
    ) -> Result<String, String> {
        let key = (volume.to_string(), path.to_string());
        if let Some(cached) = self.tokens.get(&key)
            && Instant::now() < cached.refresh_at
        {
            return Ok(cached.token.clone());
        }
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let sa = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".into());
        let ttl = expiration_seconds.unwrap_or(3600).max(600);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: audience.map(|a| vec![a.to_string()]).unwrap_or_default(),
                expiration_seconds: Some(ttl),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: pod.metadata.name.clone(),
                    uid: pod.metadata.uid.clone(),
                }),
            },
            ..Default::default()
        };
        let api: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
        let response: TokenRequest = api
            .create_subresource("token", &sa, &PostParams::default(), &request)
            .await
            .map_err(|e| format!("TokenRequest for service account {ns}/{sa}: {e}"))?;
        let token = response
            .status
            .map(|s| s.token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| format!("TokenRequest for {ns}/{sa} returned no token"))?;
        let refresh_at = Instant::now() + Duration::from_secs((ttl as u64) * 8 / 10);
        self.tokens.insert(
            key,
            CachedToken {
                token: token.clone(),
                refresh_at,
            },
        );
        tracing::debug!(
            namespace = ns,
            service_account = sa,
            "issued bound service-account token"
        );
        Ok(token)
    }

    /// Bind mounts for a container's volumeMounts (subPath / subPathExpr honoured).
    pub fn mounts_for(
        &self,
        pod: &Pod,
        container: &Container,
        env: &[(String, String)],
    ) -> Result<Vec<BindMount>, String> {
        let volumes = pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
        let mut mounts = Vec::new();
        for vm in container.volume_mounts.iter().flatten() {
            let volume = volumes
                .and_then(|vs| vs.iter().find(|v| v.name == vm.name))
                .ok_or_else(|| format!("volumeMount {:?} names no volume of the pod", vm.name))?;
            let mut source = self.source_of(pod, volume);
            let sub = match (&vm.sub_path, &vm.sub_path_expr) {
                (Some(p), _) if !p.is_empty() => Some(p.clone()),
                (_, Some(expr)) if !expr.is_empty() => {
                    Some(envvars::expand_all(std::slice::from_ref(expr), env).remove(0))
                }
                _ => None,
            };
            if let Some(sub) = sub {
                let rel = safe_relative(&sub).ok_or_else(|| {
                    format!("subPath {sub:?} must be a relative path without '..'")
                })?;
                source = source.join(rel);
                if !source.exists() {
                    std::fs::create_dir_all(&source)
                        .map_err(|e| format!("subPath {}: {e}", source.display()))?;
                }
            }
            if !vm.mount_path.starts_with('/') {
                return Err(format!("mountPath {:?} must be absolute", vm.mount_path));
            }
            mounts.push(BindMount {
                source,
                target: PathBuf::from(&vm.mount_path),
                read_only: vm.read_only.unwrap_or(false),
            });
        }
        // Parents before children, so a mount inside another mount's path stays visible.
        mounts.sort_by_key(|m| m.target.components().count());
        Ok(mounts)
    }
}

/// A relative path that stays inside its base directory.
fn safe_relative(path: &str) -> Option<PathBuf> {
    let p = Path::new(path);
    let ok = !path.is_empty()
        && p.components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    ok.then(|| p.to_path_buf())
}

/// Writes `data` into `dir` (all keys, or only `items` with their paths and modes).
fn write_keyed(
    dir: &Path,
    what: &str,
    name: &str,
    data: Option<&BTreeMap<String, Vec<u8>>>,
    items: Option<&[KeyToPath]>,
    optional: Option<bool>,
    mode: i32,
) -> Result<(), String> {
    let Some(data) = data else {
        return if optional.unwrap_or(false) {
            Ok(())
        } else {
            Err(format!("{what} {name:?} not found"))
        };
    };
    match items {
        Some(items) if !items.is_empty() => {
            for item in items {
                match data.get(&item.key) {
                    Some(value) => write_file(dir, &item.path, value, item.mode.unwrap_or(mode))?,
                    None if optional.unwrap_or(false) => {}
                    None => return Err(format!("key {:?} not found in {what} {name:?}", item.key)),
                }
            }
        }
        _ => {
            for (key, value) in data {
                write_file(dir, key, value, mode)?;
            }
        }
    }
    Ok(())
}

fn write_downward(
    dir: &Path,
    pod: &Pod,
    addrs: &PodAddresses,
    items: &[DownwardAPIVolumeFile],
    mode: i32,
) -> Result<(), String> {
    for item in items {
        let value = if let Some(f) = &item.field_ref {
            envvars::field_ref_value(pod, addrs, &f.field_path)?
        } else if let Some(r) = &item.resource_field_ref {
            let spec = pod.spec.as_ref().ok_or("pod has no spec")?;
            let container = spec
                .containers
                .iter()
                .find(|c| Some(c.name.as_str()) == r.container_name.as_deref())
                .or_else(|| spec.containers.first())
                .ok_or("pod has no containers")?;
            envvars::resource_field_value(
                container,
                &r.resource,
                r.divisor.as_ref().map(|d| d.0.as_str()),
            )?
        } else {
            continue;
        };
        write_file(dir, &item.path, value.as_bytes(), item.mode.unwrap_or(mode))?;
    }
    Ok(())
}

/// Atomically replaces `dir/rel` when its content changed (rename keeps readers consistent).
fn write_file(dir: &Path, rel: &str, content: &[u8], mode: i32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let rel_path = safe_relative(rel)
        .ok_or_else(|| format!("volume path {rel:?} must be relative without '..'"))?;
    let path = dir.join(rel_path);
    if std::fs::read(&path).is_ok_and(|old| old == content) {
        return Ok(());
    }
    let parent = path.parent().unwrap_or(dir);
    std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    let tmp = parent.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    ));
    std::fs::write(&tmp, content).map_err(|e| format!("{}: {e}", tmp.display()))?;
    let perm = std::fs::Permissions::from_mode((mode as u32) & 0o777);
    std::fs::set_permissions(&tmp, perm).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &path).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_cannot_escape() {
        assert!(safe_relative("ca.crt").is_some());
        assert!(safe_relative("a/b/c").is_some());
        assert!(safe_relative("../etc/passwd").is_none());
        assert!(safe_relative("/etc/passwd").is_none());
        assert!(safe_relative("a/../../b").is_none());
        assert!(safe_relative("").is_none());
    }

    #[test]
    fn keyed_data_is_written_with_items_and_modes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("meridian-agent-vol-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let data = BTreeMap::from([
            ("a".to_string(), b"1".to_vec()),
            ("b".to_string(), b"2".to_vec()),
        ]);
        write_keyed(&dir, "ConfigMap", "cm", Some(&data), None, None, 0o644).unwrap();
        assert_eq!(std::fs::read(dir.join("a")).unwrap(), b"1");
        let items = [KeyToPath {
            key: "b".into(),
            path: "sub/renamed".into(),
            mode: Some(0o400),
        }];
        write_keyed(&dir, "Secret", "s", Some(&data), Some(&items), None, 0o644).unwrap();
        let path = dir.join("sub/renamed");
        assert_eq!(std::fs::read(&path).unwrap(), b"2");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o400
        );
        assert!(write_keyed(&dir, "ConfigMap", "gone", None, None, None, 0o644).is_err());
        assert!(write_keyed(&dir, "ConfigMap", "gone", None, None, Some(true), 0o644).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
