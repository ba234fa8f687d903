//! Container environment: Kubernetes `$(VAR)` expansion, downward-API field references,
//! resource field references, ConfigMap / Secret references and `envFrom`.
//!
//! Everything here is pure: ConfigMaps and Secrets are fetched beforehand into [`Objects`].

use k8s_openapi::api::core::v1::{Container, Pod};
use std::collections::{BTreeMap, HashMap};

/// Node capacity reported for every local node; also the default for `limits.*` field refs.
pub const NODE_CPU_CORES: u64 = 8;
pub const NODE_MEMORY_BYTES: u64 = 16 * 1024 * 1024 * 1024;

/// ConfigMaps and Secrets of the pod's namespace that the pod refers to; absent = not found.
#[derive(Default, Debug, Clone)]
pub struct Objects {
    pub config_maps: HashMap<String, BTreeMap<String, Vec<u8>>>,
    pub secrets: HashMap<String, BTreeMap<String, Vec<u8>>>,
}

/// Addresses the agent assigned, which the pod object may not show yet.
#[derive(Debug, Clone)]
pub struct PodAddresses {
    pub pod_ip: String,
    pub host_ip: String,
}

/// Expands `$(NAME)` references like Kubernetes: defined names are replaced, undefined ones
/// are left as written, and `$$` escapes a `$`.
pub fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        match after.chars().next() {
            Some('$') => {
                out.push('$');
                rest = &after[1..];
            }
            Some('(') => match after.find(')') {
                Some(close) => {
                    let name = &after[1..close];
                    match lookup(name) {
                        Some(value) => out.push_str(&value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &after[close + 1..];
                }
                None => {
                    out.push('$');
                    rest = after;
                }
            },
            _ => {
                out.push('$');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Resolves a downward-API `fieldRef.fieldPath` for env vars and downwardAPI volumes.
pub fn field_ref_value(pod: &Pod, addrs: &PodAddresses, path: &str) -> Result<String, String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    if let Some(key) = bracketed(path, "metadata.labels") {
        return Ok(meta
            .labels
            .as_ref()
            .and_then(|l| l.get(key))
            .cloned()
            .unwrap_or_default());
    }
    if let Some(key) = bracketed(path, "metadata.annotations") {
        return Ok(meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .cloned()
            .unwrap_or_default());
    }
    let value = match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => format_map(meta.labels.as_ref()),
        "metadata.annotations" => format_map(meta.annotations.as_ref()),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into()),
        "status.podIP" | "status.podIPs" => addrs.pod_ip.clone(),
        "status.hostIP" | "status.hostIPs" => addrs.host_ip.clone(),
        other => return Err(format!("unsupported fieldRef fieldPath {other:?}")),
    };
    Ok(value)
}

/// `metadata.labels['app']` → `app` (single or double quotes).
fn bracketed<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let inner = path
        .strip_prefix(prefix)?
        .strip_prefix('[')?
        .strip_suffix(']')?;
    inner
        .strip_prefix('\'')
        .and_then(|s| s.strip_suffix('\''))
        .or_else(|| inner.strip_prefix('"').and_then(|s| s.strip_suffix('"')))
}

/// Downward-API file format for label and annotation maps: `key="value"` lines, sorted.
fn format_map(map: Option<&BTreeMap<String, String>>) -> String {
    map.map(|m| {
        m.iter()
            .map(|(k, v)| format!("{k}={v:?}\n"))
            .collect::<String>()
    })
    .unwrap_or_default()
}

