//! `get` and `list`, served from `meta_v2`.

use std::collections::HashMap;

use http::{Response, StatusCode};
use kubeedge_kube_serve::request::ListOptions;
use kubeedge_kube_serve::status::ApiError;
use kubeedge_model::constants::resource_type;
use serde_json::Value;
use tracing::warn;

use super::objects::{ContinueToken, Filter, from_row};
use super::server::{Body, Req, Shape, render};
use crate::metamanager::Gvr;

/// `pods`, or `leases.coordination.k8s.io`: how errors name a resource.
pub(crate) fn group_resource(gvr: &Gvr) -> String {
    if gvr.group.is_empty() { gvr.plural.to_owned() } else { format!("{}.{}", gvr.plural, gvr.group) }
}

/// A store failure, as the 500 a client sees.
pub(crate) fn store_error(e: kubeedge_metastore::Error) -> ApiError {
    warn!(error = %e, "MetaServer could not read the meta store.");
    ApiError::internal(format!("reading the local store: {e}"))
}

/// `GET` of one object (also its `status` subresource, which is the whole object).
pub(crate) async fn get(ctx: &Req<'_>, gvr: &Gvr, ns: Option<&str>, name: &str) -> Result<Response<Body>, ApiError> {
    let key = gvr.key(ns.unwrap_or_default(), name);
    let row = ctx.shared.store.get_v2(&key).await.map_err(store_error)?;
    let Some(row) = row.filter(|r| r.gvr == gvr.column()) else {
        return Err(ApiError::not_found(&group_resource(gvr), name));
    };
    let mut obj = from_row(gvr, &row).ok_or_else(|| {
        warn!(key = %row.key, "Stored object is not a JSON object.");
        ApiError::internal(format!("the stored {} {name:?} is not a JSON object", gvr.kind))
    })?;
    if is_pod(gvr) {
        let key = format!("{}/{}/{name}", ns.unwrap_or_default(), resource_type::POD_PATCH);
        if let Ok(Some(patch)) = ctx.shared.store.get(&key).await {
            obj = with_reported_status(obj, &patch.value);
        }
    }
    render(ctx, gvr, Shape::One(obj), StatusCode::OK)
}

/// `GET` of a collection, with selectors and `limit`/`continue` paging. The list's
/// resourceVersion is the store's highest, read before the rows, so a watch from it misses
/// nothing committed after them.
pub(crate) async fn list(
    ctx: &Req<'_>,
    gvr: &Gvr,
    ns: Option<&str>,
    opts: &ListOptions,
) -> Result<Response<Body>, ApiError> {
    let filter = Filter::new(opts)?;
    let after = match opts.continue_token.as_deref().filter(|c| !c.is_empty()) {
        Some(c) => Some(ContinueToken::decode(c)?),
        None => None,
    };
    let store = &ctx.shared.store;
    let current = store.max_resource_version().await.map_err(store_error)?;
    if opts.resource_version_match.as_deref() == Some("Exact")
        && let Some(rv) = opts.resource_version.as_deref()
        && rv != current.to_string()
    {
        // No snapshots are kept: only the current version can be listed exactly.
        return Err(ApiError::too_old_resource_version(rv, &current.to_string()));
    }
    let rows = store.list_v2(&gvr.column(), ns).await.map_err(store_error)?;
    let patches: HashMap<String, String> = if is_pod(gvr) {
        let rows = store.list_by_type(resource_type::POD_PATCH).await.map_err(store_error)?;
        rows.into_iter().map(|r| (r.key, r.value)).collect()
    } else {
        HashMap::new()
    };
    // Pages after the first report the first page's version, as kube-apiserver does, so the
    // client's watch starts early enough (the pages themselves show current data).
    let rv = after.as_ref().map_or(current, |t| t.rv);
    let limit = opts.limit.filter(|l| *l > 0).and_then(|l| usize::try_from(l).ok());
    let mut items = Vec::new();
    let mut last_key = None;
    let mut remaining = 0i64;
    for row in &rows {
        if after.as_ref().is_some_and(|t| row.key.as_str() <= t.key.as_str()) {
            continue;
        }
        let Some(mut obj) = from_row(gvr, row) else {
            warn!(key = %row.key, "Skipped a stored object that is not a JSON object.");
            continue;
        };
        if !patches.is_empty() {
            let at = |k: &str| obj.pointer(&format!("/metadata/{k}")).and_then(Value::as_str).unwrap_or_default();
            let key = format!("{}/{}/{}", at("namespace"), resource_type::POD_PATCH, at("name"));
            if let Some(patch) = patches.get(&key) {
                obj = with_reported_status(obj, patch);
            }
        }
        if !filter.matches(&obj) {
            continue;
        }
        if limit.is_some_and(|l| items.len() >= l) {
            remaining += 1;
            continue;
        }
        last_key = Some(row.key.clone());
        items.push(obj);
    }
    let continue_token = match last_key {
        Some(key) if remaining > 0 => Some(ContinueToken { key, rv }.encode()),
        _ => None,
    };
    // As kube-apiserver: the count is only given when no selector filtered the list.
    let remaining = (remaining > 0 && !filter.is_selective()).then_some(remaining);
    render(ctx, gvr, Shape::List { items, rv, continue_token, remaining }, StatusCode::OK)
}

fn is_pod(gvr: &Gvr) -> bool {
    gvr.group.is_empty() && gvr.plural == "pods"
}

/// A pod with the status edged last reported (its stored `podpatch`, a strategic-merge patch)
/// merged in, as upstream's MetaServer serves pods: the cloud does not send a pod back when
/// only the status its edge reported changed, so the stored pod keeps the status of its last
/// metadata or spec change. A patch pinned to another pod's UID (an older pod of that name) or
/// that does not apply is left out.
fn with_reported_status(pod: Value, patch: &str) -> Value {
    let Ok(patch) = serde_json::from_str::<Value>(patch) else { return pod };
    let uid = |v: &Value| v.pointer("/metadata/uid").and_then(Value::as_str).map(str::to_owned);
    if uid(&patch).is_some_and(|u| !u.is_empty() && Some(&u) != uid(&pod).as_ref()) {
        return pod;
    }
    match kubeedge_kube_serve::strategic_merge_patch(&pod, &patch, "Pod") {
        Ok(merged) => merged,
        Err(_) => pod,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::with_reported_status;

    #[test]
    fn a_pod_is_served_with_the_status_its_edge_reported() {
        let pod = json!({"metadata": {"name": "web", "uid": "u1", "resourceVersion": "3"},
            "spec": {"containers": [{"name": "c"}]}, "status": {"phase": "Pending"}});
        let patch = json!({"metadata": {"uid": "u1"}, "status": {"phase": "Running", "podIP": "10.0.0.9",
            "conditions": [{"type": "Ready", "status": "True"}]}});
        let merged = with_reported_status(pod.clone(), &patch.to_string());
        assert_eq!(merged["status"]["phase"], "Running");
        assert_eq!(merged["status"]["podIP"], "10.0.0.9");
        assert_eq!(merged["status"]["conditions"][0]["type"], "Ready");
        assert_eq!(merged["spec"], pod["spec"]);
        assert_eq!(merged["metadata"]["resourceVersion"], "3");
        // An older pod's patch, or garbage, changes nothing.
        let other = json!({"metadata": {"uid": "u0"}, "status": {"phase": "Failed"}});
        assert_eq!(with_reported_status(pod.clone(), &other.to_string()), pod);
        assert_eq!(with_reported_status(pod.clone(), "{not json"), pod);
    }
}
