//! Request decoding: URL paths into [`ApiPath`] (the same shapes kube-apiserver's
//! `RequestInfoResolver` recognises), HTTP methods into [`Verb`]s, and list/watch query
//! strings into [`ListOptions`].

use crate::selector::{FieldSelector, LabelSelector};
use crate::status::ApiError;

/// What a URL path addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiPath {
    /// `/`
    Root,
    /// `/version`
    Version,
    /// `/api`
    LegacyApi,
    /// `/api/v1`
    LegacyVersion,
    /// `/apis`
    Groups,
    /// `/apis/{group}`
    Group {
        /// The API group.
        group: String,
    },
    /// `/apis/{group}/{version}`
    GroupVersion {
        /// The API group.
        group: String,
        /// The group version.
        version: String,
    },
    /// A resource, collection or subresource.
    Resource(ResourceRequest),
    /// Anything else (`/healthz`, `/openapi/v2`, malformed paths, …).
    Other,
}

/// A request for a resource collection, object or subresource.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResourceRequest {
    /// API group, `""` for the core group.
    pub group: String,
    /// API version, e.g. `v1`.
    pub version: String,
    /// Namespace from the path; `None` for cluster-scoped resources, all-namespaces lists
    /// and the namespace objects themselves (`/api/v1/namespaces/{name}`).
    pub namespace: Option<String>,
    /// Resource plural, e.g. `pods`.
    pub resource: String,
    /// Object name, when the path names one.
    pub name: Option<String>,
    /// Subresource (`status`, `log`, …); path segments after it (proxy paths) are dropped.
    pub subresource: Option<String>,
}

/// Decodes `%XX` escapes; invalid escapes are kept literally and invalid UTF-8 is replaced.
pub fn percent_decode(s: &str) -> String {
    percent_decode_bytes(s.as_bytes(), false)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn percent_decode_bytes(bytes: &[u8], plus_as_space: bool) -> String {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b'+' if plus_as_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses a URL path (without the query string).
pub fn parse_path(path: &str) -> ApiPath {
    let trimmed = path.trim_matches('/');
    if trimmed.is_empty() {
        return ApiPath::Root;
    }
    let parts: Vec<String> = trimmed.split('/').map(percent_decode).collect();
    if parts.iter().any(|p| p.is_empty()) {
        return ApiPath::Other;
    }
    match parts[0].as_str() {
        "version" if parts.len() == 1 => ApiPath::Version,
        "api" => match parts.len() {
            1 => ApiPath::LegacyApi,
            2 if parts[1] == "v1" => ApiPath::LegacyVersion,
            _ if parts[1] == "v1" => resource_path(String::new(), parts[1].clone(), &parts[2..]),
            _ => ApiPath::Other,
        },
        "apis" => match parts.len() {
            1 => ApiPath::Groups,
            2 => ApiPath::Group { group: parts[1].clone() },
            3 => ApiPath::GroupVersion { group: parts[1].clone(), version: parts[2].clone() },
            _ => resource_path(parts[1].clone(), parts[2].clone(), &parts[3..]),
        },
        _ => ApiPath::Other,
    }
}

/// Segments after `/api/v1` or `/apis/{g}/{v}`; never empty.
fn resource_path(group: String, version: String, parts: &[String]) -> ApiPath {
    let mut namespace = None;
    let mut rest = parts;
    if parts[0] == "namespaces" && parts.len() > 1 {
        // `/namespaces/{ns}/{resource}...` addresses a namespaced resource, but
        // `/namespaces/{name}` and `/namespaces/{name}/{status|finalize}` the namespace itself.
        if parts.len() > 2 && parts[2] != "status" && parts[2] != "finalize" {
            namespace = Some(parts[1].clone());
            rest = &parts[2..];
        }
    }
    let mut req = ResourceRequest { group, version, namespace, resource: rest[0].clone(), ..Default::default() };
    req.name = rest.get(1).cloned();
    req.subresource = rest.get(2).cloned();
    ApiPath::Resource(req)
}

/// The Kubernetes API verb of a resource request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    /// GET of a named object.
    Get,
    /// GET of a collection.
    List,
    /// GET with `watch=true`.
    Watch,
    /// POST.
    Create,
    /// PUT.
    Update,
    /// PATCH.
    Patch,
    /// DELETE of a named object.
    Delete,
    /// DELETE of a collection.
    DeleteCollection,
}

impl Verb {
    /// The lower-case verb name as used in RBAC and discovery (`deletecollection`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
            Verb::DeleteCollection => "deletecollection",
        }
    }
}

