//! Defaulting and admission the real API server applies and clients depend on (kubelet code
//! paths branch on them): pod spec defaults, QoS class, the default tolerations, the
//! service-account token volume, and namespace phase.

use serde_json::{Map, Value, json};

/// Applies kube-apiserver's defaults to a new object of `kind`.
pub fn apply(kind: &str, obj: &mut Value) {
    match kind {
        "Pod" => pod(obj),
        "Namespace" => {
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
            obj["status"] = json!({"phase": "Active"});
        }
        "Service" => service(obj),
        "Secret" if obj.get("type").is_none() => obj["type"] = json!("Opaque"),
        "ServiceAccount" | "ConfigMap" | "Secret" | "Node" => {}
        _ => {}
    }
}

fn obj_mut<'a>(v: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !v.get(key).is_some_and(Value::is_object) {
        v[key] = json!({});
    }
    // Just made an object above.
    v.get_mut(key).and_then(Value::as_object_mut).expect("object")
}

fn default(m: &mut Map<String, Value>, key: &str, value: Value) {
    m.entry(key.to_owned()).or_insert(value);
}

fn pod(obj: &mut Value) {
    let spec = obj_mut(obj, "spec");
    default(spec, "restartPolicy", json!("Always"));
    default(spec, "dnsPolicy", json!("ClusterFirst"));
    default(spec, "terminationGracePeriodSeconds", json!(30));
    default(spec, "schedulerName", json!("default-scheduler"));
    default(spec, "securityContext", json!({}));
    default(spec, "enableServiceLinks", json!(true));
    default(spec, "priority", json!(0));
    default(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
    default(spec, "serviceAccountName", json!("default"));
    let sa = spec.get("serviceAccountName").cloned().unwrap_or(json!("default"));
    default(spec, "serviceAccount", sa);
    // DefaultTolerationSeconds admission.
    let tolerations = spec.entry("tolerations").or_insert_with(|| json!([]));
    if let Some(list) = tolerations.as_array_mut() {
        for key in ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"] {
            if !list.iter().any(|t| t.get("key").and_then(Value::as_str) == Some(key)) {
                list.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
            }
        }
    }
    let host_network = spec.get("hostNetwork").and_then(Value::as_bool).unwrap_or(false);
    let mut requests = 0;
    let mut guaranteed = true;
    let mut containers = 0;
    for list in ["initContainers", "containers"] {
        let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) else { continue };
        for c in cs.iter_mut().filter_map(Value::as_object_mut) {
            containers += 1;
            let image = c.get("image").and_then(Value::as_str).unwrap_or_default();
            let tag = image.rsplit('/').next().unwrap_or_default();
            let pull = if !tag.contains(':') || tag.ends_with(":latest") { "Always" } else { "IfNotPresent" };
            let pull = if image.contains('@') { "IfNotPresent" } else { pull };
            default(c, "imagePullPolicy", json!(pull));
            default(c, "terminationMessagePath", json!("/dev/termination-log"));
            default(c, "terminationMessagePolicy", json!("File"));
            default(c, "resources", json!({}));
            for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
                if let Some(p) = c.get_mut(probe).and_then(Value::as_object_mut) {
                    probe_defaults(p);
                }
            }
            for env in c.get_mut("env").and_then(Value::as_array_mut).into_iter().flatten() {
                if let Some(f) = env.pointer_mut("/valueFrom/fieldRef").and_then(Value::as_object_mut) {
                    default(f, "apiVersion", json!("v1"));
                }
            }
            if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
                for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                    default(p, "protocol", json!("TCP"));
                    if host_network && !p.contains_key("hostPort") {
                        let cp = p.get("containerPort").cloned().unwrap_or(Value::Null);
                        p.insert("hostPort".into(), cp);
                    }
                }
            }
            let res = &c["resources"];
            let (req, lim) = (res.get("requests"), res.get("limits"));
            if req.is_some_and(|r| r.as_object().is_some_and(|m| !m.is_empty()))
                || lim.is_some_and(|l| l.as_object().is_some_and(|m| !m.is_empty()))
            {
                requests += 1;
            }
            let full = ["cpu", "memory"].iter().all(|r| {
                let l = lim.and_then(|l| l.get(*r));
                l.is_some() && req.and_then(|q| q.get(*r)).is_none_or(|q| Some(q) == l)
            });
            guaranteed &= full;
        }
    }
    let qos = if containers > 0 && guaranteed {
        "Guaranteed"
    } else if requests > 0 {
        "Burstable"
    } else {
        "BestEffort"
    };
    service_account_volume(obj);
    volumes(obj_mut(obj, "spec"));
    let status = obj_mut(obj, "status");
    default(status, "phase", json!("Pending"));
    default(status, "qosClass", json!(qos));
}

