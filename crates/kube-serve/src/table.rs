//! Server-side printing: `meta.k8s.io/v1` `Table` responses with the columns kubectl shows
//! (after `pkg/printers/internalversion/printers.go`), `Accept` header negotiation and the
//! `includeObject` parameter.
//!
//! As kube-apiserver does, every row carries all columns, including the priority-1 ("wide")
//! ones; kubectl hides those unless `-o wide`.

use serde_json::{Map, Value, json};

use crate::object::parse_rfc3339;
use crate::request::query_param;
use crate::status::ApiError;

/// What each row's `object` holds (`?includeObject=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    /// No object.
    None,
    /// A `PartialObjectMetadata` (the default).
    #[default]
    Metadata,
    /// The full object.
    Object,
}

impl IncludeObject {
    /// Parses the parameter value; absent or empty means `Metadata`, unknown values are a 400.
    pub fn parse(value: Option<&str>) -> Result<Self, ApiError> {
        match value.unwrap_or("") {
            "" | "Metadata" => Ok(IncludeObject::Metadata),
            "None" => Ok(IncludeObject::None),
            "Object" => Ok(IncludeObject::Object),
            other => Err(ApiError::bad_request(format!(
                "includeObject: Unsupported value: {other:?}: supported values: \"Metadata\", \"None\", \"Object\""
            ))),
        }
    }
}

/// Reads `includeObject` from a raw query string.
pub fn parse_include_object(query: &str) -> Result<IncludeObject, ApiError> {
    IncludeObject::parse(query_param(query, "includeObject").as_deref())
}

/// The response form a client asked for in its `Accept` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptKind {
    /// Plain JSON (also `*/*` and an empty header).
    Json,
    /// `application/yaml`
    Yaml,
    /// `application/json;as=Table;g=meta.k8s.io;v=…`
    Table {
        /// `v1` or `v1beta1`
        version: &'static str,
    },
    /// `as=PartialObjectMetadata` (single object)
    PartialObjectMetadata {
        /// `v1` or `v1beta1`
        version: &'static str,
    },
    /// `as=PartialObjectMetadataList`
    PartialObjectMetadataList {
        /// `v1` or `v1beta1`
        version: &'static str,
    },
    /// `application/json;g=apidiscovery.k8s.io;v=v2|v2beta1;as=APIGroupDiscoveryList`
    AggregatedDiscovery {
        /// `true` for `v2`, `false` for `v2beta1`
        v2: bool,
    },
    /// `application/vnd.kubernetes.protobuf`, preferred; `json_too` when the header also
    /// accepts JSON (client-go sends `application/vnd.kubernetes.protobuf, */*`), to answer with
    /// when an object has no protobuf form.
    Protobuf {
        /// JSON is acceptable as well.
        json_too: bool,
    },
    /// Nothing acceptable we can produce (answer 406).
    Unsupported,
}

impl AcceptKind {
    /// The `apiVersion` of the meta/discovery document this form asks for, if any.
    pub fn api_version(&self) -> Option<&'static str> {
        match self {
            AcceptKind::Table { version }
            | AcceptKind::PartialObjectMetadata { version }
            | AcceptKind::PartialObjectMetadataList { version } => {
                Some(if *version == "v1beta1" { "meta.k8s.io/v1beta1" } else { "meta.k8s.io/v1" })
            }
            AcceptKind::AggregatedDiscovery { v2 } => {
                Some(if *v2 { "apidiscovery.k8s.io/v2" } else { "apidiscovery.k8s.io/v2beta1" })
            }
            _ => None,
        }
    }

    /// The `Content-Type` to answer with. Clients check it: client-go only treats a discovery
    /// response as aggregated when the content type says so.
    pub fn content_type(&self) -> &'static str {
        match self {
            AcceptKind::Yaml => "application/yaml",
            AcceptKind::Table { version: "v1beta1" } => "application/json;as=Table;v=v1beta1;g=meta.k8s.io",
            AcceptKind::Table { .. } => "application/json;as=Table;v=v1;g=meta.k8s.io",
            AcceptKind::PartialObjectMetadata { version: "v1beta1" } => {
                "application/json;as=PartialObjectMetadata;v=v1beta1;g=meta.k8s.io"
            }
            AcceptKind::PartialObjectMetadata { .. } => "application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io",
            AcceptKind::PartialObjectMetadataList { version: "v1beta1" } => {
                "application/json;as=PartialObjectMetadataList;v=v1beta1;g=meta.k8s.io"
            }
            AcceptKind::PartialObjectMetadataList { .. } => {
                "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io"
            }
            AcceptKind::AggregatedDiscovery { v2: true } => {
                "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
            }
            AcceptKind::AggregatedDiscovery { v2: false } => {
                "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
            }
            AcceptKind::Protobuf { .. } => crate::protobuf::CONTENT_TYPE,
            AcceptKind::Json | AcceptKind::Unsupported => "application/json",
        }
    }
}

fn accept_one(media: &str, params: &Map<String, Value>) -> Option<AcceptKind> {
    let p = |k: &str| params.get(k).and_then(Value::as_str).unwrap_or("");
    let meta_version = match p("v") {
        "v1" => Some("v1"),
        "v1beta1" => Some("v1beta1"),
        _ => None,
    };
    match media {
        "application/json" | "*/*" | "application/*" => match p("as") {
            "" => Some(AcceptKind::Json),
            "Table" if p("g") == "meta.k8s.io" => meta_version.map(|version| AcceptKind::Table { version }),
            "PartialObjectMetadata" if p("g") == "meta.k8s.io" => {
                meta_version.map(|version| AcceptKind::PartialObjectMetadata { version })
            }
            "PartialObjectMetadataList" if p("g") == "meta.k8s.io" => {
                meta_version.map(|version| AcceptKind::PartialObjectMetadataList { version })
            }
            "APIGroupDiscoveryList" if p("g") == "apidiscovery.k8s.io" => match p("v") {
                "v2" => Some(AcceptKind::AggregatedDiscovery { v2: true }),
                "v2beta1" => Some(AcceptKind::AggregatedDiscovery { v2: false }),
                _ => None,
            },
            _ => None,
        },
        "application/yaml" if p("as").is_empty() => Some(AcceptKind::Yaml),
        crate::protobuf::CONTENT_TYPE if p("as").is_empty() => Some(AcceptKind::Protobuf { json_too: false }),
        _ => None,
    }
}

