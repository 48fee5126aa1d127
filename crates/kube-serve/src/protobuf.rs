//! Decoding of Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`) into
//! JSON objects, for the kinds kubectl's typed clients send that way: `kubectl create
//! configmap|secret|namespace|serviceaccount|token`, `kubectl run` (Pod), evictions and delete
//! options.
//!
//! The envelope is the magic `k8s\0` followed by a `runtime.Unknown` message (type meta and the
//! raw object). Each supported kind is described by a small schema of field numbers taken from
//! Kubernetes' `generated.proto` files. A field the schema does not know is an error naming it,
//! never silently dropped: the client can send JSON instead.

use base64::Engine;
use serde_json::{Map, Value, json};

use crate::status::ApiError;

/// The protobuf content type.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";
const MAGIC: &[u8] = b"k8s\0";

/// Whether a Content-Type header names Kubernetes protobuf.
pub fn is_protobuf(content_type: &str) -> bool {
    content_type.split(';').next().is_some_and(|ct| ct.trim() == CONTENT_TYPE)
}

#[derive(Clone, Copy)]
enum Kind {
    Str,
    Int,
    Bool,
    Time,
    Msg(&'static Schema),
    MapStr,
    MapBytes,
    MapQuantity,
}

struct Field {
    num: u64,
    name: &'static str,
    kind: Kind,
    repeated: bool,
}

struct Schema {
    name: &'static str,
    fields: &'static [Field],
}

const fn f(num: u64, name: &'static str, kind: Kind) -> Field {
    Field { num, name, kind, repeated: false }
}

const fn r(num: u64, name: &'static str, kind: Kind) -> Field {
    Field { num, name, kind, repeated: true }
}

use Kind::*;

static OWNER_REF: Schema = Schema {
    name: "OwnerReference",
    fields: &[
        f(1, "kind", Str),
        f(3, "name", Str),
        f(4, "uid", Str),
        f(5, "apiVersion", Str),
        f(6, "controller", Bool),
        f(7, "blockOwnerDeletion", Bool),
    ],
};

static OBJECT_META: Schema = Schema {
    name: "ObjectMeta",
    fields: &[
        f(1, "name", Str),
        f(2, "generateName", Str),
        f(3, "namespace", Str),
        f(4, "selfLink", Str),
        f(5, "uid", Str),
        f(6, "resourceVersion", Str),
        f(7, "generation", Int),
        f(8, "creationTimestamp", Time),
        f(9, "deletionTimestamp", Time),
        f(10, "deletionGracePeriodSeconds", Int),
        f(11, "labels", MapStr),
        f(12, "annotations", MapStr),
        r(13, "ownerReferences", Msg(&OWNER_REF)),
        r(14, "finalizers", Str),
    ],
};

static CONFIG_MAP: Schema = Schema {
    name: "ConfigMap",
    fields: &[
        f(1, "metadata", Msg(&OBJECT_META)),
        f(2, "data", MapStr),
        f(3, "binaryData", MapBytes),
        f(4, "immutable", Bool),
    ],
};

static SECRET: Schema = Schema {
    name: "Secret",
    fields: &[
        f(1, "metadata", Msg(&OBJECT_META)),
        f(2, "data", MapBytes),
        f(3, "type", Str),
        f(4, "stringData", MapStr),
        f(5, "immutable", Bool),
    ],
};

static NAMESPACE_SPEC: Schema = Schema { name: "NamespaceSpec", fields: &[r(1, "finalizers", Str)] };
static NAMESPACE_STATUS: Schema = Schema { name: "NamespaceStatus", fields: &[f(1, "phase", Str)] };
static NAMESPACE: Schema = Schema {
    name: "Namespace",
    fields: &[
        f(1, "metadata", Msg(&OBJECT_META)),
        f(2, "spec", Msg(&NAMESPACE_SPEC)),
        f(3, "status", Msg(&NAMESPACE_STATUS)),
    ],
};

static OBJECT_REF: Schema = Schema {
    name: "ObjectReference",
    fields: &[
        f(1, "kind", Str),
        f(2, "namespace", Str),
        f(3, "name", Str),
        f(4, "uid", Str),
        f(5, "apiVersion", Str),
        f(6, "resourceVersion", Str),
        f(7, "fieldPath", Str),
    ],
};
static LOCAL_REF: Schema = Schema { name: "LocalObjectReference", fields: &[f(1, "name", Str)] };
static SERVICE_ACCOUNT: Schema = Schema {
    name: "ServiceAccount",
    fields: &[
        f(1, "metadata", Msg(&OBJECT_META)),
        r(2, "secrets", Msg(&OBJECT_REF)),
        r(3, "imagePullSecrets", Msg(&LOCAL_REF)),
        f(4, "automountServiceAccountToken", Bool),
    ],
};

static BOUND_REF: Schema = Schema {
    name: "BoundObjectReference",
    fields: &[f(1, "kind", Str), f(2, "apiVersion", Str), f(3, "name", Str), f(4, "uid", Str)],
};
static TOKEN_SPEC: Schema = Schema {
    name: "TokenRequestSpec",
    fields: &[r(1, "audiences", Str), f(3, "boundObjectRef", Msg(&BOUND_REF)), f(4, "expirationSeconds", Int)],
};
static TOKEN_STATUS: Schema =
    Schema { name: "TokenRequestStatus", fields: &[f(1, "token", Str), f(2, "expirationTimestamp", Time)] };
static TOKEN_REQUEST: Schema = Schema {
    name: "TokenRequest",
    fields: &[f(1, "metadata", Msg(&OBJECT_META)), f(2, "spec", Msg(&TOKEN_SPEC)), f(3, "status", Msg(&TOKEN_STATUS))],
};

static PRECONDITIONS: Schema =
    Schema { name: "Preconditions", fields: &[f(1, "uid", Str), f(2, "resourceVersion", Str)] };
static DELETE_OPTIONS: Schema = Schema {
    name: "DeleteOptions",
    fields: &[
        f(1, "gracePeriodSeconds", Int),
        f(2, "preconditions", Msg(&PRECONDITIONS)),
        f(3, "orphanDependents", Bool),
        f(4, "propagationPolicy", Str),
        r(5, "dryRun", Str),
    ],
};
static EVICTION: Schema = Schema {
    name: "Eviction",
    fields: &[f(1, "metadata", Msg(&OBJECT_META)), f(2, "deleteOptions", Msg(&DELETE_OPTIONS))],
};

static CONTAINER_PORT: Schema = Schema {
    name: "ContainerPort",
    fields: &[
        f(1, "name", Str),
        f(2, "hostPort", Int),
        f(3, "containerPort", Int),
        f(4, "protocol", Str),
        f(5, "hostIP", Str),
    ],
};
static ENV_VAR: Schema = Schema { name: "EnvVar", fields: &[f(1, "name", Str), f(2, "value", Str)] };
static RESOURCES: Schema =
    Schema { name: "ResourceRequirements", fields: &[f(1, "limits", MapQuantity), f(2, "requests", MapQuantity)] };
static CONTAINER: Schema = Schema {
    name: "Container",
    fields: &[
        f(1, "name", Str),
        f(2, "image", Str),
        r(3, "command", Str),
        r(4, "args", Str),
        f(5, "workingDir", Str),
        r(6, "ports", Msg(&CONTAINER_PORT)),
        r(7, "env", Msg(&ENV_VAR)),
        f(8, "resources", Msg(&RESOURCES)),
        f(13, "terminationMessagePath", Str),
        f(14, "imagePullPolicy", Str),
        f(16, "stdin", Bool),
        f(17, "stdinOnce", Bool),
        f(18, "tty", Bool),
        f(20, "terminationMessagePolicy", Str),
        f(24, "restartPolicy", Str),
    ],
};
static POD_SPEC: Schema = Schema {
    name: "PodSpec",
    fields: &[
        r(2, "containers", Msg(&CONTAINER)),
        f(3, "restartPolicy", Str),
        f(4, "terminationGracePeriodSeconds", Int),
        f(5, "activeDeadlineSeconds", Int),
        f(6, "dnsPolicy", Str),
        f(7, "nodeSelector", MapStr),
        f(8, "serviceAccountName", Str),
        f(9, "serviceAccount", Str),
        f(10, "nodeName", Str),
        f(11, "hostNetwork", Bool),
        f(12, "hostPID", Bool),
        f(13, "hostIPC", Bool),
        r(15, "imagePullSecrets", Msg(&LOCAL_REF)),
        f(16, "hostname", Str),
        f(17, "subdomain", Str),
        f(19, "schedulerName", Str),
        r(20, "initContainers", Msg(&CONTAINER)),
        f(21, "automountServiceAccountToken", Bool),
        f(24, "priorityClassName", Str),
        f(25, "priority", Int),
        f(30, "enableServiceLinks", Bool),
        f(31, "preemptionPolicy", Str),
    ],
};
static POD_STATUS: Schema = Schema { name: "PodStatus", fields: &[f(1, "phase", Str)] };
static POD: Schema = Schema {
    name: "Pod",
    fields: &[f(1, "metadata", Msg(&OBJECT_META)), f(2, "spec", Msg(&POD_SPEC)), f(3, "status", Msg(&POD_STATUS))],
};

fn schema_for(api_version: &str, kind: &str) -> Option<&'static Schema> {
    Some(match (api_version, kind) {
        ("v1", "ConfigMap") => &CONFIG_MAP,
        ("v1", "Secret") => &SECRET,
        ("v1", "Namespace") => &NAMESPACE,
        ("v1", "ServiceAccount") => &SERVICE_ACCOUNT,
        ("v1", "Pod") => &POD,
        ("authentication.k8s.io/v1", "TokenRequest") => &TOKEN_REQUEST,
        ("policy/v1", "Eviction") => &EVICTION,
        (_, "DeleteOptions") => &DELETE_OPTIONS,
        _ => return None,
    })
}

