//! The MetaManager module (`metamanager`/`meta`), as upstream's `process.go`:
//!
//! - **From the cloud** (insert, update, delete from edgecontroller, dynamiccontroller,
//!   devicecontroller): the row in `meta` (key = the edge resource, e.g. `default/pod/web`) and
//!   the MetaServer row in `meta_v2` are written in one transaction; **after the commit** the
//!   change is published to MetaServer's watches, the message is forwarded to edged (or to twin
//!   for devicecontroller), and only then is the cloud ACKed with `"OK"` — never the reverse,
//!   so nothing ACKed can be missing after a crash. Node updates are stored, not forwarded. A
//!   delete naming a UID (every delete the cloud sends) only acts if the row holds that UID: a
//!   re-created object survives an old delete, which is ACKed without touching the row, edged
//!   or DeviceTwin. A pod delete also removes the pod's stored status patch.
//! - The cloud's anti-entropy question (`kubeedge/inventory`) is answered from the database
//!   (`inventory.rs`).
//! - **From edged**: queries are answered from the local database first; a key absent locally
//!   is asked of the cloud when connected (`remoteQueryTimeout`), stored and ACKed. Inserts
//!   (node, pod, lease) go to the cloud and the reply's object is stored. Patches (podpatch,
//!   nodepatch) are stored and sent up under the same message id, so the cloud's answer
//!   reaches edged directly; offline they fail at once. Deletes and events go up as they are.
//!   Edged's compact lease renewal (`renew`, only while EdgeHub and a cloud of ours agreed on
//!   it) goes to the cloud and its answer back, nothing stored.
//! - Connection notices from EdgeHub (`node/connection`) say whether the cloud is reachable.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kubeedge_beehive::{BoxFuture, Bus, Module, ModuleContext, ModuleError};
use kubeedge_metastore::{MetaRow, MetaV2Row, Op, Store};
use kubeedge_model::constants::{group, module, resource_type};
use kubeedge_model::protocol::{edge, reply};
use kubeedge_model::{Content, Message, Operation, ResourcePath};
use serde_json::Value;
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

use super::metaserver::Remote;
use super::token;
use super::{Change, ChangeKind, Changes, gvr_of};

/// Sources whose insert/update/delete messages are cloud objects to store.
const CLOUD_SOURCES: [&str; 4] = ["edgecontroller", "dynamiccontroller", "devicecontroller", "policycontroller"];
/// Query types that may be fetched from the cloud when absent locally.
const REMOTE_QUERY_TYPES: [&str; 8] = [
    resource_type::CONFIGMAP,
    resource_type::SECRET,
    resource_type::PERSISTENT_VOLUME,
    resource_type::PERSISTENT_VOLUME_CLAIM,
    resource_type::VOLUME_ATTACHMENT,
    resource_type::SERVICE_ACCOUNT_TOKEN,
    resource_type::LEASE,
    resource_type::CA_CRT,
];

/// MetaManager as a bus module.
pub struct MetaManagerModule {
    store: Store,
    changes: Changes,
    connected: Arc<AtomicBool>,
    node: String,
    remote_timeout: Duration,
    metaserver: Option<kubeedge_config::edgecore::MetaServer>,
    /// MetaServer's listener, bound by `prepare`; a restart after a failure binds again.
    listener: Option<TcpListener>,
}

impl MetaManagerModule {
    /// A module over `store`; `metaserver` is MetaServer's config when it is enabled.
    pub fn new(
        store: Store,
        node: String,
        remote_timeout: Duration,
        metaserver: Option<kubeedge_config::edgecore::MetaServer>,
    ) -> Self {
        let (changes, _) = tokio::sync::broadcast::channel(super::CHANGES_CAP);
        Self {
            store,
            changes,
            connected: Arc::new(AtomicBool::new(false)),
            node,
            remote_timeout,
            metaserver,
            listener: None,
        }
    }

    /// The change feed (tests subscribe to it).
    pub fn changes(&self) -> Changes {
        self.changes.clone()
    }
}

/// The content as text to store: JSON-in-a-string unwrapped, nested JSON as is.
fn stored_value(content: &Content) -> String {
    match content.as_str() {
        Some(s) if content.is_string() => s.into_owned(),
        _ => content.raw().to_owned(),
    }
}

#[derive(serde::Deserialize, Default)]
struct Meta {
    #[serde(default)]
    uid: String,
    #[serde(default, rename = "resourceVersion")]
    resource_version: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
}

