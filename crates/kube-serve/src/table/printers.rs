//! Column definitions per resource kind (after kube-apiserver's `printers.go`): which columns
//! a `Table` of pods, nodes, services, events or deployments has, and which row function fills
//! them. Any other kind gets `Name` and `Age`.

use serde_json::{Value, json};

use super::rows::{age, deployment_row, event_row, map_len, node_row, pod_row, service_row, text};

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

/// A plain text column (`type: string`, no format), the kind most columns are.
fn text_col(name: &str, description: &str, priority: i32) -> Value {
    col(name, "string", "", description, priority)
}

fn name_col() -> Value {
    col("Name", "string", "name", NAME_DESC, 0)
}

fn age_col() -> Value {
    text_col("Age", AGE_DESC, 0)
}

/// A row function: an object and "now" to its cells plus optional row conditions.
type RowFn = fn(&Value, i64) -> (Vec<Value>, Option<Value>);

/// A printer: column definitions and a row function.
pub(super) struct Printer {
    pub(super) columns: Vec<Value>,
    pub(super) row: RowFn,
}

pub(super) fn printer(resource: &str, group: &str) -> Printer {
    match (group, resource) {
        ("", "pods") => Printer {
            columns: vec![
                name_col(),
                text_col("Ready", "The aggregate readiness state of this pod for accepting traffic.", 0),
                text_col("Status", "The aggregate status of the containers in this pod.", 0),
                text_col(
                    "Restarts",
                    "The number of times the containers in this pod have been restarted and when the last container \
                     in this pod has restarted.",
                    0,
                ),
                age_col(),
                text_col("IP", "IP address allocated to the pod. Routable at least within the cluster.", 1),
                text_col("Node", "NodeName indicates in which node this pod is scheduled.", 1),
                text_col("Nominated Node", "nominatedNodeName is set when this pod preempts other pods.", 1),
                text_col("Readiness Gates", "If specified, all readiness gates will be evaluated.", 1),
            ],
            row: pod_row,
        },
        ("", "nodes") => Printer {
            columns: vec![
                name_col(),
                text_col("Status", "The status of the node", 0),
                text_col("Roles", "The roles of the node", 0),
                age_col(),
                text_col("Version", "Kubelet Version reported by the node.", 0),
                text_col("Internal-IP", "List of addresses reachable to the node.", 1),
                text_col("External-IP", "List of addresses reachable to the node.", 1),
                text_col("OS-Image", "OS Image reported by the node from /etc/os-release.", 1),
                text_col("Kernel-Version", "Kernel Version reported by the node from 'uname -r'.", 1),
                text_col("Container-Runtime", "Container runtime version reported by the node.", 1),
            ],
            row: node_row,
        },
        ("", "namespaces") => Printer {
            columns: vec![name_col(), text_col("Status", "The status of the namespace", 0), age_col()],
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
                text_col("Type", "The type of the secret", 0),
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
                text_col("Type", "The type of the service", 0),
                text_col("Cluster-IP", "The cluster IP of the service", 0),
                text_col("External-IP", "The external IP of the service", 0),
                text_col("Port(s)", "The ports of the service", 0),
                age_col(),
                text_col("Selector", "The label selector of the service", 1),
            ],
            row: service_row,
        },
        ("", "events") => Printer {
            columns: vec![
                text_col("Last Seen", "Time when this Event was last observed.", 0),
                text_col("Type", "Type of this event (Normal, Warning).", 0),
                text_col("Reason", "Short, machine understandable string that gives the reason.", 0),
                text_col("Object", "The object that this event is about.", 0),
                text_col("Subobject", "The field path of the object this event is about.", 1),
                text_col("Source", "The component reporting this event.", 1),
                text_col("Message", "A human-readable description of the status of this operation.", 0),
                text_col("First Seen", "The time at which the event was first recorded.", 1),
                text_col("Count", "The number of times this event has occurred.", 1),
                col("Name", "string", "name", NAME_DESC, 1),
            ],
            row: event_row,
        },
        ("coordination.k8s.io", "leases") => Printer {
            columns: vec![name_col(), text_col("Holder", "The holder of the lease", 0), age_col()],
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
                text_col("Ready", "Number of the pod with ready state", 0),
                text_col("Up-to-date", "Total number of non-terminated pods targeted by this deployment.", 0),
                text_col("Available", "Total number of available pods targeted by this deployment.", 0),
                age_col(),
                text_col("Containers", "Names of each container in the template.", 1),
                text_col("Images", "Images referenced by each container in the template.", 1),
                text_col("Selector", "Label selector for pods.", 1),
            ],
            row: deployment_row,
        },
        _ => Printer {
            columns: vec![name_col(), age_col()],
            row: |o, now| (vec![json!(text(o, "/metadata/name")), age(o, now)], None),
        },
    }
}
