//! Resource handlers: get, list, watch, create, update, patch, delete, delete-collection, and
//! the subresources (status, binding, token, approval, log, exec).

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use kubeedge_kube_serve::discovery::ResourceInfo;
use kubeedge_kube_serve::openapi;
use kubeedge_kube_serve::patch::{self, PatchType};
use kubeedge_kube_serve::protobuf;
use kubeedge_kube_serve::request::{ListOptions, ResourceRequest, Verb, parse_query, query_param, verb};
use kubeedge_kube_serve::selector::{FieldSelector, LabelSelector};
use kubeedge_kube_serve::status::{ApiError, success_status};
use kubeedge_kube_serve::table::{self, AcceptKind};
use kubeedge_kube_serve::time;
use serde_json::{Value, json};

use crate::registry::ResourceType;
use crate::server::{Body, Shared, error_response, object_response, typed_response};
use crate::store::{DeleteOptions, Object, Store};
use crate::{proxy, watch};

/// One request's context.
pub struct RequestCtx<'a> {
    /// Shared server state.
    pub shared: &'a Shared,
    /// The HTTP method.
    pub method: &'a Method,
    /// The Accept header.
    pub accept: &'a str,
    /// What the Accept header asks for.
    pub table: AcceptKind,
    /// The raw query string.
    pub query: &'a str,
    /// The Content-Type header.
    pub content_type: &'a str,
}

/// 404 for a path that names nothing.
pub fn no_such_path() -> ApiError {
    ApiError::new(404, "NotFound", "the server could not find the requested resource")
}

/// Discovery descriptions of the types served in one group version.
pub fn infos(store: &Store, group: &str, version: &str) -> Vec<ResourceInfo> {
    store.types().iter().filter(|t| t.group == group && t.version == version).map(|t| t.info.clone()).collect()
}

/// `/openapi/v3` (`rest` empty) or one group version's document (`rest` = `api/v1`,
/// `apis/{group}/{version}`).
pub fn openapi_v3(store: &Store, rest: &str) -> Option<Value> {
    use std::hash::{Hash, Hasher};
    let types = store.types();
    let mut gvs: Vec<(String, String)> = types.iter().map(|t| (t.group.clone(), t.version.clone())).collect();
    gvs.sort();
    gvs.dedup();
    if rest.is_empty() {
        let hashes: Vec<String> = gvs
            .iter()
            .map(|(g, v)| {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                for t in types.iter().filter(|t| &t.group == g && &t.version == v) {
                    (&t.kind, &t.plural, t.namespaced).hash(&mut h);
                }
                format!("{:016X}", h.finish())
            })
            .collect();
        return Some(openapi::v3_index(&gvs, &hashes));
    }
    let (g, v) = gvs.into_iter().find(|(g, v)| openapi::gv_path(g, v) == rest)?;
    Some(openapi::v3_document(&g, &v, &infos(store, &g, &v)))
}

/// API groups (other than core) with their versions.
pub fn groups(store: &Store) -> Vec<(String, Vec<String>)> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for t in store.types() {
        if t.group.is_empty() {
            continue;
        }
        let versions = map.entry(t.group.clone()).or_default();
        if !versions.contains(&t.version) {
            versions.push(t.version.clone());
        }
    }
    for versions in map.values_mut() {
        // Preferred first: v1 > v1beta1 > v1alpha1, as Kubernetes orders them.
        versions.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
    }
    map.into_iter().collect()
}

fn version_priority(v: &str) -> (u8, u32, u32) {
    let rest = v.trim_start_matches('v');
    let (major, tail) = rest.split_at(rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len()));
    let major = major.parse().unwrap_or(0);
    if tail.is_empty() {
        (3, major, 0)
    } else if let Some(n) = tail.strip_prefix("beta") {
        (2, major, n.parse().unwrap_or(0))
    } else if let Some(n) = tail.strip_prefix("alpha") {
        (1, major, n.parse().unwrap_or(0))
    } else {
        (0, major, 0)
    }
}