/// Maps an HTTP method to a verb; `None` for methods the API does not serve.
///
/// `GET`/`HEAD` with `watch_param` is a watch (also for a named object, which kube-apiserver
/// turns into a watch filtered by `metadata.name`).
pub fn verb(method: &str, has_name: bool, watch_param: bool) -> Option<Verb> {
    match method.to_ascii_uppercase().as_str() {
        "GET" | "HEAD" if watch_param => Some(Verb::Watch),
        "GET" | "HEAD" if has_name => Some(Verb::Get),
        "GET" | "HEAD" => Some(Verb::List),
        "POST" => Some(Verb::Create),
        "PUT" => Some(Verb::Update),
        "PATCH" => Some(Verb::Patch),
        "DELETE" if has_name => Some(Verb::Delete),
        "DELETE" => Some(Verb::DeleteCollection),
        _ => None,
    }
}

/// The list/watch query parameters (`metav1.ListOptions`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListOptions {
    /// `labelSelector`
    pub label_selector: Option<String>,
    /// `fieldSelector`
    pub field_selector: Option<String>,
    /// `limit` (0 or absent: no limit)
    pub limit: Option<i64>,
    /// `continue`
    pub continue_token: Option<String>,
    /// `resourceVersion`
    pub resource_version: Option<String>,
    /// `resourceVersionMatch` (`Exact`, `NotOlderThan`)
    pub resource_version_match: Option<String>,
    /// `watch`
    pub watch: bool,
    /// `allowWatchBookmarks`
    pub allow_watch_bookmarks: bool,
    /// `timeoutSeconds`
    pub timeout_seconds: Option<u64>,
    /// `sendInitialEvents`
    pub send_initial_events: Option<bool>,
}

impl ListOptions {
    /// Parses the label and field selectors (absent means everything); a malformed selector is
    /// a 400 BadRequest.
    pub fn selectors(&self) -> Result<(LabelSelector, FieldSelector), ApiError> {
        let labels = LabelSelector::parse(self.label_selector.as_deref().unwrap_or(""))?;
        let fields = FieldSelector::parse(self.field_selector.as_deref().unwrap_or(""))?;
        Ok((labels, fields))
    }
}

/// Splits a query string into decoded `(key, value)` pairs (`+` is a space).
pub fn query_pairs(q: &str) -> Vec<(String, String)> {
    q.trim_start_matches('?')
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode_bytes(k.as_bytes(), true), percent_decode_bytes(v.as_bytes(), true))
        })
        .collect()
}

