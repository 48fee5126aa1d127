//! Protocol constants, spelled exactly as upstream (kubeedge/beehive `pkg/core/model` and
//! kubeedge/kubeedge `common/constants`).

/// Operations (`route.operation`).
pub mod operation {
    /// Create an object.
    pub const INSERT: &str = "insert";
    /// Delete an object.
    pub const DELETE: &str = "delete";
    /// Read an object (edge → cloud remote query, or local).
    pub const QUERY: &str = "query";
    /// Replace an object.
    pub const UPDATE: &str = "update";
    /// Patch an object (podpatch, nodepatch).
    pub const PATCH: &str = "patch";
    /// Upload (node status from older edges).
    pub const UPLOAD: &str = "upload";
    /// A reply: `parent_msg_id` names the request.
    pub const RESPONSE: &str = "response";
    /// An error reply (upstream `ResponseErrorOperation`).
    pub const ERROR: &str = "error";
    /// Release a held upgrade.
    pub const UNHOLD_UPGRADE: &str = "unhold-upgrade";
    /// Keepalive, edge → cloud, content `"ping"`.
    pub const KEEPALIVE: &str = "keepalive";
    /// Connection established (edge-internal notice).
    pub const CONNECT: &str = "connect";
    /// Device twin and membership operations.
    pub const GET: &str = "get";
    /// Device twin get result.
    pub const GET_RESULT: &str = "get_result";
    /// Membership list.
    pub const LIST: &str = "list";
    /// Membership detail.
    pub const DETAIL: &str = "detail";
    /// Twin delta.
    pub const DELTA: &str = "delta";
    /// Twin document.
    pub const DOCUMENT: &str = "document";
    /// Twin updated.
    pub const UPDATED: &str = "updated";
    /// Object deleted (device).
    pub const DELETED: &str = "deleted";
    /// Node connected (cloud notice).
    pub const CONNECTED: &str = "connected";
    /// Node disconnected (cloud notice).
    pub const DISCONNECTED: &str = "disconnected";
    /// Subscribe (eventbus).
    pub const SUBSCRIBE: &str = "subscribe";
    /// Unsubscribe (eventbus).
    pub const UNSUBSCRIBE: &str = "unsubscribe";
    /// Message (eventbus).
    pub const MESSAGE: &str = "message";
    /// Publish (eventbus).
    pub const PUBLISH: &str = "publish";
    /// Start (edgestream).
    pub const START: &str = "start";
    /// Stop (edgestream).
    pub const STOP: &str = "stop";
    /// Node task status report.
    pub const UPDATE_NODE_ACTION_STATUS: &str = "UpdateNodeActionStatus";
    /// Ours, not upstream's: the compact lease renewal between ends that are both ours
    /// (`protocol::lease`), sent only when both agreed on it in the handshake.
    pub const RENEW: &str = "renew";
}

/// Resource types (the `{type}` token of a resource string).
pub mod resource_type {
    /// Pods.
    pub const POD: &str = "pod";
    /// Events.
    pub const EVENT: &str = "event";
    /// ConfigMaps.
    pub const CONFIGMAP: &str = "configmap";
    /// Service account tokens.
    pub const SERVICE_ACCOUNT_TOKEN: &str = "serviceaccounttoken";
    /// Secrets.
    pub const SECRET: &str = "secret";
    /// Nodes.
    pub const NODE: &str = "node";
    /// Pod lists.
    pub const POD_LIST: &str = "podlist";
    /// Pod status (legacy).
    pub const POD_STATUS: &str = "podstatus";
    /// Pod status strategic-merge patch.
    pub const POD_PATCH: &str = "podpatch";
    /// Node status (legacy).
    pub const NODE_STATUS: &str = "nodestatus";
    /// Node status patch.
    pub const NODE_PATCH: &str = "nodepatch";
    /// Router rules.
    pub const RULE: &str = "rule";
    /// Router rule endpoints.
    pub const RULE_ENDPOINT: &str = "ruleendpoint";
    /// Router rule status.
    pub const RULE_STATUS: &str = "rulestatus";
    /// Node leases.
    pub const LEASE: &str = "lease";
    /// Service account access.
    pub const SERVICE_ACCOUNT_ACCESS: &str = "serviceaccountaccess";
    /// Certificate signing requests.
    pub const CSR: &str = "certificatesigningrequest";
    /// The cluster CA, fetched by the edge.
    pub const CA_CRT: &str = "k8s/ca.crt";
    /// Services.
    pub const SERVICE: &str = "service";
    /// Endpoints.
    pub const ENDPOINTS: &str = "endpoints";
    /// PersistentVolumes.
    pub const PERSISTENT_VOLUME: &str = "persistentvolume";
    /// PersistentVolumeClaims.
    pub const PERSISTENT_VOLUME_CLAIM: &str = "persistentvolumeclaim";
    /// VolumeAttachments.
    pub const VOLUME_ATTACHMENT: &str = "volumeattachment";
    /// Volumes.
    pub const VOLUME: &str = "volume";
    /// Device twin membership.
    pub const MEMBERSHIP: &str = "membership";
    /// Device twins.
    pub const TWIN: &str = "twin";
    /// Devices.
    pub const DEVICE: &str = "device";
    /// Device models.
    pub const DEVICE_MODEL: &str = "devicemodel";
    /// The edge's connection state, `node/connection`.
    pub const NODE_CONNECTION: &str = "node/connection";
}

