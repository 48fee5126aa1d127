//! Upstream-shaped JSON (written by hand from upstream's Go types and json tags) reads into our
//! types and is written back unchanged.

use kube_core::ObjectList;
use kubeedge_apis::reliablesyncs::parse_object_sync_name;
use kubeedge_apis::reliablesyncs::v1alpha1::{ClusterObjectSync, ObjectSync, ObjectSyncSpec, ObjectSyncStatus};
use kubeedge_apis::rules::v1::{Rule, RuleEndpoint, RuleEndpointType, RuleStatus};
use serde_json::{Value, json};

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))).unwrap()
}

#[test]
fn objectsync_round_trips() {
    let upstream = fixture("objectsync.json");
    let sync: ObjectSync = serde_json::from_value(upstream.clone()).unwrap();
    assert_eq!(sync.metadata.namespace.as_deref(), Some("default"));
    assert_eq!(sync.spec, ObjectSyncSpec::new("v1", "Pod", "nginx-7c5ddbdf54-x2x9q"));
    assert_eq!(sync.status, Some(ObjectSyncStatus::new("48190")));
    let name = sync.metadata.name.as_deref().unwrap();
    assert_eq!(parse_object_sync_name(name), Some(("edge-01.lab.example.com", "a3f1c2d4-5b6e-4f70-8a91-b2c3d4e5f607")));
    assert_eq!(serde_json::to_value(&sync).unwrap(), upstream);
}

#[test]
fn clusterobjectsync_round_trips() {
    let upstream = fixture("clusterobjectsync.json");
    let sync: ClusterObjectSync = serde_json::from_value(upstream.clone()).unwrap();
    assert_eq!(sync.metadata.namespace, None);
    assert_eq!(sync.spec.object_api_version, "rules.kubeedge.io/v1");
    assert_eq!(sync.spec.object_kind, "RuleEndpoint");
    assert_eq!(sync.spec.object_name, "my-rest");
    assert_eq!(sync.status.as_ref().unwrap().object_resource_version, "0");
    assert_eq!(serde_json::to_value(&sync).unwrap(), upstream);
}

/// What upstream's cloudhub POSTs: Go's client sets `creationTimestamp: null` and writes the
/// empty status as `{}`. We read it, and write the same object (bar the null timestamp).
#[test]
fn go_client_create_body_is_accepted() {
    let upstream = fixture("objectsync_create_body.json");
    let sync: ObjectSync = serde_json::from_value(upstream.clone()).unwrap();
    assert_eq!(sync.metadata.creation_timestamp, None);
    assert_eq!(sync.status, Some(ObjectSyncStatus::default()));

    let mut expected = upstream;
    expected["metadata"].as_object_mut().unwrap().remove("creationTimestamp");
    assert_eq!(serde_json::to_value(&sync).unwrap(), expected);
}

#[test]
fn list_reads_items_with_and_without_status_versions() {
    let list: ObjectList<ObjectSync> = serde_json::from_value(fixture("objectsynclist.json")).unwrap();
    assert_eq!(list.metadata.resource_version.as_deref(), Some("48230"));
    let kinds: Vec<_> = list.items.iter().map(|s| s.spec.object_kind.as_str()).collect();
    assert_eq!(kinds, ["Pod", "Secret"]);
    assert_eq!(list.items[1].status, Some(ObjectSyncStatus::default()));
    let expected = fixture("objectsynclist.json");
    for (item, want) in list.items.iter().zip(expected["items"].as_array().unwrap()) {
        assert_eq!(&serde_json::to_value(item).unwrap(), want);
    }
}

/// Go's `omitempty` on strings: an empty field is absent, and an absent field reads as empty.
#[test]
fn empty_fields_follow_go_omitempty() {
    let sparse = json!({
        "apiVersion": "reliablesyncs.kubeedge.io/v1alpha1",
        "kind": "ObjectSync",
        "metadata": {"name": "n.u", "namespace": "default"},
        "spec": {"objectKind": "Pod"},
    });
    let sync: ObjectSync = serde_json::from_value(sparse.clone()).unwrap();
    assert_eq!(sync.spec, ObjectSyncSpec::new("", "Pod", ""));
    assert_eq!(sync.status, None);
    assert_eq!(serde_json::to_value(&sync).unwrap(), sparse);
}

/// The `API` acronym stays upper case, as Go's json tag has it.
#[test]
fn keys_keep_gos_acronyms() {
    let spec = serde_json::to_value(ObjectSyncSpec::new("apps/v1", "Deployment", "web")).unwrap();
    assert_eq!(spec, json!({"objectAPIVersion": "apps/v1", "objectKind": "Deployment", "objectName": "web"}));
    assert!(serde_json::to_string(&spec).unwrap().contains("\"objectAPIVersion\""));
    let status = serde_json::to_value(ObjectSyncStatus::new("7")).unwrap();
    assert_eq!(status, json!({"objectResourceVersion": "7"}));
}