/// Picks the first form we can serve from an `Accept` header, honouring `q` weights
/// (entries with `q=0` are skipped). Protobuf, when preferred, notes whether JSON would do too.
pub fn parse_accept(accept: &str) -> AcceptKind {
    pick_accept(accept, true)
}

/// [`parse_accept`] for a server that answers only in JSON or YAML: protobuf entries are
/// passed over, so `protobuf, application/yaml` gets YAML and protobuf alone nothing (406).
pub fn parse_accept_no_protobuf(accept: &str) -> AcceptKind {
    pick_accept(accept, false)
}

fn pick_accept(accept: &str, protobuf: bool) -> AcceptKind {
    if accept.trim().is_empty() {
        return AcceptKind::Json;
    }
    let mut candidates: Vec<(f64, AcceptKind)> = Vec::new();
    for entry in accept.split(',') {
        let mut parts = entry.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let mut params = Map::new();
        for param in parts {
            if let Some((k, v)) = param.split_once('=') {
                params.insert(k.trim().to_string(), Value::String(v.trim().trim_matches('"').to_string()));
            }
        }
        let q = params.get("q").and_then(Value::as_str).and_then(|q| q.parse::<f64>().ok()).unwrap_or(1.0);
        if q <= 0.0 {
            continue;
        }
        if let Some(kind) = accept_one(&media, &params)
            && (protobuf || !matches!(kind, AcceptKind::Protobuf { .. }))
        {
            candidates.push((q, kind));
        }
    }
    // Stable sort keeps header order among equal weights.
    candidates.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap_or(std::cmp::Ordering::Equal));
    let json_too = candidates.iter().any(|c| c.1 == AcceptKind::Json);
    match candidates.first().map(|c| c.1) {
        Some(AcceptKind::Protobuf { .. }) => AcceptKind::Protobuf { json_too },
        Some(kind) => kind,
        None => AcceptKind::Unsupported,
    }
}

/// kubectl's age format (`duration.HumanDuration`): `5s`, `3m20s`, `4h5m`, `2d3h`, `3y`…
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    if secs < 0 {
        return "0s".into();
    }
    if secs < 60 * 2 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        let s = secs % 60;
        return if s == 0 { format!("{minutes}m") } else { format!("{minutes}m{s}s") };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = secs / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 { format!("{hours}h") } else { format!("{hours}h{m}m") };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 { format!("{}d", hours / 24) } else { format!("{}d{h}h", hours / 24) };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 { format!("{}y", hours / 24 / 365) } else { format!("{}y{dy}d", hours / 24 / 365) };
    }
    format!("{}y", hours / 24 / 365)
}

/// `translateTimestampSince`: the age of an RFC 3339 timestamp, `<unknown>` when absent.
pub fn age_since(timestamp: Option<&str>, now_unix: i64) -> String {
    match timestamp.and_then(parse_rfc3339) {
        Some(t) => human_duration(now_unix - t),
        None => "<unknown>".into(),
    }
}

const NAME_DESC: &str = "Name must be unique within a namespace. Is required when creating resources, although \
some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily \
intended for creation idempotence and configuration definition. Cannot be updated. More info: \
https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const AGE_DESC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. \
It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. \
It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: \
https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

fn col(name: &str, ty: &str, format: &str, description: &str, priority: i32) -> Value {
    json!({"name": name, "type": ty, "format": format, "description": description, "priority": priority})
}

fn name_col() -> Value {
    col("Name", "string", "name", NAME_DESC, 0)
}

fn age_col() -> Value {
    col("Age", "string", "", AGE_DESC, 0)
}

fn text(v: &Value, ptr: &str) -> String {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("").to_string()
}

fn or_none(s: String) -> String {
    if s.is_empty() { "<none>".into() } else { s }
}

fn items<'a>(v: &'a Value, ptr: &str) -> &'a [Value] {
    v.pointer(ptr).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

fn map_len(v: &Value, ptr: &str) -> usize {
    v.pointer(ptr).and_then(Value::as_object).map(Map::len).unwrap_or(0)
}

/// A row function: an object and "now" to its cells plus optional row conditions.
type RowFn = fn(&Value, i64) -> (Vec<Value>, Option<Value>);

/// A printer: column definitions and a row function.
struct Printer {
    columns: Vec<Value>,
    row: RowFn,
}

