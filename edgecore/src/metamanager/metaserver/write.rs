//! Writes: `create`, `update` (and `updatestatus`), `patch`, `delete`, proxied to the cloud as
//! Applications. Nothing is written locally; the change comes back down through the cloud's
//! sync, as upstream.
//!
//! The request is checked the way kube-apiserver's handlers check it before storage (the body
//! decodes, names and namespaces agree with the URL, patch options are valid), so malformed
//! requests get their 400 even while the edge is offline.

use http::{Response, StatusCode};
use kubeedge_kube_serve::patch::PatchType;
use kubeedge_kube_serve::request::{query_pairs, query_param};
use kubeedge_kube_serve::status::{ApiError, success_status};
use serde_json::{Map, Value, json};

use super::application::{self, Application, PatchInfo, Verb};
use super::read::group_resource;
use super::server::{Body, Req, Shape, decode_body, render};
use crate::metamanager::Gvr;

/// `POST` of a collection.
pub(crate) async fn create(
    ctx: &Req<'_>,
    gvr: &Gvr,
    ns: Option<&str>,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let mut obj = decode_object(ctx, gvr, body)?;
    ensure_namespace(gvr, &mut obj, ns)?;
    let option = write_options(ctx, "CreateOptions");
    let key = gvr.key(ns.unwrap_or_default(), "");
    let app = Application::request(&ctx.shared.remote.node, key, Verb::Create, "", Some(option), Some(to_bytes(&obj)));
    let created = apply(ctx, gvr, &app).await?;
    let created = created.ok_or_else(|| ApiError::internal("the cloud approved the create without the object"))?;
    render(ctx, gvr, Shape::One(created), StatusCode::CREATED)
}

/// `PUT` of an object or its `status`.
pub(crate) async fn update(
    ctx: &Req<'_>,
    gvr: &Gvr,
    ns: Option<&str>,
    name: &str,
    sub: Option<&str>,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let mut obj = decode_object(ctx, gvr, body)?;
    let body_name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    if body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    ensure_namespace(gvr, &mut obj, ns)?;
    let verb = if sub == Some("status") { Verb::UpdateStatus } else { Verb::Update };
    let option = write_options(ctx, "UpdateOptions");
    let key = gvr.key(ns.unwrap_or_default(), name);
    let app = Application::request(
        &ctx.shared.remote.node,
        key,
        verb,
        sub.unwrap_or_default(),
        Some(option),
        Some(to_bytes(&obj)),
    );
    let updated = apply(ctx, gvr, &app).await?;
    let updated = updated.ok_or_else(|| ApiError::internal("the cloud approved the update without the object"))?;
    render(ctx, gvr, Shape::One(updated), StatusCode::OK)
}

/// `PATCH` of an object or its `status`, in any of the four patch types.
pub(crate) async fn patch(
    ctx: &Req<'_>,
    gvr: &Gvr,
    ns: Option<&str>,
    name: &str,
    sub: Option<&str>,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let ty = PatchType::from_content_type(ctx.content_type)
        .ok_or_else(|| ApiError::unsupported_media_type(ctx.content_type))?;
    // The document must at least parse; the cloud applies it.
    let parse_as = if ty == PatchType::Apply { "application/yaml" } else { "application/json" };
    decode_body(parse_as, body)?;
    let mut options = write_options_map(ctx, "PatchOptions");
    let force = query_param(ctx.query, "force").filter(|f| !f.is_empty());
    if ty == PatchType::Apply {
        if !options.contains_key("fieldManager") {
            return Err(invalid_patch_options("fieldManager", "Required value: is required for apply patch"));
        }
        if let Some(force) = force {
            options.insert("force".into(), json!(!matches!(force.to_ascii_lowercase().as_str(), "false" | "0")));
        }
    } else if force.is_some() {
        return Err(invalid_patch_options("force", "Forbidden: may not be specified for non-apply patch"));
    }
    let media = ctx.content_type.split(';').next().unwrap_or_default().trim().to_owned();
    let info = PatchInfo {
        name: name.to_owned(),
        patch_type: media,
        data: Some(body.to_vec()),
        options: Value::Object(options),
        subresources: vec![sub.unwrap_or_default().to_owned()],
    };
    let option = serde_json::to_vec(&info).map_err(|e| ApiError::internal(format!("encoding the patch: {e}")))?;
    let key = gvr.key(ns.unwrap_or_default(), name);
    let app =
        Application::request(&ctx.shared.remote.node, key, Verb::Patch, sub.unwrap_or_default(), Some(option), None);
    let patched = apply(ctx, gvr, &app).await?;
    let patched = patched.ok_or_else(|| ApiError::internal("the cloud approved the patch without the object"))?;
    render(ctx, gvr, Shape::One(patched), StatusCode::OK)
}

/// `DELETE` of an object. Options come from the body (`DeleteOptions`) or, without one, the
/// query, as kube-apiserver reads them.
pub(crate) async fn delete(
    ctx: &Req<'_>,
    gvr: &Gvr,
    ns: Option<&str>,
    name: &str,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let mut options = if body.iter().all(u8::is_ascii_whitespace) {
        delete_options_from_query(ctx.query)?
    } else {
        match decode_body(ctx.content_type, body)? {
            Value::Object(m) => m,
            _ => return Err(ApiError::bad_request("the body must be a DeleteOptions object")),
        }
    };
    options.insert("kind".into(), json!("DeleteOptions"));
    options.insert("apiVersion".into(), json!("meta.k8s.io/v1"));
    let key = gvr.key(ns.unwrap_or_default(), name);
    let app = Application::request(
        &ctx.shared.remote.node,
        key,
        Verb::Delete,
        "",
        Some(to_bytes(&Value::Object(options))),
        None,
    );
    match apply(ctx, gvr, &app).await? {
        // The cloud's DynamicController returns nothing for a delete; kube-apiserver then
        // answers with a success Status naming the object.
        Some(obj) if obj.is_object() => render(ctx, gvr, Shape::One(obj), StatusCode::OK),
        _ => {
            let mut status = success_status(Some(json!({"name": name, "kind": gvr.plural})));
            status["code"] = json!(200);
            if !gvr.group.is_empty() {
                status["details"]["group"] = json!(gvr.group);
            }
            Ok(super::server::json_response(StatusCode::OK, &status))
        }
    }
}

