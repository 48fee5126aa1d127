//! What a pod refers to and what of it edges are sent: the objects a pod uses (the node
//! authorizer's graph and what follows a pod to its node), and the hash that decides whether a
//! pod change is sent.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::DynamicObject;
use kubeedge_model::constants::resource_type;

/// An object a pod refers to: (type, namespace, name). The type is an edge resource type
/// (`configmap`, `secret`, `persistentvolumeclaim`) or [`SERVICE_ACCOUNT`].
pub type Ref = (&'static str, String, String);

/// The type of a pod's service account in a [`Ref`] (its token is what a node may mint).
pub const SERVICE_ACCOUNT: &str = "serviceaccount";

/// The objects a pod uses, which the node it is bound to may read (the node authorizer's
/// graph): configmaps and secrets of volumes (also projected), env and envFrom of every
/// container (init and ephemeral too) and imagePullSecrets; its persistent volume claims
/// (ephemeral volumes' too, named `{pod}-{volume}`); its service account.
pub fn refs_of(namespace: &str, pod_name: &str, spec: &PodSpec) -> Vec<Ref> {
    let mut out: HashSet<Ref> = HashSet::new();
    let mut add = |ty: &'static str, name: &str| {
        if !name.is_empty() {
            out.insert((ty, namespace.to_owned(), name.to_owned()));
        }
    };
    let sa = spec.service_account_name.as_deref().or(spec.service_account.as_deref()).unwrap_or_default();
    add(SERVICE_ACCOUNT, sa);
    for v in spec.volumes.iter().flatten() {
        if let Some(pvc) = &v.persistent_volume_claim {
            add(resource_type::PERSISTENT_VOLUME_CLAIM, &pvc.claim_name);
        }
        if v.ephemeral.is_some() {
            add(resource_type::PERSISTENT_VOLUME_CLAIM, &format!("{pod_name}-{}", v.name));
        }
        if let Some(cm) = &v.config_map {
            add(resource_type::CONFIGMAP, &cm.name);
        }
        // Volume plugins that take their credentials from a secret.
        let plugin_secrets = [
            v.csi.as_ref().and_then(|c| c.node_publish_secret_ref.as_ref()).map(|r| r.name.as_str()),
            v.azure_file.as_ref().map(|a| a.secret_name.as_str()),
            v.cephfs.as_ref().and_then(|c| c.secret_ref.as_ref()).map(|r| r.name.as_str()),
            v.rbd.as_ref().and_then(|c| c.secret_ref.as_ref()).map(|r| r.name.as_str()),
            v.iscsi.as_ref().and_then(|c| c.secret_ref.as_ref()).map(|r| r.name.as_str()),
            v.flex_volume.as_ref().and_then(|c| c.secret_ref.as_ref()).map(|r| r.name.as_str()),
            v.cinder.as_ref().and_then(|c| c.secret_ref.as_ref()).map(|r| r.name.as_str()),
            v.scale_io.as_ref().map(|c| c.secret_ref.name.as_str()),
            v.storageos.as_ref().and_then(|c| c.secret_ref.as_ref()).map(|r| r.name.as_str()),
        ];
        for name in plugin_secrets.into_iter().flatten() {
            add(resource_type::SECRET, name);
        }
        if let Some(s) = &v.secret {
            add(resource_type::SECRET, s.secret_name.as_deref().unwrap_or_default());
        }
        for src in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(cm) = &src.config_map {
                add(resource_type::CONFIGMAP, &cm.name);
            }
            if let Some(s) = &src.secret {
                add(resource_type::SECRET, &s.name);
            }
        }
    }
    let envs = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .map(|c| (c.env.as_ref(), c.env_from.as_ref()))
        .chain(spec.ephemeral_containers.iter().flatten().map(|c| (c.env.as_ref(), c.env_from.as_ref())));
    for (env, env_from) in envs {
        for e in env.into_iter().flatten() {
            if let Some(from) = &e.value_from {
                if let Some(r) = &from.config_map_key_ref {
                    add(resource_type::CONFIGMAP, &r.name);
                }
                if let Some(r) = &from.secret_key_ref {
                    add(resource_type::SECRET, &r.name);
                }
            }
        }
        for f in env_from.into_iter().flatten() {
            if let Some(r) = &f.config_map_ref {
                add(resource_type::CONFIGMAP, &r.name);
            }
            if let Some(r) = &f.secret_ref {
                add(resource_type::SECRET, &r.name);
            }
        }
    }
    for s in spec.image_pull_secrets.iter().flatten() {
        add(resource_type::SECRET, &s.name);
    }
    let mut v: Vec<Ref> = out.into_iter().collect();
    v.sort();
    v
}

/// A hash of what upstream compares before sending a pod update: metadata without
/// resourceVersion, generation and managedFields, and the spec. Status changes (the edge's own
/// reports) are not echoed back.
pub fn spec_hash(o: &DynamicObject) -> u64 {
    meta_spec_hash(&o.metadata, &o.data.get("spec"))
}

/// A hash of an object's metadata (without resourceVersion, generation and managedFields) and
/// spec: what decides whether a change is sent to edges.
pub fn meta_spec_hash(meta: &ObjectMeta, spec: &impl serde::Serialize) -> u64 {
    let mut meta = meta.clone();
    meta.resource_version = None;
    meta.generation = None;
    meta.managed_fields = None;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(&meta).unwrap_or_default().hash(&mut h);
    serde_json::to_string(spec).unwrap_or_default().hash(&mut h);
    h.finish()
}

/// The pod's spec, decoded (unknown fields ignored), or an empty one.
pub fn pod_spec(o: &DynamicObject) -> PodSpec {
    o.data.get("spec").and_then(|s| serde_json::from_value(s.clone()).ok()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_come_from_volumes_env_envfrom_and_pull_secrets() {
        let spec: PodSpec = serde_json::from_value(serde_json::json!({
            "containers": [{"name": "c", "env": [
                {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cm-env", "key": "k"}}},
                {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s-env", "key": "k"}}},
                {"name": "C", "value": "plain"}],
              "envFrom": [{"configMapRef": {"name": "cm-from"}}, {"secretRef": {"name": "s-from"}}]}],
            "initContainers": [{"name": "i", "envFrom": [{"configMapRef": {"name": "cm-init"}}]}],
            "volumes": [
              {"name": "v1", "configMap": {"name": "cm-vol"}},
              {"name": "v2", "secret": {"secretName": "s-vol"}},
              {"name": "v3", "projected": {"sources": [{"configMap": {"name": "cm-proj"}}, {"secret": {"name": "s-proj"}}]}},
              {"name": "v4", "emptyDir": {}},
              {"name": "v5", "persistentVolumeClaim": {"claimName": "claim"}},
              {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}}],
            "serviceAccountName": "robot",
            "imagePullSecrets": [{"name": "s-pull"}]
        }))
        .unwrap();
        let names: Vec<String> = refs_of("ns", "p", &spec).into_iter().map(|(t, _, n)| format!("{t}/{n}")).collect();
        assert_eq!(
            names,
            [
                "configmap/cm-env",
                "configmap/cm-from",
                "configmap/cm-init",
                "configmap/cm-proj",
                "configmap/cm-vol",
                "persistentvolumeclaim/claim",
                "persistentvolumeclaim/p-scratch",
                "secret/s-env",
                "secret/s-from",
                "secret/s-proj",
                "secret/s-pull",
                "secret/s-vol",
                "serviceaccount/robot"
            ]
        );
    }
}