fn printer(resource: &str, group: &str) -> Printer {
    match (group, resource) {
        ("", "pods") => Printer {
            columns: vec![
                name_col(),
                col("Ready", "string", "", "The aggregate readiness state of this pod for accepting traffic.", 0),
                col("Status", "string", "", "The aggregate status of the containers in this pod.", 0),
                col(
                    "Restarts",
                    "string",
                    "",
                    "The number of times the containers in this pod have been restarted and when the last container \
                     in this pod has restarted.",
                    0,
                ),
                age_col(),
                col("IP", "string", "", "IP address allocated to the pod. Routable at least within the cluster.", 1),
                col("Node", "string", "", "NodeName indicates in which node this pod is scheduled.", 1),
                col("Nominated Node", "string", "", "nominatedNodeName is set when this pod preempts other pods.", 1),
                col("Readiness Gates", "string", "", "If specified, all readiness gates will be evaluated.", 1),
            ],
            row: pod_row,
        },
        ("", "nodes") => Printer {
            columns: vec![
                name_col(),
                col("Status", "string", "", "The status of the node", 0),
                col("Roles", "string", "", "The roles of the node", 0),
                age_col(),
                col("Version", "string", "", "Kubelet Version reported by the node.", 0),
                col("Internal-IP", "string", "", "List of addresses reachable to the node.", 1),
                col("External-IP", "string", "", "List of addresses reachable to the node.", 1),
                col("OS-Image", "string", "", "OS Image reported by the node from /etc/os-release.", 1),
                col("Kernel-Version", "string", "", "Kernel Version reported by the node from 'uname -r'.", 1),
                col("Container-Runtime", "string", "", "Container runtime version reported by the node.", 1),
            ],
            row: node_row,
        },
        ("", "namespaces") => Printer {
            columns: vec![name_col(), col("Status", "string", "", "The status of the namespace", 0), age_col()],
            row: |o, now| (vec![json!(text(o, "/metadata/name")), json!(text(o, "/status/phase")), age(o, now)], None),
        },
        ("", "configmaps") => Printer {
            columns: vec![
                name_col(),
                col("Data", "integer", "", "Number of data entries in this ConfigMap", 0),
                age_col(),
            ],
            row: |o, now| {
                let n = map_len(o, "/data") + map_len(o, "/binaryData");
                (vec![json!(text(o, "/metadata/name")), json!(n), age(o, now)], None)
            },
        },
        ("", "secrets") => Printer {
            columns: vec![
                name_col(),
                col("Type", "string", "", "The type of the secret", 0),
                col("Data", "integer", "", "The number of entries in the secret", 0),
                age_col(),
            ],
            row: |o, now| {
                let cells = vec![
                    json!(text(o, "/metadata/name")),
                    json!(text(o, "/type")),
                    json!(map_len(o, "/data")),
                    age(o, now),
                ];
                (cells, None)
            },
        },
        ("", "services") => Printer {
            columns: vec![
                name_col(),
                col("Type", "string", "", "The type of the service", 0),
                col("Cluster-IP", "string", "", "The cluster IP of the service", 0),
                col("External-IP", "string", "", "The external IP of the service", 0),
                col("Port(s)", "string", "", "The ports of the service", 0),
                age_col(),
                col("Selector", "string", "", "The label selector of the service", 1),
            ],
            row: service_row,
        },
        ("", "events") => Printer {
            columns: vec![
                col("Last Seen", "string", "", "Time when this Event was last observed.", 0),
                col("Type", "string", "", "Type of this event (Normal, Warning).", 0),
                col("Reason", "string", "", "Short, machine understandable string that gives the reason.", 0),
                col("Object", "string", "", "The object that this event is about.", 0),
                col("Subobject", "string", "", "The field path of the object this event is about.", 1),
                col("Source", "string", "", "The component reporting this event.", 1),
                col("Message", "string", "", "A human-readable description of the status of this operation.", 0),
                col("First Seen", "string", "", "The time at which the event was first recorded.", 1),
                col("Count", "string", "", "The number of times this event has occurred.", 1),
                col("Name", "string", "name", NAME_DESC, 1),
            ],
            row: event_row,
        },
        ("coordination.k8s.io", "leases") => Printer {
            columns: vec![name_col(), col("Holder", "string", "", "The holder of the lease", 0), age_col()],
            row: |o, now| {
                (vec![json!(text(o, "/metadata/name")), json!(text(o, "/spec/holderIdentity")), age(o, now)], None)
            },
        },
        ("apiextensions.k8s.io", "customresourcedefinitions") => Printer {
            columns: vec![name_col(), col("Created At", "date", "", AGE_DESC, 0)],
            row: |o, _| (vec![json!(text(o, "/metadata/name")), json!(text(o, "/metadata/creationTimestamp"))], None),
        },
        ("apps", "deployments") => Printer {
            columns: vec![
                name_col(),
                col("Ready", "string", "", "Number of the pod with ready state", 0),
                col("Up-to-date", "string", "", "Total number of non-terminated pods targeted by this deployment.", 0),
                col("Available", "string", "", "Total number of available pods targeted by this deployment.", 0),
                age_col(),
                col("Containers", "string", "", "Names of each container in the template.", 1),
                col("Images", "string", "", "Images referenced by each container in the template.", 1),
                col("Selector", "string", "", "Label selector for pods.", 1),
            ],
            row: deployment_row,
        },
        _ => Printer {
            columns: vec![name_col(), age_col()],
            row: |o, now| (vec![json!(text(o, "/metadata/name")), age(o, now)], None),
        },
    }
}

fn age(o: &Value, now: i64) -> Value {
    json!(age_since(o.pointer("/metadata/creationTimestamp").and_then(Value::as_str), now))
}

