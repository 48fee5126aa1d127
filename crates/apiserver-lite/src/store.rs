//! The in-memory object store: one global, monotonic resourceVersion, objects by resource type,
//! namespace and name, a bounded event history per resource type for watches that resume from
//! a version, and a broadcast of every change.
//!
//! All state sits behind one mutex, held only for in-memory work (never across an await): a
//! write, its resourceVersion and its event are one atomic step, so watchers see changes in
//! version order with no gaps.
//!
//! Objects are kept as compact JSON ([`Object`]), each version once: the map entry, the
//! history event and the broadcast share it. The history is a window per resource type, as
//! kube-apiserver's watch cache keeps one per type: lease renewals do not push pod events out.
//! Each window holds at most `history` events, and all of them together about `history_bytes`
//! of objects (the oldest event of any type goes first); a watch that resumes from a version
//! that has left its type's window gets 410 Gone ("too old resource version") and relists.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;

use kubeedge_kube_serve::status::ApiError;
use kubeedge_kube_serve::time;
use kubeedge_kube_serve::watch::EventType;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::defaults;
pub use crate::object::Object;
use crate::registry::{self, ResourceType};

/// Events kept per resource type for watches that resume from a resourceVersion; older ones
/// get 410 Gone. (kube-apiserver's watch cache keeps 100 to 102,400 per type, sized to hold
/// the last 75 seconds.)
pub const DEFAULT_HISTORY: usize = 50_000;
/// About how many bytes of objects the histories of all types hold together at most.
pub const DEFAULT_HISTORY_BYTES: usize = 256 << 20;
/// What a history event costs besides its object's JSON (the event, its queue slot), for the
/// byte bound.
const EVENT_OVERHEAD: usize = 96;
/// The longest grace period honoured (a year); larger requests are cut to it.
const MAX_GRACE_SECONDS: i64 = 365 * 86_400;
/// Events buffered per watcher before it is considered too slow and closed (it then relists).
const BROADCAST_CAPACITY: usize = 16_384;

/// A resource type's storage key: (group, plural).
pub type TypeKey = (String, String);

/// One change.
#[derive(Debug)]
pub struct Event {
    /// The resourceVersion of the change.
    pub rv: u64,
    /// Which resource type (shared by every event of the type).
    pub key: Arc<TypeKey>,
    /// Added, Modified or Deleted.
    pub kind: EventType,
    /// The object after the change (for Deleted: its last state, with the new resourceVersion).
    pub object: Object,
    /// The object before the change, for selector transitions (the previous event's object,
    /// shared).
    pub previous: Option<Object>,
}

/// The history of one resource type.
struct Window {
    key: Arc<TypeKey>,
    /// Oldest first, in resourceVersion order.
    events: VecDeque<Arc<Event>>,
    /// A watch may resume from this version or a later one: every event of the type after it
    /// is still here.
    floor: u64,
}

#[derive(Default)]
struct State {
    rv: u64,
    objects: HashMap<TypeKey, BTreeMap<(String, String), Object>>,
    /// Served types by (group, version, plural).
    types: HashMap<(String, String, String), Arc<ResourceType>>,
    windows: HashMap<TypeKey, Window>,
    /// What the windows hold, as counted against the byte bound.
    history_bytes: usize,
    /// The version of the last [`Store::compact`]: the oldest any watch or continued list may
    /// resume from.
    compacted: u64,
}

/// A watch's beginning: the backlog to send first, the version it starts at, and the live feed.
pub type WatchStart = (Backlog, u64, broadcast::Receiver<Arc<Event>>);

/// Options of a delete.
#[derive(Debug, Default, Clone)]
pub struct DeleteOptions {
    /// `gracePeriodSeconds`.
    pub grace: Option<i64>,
    /// `preconditions.uid`.
    pub uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub resource_version: Option<String>,
}

impl DeleteOptions {
    /// Reads a DeleteOptions body (if any) and the `gracePeriodSeconds` query parameter.
    pub fn parse(body: &[u8], query_grace: Option<i64>) -> Result<Self, ApiError> {
        let mut opts = Self { grace: query_grace, ..Self::default() };
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(opts);
        }
        let v: Value = if body.starts_with(b"k8s\0") {
            kubeedge_kube_serve::protobuf::decode(body)?
        } else {
            serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?
        };
        if let Some(g) = v.get("gracePeriodSeconds").and_then(Value::as_i64) {
            opts.grace = Some(g);
        }
        if v.get("dryRun").and_then(Value::as_array).is_some_and(|d| !d.is_empty()) {
            return Err(ApiError::bad_request("dry runs (dryRun=All) are not supported by apiserver-lite"));
        }
        let s = |p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_owned);
        opts.uid = s("/preconditions/uid");
        opts.resource_version = s("/preconditions/resourceVersion");
        Ok(opts)
    }
}

