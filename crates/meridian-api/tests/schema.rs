//! The generated CRDs are structural, carry the documented defaults, and every CEL rule has a
//! message, compiles and stays within the API server's cost budget.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use kube::core::cel::{compile_schema, estimate_rule_cost};
use meridian_api::{CacheCluster, CacheClusterStatus, CacheRegion, CacheRegionStatus};
use serde_json::{Value, json};

fn crds() -> [CustomResourceDefinition; 2] {
    [CacheCluster::crd(), CacheRegion::crd()]
}

fn schema(crd: &CustomResourceDefinition) -> Value {
    let version = &crd.spec.versions[0];
    serde_json::to_value(
        version
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .expect("schema"),
    )
    .expect("json")
}

/// Keywords a structural schema may not use at all in what we generate. (Kubernetes allows
/// `anyOf`/`allOf`/`oneOf`/`not` only as pure value validations; we never need them.)
const FORBIDDEN: [&str; 10] = [
    "$ref",
    "$schema",
    "$defs",
    "definitions",
    "const",
    "anyOf",
    "oneOf",
    "allOf",
    "not",
    "uniqueItems",
];

/// Walks every schema node (properties, items, additionalProperties) and collects violations.
fn check_node(path: &str, node: &Value, problems: &mut Vec<String>) {
    let Some(map) = node.as_object() else {
        problems.push(format!("{path}: schema is not an object"));
        return;
    };
    for key in FORBIDDEN {
        if map.contains_key(key) {
            problems.push(format!("{path}: uses {key}"));
        }
    }
    let typed = match map.get("type") {
        Some(Value::String(t)) => !t.is_empty(),
        Some(other) => {
            problems.push(format!("{path}: type must be one string, is {other}"));
            false
        }
        None => false,
    };
    let int_or_string = map.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    let preserve = map.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if !typed && !int_or_string && !preserve {
        problems.push(format!("{path}: no type"));
    }
    if map.contains_key("nullable") && !typed && !int_or_string {
        problems.push(format!("{path}: nullable without type"));
    }
    if map.contains_key("properties") && map.contains_key("additionalProperties") {
        problems.push(format!("{path}: both properties and additionalProperties"));
    }
    if map.get("type") == Some(&json!("array")) && !map.contains_key("items") {
        problems.push(format!("{path}: array without items"));
    }
    if let Some(Value::Object(properties)) = map.get("properties") {
        for (name, child) in properties {
            check_node(&format!("{path}.{name}"), child, problems);
        }
    }
    if let Some(items) = map.get("items") {
        check_node(&format!("{path}[]"), items, problems);
    }
    if let Some(values) = map.get("additionalProperties")
        && values.is_object()
    {
        check_node(&format!("{path}{{}}"), values, problems);
    }
}

#[test]
fn schemas_are_structural() {
    for crd in crds() {
        let mut problems = Vec::new();
        check_node(&crd.spec.names.kind, &schema(&crd), &mut problems);
        assert!(
            problems.is_empty(),
            "{}: {problems:#?}",
            crd.spec.names.kind
        );
    }
}

/// Every node carrying `x-kubernetes-validations`, with its path.
fn rule_nodes<'a>(path: String, node: &'a Value, out: &mut Vec<(String, &'a Value)>) {
    if node.get("x-kubernetes-validations").is_some() {
        out.push((path.clone(), node));
    }
    if let Some(Value::Object(properties)) = node.get("properties") {
        for (name, child) in properties {
            rule_nodes(format!("{path}.{name}"), child, out);
        }
    }
    if let Some(items) = node.get("items") {
        rule_nodes(format!("{path}[]"), items, out);
    }
}

#[test]
fn every_rule_has_a_message_compiles_and_fits_the_cost_budget() {
    let mut count = 0;
    for crd in crds() {
        let schema = schema(&crd);
        let mut nodes = Vec::new();
        rule_nodes(crd.spec.names.kind.clone(), &schema, &mut nodes);
        for (path, node) in nodes {
            let compiled = compile_schema(node);
            assert!(
                !compiled.has_errors(),
                "{path}: {:?}",
                compiled.compilation_errors()
            );
            for rule in node["x-kubernetes-validations"].as_array().expect("array") {
                count += 1;
                let message = rule.get("message").and_then(Value::as_str).unwrap_or("");
                assert!(!message.is_empty(), "{path}: rule {rule} has no message");
                let text = rule["rule"].as_str().expect("rule text");
                let warnings = estimate_rule_cost(text, &compiled);
                assert!(warnings.is_empty(), "{path}: {text}: {warnings:?}");
            }
        }
    }
    assert!(count >= 20, "expected the documented rules, found {count}");
}