/// Dispatches a resource request.
pub async fn handle_resource(ctx: RequestCtx<'_>, r: ResourceRequest, body: Bytes) -> Response<Body> {
    match handle_inner(&ctx, &r, body).await {
        Ok(resp) => resp,
        Err(e) => error_response(&e),
    }
}

async fn handle_inner(ctx: &RequestCtx<'_>, r: &ResourceRequest, body: Bytes) -> Result<Response<Body>, ApiError> {
    let store = &ctx.shared.store;
    let t = store.resolve(&r.group, &r.version, &r.resource).ok_or_else(no_such_path)?;
    if let Some(sub) = &r.subresource
        && !t.subresources.contains(sub)
    {
        return Err(no_such_path());
    }
    // Cluster-scoped types ignore a namespace in the path only for the namespace objects.
    if !t.namespaced && r.namespace.is_some() {
        return Err(no_such_path());
    }
    let ns = r.namespace.as_deref();
    let opts = parse_query(ctx.query)?;
    let v = verb(ctx.method.as_str(), r.name.is_some(), opts.watch)
        .ok_or_else(|| ApiError::method_not_allowed(format!("{} is not supported", ctx.method)))?;
    let name = r.name.as_deref();
    if !matches!(v, Verb::Get | Verb::List | Verb::Watch)
        && query_param(ctx.query, "dryRun").is_some_and(|d| !d.is_empty())
    {
        // Refused rather than ignored: ignoring it would persist what the caller only tried.
        return Err(ApiError::bad_request("dry runs (dryRun=All) are not supported by apiserver-lite"));
    }
    match (v, r.subresource.as_deref(), name) {
        (Verb::List, None, _) => list(ctx, &t, ns, &opts),
        (Verb::Watch, None, _) => watch::serve(ctx, t.clone(), ns, name, &opts),
        (Verb::Get, None | Some("status"), Some(name)) => {
            let obj = store.get(&t, ns, name)?;
            Ok(render_one(ctx, &t, &obj, StatusCode::OK))
        }
        (Verb::Create, None, _) => {
            let obj = decode_body(ctx.content_type, &body)?;
            let created = store.create(&t, ns, obj)?;
            if t.kind == "Namespace"
                && let Some(n) = metadata(&created).pointer("/metadata/name").and_then(Value::as_str)
            {
                store.namespace_added(n, &ctx.shared.ca_pem);
            }
            Ok(render_one(ctx, &t, &created, StatusCode::CREATED))
        }
        (Verb::Create, Some("binding"), Some(name)) => bind(ctx, &t, ns, name, &body),
        (Verb::Create, Some("token"), Some(name)) => token(ctx, &t, ns, name, &body),
        (Verb::Create, Some("eviction"), Some(name)) => {
            let (obj, _) = store.delete(&t, ns, name, &DeleteOptions::default())?;
            let _ = obj;
            Ok(object_response(StatusCode::CREATED, ctx.accept, &success_status(None)))
        }
        (Verb::Update, sub @ (None | Some("status") | Some("approval") | Some("finalize")), Some(name)) => {
            let obj = decode_body(ctx.content_type, &body)?;
            let status_only = sub.is_some();
            let updated = store.update(&t, ns, name, status_only, |_| Ok(obj))?;
            Ok(render_one(ctx, &t, &updated, StatusCode::OK))
        }
        (Verb::Patch, sub @ (None | Some("status")), Some(name)) => {
            patch_object(ctx, &t, ns, name, sub.is_some(), &body)
        }
        (Verb::Delete, None, Some(name)) => {
            let grace = query_param(ctx.query, "gracePeriodSeconds").and_then(|g| g.parse().ok());
            let del = DeleteOptions::parse(&body, grace)?;
            let (obj, _gone) = store.delete(&t, ns, name, &del)?;
            Ok(render_one(ctx, &t, &obj, StatusCode::OK))
        }
        (Verb::DeleteCollection, None, None) => {
            let grace = query_param(ctx.query, "gracePeriodSeconds").and_then(|g| g.parse().ok());
            let del = DeleteOptions::parse(&body, grace)?;
            let filter = Filter::new(&opts)?;
            let (items, _, _) = store.list(&t, ns, None, None, &|o| filter.matches_object(o), true);
            let mut deleted = Vec::new();
            for item in items {
                let meta = metadata(&item);
                let (Some(n), item_ns) = (
                    meta.pointer("/metadata/name").and_then(Value::as_str),
                    meta.pointer("/metadata/namespace").and_then(Value::as_str),
                ) else {
                    continue;
                };
                if let Ok((obj, _)) = store.delete(&t, item_ns, n, &del) {
                    deleted.push(obj.value());
                }
            }
            let list = kubeedge_kube_serve::object::list(
                &t.list_kind(),
                &t.api_version(),
                &store.resource_version().to_string(),
                None,
                None,
                deleted,
            );
            Ok(object_response(StatusCode::OK, ctx.accept, &list))
        }
        _ => Err(ApiError::method_not_allowed(format!(
            "{} is not supported on {}{}",
            ctx.method,
            t.plural,
            r.subresource.as_deref().map(|s| format!("/{s}")).unwrap_or_default()
        ))),
    }
}