/// The first value of `key` in a query string, decoded.
pub fn query_param(q: &str, key: &str) -> Option<String> {
    query_pairs(q).into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// Go apimachinery's query bool: anything but `false`/`0` (case-insensitive) is true,
/// including an empty value.
fn query_bool(v: &str) -> bool {
    !matches!(v.to_ascii_lowercase().as_str(), "false" | "0")
}

/// Parses list/watch query parameters; the first occurrence of a key wins, unknown keys are
/// ignored, and malformed numbers give a 400 BadRequest.
pub fn parse_query(q: &str) -> Result<ListOptions, ApiError> {
    let mut o = ListOptions::default();
    let mut seen = std::collections::HashSet::new();
    for (k, v) in query_pairs(q) {
        if !seen.insert(k.clone()) {
            continue;
        }
        match k.as_str() {
            "labelSelector" => o.label_selector = Some(v),
            "fieldSelector" => o.field_selector = Some(v),
            "limit" => {
                o.limit = Some(
                    v.parse::<i64>().map_err(|_| ApiError::bad_request(format!("invalid value for limit: {v:?}")))?,
                )
            }
            "continue" => o.continue_token = Some(v),
            "resourceVersion" => o.resource_version = Some(v),
            "resourceVersionMatch" => o.resource_version_match = Some(v),
            "watch" => o.watch = query_bool(&v),
            "allowWatchBookmarks" => o.allow_watch_bookmarks = query_bool(&v),
            "timeoutSeconds" => {
                o.timeout_seconds = Some(
                    v.parse::<u64>()
                        .map_err(|_| ApiError::bad_request(format!("invalid value for timeoutSeconds: {v:?}")))?,
                )
            }
            "sendInitialEvents" => o.send_initial_events = Some(query_bool(&v)),
            _ => {}
        }
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(p: &str) -> ResourceRequest {
        match parse_path(p) {
            ApiPath::Resource(r) => r,
            other => panic!("{p}: expected resource, got {other:?}"),
        }
    }

    #[test]
    fn discovery_paths() {
        assert_eq!(parse_path("/"), ApiPath::Root);
        assert_eq!(parse_path(""), ApiPath::Root);
        assert_eq!(parse_path("/version"), ApiPath::Version);
        assert_eq!(parse_path("/version/"), ApiPath::Version);
        assert_eq!(parse_path("/api"), ApiPath::LegacyApi);
        assert_eq!(parse_path("/api/v1"), ApiPath::LegacyVersion);
        assert_eq!(parse_path("/api/v2"), ApiPath::Other);
        assert_eq!(parse_path("/apis"), ApiPath::Groups);
        assert_eq!(parse_path("/apis/apps"), ApiPath::Group { group: "apps".into() });
        assert_eq!(parse_path("/apis/apps/v1"), ApiPath::GroupVersion { group: "apps".into(), version: "v1".into() });
        assert_eq!(parse_path("/healthz"), ApiPath::Other);
        assert_eq!(parse_path("/api/v1/namespaces//pods"), ApiPath::Other);
    }

    #[test]
    fn core_resources() {
        let r = res("/api/v1/namespaces/default/pods/nginx/status");
        assert_eq!(r.group, "");
        assert_eq!(r.version, "v1");
        assert_eq!(r.namespace.as_deref(), Some("default"));
        assert_eq!(r.resource, "pods");
        assert_eq!(r.name.as_deref(), Some("nginx"));
        assert_eq!(r.subresource.as_deref(), Some("status"));

        let r = res("/api/v1/namespaces/default/pods");
        assert_eq!((r.namespace.as_deref(), r.resource.as_str(), r.name), (Some("default"), "pods", None));

        let r = res("/api/v1/pods");
        assert_eq!((r.namespace, r.resource.as_str(), r.name), (None, "pods", None));

        let r = res("/api/v1/nodes/n1/status");
        assert_eq!((r.namespace, r.name.as_deref(), r.subresource.as_deref()), (None, Some("n1"), Some("status")));

        let r = res("/api/v1/namespaces/ns/pods/p/proxy/some/path");
        assert_eq!(r.subresource.as_deref(), Some("proxy"));
    }

    #[test]
    fn namespace_special_case() {
        let r = res("/api/v1/namespaces");
        assert_eq!((r.resource.as_str(), r.name, r.namespace), ("namespaces", None, None));
        let r = res("/api/v1/namespaces/kube-system");
        assert_eq!((r.resource.as_str(), r.name.as_deref(), r.namespace), ("namespaces", Some("kube-system"), None));
        let r = res("/api/v1/namespaces/kube-system/status");
        assert_eq!(
            (r.resource.as_str(), r.name.as_deref(), r.subresource.as_deref()),
            ("namespaces", Some("kube-system"), Some("status"))
        );
        let r = res("/api/v1/namespaces/x/finalize");
        assert_eq!(r.subresource.as_deref(), Some("finalize"));
        let r = res("/api/v1/namespaces/x/configmaps");
        assert_eq!((r.resource.as_str(), r.namespace.as_deref()), ("configmaps", Some("x")));
    }

    #[test]
    fn group_resources() {
        let r = res("/apis/apps/v1/namespaces/default/deployments/web/scale");
        assert_eq!(r.group, "apps");
        assert_eq!(r.version, "v1");
        assert_eq!(r.resource, "deployments");
        assert_eq!(r.subresource.as_deref(), Some("scale"));
        let r = res("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/foos.example.com");
        assert_eq!(r.name.as_deref(), Some("foos.example.com"));
        assert_eq!(r.namespace, None);
        let r = res("/apis/coordination.k8s.io/v1/leases");
        assert_eq!(r.resource, "leases");
    }

    #[test]
    fn percent_decoding() {
        let r = res("/api/v1/namespaces/default/configmaps/a%3Ab%20c");
        assert_eq!(r.name.as_deref(), Some("a:b c"));
        let r = res("/api/v1/namespaces/default/configmaps/x%2Fy");
        assert_eq!(r.name.as_deref(), Some("x/y"));
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("a+b"), "a+b");
    }

    #[test]
    fn verbs() {
        assert_eq!(verb("GET", true, false), Some(Verb::Get));
        assert_eq!(verb("get", false, false), Some(Verb::List));
        assert_eq!(verb("GET", false, true), Some(Verb::Watch));
        assert_eq!(verb("GET", true, true), Some(Verb::Watch));
        assert_eq!(verb("POST", false, false), Some(Verb::Create));
        assert_eq!(verb("PUT", true, false), Some(Verb::Update));
        assert_eq!(verb("PATCH", true, false), Some(Verb::Patch));
        assert_eq!(verb("DELETE", true, false), Some(Verb::Delete));
        assert_eq!(verb("DELETE", false, false), Some(Verb::DeleteCollection));
        assert_eq!(verb("OPTIONS", false, false), None);
        assert_eq!(Verb::DeleteCollection.as_str(), "deletecollection");
    }

    #[test]
    fn query_options() {
        let o = parse_query(
            "labelSelector=app%3Dweb%2Ctier+in+(a%2Cb)&fieldSelector=spec.nodeName%3Dn1&limit=500\
             &continue=abc&resourceVersion=0&resourceVersionMatch=NotOlderThan&watch=1\
             &allowWatchBookmarks=true&timeoutSeconds=300&sendInitialEvents=true&unknown=z",
        )
        .expect("valid query");
        assert_eq!(o.label_selector.as_deref(), Some("app=web,tier in (a,b)"));
        assert_eq!(o.field_selector.as_deref(), Some("spec.nodeName=n1"));
        assert_eq!(o.limit, Some(500));
        assert_eq!(o.continue_token.as_deref(), Some("abc"));
        assert_eq!(o.resource_version.as_deref(), Some("0"));
        assert_eq!(o.resource_version_match.as_deref(), Some("NotOlderThan"));
        assert!(o.watch);
        assert!(o.allow_watch_bookmarks);
        assert_eq!(o.timeout_seconds, Some(300));
        assert_eq!(o.send_initial_events, Some(true));
    }

    #[test]
    fn selectors_from_options() {
        let o = parse_query("labelSelector=app%3Dweb&fieldSelector=metadata.name%3Dx").expect("q");
        let (l, f) = o.selectors().expect("valid");
        assert_eq!(l.to_string(), "app=web");
        assert_eq!(f.exact_match("metadata.name"), Some("x"));
        let (l, f) = ListOptions::default().selectors().expect("empty");
        assert!(l.is_empty() && f.is_empty());
        let bad = parse_query("labelSelector=a+in+(").expect("q").selectors().map(|_| ()).expect_err("bad");
        assert_eq!(bad.code, 400);
    }

    #[test]
    fn query_edge_cases() {
        assert_eq!(parse_query("").expect("empty"), ListOptions::default());
        let o = parse_query("?watch&watch=false").expect("bare watch");
        assert!(o.watch, "bare key is true and the first occurrence wins");
        assert!(!parse_query("watch=false").expect("q").watch);
        assert!(!parse_query("watch=0").expect("q").watch);
        assert_eq!(parse_query("sendInitialEvents=false").expect("q").send_initial_events, Some(false));
        let e = parse_query("limit=ten").expect_err("bad limit");
        assert_eq!(e.code, 400);
        assert_eq!(parse_query("timeoutSeconds=-1").expect_err("negative").reason, "BadRequest");
        assert_eq!(query_param("a=1&b=x%20y", "b").as_deref(), Some("x y"));
    }
}
