//! `modules.edgeController`: the channel capacities and worker counts of the module moving
//! pods, nodes, config maps and leases between the API server and edges. Several defaults
//! depend on `modules.cloudHub.nodeLimit` (see `CloudCoreConfig::adjust_for_node_limit`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::DEFAULT_NODE_LIMIT;
use crate::common::secs;
use crate::validate::Checker;

/// `modules.edgeController`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct EdgeController {
    /// Run the module.
    pub enable: bool,
    /// Seconds between node status updates (default 10).
    pub node_update_frequency: i32,
    /// Channel capacities.
    pub buffer: EdgeControllerBuffer,
    /// Worker counts.
    pub load: EdgeControllerLoad,
}

impl Default for EdgeController {
    fn default() -> Self {
        Self {
            enable: true,
            node_update_frequency: 10,
            buffer: EdgeControllerBuffer::for_node_limit(DEFAULT_NODE_LIMIT),
            load: EdgeControllerLoad::for_node_limit(DEFAULT_NODE_LIMIT),
        }
    }
}

impl EdgeController {
    /// `nodeUpdateFrequency` (seconds) as a [`Duration`].
    pub fn node_update_frequency(&self) -> Duration {
        secs(self.node_update_frequency.into())
    }
    /// Checks `modules.edgeController` when enabled.
    pub(super) fn validate(&self, c: &mut Checker) {
        if !self.enable {
            return;
        }
        let at = "modules.edgeController";
        c.positive(&format!("{at}.nodeUpdateFrequency"), self.node_update_frequency.into());
        for (key, v) in self.buffer.fields() {
            c.non_negative(&format!("{at}.buffer.{key}"), v.into());
        }
        for (key, v) in self.load.fields() {
            c.positive(&format!("{at}.load.{key}"), v.into());
        }
    }
}

/// `modules.edgeController.buffer`: channel capacities.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
#[allow(missing_docs)] // one capacity per upstream key; names say it all
pub struct EdgeControllerBuffer {
    pub process_event: i32,
    pub update_pod_status: i32,
    pub update_node_status: i32,
    pub query_config_map: i32,
    pub query_secret: i32,
    pub pod_event: i32,
    pub config_map_event: i32,
    pub secret_event: i32,
    pub rules_event: i32,
    pub rule_endpoints_event: i32,
    pub query_persistent_volume: i32,
    pub query_persistent_volume_claim: i32,
    pub query_volume_attachment: i32,
    pub create_node: i32,
    pub patch_node: i32,
    pub query_node: i32,
    pub update_node: i32,
    pub patch_pod: i32,
    pub delete_pod: i32,
    pub create_lease: i32,
    pub query_lease: i32,
    pub service_account_token: i32,
    pub create_pod: i32,
    pub certificate_signing_request: i32,
}

impl EdgeControllerBuffer {
    /// Upstream defaults for a given `nodeLimit`.
    pub fn for_node_limit(node_limit: i32) -> Self {
        Self {
            process_event: 1024,
            update_pod_status: 1024,
            update_node_status: 1024,
            query_config_map: 1024,
            query_secret: 1024,
            pod_event: 1,
            config_map_event: 1,
            secret_event: 1,
            rules_event: 1,
            rule_endpoints_event: 1,
            query_persistent_volume: 1024,
            query_persistent_volume_claim: 1024,
            query_volume_attachment: 1024,
            create_node: 1024,
            patch_node: 1024 + node_limit / 2,
            query_node: 1024 + node_limit,
            update_node: 1024,
            patch_pod: 1024,
            delete_pod: 1024,
            create_lease: 1024 + node_limit,
            query_lease: 1024,
            service_account_token: 1024,
            create_pod: 1024,
            certificate_signing_request: 1024,
        }
    }

