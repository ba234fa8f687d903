//! The YAML fixtures in `tests/fixtures/` against the Rust types and the CRDs' CEL rules,
//! evaluated client-side with kube's CEL validator (the API server is the final judge; the lead's
//! API-server test applies the same files).
//!
//! Conventions, shared with that test:
//! * `valid-*.yaml`: every document is accepted.
//! * `invalid-*.yaml`: the first line is `# expect: <message substring>`; every document but the
//!   last is accepted, the last is refused with a message containing the substring. Documents
//!   are applied in order, so a later document can be an update of an earlier one.

use std::path::{Path, PathBuf};

use kube::CustomResourceExt;
use kube::core::cel::Validator;
use meridian_api::{
    CacheCluster, CacheRegion, Consistency, CrossRegionMode, EvictionPolicy, LinkServiceType,
};
use serde::Deserialize;
use serde_json::Value;

struct Fixture {
    name: String,
    expect: String,
    documents: Vec<Value>,
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn load(name: &str) -> Fixture {
    let path = fixtures_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
    let expect = text
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("# expect: "))
        .unwrap_or_else(|| panic!("{name}: first line must be `# expect: ...`"))
        .to_owned();
    let documents = serde_yaml::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{name}: {e}")))
        .collect();
    Fixture {
        name: name.to_owned(),
        expect,
        documents,
    }
}

fn all_fixtures() -> Vec<Fixture> {
    let mut names: Vec<String> = std::fs::read_dir(fixtures_dir())
        .expect("fixtures directory")
        .map(|entry| {
            entry
                .expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".yaml"))
        .collect();
    names.sort();
    names.iter().map(|name| load(name)).collect()
}

fn schema_of(kind: &str) -> Value {
    let crd = match kind {
        "CacheCluster" => CacheCluster::crd(),
        "CacheRegion" => CacheRegion::crd(),
        other => panic!("fixture of unknown kind {other}"),
    };
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("CRD schema");
    serde_json::to_value(schema).expect("schema to JSON")
}