#[derive(serde::Deserialize, Default)]
struct Head {
    #[serde(default)]
    metadata: Meta,
}

fn head(value: &str) -> Head {
    serde_json::from_str(value).unwrap_or_default()
}

fn error_to(msg: &Message, text: &str) -> Message {
    let mut e = Message::error_response_to(msg, text);
    e.router.source = module::METAMANAGER.to_owned();
    e
}

/// Upstream-bound sends go to EdgeHub's group.
async fn up(bus: &Bus, msg: Message) {
    if bus.send_to_group(group::HUB, msg).await.is_err() {
        debug!("No EdgeHub to send upstream.");
    }
}

struct Worker {
    store: Store,
    changes: Changes,
    connected: Arc<AtomicBool>,
    bus: Bus,
    remote_timeout: Duration,
}

impl Worker {
    /// Objects an older edgecore left in `meta` alone (v1.15 wrote `meta_v2` only for what its
    /// MetaServer listed): given their `meta_v2` row once, at start, so MetaServer serves what
    /// the node holds. Rows that have one are left as they are.
    async fn backfill_v2(&self) {
        let mut ops = Vec::new();
        for (ty, _) in super::GVRS {
            let rows = match self.store.list_by_type(ty).await {
                Ok(rows) => rows,
                Err(e) => {
                    warn!(ty, error = %e, "Reading the meta store for meta_v2 rows failed.");
                    continue;
                }
            };
            for row in rows {
                let Ok(path) = ResourcePath::parse(&row.key) else { continue };
                let (row_ops, change) = self.object_ops(&path, &Operation::Insert, &row.value).await;
                if change.is_some_and(|c| c.kind == ChangeKind::Added) {
                    ops.extend(row_ops.into_iter().filter(|op| matches!(op, Op::UpsertV2(_))));
                }
            }
        }
        if ops.is_empty() {
            return;
        }
        let n = ops.len();
        match self.store.apply(ops).await {
            Ok(()) => info!(rows = n, "Added the meta_v2 rows an older edgecore did not write."),
            Err(e) => warn!(error = %e, "Adding meta_v2 rows for an older edgecore's objects failed."),
        }
    }

    /// Tokens an earlier edgecore of ours stored per account (`ns/serviceaccounttoken/name`),
    /// which could hand one pod's token to another: removed, fetched again per pod when used.
    async fn drop_legacy_tokens(&self) {
        let Ok(rows) = self.store.list_by_type(resource_type::SERVICE_ACCOUNT_TOKEN).await else { return };
        let ops: Vec<Op> =
            rows.into_iter().filter(|r| !r.key.starts_with('"')).map(|r| Op::DeleteMeta { key: r.key }).collect();
        let n = ops.len();
        if n > 0 && self.store.apply(ops).await.is_ok() {
            info!(rows = n, "Removed service-account tokens stored per account by an older edgecore.");
        }
    }

    /// The `meta` and `meta_v2` writes for a cloud object, and the change they make.
    async fn object_ops(&self, path: &ResourcePath, op: &Operation, value: &str) -> (Vec<Op>, Option<Change>) {
        let key = path.to_string();
        let ty = path.resource_type.as_str();
        let h = head(value);
        let gvr = gvr_of(ty);
        let name = path.name.clone().unwrap_or_else(|| h.metadata.name.clone());
        let ns = path.namespace().map(str::to_owned).unwrap_or_else(|| h.metadata.namespace.clone());
        let v2_key = gvr.map(|g| g.key(&ns, &name));
        let before = match &v2_key {
            Some(k) => self.store.get_v2(k).await.ok().flatten(),
            None => None,
        };
        let mut ops = Vec::new();
        let mut change = None;
        if *op == Operation::Delete {
            if ty == resource_type::POD && !h.metadata.uid.is_empty() {
                ops.push(Op::DeleteMetaIfValueContains { key: key.clone(), needle: h.metadata.uid.clone() });
                ops.push(Op::DeleteMeta { key: format!("{}/{}/{name}", path.namespace, resource_type::POD_PATCH) });
            } else if !h.metadata.uid.is_empty() {
                // A delete names the object it removes: a newer one under the same name
                // (re-created while a repair was on its way) stays.
                ops.push(Op::DeleteMetaIfValueContains { key: key.clone(), needle: h.metadata.uid.clone() });
            } else {
                ops.push(Op::DeleteMeta { key: key.clone() });
            }
            if let (Some(k), Some(row)) = (v2_key, before) {
                let same = h.metadata.uid.is_empty() || head(&row.value).metadata.uid == h.metadata.uid;
                if same {
                    ops.push(Op::DeleteV2 { key: k });
                    change = Some(Change { kind: ChangeKind::Deleted, row });
                }
            }
            return (ops, change);
        }
        ops.push(Op::UpsertMeta(MetaRow { key, ty: ty.to_owned(), value: value.to_owned() }));
        if let (Some(g), Some(k)) = (gvr, v2_key) {
            let mut v: Value = serde_json::from_str(value).unwrap_or(Value::Null);
            if let Some(m) = v.as_object_mut() {
                m.entry("apiVersion").or_insert_with(|| g.api_version().into());
                m.entry("kind").or_insert_with(|| g.kind.into());
            }
            let row = MetaV2Row {
                key: k,
                gvr: g.column(),
                namespace: if g.namespaced { ns } else { String::new() },
                name,
                resource_version: h.metadata.resource_version.parse().unwrap_or(0),
                value: v.to_string(),
            };
            let kind = if before.is_some() { ChangeKind::Modified } else { ChangeKind::Added };
            ops.push(Op::UpsertV2(row.clone()));
            change = Some(Change { kind, row });
        }
        (ops, change)
    }