fn int(v: &Value, ptr: &str) -> i64 {
    v.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

fn pod_row(pod: &Value, now: i64) -> (Vec<Value>, Option<Value>) {
    let containers = items(pod, "/spec/containers");
    let init_specs = items(pod, "/spec/initContainers");
    let restartable = |name: &str| {
        init_specs.iter().any(|c| {
            c.get("name").and_then(Value::as_str) == Some(name)
                && c.get("restartPolicy").and_then(Value::as_str) == Some("Always")
        })
    };
    let total = containers.len() + init_specs.iter().filter(|c| c["restartPolicy"] == "Always").count();
    let mut ready = 0usize;
    let mut restarts = 0i64;
    let mut last_restart = 0i64;
    let mut sidecar_restarts = 0i64;
    let mut sidecar_last_restart = 0i64;
    let phase = text(pod, "/status/phase");
    let mut reason = phase.clone();
    let status_reason = text(pod, "/status/reason");
    if !status_reason.is_empty() {
        reason = status_reason.clone();
    }
    let conditions = items(pod, "/status/conditions");
    if conditions.iter().any(|c| c["type"] == "PodScheduled" && c["reason"] == "SchedulingGated") {
        reason = "SchedulingGated".into();
    }
    let finished = |c: &Value| {
        c.pointer("/lastState/terminated/finishedAt").and_then(Value::as_str).and_then(parse_rfc3339).unwrap_or(0)
    };
    let mut initializing = false;
    for (i, cs) in items(pod, "/status/initContainerStatuses").iter().enumerate() {
        let name = text(cs, "/name");
        let count = int(cs, "/restartCount");
        restarts += count;
        last_restart = last_restart.max(finished(cs));
        if restartable(&name) {
            sidecar_restarts += count;
            sidecar_last_restart = sidecar_last_restart.max(finished(cs));
        }
        let terminated = cs.pointer("/state/terminated");
        let waiting_reason = text(cs, "/state/waiting/reason");
        if terminated.is_some_and(|t| t["exitCode"].as_i64() == Some(0)) {
            continue;
        }
        if restartable(&name) && cs["started"] == true {
            if cs["ready"] == true {
                ready += 1;
            }
            continue;
        }
        if let Some(t) = terminated {
            let r = text(t, "/reason");
            reason = if !r.is_empty() {
                format!("Init:{r}")
            } else if int(t, "/signal") != 0 {
                format!("Init:Signal:{}", int(t, "/signal"))
            } else {
                format!("Init:ExitCode:{}", int(t, "/exitCode"))
            };
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            reason = format!("Init:{waiting_reason}");
        } else {
            reason = format!("Init:{i}/{}", init_specs.len());
        }
        initializing = true;
        break;
    }
    let initialized = conditions.iter().any(|c| c["type"] == "Initialized" && c["status"] == "True");
    if !initializing || initialized {
        restarts = sidecar_restarts;
        last_restart = sidecar_last_restart;
        let mut has_running = false;
        for cs in items(pod, "/status/containerStatuses").iter().rev() {
            restarts += int(cs, "/restartCount");
            last_restart = last_restart.max(finished(cs));
            let waiting = text(cs, "/state/waiting/reason");
            let terminated = cs.pointer("/state/terminated");
            if !waiting.is_empty() {
                reason = waiting;
            } else if let Some(t) = terminated {
                let r = text(t, "/reason");
                reason = if !r.is_empty() {
                    r
                } else if int(t, "/signal") != 0 {
                    format!("Signal:{}", int(t, "/signal"))
                } else {
                    format!("ExitCode:{}", int(t, "/exitCode"))
                };
            } else if cs["ready"] == true && cs.pointer("/state/running").is_some() {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            let pod_ready = conditions.iter().any(|c| c["type"] == "Ready" && c["status"] == "True");
            reason = if pod_ready { "Running".into() } else { "NotReady".into() };
        }
    }
    let deleting = pod.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null());
    if deleting && status_reason == "NodeLost" {
        reason = "Unknown".into();
    } else if deleting && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".into();
    }
    let restarts_cell = if restarts != 0 && last_restart != 0 {
        format!("{restarts} ({} ago)", human_duration(now - last_restart))
    } else {
        restarts.to_string()
    };
    let gates = items(pod, "/spec/readinessGates");
    let gates_cell = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let met = gates
            .iter()
            .filter(|g| conditions.iter().any(|c| c["type"] == g["conditionType"] && c["status"] == "True"))
            .count();
        format!("{met}/{}", gates.len())
    };
    let cells = vec![
        json!(text(pod, "/metadata/name")),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts_cell),
        age(pod, now),
        json!(or_none(text(pod, "/status/podIP"))),
        json!(or_none(text(pod, "/spec/nodeName"))),
        json!(or_none(text(pod, "/status/nominatedNodeName"))),
        json!(gates_cell),
    ];
    let conditions = match phase.as_str() {
        "Succeeded" => Some(json!([{"type": "Completed", "status": "True", "reason": "Succeeded",
                                     "message": "The pod has completed successfully."}])),
        "Failed" => Some(json!([{"type": "Completed", "status": "True", "reason": "Failed",
                                  "message": "The pod failed."}])),
        _ => None,
    };
    (cells, conditions)
}

/// Node roles from `node-role.kubernetes.io/<role>` and `kubernetes.io/role` labels, sorted.
fn node_roles(node: &Value) -> Vec<String> {
    let mut roles = std::collections::BTreeSet::new();
    for (k, v) in node.pointer("/metadata/labels").and_then(Value::as_object).into_iter().flatten() {
        let role = match k.strip_prefix("node-role.kubernetes.io/") {
            Some(role) => role,
            None if k == "kubernetes.io/role" => v.as_str().unwrap_or(""),
            None => "",
        };
        if !role.is_empty() {
            roles.insert(role.to_string());
        }
    }
    roles.into_iter().collect()
}

fn node_row(node: &Value, now: i64) -> (Vec<Value>, Option<Value>) {
    let mut status = Vec::new();
    if let Some(c) = items(node, "/status/conditions").iter().rev().find(|c| c["type"] == "Ready") {
        status.push(if c["status"] == "True" { "Ready" } else { "NotReady" });
    }
    if status.is_empty() {
        status.push("Unknown");
    }
    if node.pointer("/spec/unschedulable") == Some(&Value::Bool(true)) {
        status.push("SchedulingDisabled");
    }
    let roles = node_roles(node).join(",");
    let address = |ty: &str| {
        let addr = items(node, "/status/addresses").iter().find(|a| a["type"] == ty);
        or_none(addr.map(|a| text(a, "/address")).unwrap_or_default())
    };
    let unknown = |s: String| if s.is_empty() { "<unknown>".to_string() } else { s };
    let cells = vec![
        json!(text(node, "/metadata/name")),
        json!(status.join(",")),
        json!(or_none(roles)),
        age(node, now),
        json!(text(node, "/status/nodeInfo/kubeletVersion")),
        json!(address("InternalIP")),
        json!(address("ExternalIP")),
        json!(unknown(text(node, "/status/nodeInfo/osImage"))),
        json!(unknown(text(node, "/status/nodeInfo/kernelVersion"))),
        json!(unknown(text(node, "/status/nodeInfo/containerRuntimeVersion"))),
    ];
    (cells, None)
}