/// Decodes a protobuf request body into the equivalent JSON object (with `apiVersion` and
/// `kind`). Unsupported kinds and fields are 415 errors that say what to send instead.
pub fn decode(body: &[u8]) -> Result<Value, ApiError> {
    let rest =
        body.strip_prefix(MAGIC).ok_or_else(|| ApiError::bad_request("protobuf body lacks the k8s magic prefix"))?;
    let mut api_version = String::new();
    let mut kind = String::new();
    let mut raw: &[u8] = &[];
    for field in Reader(rest) {
        let (num, value) = field?;
        match (num, value) {
            (1, Wire::Len(tm)) => {
                for tf in Reader(tm) {
                    match tf? {
                        (1, Wire::Len(s)) => api_version = utf8(s)?,
                        (2, Wire::Len(s)) => kind = utf8(s)?,
                        _ => {}
                    }
                }
            }
            (2, Wire::Len(r)) => raw = r,
            (3, Wire::Len(enc)) if !enc.is_empty() => {
                return Err(ApiError::unsupported_media_type("protobuf with a content encoding"));
            }
            _ => {}
        }
    }
    let schema = schema_for(&api_version, &kind).ok_or_else(|| {
        ApiError::new(
            415,
            "UnsupportedMediaType",
            format!("{kind} ({api_version}) is not accepted as protobuf by this server; send application/json"),
        )
    })?;
    let mut obj = message(raw, schema)?;
    if let Value::Object(m) = &mut obj {
        m.insert("apiVersion".into(), json!(api_version));
        m.insert("kind".into(), json!(kind));
    }
    Ok(obj)
}

