//! Watches: MetaManager's committed changes, kept in a short replay history, streamed as
//! `{"type":…,"object":…}` lines with kube-apiserver's resourceVersion semantics.
//!
//! - Unset or `"0"` resourceVersion (or `sendInitialEvents=true`): ADDED for every matching
//!   stored object, then changes. A number: changes after it, replayed from the history; a
//!   version older than the history reaches is answered with an ERROR event carrying
//!   `410 Expired`, so clients re-list (kube-rs watchers and client-go reflectors do).
//! - Label and field selectors follow objects in and out: an object modified into the selection
//!   arrives as ADDED, one modified out of it as DELETED, as kube-apiserver sends them.
//! - BOOKMARK events every [`Options::bookmark_interval`](super::Options) when allowed, and the
//!   `k8s.io/initial-events-end` bookmark after the initial events of a `sendInitialEvents=true`
//!   watch.
//! - A watcher too slow for the change feed is ended with `410`, to re-list.
//!
//! One task ([`Hub::run`]) takes MetaManager's broadcast, decodes each object once, appends it
//! to the history and re-broadcasts it under the history lock, so a new watcher's backlog and
//! live feed neither overlap nor leave a gap.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use kubeedge_kube_serve::request::ListOptions;
use kubeedge_kube_serve::status::ApiError;
use kubeedge_kube_serve::table::{self, AcceptKind, IncludeObject};
use kubeedge_kube_serve::time;
use kubeedge_kube_serve::watch::{EventType, bookmark, encode_event, initial_events_end_bookmark};
use kubeedge_metastore::Store;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::objects::{Filter, from_row};
use super::read::store_error;
use super::server::{Body, Req, partial_metadata};
use crate::metamanager::{Change, ChangeKind, GVRS, Gvr};

/// A watch with no `timeoutSeconds` ends after this long (kube-apiserver: 30–60 min).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

/// A committed change of a served resource, decoded once for every watcher.
pub(crate) struct Event {
    kind: ChangeKind,
    gvr: Gvr,
    key: String,
    namespace: String,
    name: String,
    rv: u64,
    object: Value,
    /// Bytes of the stored JSON, for the history's budget.
    size: usize,
    /// The event line as JSON watchers without selectors see it, encoded by the first.
    line: OnceLock<Bytes>,
}

/// What the hub broadcasts to watchers.
#[derive(Clone)]
pub(crate) enum HubEvent {
    /// A change.
    Change(Arc<Event>),
    /// Changes were lost (the hub fell behind MetaManager): every watcher must re-list.
    Reset,
}

struct History {
    events: VecDeque<Arc<Event>>,
    bytes: usize,
    /// Changes at or below this version may be missing from `events`.
    floor: u64,
}

/// The change feed with its replay history.
pub(crate) struct Hub {
    /// The served resources by their `meta_v2` GVR column.
    columns: Vec<(String, Gvr)>,
    history: Mutex<History>,
    tx: broadcast::Sender<HubEvent>,
    cap: usize,
    bytes_cap: usize,
}

impl Hub {
    /// A hub whose history starts at `floor`, the store's version when the feed was subscribed;
    /// a watcher more than `feed_cap` events behind is ended.
    pub(crate) fn new(floor: u64, cap: usize, bytes_cap: usize, feed_cap: usize) -> Arc<Self> {
        let (tx, _) = broadcast::channel(feed_cap.max(1));
        let columns = GVRS.iter().map(|(_, g)| (g.column(), *g)).collect();
        let history = Mutex::new(History { events: VecDeque::new(), bytes: 0, floor });
        Arc::new(Self { columns, history, tx, cap, bytes_cap })
    }

