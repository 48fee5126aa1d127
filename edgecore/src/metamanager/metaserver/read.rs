//! `get` and `list`, served from `meta_v2`.

use http::{Response, StatusCode};
use kubeedge_kube_serve::request::ListOptions;
use kubeedge_kube_serve::status::ApiError;
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
    let obj = from_row(gvr, &row).ok_or_else(|| {
        warn!(key = %row.key, "Stored object is not a JSON object.");
        ApiError::internal(format!("the stored {} {name:?} is not a JSON object", gvr.kind))
    })?;
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
        let Some(obj) = from_row(gvr, row) else {
            warn!(key = %row.key, "Skipped a stored object that is not a JSON object.");
            continue;
        };
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