/// Parses a Kubernetes quantity (`500m`, `2`, `1Gi`, `128974848`, `1e3`) into a number.
pub fn parse_quantity(q: &str) -> Option<f64> {
    let q = q.trim();
    const SUFFIXES: &[(&str, f64)] = &[
        ("Ki", 1024.0),
        ("Mi", 1048576.0),
        ("Gi", 1073741824.0),
        ("Ti", 1099511627776.0),
        ("Pi", 1125899906842624.0),
        ("Ei", 1152921504606846976.0),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    for (suffix, factor) in SUFFIXES {
        if let Some(number) = q.strip_suffix(suffix) {
            return number.parse::<f64>().ok().map(|n| n * factor);
        }
    }
    q.parse::<f64>().ok()
}

/// Resolves a `resourceFieldRef` (`limits.cpu`, `requests.memory`, ...): the container's own
/// value, else the node's allocatable for limits and zero for requests, divided by the
/// divisor and rounded up like Kubernetes.
pub fn resource_field_value(
    container: &Container,
    resource: &str,
    divisor: Option<&str>,
) -> Result<String, String> {
    let (kind, name) = resource
        .split_once('.')
        .ok_or_else(|| format!("unsupported resourceFieldRef resource {resource:?}"))?;
    let resources = container.resources.as_ref();
    let pick = |which: &str| {
        resources
            .and_then(|r| {
                if which == "limits" {
                    r.limits.as_ref()
                } else {
                    r.requests.as_ref()
                }
            })
            .and_then(|m| m.get(name))
            .and_then(|q| parse_quantity(&q.0))
    };
    let node_default = match name {
        "cpu" => NODE_CPU_CORES as f64,
        "memory" => NODE_MEMORY_BYTES as f64,
        "ephemeral-storage" => 100.0 * 1073741824.0,
        _ => 0.0,
    };
    let value = match kind {
        "limits" => pick("limits").unwrap_or(node_default),
        "requests" => pick("requests").or_else(|| pick("limits")).unwrap_or(0.0),
        _ => {
            return Err(format!(
                "unsupported resourceFieldRef resource {resource:?}"
            ));
        }
    };
    let divisor = divisor
        .and_then(parse_quantity)
        .filter(|d| *d > 0.0)
        .unwrap_or(1.0);
    // Small epsilon keeps 0.5/0.001 from rounding up to 501 through float error.
    let scaled = (value / divisor - 1e-9).ceil().max(0.0);
    Ok(format!("{}", scaled as u64))
}

/// Builds the container's environment like kubelet: `base` first, then `envFrom`, then `env`
/// (each `value` expanded against what is defined so far). Unresolvable required references
/// fail with a message that becomes `CreateContainerConfigError`.
pub fn build_env(
    pod: &Pod,
    container: &Container,
    addrs: &PodAddresses,
    base: &[(String, String)],
    objects: &Objects,
) -> Result<Vec<(String, String)>, String> {
    let mut env: Vec<(String, String)> = base.to_vec();
    let set = |env: &mut Vec<(String, String)>, name: String, value: String| {
        if let Some(slot) = env.iter_mut().find(|(n, _)| *n == name) {
            slot.1 = value;
        } else {
            env.push((name, value));
        }
    };
    for source in container.env_from.iter().flatten() {
        let prefix = source.prefix.clone().unwrap_or_default();
        let (data, what, name, optional) = if let Some(cm) = &source.config_map_ref {
            (
                objects.config_maps.get(&cm.name),
                "ConfigMap",
                &cm.name,
                cm.optional,
            )
        } else if let Some(s) = &source.secret_ref {
            (objects.secrets.get(&s.name), "Secret", &s.name, s.optional)
        } else {
            continue;
        };
        match data {
            Some(data) => {
                for (key, value) in data {
                    let var = format!("{prefix}{key}");
                    if is_env_name(&var) {
                        set(&mut env, var, String::from_utf8_lossy(value).into_owned());
                    }
                }
            }
            None if optional.unwrap_or(false) => {}
            None => return Err(format!("{what} {name:?} not found")),
        }
    }
    for var in container.env.iter().flatten() {
        let value = if let Some(source) = &var.value_from {
            let resolved = if let Some(f) = &source.field_ref {
                Some(field_ref_value(pod, addrs, &f.field_path)?)
            } else if let Some(r) = &source.resource_field_ref {
                let target = match r.container_name.as_deref() {
                    Some(other) if !other.is_empty() && other != container.name => {
                        find_container(pod, other).ok_or_else(|| {
                            format!("resourceFieldRef names unknown container {other:?}")
                        })?
                    }
                    _ => container,
                };
                Some(resource_field_value(
                    target,
                    &r.resource,
                    r.divisor.as_ref().map(|d| d.0.as_str()),
                )?)
            } else if let Some(k) = &source.config_map_key_ref {
                key_ref(
                    &objects.config_maps,
                    "ConfigMap",
                    &k.name,
                    &k.key,
                    k.optional,
                )?
            } else if let Some(k) = &source.secret_key_ref {
                key_ref(&objects.secrets, "Secret", &k.name, &k.key, k.optional)?
            } else {
                return Err(format!("env {:?}: unsupported valueFrom source", var.name));
            };
            match resolved {
                Some(v) => v,
                None => continue, // optional reference that is missing: the variable is not set
            }
        } else {
            let lookup_env = env.clone();
            expand(var.value.as_deref().unwrap_or(""), |name| {
                lookup_env
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
            })
        };
        set(&mut env, var.name.clone(), value);
    }
    Ok(env)
}

fn key_ref(
    objects: &HashMap<String, BTreeMap<String, Vec<u8>>>,
    what: &str,
    name: &str,
    key: &str,
    optional: Option<bool>,
) -> Result<Option<String>, String> {
    match objects.get(name).map(|data| data.get(key)) {
        Some(Some(v)) => Ok(Some(String::from_utf8_lossy(v).into_owned())),
        _ if optional.unwrap_or(false) => Ok(None),
        Some(None) => Err(format!("key {key:?} not found in {what} {name:?}")),
        None => Err(format!("{what} {name:?} not found")),
    }
}

fn find_container<'a>(pod: &'a Pod, name: &str) -> Option<&'a Container> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == name)
}