// === rules.kubeedge.io/v1 ===

/// A Rule from upstream's rest → servicebus sample (`build/crd-samples/router/`), with the
/// status the Router counts into it.
#[test]
fn rule_round_trips() {
    let upstream = fixture("rule.json");
    let rule: Rule = serde_json::from_value(upstream.clone()).unwrap();
    assert_eq!(rule.metadata.namespace.as_deref(), Some("default"));
    assert_eq!((rule.spec.source.as_str(), rule.spec.target.as_str()), ("my-rest", "my-servicebus"));
    assert_eq!(rule.spec.source_resource["path"], "/source");
    assert_eq!(rule.spec.target_resource["path"], "/target");
    let status = rule.status.as_ref().unwrap();
    assert_eq!((status.success_messages, status.fail_messages), (41, 2));
    assert_eq!(status.errors.len(), 1);
    assert_eq!(serde_json::to_value(&rule).unwrap(), upstream);
}

/// A RuleEndpoint from upstream's servicebus sample: the edge application's port in
/// `properties`.
#[test]
fn ruleendpoint_round_trips() {
    let upstream = fixture("ruleendpoint.json");
    let endpoint: RuleEndpoint = serde_json::from_value(upstream.clone()).unwrap();
    assert_eq!(endpoint.metadata.name.as_deref(), Some("my-servicebus"));
    assert_eq!(endpoint.spec.rule_endpoint_type, RuleEndpointType::ServiceBus);
    assert_eq!(endpoint.spec.properties["service_port"], "6666");
    assert_eq!(serde_json::to_value(&endpoint).unwrap(), upstream);
}

/// Upstream's other samples, as kubectl stores them: a Rule without status, and endpoints with
/// `properties: {}`, which Go (`omitempty` on a map) and we write back without `properties`.
#[test]
fn kubectl_created_samples_are_read() {
    let rule = json!({
        "apiVersion": "rules.kubeedge.io/v1",
        "kind": "Rule",
        "metadata": {"name": "my-rule-eventbus-rest", "namespace": "default", "labels": {"description": "eventbusToRest"}},
        "spec": {
            "source": "my-eventbus",
            "sourceResource": {"topic": "test", "node_name": "edge-node"},
            "target": "my-rest",
            "targetResource": {"resource": "http://a.com"},
        },
    });
    let read: Rule = serde_json::from_value(rule.clone()).unwrap();
    assert_eq!(read.spec.source_resource["node_name"], "edge-node");
    assert_eq!(read.status, None);
    assert_eq!(serde_json::to_value(&read).unwrap(), rule);

    for (name, kind) in [("my-rest", RuleEndpointType::Rest), ("my-eventbus", RuleEndpointType::EventBus)] {
        let endpoint = json!({
            "apiVersion": "rules.kubeedge.io/v1",
            "kind": "RuleEndpoint",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"ruleEndpointType": kind.as_str(), "properties": {}},
        });
        let read: RuleEndpoint = serde_json::from_value(endpoint.clone()).unwrap();
        assert_eq!(read.spec.rule_endpoint_type, kind);
        assert!(read.spec.properties.is_empty());
        let mut expected = endpoint;
        expected["spec"].as_object_mut().unwrap().remove("properties");
        assert_eq!(serde_json::to_value(&read).unwrap(), expected);
    }
}

/// What Go's client writes for a Rule it has not counted anything for: both counters, and a nil
/// `errors` slice as `null`.
#[test]
fn go_written_rule_status_is_read() {
    let status: RuleStatus =
        serde_json::from_value(json!({"successMessages": 0, "failMessages": 0, "errors": null})).unwrap();
    assert_eq!(status, RuleStatus::default());
    assert_eq!(serde_json::to_value(&status).unwrap(), json!({"successMessages": 0, "failMessages": 0}));
}

/// The four spec fields have no `omitempty` upstream and the CRD requires them; the endpoint type
/// must be one of upstream's three.
#[test]
fn incomplete_rules_and_unknown_endpoint_types_are_rejected() {
    let spec = json!({"source": "a", "sourceResource": {}, "target": "b", "targetResource": {}});
    for key in ["source", "sourceResource", "target", "targetResource"] {
        let mut partial = spec.clone();
        partial.as_object_mut().unwrap().remove(key);
        let rule = json!({"apiVersion": "rules.kubeedge.io/v1", "kind": "Rule", "metadata": {}, "spec": partial});
        assert!(serde_json::from_value::<Rule>(rule).is_err(), "a Rule without spec.{key}");
    }
    let endpoint = json!({"apiVersion": "rules.kubeedge.io/v1", "kind": "RuleEndpoint", "metadata": {},
                          "spec": {"ruleEndpointType": "mqtt"}});
    assert!(serde_json::from_value::<RuleEndpoint>(endpoint).is_err());
}
