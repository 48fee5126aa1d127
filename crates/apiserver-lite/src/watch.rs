//! Watch streams: `{"type":…,"object":…}` lines, starting from a resourceVersion (replayed from
//! history) or from the current state, with label/field selector transitions (an object that
//! stops matching is sent as DELETED, one that starts matching as ADDED), bookmarks, the
//! `sendInitialEvents` protocol, `timeoutSeconds`, and an end at shutdown.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use kubeedge_kube_serve::protobuf;
use kubeedge_kube_serve::request::ListOptions;
use kubeedge_kube_serve::status::ApiError;
use kubeedge_kube_serve::table::AcceptKind;
use kubeedge_kube_serve::watch::{EventType, bookmark, encode_event};
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::api::{Filter, RequestCtx, render_table};
use crate::registry::ResourceType;
use crate::server::Body;
use crate::store::{Backlog, Event, Object};

/// How often an idle watch that allows bookmarks gets one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(5);
/// A watch with no `timeoutSeconds` ends after this long (kube-apiserver: 30–60 min).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

/// Starts a watch response.
pub fn serve(
    ctx: &RequestCtx<'_>,
    t: Arc<ResourceType>,
    ns: Option<&str>,
    name: Option<&str>,
    opts: &ListOptions,
) -> Result<Response<Body>, ApiError> {
    let store = ctx.shared.store.clone();
    let matches = Matcher::new(Filter::new(opts)?, ns, name);
    let initial_events = opts.send_initial_events == Some(true);
    if initial_events && !opts.allow_watch_bookmarks {
        return Err(ApiError::invalid(
            "ListOptions",
            "",
            vec![("sendInitialEvents".to_owned(), "sendInitialEvents requires allowWatchBookmarks=true".to_owned())],
        ));
    }
    // With sendInitialEvents the current state comes first whatever the version; without it,
    // "" and "0" mean "from now, with the current state", and a number resumes from history.
    let from = match opts.resource_version.as_deref() {
        _ if initial_events => None,
        None | Some("") | Some("0") => None,
        Some(rv) => {
            Some(rv.parse::<u64>().map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?)
        }
    };
    // Protobuf frames when the client prefers them and the kind has a protobuf form.
    let proto = match ctx.table {
        AcceptKind::Protobuf { .. } if protobuf::has_kind(&t.api_version(), &t.kind) => true,
        AcceptKind::Protobuf { json_too: true } => false,
        AcceptKind::Protobuf { json_too: false } => {
            return Err(ApiError::not_acceptable(format!("{} has no protobuf form; accept application/json", t.kind)));
        }
        _ => false,
    };
    let (backlog, start_rv, rx) = match store.watch(&t, from) {
        Ok(w) => w,
        // As kube-apiserver: the watch is accepted, then ends with an ERROR event carrying the
        // 410, which tells clients to relist.
        Err(e) if e.code == 410 => return Ok(single_error(&e, proto)),
        Err(e) => return Err(e),
    };
    let timeout = opts.timeout_seconds.map(Duration::from_secs).unwrap_or(DEFAULT_TIMEOUT);
    let as_table = matches!(ctx.table, AcceptKind::Table { .. });
    let state = StreamState { t, as_table, proto, query: ctx.query.to_owned(), columns_sent: false, last_rv: start_rv };
    let initial_end = (initial_events && opts.allow_watch_bookmarks).then(|| {
        let mut b = bookmark(&state.t.kind, &state.t.api_version(), &start_rv.to_string());
        b["metadata"]["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        state.encode(EventType::Bookmark, &b)
    });
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + BOOKMARK_EVERY, BOOKMARK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The body polls the broadcast itself: no task or channel per watcher between an event and
    // the connection that writes it.
    let live = Live {
        state,
        backlog,
        initial_end,
        rx,
        matches,
        bookmarks: opts.allow_watch_bookmarks,
        tick,
        deadline: Box::pin(tokio::time::sleep(timeout)),
        shutdown: ctx.shared.shutdown.clone(),
        reset: ctx.shared.watch_reset.lock().clone(),
        done: false,
    };
    let stream = futures::stream::unfold(live, |mut live| async move {
        let frame = live.next_frame().await?;
        Some((Ok::<_, std::io::Error>(Frame::data(frame)), live))
    });
    let body = StreamBody::new(stream).boxed();
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::OK;
    let content_type = if proto { protobuf::WATCH_CONTENT_TYPE } else { "application/json" };
    resp.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    resp.headers_mut().insert(header::CACHE_CONTROL, http::HeaderValue::from_static("no-cache, private"));
    Ok(resp)
}

/// Which objects a watch sees: its namespace, its object (a watch of one name) and selectors.
struct Matcher {
    ns: Option<String>,
    name: Option<String>,
    filter: Filter,
    /// `metadata` for the namespace and name, and what the selectors read.
    keys: Vec<String>,
}

impl Matcher {
    fn new(filter: Filter, ns: Option<&str>, name: Option<&str>) -> Self {
        let mut keys = filter.keys().to_vec();
        if (ns.is_some() || name.is_some()) && !keys.iter().any(|k| k == "metadata") {
            keys.push("metadata".to_owned());
        }
        Self { ns: ns.map(str::to_owned), name: name.map(str::to_owned), filter, keys }
    }

    /// Whether the watch sees this object. A watch of every object of a type parses nothing;
    /// others parse only the top-level fields they test.
    fn matches(&self, obj: &Object) -> bool {
        if self.keys.is_empty() {
            return true;
        }
        let v = obj.project(&self.keys);
        let meta = |f: &str| v.get("metadata").and_then(|m| m.get(f)).and_then(Value::as_str).unwrap_or_default();
        self.ns.as_deref().is_none_or(|n| meta("namespace") == n)
            && self.name.as_deref().is_none_or(|n| meta("name") == n)
            && self.filter.matches(&v)
    }
}

/// An open watch: what is left of the backlog, then the live feed.
struct Live {
    state: StreamState,
    /// Encoded as it is sent, not all at the start (a watch of 100,000 pods begins with them).
    backlog: Backlog,
    /// The bookmark that ends the initial events, still to send.
    initial_end: Option<Bytes>,
    rx: broadcast::Receiver<Arc<Event>>,
    matches: Matcher,
    bookmarks: bool,
    tick: tokio::time::Interval,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
    shutdown: tokio_util::sync::CancellationToken,
    reset: tokio_util::sync::CancellationToken,
    done: bool,
}

impl Live {
    /// The next line to write, or `None` when the watch ends.
    async fn next_frame(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        for ev in self.backlog.by_ref() {
            if let Some(f) = self.state.frame(&ev, &self.matches) {
                return Some(f);
            }
        }
        if let Some(b) = self.initial_end.take() {
            return Some(b);
        }
        loop {
            tokio::select! {
                ev = self.rx.recv() => match ev {
                    Ok(ev) => {
                        if let Some(f) = self.state.frame(&ev, &self.matches) {
                            return Some(f);
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // Too slow to keep up: end the watch with 410 so the client relists.
                        self.done = true;
                        let err = ApiError::gone("the watch fell too far behind; relist");
                        return Some(self.state.encode(EventType::Error, &err.to_status()));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                _ = self.tick.tick(), if self.bookmarks => {
                    let b = bookmark(&self.state.t.kind, &self.state.t.api_version(), &self.state.last_rv.to_string());
                    return Some(self.state.encode(EventType::Bookmark, &b));
                }
                _ = &mut self.deadline => return None,
                _ = self.shutdown.cancelled() => return None,
                _ = self.reset.cancelled() => return None,
            }
        }
    }
}

fn single_error(e: &ApiError, proto: bool) -> Response<Body> {
    let line = event_bytes(proto, EventType::Error, &e.to_status());
    let body = http_body_util::Full::new(line).map_err(|never| match never {}).boxed();
    let mut resp = Response::new(body);
    let content_type = if proto { protobuf::WATCH_CONTENT_TYPE } else { "application/json" };
    resp.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    resp
}

/// One event: a JSON line, or a length-prefixed protobuf frame.
fn event_bytes(proto: bool, kind: EventType, object: &Value) -> Bytes {
    if proto {
        // Lenient encoding fails only for a kind without a protobuf form, which `serve` ruled out.
        Bytes::from(protobuf::encode_watch_event(kind.as_str(), object).unwrap_or_default())
    } else {
        Bytes::from(encode_event(kind, object))
    }
}

struct StreamState {
    t: Arc<ResourceType>,
    as_table: bool,
    proto: bool,
    query: String,
    columns_sent: bool,
    last_rv: u64,
}

impl StreamState {
    fn encode(&self, kind: EventType, object: &Value) -> Bytes {
        event_bytes(self.proto, kind, object)
    }

    /// The line for one store event as this watcher should see it, or `None` when it does not
    /// concern the watcher.
    fn frame(&mut self, ev: &Event, matches: &Matcher) -> Option<Bytes> {
        if ev.key.0 != self.t.group || ev.key.1 != self.t.plural {
            return None;
        }
        self.last_rv = self.last_rv.max(ev.rv);
        let now = matches.matches(&ev.object);
        let before = ev.previous.as_ref().is_some_and(|p| matches.matches(p));
        let kind = match ev.kind {
            EventType::Modified if now && !before => EventType::Added,
            EventType::Modified if !now && before => EventType::Deleted,
            EventType::Modified if !now => return None,
            EventType::Deleted if !now && !before => return None,
            EventType::Added if !now => return None,
            k => k,
        };
        if self.proto {
            return Some(self.encode(kind, &ev.object.value()));
        }
        if !self.as_table {
            return Some(json_line(kind, &ev.object));
        }
        let mut tbl = match render_table(&self.query, &self.t, &[ev.object.value()]) {
            Ok(t) => t,
            Err(e) => return Some(self.encode(EventType::Error, &e.to_status())),
        };
        if self.columns_sent {
            tbl["columnDefinitions"] = json!([]);
        }
        self.columns_sent = true;
        Some(Bytes::from(encode_event(kind, &tbl)))
    }
}

/// `{"object":…,"type":"…"}` and a newline, as `encode_event` writes it (keys sorted), around
/// the stored JSON: a copy, not an encoding.
fn json_line(kind: EventType, object: &Object) -> Bytes {
    const HEAD: &[u8] = b"{\"object\":";
    let kind = kind.as_str().as_bytes();
    let mut line = Vec::with_capacity(HEAD.len() + object.len() + kind.len() + 12);
    line.extend_from_slice(HEAD);
    line.extend_from_slice(object.json());
    line.extend_from_slice(b",\"type\":\"");
    line.extend_from_slice(kind);
    line.extend_from_slice(b"\"}\n");
    Bytes::from(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_line_is_what_encode_event_writes() {
        let v =
            json!({"kind": "Pod", "metadata": {"name": "p\"q", "labels": {"a": "b"}}, "status": {"phase": "Running"}});
        for kind in [EventType::Added, EventType::Modified, EventType::Deleted] {
            assert_eq!(&json_line(kind, &Object::encode(&v))[..], encode_event(kind, &v).as_slice());
        }
    }
}
