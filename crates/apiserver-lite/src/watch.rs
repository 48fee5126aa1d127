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
use kubeedge_kube_serve::request::ListOptions;
use kubeedge_kube_serve::status::ApiError;
use kubeedge_kube_serve::table::AcceptKind;
use kubeedge_kube_serve::watch::{EventType, bookmark, encode_event};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use crate::api::{RequestCtx, filter, render_table};
use crate::registry::ResourceType;
use crate::server::Body;
use crate::store::Event;

/// How often an idle watch that allows bookmarks gets one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(5);
/// A watch with no `timeoutSeconds` ends after this long (kube-apiserver: 30–60 min).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);
/// Encoded events buffered per watch response.
const STREAM_BUFFER: usize = 256;

/// Starts a watch response.
pub fn serve(
    ctx: &RequestCtx<'_>,
    t: Arc<ResourceType>,
    ns: Option<&str>,
    name: Option<&str>,
    opts: &ListOptions,
) -> Result<Response<Body>, ApiError> {
    let store = ctx.shared.store.clone();
    let selector = filter(opts)?;
    let name = name.map(str::to_owned);
    let ns = ns.map(str::to_owned);
    let matches = move |obj: &Value| {
        let meta =
            |f: &str| obj.pointer(&format!("/metadata/{f}")).and_then(Value::as_str).unwrap_or_default().to_owned();
        ns.as_deref().is_none_or(|n| meta("namespace") == n)
            && name.as_deref().is_none_or(|n| meta("name") == n)
            && selector(obj)
    };
    let initial_events = opts.send_initial_events == Some(true);
    // With sendInitialEvents the current state comes first whatever the version; without it,
    // "" and "0" mean "from now, with the current state", and a number resumes from history.
    let from = match opts.resource_version.as_deref() {
        _ if initial_events => None,
        None | Some("") | Some("0") => None,
        Some(rv) => {
            Some(rv.parse::<u64>().map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?)
        }
    };
    let (backlog, start_rv, rx) = match store.watch(&t, from) {
        Ok(w) => w,
        // As kube-apiserver: the watch is accepted, then ends with an ERROR event carrying the
        // 410, which tells clients to relist.
        Err(e) if e.code == 410 => return Ok(single_error(&e)),
        Err(e) => return Err(e),
    };
    let timeout = opts.timeout_seconds.map(Duration::from_secs).unwrap_or(DEFAULT_TIMEOUT);
    let as_table = matches!(ctx.table, AcceptKind::Table { .. });
    let query = ctx.query.to_owned();
    let (tx, out) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(STREAM_BUFFER);
    let shutdown = ctx.shared.shutdown.clone();
    let reset = ctx.shared.watch_reset.lock().clone();
    let bookmarks = opts.allow_watch_bookmarks;
    tokio::spawn(async move {
        let mut state = StreamState { t, as_table, query, columns_sent: false, last_rv: start_rv };
        let run = async {
            for ev in backlog {
                if !state.send(&tx, &ev, &matches).await {
                    return;
                }
            }
            if initial_events && bookmarks {
                let mut b = bookmark(&state.t.kind, &state.t.api_version(), &start_rv.to_string());
                b["metadata"]["annotations"] = json!({"k8s.io/initial-events-end": "true"});
                if !send_line(&tx, EventType::Bookmark, &b).await {
                    return;
                }
            }
            state.follow(&tx, rx, &matches, bookmarks).await;
        };
        tokio::select! {
            _ = run => {}
            _ = tokio::time::sleep(timeout) => {}
            _ = shutdown.cancelled() => {}
            _ = reset.cancelled() => {}
        }
    });
    let stream = futures::stream::unfold(out, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    let body = StreamBody::new(stream).boxed();
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    resp.headers_mut().insert(header::CACHE_CONTROL, http::HeaderValue::from_static("no-cache, private"));
    Ok(resp)
}

fn single_error(e: &ApiError) -> Response<Body> {
    let line = Bytes::from(encode_event(EventType::Error, &e.to_status()));
    let body = http_body_util::Full::new(line).map_err(|never| match never {}).boxed();
    let mut resp = Response::new(body);
    resp.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    resp
}

struct StreamState {
    t: Arc<ResourceType>,
    as_table: bool,
    query: String,
    columns_sent: bool,
    last_rv: u64,
}

impl StreamState {
    /// Sends one store event as the watcher should see it; false when the client is gone.
    async fn send(
        &mut self,
        tx: &mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>,
        ev: &Event,
        matches: &(impl Fn(&Value) -> bool + Send + Sync),
    ) -> bool {
        if ev.key.0 != self.t.group || ev.key.1 != self.t.plural {
            return true;
        }
        self.last_rv = self.last_rv.max(ev.rv);
        let now = matches(&ev.object);
        let before = ev.previous.as_deref().is_some_and(matches);
        let kind = match ev.kind {
            EventType::Modified if now && !before => EventType::Added,
            EventType::Modified if !now && before => EventType::Deleted,
            EventType::Modified if !now => return true,
            EventType::Added | EventType::Deleted if !now => return true,
            k => k,
        };
        if !self.as_table && kind == ev.kind {
            let line = ev.encoded.get_or_init(|| Bytes::from(encode_event(kind, &ev.object))).clone();
            return tx.send(Ok(Frame::data(line))).await.is_ok();
        }
        let object = if self.as_table {
            let mut tbl = match render_table(&self.query, &self.t, std::slice::from_ref(&*ev.object)) {
                Ok(t) => t,
                Err(e) => {
                    send_line(tx, EventType::Error, &e.to_status()).await;
                    return false;
                }
            };
            if self.columns_sent {
                tbl["columnDefinitions"] = json!([]);
            }
            self.columns_sent = true;
            tbl
        } else {
            (*ev.object).clone()
        };
        send_line(tx, kind, &object).await
    }

    async fn follow(
        &mut self,
        tx: &mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>,
        mut rx: broadcast::Receiver<Arc<Event>>,
        matches: &(impl Fn(&Value) -> bool + Send + Sync),
        bookmarks: bool,
    ) {
        let mut tick = tokio::time::interval(BOOKMARK_EVERY);
        tick.tick().await;
        loop {
            tokio::select! {
                ev = rx.recv() => match ev {
                    Ok(ev) => {
                        if !self.send(tx, &ev, matches).await {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // Too slow to keep up: end the watch with 410 so the client relists.
                        let err = ApiError::gone("the watch fell too far behind; relist");
                        let _ = send_line(tx, EventType::Error, &err.to_status()).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = tick.tick(), if bookmarks => {
                    let b = bookmark(&self.t.kind, &self.t.api_version(), &self.last_rv.to_string());
                    if !send_line(tx, EventType::Bookmark, &b).await {
                        return;
                    }
                }
                _ = tx.closed() => return,
            }
        }
    }
}

async fn send_line(tx: &mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>, kind: EventType, object: &Value) -> bool {
    tx.send(Ok(Frame::data(Bytes::from(encode_event(kind, object))))).await.is_ok()
}
