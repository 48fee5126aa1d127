//! The routing table: Rules joined with their RuleEndpoints, checked, and matched against REST
//! requests and edge messages. Pure: built from the watched objects by the table's owner
//! ([`super::watch`]), read through snapshots by everyone else.

use std::collections::BTreeMap;
use std::sync::Arc;

use kubeedge_apis::rules::v1::{RuleEndpointSpec, RuleEndpointType, RuleSpec};

/// `{namespace}/{name}`.
pub type Key = (String, String);

/// Where a rule takes its messages.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)] // The variants say what their fields are.
pub enum Source {
    /// `POST /{node}/{namespace}/{path…}` on the REST listener: the path's segments (`*` for a
    /// `{variable}` segment).
    Rest { segments: Vec<String> },
    /// Messages published on `topic` (`{namespace}/{topic}`) on `node`'s broker.
    EventBus { node: String, topic: String },
    /// Calls of `target_url` made through `node`'s ServiceBus.
    ServiceBus { node: String, target_url: String },
}

/// Where a rule delivers them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)] // The variants say what their fields are.
pub enum Target {
    /// `POST` to a URL in the cloud.
    Rest { url: String },
    /// A publish on `topic` on the request's node.
    EventBus { topic: String },
    /// An HTTP call of `http://127.0.0.1:{port}{path}` on the request's node.
    ServiceBus { port: u16, path: String },
}

/// A usable rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The rule's namespace.
    pub namespace: String,
    /// The rule's name.
    pub name: String,
    /// Where from.
    pub source: Source,
    /// Where to.
    pub target: Target,
}

/// What the edge must be told for a rule whose source is on it: subscribe to a topic, allow a
/// target URL.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
#[allow(missing_docs)] // The variants say what their fields are.
pub enum EdgeSetup {
    /// `subscribe` to `{namespace}/{topic}` (eventbus → rest).
    Subscribe { node: String, topic: String },
    /// `start` allowing `target_url` (servicebus → rest).
    Allow { node: String, target_url: String },
}

impl EdgeSetup {
    /// The node it concerns.
    pub fn node(&self) -> &str {
        match self {
            Self::Subscribe { node, .. } | Self::Allow { node, .. } => node,
        }
    }
}

/// The checked rules.
#[derive(Debug, Default)]
pub struct Table {
    routes: Vec<Arc<Route>>,
    /// Rules that cannot route, with why (also written to their status).
    pub broken: BTreeMap<Key, String>,
}

/// Path segments, `{…}` as `*`.
fn segments(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(|s| if s.starts_with('{') && s.ends_with('}') { "*".to_owned() } else { s.to_owned() })
        .collect()
}

/// Go's `path.Clean` for the relative topics rules name: no empty or `.` segments.
pub fn clean_topic(topic: &str) -> String {
    topic.split('/').filter(|s| !s.is_empty() && *s != ".").collect::<Vec<_>>().join("/")
}

fn prop<'a>(
    map: &'a BTreeMap<String, String>,
    key: &str,
    side: &str,
    kind: RuleEndpointType,
) -> Result<&'a str, String> {
    match map.get(key).map(|v| v.trim()) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(format!("{key:?} property missed in {side} when ruleEndpoint is {kind:?}", kind = kind.as_str())),
    }
}

fn source(ns: &str, spec: &RuleSpec, kind: RuleEndpointType) -> Result<Source, String> {
    let r = &spec.source_resource;
    match kind {
        RuleEndpointType::Rest => Ok(Source::Rest { segments: segments(prop(r, "path", "sourceResource", kind)?) }),
        RuleEndpointType::EventBus => {
            let topic = clean_topic(prop(r, "topic", "sourceResource", kind)?);
            let node = prop(r, "node_name", "sourceResource", kind)?.to_owned();
            Ok(Source::EventBus { node, topic: format!("{ns}/{topic}") })
        }
        RuleEndpointType::ServiceBus => {
            let target_url = prop(r, "target_url", "sourceResource", kind)?.to_owned();
            let node = prop(r, "node_name", "sourceResource", kind)?.to_owned();
            Ok(Source::ServiceBus { node, target_url })
        }
    }
}