/// Decodes a JSON or YAML request body into an object.
pub fn decode_body(content_type: &str, body: &[u8]) -> Result<Value, ApiError> {
    let ct = content_type.split(';').next().unwrap_or_default().trim();
    let value: Value = if kubeedge_kube_serve::protobuf::is_protobuf(ct) {
        kubeedge_kube_serve::protobuf::decode(body)?
    } else if ct.contains("yaml") {
        let text = std::str::from_utf8(body).map_err(|_| ApiError::bad_request("the body is not UTF-8"))?;
        yaml_serde::from_str(text).map_err(|e| ApiError::bad_request(format!("the body is not valid YAML: {e}")))?
    } else if ct.is_empty() || ct.contains("json") {
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?
    } else {
        return Err(ApiError::unsupported_media_type(content_type));
    };
    Ok(value)
}

/// A stored object's `metadata` alone, parsed (`{"metadata": {…}}`).
pub fn metadata(obj: &Object) -> Value {
    obj.project(&["metadata".to_owned()])
}

/// The label and field selectors of a request.
pub struct Filter {
    labels: Option<LabelSelector>,
    fields: Option<FieldSelector>,
    /// The top-level fields the selectors read: all a stored object needs parsed to be tested.
    keys: Vec<String>,
}

impl Filter {
    /// The request's selectors.
    pub fn new(opts: &ListOptions) -> Result<Self, ApiError> {
        let labels = match opts.label_selector.as_deref().filter(|s| !s.is_empty()) {
            Some(s) => Some(
                LabelSelector::parse(s).map_err(|e| ApiError::bad_request(format!("invalid labelSelector: {e}")))?,
            ),
            None => None,
        };
        let fields = match opts.field_selector.as_deref().filter(|s| !s.is_empty()) {
            Some(s) => Some(
                FieldSelector::parse(s).map_err(|e| ApiError::bad_request(format!("invalid fieldSelector: {e}")))?,
            ),
            None => None,
        };
        let mut keys: Vec<String> = Vec::new();
        if labels.is_some() {
            keys.push("metadata".to_owned());
        }
        for path in fields.iter().flat_map(FieldSelector::requirements) {
            let top = path.split('.').next().unwrap_or_default();
            if !keys.iter().any(|k| k == top) {
                keys.push(top.to_owned());
            }
        }
        Ok(Self { labels, fields, keys })
    }

    /// The top-level fields the selectors read.
    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    /// Whether every object passes (no selector).
    pub fn is_everything(&self) -> bool {
        self.labels.is_none() && self.fields.is_none()
    }

    /// Whether an object passes.
    pub fn matches(&self, obj: &Value) -> bool {
        self.labels.as_ref().is_none_or(|l| l.matches(obj.pointer("/metadata/labels").and_then(Value::as_object)))
            && self.fields.as_ref().is_none_or(|f| f.matches(obj))
    }