    fn fields(&self) -> [(&'static str, i32); 24] {
        [
            ("processEvent", self.process_event),
            ("updatePodStatus", self.update_pod_status),
            ("updateNodeStatus", self.update_node_status),
            ("queryConfigMap", self.query_config_map),
            ("querySecret", self.query_secret),
            ("podEvent", self.pod_event),
            ("configMapEvent", self.config_map_event),
            ("secretEvent", self.secret_event),
            ("rulesEvent", self.rules_event),
            ("ruleEndpointsEvent", self.rule_endpoints_event),
            ("queryPersistentVolume", self.query_persistent_volume),
            ("queryPersistentVolumeClaim", self.query_persistent_volume_claim),
            ("queryVolumeAttachment", self.query_volume_attachment),
            ("createNode", self.create_node),
            ("patchNode", self.patch_node),
            ("queryNode", self.query_node),
            ("updateNode", self.update_node),
            ("patchPod", self.patch_pod),
            ("deletePod", self.delete_pod),
            ("createLease", self.create_lease),
            ("queryLease", self.query_lease),
            ("serviceAccountToken", self.service_account_token),
            ("createPod", self.create_pod),
            ("certificateSigningRequest", self.certificate_signing_request),
        ]
    }
}

impl Default for EdgeControllerBuffer {
    fn default() -> Self {
        Self::for_node_limit(DEFAULT_NODE_LIMIT)
    }
}

/// `modules.edgeController.load`: worker counts. Three keys are capitalised upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
#[allow(missing_docs)] // one worker count per upstream key; names say it all
pub struct EdgeControllerLoad {
    pub process_event_workers: i32,
    pub update_pod_status_workers: i32,
    pub update_node_status_workers: i32,
    pub query_config_map_workers: i32,
    pub query_secret_workers: i32,
    pub query_persistent_volume_workers: i32,
    pub query_persistent_volume_claim_workers: i32,
    pub query_volume_attachment_workers: i32,
    pub create_node_workers: i32,
    pub patch_node_workers: i32,
    pub query_node_workers: i32,
    pub update_node_workers: i32,
    pub patch_pod_workers: i32,
    pub delete_pod_workers: i32,
    pub create_lease_workers: i32,
    pub query_lease_workers: i32,
    #[serde(rename = "UpdateRuleStatusWorkers")]
    pub update_rule_status_workers: i32,
    #[serde(rename = "ServiceAccountTokenWorkers")]
    pub service_account_token_workers: i32,
    #[serde(rename = "CreatePodWorks")]
    pub create_pod_works: i32,
    pub certificate_signing_request_workers: i32,
}

impl EdgeControllerLoad {
    /// Upstream defaults for a given `nodeLimit`.
    pub fn for_node_limit(node_limit: i32) -> Self {
        Self {
            process_event_workers: 4,
            update_pod_status_workers: 1,
            update_node_status_workers: 1,
            query_config_map_workers: 100,
            query_secret_workers: 100,
            query_persistent_volume_workers: 4,
            query_persistent_volume_claim_workers: 4,
            query_volume_attachment_workers: 4,
            create_node_workers: 100,
            patch_node_workers: 100 + node_limit / 50,
            query_node_workers: node_limit,
            update_node_workers: 4,
            patch_pod_workers: 100,
            delete_pod_workers: 100,
            create_lease_workers: node_limit,
            query_lease_workers: 100,
            update_rule_status_workers: 4,
            service_account_token_workers: 100,
            create_pod_works: 4,
            certificate_signing_request_workers: 4,
        }
    }

    fn fields(&self) -> [(&'static str, i32); 20] {
        [
            ("processEventWorkers", self.process_event_workers),
            ("updatePodStatusWorkers", self.update_pod_status_workers),
            ("updateNodeStatusWorkers", self.update_node_status_workers),
            ("queryConfigMapWorkers", self.query_config_map_workers),
            ("querySecretWorkers", self.query_secret_workers),
            ("queryPersistentVolumeWorkers", self.query_persistent_volume_workers),
            ("queryPersistentVolumeClaimWorkers", self.query_persistent_volume_claim_workers),
            ("queryVolumeAttachmentWorkers", self.query_volume_attachment_workers),
            ("createNodeWorkers", self.create_node_workers),
            ("patchNodeWorkers", self.patch_node_workers),
            ("queryNodeWorkers", self.query_node_workers),
            ("updateNodeWorkers", self.update_node_workers),
            ("patchPodWorkers", self.patch_pod_workers),
            ("deletePodWorkers", self.delete_pod_workers),
            ("createLeaseWorkers", self.create_lease_workers),
            ("queryLeaseWorkers", self.query_lease_workers),
            ("UpdateRuleStatusWorkers", self.update_rule_status_workers),
            ("ServiceAccountTokenWorkers", self.service_account_token_workers),
            ("CreatePodWorks", self.create_pod_works),
            ("certificateSigningRequestWorkers", self.certificate_signing_request_workers),
        ]
    }
}

impl Default for EdgeControllerLoad {
    fn default() -> Self {
        Self::for_node_limit(DEFAULT_NODE_LIMIT)
    }
}
