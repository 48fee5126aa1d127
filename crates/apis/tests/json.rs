//! Upstream-shaped JSON (written by hand from upstream's Go types and json tags) reads into our
//! types and is written back unchanged.

use kube_core::ObjectList;
use kubeedge_apis::reliablesyncs::parse_object_sync_name;
use kubeedge_apis::reliablesyncs::v1alpha1::{ClusterObjectSync, ObjectSync, ObjectSyncSpec, ObjectSyncStatus};
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