    /// Whether the `meta` row at `key` holds an object other than the one a delete's `value`
    /// names by uid (false when the delete names none, or the row is absent).
    async fn holds_another(&self, key: &str, value: &str) -> bool {
        let uid = head(value).metadata.uid;
        if uid.is_empty() {
            return false;
        }
        let row = self.store.get(key).await.ok().flatten();
        row.is_some_and(|r| head(&r.value).metadata.uid != uid)
    }

    /// An object from the cloud: commit, publish, forward, then ACK.
    async fn store_cloud_object(&self, msg: Message) {
        let Ok(path) = ResourcePath::parse(&msg.router.resource) else {
            warn!(resource = %msg.router.resource, "Dropped a cloud message with a malformed resource.");
            return;
        };
        let value = stored_value(&msg.content);
        let op = msg.operation();
        if op != Operation::Delete && serde_json::from_str::<Value>(&value).is_err() {
            warn!(resource = %msg.router.resource, "Dropped a cloud message whose content is not JSON.");
            return;
        }
        if op == Operation::Delete && self.holds_another(&msg.router.resource, &value).await {
            // A delete of an object this name no longer holds (it was re-created, and the new
            // one arrived first): nothing to remove, nothing to tell edged or DeviceTwin.
            debug!(resource = %msg.router.resource, "A delete names an object no longer held; ACKed only.");
            up(&self.bus, edge::ack(&msg)).await;
            return;
        }
        let (ops, change) = self.object_ops(&path, &op, &value).await;
        if let Err(e) = self.store.apply(ops).await {
            // Not ACKed: the cloud sends it again.
            warn!(resource = %msg.router.resource, error = %e, "Storing a cloud message failed; not ACKed.");
            return;
        }
        if let Some(c) = change {
            let _ = self.changes.send(Arc::new(c));
        }
        let ty = path.resource_type.as_str();
        if ty != resource_type::NODE {
            let target = if msg.router.source == "devicecontroller" { group::TWIN } else { group::EDGED };
            if !self.bus.group_members(target).is_empty() {
                let mut fwd = msg.clone();
                fwd.router.source = module::METAMANAGER.to_owned();
                if target == group::TWIN {
                    fwd.router.group = group::TWIN.to_owned();
                }
                let _ = self.bus.send_to_group(target, fwd).await;
            }
        }
        up(&self.bus, edge::ack(&msg)).await;
    }

    /// A query from a local module: the database first, then the cloud.
    async fn query(&self, msg: Message) {
        if kubeedge_model::protocol::inventory::is_request(&msg) {
            return self.inventory(msg).await;
        }
        let Ok(path) = ResourcePath::parse(&msg.router.resource) else {
            let _ = self.bus.send_resp(error_to(&msg, "malformed resource"));
            return;
        };
        if path.resource_type == resource_type::SERVICE_ACCOUNT_TOKEN {
            return self.token_query(msg, &path).await;
        }
        let local = if path.name.is_some() {
            self.store.get(&msg.router.resource).await.ok().flatten().map(|r| vec![r.value])
        } else {
            self.store
                .list_by_type(&path.resource_type)
                .await
                .ok()
                .map(|rows| rows.into_iter().map(|r| r.value).collect())
        };
        let ty = path.resource_type.as_str();
        let remote_ok = REMOTE_QUERY_TYPES.contains(&ty) && self.connected.load(Ordering::Relaxed);
        match local {
            Some(values) if !values.is_empty() || !remote_ok => self.reply_stored(&msg, &values),
            None if !remote_ok => {
                let _ = self.bus.send_resp(error_to(&msg, "not found locally and the cloud is not reachable"));
            }
            _ => self.remote(msg, true).await,
        }
    }