/// The in-memory store. Cheap to share behind an `Arc`.
pub struct Store {
    state: Mutex<State>,
    events: broadcast::Sender<Arc<Event>>,
    /// Events kept per type.
    history_limit: usize,
    /// Bytes kept by all types together, about.
    history_bytes_limit: usize,
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

/// Whether a stored object has a deletionTimestamp (only its metadata is parsed).
fn terminating(obj: &Object) -> bool {
    obj.project(&["metadata".to_owned()]).pointer("/metadata/deletionTimestamp").is_some()
}

/// Five characters as kube-apiserver's `generateName` uses (no vowels, no confusable digits).
pub fn random_suffix() -> String {
    use rand::RngExt;
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

/// Whether two objects differ outside `metadata` and `status` (a spec change bumps generation).
/// Compared as Go compares its structs: a `false`, `0`, `""` or empty value is the same as an
/// absent one (a Go client's protobuf body carries every such value; its JSON omits them).
fn spec_changed(a: &Value, b: &Value) -> bool {
    fn strip(v: &Value) -> BTreeMap<&String, Value> {
        match v {
            Value::Object(m) => m
                .iter()
                .filter(|(k, _)| *k != "metadata" && *k != "status")
                .map(|(k, v)| (k, go_zero_pruned(v)))
                .collect(),
            _ => BTreeMap::new(),
        }
    }
    strip(a) != strip(b)
}

/// `v` without the values Go's JSON leaves out when they are zero: `null`, `false`, `0`, `""`,
/// and objects and lists left empty by that.
fn go_zero_pruned(v: &Value) -> Value {
    fn zero(v: &Value) -> bool {
        match v {
            Value::Null => true,
            Value::Bool(b) => !b,
            Value::Number(n) => n.as_f64() == Some(0.0),
            Value::String(s) => s.is_empty(),
            Value::Array(a) => a.is_empty(),
            Value::Object(m) => m.is_empty(),
        }
    }
    match v {
        Value::Object(m) => {
            Value::Object(m.iter().map(|(k, v)| (k.clone(), go_zero_pruned(v))).filter(|(_, v)| !zero(v)).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(go_zero_pruned).collect()),
        other => other.clone(),
    }
}

impl Store {
    /// A store serving the built-in types, with the `default`, `kube-system`, `kube-public` and
    /// `kube-node-lease` namespaces (each with its `default` service account and
    /// `kube-root-ca.crt` configmap holding `ca_pem`).
    /// `history` events are kept per type, and about `history_bytes` of objects in all.
    pub fn new(history: usize, history_bytes: usize, ca_pem: &str) -> Self {
        let (events, _) = broadcast::channel(BROADCAST_CAPACITY);
        let store = Self {
            state: Mutex::new(State::default()),
            events,
            history_limit: history.max(1),
            history_bytes_limit: history_bytes,
        };
        {
            let mut st = store.state.lock();
            for t in registry::builtins() {
                st.types.insert((t.group.clone(), t.version.clone(), t.plural.clone()), Arc::new(t));
            }
        }
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let _ = store.create_namespace_with_defaults(ns, ca_pem);
        }
        store
    }

    /// Creates a namespace and what the controllers would add to it.
    pub fn create_namespace_with_defaults(&self, name: &str, ca_pem: &str) -> Result<(), ApiError> {
        let ns_type = self.resolve("", "v1", "namespaces").ok_or_else(|| ApiError::internal("no namespaces"))?;
        self.create(&ns_type, None, json!({"apiVersion":"v1","kind":"Namespace","metadata":{"name":name}}))?;
        self.namespace_added(name, ca_pem);
        Ok(())
    }

    /// What the service-account and root-CA controllers do for a new namespace.
    pub fn namespace_added(&self, ns: &str, ca_pem: &str) {
        if let Some(sa) = self.resolve("", "v1", "serviceaccounts") {
            let _ = self.create(
                &sa,
                Some(ns),
                json!({"apiVersion":"v1","kind":"ServiceAccount","metadata":{"name":"default"}}),
            );
        }
        if let Some(cm) = self.resolve("", "v1", "configmaps") {
            let obj = json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"kube-root-ca.crt"},"data":{"ca.crt":ca_pem}});
            let _ = self.create(&cm, Some(ns), obj);
        }
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.state.lock().rv
    }

    /// A served type by group, version and plural (or `plural/subresource` is not accepted here).
    pub fn resolve(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.state.lock().types.get(&(group.to_owned(), version.to_owned(), plural.to_owned())).cloned()
    }

    /// Every served type.
    pub fn types(&self) -> Vec<Arc<ResourceType>> {
        let mut v: Vec<_> = self.state.lock().types.values().cloned().collect();
        v.sort_by(|a, b| (&a.group, &a.version, &a.plural).cmp(&(&b.group, &b.version, &b.plural)));
        v
    }

    fn key(t: &ResourceType) -> TypeKey {
        (t.group.clone(), t.plural.clone())
    }

    fn ns_key(t: &ResourceType, ns: Option<&str>) -> Result<String, ApiError> {
        match (t.namespaced, ns) {
            (true, Some(ns)) => Ok(ns.to_owned()),
            (true, None) => Err(ApiError::bad_request("the namespace of the object does not match the request")),
            (false, _) => Ok(String::new()),
        }
    }

    /// Records a change under the lock: bumps the version, stamps it, encodes the object once,
    /// stores it, and emits the event.
    fn commit(
        &self,
        st: &mut State,
        t: &ResourceType,
        ns: &str,
        name: &str,
        kind: EventType,
        mut obj: Value,
    ) -> Object {
        st.rv += 1;
        let rv = st.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let obj = Object::encode(&obj);
        let key = Self::key(t);
        let slot = st.objects.entry(key.clone()).or_default();
        let k = (ns.to_owned(), name.to_owned());
        let previous = if kind == EventType::Deleted { slot.remove(&k) } else { slot.insert(k, obj.clone()) };
        let floor = st.compacted;
        let window = st.windows.entry(key).or_insert_with_key(|key| Window {
            key: Arc::new(key.clone()),
            events: VecDeque::new(),
            floor,
        });
        let event = Arc::new(Event { rv, key: window.key.clone(), kind, object: obj.clone(), previous });
        window.events.push_back(event.clone());
        st.history_bytes += obj.len() + EVENT_OVERHEAD;
        if window.events.len() > self.history_limit
            && let Some(old) = window.events.pop_front()
        {
            window.floor = old.rv;
            st.history_bytes -= old.object.len() + EVENT_OVERHEAD;
        }
        while st.history_bytes > self.history_bytes_limit && Self::evict_oldest(st, rv) {}
        // No receivers is fine.
        let _ = self.events.send(event);
        obj
    }

    /// Drops the oldest history event of any type, unless that is the event of `newest` (one
    /// event is always kept). Returns whether one was dropped.
    fn evict_oldest(st: &mut State, newest: u64) -> bool {
        let Some(window) = st
            .windows
            .values_mut()
            .filter(|w| w.events.front().is_some_and(|e| e.rv < newest))
            .min_by_key(|w| w.events.front().map_or(u64::MAX, |e| e.rv))
        else {
            return false;
        };
        let Some(old) = window.events.pop_front() else { return false };
        window.floor = old.rv;
        st.history_bytes -= old.object.len() + EVENT_OVERHEAD;
        true
    }

    /// The stored object, or 404.
    fn current(st: &State, t: &ResourceType, ns_key: &str, name: &str) -> Result<Object, ApiError> {
        st.objects
            .get(&Self::key(t))
            .and_then(|m| m.get(&(ns_key.to_owned(), name.to_owned())))
            .cloned()
            .ok_or_else(|| ApiError::not_found(&t.group_resource(), name))
    }

    /// Reads one object.
    pub fn get(&self, t: &ResourceType, ns: Option<&str>, name: &str) -> Result<Object, ApiError> {
        let ns_key = Self::ns_key(t, ns)?;
        Self::current(&self.state.lock(), t, &ns_key, name)
    }

    /// Lists objects in `ns` (all namespaces when `None`) that pass `filter`, sorted by
    /// namespace and name, starting after `after`, at most `limit`. Returns the items, the
    /// list resourceVersion, and how many matching objects follow the page. With `count_rest`
    /// false that is only 0 or 1: the scan stops at the first one (a selector parses every
    /// object it looks at, and kube-apiserver leaves `remainingItemCount` out with one).
    pub fn list(
        &self,
        t: &ResourceType,
        ns: Option<&str>,
        after: Option<&(String, String)>,
        limit: Option<usize>,
        filter: &dyn Fn(&Object) -> bool,
        count_rest: bool,
    ) -> (Vec<Object>, u64, usize) {
        let st = self.state.lock();
        let mut items = Vec::new();
        let mut remaining = 0;
        if let Some(m) = st.objects.get(&Self::key(t)) {
            // Keys sort by namespace, then name: a namespace, and a page after a key, are ranges.
            let start = match (after, ns) {
                (Some(a), Some(n)) if a.0.as_str() < n => Bound::Included((n.to_owned(), String::new())),
                (Some(a), _) => Bound::Excluded(a.clone()),
                (None, Some(n)) => Bound::Included((n.to_owned(), String::new())),
                (None, None) => Bound::Unbounded,
            };
            let range = m.range((start, Bound::Unbounded)).take_while(|((o_ns, _), _)| ns.is_none_or(|n| n == o_ns));
            for (_, v) in range {
                if !filter(v) {
                    continue;
                }
                if limit.is_some_and(|l| items.len() >= l) {
                    remaining += 1;
                    if !count_rest {
                        break;
                    }
                } else {
                    items.push(v.clone());
                }
            }
        }
        (items, st.rv, remaining)
    }

    /// Creates an object: name or generateName, uid, creationTimestamp, generation, defaults.
    pub fn create(&self, t: &ResourceType, ns: Option<&str>, mut obj: Value) -> Result<Object, ApiError> {
        if !obj.is_object() {
            return Err(ApiError::bad_request("the body must be a JSON object"));
        }
        let ns_key = Self::ns_key(t, ns)?;
        if !obj.get("metadata").is_some_and(Value::is_object) {
            obj["metadata"] = json!({});
        }
        if let Some(body_ns) = meta_str(&obj, "namespace")
            && t.namespaced
            && !body_ns.is_empty()
            && body_ns != ns_key
        {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let mut st = self.state.lock();
        let name = match meta_str(&obj, "name").filter(|n| !n.is_empty()) {
            Some(n) => n.to_owned(),
            None => match meta_str(&obj, "generateName").filter(|n| !n.is_empty()) {
                Some(prefix) => format!("{prefix}{}", random_suffix()),
                None => {
                    return Err(ApiError::invalid(
                        &t.kind,
                        "",
                        vec![("metadata.name".to_owned(), "name or generateName is required".to_owned())],
                    ));
                }
            },
        };
        if let Err(e) = validate_name(&name) {
            return Err(ApiError::invalid(&t.kind, &name, vec![("metadata.name".to_owned(), e.to_string())]));
        }
        if t.namespaced {
            let ns_exists = st
                .objects
                .get(&(String::new(), "namespaces".to_owned()))
                .and_then(|m| m.get(&(String::new(), ns_key.clone())));
            match ns_exists {
                None => return Err(ApiError::not_found("namespaces", &ns_key)),
                Some(n) if terminating(n) => {
                    return Err(ApiError::forbidden(format!(
                        "{} \"{name}\" is forbidden: unable to create new content in namespace {ns_key} because it is being terminated",
                        t.group_resource()
                    )));
                }
                Some(_) => {}
            }
        }
        if st.objects.get(&Self::key(t)).is_some_and(|m| m.contains_key(&(ns_key.clone(), name.clone()))) {
            return Err(ApiError::already_exists(&t.group_resource(), &name));
        }
        obj["apiVersion"] = json!(t.api_version());
        obj["kind"] = json!(t.kind);
        let meta = &mut obj["metadata"];
        meta["name"] = json!(name);
        if t.namespaced {
            meta["namespace"] = json!(ns_key);
        } else if let Some(m) = meta.as_object_mut() {
            m.remove("namespace");
        }
        meta["uid"] = json!(uuid::Uuid::new_v4().to_string());
        meta["creationTimestamp"] = json!(time::now());
        meta["generation"] = json!(1);
        if let Some(m) = meta.as_object_mut() {
            m.remove("deletionTimestamp");
            m.remove("deletionGracePeriodSeconds");
            m.remove("resourceVersion");
        }
        // Status is the server's (or a controller's) to write: dropped on create, as
        // kube-apiserver's create strategies do, except for nodes (the kubelet registers with
        // its status) and namespaces (defaulted below).
        if t.has_status()
            && t.kind != "Node"
            && t.kind != "Namespace"
            && let Some(m) = obj.as_object_mut()
        {
            m.remove("status");
        }
        if t.group.is_empty() || t.group == "apiextensions.k8s.io" {
            defaults::apply(&t.kind, &mut obj);
        }
        if t.kind == "CustomResourceDefinition" {
            let new_types = registry::from_crd(&obj)
                .map_err(|m| ApiError::invalid(&t.kind, &name, vec![("spec".to_owned(), m)]))?;
            for nt in new_types {
                st.types.insert((nt.group.clone(), nt.version.clone(), nt.plural.clone()), Arc::new(nt));
            }
            let names = obj["spec"]["names"].clone();
            obj["status"] = json!({
                "acceptedNames": names,
                "storedVersions": obj["spec"]["versions"].as_array().map(|vs| vs.iter().filter(|v| v["storage"] == true).map(|v| v["name"].clone()).collect::<Vec<_>>()).unwrap_or_default(),
                "conditions": [
                    {"type":"NamesAccepted","status":"True","reason":"NoConflicts","message":"no conflicts found","lastTransitionTime": time::now()},
                    {"type":"Established","status":"True","reason":"InitialNamesAccepted","message":"the initial names have been accepted","lastTransitionTime": time::now()}
                ]
            });
        }
        Ok(self.commit(&mut st, t, &ns_key, &name, EventType::Added, obj))
    }

    /// Read-modify-write of one object under the lock. `change` gets the current object and
    /// returns the new one; resourceVersion preconditions, immutable metadata, generation and
    /// finalizer-driven removal are handled here. `status_only` writes only `.status` (the
    /// status subresource); otherwise, for types with a status subresource, `.status` is kept.
    pub fn update(
        &self,
        t: &ResourceType,
        ns: Option<&str>,
        name: &str,
        status_only: bool,
        change: impl FnOnce(&Value) -> Result<Value, ApiError>,
    ) -> Result<Object, ApiError> {
        let ns_key = Self::ns_key(t, ns)?;
        let st = self.state.lock();
        let stored = Self::current(&st, t, &ns_key, name)?;
        let current = stored.value();
        let mut new = change(&current)?;
        if !new.is_object() {
            return Err(ApiError::bad_request("the body must be a JSON object"));
        }
        if let Some(rv) = meta_str(&new, "resourceVersion").filter(|rv| !rv.is_empty())
            && Some(rv) != meta_str(&current, "resourceVersion")
        {
            return Err(ApiError::conflict(
                &t.group_resource(),
                name,
                "the object has been modified; please apply your changes to the latest version and try again",
            ));
        }
        if meta_str(&new, "name").is_some_and(|n| n != name) {
            return Err(ApiError::bad_request("the name of the object does not match the name on the URL"));
        }
        if let Some(uid) = meta_str(&new, "uid").filter(|u| !u.is_empty())
            && Some(uid) != meta_str(&current, "uid")
        {
            return Err(ApiError::conflict(
                &t.group_resource(),
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta_str(&current, "uid").unwrap_or_default()
                ),
            ));
        }
        if status_only {
            // Only `.status` is written: the rest stays the current object's, so there is
            // nothing else to check, and the write is a no-op when the status is the same.
            let status = new.get_mut("status").map(Value::take);
            if current.get("status") == status.as_ref() {
                return Ok(stored);
            }
            let old = (t.kind == "CustomResourceDefinition").then(|| current.clone());
            let mut new = current;
            match status {
                Some(s) => new["status"] = s,
                None => {
                    if let Some(m) = new.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
            return self.write_updated(st, t, &ns_key, name, old.as_ref(), new);
        }
        if t.has_status() {
            match current.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    if let Some(m) = new.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
        }
        // Immutable and server-owned fields.
        new["apiVersion"] = current["apiVersion"].clone();
        new["kind"] = current["kind"].clone();
        if !new.get("metadata").is_some_and(Value::is_object) {
            new["metadata"] = json!({});
        }
        for f in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ] {
            match current["metadata"].get(f) {
                Some(v) => new["metadata"][f] = v.clone(),
                None => {
                    if let Some(m) = new["metadata"].as_object_mut() {
                        m.remove(f);
                    }
                }
            }
        }
        if t.kind == "Pod" {
            // Pod specs are mostly immutable; allow what kube-apiserver allows (images,
            // tolerations additions, activeDeadlineSeconds) and the scheduler's binding.
            let (old_spec, new_spec) = (&current["spec"], &new["spec"]);
            let mut a = old_spec.clone();
            let mut b = new_spec.clone();
            for s in [&mut a, &mut b] {
                for list in ["containers", "initContainers"] {
                    if let Some(cs) = s.get_mut(list).and_then(Value::as_array_mut) {
                        for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                            c.remove("image");
                        }
                    }
                }
                if let Some(m) = s.as_object_mut() {
                    m.remove("tolerations");
                    m.remove("activeDeadlineSeconds");
                }
            }
            // Binding (pods/binding) sets the node once.
            if old_spec.get("nodeName").and_then(Value::as_str).is_none_or(str::is_empty)
                && let Some(m) = a.as_object_mut()
            {
                m.remove("nodeName");
                if let Some(n) = b.as_object_mut() {
                    n.remove("nodeName");
                }
            }
            if go_zero_pruned(&a) != go_zero_pruned(&b) {
                return Err(ApiError::invalid(
                    "Pod",
                    name,
                    vec![("spec".to_owned(), "Forbidden: pod updates may not change fields other than `spec.containers[*].image`, `spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` (only additions to existing tolerations)".to_owned())],
                ));
            }
        }
        if spec_changed(&current, &new) {
            let g = current["metadata"]["generation"].as_i64().unwrap_or(1);
            new["metadata"]["generation"] = json!(g + 1);
        }
        // The new version is compared with the current one as if it kept its resourceVersion
        // (commit stamps the new one anyway).
        new["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
        if new == current {
            // A no-op write does not bump the resourceVersion (as kube-apiserver).
            return Ok(stored);
        }
        self.write_updated(st, t, &ns_key, name, Some(&current), new)
    }

    /// The end of [`Store::update`]: commits the new version, or removes the object when it
    /// is terminating and nothing holds it any more. `old` is the current version (needed for
    /// CRDs only).
    fn write_updated(
        &self,
        mut st: parking_lot::MutexGuard<'_, State>,
        t: &ResourceType,
        ns_key: &str,
        name: &str,
        old: Option<&Value>,
        new: Value,
    ) -> Result<Object, ApiError> {
        let terminating = new.pointer("/metadata/deletionTimestamp").is_some();
        let finalizers_empty =
            new.pointer("/metadata/finalizers").and_then(Value::as_array).is_none_or(|f| f.is_empty());
        let grace_done = new.pointer("/metadata/deletionGracePeriodSeconds").and_then(Value::as_i64).unwrap_or(0) == 0;
        // A namespace goes only when it is empty (finalize_namespace decides).
        if terminating && finalizers_empty && grace_done && t.kind != "Namespace" {
            let obj = self.commit(&mut st, t, ns_key, name, EventType::Deleted, new);
            if t.kind == "CustomResourceDefinition" {
                self.crd_changed(&mut st, old, None);
            }
            drop(st);
            self.after_delete(ns_key);
            return Ok(obj);
        }
        if t.kind == "CustomResourceDefinition" {
            registry::from_crd(&new).map_err(|m| ApiError::invalid(&t.kind, name, vec![("spec".to_owned(), m)]))?;
            self.crd_changed(&mut st, old, Some(&new));
        }
        Ok(self.commit(&mut st, t, ns_key, name, EventType::Modified, new))
    }

    /// Deletes an object as kube-apiserver does: preconditions, finalizers hold it with a
    /// deletionTimestamp, a pod bound to a node is given its grace period and removed when the
    /// node deletes it again with grace 0. Returns the object and whether it is gone.
    pub fn delete(
        &self,
        t: &ResourceType,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<(Object, bool), ApiError> {
        let ns_key = Self::ns_key(t, ns)?;
        let mut st = self.state.lock();
        let stored = Self::current(&st, t, &ns_key, name)?;
        let current = stored.value();
        if opts.uid.as_deref().is_some_and(|u| Some(u) != meta_str(&current, "uid")) {
            return Err(ApiError::conflict(
                &t.group_resource(),
                name,
                &format!(
                    "Precondition failed: UID in precondition: {}, UID in object meta: {}",
                    opts.uid.as_deref().unwrap_or_default(),
                    meta_str(&current, "uid").unwrap_or_default()
                ),
            ));
        }
        if opts.resource_version.as_deref().is_some_and(|rv| Some(rv) != meta_str(&current, "resourceVersion")) {
            return Err(ApiError::conflict(
                &t.group_resource(),
                name,
                "Precondition failed: resourceVersion does not match",
            ));
        }
        let has_finalizers =
            current.pointer("/metadata/finalizers").and_then(Value::as_array).is_some_and(|f| !f.is_empty());
        let grace = if t.kind == "Pod" {
            let bound = current.pointer("/spec/nodeName").and_then(Value::as_str).is_some_and(|n| !n.is_empty());
            let phase = current.pointer("/status/phase").and_then(Value::as_str).unwrap_or_default();
            if !bound || phase == "Succeeded" || phase == "Failed" {
                0
            } else {
                opts.grace
                    .unwrap_or_else(|| {
                        current.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_i64).unwrap_or(30)
                    })
                    .clamp(0, MAX_GRACE_SECONDS)
            }
        } else {
            0
        };
        let already = current.pointer("/metadata/deletionTimestamp").is_some();
        if t.kind == "Namespace" {
            let obj = if already {
                stored
            } else {
                let mut obj = current;
                obj["metadata"]["deletionTimestamp"] = json!(time::now());
                obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
                obj["status"]["phase"] = json!("Terminating");
                self.commit(&mut st, t, &ns_key, name, EventType::Modified, obj)
            };
            drop(st);
            self.drain_namespace(name);
            let gone = self.finalize_namespace(name);
            return Ok((obj, gone));
        }
        if has_finalizers || grace > 0 {
            let current_grace = current.pointer("/metadata/deletionGracePeriodSeconds").and_then(Value::as_i64);
            if already && current_grace.is_some_and(|g| g <= grace) {
                return Ok((stored, false));
            }
            let mut obj = current;
            obj["metadata"]["deletionTimestamp"] =
                json!(time::format_unix(time::now_unix().saturating_add(grace.max(0))));
            obj["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
            let obj = self.commit(&mut st, t, &ns_key, name, EventType::Modified, obj);
            return Ok((obj, false));
        }
        let obj = self.commit(&mut st, t, &ns_key, name, EventType::Deleted, current.clone());
        if t.kind == "CustomResourceDefinition" {
            self.crd_changed(&mut st, Some(&current), None);
        }
        drop(st);
        self.after_delete(&ns_key);
        Ok((obj, true))
    }

    /// After an object is gone: its namespace may now be empty and terminating.
    fn after_delete(&self, ns: &str) {
        if !ns.is_empty() {
            self.finalize_namespace(ns);
        }
    }

    /// Keeps the served types in step with a CRD: `old` → `new` (None: deleted, which also
    /// deletes every custom object of versions no longer served).
    fn crd_changed(&self, st: &mut State, old: Option<&Value>, new: Option<&Value>) {
        let old_types = old.and_then(|o| registry::from_crd(o).ok()).unwrap_or_default();
        let new_types = new.and_then(|n| registry::from_crd(n).ok()).unwrap_or_default();
        for ot in &old_types {
            st.types.remove(&(ot.group.clone(), ot.version.clone(), ot.plural.clone()));
        }
        for nt in &new_types {
            st.types.insert((nt.group.clone(), nt.version.clone(), nt.plural.clone()), Arc::new(nt.clone()));
        }
        if new_types.is_empty()
            && let Some(ct) = old_types.first()
        {
            let objects: Vec<_> = st
                .objects
                .get(&Self::key(ct))
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default();
            for ((o_ns, o_name), v) in objects {
                self.commit(st, ct, &o_ns, &o_name, EventType::Deleted, v.value());
            }
        }
    }

    /// Deletes everything in a terminating namespace (pods on nodes get their grace period).
    fn drain_namespace(&self, ns: &str) {
        let types: Vec<_> = self.types().into_iter().filter(|t| t.namespaced).collect();
        let mut seen = std::collections::HashSet::new();
        for t in types {
            if !seen.insert(Self::key(&t)) {
                continue;
            }
            let (items, _, _) = self.list(&t, Some(ns), None, None, &|_| true, true);
            for item in items {
                if let Some(name) = meta_str(&item.project(&["metadata".to_owned()]), "name") {
                    let _ = self.delete(&t, Some(ns), name, &DeleteOptions::default());
                }
            }
        }
    }

    /// Removes a terminating namespace once nothing is left in it. Returns whether it is gone.
    pub fn finalize_namespace(&self, ns: &str) -> bool {
        let Some(ns_type) = self.resolve("", "v1", "namespaces") else { return false };
        let mut st = self.state.lock();
        let Some(obj) =
            st.objects.get(&Self::key(&ns_type)).and_then(|m| m.get(&(String::new(), ns.to_owned()))).cloned()
        else {
            return true;
        };
        if !terminating(&obj) {
            return false;
        }
        let empty = st
            .objects
            .iter()
            .filter(|((_, plural), _)| plural != "namespaces")
            .all(|(_, m)| !m.keys().any(|(o_ns, _)| o_ns == ns));
        if !empty {
            return false;
        }
        self.commit(&mut st, &ns_type, "", ns, EventType::Deleted, obj.value());
        true
    }

    /// The oldest resourceVersion a watch or a continued list may resume from.
    pub fn compacted(&self) -> u64 {
        self.state.lock().compacted
    }

    /// Forgets the event history, as an etcd compaction does: every watch that resumes from an
    /// older resourceVersion then gets 410 Gone and must relist.
    pub fn compact(&self) {
        let mut st = self.state.lock();
        let rv = st.rv;
        st.compacted = rv;
        for w in st.windows.values_mut() {
            w.events.clear();
            w.floor = rv;
        }
        st.history_bytes = 0;
    }

    /// Starts a watch of one type: the events after `from` still in its history (or, with no
    /// version, synthetic ADDED events for the current objects), and a receiver of later ones.
    /// A version older than the type's history gives 410 Gone.
    pub fn watch(&self, t: &ResourceType, from: Option<u64>) -> Result<WatchStart, ApiError> {
        let st = self.state.lock();
        let rx = self.events.subscribe();
        let key = Self::key(t);
        let window = st.windows.get(&key);
        let backlog = match from {
            None => Backlog::Current {
                key: window.map_or_else(|| Arc::new(key.clone()), |w| w.key.clone()),
                rv: st.rv,
                objects: st
                    .objects
                    .get(&key)
                    .map(|m| m.values().cloned().collect::<Vec<_>>())
                    .unwrap_or_default()
                    .into_iter(),
            },
            Some(rv) => {
                let floor = window.map_or(st.compacted, |w| w.floor.max(st.compacted));
                if rv < floor {
                    return Err(ApiError::gone(format!("too old resource version: {rv} ({})", floor + 1)));
                }
                let events = window.map_or_else(Vec::new, |w| {
                    let first = w.events.partition_point(|e| e.rv <= rv);
                    w.events.range(first..).cloned().collect()
                });
                Backlog::History(events.into_iter())
            }
        };
        Ok((backlog, st.rv, rx))
    }
}

/// What a new watch sends before the live feed, made one event at a time as it is sent.
pub enum Backlog {
    /// The current objects, as ADDED events at the watch's version.
    Current {
        /// Their type.
        key: Arc<TypeKey>,
        /// The version the watch starts at.
        rv: u64,
        /// The objects not sent yet.
        objects: std::vec::IntoIter<Object>,
    },
    /// The history events after the version the watch resumes from.
    History(std::vec::IntoIter<Arc<Event>>),
}

impl Iterator for Backlog {
    type Item = Arc<Event>;

    fn next(&mut self) -> Option<Arc<Event>> {
        match self {
            Backlog::Current { key, rv, objects } => {
                let object = objects.next()?;
                Some(Arc::new(Event { rv: *rv, key: key.clone(), kind: EventType::Added, object, previous: None }))
            }
            Backlog::History(events) => events.next(),
        }
    }
}

/// An object name that breaks the DNS-1123 subdomain rules.
#[derive(Debug, thiserror::Error)]
#[error(
    "Invalid value: {0:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or \
     '.', and must start and end with an alphanumeric character"
)]
struct InvalidName(String);

/// DNS-1123 subdomain rules, which most object names follow.
fn validate_name(name: &str) -> Result<(), InvalidName> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.' || c == ':')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok { Ok(()) } else { Err(InvalidName(name.to_owned())) }
}