/// Every CEL message of a schema, to tell CEL expectations from OpenAPI ones (enums).
fn rule_messages(schema: &Value, out: &mut Vec<String>) {
    match schema {
        Value::Object(map) => {
            if let Some(Value::Array(rules)) = map.get("x-kubernetes-validations") {
                out.extend(
                    rules
                        .iter()
                        .filter_map(|r| r.get("message").and_then(Value::as_str))
                        .map(str::to_owned),
                );
            }
            map.values().for_each(|v| rule_messages(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| rule_messages(v, out)),
        _ => {}
    }
}

fn kind_of(doc: &Value) -> &str {
    doc.get("kind").and_then(Value::as_str).expect("kind")
}

/// Deserializes into the typed resource: what the operator will see.
fn typed(doc: &Value) -> Result<(), serde_json::Error> {
    match kind_of(doc) {
        "CacheCluster" => serde_json::from_value::<CacheCluster>(doc.clone()).map(drop),
        "CacheRegion" => serde_json::from_value::<CacheRegion>(doc.clone()).map(drop),
        other => panic!("unknown kind {other}"),
    }
}

/// CEL failures of `doc`, with `old` (an earlier document of the same object) for transition rules.
fn cel_errors(doc: &Value, old: Option<&Value>) -> Vec<String> {
    match Validator::new().validate(&schema_of(kind_of(doc)), doc, old) {
        Ok(()) => Vec::new(),
        Err(errors) => errors
            .as_slice()
            .iter()
            .map(|e| format!("{}: {}", e.field_path, e.message))
            .collect(),
    }
}

fn name_of(doc: &Value) -> Option<&str> {
    doc.pointer("/metadata/name").and_then(Value::as_str)
}

/// The earlier document describing the same object, if any.
fn previous(documents: &[Value], index: usize) -> Option<&Value> {
    let doc = &documents[index];
    documents[..index]
        .iter()
        .rev()
        .find(|d| kind_of(d) == kind_of(doc) && name_of(d) == name_of(doc))
}

fn assert_accepted(fixture: &Fixture, index: usize) {
    let doc = &fixture.documents[index];
    if let Err(e) = typed(doc) {
        panic!(
            "{} document {index}: does not deserialize: {e}",
            fixture.name
        );
    }
    let errors = cel_errors(doc, previous(&fixture.documents, index));
    assert!(
        errors.is_empty(),
        "{} document {index}: refused by CEL: {errors:?}",
        fixture.name
    );
}

#[test]
fn fixture_names_follow_the_convention() {
    let fixtures = all_fixtures();
    assert!(fixtures.iter().any(|f| f.name.starts_with("valid-")));
    assert!(fixtures.iter().any(|f| f.name.starts_with("invalid-")));
    for fixture in &fixtures {
        assert!(
            fixture.name.starts_with("valid-") || fixture.name.starts_with("invalid-"),
            "{}: name must start with valid- or invalid-",
            fixture.name
        );
        assert!(
            !fixture.expect.is_empty(),
            "{}: empty expectation",
            fixture.name
        );
        assert!(
            !fixture.documents.is_empty(),
            "{}: no documents",
            fixture.name
        );
        for doc in &fixture.documents {
            assert_eq!(
                doc.get("apiVersion").and_then(Value::as_str),
                Some(meridian_api::API_GROUP_VERSION),
                "{}",
                fixture.name
            );
        }
    }
}

#[test]
fn valid_fixtures_are_accepted() {
    for fixture in all_fixtures()
        .iter()
        .filter(|f| f.name.starts_with("valid-"))
    {
        for index in 0..fixture.documents.len() {
            assert_accepted(fixture, index);
        }
    }
}

#[test]
fn invalid_fixtures_are_refused_with_their_message() {
    for fixture in all_fixtures()
        .iter()
        .filter(|f| f.name.starts_with("invalid-"))
    {
        let last = fixture.documents.len() - 1;
        for index in 0..last {
            assert_accepted(fixture, index);
        }
        let doc = &fixture.documents[last];
        let mut messages = Vec::new();
        rule_messages(&schema_of(kind_of(doc)), &mut messages);
        let from_cel = messages.iter().any(|m| m.contains(&fixture.expect));
        if from_cel {
            let errors = cel_errors(doc, previous(&fixture.documents, last));
            assert!(
                errors.iter().any(|e| e.contains(&fixture.expect)),
                "{}: expected a CEL error containing {:?}, got {errors:?}",
                fixture.name,
                fixture.expect
            );
        } else {
            // Not a CEL message: an OpenAPI enum violation, which the API server reports as
            // `Unsupported value: ...: supported values: ...`. The typed structs refuse it too.
            assert!(
                fixture.expect.starts_with("supported values: "),
                "{}: expectation {:?} matches no CEL message and is not an enum error",
                fixture.name,
                fixture.expect
            );
            assert!(
                typed(doc).is_err(),
                "{}: the Rust types accept a value the schema enum refuses",
                fixture.name
            );
            let listed = fixture.expect.trim_start_matches("supported values: ");
            let schema = serde_json::to_string(&schema_of(kind_of(doc))).expect("json");
            for value in listed.split(", ") {
                assert!(
                    schema.contains(value),
                    "{}: {value} is not an enum value of the schema",
                    fixture.name
                );
            }
        }
    }
}

#[test]
fn minimal_cluster_gets_the_documented_defaults() {
    let fixture = load("valid-cluster-minimal.yaml");
    let cluster: CacheCluster =
        serde_json::from_value(fixture.documents[0].clone()).expect("deserializes");
    let spec = &cluster.spec;
    assert_eq!(spec.shards, 3);
    assert_eq!(spec.replicas_per_shard, 1);
    assert_eq!(spec.consistency, Consistency::Eventual);
    assert_eq!(spec.cross_region.mode, CrossRegionMode::Invalidate);
    assert_eq!(spec.cross_region.effective_strong_timeout_ms(), 500);
    assert_eq!(spec.memory.eviction_policy, EvictionPolicy::Sieve);
    assert_eq!(spec.memory.maxmemory_bytes(), Ok(None));
    assert_eq!(*spec, meridian_api::CacheClusterSpec::default());
    assert!(cluster.status.is_none());
}

#[test]
fn full_cluster_deserializes_every_field() {
    let fixture = load("valid-cluster-full.yaml");
    let cluster: CacheCluster =
        serde_json::from_value(fixture.documents[0].clone()).expect("deserializes");
    let spec = &cluster.spec;
    assert_eq!((spec.shards, spec.replicas_per_shard), (6, 2));
    assert_eq!(spec.consistency, Consistency::Strong);
    assert_eq!(spec.cross_region.mode, CrossRegionMode::Replicate);
    assert_eq!(spec.cross_region.effective_strong_timeout_ms(), 750);
    assert_eq!(spec.memory.maxmemory_bytes(), Ok(Some(3 << 29)));
    assert_eq!(spec.memory.eviction_policy, EvictionPolicy::AllkeysLfu);
    assert_eq!(spec.default_ttl_seconds, Some(3600));
    let origin = spec.origin.as_ref().expect("origin");
    assert_eq!(origin.url, "https://origin.example.com/objects");
    assert!(origin.read_through && !origin.write_through);
    assert_eq!(origin.timeout_ms, Some(2000));
    let auth = spec.auth.as_ref().expect("auth");
    let secret_ref = auth.secret_ref.as_ref().expect("secretRef");
    assert_eq!(secret_ref.name, "meridian-auth");
    assert_eq!(secret_ref.key, "password", "key defaults to password");
    assert!(
        spec.tls
            .as_ref()
            .is_some_and(|tls| tls.require_peer_certificates)
    );
    assert_eq!(
        spec.tls.as_ref().map(|t| t.secret_name.as_str()),
        Some("meridian-tls")
    );
    assert_eq!(
        spec.image.as_deref(),
        Some("ghcr.io/meridian/meridian-node:0.1.0")
    );
    assert_eq!(spec.image_pull_policy.as_deref(), Some("IfNotPresent"));
    let requests = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .expect("requests");
    assert_eq!(requests.get("cpu").map(|q| q.0.as_str()), Some("250m"));
}

#[test]
fn full_region_deserializes_every_field() {
    let fixture = load("valid-region-full.yaml");
    let region: CacheRegion =
        serde_json::from_value(fixture.documents[0].clone()).expect("deserializes");
    let spec = &region.spec;
    assert_eq!(spec.cluster_ref.name, "valid-cluster-full");
    assert_eq!(spec.region, "us-east-1");
    assert_eq!((spec.shards, spec.replicas_per_shard), (Some(4), Some(0)));
    let placement = spec.placement.as_ref().expect("placement");
    assert_eq!(
        placement
            .node_selector
            .get("node.kubernetes.io/instance-type")
            .map(String::as_str),
        Some("m7g.large")
    );
    assert_eq!(placement.zones, ["us-east-1a", "us-east-1b", "us-east-1c"]);
    assert_eq!(placement.tolerations.len(), 1);
    assert_eq!(
        spec.link.as_ref().map(|l| l.service_type),
        Some(LinkServiceType::LoadBalancer)
    );
    let peers: Vec<(&str, &str)> = spec
        .peers
        .iter()
        .map(|p| (p.region.as_str(), p.address.as_str()))
        .collect();
    assert_eq!(
        peers,
        [
            ("eu-west-1", "meridian-eu.example.com:16379"),
            ("ap-south-1", "[2001:db8::1]:16379")
        ]
    );
    let cluster = meridian_api::CacheClusterSpec::default();
    assert_eq!(spec.effective_shards(&cluster), 4);
    assert_eq!(spec.effective_replicas_per_shard(&cluster), 0);
}

#[test]
fn minimal_region_inherits_from_its_cluster() {
    let fixture = load("valid-region-minimal.yaml");
    let region: CacheRegion =
        serde_json::from_value(fixture.documents[0].clone()).expect("deserializes");
    assert!(region.spec.peers.is_empty());
    assert!(region.spec.placement.is_none() && region.spec.link.is_none());
    let cluster = meridian_api::CacheClusterSpec {
        shards: 5,
        replicas_per_shard: 2,
        ..Default::default()
    };
    assert_eq!(region.spec.effective_shards(&cluster), 5);
    assert_eq!(region.spec.effective_replicas_per_shard(&cluster), 2);
}