    /// The cloud asks what this node holds (anti-entropy): answered from the database.
    async fn inventory(&self, msg: Message) {
        use kubeedge_model::protocol::inventory;
        let request: inventory::Request = msg.content.decode().unwrap_or_default();
        match super::inventory::collect(&self.store, &request).await {
            Ok(inv) => {
                debug!(objects = inv.len(), "Answering the cloud's inventory question.");
                up(&self.bus, inventory::answer(&msg, &inv)).await;
            }
            Err(e) => warn!(error = %e, "Reading the inventory failed; the cloud asks again later."),
        }
    }

    /// A service-account token: the stored one while it is fresh (or, offline, until it
    /// expires), else a new one from the cloud. Keyed as upstream keys it, per bound pod.
    async fn token_query(&self, msg: Message, path: &ResourcePath) {
        let request: Value = msg.content.decode().unwrap_or(Value::Null);
        let key = token::key(path.name.as_deref().unwrap_or_default(), &path.namespace, &request);
        let row = self.store.get(&key).await.ok().flatten();
        let stored = row.as_ref().and_then(|r| serde_json::from_str::<Value>(&r.value).ok());
        let now = kubeedge_kube_serve::time::now_unix();
        let connected = self.connected.load(Ordering::Relaxed);
        let usable = row.filter(|_| stored.as_ref().is_some_and(|t| !token::expired(t, now)));
        let fresh = stored.as_ref().is_some_and(|t| !token::requires_refresh(t, now));
        match usable {
            // Fresh, or offline and not expired: the stored token.
            Some(row) if fresh || !connected => self.reply_stored(&msg, &[row.value]),
            None if !connected => {
                let _ = self.bus.send_resp(error_to(&msg, "no valid token stored and the cloud is not reachable"));
            }
            // Missing or due for refresh: a new one from the cloud.
            usable => self.remote_token(&msg, key, usable.map(|r| r.value)).await,
        }
    }

    /// Answers a local query from the database, as upstream does: a JSON array of stored values.
    fn reply_stored(&self, msg: &Message, values: &[String]) {
        let mut r = Message::response_to(msg, Content::json(&values).unwrap_or_else(|_| Content::null()));
        r.router.source = module::METAMANAGER.to_owned();
        let _ = self.bus.send_resp(r);
    }

    /// Sends `msg` up as edged wrote it (source and group kept, as upstream's edge does) under
    /// a fresh id, and waits for the cloud's reply.
    async fn ask_cloud(&self, msg: &Message) -> Result<Message, kubeedge_beehive::BusError> {
        let mut req = Message::build(
            &msg.router.source,
            &msg.router.group,
            msg.router.resource.clone(),
            &msg.router.operation,
            msg.content.clone(),
        );
        req.header.resource_version = msg.header.resource_version.clone();
        self.bus.send_sync(module::EDGEHUB, req, self.remote_timeout).await
    }

    /// Hands the cloud's reply to the local caller, ACKing it first when it came through the
    /// cloud's ACK path.
    async fn answer_with(&self, msg: &Message, reply: &Message) {
        if edge::reply_needs_ack(reply) {
            up(&self.bus, edge::ack(reply)).await;
        }
        let mut answer = Message::response_to(msg, reply.content.clone());
        answer.router.source = module::METAMANAGER.to_owned();
        answer.header.resource_version = reply.header.resource_version.clone();
        let _ = self.bus.send_resp(answer);
    }