    /// Whether a stored object passes, parsing only the fields the selectors read.
    pub fn matches_object(&self, obj: &Object) -> bool {
        self.is_everything() || self.matches(&obj.project(&self.keys))
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    ns: String,
    name: String,
    rv: u64,
}

fn list(
    ctx: &RequestCtx<'_>,
    t: &ResourceType,
    ns: Option<&str>,
    opts: &ListOptions,
) -> Result<Response<Body>, ApiError> {
    let store = &ctx.shared.store;
    let filter = Filter::new(opts)?;
    let after = match opts.continue_token.as_deref().filter(|c| !c.is_empty()) {
        Some(c) => {
            let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(c)
                .map_err(|_| ApiError::bad_request("invalid continue token"))?;
            let tok: ContinueToken =
                serde_json::from_slice(&raw).map_err(|_| ApiError::bad_request("invalid continue token"))?;
            Some((tok.ns, tok.name, tok.rv))
        }
        None => None,
    };
    if opts.resource_version_match.as_deref() == Some("Exact")
        && let Some(rv) = opts.resource_version.as_deref()
        && rv != store.resource_version().to_string()
    {
        return Err(ApiError::gone(format!("too old resource version: {rv} ({})", store.resource_version())));
    }
    let limit = opts.limit.filter(|l| *l > 0).map(|l| l as usize);
    let after_key = after.as_ref().map(|(ns, name, _)| (ns.clone(), name.clone()));
    let counted = filter.is_everything();
    let (items, current_rv, remaining) =
        store.list(t, ns, after_key.as_ref(), limit, &|o| filter.matches_object(o), counted);
    // Every page of a paged list reports the first page's version, as kube-apiserver does;
    // clients start their watch from it, so changes between pages are not missed.
    let rv = match &after {
        Some((_, _, first_rv)) => {
            if *first_rv < store.compacted() {
                return Err(ApiError::gone(format!(
                    "the provided continue parameter is too old to display a consistent list result ({first_rv})"
                )));
            }
            *first_rv
        }
        None => current_rv,
    };
    let continue_token = if remaining > 0 {
        items.last().map(|last| {
            let meta = metadata(last);
            let tok = ContinueToken {
                ns: meta.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default().to_owned(),
                name: meta.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_owned(),
                rv,
            };
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(&tok).unwrap_or_default())
        })
    } else {
        None
    };
    // With a selector the count is unknown, and left out as kube-apiserver leaves it out.
    let remaining = (remaining > 0 && counted).then_some(remaining as i64);
    shaped(
        ctx,
        t,
        Shape::List { objects: items, rv, continue_token: continue_token.as_deref(), remaining },
        StatusCode::OK,
    )
}

