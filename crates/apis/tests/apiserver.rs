//! The CRDs and types against apiserver-lite, through kube-rs: register the CRDs, then create,
//! update the status the way upstream's cloudhub does (create, then UpdateStatus), patch the
//! status, list and delete records of both kinds.

use std::time::Duration;

use apiserver_lite::{ApiServer, Options};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, CustomResourceExt};
use kubeedge_apis::reliablesyncs::v1alpha1::{
    ClusterObjectSync, ClusterObjectSyncSpec, ObjectSync, ObjectSyncSpec, ObjectSyncStatus,
};
use kubeedge_apis::reliablesyncs::{compare_resource_version, object_sync_name, parse_object_sync_name};
use serde_json::json;

const PATIENCE: Duration = Duration::from_secs(60);

async fn start() -> (ApiServer, Client) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = ApiServer::start(listener, Options::default()).await.unwrap();
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&server.kubeconfig()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.unwrap();
    let client = Client::try_from(config).unwrap();
    (server, client)
}

/// Creates every CRD of the crate and waits until each is established.
async fn register_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in kubeedge_apis::crds() {
        crds.create(&PostParams::default(), &crd).await.unwrap();
    }
    for name in [ObjectSync::crd_name(), ClusterObjectSync::crd_name()] {
        tokio::time::timeout(PATIENCE, await_condition(crds.clone(), name, conditions::is_crd_established()))
            .await
            .unwrap_or_else(|_| panic!("CRD {name} not established"))
            .unwrap();
    }
}

