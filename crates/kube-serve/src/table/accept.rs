//! `Accept` header negotiation: which of JSON, YAML, protobuf or a `Table` a client asked for.

use serde_json::{Map, Value};

/// The response form a client asked for in its `Accept` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptKind {
    /// Plain JSON (also `*/*` and an empty header).
    Json,
    /// `application/yaml`
    Yaml,
    /// `application/json;as=Table;g=meta.k8s.io;v=…`
    Table {
        /// `v1` or `v1beta1`
        version: &'static str,
    },
    /// `as=PartialObjectMetadata` (single object)
    PartialObjectMetadata {
        /// `v1` or `v1beta1`
        version: &'static str,
    },
    /// `as=PartialObjectMetadataList`
    PartialObjectMetadataList {
        /// `v1` or `v1beta1`
        version: &'static str,
    },
    /// `application/json;g=apidiscovery.k8s.io;v=v2|v2beta1;as=APIGroupDiscoveryList`
    AggregatedDiscovery {
        /// `true` for `v2`, `false` for `v2beta1`
        v2: bool,
    },
    /// `application/vnd.kubernetes.protobuf`, preferred; `json_too` when the header also
    /// accepts JSON (client-go sends `application/vnd.kubernetes.protobuf, */*`), to answer with
    /// when an object has no protobuf form.
    Protobuf {
        /// JSON is acceptable as well.
        json_too: bool,
    },
    /// Nothing acceptable we can produce (answer 406).
    Unsupported,
}

impl AcceptKind {
    /// The `apiVersion` of the meta/discovery document this form asks for, if any.
    pub fn api_version(&self) -> Option<&'static str> {
        match self {
            AcceptKind::Table { version }
            | AcceptKind::PartialObjectMetadata { version }
            | AcceptKind::PartialObjectMetadataList { version } => {
                Some(if *version == "v1beta1" { "meta.k8s.io/v1beta1" } else { "meta.k8s.io/v1" })
            }
            AcceptKind::AggregatedDiscovery { v2 } => {
                Some(if *v2 { "apidiscovery.k8s.io/v2" } else { "apidiscovery.k8s.io/v2beta1" })
            }
            _ => None,
        }
    }

    /// The `Content-Type` to answer with. Clients check it: client-go only treats a discovery
    /// response as aggregated when the content type says so.
    pub fn content_type(&self) -> &'static str {
        match self {
            AcceptKind::Yaml => "application/yaml",
            AcceptKind::Table { version: "v1beta1" } => "application/json;as=Table;v=v1beta1;g=meta.k8s.io",
            AcceptKind::Table { .. } => "application/json;as=Table;v=v1;g=meta.k8s.io",
            AcceptKind::PartialObjectMetadata { version: "v1beta1" } => {
                "application/json;as=PartialObjectMetadata;v=v1beta1;g=meta.k8s.io"
            }
            AcceptKind::PartialObjectMetadata { .. } => "application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io",
            AcceptKind::PartialObjectMetadataList { version: "v1beta1" } => {
                "application/json;as=PartialObjectMetadataList;v=v1beta1;g=meta.k8s.io"
            }
            AcceptKind::PartialObjectMetadataList { .. } => {
                "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io"
            }
            AcceptKind::AggregatedDiscovery { v2: true } => {
                "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
            }
            AcceptKind::AggregatedDiscovery { v2: false } => {
                "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
            }
            AcceptKind::Protobuf { .. } => crate::protobuf::CONTENT_TYPE,
            AcceptKind::Json | AcceptKind::Unsupported => "application/json",
        }
    }
}

fn accept_one(media: &str, params: &Map<String, Value>) -> Option<AcceptKind> {
    let p = |k: &str| params.get(k).and_then(Value::as_str).unwrap_or("");
    let meta_version = match p("v") {
        "v1" => Some("v1"),
        "v1beta1" => Some("v1beta1"),
        _ => None,
    };
    match media {
        "application/json" | "*/*" | "application/*" => match p("as") {
            "" => Some(AcceptKind::Json),
            "Table" if p("g") == "meta.k8s.io" => meta_version.map(|version| AcceptKind::Table { version }),
            "PartialObjectMetadata" if p("g") == "meta.k8s.io" => {
                meta_version.map(|version| AcceptKind::PartialObjectMetadata { version })
            }
            "PartialObjectMetadataList" if p("g") == "meta.k8s.io" => {
                meta_version.map(|version| AcceptKind::PartialObjectMetadataList { version })
            }
            "APIGroupDiscoveryList" if p("g") == "apidiscovery.k8s.io" => match p("v") {
                "v2" => Some(AcceptKind::AggregatedDiscovery { v2: true }),
                "v2beta1" => Some(AcceptKind::AggregatedDiscovery { v2: false }),
                _ => None,
            },
            _ => None,
        },
        "application/yaml" if p("as").is_empty() => Some(AcceptKind::Yaml),
        crate::protobuf::CONTENT_TYPE if p("as").is_empty() => Some(AcceptKind::Protobuf { json_too: false }),
        _ => None,
    }
}

/// Picks the first form we can serve from an `Accept` header, honouring `q` weights
/// (entries with `q=0` are skipped). Protobuf, when preferred, notes whether JSON would do too.
pub fn parse_accept(accept: &str) -> AcceptKind {
    pick_accept(accept, true)
}

/// [`parse_accept`] for a server that answers only in JSON or YAML: protobuf entries are
/// passed over, so `protobuf, application/yaml` gets YAML and protobuf alone nothing (406).
pub fn parse_accept_no_protobuf(accept: &str) -> AcceptKind {
    pick_accept(accept, false)
}

fn pick_accept(accept: &str, protobuf: bool) -> AcceptKind {
    if accept.trim().is_empty() {
        return AcceptKind::Json;
    }
    let mut candidates: Vec<(f64, AcceptKind)> = Vec::new();
    for entry in accept.split(',') {
        let mut parts = entry.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let mut params = Map::new();
        for param in parts {
            if let Some((k, v)) = param.split_once('=') {
                params.insert(k.trim().to_string(), Value::String(v.trim().trim_matches('"').to_string()));
            }
        }
        let q = params.get("q").and_then(Value::as_str).and_then(|q| q.parse::<f64>().ok()).unwrap_or(1.0);
        if q <= 0.0 {
            continue;
        }
        if let Some(kind) = accept_one(&media, &params)
            && (protobuf || !matches!(kind, AcceptKind::Protobuf { .. }))
        {
            candidates.push((q, kind));
        }
    }
    // Stable sort keeps header order among equal weights.
    candidates.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap_or(std::cmp::Ordering::Equal));
    let json_too = candidates.iter().any(|c| c.1 == AcceptKind::Json);
    match candidates.first().map(|c| c.1) {
        Some(AcceptKind::Protobuf { .. }) => AcceptKind::Protobuf { json_too },
        Some(kind) => kind,
        None => AcceptKind::Unsupported,
    }
}