fn target(spec: &RuleSpec, ep: &RuleEndpointSpec) -> Result<Target, String> {
    let (r, kind) = (&spec.target_resource, ep.rule_endpoint_type);
    match kind {
        RuleEndpointType::Rest => {
            let url = prop(r, "resource", "targetResource", kind)?;
            if !url.starts_with("http://") {
                return Err(format!(
                    "targetResource resource {url:?}: only http:// URLs are supported as rest targets by this build"
                ));
            }
            Ok(Target::Rest { url: url.to_owned() })
        }
        RuleEndpointType::EventBus => {
            let topic = clean_topic(prop(r, "topic", "targetResource", kind)?);
            if topic.contains(['+', '#']) {
                return Err(format!("targetResource topic {topic:?}: a publish topic has no wildcards"));
            }
            Ok(Target::EventBus { topic })
        }
        RuleEndpointType::ServiceBus => {
            let path = prop(r, "path", "targetResource", kind)?;
            let port = prop(&ep.properties, "service_port", "property", kind)?;
            let port: u16 =
                port.parse().ok().filter(|p| *p > 0).ok_or_else(|| "port must be in range 1-65535".to_owned())?;
            let path = if path.starts_with('/') { path.to_owned() } else { format!("/{path}") };
            Ok(Target::ServiceBus { port, path })
        }
    }
}

/// The route of one rule, or why it has none.
pub fn route(
    ns: &str,
    name: &str,
    spec: &RuleSpec,
    endpoints: &BTreeMap<Key, RuleEndpointSpec>,
) -> Result<Route, String> {
    let find = |which: &str, ep: &str| {
        endpoints
            .get(&(ns.to_owned(), ep.to_owned()))
            .ok_or_else(|| format!("{which} ruleEndpoint {ns}/{ep} has not been created"))
    };
    let (src, dst) = (find("source", &spec.source)?, find("target", &spec.target)?);
    use RuleEndpointType::{EventBus, Rest, ServiceBus};
    let pair = (src.rule_endpoint_type, dst.rule_endpoint_type);
    if !matches!(pair, (Rest, EventBus) | (Rest, ServiceBus) | (EventBus, Rest) | (ServiceBus, Rest)) {
        return Err(format!(
            "the rule which is from source ruleEndpoint type {} to target ruleEndpoint type {} is not supported",
            pair.0, pair.1
        ));
    }
    Ok(Route {
        namespace: ns.to_owned(),
        name: name.to_owned(),
        source: source(ns, spec, src.rule_endpoint_type)?,
        target: target(spec, dst)?,
    })
}

impl Table {
    /// Checks every rule against the endpoints. Two rules with the same source (a REST path,
    /// a node's topic or target URL) in one namespace: the first by name routes, the other is
    /// broken (upstream's webhook refuses the second).
    pub fn build(rules: &BTreeMap<Key, RuleSpec>, endpoints: &BTreeMap<Key, RuleEndpointSpec>) -> Self {
        let mut table = Self::default();
        let mut taken: BTreeMap<(String, &'static str, String), String> = BTreeMap::new();
        for ((ns, name), spec) in rules {
            let r = match route(ns, name, spec, endpoints) {
                Ok(r) => r,
                Err(e) => {
                    table.broken.insert((ns.clone(), name.clone()), e);
                    continue;
                }
            };
            let id = match &r.source {
                Source::Rest { segments } => ("rest", segments.join("/")),
                Source::EventBus { node, topic } => ("eventbus", format!("{node} {topic}")),
                Source::ServiceBus { node, target_url } => ("servicebus", format!("{node} {target_url}")),
            };
            if let Some(first) = taken.get(&(ns.clone(), id.0, id.1.clone())) {
                table.broken.insert(
                    (ns.clone(), name.clone()),
                    format!("source properties exist in Rule {ns}/{first}: this rule routes nothing"),
                );
                continue;
            }
            taken.insert((ns.clone(), id.0, id.1), name.clone());
            table.routes.push(Arc::new(r));
        }
        table
    }

    /// The rules that route.
    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }

    /// The rule for a REST request's path (`/{node}/{namespace}/{rest…}`, without the query):
    /// the rule of that namespace whose path is the longest prefix of `rest` (whole segments;
    /// `{…}` matches any one), and what follows it.
    pub fn match_rest(&self, namespace: &str, rest: &str) -> Option<(Arc<Route>, String)> {
        let want: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
        let mut best: Option<(&Arc<Route>, usize)> = None;
        for r in &self.routes {
            let Source::Rest { segments } = &r.source else { continue };
            if r.namespace != namespace || segments.len() > want.len() {
                continue;
            }
            let hit = segments.iter().zip(&want).all(|(s, w)| s == "*" || s == w);
            if hit && best.is_none_or(|(_, n)| segments.len() > n) {
                best = Some((r, segments.len()));
            }
        }
        best.map(|(r, n)| (r.clone(), want[n..].join("/")))
    }

    /// The rule for a message published on `topic` on `node`.
    pub fn match_topic(&self, node: &str, topic: &str) -> Option<Arc<Route>> {
        let topic = clean_topic(topic);
        self.routes
            .iter()
            .find(|r| matches!(&r.source, Source::EventBus { node: n, topic: t } if n == node && *t == topic))
            .cloned()
    }

    /// The rule for an edge app's call of `target_url` on `node`.
    pub fn match_target_url(&self, node: &str, target_url: &str) -> Option<Arc<Route>> {
        self.routes
            .iter()
            .find(
                |r| matches!(&r.source, Source::ServiceBus { node: n, target_url: u } if n == node && u == target_url),
            )
            .cloned()
    }