    /// Asks the cloud for a new token and stores it under `key`. If none comes, a `stored`
    /// token still valid is the answer (as kubelet's token manager does), else what the cloud
    /// said.
    async fn remote_token(&self, msg: &Message, key: String, stored: Option<String>) {
        let reply = match self.ask_cloud(msg).await {
            Ok(reply) => reply,
            Err(e) => {
                match stored {
                    Some(v) => self.reply_stored(msg, &[v]),
                    None => {
                        let _ = self.bus.send_resp(error_to(msg, &format!("the cloud did not answer: {e}")));
                    }
                }
                return;
            }
        };
        let obj = reply::object_of(&reply).unwrap_or(Value::Null);
        let issued = obj.pointer("/status/token").and_then(Value::as_str).is_some_and(|t| !t.is_empty());
        match stored {
            Some(v) if !issued => self.reply_stored(msg, &[v]),
            _ => {
                if issued {
                    self.store_token(key, &obj).await;
                }
                self.answer_with(msg, &reply).await;
            }
        }
    }

    /// Stores a token the cloud issued under its upstream key, and drops expired ones.
    async fn store_token(&self, key: String, obj: &Value) {
        let now = kubeedge_kube_serve::time::now_unix();
        let mut ops: Vec<Op> = match self.store.list_by_type(resource_type::SERVICE_ACCOUNT_TOKEN).await {
            Ok(rows) => rows
                .into_iter()
                .filter(|r| serde_json::from_str::<Value>(&r.value).map_or(true, |t| token::expired(&t, now)))
                // Only if still the value read: a concurrent refresh of that row is kept.
                .map(|r| Op::DeleteMetaIfValueContains { key: r.key, needle: r.value })
                .collect(),
            Err(_) => Vec::new(),
        };
        ops.push(Op::UpsertMeta(MetaRow {
            key,
            ty: resource_type::SERVICE_ACCOUNT_TOKEN.to_owned(),
            value: obj.to_string(),
        }));
        if let Err(e) = self.store.apply(ops).await {
            warn!(error = %e, "Storing a service-account token failed.");
        }
    }

    /// Asks the cloud under a fresh id; stores what comes back; answers the local caller.
    async fn remote(&self, msg: Message, store_reply: bool) {
        if !self.connected.load(Ordering::Relaxed) {
            let _ = self.bus.send_resp(error_to(&msg, "the cloud is not reachable"));
            return;
        }
        let reply = match self.ask_cloud(&msg).await {
            Ok(r) => r,
            Err(e) => {
                let _ = self.bus.send_resp(error_to(&msg, &format!("the cloud did not answer: {e}")));
                return;
            }
        };
        if store_reply && let Ok(path) = ResourcePath::parse(&msg.router.resource) {
            // An ObjectResp's object, or the object itself; never an error (nor `"OK"`).
            let obj = reply::object_of(&reply).ok().filter(Value::is_object);
            // Never over a newer copy: the cloud may have pushed a later version while this
            // answer was on its way.
            let incoming: Option<u64> =
                obj.as_ref().and_then(|o| o.pointer("/metadata/resourceVersion")?.as_str()?.parse().ok());
            let stored: Option<u64> = match self.store.get(&msg.router.resource).await {
                Ok(Some(row)) => head(&row.value).metadata.resource_version.parse().ok(),
                _ => None,
            };
            let stale = matches!((incoming, stored), (Some(i), Some(s)) if i < s);
            if let Some(obj) = obj.filter(|o| !o.is_null() && !stale) {
                let (ops, change) = self.object_ops(&path, &Operation::Update, &obj.to_string()).await;
                if self.store.apply(ops).await.is_ok()
                    && let Some(c) = change
                {
                    let _ = self.changes.send(Arc::new(c));
                }
            }
        }
        self.answer_with(&msg, &reply).await;
    }

    /// A status patch: stored, then sent up under the same id.
    async fn patch(&self, msg: Message) {
        if !self.connected.load(Ordering::Relaxed) {
            let _ = self.bus.send_resp(error_to(&msg, "the cloud is not reachable"));
            return;
        }
        let ty = ResourcePath::parse(&msg.router.resource).map(|p| p.resource_type).unwrap_or_default();
        let row = MetaRow { key: msg.router.resource.clone(), ty, value: stored_value(&msg.content) };
        if let Err(e) = self.store.apply(vec![Op::UpsertMeta(row)]).await {
            warn!(error = %e, "Storing a status patch failed.");
        }
        up(&self.bus, msg).await;
    }

    /// A local update that is kept here and reported up.
    async fn local_update(&self, msg: Message) {
        if let Ok(path) = ResourcePath::parse(&msg.router.resource) {
            let (ops, change) = self.object_ops(&path, &Operation::Update, &stored_value(&msg.content)).await;
            if self.store.apply(ops).await.is_ok()
                && let Some(c) = change
            {
                let _ = self.changes.send(Arc::new(c));
            }
        }
        let mut fwd = msg.clone();
        fwd.header.id = uuid_like();
        up(&self.bus, fwd).await;
        let mut r = Message::response_to(&msg, reply::ok());
        r.router.source = module::METAMANAGER.to_owned();
        let _ = self.bus.send_resp(r);
    }
}