    /// Follows MetaManager's changes until shutdown (or until MetaManager's channel closes).
    pub(crate) async fn run(
        self: Arc<Self>,
        mut rx: broadcast::Receiver<Arc<Change>>,
        store: Store,
        shutdown: CancellationToken,
    ) {
        loop {
            let received = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = rx.recv() => r,
            };
            match received {
                Ok(change) => self.publish(&change),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    warn!(missed, "MetaServer's change feed fell behind; open watches must re-list.");
                    let current = match store.max_resource_version().await {
                        Ok(rv) => rv,
                        Err(e) => {
                            let _ = store_error(e);
                            u64::MAX
                        }
                    };
                    self.reset(current);
                }
                Err(broadcast::error::RecvError::Closed) => {
                    info!("MetaManager's change feed closed; watches end.");
                    self.reset(u64::MAX);
                    return;
                }
            }
        }
    }

    fn publish(&self, change: &Change) {
        let row = &change.row;
        let Some(gvr) = self.columns.iter().find(|(c, _)| *c == row.gvr).map(|(_, g)| *g) else {
            return;
        };
        let Some(object) = from_row(&gvr, row) else {
            warn!(key = %row.key, "Skipped a change whose object is not a JSON object.");
            return;
        };
        let event = Arc::new(Event {
            kind: change.kind,
            gvr,
            key: row.key.clone(),
            namespace: row.namespace.clone(),
            name: row.name.clone(),
            rv: row.resource_version,
            object,
            size: row.value.len(),
            line: OnceLock::new(),
        });
        let mut h = self.history.lock();
        h.events.push_back(event.clone());
        h.bytes += event.size;
        while h.events.len() > self.cap || (h.bytes > self.bytes_cap && !h.events.is_empty()) {
            let Some(old) = h.events.pop_front() else { break };
            h.bytes -= old.size;
            h.floor = h.floor.max(old.rv);
        }
        // Sent under the lock: a watcher subscribing now gets this event either in its backlog
        // or live, never both. No receivers is not an error.
        let _ = self.tx.send(HubEvent::Change(event));
    }

    fn reset(&self, current: u64) {
        let mut h = self.history.lock();
        let newest = h.events.iter().map(|e| e.rv).max().unwrap_or(0);
        h.events.clear();
        h.bytes = 0;
        h.floor = h.floor.max(current).max(newest);
        let _ = self.tx.send(HubEvent::Reset);
    }

    /// A new watcher: the kept changes after `from` (none without `from`) and the live feed.
    /// A `from` older than the history reaches is 410 Expired.
    fn subscribe(&self, from: Option<u64>) -> Result<(Vec<Arc<Event>>, broadcast::Receiver<HubEvent>), ApiError> {
        let h = self.history.lock();
        let backlog = match from {
            Some(from) if from < h.floor => {
                return Err(ApiError::too_old_resource_version(&from.to_string(), &h.floor.to_string()));
            }
            Some(from) => h.events.iter().filter(|e| e.rv > from).cloned().collect(),
            None => Vec::new(),
        };
        Ok((backlog, self.tx.subscribe()))
    }
}

// === the stream ===

/// How events are shown.
enum Format {
    Json,
    Table { version: &'static str, include: IncludeObject, columns_sent: bool },
    Partial { version: &'static str },
}

/// Whether a watcher's client holds an object (for selector transitions).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Seen {
    Present,
    Absent,
    Unknown,
}

/// Which events a watcher gets.
struct Selection {
    gvr: Gvr,
    namespace: Option<String>,
    name: Option<String>,
    filter: Filter,
    /// ADDED and MODIFIED events at or below this version are already reflected.
    min_rv: u64,
    /// Per key, what the client holds, when a selector can move objects in and out; keys not
    /// in the map are in the `default` state.
    seen: HashMap<String, Seen>,
    default: Seen,
}

impl Selection {
    /// The event type this watcher should see for a change, if any.
    fn classify(
        &mut self,
        kind: ChangeKind,
        key: &str,
        namespace: &str,
        name: &str,
        rv: u64,
        obj: &Value,
    ) -> Option<EventType> {
        if self.namespace.as_deref().is_some_and(|ns| ns != namespace)
            || self.name.as_deref().is_some_and(|n| n != name)
        {
            return None;
        }
        if kind != ChangeKind::Deleted && rv <= self.min_rv {
            return None;
        }
        let now = self.filter.matches(obj);
        if !self.filter.is_selective() {
            return Some(match kind {
                ChangeKind::Added => EventType::Added,
                ChangeKind::Modified => EventType::Modified,
                ChangeKind::Deleted => EventType::Deleted,
            });
        }
        let before = self.seen.get(key).copied().unwrap_or(self.default);
        let (ty, after) = match (kind, now, before) {
            (ChangeKind::Deleted, _, _) => {
                (if now || before == Seen::Present { Some(EventType::Deleted) } else { None }, Seen::Absent)
            }
            (_, true, Seen::Absent) => (Some(EventType::Added), Seen::Present),
            (ChangeKind::Added, true, _) => (Some(EventType::Added), Seen::Present),
            (ChangeKind::Modified, true, _) => (Some(EventType::Modified), Seen::Present),
            (ChangeKind::Modified, false, Seen::Present | Seen::Unknown) => (Some(EventType::Deleted), Seen::Absent),
            (_, false, _) => (None, Seen::Absent),
        };
        self.remember(key, after);
        ty
    }

