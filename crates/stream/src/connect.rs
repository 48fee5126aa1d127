//! The JSON payload of `LOGS_CONNECT`, `EXEC_CONNECT`, `ATTACH_CONNECT` and `METRIC_CONNECT`
//! (upstream's `EdgedLogsConnection` and siblings marshalled by `encoding/json`):
//! `{"MessID": n, "url": <Go net/url.URL>, "header": {name: [values]}}`, plus `"method"` for
//! exec and attach. The cloud sets the URL's scheme to `http` and its host to the edge's
//! kubelet-style server (`127.0.0.1:10350`); the edge replays `request_uri()` there.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

/// Go's `net/url.URL` as `encoding/json` writes it (exported fields, Go's names and order).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct GoUrl {
    /// `http`.
    pub scheme: String,
    /// Unused here.
    pub opaque: String,
    /// Go's `*Userinfo` has no exported field: `null`, or `{}` when set; never used.
    pub user: Option<serde_json::Value>,
    /// `host:port`.
    pub host: String,
    /// The path, decoded.
    pub path: String,
    /// The path as sent, when its escaping is not the default one.
    pub raw_path: String,
    /// Go 1.19+.
    pub omit_host: bool,
    /// A `?` with an empty query.
    pub force_query: bool,
    /// The query, still encoded.
    pub raw_query: String,
    /// Unused in requests.
    pub fragment: String,
    /// Unused in requests.
    pub raw_fragment: String,
}

/// Whether Go's `url.PathEscape`-for-paths leaves `b` as is (`shouldEscape(c, encodePath)`).
fn path_safe(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-_.~$&+,/:;=@".contains(&b)
}

fn escape_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for &b in path.as_bytes() {
        if path_safe(b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Percent-decodes a path; `None` when an escape is malformed.
fn unescape_path(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl GoUrl {
    /// Parses an absolute `scheme://host/path?query` or an origin-form `/path?query` (as a
    /// request line carries it; scheme and host empty), as Go's `url.Parse` fills the fields.
    pub fn parse(target: &str) -> Option<Self> {
        let (rest, fragment) = target.split_once('#').map_or((target, ""), |(a, b)| (a, b));
        let (rest, raw_query, force_query) = match rest.split_once('?') {
            Some((a, q)) => (a, q, q.is_empty()),
            None => (rest, "", false),
        };
        let (scheme, host, raw_path) = match rest.split_once("://") {
            Some((scheme, after)) => {
                let (host, path) = after.find('/').map_or((after, ""), |i| after.split_at(i));
                (scheme, host, path)
            }
            None if rest.starts_with('/') => ("", "", rest),
            None => return None,
        };
        let path = unescape_path(raw_path)?;
        let raw_path = if escape_path(&path) == raw_path { String::new() } else { raw_path.to_owned() };
        Some(Self {
            scheme: scheme.to_owned(),
            host: host.to_owned(),
            path,
            raw_path,
            force_query,
            raw_query: raw_query.to_owned(),
            fragment: unescape_path(fragment).unwrap_or_default(),
            ..Self::default()
        })
    }

    /// Go's `EscapedPath`: `RawPath` when it is a valid encoding of `Path`, else `Path` escaped.
    pub fn escaped_path(&self) -> String {
        if !self.raw_path.is_empty() && unescape_path(&self.raw_path).as_deref() == Some(self.path.as_str()) {
            return self.raw_path.clone();
        }
        escape_path(&self.path)
    }

    /// What goes on the request line: the escaped path and the query (Go's `RequestURI`).
    pub fn request_uri(&self) -> String {
        let mut out = self.escaped_path();
        if out.is_empty() {
            out.push('/');
        }
        if self.force_query || !self.raw_query.is_empty() {
            out.push('?');
            out.push_str(&self.raw_query);
        }
        out
    }
}

/// Go's `http.Header` (`null` when nil).
fn header_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, Vec<String>>, D::Error> {
    Ok(Option::<BTreeMap<String, Vec<String>>>::deserialize(d)?.unwrap_or_default())
}

/// A `*_CONNECT` payload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectRequest {
    /// The connection id (also the message's connect id).
    #[serde(rename = "MessID")]
    pub mess_id: u64,
    /// The request's URL, rewritten by the cloud to the edge's kubelet-style server.
    #[serde(default)]
    pub url: GoUrl,
    /// The request's headers.
    #[serde(default, deserialize_with = "header_map")]
    pub header: BTreeMap<String, Vec<String>>,
    /// The HTTP method, for exec and attach (absent for logs and metrics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_is_gos() {
        let url =
            GoUrl::parse("http://127.0.0.1:10350/containerLogs/default/web/nginx?follow=true&tailLines=10").unwrap();
        let req = ConnectRequest {
            mess_id: 7,
            url,
            header: BTreeMap::from([("Accept".to_owned(), vec!["*/*".to_owned()])]),
            method: None,
        };
        // Go: json.Marshal(EdgedLogsConnection{...}) — field names and order.
        assert_eq!(
            serde_json::to_string(&req).unwrap(),
            r#"{"MessID":7,"url":{"Scheme":"http","Opaque":"","User":null,"Host":"127.0.0.1:10350","Path":"/containerLogs/default/web/nginx","RawPath":"","OmitHost":false,"ForceQuery":false,"RawQuery":"follow=true&tailLines=10","Fragment":"","RawFragment":""},"header":{"Accept":["*/*"]}}"#
        );
        let exec = ConnectRequest { method: Some("POST".into()), ..req.clone() };
        assert!(serde_json::to_string(&exec).unwrap().ends_with(r#""method":"POST"}"#));
        // What Go sends with a nil header and an older Go's URL (no OmitHost) parses.
        let go = r#"{"MessID":9,"url":{"Scheme":"http","Opaque":"","User":null,"Host":"127.0.0.1:10350","Path":"/stats/summary","RawPath":"","ForceQuery":false,"RawQuery":"","Fragment":"","RawFragment":""},"header":null}"#;
        let parsed: ConnectRequest = serde_json::from_str(go).unwrap();
        assert_eq!((parsed.mess_id, parsed.url.request_uri().as_str()), (9, "/stats/summary"));
        assert!(parsed.header.is_empty());
    }

    #[test]
    fn paths_keep_their_escaping() {
        let u = GoUrl::parse("/exec/ns/pod/c?command=sh&command=-c&command=echo%20hi&input=1").unwrap();
        assert_eq!((u.path.as_str(), u.raw_path.as_str()), ("/exec/ns/pod/c", ""));
        assert_eq!(u.request_uri(), "/exec/ns/pod/c?command=sh&command=-c&command=echo%20hi&input=1");
        let odd = GoUrl::parse("http://h/a%2Fb/c%20d").unwrap();
        assert_eq!((odd.path.as_str(), odd.raw_path.as_str()), ("/a/b/c d", "/a%2Fb/c%20d"));
        assert_eq!(odd.request_uri(), "/a%2Fb/c%20d");
        let spaced = GoUrl { path: "/x y".into(), ..GoUrl::default() };
        assert_eq!(spaced.request_uri(), "/x%20y");
        assert_eq!(GoUrl::parse("http://h?").unwrap().request_uri(), "/?");
        assert!(GoUrl::parse("no-slash").is_none());
        assert!(GoUrl::parse("/bad%zz").is_none());
        assert!(GoUrl::parse("/bad%+f").is_none());
    }
}