/// The recorded version, if any.
fn status_rv(status: &Option<ObjectSyncStatus>) -> Option<&str> {
    status.as_ref().map(|s| s.object_resource_version.as_str()).filter(|rv| !rv.is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objectsync_lifecycle() {
    tokio::time::timeout(PATIENCE, async {
        let (server, client) = start().await;
        register_crds(&client).await;
        let syncs: Api<ObjectSync> = Api::namespaced(client.clone(), "default");

        // Upstream's cloudhub: create the record (a status sent on create is dropped)...
        let name = object_sync_name("edge-01.lab.example.com", "a3f1c2d4-5b6e-4f70-8a91-b2c3d4e5f607");
        let mut record = ObjectSync::new(&name, ObjectSyncSpec::new("v1", "Pod", "nginx"));
        record.status = Some(ObjectSyncStatus::new("999"));
        let created = syncs.create(&PostParams::default(), &record).await.unwrap();
        assert_eq!(created.spec, record.spec);
        assert_eq!(status_rv(&created.status), None, "status must be ignored on create");
        assert_eq!(created.metadata.namespace.as_deref(), Some("default"));

        // ...then UpdateStatus (a PUT of the whole object to /status) with the delivered version.
        let mut updated = created.clone();
        updated.status = Some(ObjectSyncStatus::new("0"));
        let updated = syncs.replace_status(&name, &PostParams::default(), &updated).await.unwrap();
        assert_eq!(status_rv(&updated.status), Some("0"));

        // The SyncController later records a newer version with a status patch.
        let patch = Patch::Merge(json!({"status": {"objectResourceVersion": "48190"}}));
        let patched = syncs.patch_status(&name, &PatchParams::default(), &patch).await.unwrap();
        assert_eq!(status_rv(&patched.status), Some("48190"));
        assert_eq!(
            compare_resource_version("48213", &patched.status.as_ref().unwrap().object_resource_version),
            Some(std::cmp::Ordering::Greater)
        );

        // Writes to the main resource leave the status alone.
        let mut spec_change = patched.clone();
        spec_change.spec.object_name = "nginx-2".into();
        spec_change.status = Some(ObjectSyncStatus::new("1"));
        let replaced = syncs.replace(&name, &PostParams::default(), &spec_change).await.unwrap();
        assert_eq!(replaced.spec.object_name, "nginx-2");
        assert_eq!(status_rv(&replaced.status), Some("48190"), "status must be ignored on the main resource");

        // The stored JSON has upstream's keys.
        let dynamic: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), "default", &ApiResource::erase::<ObjectSync>(&()));
        let raw = dynamic.get(&name).await.unwrap();
        assert_eq!(raw.data["spec"], json!({"objectAPIVersion": "v1", "objectKind": "Pod", "objectName": "nginx-2"}));
        assert_eq!(raw.data["status"], json!({"objectResourceVersion": "48190"}));

        // A second record in another namespace: list sees each in its own namespace only.
        let other: Api<ObjectSync> = Api::namespaced(client.clone(), "kube-system");
        let other_name = object_sync_name("edge-02", "77aa0c1e-8d2f-4b3a-9c4d-5e6f7a8b9c0d");
        other
            .create(
                &PostParams::default(),
                &ObjectSync::new(&other_name, ObjectSyncSpec::new("v1", "ConfigMap", "kube-proxy")),
            )
            .await
            .unwrap();
        let listed = syncs.list(&ListParams::default()).await.unwrap();
        let names: Vec<_> = listed.items.iter().filter_map(|s| s.metadata.name.clone()).collect();
        assert_eq!(names, std::slice::from_ref(&name));
        let everywhere: Api<ObjectSync> = Api::all(client.clone());
        let all = everywhere.list(&ListParams::default()).await.unwrap();
        let mut nodes: Vec<_> = all
            .items
            .iter()
            .filter_map(|s| parse_object_sync_name(s.metadata.name.as_deref()?).map(|(n, _)| n.to_owned()))
            .collect();
        nodes.sort();
        assert_eq!(nodes, ["edge-01.lab.example.com", "edge-02"]);

        syncs.delete(&name, &DeleteParams::default()).await.unwrap();
        assert!(matches!(syncs.get(&name).await, Err(kube::Error::Api(s)) if s.code == 404));
        assert!(syncs.list(&ListParams::default()).await.unwrap().items.is_empty());
        server.shutdown().await;
    })
    .await
    .expect("likely deadlocked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusterobjectsync_lifecycle() {
    tokio::time::timeout(PATIENCE, async {
        let (server, client) = start().await;
        register_crds(&client).await;
        let syncs: Api<ClusterObjectSync> = Api::all(client.clone());

        let name = object_sync_name("edge-01", "5e7f9a1b-2c3d-4e5f-9a6b-7c8d9e0f1a2b");
        let spec = ClusterObjectSyncSpec::from(ObjectSyncSpec::new("rules.kubeedge.io/v1", "RuleEndpoint", "my-rest"));
        let created = syncs.create(&PostParams::default(), &ClusterObjectSync::new(&name, spec.clone())).await.unwrap();
        assert_eq!(created.metadata.namespace, None, "cluster-scoped records have no namespace");
        assert_eq!(created.spec, spec);

        let mut updated = created.clone();
        updated.status = Some(ObjectSyncStatus::new("0"));
        let updated = syncs.replace_status(&name, &PostParams::default(), &updated).await.unwrap();
        assert_eq!(status_rv(&updated.status), Some("0"));

        let patch = Patch::Merge(json!({"status": {"objectResourceVersion": "48220"}}));
        let patched = syncs.patch_status(&name, &PatchParams::default(), &patch).await.unwrap();
        assert_eq!(status_rv(&patched.status), Some("48220"));
        assert_eq!(syncs.get(&name).await.unwrap().status, Some(ObjectSyncStatus::new("48220")));

        let listed = syncs.list(&ListParams::default()).await.unwrap();
        assert_eq!(listed.items.len(), 1);
        assert_eq!(listed.items[0].spec.object_kind, "RuleEndpoint");

        // A namespaced path does not reach a cluster-scoped kind.
        let ar = ApiResource::erase::<ClusterObjectSync>(&());
        let namespaced: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
        assert!(matches!(namespaced.get(&name).await, Err(kube::Error::Api(s)) if s.code == 404));

        syncs.delete(&name, &DeleteParams::default()).await.unwrap();
        assert!(matches!(syncs.get(&name).await, Err(kube::Error::Api(s)) if s.code == 404));
        server.shutdown().await;
    })
    .await
    .expect("likely deadlocked");
}

/// The device CRDs behave as kube-apiserver serves upstream's: no status subresource, so a
/// JSON merge patch of the main resource writes `status` (what DeviceController does, as
/// upstream); ownerReferences are kept; a merge patch carrying a stale resourceVersion is a
/// conflict; free-form maps come back as written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_status_merge_patch_and_owner() {
    use kubeedge_apis::devices::v1beta1::{Device, DeviceStatus};
    tokio::time::timeout(PATIENCE, async {
        let (server, client) = start().await;
        register_crds(&client).await;
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        for name in [Device::crd_name(), DeviceStatus::crd_name()] {
            await_condition(crds.clone(), name, conditions::is_crd_established()).await.unwrap();
        }
        let devices: Api<Device> = Api::namespaced(client.clone(), "default");
        let device: Device = serde_json::from_value(json!({
            "apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
            "metadata": {"name": "thermo-1"},
            "spec": {"nodeName": "edge-1", "deviceModelRef": {"name": "thermo"},
                     "protocol": {"protocolName": "modbus", "configData": {"slaveID": 1, "nested": {"a": [1, 2]}}},
                     "properties": [{"name": "temperature", "desired": {"value": "20"}}]}
        }))
        .unwrap();
        let device = devices.create(&PostParams::default(), &device).await.unwrap();
        let config = device.spec.protocol.config_data.as_ref().unwrap();
        assert_eq!(config["nested"], json!({"a": [1, 2]}));

        let statuses: Api<DeviceStatus> = Api::namespaced(client.clone(), "default");
        let status: DeviceStatus = serde_json::from_value(json!({
            "apiVersion": "devices.kubeedge.io/v1beta1", "kind": "DeviceStatus",
            "metadata": {"name": "thermo-1", "ownerReferences": [{"apiVersion": "devices.kubeedge.io/v1beta1",
                "kind": "Device", "name": "thermo-1", "uid": device.metadata.uid, "controller": true,
                "blockOwnerDeletion": true}]},
            "spec": {}, "status": {"state": "unknown"}
        }))
        .unwrap();
        let created = statuses.create(&PostParams::default(), &status).await.unwrap();
        assert_eq!(created.metadata.owner_references.as_ref().unwrap()[0].uid, device.metadata.uid.clone().unwrap());
        assert_eq!(created.status.as_ref().unwrap().state, "unknown", "no status subresource: a create keeps status");

        let patch = json!({"metadata": {"resourceVersion": created.metadata.resource_version},
            "status": {"twins": [{"propertyName": "temperature", "reported": {"value": "21", "metadata": {"timestamp": "5"}},
                                  "observedDesired": {"value": "20"}}], "state": "online"}});
        let patched = statuses.patch("thermo-1", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
        let s = patched.status.unwrap();
        assert_eq!((s.state.as_str(), s.twins[0].reported.value.as_str()), ("online", "21"));
        match statuses.patch("thermo-1", &PatchParams::default(), &Patch::Merge(&patch)).await {
            Err(kube::Error::Api(e)) => assert_eq!(e.code, 409, "{e:?}"),
            other => panic!("a stale resourceVersion must conflict: {other:?}"),
        }
        server.shutdown().await;
    })
    .await
    .expect("likely deadlocked");
}

/// Upstream's samples through the API server: endpoints and a rule created, the counters merge-
/// patched into the Rule itself (no status subresource). (apiserver-lite does not enforce the
/// CRD's `enum`, so the refusal of an unknown endpoint type is checked in `tests/crds.rs` only.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_are_stored_and_counted() {
    use kubeedge_apis::rules::v1::{Rule, RuleEndpoint, RuleEndpointType, RuleStatus};
    tokio::time::timeout(PATIENCE, async {
        let (server, client) = start().await;
        register_crds(&client).await;
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        for name in [Rule::crd_name(), RuleEndpoint::crd_name()] {
            await_condition(crds.clone(), name, conditions::is_crd_established()).await.unwrap();
        }
        let endpoints: Api<RuleEndpoint> = Api::namespaced(client.clone(), "default");
        for (name, kind, properties) in
            [("my-rest", "rest", json!({})), ("my-servicebus", "servicebus", json!({"service_port": "6666"}))]
        {
            let endpoint: RuleEndpoint = serde_json::from_value(json!({
                "apiVersion": "rules.kubeedge.io/v1", "kind": "RuleEndpoint", "metadata": {"name": name},
                "spec": {"ruleEndpointType": kind, "properties": properties}
            }))
            .unwrap();
            endpoints.create(&PostParams::default(), &endpoint).await.unwrap();
        }
        let servicebus = endpoints.get("my-servicebus").await.unwrap();
        assert_eq!(servicebus.spec.rule_endpoint_type, RuleEndpointType::ServiceBus);
        assert_eq!(servicebus.spec.properties["service_port"], "6666");

        let rules: Api<Rule> = Api::namespaced(client.clone(), "default");
        let rule: Rule = serde_json::from_value(json!({
            "apiVersion": "rules.kubeedge.io/v1", "kind": "Rule", "metadata": {"name": "my-rule-rest-servicebus"},
            "spec": {"source": "my-rest", "sourceResource": {"path": "/source"},
                     "target": "my-servicebus", "targetResource": {"path": "/target"}}
        }))
        .unwrap();
        let created = rules.create(&PostParams::default(), &rule).await.unwrap();
        assert_eq!(created.spec, rule.spec);
        assert_eq!(created.status, None);

        let patch = json!({"status": {"successMessages": 1, "failMessages": 1, "errors": ["timeout"]}});
        let patched = rules.patch("my-rule-rest-servicebus", &PatchParams::default(), &Patch::Merge(&patch)).await;
        let status = patched.unwrap().status.unwrap();
        assert_eq!(status, RuleStatus { success_messages: 1, fail_messages: 1, errors: vec!["timeout".into()] });
        server.shutdown().await;
    })
    .await
    .expect("likely deadlocked");
}