    fn remember(&mut self, key: &str, state: Seen) {
        if state == self.default {
            self.seen.remove(key);
        } else {
            self.seen.insert(key.to_owned(), state);
        }
    }
}

/// An open watch: the first events, then the live feed.
struct Live {
    selection: Selection,
    format: Format,
    first: VecDeque<Bytes>,
    rx: broadcast::Receiver<HubEvent>,
    bookmarks: bool,
    /// The highest version this watcher has passed (for bookmarks).
    last_rv: u64,
    tick: tokio::time::Interval,
    deadline: Pin<Box<tokio::time::Sleep>>,
    shutdown: CancellationToken,
    done: bool,
}

impl Live {
    /// The next line to write, or `None` when the watch ends.
    async fn next_frame(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        if let Some(f) = self.first.pop_front() {
            return Some(f);
        }
        loop {
            tokio::select! {
                ev = self.rx.recv() => match ev {
                    Ok(HubEvent::Change(ev)) => {
                        if let Some(f) = self.frame(&ev) {
                            return Some(f);
                        }
                    }
                    Ok(HubEvent::Reset) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        // Changes were missed: end with 410 so the client re-lists.
                        self.done = true;
                        let err = ApiError::gone("the watch fell too far behind the change feed; relist");
                        return Some(Bytes::from(encode_event(EventType::Error, &err.to_status())));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                _ = self.tick.tick(), if self.bookmarks => return Some(self.bookmark_line()),
                _ = &mut self.deadline => return None,
                _ = self.shutdown.cancelled() => return None,
            }
        }
    }

    fn bookmark_line(&self) -> Bytes {
        let rv = self.last_rv.to_string();
        let object = match self.format {
            Format::Partial { version } => bookmark("PartialObjectMetadata", &format!("meta.k8s.io/{version}"), &rv),
            _ => bookmark(self.selection.gvr.kind, &self.selection.gvr.api_version(), &rv),
        };
        Bytes::from(encode_event(EventType::Bookmark, &object))
    }

    /// The line for one change as this watcher should see it, or `None`.
    fn frame(&mut self, ev: &Event) -> Option<Bytes> {
        // Every change of every resource passes here in order, so a bookmark may claim all of
        // them: a quiet resource's watcher then resumes from a recent version, not one the
        // history has long forgotten.
        self.last_rv = self.last_rv.max(ev.rv);
        if ev.gvr != self.selection.gvr {
            return None;
        }
        let ty = self.selection.classify(ev.kind, &ev.key, &ev.namespace, &ev.name, ev.rv, &ev.object)?;
        if matches!(self.format, Format::Json) && ty == event_type(ev.kind) {
            return Some(ev.line.get_or_init(|| Bytes::from(encode_event(ty, &ev.object))).clone());
        }
        Some(self.encode(ty, &ev.object))
    }

    fn encode(&mut self, ty: EventType, obj: &Value) -> Bytes {
        let object = match &mut self.format {
            Format::Json => return Bytes::from(encode_event(ty, obj)),
            Format::Partial { version } => partial_metadata(obj, version),
            Format::Table { version, include, columns_sent } => {
                let g = &self.selection.gvr;
                let mut tbl = table::to_table(g.plural, g.group, std::slice::from_ref(obj), *include, time::now_unix());
                tbl["apiVersion"] = json!(format!("meta.k8s.io/{version}"));
                if *columns_sent {
                    tbl["columnDefinitions"] = json!([]);
                }
                *columns_sent = true;
                tbl
            }
        };
        Bytes::from(encode_event(ty, &object))
    }
}

fn event_type(kind: ChangeKind) -> EventType {
    match kind {
        ChangeKind::Added => EventType::Added,
        ChangeKind::Modified => EventType::Modified,
        ChangeKind::Deleted => EventType::Deleted,
    }
}

/// Starts a watch response.
pub(crate) async fn serve(
    ctx: &Req<'_>,
    gvr: Gvr,
    ns: Option<&str>,
    name: Option<&str>,
    opts: &ListOptions,
) -> Result<Response<Body>, ApiError> {
    let filter = Filter::new(opts)?;
    let format = match ctx.accept {
        AcceptKind::Json | AcceptKind::Yaml => Format::Json,
        AcceptKind::Table { version } => {
            Format::Table { version, include: table::parse_include_object(ctx.query)?, columns_sent: false }
        }
        AcceptKind::PartialObjectMetadata { version } | AcceptKind::PartialObjectMetadataList { version } => {
            Format::Partial { version }
        }
        AcceptKind::Unsupported | AcceptKind::AggregatedDiscovery { .. } | AcceptKind::Protobuf { .. } => {
            return Err(ApiError::not_acceptable("watches are served as JSON, Table or PartialObjectMetadata"));
        }
    };
    if opts.send_initial_events == Some(true) && !opts.allow_watch_bookmarks {
        return Err(ApiError::invalid(
            "ListOptions",
            "",
            vec![("sendInitialEvents".to_owned(), "sendInitialEvents requires allowWatchBookmarks=true".to_owned())],
        ));
    }
    let from = match opts.resource_version.as_deref() {
        None | Some("") | Some("0") => None,
        Some(rv) => {
            Some(rv.parse::<u64>().map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?)
        }
    };
    // Initial state when asked for, and by default for an unset or "0" version.
    let initial = opts.send_initial_events.unwrap_or(from.is_none());
    let shared = ctx.shared;
    let (backlog, rx, start) = match from {
        Some(from) if !initial => match shared.hub.subscribe(Some(from)) {
            Ok((backlog, rx)) => (backlog, rx, from),
            // As kube-apiserver: the watch is accepted and ends with an ERROR event carrying the
            // 410, which tells clients to re-list.
            Err(e) if e.code == 410 => return Ok(single_error(&e)),
            Err(e) => return Err(e),
        },
        _ => {
            // Subscribed before reading the store: a change committed after the read is live.
            let (_, rx) = shared.hub.subscribe(None)?;
            let start = shared.store.max_resource_version().await.map_err(store_error)?;
            (Vec::new(), rx, start)
        }
    };
    let selection = Selection {
        gvr,
        namespace: ns.map(str::to_owned),
        name: name.map(str::to_owned),
        filter,
        min_rv: start,
        seen: HashMap::new(),
        // A resumed client may hold anything; a fresh one holds what it is sent.
        default: if initial { Seen::Absent } else { Seen::Unknown },
    };
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + shared.opts.bookmark_interval,
        shared.opts.bookmark_interval.max(Duration::from_millis(10)),
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut live = Live {
        selection,
        format,
        first: VecDeque::new(),
        rx,
        bookmarks: opts.allow_watch_bookmarks,
        last_rv: start,
        tick,
        deadline: Box::pin(tokio::time::sleep(opts.timeout_seconds.map_or(DEFAULT_TIMEOUT, Duration::from_secs))),
        shutdown: shared.shutdown.clone(),
        done: false,
    };
    if initial {
        let rows = shared.store.list_v2(&gvr.column(), ns).await.map_err(store_error)?;
        for row in &rows {
            if name.is_some_and(|n| n != row.name) {
                continue;
            }
            let Some(obj) = from_row(&gvr, row) else { continue };
            if !live.selection.filter.matches(&obj) {
                continue;
            }
            live.selection.remember(&row.key, Seen::Present);
            let line = live.encode(EventType::Added, &obj);
            live.first.push_back(line);
        }
        if opts.send_initial_events == Some(true) {
            let end = match live.format {
                Format::Partial { version } => initial_events_end_bookmark(
                    "PartialObjectMetadata",
                    &format!("meta.k8s.io/{version}"),
                    &start.to_string(),
                ),
                _ => initial_events_end_bookmark(gvr.kind, &gvr.api_version(), &start.to_string()),
            };
            live.first.push_back(Bytes::from(encode_event(EventType::Bookmark, &end)));
        }
    }
    for ev in &backlog {
        if let Some(line) = live.frame(ev) {
            live.first.push_back(line);
        }
    }
    // The body polls the feed itself: no task or channel per watcher.
    let stream = futures::stream::unfold(live, |mut live| async move {
        let frame = live.next_frame().await?;
        Some((Ok::<_, std::io::Error>(Frame::data(frame)), live))
    });
    let mut resp = Response::new(StreamBody::new(stream).boxed());
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    resp.headers_mut().insert(header::CACHE_CONTROL, http::HeaderValue::from_static("no-cache, private"));
    Ok(resp)
}

/// A finished watch of one ERROR event.
fn single_error(e: &ApiError) -> Response<Body> {
    let line = Bytes::from(encode_event(EventType::Error, &e.to_status()));
    let mut resp = Response::new(http_body_util::Full::new(line).map_err(|never| match never {}).boxed());
    resp.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubeedge_metastore::MetaV2Row;

    fn change(kind: ChangeKind, gvr: &Gvr, name: &str, rv: u64, app: &str) -> Change {
        let value = json!({"metadata": {"name": name, "namespace": "default", "labels": {"app": app}}});
        Change {
            kind,
            row: MetaV2Row {
                key: gvr.key("default", name),
                gvr: gvr.column(),
                namespace: "default".into(),
                name: name.into(),
                resource_version: rv,
                value: value.to_string(),
            },
        }
    }

    fn pods() -> Gvr {
        crate::metamanager::gvr_of("pod").expect("pods")
    }

    fn rvs(events: &[Arc<Event>]) -> Vec<u64> {
        events.iter().map(|e| e.rv).collect()
    }

    #[test]
    fn history_replays_after_a_version_and_expires_older_ones() {
        let hub = Hub::new(10, 3, usize::MAX, 16);
        let (_, mut live) = hub.subscribe(None).expect("from now");
        for rv in 11..=15 {
            hub.publish(&change(ChangeKind::Added, &pods(), &format!("p{rv}"), rv, "a"));
        }
        // Kept: 13, 14, 15; 11 and 12 were evicted, so the floor is 12.
        let e = hub.subscribe(Some(11)).map(|_| ()).expect_err("too old");
        assert_eq!((e.code, e.message.as_str()), (410, "too old resource version: 11 (12)"));
        assert_eq!(rvs(&hub.subscribe(Some(12)).expect("at the floor").0), [13, 14, 15]);
        assert_eq!(rvs(&hub.subscribe(Some(14)).expect("recent").0), [15]);
        assert!(hub.subscribe(Some(99)).expect("future").0.is_empty());
        assert!(matches!(live.try_recv(), Ok(HubEvent::Change(e)) if e.rv == 11 && e.object["kind"] == "Pod"));

        // Rows of resources MetaServer does not serve, and broken objects, are not kept.
        let mut other = change(ChangeKind::Added, &pods(), "x", 16, "a");
        other.row.gvr = "apps/v1, Resource=deployments".into();
        hub.publish(&other);
        let mut broken = change(ChangeKind::Added, &pods(), "y", 17, "a");
        broken.row.value = "[]".into();
        hub.publish(&broken);
        assert_eq!(rvs(&hub.subscribe(Some(12)).expect("same").0), [13, 14, 15]);
    }

    #[test]
    fn the_byte_budget_evicts_too() {
        let one = change(ChangeKind::Added, &pods(), "p", 1, "a").row.value.len();
        let hub = Hub::new(0, 100, one * 2, 16);
        for rv in 1..=4 {
            hub.publish(&change(ChangeKind::Modified, &pods(), "p", rv, "a"));
        }
        assert_eq!(rvs(&hub.subscribe(Some(2)).expect("kept").0), [3, 4]);
        assert_eq!(hub.subscribe(Some(1)).map(|_| ()).expect_err("evicted").code, 410);
    }

    #[test]
    fn a_reset_ends_watchers_and_raises_the_floor() {
        let hub = Hub::new(5, 10, usize::MAX, 16);
        hub.publish(&change(ChangeKind::Added, &pods(), "p", 6, "a"));
        let (_, mut rx) = hub.subscribe(Some(5)).expect("ok");
        hub.reset(8);
        assert!(matches!(rx.try_recv(), Ok(HubEvent::Reset)));
        assert_eq!(hub.subscribe(Some(7)).map(|_| ()).expect_err("lost").code, 410);
        assert!(hub.subscribe(Some(8)).expect("current").0.is_empty());
    }

    #[test]
    fn a_slow_watcher_lags_and_gets_410() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let _guard = rt.enter();
        let hub = Hub::new(0, 10, usize::MAX, 2);
        let (_, rx) = hub.subscribe(None).expect("ok");
        let mut live = test_live(rx, Filter::default(), Seen::Absent);
        for rv in 1..=5 {
            hub.publish(&change(ChangeKind::Added, &pods(), &format!("p{rv}"), rv, "a"));
        }
        let line = rt.block_on(live.next_frame()).expect("a line");
        let ev: Value = serde_json::from_slice(&line).expect("json");
        assert_eq!(ev["type"], "ERROR");
        assert_eq!(ev["object"]["code"], 410);
        assert!(rt.block_on(live.next_frame()).is_none(), "the watch ends");
    }