/// Sends the application and completes the returned object's type fields.
async fn apply(ctx: &Req<'_>, gvr: &Gvr, app: &Application) -> Result<Option<Value>, ApiError> {
    let shared = ctx.shared;
    let mut result = application::apply(&shared.remote, app, shared.opts.application_timeout).await?;
    if let Some(Value::Object(obj)) = result.as_mut() {
        obj.entry("apiVersion").or_insert_with(|| json!(gvr.api_version()));
        obj.entry("kind").or_insert_with(|| json!(gvr.kind));
    }
    Ok(result)
}

/// The request object: a JSON (or YAML) object of this resource's kind. Missing `apiVersion`
/// and `kind` are filled in; wrong ones are a 400.
fn decode_object(ctx: &Req<'_>, gvr: &Gvr, body: &[u8]) -> Result<Value, ApiError> {
    let mut obj = decode_body(ctx.content_type, body)?;
    let Some(map) = obj.as_object_mut() else {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    };
    let expected_version = gvr.api_version();
    match map.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => {
            map.insert("apiVersion".into(), json!(expected_version));
        }
        Some(v) if v != expected_version => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({expected_version})"
            )));
        }
        Some(_) => {}
    }
    match map.get("kind").and_then(Value::as_str) {
        None | Some("") => {
            map.insert("kind".into(), json!(gvr.kind));
        }
        Some(k) if k != gvr.kind => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({}) of {}",
                gvr.kind,
                group_resource(gvr)
            )));
        }
        Some(_) => {}
    }
    if map.get("metadata").is_some_and(|m| !m.is_object() && !m.is_null()) {
        return Err(ApiError::bad_request("metadata must be an object"));
    }
    Ok(obj)
}

/// kube-apiserver's `EnsureObjectNamespaceMatchesRequestNamespace`: an object without a
/// namespace gets the request's, a cluster-scoped object loses its own, a mismatch is a 400.
fn ensure_namespace(gvr: &Gvr, obj: &mut Value, ns: Option<&str>) -> Result<(), ApiError> {
    let requested = if gvr.namespaced { ns.unwrap_or_default() } else { "" };
    let current = obj.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default().to_owned();
    if current == requested {
        return Ok(());
    }
    if current.is_empty() || requested.is_empty() {
        if let Some(meta) = kubeedge_kube_serve::object::meta_mut(obj) {
            if requested.is_empty() {
                meta.remove("namespace");
            } else {
                meta.insert("namespace".into(), json!(requested));
            }
        }
        return Ok(());
    }
    Err(ApiError::bad_request("the namespace of the provided object does not match the namespace sent on the request"))
}

/// `CreateOptions` / `UpdateOptions` from the query, as the handlers decode them.
fn write_options(ctx: &Req<'_>, kind: &str) -> Vec<u8> {
    to_bytes(&Value::Object(write_options_map(ctx, kind)))
}

fn write_options_map(ctx: &Req<'_>, kind: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("kind".into(), json!(kind));
    m.insert("apiVersion".into(), json!("meta.k8s.io/v1"));
    let pairs = query_pairs(ctx.query);
    let dry_run: Vec<&str> =
        pairs.iter().filter(|(k, v)| k == "dryRun" && !v.is_empty()).map(|(_, v)| v.as_str()).collect();
    if !dry_run.is_empty() {
        m.insert("dryRun".into(), json!(dry_run));
    }
    for key in ["fieldManager", "fieldValidation"] {
        if let Some((_, v)) = pairs.iter().find(|(k, v)| k == key && !v.is_empty()) {
            m.insert(key.into(), json!(v));
        }
    }
    m
}

fn delete_options_from_query(query: &str) -> Result<Map<String, Value>, ApiError> {
    let mut m = Map::new();
    let pairs = query_pairs(query);
    let first = |key: &str| pairs.iter().find(|(k, v)| k == key && !v.is_empty()).map(|(_, v)| v.as_str());
    if let Some(g) = first("gracePeriodSeconds") {
        let g: i64 =
            g.parse().map_err(|_| ApiError::bad_request(format!("invalid value for gracePeriodSeconds: {g:?}")))?;
        m.insert("gracePeriodSeconds".into(), json!(g));
    }
    if let Some(p) = first("propagationPolicy") {
        m.insert("propagationPolicy".into(), json!(p));
    }
    if let Some(o) = first("orphanDependents") {
        m.insert("orphanDependents".into(), json!(!matches!(o.to_ascii_lowercase().as_str(), "false" | "0")));
    }
    let dry_run: Vec<&str> =
        pairs.iter().filter(|(k, v)| k == "dryRun" && !v.is_empty()).map(|(_, v)| v.as_str()).collect();
    if !dry_run.is_empty() {
        m.insert("dryRun".into(), json!(dry_run));
    }
    Ok(m)
}

fn invalid_patch_options(field: &str, msg: &str) -> ApiError {
    ApiError::invalid("PatchOptions.meta.k8s.io", "", vec![(field.to_owned(), msg.to_owned())])
}

fn to_bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}