fn utf8(b: &[u8]) -> Result<String, ApiError> {
    String::from_utf8(b.to_vec()).map_err(|_| ApiError::bad_request("protobuf string is not UTF-8"))
}

fn message(bytes: &[u8], schema: &'static Schema) -> Result<Value, ApiError> {
    let mut out = Map::new();
    for field in Reader(bytes) {
        let (num, wire) = field?;
        let spec = schema.fields.iter().find(|f| f.num == num).ok_or_else(|| {
            ApiError::new(
                415,
                "UnsupportedMediaType",
                format!(
                    "protobuf field {num} of {} is not supported by this server; send application/json",
                    schema.name
                ),
            )
        })?;
        let value = scalar(spec, wire, schema)?;
        match spec.kind {
            MapStr | MapBytes | MapQuantity => {
                let entry = out.entry(spec.name).or_insert_with(|| json!({}));
                if let (Value::Object(m), Value::Array(kv)) = (entry, value)
                    && let [Value::String(k), v] = kv.as_slice()
                {
                    m.insert(k.clone(), v.clone());
                }
            }
            _ if spec.repeated => {
                if let Value::Array(items) = out.entry(spec.name).or_insert_with(|| json!([])) {
                    items.push(value);
                }
            }
            _ => {
                out.insert(spec.name.to_owned(), value);
            }
        }
    }
    Ok(Value::Object(out))
}

fn scalar(spec: &Field, wire: Wire<'_>, parent: &Schema) -> Result<Value, ApiError> {
    let wrong =
        || ApiError::bad_request(format!("protobuf field {} of {} has the wrong wire type", spec.name, parent.name));
    Ok(match (spec.kind, wire) {
        (Str, Wire::Len(b)) => json!(utf8(b)?),
        (Int, Wire::Varint(v)) => json!(v as i64),
        (Bool, Wire::Varint(v)) => json!(v != 0),
        (Time, Wire::Len(b)) => {
            let mut secs = 0i64;
            for tf in Reader(b) {
                if let (1, Wire::Varint(v)) = tf? {
                    secs = v as i64;
                }
            }
            json!(crate::object::format_rfc3339(secs))
        }
        (Msg(s), Wire::Len(b)) => message(b, s)?,
        (MapStr | MapBytes | MapQuantity, Wire::Len(b)) => {
            let (mut k, mut v) = (String::new(), Value::String(String::new()));
            for ef in Reader(b) {
                match ef? {
                    (1, Wire::Len(x)) => k = utf8(x)?,
                    (2, Wire::Len(x)) => {
                        v = match spec.kind {
                            MapStr => json!(utf8(x)?),
                            MapBytes => json!(base64::engine::general_purpose::STANDARD.encode(x)),
                            _ => quantity(x)?,
                        }
                    }
                    _ => {}
                }
            }
            json!([k, v])
        }
        _ => return Err(wrong()),
    })
}