fn service_row(svc: &Value, now: i64) -> (Vec<Value>, Option<Value>) {
    let ty = text(svc, "/spec/type");
    let ty = if ty.is_empty() { "ClusterIP".to_string() } else { ty };
    let external_ips: Vec<String> =
        items(svc, "/spec/externalIPs").iter().filter_map(Value::as_str).map(str::to_string).collect();
    let lb_ips: Vec<String> = items(svc, "/status/loadBalancer/ingress")
        .iter()
        .filter_map(|i| i.get("ip").or_else(|| i.get("hostname")).and_then(Value::as_str))
        .map(str::to_string)
        .collect();
    let external = match ty.as_str() {
        "ClusterIP" | "NodePort" => or_none(external_ips.join(",")),
        "LoadBalancer" => {
            let all: Vec<String> = lb_ips.into_iter().chain(external_ips).collect();
            if all.is_empty() { "<pending>".into() } else { all.join(",") }
        }
        "ExternalName" => text(svc, "/spec/externalName"),
        _ => "<unknown>".into(),
    };
    let ports: Vec<String> = items(svc, "/spec/ports")
        .iter()
        .map(|p| {
            let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
            match int(p, "/nodePort") {
                0 => format!("{}/{proto}", int(p, "/port")),
                np => format!("{}:{np}/{proto}", int(p, "/port")),
            }
        })
        .collect();
    let mut selector: Vec<String> = svc
        .pointer("/spec/selector")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    selector.sort();
    let cells = vec![
        json!(text(svc, "/metadata/name")),
        json!(ty),
        json!(or_none(text(svc, "/spec/clusterIP"))),
        json!(external),
        json!(or_none(ports.join(","))),
        age(svc, now),
        json!(or_none(selector.join(","))),
    ];
    (cells, None)
}

fn event_row(ev: &Value, now: i64) -> (Vec<Value>, Option<Value>) {
    let ts = |ptr: &str| ev.pointer(ptr).and_then(Value::as_str).filter(|s| !s.is_empty());
    let first = match ts("/firstTimestamp") {
        Some(t) => age_since(Some(t), now),
        None => age_since(ts("/eventTime"), now),
    };
    let mut last = match ts("/lastTimestamp") {
        Some(t) => age_since(Some(t), now),
        None => first.clone(),
    };
    let mut count = int(ev, "/count");
    if ev.get("series").is_some_and(|s| !s.is_null()) {
        last = age_since(ts("/series/lastObservedTime"), now);
        count = int(ev, "/series/count");
    } else if count == 0 {
        count = 1;
    }
    let kind = text(ev, "/involvedObject/kind").to_lowercase();
    let obj_name = text(ev, "/involvedObject/name");
    let target = if obj_name.is_empty() { kind } else { format!("{kind}/{obj_name}") };
    let mut component = text(ev, "/source/component");
    if component.is_empty() {
        component = text(ev, "/reportingComponent");
    }
    let mut source = vec![component];
    let host = text(ev, "/source/host");
    let instance = text(ev, "/reportingInstance");
    if !host.is_empty() {
        source.push(host);
    } else if !instance.is_empty() {
        source.push(instance);
    }
    let cells = vec![
        json!(last),
        json!(text(ev, "/type")),
        json!(text(ev, "/reason")),
        json!(target),
        json!(text(ev, "/involvedObject/fieldPath")),
        json!(source.join(", ")),
        json!(text(ev, "/message").trim()),
        json!(first),
        json!(count),
        json!(text(ev, "/metadata/name")),
    ];
    (cells, None)
}

fn deployment_row(d: &Value, now: i64) -> (Vec<Value>, Option<Value>) {
    let containers = items(d, "/spec/template/spec/containers");
    let names: Vec<String> = containers.iter().map(|c| text(c, "/name")).collect();
    let images: Vec<String> = containers.iter().map(|c| text(c, "/image")).collect();
    let selector = d
        .pointer("/spec/selector")
        .and_then(|s| crate::selector::LabelSelector::from_json(s).ok())
        .map(|s| s.to_string())
        .unwrap_or_default();
    let desired = d.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
    let cells = vec![
        json!(text(d, "/metadata/name")),
        json!(format!("{}/{desired}", int(d, "/status/readyReplicas"))),
        json!(int(d, "/status/updatedReplicas")),
        json!(int(d, "/status/availableReplicas")),
        age(d, now),
        json!(names.join(",")),
        json!(images.join(",")),
        json!(or_none(selector)),
    ];
    (cells, None)
}

fn row_object(obj: &Value, include: IncludeObject) -> Option<Value> {
    match include {
        IncludeObject::None => None,
        IncludeObject::Object => Some(obj.clone()),
        IncludeObject::Metadata => Some(json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
        })),
    }
}

/// Renders objects of `resource` (plural) in `group` as a `meta.k8s.io/v1` `Table`.
/// `now_unix` (Unix seconds) is the reference for ages. The table's `metadata` is empty; see
/// [`table_from_list`] to carry a list's `resourceVersion`/`continue`. For a `v1beta1`
/// request, overwrite `apiVersion` with `meta.k8s.io/v1beta1` (the shape is identical).
pub fn to_table(resource: &str, group: &str, objects: &[Value], include_object: IncludeObject, now_unix: i64) -> Value {
    let p = printer(resource, group);
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let (cells, conditions) = (p.row)(o, now_unix);
            let mut row = Map::new();
            row.insert("cells".into(), Value::Array(cells));
            if let Some(c) = conditions {
                row.insert("conditions".into(), c);
            }
            if let Some(obj) = row_object(o, include_object) {
                row.insert("object".into(), obj);
            }
            Value::Object(row)
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {},
        "columnDefinitions": p.columns,
        "rows": rows,
    })
}