/// Kubernetes accepts any printable name without '='; skip the rest rather than fail.
fn is_env_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('=') && !name.contains('\0')
}

/// Expands `$(VAR)` in command and args against the final container environment.
pub fn expand_all(items: &[String], env: &[(String, String)]) -> Vec<String> {
    items
        .iter()
        .map(|s| {
            expand(s, |name| {
                env.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ConfigMapEnvSource, ConfigMapKeySelector, EnvFromSource, EnvVar, EnvVarSource,
        ObjectFieldSelector, PodSpec, ResourceFieldSelector, ResourceRequirements,
        SecretKeySelector,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use kube::api::ObjectMeta;

    fn lookup(name: &str) -> Option<String> {
        match name {
            "POD_IP" => Some("127.0.10.5".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expansion_follows_kubernetes_rules() {
        assert_eq!(
            expand("--bind $(POD_IP) 8000", lookup),
            "--bind 127.0.10.5 8000"
        );
        assert_eq!(
            expand("$(POD_IP):$(POD_IP)", lookup),
            "127.0.10.5:127.0.10.5"
        );
        assert_eq!(expand("$(UNKNOWN)", lookup), "$(UNKNOWN)");
        assert_eq!(expand("$$(POD_IP)", lookup), "$(POD_IP)");
        assert_eq!(expand("cost $$5", lookup), "cost $5");
        assert_eq!(expand("x$(EMPTY)y", lookup), "xy");
        assert_eq!(
            expand("unterminated $(POD_IP", lookup),
            "unterminated $(POD_IP"
        );
        assert_eq!(expand("trailing $", lookup), "trailing $");
        assert_eq!(expand("$HOME stays", lookup), "$HOME stays");
    }

    fn pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web-0".into()),
                namespace: Some("shop".into()),
                uid: Some("u-1".into()),
                labels: Some(BTreeMap::from([
                    ("app".into(), "web".into()),
                    ("tier".into(), "front".into()),
                ])),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("local-region-a-1".into()),
                containers: vec![],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn addrs() -> PodAddresses {
        PodAddresses {
            pod_ip: "127.0.10.7".into(),
            host_ip: "127.0.0.1".into(),
        }
    }

    #[test]
    fn field_refs_resolve_pod_metadata_and_addresses() {
        let p = pod();
        let a = addrs();
        assert_eq!(field_ref_value(&p, &a, "metadata.name").unwrap(), "web-0");
        assert_eq!(
            field_ref_value(&p, &a, "metadata.namespace").unwrap(),
            "shop"
        );
        assert_eq!(
            field_ref_value(&p, &a, "status.podIP").unwrap(),
            "127.0.10.7"
        );
        assert_eq!(
            field_ref_value(&p, &a, "status.hostIP").unwrap(),
            "127.0.0.1"
        );
        assert_eq!(
            field_ref_value(&p, &a, "spec.nodeName").unwrap(),
            "local-region-a-1"
        );
        assert_eq!(
            field_ref_value(&p, &a, "metadata.labels['app']").unwrap(),
            "web"
        );
        assert_eq!(
            field_ref_value(&p, &a, "metadata.labels[\"tier\"]").unwrap(),
            "front"
        );
        assert_eq!(
            field_ref_value(&p, &a, "metadata.labels['none']").unwrap(),
            ""
        );
        assert_eq!(
            field_ref_value(&p, &a, "metadata.labels").unwrap(),
            "app=\"web\"\ntier=\"front\"\n"
        );
        assert!(field_ref_value(&p, &a, "spec.bogus").is_err());
    }

    #[test]
    fn quantities_and_resource_refs() {
        assert_eq!(parse_quantity("500m"), Some(0.5));
        assert_eq!(parse_quantity("1Gi"), Some(1073741824.0));
        assert_eq!(parse_quantity("2"), Some(2.0));
        assert_eq!(parse_quantity("1e3"), Some(1000.0));
        assert_eq!(parse_quantity("junk"), None);
        let c = Container {
            name: "app".into(),
            resources: Some(ResourceRequirements {
                limits: Some(BTreeMap::from([
                    ("cpu".into(), Quantity("500m".into())),
                    ("memory".into(), Quantity("64Mi".into())),
                ])),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(resource_field_value(&c, "limits.cpu", None).unwrap(), "1");
        assert_eq!(
            resource_field_value(&c, "limits.cpu", Some("1m")).unwrap(),
            "500"
        );
        assert_eq!(
            resource_field_value(&c, "limits.memory", Some("1Mi")).unwrap(),
            "64"
        );
        assert_eq!(
            resource_field_value(&c, "requests.memory", Some("1Mi")).unwrap(),
            "64"
        );
        let bare = Container {
            name: "b".into(),
            ..Default::default()
        };
        assert_eq!(
            resource_field_value(&bare, "limits.cpu", None).unwrap(),
            "8"
        );
        assert!(resource_field_value(&bare, "nonsense", None).is_err());
    }

    fn env_var(name: &str, value: Option<&str>, from: Option<EnvVarSource>) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: value.map(Into::into),
            value_from: from,
        }
    }

    #[test]
    fn env_combines_env_from_field_refs_and_key_refs() {
        let mut objects = Objects::default();
        objects.config_maps.insert(
            "settings".into(),
            BTreeMap::from([
                ("MODE".into(), b"fast".to_vec()),
                ("bad=name".into(), b"x".to_vec()),
            ]),
        );
        objects.secrets.insert(
            "creds".into(),
            BTreeMap::from([("password".into(), b"s3cret".to_vec())]),
        );
        let c = Container {
            name: "app".into(),
            env_from: Some(vec![EnvFromSource {
                config_map_ref: Some(ConfigMapEnvSource {
                    name: "settings".into(),
                    optional: None,
                }),
                prefix: Some("CFG_".into()),
                ..Default::default()
            }]),
            env: Some(vec![
                env_var(
                    "POD_IP",
                    None,
                    Some(EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "status.podIP".into(),
                            api_version: None,
                        }),
                        ..Default::default()
                    }),
                ),
                env_var("ADDR", Some("$(POD_IP):6379"), None),
                env_var(
                    "PASSWORD",
                    None,
                    Some(EnvVarSource {
                        secret_key_ref: Some(SecretKeySelector {
                            name: "creds".into(),
                            key: "password".into(),
                            optional: None,
                        }),
                        ..Default::default()
                    }),
                ),
                env_var(
                    "MISSING_OK",
                    None,
                    Some(EnvVarSource {
                        config_map_key_ref: Some(ConfigMapKeySelector {
                            name: "absent".into(),
                            key: "k".into(),
                            optional: Some(true),
                        }),
                        ..Default::default()
                    }),
                ),
                env_var(
                    "CPU",
                    None,
                    Some(EnvVarSource {
                        resource_field_ref: Some(ResourceFieldSelector {
                            resource: "limits.cpu".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                ),
            ]),
            ..Default::default()
        };
        let base = vec![(
            "KUBERNETES_SERVICE_HOST".to_string(),
            "127.0.0.1".to_string(),
        )];
        let env = build_env(&pod(), &c, &addrs(), &base, &objects).unwrap();
        let get = |n: &str| env.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        assert_eq!(get("KUBERNETES_SERVICE_HOST"), Some("127.0.0.1"));
        assert_eq!(get("CFG_MODE"), Some("fast"));
        assert_eq!(get("CFG_bad=name"), None);
        assert_eq!(get("POD_IP"), Some("127.0.10.7"));
        assert_eq!(get("ADDR"), Some("127.0.10.7:6379"));
        assert_eq!(get("PASSWORD"), Some("s3cret"));
        assert_eq!(get("MISSING_OK"), None);
        assert_eq!(get("CPU"), Some("8"));

        let args = expand_all(&["--bind".into(), "$(POD_IP)".into()], &env);
        assert_eq!(args, vec!["--bind", "127.0.10.7"]);
    }

    #[test]
    fn missing_required_reference_is_an_error() {
        let c = Container {
            name: "app".into(),
            env: Some(vec![env_var(
                "X",
                None,
                Some(EnvVarSource {
                    config_map_key_ref: Some(ConfigMapKeySelector {
                        name: "absent".into(),
                        key: "k".into(),
                        optional: None,
                    }),
                    ..Default::default()
                }),
            )]),
            ..Default::default()
        };
        let err = build_env(&pod(), &c, &addrs(), &[], &Objects::default()).unwrap_err();
        assert!(err.contains("absent"), "{err}");
    }
}