fn quantity(b: &[u8]) -> Result<Value, ApiError> {
    for qf in Reader(b) {
        if let (1, Wire::Len(s)) = qf? {
            return Ok(json!(utf8(s)?));
        }
    }
    Ok(json!("0"))
}

enum Wire<'a> {
    Varint(u64),
    Len(&'a [u8]),
    Fixed,
}

/// Iterates over the (field number, value) pairs of a protobuf message.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, ApiError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.0.split_first().ok_or_else(truncated)?;
            self.0 = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(ApiError::bad_request("protobuf varint is too long"))
    }
}

fn truncated() -> ApiError {
    ApiError::bad_request("protobuf body is truncated")
}

impl<'a> Iterator for Reader<'a> {
    type Item = Result<(u64, Wire<'a>), ApiError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let item = (|| {
            let key = self.varint()?;
            let wire = match key & 7 {
                0 => Wire::Varint(self.varint()?),
                1 => {
                    self.0 = self.0.get(8..).ok_or_else(truncated)?;
                    Wire::Fixed
                }
                2 => {
                    let len = usize::try_from(self.varint()?).map_err(|_| truncated())?;
                    let (data, rest) = (self.0.get(..len).ok_or_else(truncated)?, &self.0[len..]);
                    self.0 = rest;
                    Wire::Len(data)
                }
                5 => {
                    self.0 = self.0.get(4..).ok_or_else(truncated)?;
                    Wire::Fixed
                }
                t => return Err(ApiError::bad_request(format!("protobuf wire type {t} is not supported"))),
            };
            Ok((key >> 3, wire))
        })();
        if item.is_err() {
            // Stop after the first error.
            self.0 = &[];
        }
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn len(num: u64, data: &[u8], out: &mut Vec<u8>) {
        varint(num << 3 | 2, out);
        varint(data.len() as u64, out);
        out.extend_from_slice(data);
    }

    fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
        let mut tm = Vec::new();
        len(1, api_version.as_bytes(), &mut tm);
        len(2, kind.as_bytes(), &mut tm);
        let mut unknown = Vec::new();
        len(1, &tm, &mut unknown);
        len(2, raw, &mut unknown);
        let mut out = MAGIC.to_vec();
        out.extend(unknown);
        out
    }

    #[test]
    fn decodes_a_configmap() {
        let mut meta = Vec::new();
        len(1, b"settings", &mut meta);
        let mut entry = Vec::new();
        len(1, b"app", &mut entry);
        len(2, b"web", &mut entry);
        len(11, &entry, &mut meta);
        let mut cm = Vec::new();
        len(1, &meta, &mut cm);
        let mut kv = Vec::new();
        len(1, b"mode", &mut kv);
        len(2, b"fast", &mut kv);
        len(2, &kv, &mut cm);
        varint(4 << 3, &mut cm);
        varint(1, &mut cm);
        let v = decode(&envelope("v1", "ConfigMap", &cm)).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"settings","labels":{"app":"web"}},"data":{"mode":"fast"},"immutable":true})
        );
    }

    #[test]
    fn unknown_kinds_and_fields_are_refused_clearly() {
        let e = decode(&envelope("apps/v1", "Deployment", b"")).unwrap_err();
        assert_eq!(e.code, 415);
        assert!(e.message.contains("send application/json"), "{}", e.message);
        let mut cm = Vec::new();
        len(9, b"x", &mut cm);
        let e = decode(&envelope("v1", "ConfigMap", &cm)).unwrap_err();
        assert!(e.message.contains("field 9 of ConfigMap"), "{}", e.message);
        assert_eq!(decode(b"nope").unwrap_err().code, 400);
        let mut bad = envelope("v1", "ConfigMap", b"");
        bad.push(0x0a);
        bad.push(0x7f);
        assert_eq!(decode(&bad).unwrap_err().code, 400);
    }
}