/// [`to_table`] for a list object (`{"metadata": …, "items": […]}`), carrying over the list's
/// `resourceVersion`, `continue` and `remainingItemCount`. A single object gives a one-row table.
pub fn table_from_list(
    resource: &str,
    group: &str,
    list: &Value,
    include_object: IncludeObject,
    now_unix: i64,
) -> Value {
    let Some(items) = list.get("items").and_then(Value::as_array) else {
        return to_table(resource, group, std::slice::from_ref(list), include_object, now_unix);
    };
    let mut table = to_table(resource, group, items, include_object, now_unix);
    let mut meta = Map::new();
    for key in ["resourceVersion", "continue", "remainingItemCount"] {
        if let Some(v) = list.pointer(&format!("/metadata/{key}")) {
            meta.insert(key.into(), v.clone());
        }
    }
    table["metadata"] = Value::Object(meta);
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::format_rfc3339;

    const NOW: i64 = 1_700_000_000;

    fn ago(secs: i64) -> String {
        format_rfc3339(NOW - secs)
    }

    fn cells(t: &Value, row: usize) -> Vec<Value> {
        t["rows"][row]["cells"].as_array().cloned().unwrap_or_default()
    }

    fn col_names(t: &Value) -> Vec<String> {
        t["columnDefinitions"].as_array().into_iter().flatten().map(|c| text(c, "/name")).collect()
    }

    #[test]
    fn durations() {
        let cases = [
            (-5, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (5, "5s"),
            (119, "119s"),
            (120, "2m"),
            (200, "3m20s"),
            (600, "10m"),
            (179 * 60, "179m"),
            (3 * 3600, "3h"),
            (4 * 3600 + 5 * 60, "4h5m"),
            (9 * 3600, "9h"),
            (47 * 3600, "47h"),
            (48 * 3600, "2d"),
            (51 * 3600, "2d3h"),
            (10 * 86400, "10d"),
            (3 * 365 * 86400, "3y"),
            (3 * 365 * 86400 + 86400 * 5, "3y5d"),
            (9 * 365 * 86400, "9y"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration(secs), want, "{secs}s");
        }
        assert_eq!(age_since(None, NOW), "<unknown>");
    }

    #[test]
    fn accept_headers() {
        assert_eq!(
            parse_accept(
                "application/json;as=Table;v=v1;g=meta.k8s.io,\
                 application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
            ),
            AcceptKind::Table { version: "v1" }
        );
        assert_eq!(
            parse_accept("application/json;as=Table;v=v1beta1;g=meta.k8s.io, application/json"),
            AcceptKind::Table { version: "v1beta1" }
        );
        assert_eq!(
            parse_accept(
                "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,\
                 application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json;q=0.9"
            ),
            AcceptKind::AggregatedDiscovery { v2: true }
        );
        assert_eq!(
            parse_accept("application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"),
            AcceptKind::AggregatedDiscovery { v2: false }
        );
        assert_eq!(
            parse_accept("application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io,application/json"),
            AcceptKind::PartialObjectMetadataList { version: "v1" }
        );
        assert_eq!(
            parse_accept("application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io"),
            AcceptKind::PartialObjectMetadata { version: "v1" }
        );
        assert_eq!(parse_accept("application/yaml"), AcceptKind::Yaml);
        assert_eq!(parse_accept("*/*"), AcceptKind::Json);
        assert_eq!(parse_accept(""), AcceptKind::Json);
        assert_eq!(parse_accept("application/vnd.kubernetes.protobuf, */*"), AcceptKind::Protobuf { json_too: true });
        assert_eq!(parse_accept("application/vnd.kubernetes.protobuf"), AcceptKind::Protobuf { json_too: false });
        assert_eq!(parse_accept("application/json, application/vnd.kubernetes.protobuf"), AcceptKind::Json);
        assert_eq!(parse_accept_no_protobuf("application/vnd.kubernetes.protobuf, application/json"), AcceptKind::Json);
        assert_eq!(parse_accept_no_protobuf("application/vnd.kubernetes.protobuf, application/yaml"), AcceptKind::Yaml);
        assert_eq!(parse_accept_no_protobuf("application/vnd.kubernetes.protobuf"), AcceptKind::Unsupported);
        assert_eq!(parse_accept("application/json;q=0.5, application/yaml"), AcceptKind::Yaml);
        assert_eq!(parse_accept("text/html"), AcceptKind::Unsupported);
        assert_eq!(parse_accept("application/json;as=Table;v=v9;g=meta.k8s.io"), AcceptKind::Unsupported);
        assert_eq!(AcceptKind::Table { version: "v1beta1" }.api_version(), Some("meta.k8s.io/v1beta1"));
        assert_eq!(
            AcceptKind::AggregatedDiscovery { v2: true }.content_type(),
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
        );
        assert_eq!(AcceptKind::Table { version: "v1" }.content_type(), "application/json;as=Table;v=v1;g=meta.k8s.io");
        assert_eq!(AcceptKind::Json.content_type(), "application/json");
    }

    #[test]
    fn include_object_param() {
        assert_eq!(parse_include_object("").expect("default"), IncludeObject::Metadata);
        assert_eq!(parse_include_object("includeObject=Object").expect("o"), IncludeObject::Object);
        assert_eq!(parse_include_object("a=b&includeObject=None").expect("n"), IncludeObject::None);
        assert_eq!(parse_include_object("includeObject=All").map_err(|e| e.code), Err(400));
    }

    #[test]
    fn pod_table_with_wide_columns() {
        let pods = vec![
            json!({"metadata": {"name": "web", "namespace": "default", "creationTimestamp": ago(300), "uid": "u"},
                   "spec": {"nodeName": "edge-1", "containers": [{"name": "a"}, {"name": "b"}],
                            "readinessGates": [{"conditionType": "x/ok"}]},
                   "status": {"phase": "Running", "podIP": "10.0.0.5",
                              "conditions": [{"type": "Ready", "status": "False"}, {"type": "x/ok", "status": "True"}],
                              "containerStatuses": [
                                  {"name": "a", "ready": true, "restartCount": 2, "state": {"running": {}},
                                   "lastState": {"terminated": {"finishedAt": ago(60)}}},
                                  {"name": "b", "ready": false, "restartCount": 1,
                                   "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}}),
            json!({"metadata": {"name": "pending", "creationTimestamp": ago(5)},
                   "spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Pending"}}),
            json!({"metadata": {"name": "bye", "creationTimestamp": ago(3 * 86400), "deletionTimestamp": ago(1)},
                   "spec": {"containers": [{"name": "a"}]},
                   "status": {"phase": "Running",
                              "containerStatuses": [{"name": "a", "ready": true, "state": {"running": {}}}]}}),
            json!({"metadata": {"name": "done"}, "spec": {"containers": [{"name": "a"}]},
                   "status": {"phase": "Succeeded", "containerStatuses": [
                       {"name": "a", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}}),
            json!({"metadata": {"name": "init"}, "spec": {"initContainers": [{"name": "i1"}, {"name": "i2"}],
                   "containers": [{"name": "a"}]},
                   "status": {"phase": "Pending", "initContainerStatuses": [
                       {"name": "i1", "state": {"terminated": {"exitCode": 0}}},
                       {"name": "i2", "state": {"running": {}}}]}}),
        ];
        let t = to_table("pods", "", &pods, IncludeObject::Metadata, NOW);
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(
            col_names(&t),
            vec!["Name", "Ready", "Status", "Restarts", "Age", "IP", "Node", "Nominated Node", "Readiness Gates"]
        );
        let prio: Vec<i64> =
            t["columnDefinitions"].as_array().into_iter().flatten().map(|c| int(c, "/priority")).collect();
        assert_eq!(prio, vec![0, 0, 0, 0, 0, 1, 1, 1, 1]);
        assert_eq!(t["columnDefinitions"][0]["format"], "name");
        assert_eq!(
            cells(&t, 0),
            vec![
                json!("web"),
                json!("1/2"),
                json!("CrashLoopBackOff"),
                json!("3 (60s ago)"),
                json!("5m"),
                json!("10.0.0.5"),
                json!("edge-1"),
                json!("<none>"),
                json!("1/1")
            ]
        );
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(t["rows"][0]["object"]["metadata"]["uid"], "u");
        assert_eq!(cells(&t, 1)[1..5], [json!("0/1"), json!("Pending"), json!("0"), json!("5s")]);
        assert_eq!(cells(&t, 1)[5..], [json!("<none>"), json!("<none>"), json!("<none>"), json!("<none>")]);
        assert_eq!(cells(&t, 2)[1..5], [json!("1/1"), json!("Terminating"), json!("0"), json!("3d")]);
        assert_eq!(cells(&t, 3)[2], json!("Completed"));
        assert_eq!(cells(&t, 3)[4], json!("<unknown>"));
        assert_eq!(t["rows"][3]["conditions"][0]["type"], "Completed");
        assert_eq!(cells(&t, 4)[2], json!("Init:1/2"));
    }

    #[test]
    fn include_object_variants() {
        let pods = vec![json!({"metadata": {"name": "p"}, "spec": {}})];
        let none = to_table("pods", "", &pods, IncludeObject::None, NOW);
        assert!(none["rows"][0].get("object").is_none());
        let full = to_table("pods", "", &pods, IncludeObject::Object, NOW);
        assert_eq!(full["rows"][0]["object"], pods[0]);
    }

    #[test]
    fn node_table() {
        let nodes = vec![
            json!({
                "metadata": {"name": "edge-1", "creationTimestamp": ago(2 * 86400 + 3 * 3600),
                             "labels": {"node-role.kubernetes.io/edge": "", "node-role.kubernetes.io/agent": "",
                                        "kubernetes.io/role": "worker"}},
                "spec": {"unschedulable": true},
                "status": {"conditions": [{"type": "Ready", "status": "True"}],
                           "addresses": [{"type": "InternalIP", "address": "192.168.1.2"}],
                           "nodeInfo": {"kubeletVersion": "v1.32.0-kubeedge", "osImage": "Ubuntu",
                                        "kernelVersion": "6.1",
                                        "containerRuntimeVersion": "containerd://1.7"}}
            }),
            json!({"metadata": {"name": "n2"}, "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}),
            json!({"metadata": {"name": "n3"}}),
        ];
        let t = to_table("nodes", "", &nodes, IncludeObject::None, NOW);
        assert_eq!(
            col_names(&t),
            vec![
                "Name",
                "Status",
                "Roles",
                "Age",
                "Version",
                "Internal-IP",
                "External-IP",
                "OS-Image",
                "Kernel-Version",
                "Container-Runtime"
            ]
        );
        assert_eq!(
            cells(&t, 0),
            vec![
                json!("edge-1"),
                json!("Ready,SchedulingDisabled"),
                json!("agent,edge,worker"),
                json!("2d3h"),
                json!("v1.32.0-kubeedge"),
                json!("192.168.1.2"),
                json!("<none>"),
                json!("Ubuntu"),
                json!("6.1"),
                json!("containerd://1.7")
            ]
        );
        assert_eq!(cells(&t, 1)[1..3], [json!("NotReady"), json!("<none>")]);
        assert_eq!(cells(&t, 2)[1], json!("Unknown"));
        assert_eq!(cells(&t, 2)[7], json!("<unknown>"));
    }

    #[test]
    fn simple_tables() {
        let cm = json!({"metadata": {"name": "c", "creationTimestamp": ago(30)}, "data": {"a": "1", "b": "2"},
                        "binaryData": {"c": ""}});
        let t = to_table("configmaps", "", &[cm], IncludeObject::None, NOW);
        assert_eq!(col_names(&t), vec!["Name", "Data", "Age"]);
        assert_eq!(cells(&t, 0), vec![json!("c"), json!(3), json!("30s")]);

        let s = json!({"metadata": {"name": "s"}, "type": "Opaque", "data": {"k": "dg=="}});
        let t = to_table("secrets", "", &[s], IncludeObject::None, NOW);
        assert_eq!(col_names(&t), vec!["Name", "Type", "Data", "Age"]);
        assert_eq!(cells(&t, 0)[..3], [json!("s"), json!("Opaque"), json!(1)]);

        let ns =
            json!({"metadata": {"name": "default", "creationTimestamp": ago(7200)}, "status": {"phase": "Active"}});
        let t = to_table("namespaces", "", &[ns], IncludeObject::None, NOW);
        assert_eq!(cells(&t, 0), vec![json!("default"), json!("Active"), json!("120m")]);

        let lease = json!({"metadata": {"name": "edge-1"}, "spec": {"holderIdentity": "edge-1"}});
        let t = to_table("leases", "coordination.k8s.io", &[lease], IncludeObject::None, NOW);
        assert_eq!(col_names(&t), vec!["Name", "Holder", "Age"]);
        assert_eq!(cells(&t, 0)[1], json!("edge-1"));

        let crd =
            json!({"metadata": {"name": "devices.devices.kubeedge.io", "creationTimestamp": "2024-01-01T00:00:00Z"}});
        let t = to_table("customresourcedefinitions", "apiextensions.k8s.io", &[crd], IncludeObject::None, NOW);
        assert_eq!(col_names(&t), vec!["Name", "Created At"]);
        assert_eq!(t["columnDefinitions"][1]["type"], "date");
        assert_eq!(cells(&t, 0)[1], json!("2024-01-01T00:00:00Z"));

        let dev = json!({"metadata": {"name": "d1", "creationTimestamp": ago(90)}});
        let t = to_table("devices", "devices.kubeedge.io", &[dev], IncludeObject::None, NOW);
        assert_eq!(col_names(&t), vec!["Name", "Age"]);
        assert_eq!(cells(&t, 0), vec![json!("d1"), json!("90s")]);
    }

    #[test]
    fn service_table() {
        let svcs = vec![
            json!({"metadata": {"name": "kubernetes"}, "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.1",
                   "ports": [{"port": 443, "protocol": "TCP"}], "selector": {"b": "2", "a": "1"}}}),
            json!({"metadata": {"name": "np"}, "spec": {"type": "NodePort", "clusterIP": "10.96.0.2",
                   "ports": [{"port": 80, "nodePort": 30080}, {"port": 53, "protocol": "UDP"}]}}),
            json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer"}}),
            json!({"metadata": {"name": "ext"}, "spec": {"type": "ExternalName", "externalName": "example.com"}}),
        ];
        let t = to_table("services", "", &svcs, IncludeObject::None, NOW);
        assert_eq!(col_names(&t), vec!["Name", "Type", "Cluster-IP", "External-IP", "Port(s)", "Age", "Selector"]);
        assert_eq!(cells(&t, 0)[1..5], [json!("ClusterIP"), json!("10.96.0.1"), json!("<none>"), json!("443/TCP")]);
        assert_eq!(cells(&t, 0)[6], json!("a=1,b=2"));
        assert_eq!(cells(&t, 1)[4], json!("80:30080/TCP,53/UDP"));
        assert_eq!(cells(&t, 2)[2..5], [json!("<none>"), json!("<pending>"), json!("<none>")]);
        assert_eq!(cells(&t, 3)[3], json!("example.com"));
    }

    #[test]
    fn event_table_and_list_metadata() {
        let ev = json!({"metadata": {"name": "p.123"}, "type": "Warning", "reason": "BackOff",
                        "involvedObject": {"kind": "Pod", "name": "p", "fieldPath": "spec.containers{a}"},
                        "source": {"component": "kubelet", "host": "edge-1"}, "message": " Back-off \n",
                        "firstTimestamp": ago(600), "lastTimestamp": ago(10), "count": 4});
        let list = json!({"kind": "EventList", "metadata": {"resourceVersion": "77", "continue": "c"}, "items": [ev]});
        let t = table_from_list("events", "", &list, IncludeObject::None, NOW);
        assert_eq!(t["metadata"], json!({"resourceVersion": "77", "continue": "c"}));
        assert_eq!(
            col_names(&t),
            vec![
                "Last Seen",
                "Type",
                "Reason",
                "Object",
                "Subobject",
                "Source",
                "Message",
                "First Seen",
                "Count",
                "Name"
            ]
        );
        assert_eq!(
            cells(&t, 0),
            vec![
                json!("10s"),
                json!("Warning"),
                json!("BackOff"),
                json!("pod/p"),
                json!("spec.containers{a}"),
                json!("kubelet, edge-1"),
                json!("Back-off"),
                json!("10m"),
                json!(4),
                json!("p.123")
            ]
        );
        let single = table_from_list("configmaps", "", &json!({"metadata": {"name": "one"}}), IncludeObject::None, NOW);
        assert_eq!(single["rows"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn deployment_table() {
        let d = json!({"metadata": {"name": "web"}, "spec": {"replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1"}]}}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
        let t = to_table("deployments", "apps", &[d], IncludeObject::None, NOW);
        assert_eq!(
            cells(&t, 0),
            vec![
                json!("web"),
                json!("2/3"),
                json!(3),
                json!(2),
                json!("<unknown>"),
                json!("nginx"),
                json!("nginx:1"),
                json!("app=web")
            ]
        );
    }
}