/// A probe's defaults (`SetDefaults_Probe`, `SetDefaults_HTTPGetAction`).
fn probe_defaults(p: &mut Map<String, Value>) {
    default(p, "timeoutSeconds", json!(1));
    default(p, "periodSeconds", json!(10));
    default(p, "successThreshold", json!(1));
    default(p, "failureThreshold", json!(3));
    if let Some(h) = p.get_mut("httpGet").and_then(Value::as_object_mut) {
        default(h, "path", json!("/"));
        default(h, "scheme", json!("HTTP"));
    }
}

/// Volume defaults (`SetDefaults_Volume` and the sources'): `defaultMode: 420` on configMap,
/// secret, projected and downwardAPI volumes, `apiVersion: v1` on field references, a token
/// lifetime of an hour, and an emptyDir for a volume that names no source. Kubelet refuses a
/// volume without its defaultMode.
fn volumes(spec: &mut Map<String, Value>) {
    const SOURCES: [&str; 27] = [
        "hostPath",
        "emptyDir",
        "gcePersistentDisk",
        "awsElasticBlockStore",
        "gitRepo",
        "secret",
        "nfs",
        "iscsi",
        "glusterfs",
        "persistentVolumeClaim",
        "rbd",
        "flexVolume",
        "cinder",
        "cephfs",
        "flocker",
        "downwardAPI",
        "fc",
        "azureFile",
        "configMap",
        "vsphereVolume",
        "quobyte",
        "azureDisk",
        "photonPersistentDisk",
        "projected",
        "portworxVolume",
        "scaleIO",
        "storageos",
    ];
    let Some(vols) = spec.get_mut("volumes").and_then(Value::as_array_mut) else { return };
    for v in vols.iter_mut().filter_map(Value::as_object_mut) {
        if !SOURCES.iter().chain(["csi", "ephemeral", "image"].iter()).any(|s| v.contains_key(*s)) {
            v.insert("emptyDir".into(), json!({}));
        }
        for src in ["configMap", "secret", "projected", "downwardAPI"] {
            if let Some(m) = v.get_mut(src).and_then(Value::as_object_mut) {
                default(m, "defaultMode", json!(420));
            }
        }
        if let Some(items) = v.get_mut("downwardAPI").and_then(|d| d.get_mut("items")).and_then(Value::as_array_mut) {
            for f in items.iter_mut().filter_map(|i| i.get_mut("fieldRef")).filter_map(Value::as_object_mut) {
                default(f, "apiVersion", json!("v1"));
            }
        }
        let sources = v.get_mut("projected").and_then(|p| p.get_mut("sources")).and_then(Value::as_array_mut);
        for source in sources.into_iter().flatten() {
            if let Some(t) = source.get_mut("serviceAccountToken").and_then(Value::as_object_mut) {
                default(t, "expirationSeconds", json!(3600));
            }
            for f in source
                .pointer_mut("/downwardAPI/items")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
                .filter_map(|i| i.get_mut("fieldRef"))
                .filter_map(Value::as_object_mut)
            {
                default(f, "apiVersion", json!("v1"));
            }
        }
    }
}

/// ServiceAccount admission: a projected `kube-api-access-xxxxx` volume (token, the cluster CA
/// from the `kube-root-ca.crt` configmap, the namespace) mounted in every container at
/// `/var/run/secrets/kubernetes.io/serviceaccount`, unless the pod opts out.
fn service_account_volume(obj: &mut Value) {
    let spec = obj_mut(obj, "spec");
    if spec.get("automountServiceAccountToken").and_then(Value::as_bool) == Some(false) {
        return;
    }
    const MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
    let already = ["containers", "initContainers"].iter().any(|l| {
        spec.get(*l).and_then(Value::as_array).is_some_and(|cs| {
            cs.iter().any(|c| {
                c.get("volumeMounts")
                    .and_then(Value::as_array)
                    .is_some_and(|ms| ms.iter().any(|m| m.get("mountPath").and_then(Value::as_str) == Some(MOUNT)))
            })
        })
    });
    if already {
        return;
    }
    let name = format!("kube-api-access-{}", crate::store::random_suffix());
    let volume = json!({"name": name, "projected": {"defaultMode": 420, "sources": [
        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
    ]}});
    if let Some(volumes) = spec.entry("volumes").or_insert_with(|| json!([])).as_array_mut() {
        volumes.push(volume);
    }
    for list in ["initContainers", "containers"] {
        let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) else { continue };
        for c in cs.iter_mut().filter_map(Value::as_object_mut) {
            let mount = json!({"name": name, "readOnly": true, "mountPath": MOUNT});
            if let Some(mounts) = c.entry("volumeMounts").or_insert_with(|| json!([])).as_array_mut() {
                mounts.push(mount);
            }
        }
    }
}