/// Group names (`route.group`).
pub mod group {
    /// The cloud–edge resource group most cloud messages use.
    pub const RESOURCE: &str = "resource";
    /// Edge: EdgeHub.
    pub const HUB: &str = "hub";
    /// Edge: MetaManager.
    pub const META: &str = "meta";
    /// Edge: Edged.
    pub const EDGED: &str = "edged";
    /// Edge: DeviceTwin.
    pub const TWIN: &str = "twin";
    /// Edge: EventBus and ServiceBus.
    pub const BUS: &str = "bus";
    /// Edge: EdgeStream.
    pub const EDGESTREAM: &str = "edgestream";
    /// Edge and cloud: TaskManager.
    pub const TASKMANAGER: &str = "taskmanager";
    /// User messages.
    pub const USER: &str = "user";
    /// Function messages.
    pub const FUNC: &str = "func";
    /// Cloud: the EdgeController config group.
    pub const EDGECONTROLLER: &str = "edgecontroller";
}

/// Module names, as upstream registers them. A cloud module's group equals its name.
pub mod module {
    /// Edge: EdgeHub (named `websocket` even in QUIC mode).
    pub const EDGEHUB: &str = "websocket";
    /// Edge: MetaManager.
    pub const METAMANAGER: &str = "metamanager";
    /// Edge: Edged.
    pub const EDGED: &str = "edged";
    /// Edge: DeviceTwin.
    pub const TWIN: &str = "twin";
    /// Edge: EventBus.
    pub const EVENTBUS: &str = "eventbus";
    /// Edge: ServiceBus.
    pub const SERVICEBUS: &str = "servicebus";
    /// Edge: EdgeStream.
    pub const EDGESTREAM: &str = "edgestream";
    /// Edge and cloud: TaskManager.
    pub const TASKMANAGER: &str = "taskmanager";
    /// Cloud: CloudHub (also `DefaultContextSendModuleName`).
    pub const CLOUDHUB: &str = "cloudhub";
    /// Cloud: EdgeController.
    pub const EDGECONTROLLER: &str = "edgecontroller";
    /// Cloud: DeviceController.
    pub const DEVICECONTROLLER: &str = "devicecontroller";
    /// Cloud: SyncController.
    pub const SYNCCONTROLLER: &str = "synccontroller";
    /// Cloud: DynamicController.
    pub const DYNAMICCONTROLLER: &str = "dynamiccontroller";
    /// Cloud: CloudStream (capital S, as upstream).
    pub const CLOUDSTREAM: &str = "cloudStream";
    /// Cloud: Router.
    pub const ROUTER: &str = "router";
    /// Cloud: PolicyController.
    pub const POLICYCONTROLLER: &str = "policycontroller";
    /// Cloud: NodeUpgradeJobController.
    pub const NODEUPGRADEJOBCONTROLLER: &str = "nodeupgradejobcontroller";
}

/// Route sources that are not module names.
pub mod source {
    /// EdgeHub's notices on the edge.
    pub const EDGEHUB: &str = "edgehub";
    /// Legacy cloud source for device messages.
    pub const EDGEMGR: &str = "edgemgr";
    /// MetaServer.
    pub const METASERVER: &str = "metaserver";
    /// Router, from the eventbus side.
    pub const ROUTER_EVENTBUS: &str = "router_eventbus";
    /// Router, from the servicebus side.
    pub const ROUTER_SERVICEBUS: &str = "router_servicebus";
}

/// Fixed content values.
pub mod content {
    /// An ACK's content (`MessageSuccessfulContent`).
    pub const OK: &str = "OK";
    /// A keepalive's content.
    pub const PING: &str = "ping";
}

/// The literal namespace token meaning "no namespace".
pub const NULL_NAMESPACE: &str = "null";
/// The separator of resource strings.
pub const RESOURCE_SEP: char = '/';