/// What is being returned: one object or a page of a list.
enum Shape<'a> {
    One(&'a Object),
    List { objects: Vec<Object>, rv: u64, continue_token: Option<&'a str>, remaining: Option<i64> },
}

/// Renders a result in the form the Accept header asks for: the object or list itself, a
/// Table for `kubectl get`, or partial object metadata.
fn shaped(
    ctx: &RequestCtx<'_>,
    t: &ResourceType,
    shape: Shape<'_>,
    code: StatusCode,
) -> Result<Response<Body>, ApiError> {
    let mut kind = ctx.table;
    if let AcceptKind::Protobuf { json_too } = kind {
        match protobuf_shape(t, &shape, json_too) {
            Ok(bytes) => return Ok(crate::server::bytes_response(code, protobuf::CONTENT_TYPE, bytes)),
            Err(e) if !json_too => return Err(ApiError::not_acceptable(format!("no protobuf form: {}", e.0))),
            Err(_) => kind = AcceptKind::Json,
        }
    }
    match kind {
        AcceptKind::Unsupported => {
            Err(ApiError::not_acceptable(format!("only JSON and YAML are served, not {:?}", ctx.accept)))
        }
        AcceptKind::Table { version } => {
            let (objects, meta) = match shape {
                Shape::One(o) => (vec![o.value()], json!({})),
                Shape::List { objects, rv, continue_token, remaining } => {
                    let mut m = json!({"resourceVersion": rv.to_string()});
                    if let Some(c) = continue_token {
                        m["continue"] = json!(c);
                    }
                    if let Some(r) = remaining {
                        m["remainingItemCount"] = json!(r);
                    }
                    (objects.iter().map(Object::value).collect(), m)
                }
            };
            let mut tbl = render_table(ctx.query, t, &objects)?;
            tbl["apiVersion"] = json!(format!("meta.k8s.io/{version}"));
            tbl["metadata"] = meta;
            Ok(typed_response(code, kind.content_type(), &tbl))
        }
        AcceptKind::PartialObjectMetadata { version } | AcceptKind::PartialObjectMetadataList { version } => {
            let partial = |o: &Object| {
                let mut meta = metadata(o);
                json!({"apiVersion": format!("meta.k8s.io/{version}"), "kind": "PartialObjectMetadata", "metadata": meta["metadata"].take()})
            };
            let body = match shape {
                Shape::One(o) => partial(o),
                Shape::List { objects, rv, continue_token, remaining } => kubeedge_kube_serve::object::list(
                    "PartialObjectMetadataList",
                    &format!("meta.k8s.io/{version}"),
                    &rv.to_string(),
                    continue_token,
                    remaining,
                    objects.iter().map(partial).collect(),
                ),
            };
            Ok(typed_response(code, kind.content_type(), &body))
        }
        AcceptKind::Yaml => {
            let body = match shape {
                Shape::One(o) => return Ok(object_response(code, ctx.accept, &o.value())),
                Shape::List { objects, rv, continue_token, remaining } => kubeedge_kube_serve::object::list(
                    &t.list_kind(),
                    &t.api_version(),
                    &rv.to_string(),
                    continue_token,
                    remaining,
                    objects.iter().map(Object::value).collect(),
                ),
            };
            Ok(object_response(code, ctx.accept, &body))
        }
        _ => match shape {
            // The stored JSON is the response: nothing is encoded.
            Shape::One(o) => Ok(crate::server::bytes_response(code, "application/json", o.bytes())),
            Shape::List { objects, rv, continue_token, remaining } => {
                let meta = list_meta(rv, continue_token, remaining);
                let head = json!({"kind": t.list_kind(), "apiVersion": t.api_version(), "metadata": meta});
                let mut out = serde_json::to_vec(&head).unwrap_or_default();
                out.reserve(objects.iter().map(|o| o.len() + 1).sum::<usize>() + 16);
                out.pop(); // the closing brace
                out.extend_from_slice(b",\"items\":[");
                for (i, o) in objects.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(o.json());
                }
                out.extend_from_slice(b"]}");
                Ok(crate::server::bytes_response(code, "application/json", out))
            }
        },
    }
}

/// A list's `metadata`.
fn list_meta(rv: u64, continue_token: Option<&str>, remaining: Option<i64>) -> Value {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if let Some(c) = continue_token.filter(|c| !c.is_empty()) {
        meta["continue"] = json!(c);
    }
    if let Some(r) = remaining {
        meta["remainingItemCount"] = json!(r);
    }
    meta
}

/// The protobuf body of an object or list. Strict when JSON would do too (an object protobuf
/// cannot fully describe is then answered in JSON); otherwise what it cannot describe is left
/// out, as kube-apiserver would have pruned it.
fn protobuf_shape(t: &ResourceType, shape: &Shape<'_>, json_too: bool) -> Result<Vec<u8>, protobuf::Unencodable> {
    let mode = if json_too { protobuf::Mode::Strict } else { protobuf::Mode::Lenient };
    match shape {
        Shape::One(o) => protobuf::encode(&o.value(), mode),
        Shape::List { objects, rv, continue_token, remaining } => {
            let meta = list_meta(*rv, *continue_token, *remaining);
            let values: Vec<Value> = objects.iter().map(Object::value).collect();
            protobuf::encode_list(&t.api_version(), &t.list_kind(), &meta, values.iter(), mode)
        }
    }
}