    fn test_live(rx: broadcast::Receiver<HubEvent>, filter: Filter, default: Seen) -> Live {
        Live {
            selection: Selection {
                gvr: pods(),
                namespace: None,
                name: None,
                filter,
                min_rv: 0,
                seen: HashMap::new(),
                default,
            },
            format: Format::Json,
            first: VecDeque::new(),
            rx,
            bookmarks: false,
            last_rv: 0,
            tick: tokio::time::interval(Duration::from_secs(3600)),
            deadline: Box::pin(tokio::time::sleep(Duration::from_secs(3600))),
            shutdown: CancellationToken::new(),
            done: false,
        }
    }

    #[test]
    fn selectors_move_objects_in_and_out() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let _guard = rt.enter();
        let hub = Hub::new(0, 10, usize::MAX, 16);
        let (_, rx) = hub.subscribe(None).expect("ok");
        let opts = ListOptions { label_selector: Some("app=web".into()), ..Default::default() };
        let mut live = test_live(rx, Filter::new(&opts).expect("selector"), Seen::Absent);
        let mut seen = |kind, rv, app: &str| {
            let c = change(kind, &pods(), "p", rv, app);
            hub.publish(&c);
            let Ok(HubEvent::Change(ev)) = live.rx.try_recv() else { panic!("no event") };
            live.frame(&ev).map(|l| serde_json::from_slice::<Value>(&l).expect("json")["type"].clone())
        };
        assert_eq!(seen(ChangeKind::Added, 1, "db"), None, "never matched");
        assert_eq!(seen(ChangeKind::Modified, 2, "web"), Some(json!("ADDED")), "moved in");
        assert_eq!(seen(ChangeKind::Modified, 3, "web"), Some(json!("MODIFIED")));
        assert_eq!(seen(ChangeKind::Modified, 4, "db"), Some(json!("DELETED")), "moved out");
        assert_eq!(seen(ChangeKind::Modified, 5, "db"), None);
        assert_eq!(seen(ChangeKind::Deleted, 6, "db"), None, "the client does not hold it");
        assert_eq!(seen(ChangeKind::Added, 7, "web"), Some(json!("ADDED")));
        assert_eq!(seen(ChangeKind::Deleted, 8, "web"), Some(json!("DELETED")));
        assert!(live.selection.seen.is_empty(), "nothing remembered once gone");
        assert_eq!(live.last_rv, 8);
        // Another resource's change is not shown, but bookmarks may claim it.
        let node = crate::metamanager::gvr_of("node").expect("nodes");
        hub.publish(&change(ChangeKind::Added, &node, "n", 9, "web"));
        let Ok(HubEvent::Change(ev)) = live.rx.try_recv() else { panic!("no event") };
        assert!(live.frame(&ev).is_none());
        assert_eq!(live.last_rv, 9);
    }

    #[test]
    fn old_versions_and_other_namespaces_are_skipped() {
        let mut s = Selection {
            gvr: pods(),
            namespace: Some("default".into()),
            name: None,
            filter: Filter::default(),
            min_rv: 10,
            seen: HashMap::new(),
            default: Seen::Unknown,
        };
        let obj = json!({});
        assert_eq!(s.classify(ChangeKind::Modified, "k", "default", "p", 10, &obj), None);
        assert_eq!(s.classify(ChangeKind::Modified, "k", "default", "p", 11, &obj), Some(EventType::Modified));
        assert_eq!(s.classify(ChangeKind::Deleted, "k", "default", "p", 3, &obj), Some(EventType::Deleted));
        assert_eq!(s.classify(ChangeKind::Added, "k", "other", "p", 12, &obj), None);
    }
}