fn service(obj: &mut Value) {
    let spec = obj_mut(obj, "spec");
    default(spec, "type", json!("ClusterIP"));
    default(spec, "sessionAffinity", json!("None"));
    default(spec, "ipFamilies", json!(["IPv4"]));
    default(spec, "ipFamilyPolicy", json!("SingleStack"));
    default(spec, "internalTrafficPolicy", json!("Cluster"));
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            default(p, "protocol", json!("TCP"));
            let port = p.get("port").cloned().unwrap_or(Value::Null);
            default(p, "targetPort", port);
        }
    }
    let status = obj_mut(obj, "status");
    default(status, "loadBalancer", json!({}));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_defaults_match_the_api_server() {
        let mut pod = json!({"metadata":{"name":"p"},"spec":{"hostNetwork":true,"containers":[
            {"name":"c","image":"busybox","ports":[{"containerPort":80}]},
            {"name":"d","image":"localhost/busybox:1.35","resources":{"limits":{"cpu":"1","memory":"1Gi"}}}]}});
        apply("Pod", &mut pod);
        let spec = &pod["spec"];
        assert_eq!(spec["securityContext"], json!({}));
        assert_eq!(spec["restartPolicy"], "Always");
        assert_eq!(spec["terminationGracePeriodSeconds"], 30);
        assert_eq!(spec["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(spec["containers"][1]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(spec["containers"][0]["ports"][0]["protocol"], "TCP");
        assert_eq!(spec["containers"][0]["ports"][0]["hostPort"], 80);
        assert_eq!(spec["tolerations"].as_array().unwrap().len(), 2);
        assert_eq!(pod["status"]["phase"], "Pending");
        assert_eq!(pod["status"]["qosClass"], "Burstable");
        let vol = &spec["volumes"][0];
        assert!(vol["name"].as_str().unwrap().starts_with("kube-api-access-"));
        assert_eq!(spec["containers"][1]["volumeMounts"][0]["name"], vol["name"]);
    }

    #[test]
    fn volumes_and_probes_get_the_api_servers_defaults() {
        let mut pod = json!({"spec":{"automountServiceAccountToken":false,"containers":[{"name":"c","image":"x:1",
            "readinessProbe":{"httpGet":{"port":80}},
            "env":[{"name":"N","valueFrom":{"fieldRef":{"fieldPath":"metadata.name"}}}]}],
            "volumes":[{"name":"cm","configMap":{"name":"c"}},{"name":"s","secret":{"secretName":"s"}},
                {"name":"d","downwardAPI":{"items":[{"path":"n","fieldRef":{"fieldPath":"metadata.name"}}]}},
                {"name":"p","projected":{"sources":[{"serviceAccountToken":{"path":"t"}}]}},
                {"name":"mode","configMap":{"name":"c","defaultMode":256}},
                {"name":"bare"}]}});
        apply("Pod", &mut pod);
        let v = &pod["spec"]["volumes"];
        for i in 0..4 {
            assert_eq!(v[i][["configMap", "secret", "downwardAPI", "projected"][i]]["defaultMode"], 420, "{}", v[i]);
        }
        assert_eq!(v[4]["configMap"]["defaultMode"], 256, "an explicit mode stays");
        assert_eq!(v[5]["emptyDir"], json!({}));
        assert_eq!(v[2]["downwardAPI"]["items"][0]["fieldRef"]["apiVersion"], "v1");
        assert_eq!(v[3]["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"], 3600);
        let c = &pod["spec"]["containers"][0];
        assert_eq!(c["readinessProbe"]["periodSeconds"], 10);
        assert_eq!(c["readinessProbe"]["httpGet"]["scheme"], "HTTP");
        assert_eq!(c["env"][0]["valueFrom"]["fieldRef"]["apiVersion"], "v1");
    }

    #[test]
    fn opting_out_of_the_token_volume() {
        let mut pod = json!({"spec":{"automountServiceAccountToken":false,"containers":[{"name":"c","image":"x:1"}]}});
        apply("Pod", &mut pod);
        assert!(pod["spec"].get("volumes").is_none());
        assert_eq!(pod["status"]["qosClass"], "BestEffort");
    }
}