/// A Table of objects, as `kubectl get` asks for.
pub fn render_table(query: &str, t: &ResourceType, objects: &[Value]) -> Result<Value, ApiError> {
    let include = table::parse_include_object(query)?;
    Ok(table::to_table(&t.plural, &t.group, objects, include, time::now_unix()))
}

fn render_one(ctx: &RequestCtx<'_>, t: &ResourceType, obj: &Object, code: StatusCode) -> Response<Body> {
    shaped(ctx, t, Shape::One(obj), code).unwrap_or_else(|e| error_response(&e))
}

fn patch_object(
    ctx: &RequestCtx<'_>,
    t: &ResourceType,
    ns: Option<&str>,
    name: &str,
    status_only: bool,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let store = &ctx.shared.store;
    let ty = PatchType::from_content_type(ctx.content_type)
        .ok_or_else(|| ApiError::unsupported_media_type(ctx.content_type))?;
    let patch_doc = if ty == PatchType::Apply {
        decode_body("application/yaml", body)?
    } else {
        decode_body("application/json", body)?
    };
    if ty == PatchType::Apply {
        let manager = query_param(ctx.query, "fieldManager")
            .filter(|m| !m.is_empty())
            .ok_or_else(|| ApiError::bad_request("fieldManager is required for apply patches"))?;
        let now = time::now();
        match store.get(t, ns, name) {
            Err(e) if e.code == 404 && !status_only => {
                if patch_doc.pointer("/metadata/name").and_then(Value::as_str).is_some_and(|n| n != name) {
                    return Err(ApiError::bad_request("the name of the object does not match the name on the URL"));
                }
                let obj = patch::apply(None, &patch_doc, &t.kind, &manager, &now).map_err(|e| e.to_api_error())?;
                let created = store.create(t, ns, obj)?;
                if t.kind == "Namespace" {
                    // As for a POST: the service-account and root-CA controllers fill it.
                    store.namespace_added(name, &ctx.shared.ca_pem);
                }
                return Ok(render_one(ctx, t, &created, StatusCode::CREATED));
            }
            Err(e) => return Err(e),
            Ok(_) => {}
        }
        let updated = store.update(t, ns, name, status_only, |current| {
            patch::apply(Some(current), &patch_doc, &t.kind, &manager, &now).map_err(|e| e.to_api_error())
        })?;
        return Ok(render_one(ctx, t, &updated, StatusCode::OK));
    }
    let updated = store.update(t, ns, name, status_only, |current| {
        let result = match ty {
            PatchType::Json => patch::json_patch(current, &patch_doc),
            PatchType::Merge => Ok(patch::merge_patch(current, &patch_doc)),
            // Custom resources have no strategic-merge schema: kube-apiserver refuses them.
            PatchType::StrategicMerge if !t.group.is_empty() && !is_builtin_group(&t.group) => {
                return Err(ApiError::unsupported_media_type(ctx.content_type));
            }
            PatchType::StrategicMerge => patch::strategic_merge_patch(current, &patch_doc, &t.kind),
            PatchType::Apply => unreachable_apply(),
        };
        result.map_err(|e| e.to_api_error())
    })?;
    Ok(render_one(ctx, t, &updated, StatusCode::OK))
}

fn unreachable_apply() -> Result<Value, patch::PatchError> {
    Err(patch::PatchError::Invalid("apply patches are handled separately".to_owned()))
}

fn is_builtin_group(group: &str) -> bool {
    group.ends_with(".k8s.io") || group == "apps" || group == "batch" || group == "policy" || group == "autoscaling"
}