#[test]
fn defaults_are_in_the_schema() {
    let cluster = schema(&CacheCluster::crd());
    let spec = &cluster["properties"]["spec"]["properties"];
    assert_eq!(spec["shards"]["default"], json!(3));
    assert_eq!(spec["replicasPerShard"]["default"], json!(1));
    assert_eq!(spec["consistency"]["default"], json!("eventual"));
    assert_eq!(
        spec["crossRegion"]["properties"]["mode"]["default"],
        json!("invalidate")
    );
    assert_eq!(
        spec["memory"]["properties"]["evictionPolicy"]["default"],
        json!("sieve")
    );
    assert_eq!(
        spec["auth"]["properties"]["secretRef"]["properties"]["key"]["default"],
        json!("password")
    );
    // Absent means "500 ms when strong": a schema default would break the rule that the field
    // is only set together with consistency: strong.
    assert!(
        spec["crossRegion"]["properties"]["strongTimeoutMs"]
            .get("default")
            .is_none()
    );

    let region = schema(&CacheRegion::crd());
    let spec = &region["properties"]["spec"]["properties"];
    assert_eq!(
        spec["link"]["properties"]["serviceType"]["default"],
        json!("ClusterIP")
    );
    assert_eq!(spec["peers"]["default"], json!([]));
    // Absent overrides mean "inherit from the cluster"; a default would hide that.
    assert!(spec["shards"].get("default").is_none());
    assert!(spec["replicasPerShard"].get("default").is_none());
}

#[test]
fn enums_use_the_documented_spellings() {
    let cluster = schema(&CacheCluster::crd());
    let spec = &cluster["properties"]["spec"]["properties"];
    assert_eq!(spec["consistency"]["enum"], json!(["eventual", "strong"]));
    assert_eq!(
        spec["crossRegion"]["properties"]["mode"]["enum"],
        json!(["invalidate", "replicate"])
    );
    assert_eq!(
        spec["memory"]["properties"]["evictionPolicy"]["enum"],
        json!([
            "sieve",
            "allkeys-lru",
            "allkeys-lfu",
            "allkeys-random",
            "volatile-lru",
            "volatile-lfu",
            "volatile-random",
            "volatile-ttl",
            "noeviction"
        ])
    );
    for policy in spec["memory"]["properties"]["evictionPolicy"]["enum"]
        .as_array()
        .expect("enum")
    {
        let parsed: meridian_api::EvictionPolicy =
            serde_json::from_value(policy.clone()).expect("every schema value deserializes");
        assert_eq!(json!(parsed.as_str()), *policy);
    }
    let region = schema(&CacheRegion::crd());
    assert_eq!(
        region["properties"]["spec"]["properties"]["link"]["properties"]["serviceType"]["enum"],
        json!(["ClusterIP", "LoadBalancer", "NodePort"])
    );
}

#[test]
fn region_is_immutable() {
    let region = schema(&CacheRegion::crd());
    let rules = &region["properties"]["spec"]["properties"]["region"]["x-kubernetes-validations"];
    assert!(
        rules
            .as_array()
            .expect("rules")
            .iter()
            .any(|r| r["rule"] == "self == oldSelf"
                && r["message"] == "region is immutable; create a new CacheRegion instead"),
        "{rules}"
    );
}

#[test]
fn names_scope_and_printer_columns() {
    let [cluster, region] = crds();
    for crd in [&cluster, &region] {
        assert_eq!(crd.spec.group, meridian_api::API_GROUP);
        assert_eq!(crd.spec.scope, "Namespaced");
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, meridian_api::API_VERSION);
        assert!(version.served && version.storage);
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some()
        );
    }
    assert_eq!(cluster.spec.names.short_names, Some(vec!["mcc".to_owned()]));
    assert_eq!(region.spec.names.short_names, Some(vec!["mcr".to_owned()]));
    let columns = |crd: &CustomResourceDefinition| -> Vec<(String, String)> {
        crd.spec.versions[0]
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| (c.name.clone(), c.json_path.clone()))
            .collect()
    };
    let expect = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    };
    assert_eq!(
        columns(&cluster),
        expect(&[
            ("Shards", ".spec.shards"),
            ("Replicas", ".spec.replicasPerShard"),
            ("Consistency", ".spec.consistency"),
            ("Ready", ".status.readyRegions"),
            ("Age", ".metadata.creationTimestamp"),
        ])
    );
    assert_eq!(
        columns(&region),
        expect(&[
            ("Cluster", ".spec.clusterRef.name"),
            ("Region", ".spec.region"),
            ("Shards", ".status.readyShards"),
            ("Epoch", ".status.epoch"),
            ("Ready", ".status.conditions[?(@.type==\"Ready\")].status"),
            ("Age", ".metadata.creationTimestamp"),
        ])
    );
}

#[test]
fn partial_and_empty_status_deserializes() {
    let cluster: CacheClusterStatus = serde_json::from_value(json!({})).expect("empty");
    assert_eq!(cluster, CacheClusterStatus::default());
    let cluster: CacheClusterStatus =
        serde_json::from_value(json!({"regions": [{"name": "eu"}], "readyRegions": 1}))
            .expect("partial");
    assert_eq!(cluster.regions[0].name, "eu");
    assert_eq!(cluster.regions[0].epoch, 0);

    let region: CacheRegionStatus = serde_json::from_value(json!({
        "epoch": 7,
        "shards": [{"index": 2, "slots": ["0-5460"]}],
        "peers": [{"region": "us-east-1"}]
    }))
    .expect("partial");
    assert_eq!(region.epoch, 7);
    assert_eq!(region.shards[0].index, 2);
    assert_eq!(region.shards[0].primary, None);
    assert!(!region.peers[0].connected);

    // Unset options are left out, so the operator's server-side apply does not claim them.
    let written = serde_json::to_value(CacheRegionStatus::default()).expect("serialize");
    assert!(written.get("observedGeneration").is_none());
}