/// MetaServer's listening socket; the error names the address and the config field.
async fn bind_metaserver(cfg: &kubeedge_config::edgecore::MetaServer) -> Result<TcpListener, ModuleError> {
    let addr = super::metaserver::bind_address(cfg).map_err(|e| format!("metaServer.server: {e}"))?;
    Ok(TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr} (modules.metaManager.metaServer.server): {e}"))?)
}

fn uuid_like() -> String {
    Message::new().header.id
}

impl Module for MetaManagerModule {
    fn name(&self) -> &'static str {
        module::METAMANAGER
    }

    fn group(&self) -> &'static str {
        group::META
    }

    fn prepare(&mut self) -> BoxFuture<'_, Result<(), ModuleError>> {
        Box::pin(async move {
            if let Some(cfg) = &self.metaserver {
                self.listener = Some(bind_metaserver(cfg).await?);
            }
            Ok(())
        })
    }

    fn run<'a>(&'a mut self, ctx: &'a mut ModuleContext) -> BoxFuture<'a, Result<(), ModuleError>> {
        Box::pin(async move {
            let w = Arc::new(Worker {
                store: self.store.clone(),
                changes: self.changes.clone(),
                connected: self.connected.clone(),
                bus: ctx.bus.clone(),
                remote_timeout: self.remote_timeout,
            });
            w.backfill_v2().await;
            w.drop_legacy_tokens().await;
            let stop = ctx.shutdown().child_token();
            let _guard = stop.clone().drop_guard();
            if let Some(cfg) = &self.metaserver {
                let opts = super::metaserver::Options::for_config(cfg).map_err(|e| format!("metaServer: {e}"))?;
                let listener = match self.listener.take() {
                    Some(l) => l,
                    None => bind_metaserver(cfg).await?,
                };
                info!(address = %listener.local_addr()?, "MetaServer listening.");
                let remote = Remote::new(ctx.bus.clone(), self.connected.clone(), self.node.clone());
                let (store, changes, stop) = (self.store.clone(), self.changes.clone(), stop.clone());
                ctx.spawn(async move {
                    if let Err(e) = super::metaserver::serve_with(listener, store, changes, remote, stop, opts).await {
                        warn!(error = %e, "MetaServer stopped.");
                    }
                });
            }
            while let Some(msg) = ctx.recv().await {
                if let Some(up) = edge::connection_state(&msg) {
                    self.connected.store(up, Ordering::Relaxed);
                    debug!(connected = up, "Cloud connection changed.");
                    continue;
                }
                let op = msg.operation();
                let from_cloud = CLOUD_SOURCES.contains(&msg.router.source.as_str());
                let ty = ResourcePath::parse(&msg.router.resource).map(|p| p.resource_type).unwrap_or_default();
                if ty == resource_type::EVENT && !from_cloud {
                    up(&w.bus, msg).await;
                    continue;
                }
                match op {
                    Operation::Insert | Operation::Update | Operation::Delete if from_cloud => {
                        w.store_cloud_object(msg).await;
                    }
                    Operation::Query => {
                        let w = w.clone();
                        ctx.spawn(async move { w.query(msg).await });
                    }
                    Operation::Insert => {
                        let w = w.clone();
                        ctx.spawn(async move { w.remote(msg, true).await });
                    }
                    Operation::Update => {
                        let w = w.clone();
                        if ty == resource_type::LEASE {
                            ctx.spawn(async move { w.remote(msg, true).await });
                        } else {
                            w.local_update(msg).await;
                        }
                    }
                    Operation::Patch => w.patch(msg).await,
                    Operation::Renew => {
                        let w = w.clone();
                        ctx.spawn(async move { w.remote(msg, false).await });
                    }
                    // Offline, the sender hears so at once (Edged retries its deletes).
                    Operation::Delete if !w.connected.load(Ordering::Relaxed) => {
                        let _ = w.bus.send_resp(error_to(&msg, "the cloud is not reachable"));
                    }
                    Operation::Delete => up(&w.bus, msg).await,
                    _ => debug!(%op, resource = %msg.router.resource, "MetaManager ignored a message."),
                }
            }
            Ok(())
        })
    }
}