fn bind(
    ctx: &RequestCtx<'_>,
    t: &ResourceType,
    ns: Option<&str>,
    name: &str,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let binding = decode_body(ctx.content_type, body)?;
    let node = binding
        .pointer("/target/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request("binding.target.name is required"))?
        .to_owned();
    ctx.shared.store.update(t, ns, name, false, |current| {
        if current.pointer("/spec/nodeName").and_then(Value::as_str).is_some_and(|n| !n.is_empty()) {
            return Err(ApiError::conflict(&t.group_resource(), name, "pod is already assigned to a node"));
        }
        let mut pod = current.clone();
        pod["spec"]["nodeName"] = json!(node);
        Ok(pod)
    })?;
    Ok(object_response(StatusCode::CREATED, ctx.accept, &success_status(None)))
}

fn token(
    ctx: &RequestCtx<'_>,
    t: &ResourceType,
    ns: Option<&str>,
    name: &str,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let sa = ctx.shared.store.get(t, ns, name)?.value();
    let mut req = decode_body(ctx.content_type, body)?;
    let secs = req.pointer("/spec/expirationSeconds").and_then(Value::as_u64).unwrap_or(3600);
    if !(600..=1 << 32).contains(&secs) {
        return Err(ApiError::invalid(
            "TokenRequest",
            name,
            vec![(
                "spec.expirationSeconds".to_owned(),
                "may not specify a duration less than 10 minutes or longer than 2^32 seconds".to_owned(),
            )],
        ));
    }
    let ns = ns.unwrap_or_default();
    let bound = req.pointer("/spec/boundObjectRef").cloned().unwrap_or(Value::Null);
    let field = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
    let pod = (field(&bound, "kind") == "Pod").then(|| (field(&bound, "name"), field(&bound, "uid")));
    if let Some((pod_name, pod_uid)) = &pod {
        // kube-apiserver binds a token only to a pod that exists with that UID.
        let pods = ctx.shared.store.resolve("", "v1", "pods").ok_or_else(no_such_path)?;
        let p = ctx.shared.store.get(&pods, Some(ns), pod_name)?.value();
        if !pod_uid.is_empty() && p.pointer("/metadata/uid").and_then(Value::as_str) != Some(pod_uid.as_str()) {
            return Err(ApiError::conflict(
                &t.group_resource(),
                name,
                "the pod's UID does not match boundObjectRef.uid",
            ));
        }
        let runs_as = p.pointer("/spec/serviceAccountName").and_then(Value::as_str).unwrap_or("default");
        if runs_as != name {
            return Err(ApiError::bad_request(format!(
                "cannot bind token for serviceaccount \"{name}\" to pod running with serviceaccount \"{runs_as}\""
            )));
        }
    }
    let audiences: Vec<String> = req
        .pointer("/spec/audiences")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default();
    let subject = crate::satoken::Subject {
        namespace: ns.to_owned(),
        service_account: (
            name.to_owned(),
            sa.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default().to_owned(),
        ),
        pod,
    };
    let (token, expires) = ctx.shared.auth.signer.mint(&subject, &audiences, Duration::from_secs(secs));
    if audiences.is_empty() {
        req["spec"]["audiences"] = json!([crate::satoken::ISSUER]);
    }
    req["apiVersion"] = json!("authentication.k8s.io/v1");
    req["kind"] = json!("TokenRequest");
    req["spec"]["expirationSeconds"] = json!(secs);
    req["status"] = json!({"token": token, "expirationTimestamp": time::format_system(expires)});
    Ok(object_response(StatusCode::CREATED, ctx.accept, &req))
}

/// Hands a pod's log, exec, attach or portforward request to the node running the pod.
pub async fn proxy_to_node(
    shared: &Shared,
    r: &ResourceRequest,
    req: Request<Incoming>,
    peer: std::net::SocketAddr,
) -> Response<Body> {
    match shared.store.resolve(&r.group, &r.version, &r.resource) {
        Some(t) if t.kind == "Pod" => {}
        _ => return error_response(&no_such_path()),
    };
    let (Some(ns), Some(name), Some(sub)) = (r.namespace.as_deref(), r.name.as_deref(), r.subresource.as_deref())
    else {
        return error_response(&no_such_path());
    };
    match proxy::pod_to_kubelet(shared, ns, name, sub, req, peer).await {
        Ok(resp) => resp,
        Err(e) => error_response(&e),
    }
}