    /// What the edges must be told for the rules whose source is on them.
    pub fn edge_setups(&self) -> std::collections::BTreeSet<EdgeSetup> {
        self.routes
            .iter()
            .filter_map(|r| match &r.source {
                Source::EventBus { node, topic } => {
                    Some(EdgeSetup::Subscribe { node: node.clone(), topic: topic.clone() })
                }
                Source::ServiceBus { node, target_url } => {
                    Some(EdgeSetup::Allow { node: node.clone(), target_url: target_url.clone() })
                }
                Source::Rest { .. } => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(kind: RuleEndpointType, props: &[(&str, &str)]) -> RuleEndpointSpec {
        RuleEndpointSpec {
            rule_endpoint_type: kind,
            properties: props.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        }
    }

    fn rule(src: &str, sr: &[(&str, &str)], dst: &str, tr: &[(&str, &str)]) -> RuleSpec {
        let m = |p: &[(&str, &str)]| p.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        RuleSpec { source: src.to_owned(), source_resource: m(sr), target: dst.to_owned(), target_resource: m(tr) }
    }

    fn key(ns: &str, n: &str) -> Key {
        (ns.to_owned(), n.to_owned())
    }

    fn endpoints() -> BTreeMap<Key, RuleEndpointSpec> {
        BTreeMap::from([
            (key("default", "rest"), ep(RuleEndpointType::Rest, &[])),
            (key("default", "bus"), ep(RuleEndpointType::EventBus, &[])),
            (key("default", "sb"), ep(RuleEndpointType::ServiceBus, &[("service_port", "9000")])),
        ])
    }

    #[test]
    fn rest_paths_match_whole_segments_in_their_namespace_longest_first() {
        let rules = BTreeMap::from([
            (key("default", "a"), rule("rest", &[("path", "/ccc")], "bus", &[("topic", "t1")])),
            (key("default", "b"), rule("rest", &[("path", "/ccc/{id}/x/")], "bus", &[("topic", "t2")])),
            (key("default", "c"), rule("rest", &[("path", "/ddd")], "sb", &[("path", "/url")])),
        ]);
        let t = Table::build(&rules, &endpoints());
        assert!(t.broken.is_empty(), "{:?}", t.broken);
        let (r, rest) = t.match_rest("default", "ccc/extra").unwrap();
        assert_eq!((r.name.as_str(), rest.as_str()), ("a", "extra"));
        let (r, rest) = t.match_rest("default", "/ccc/42/x/y").unwrap();
        assert_eq!((r.name.as_str(), rest.as_str()), ("b", "y"));
        assert!(t.match_rest("default", "cccd").is_none(), "no substring match (upstream's regex would)");
        assert!(t.match_rest("other", "ccc").is_none(), "another namespace");
        let (r, _) = t.match_rest("default", "ddd").unwrap();
        assert_eq!(r.target, Target::ServiceBus { port: 9000, path: "/url".to_owned() });
    }

    #[test]
    fn topics_and_urls_match_exactly_on_their_node() {
        let rules = BTreeMap::from([
            (
                key("default", "e"),
                rule("bus", &[("topic", "/test/"), ("node_name", "n1")], "rest", &[("resource", "http://x/echo")]),
            ),
            (
                key("default", "s"),
                rule(
                    "sb",
                    &[("target_url", "http://127.0.0.1:9000/echo"), ("node_name", "n1")],
                    "rest",
                    &[("resource", "http://x/")],
                ),
            ),
        ]);
        let t = Table::build(&rules, &endpoints());
        assert!(t.broken.is_empty(), "{:?}", t.broken);
        assert_eq!(t.match_topic("n1", "default/test").unwrap().name, "e");
        assert!(t.match_topic("n2", "default/test").is_none());
        assert!(t.match_topic("n1", "test").is_none(), "the topic is namespaced");
        assert_eq!(t.match_target_url("n1", "http://127.0.0.1:9000/echo").unwrap().name, "s");
        let setups: Vec<_> = t.edge_setups().into_iter().collect();
        assert_eq!(
            setups,
            vec![
                EdgeSetup::Subscribe { node: "n1".into(), topic: "default/test".into() },
                EdgeSetup::Allow { node: "n1".into(), target_url: "http://127.0.0.1:9000/echo".into() },
            ]
        );
    }

    #[test]
    fn broken_rules_say_why() {
        let rules = BTreeMap::from([
            (key("default", "missing"), rule("rest", &[("path", "/a")], "nowhere", &[("topic", "t")])),
            (key("default", "pair"), rule("bus", &[("topic", "t"), ("node_name", "n")], "sb", &[("path", "/p")])),
            (key("default", "nopath"), rule("rest", &[], "bus", &[("topic", "t")])),
            (key("default", "x1"), rule("rest", &[("path", "/dup")], "bus", &[("topic", "t")])),
            (key("default", "x2"), rule("rest", &[("path", "dup/")], "bus", &[("topic", "t")])),
            (
                key("default", "https"),
                rule("bus", &[("topic", "t"), ("node_name", "n")], "rest", &[("resource", "https://x")]),
            ),
        ]);
        let t = Table::build(&rules, &endpoints());
        let why = |n: &str| t.broken.get(&key("default", n)).cloned().unwrap_or_default();
        assert!(
            why("missing").contains("target ruleEndpoint default/nowhere has not been created"),
            "{}",
            why("missing")
        );
        assert!(why("pair").contains("type eventbus to target ruleEndpoint type servicebus"), "{}", why("pair"));
        assert!(why("nopath").contains("\"path\" property missed in sourceResource"), "{}", why("nopath"));
        assert!(why("x2").contains("Rule default/x1"), "{}", why("x2"));
        assert!(why("https").contains("only http://"), "{}", why("https"));
        assert!(!t.broken.contains_key(&key("default", "x1")));
        assert_eq!(t.routes().len(), 1);
    }
}
