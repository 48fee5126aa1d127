//! Anti-entropy between ends that are both ours: the cloud asks an edge what it holds of the
//! kinds the cloud owns, and brings it to the API's state by sending what differs.
//!
//! - The edge says it can answer by sending [`FEATURE`] in the `X-KubeEdge-Rs-Features` header
//!   of its WebSocket handshake (`kubeedge_viaduct::HEADER_FEATURES`). Upstream edges do not,
//!   and are never asked; upstream clouds ignore the header and never ask.
//! - The question: source `synccontroller`, group `resource`, resource
//!   `node/{node}/kubeedge/inventory` (edge form `kubeedge/inventory`), operation `query`,
//!   content [`Request`] (the edge types wanted). It needs no ACK.
//! - The answer: operation `response`, `parent_msg_id` = the question's id, content
//!   [`Inventory`]: the types answered, and per type and namespace
//!   `[name, uid, resourceVersion]` of every object in the edge's `meta` table — about 54 bytes an
//!   object; cut at [`MAX_ITEMS`] (5.4 MB, under CloudHub's 8 MiB cap on edge messages), and
//!   then marked `truncated`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::constants::{group, module};
use crate::{CloudResource, Content, Message, Operation, ResourcePath};

/// The handshake feature an edge that answers inventory questions announces.
pub const FEATURE: &str = "inventory";
/// The resource type of the question.
pub const RESOURCE_TYPE: &str = "inventory";
/// The namespace part of the question's resource.
pub const NAMESPACE: &str = "kubeedge";
/// Objects an inventory lists at most: the edge cuts its answer there (and says so), the
/// cloud refuses a longer one.
pub const MAX_ITEMS: usize = 100_000;

/// What the cloud asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Edge resource types (`pod`, `configmap`, `secret`, `device`, `devicemodel`).
    pub types: Vec<String>,
}

/// One object the edge holds: name, uid, resourceVersion (0 when it has none or not a number).
pub type Item = (String, String, u64);

/// What the edge holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    /// The types answered (what was asked and the edge knows): only for these does a missing
    /// object mean the edge lacks it.
    #[serde(default)]
    pub types: Vec<String>,
    /// The edge cut the list at [`MAX_ITEMS`]: what it lacks cannot be told.
    #[serde(default)]
    pub truncated: bool,
    /// type → namespace → objects.
    #[serde(default)]
    pub items: BTreeMap<String, BTreeMap<String, Vec<Item>>>,
}

impl Inventory {
    /// Adds one object.
    pub fn push(&mut self, ty: &str, namespace: &str, item: Item) {
        self.items.entry(ty.to_owned()).or_default().entry(namespace.to_owned()).or_default().push(item);
    }

    /// Objects listed.
    pub fn len(&self) -> usize {
        self.items.values().flat_map(BTreeMap::values).map(Vec::len).sum()
    }

    /// Whether nothing is listed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every object: (type, namespace, name, uid, resourceVersion).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, &str, &str, u64)> {
        self.items.iter().flat_map(|(ty, by_ns)| {
            by_ns.iter().flat_map(move |(ns, items)| {
                items.iter().map(move |(name, uid, rv)| (ty.as_str(), ns.as_str(), name.as_str(), uid.as_str(), *rv))
            })
        })
    }
}

/// The cloud's question to `node` for `types`.
pub fn request(node: &str, types: &[&str]) -> Message {
    let body = Request { types: types.iter().map(|t| (*t).to_owned()).collect() };
    Message::build(
        module::SYNCCONTROLLER,
        group::RESOURCE,
        ResourcePath { namespace: NAMESPACE.to_owned(), resource_type: RESOURCE_TYPE.to_owned(), name: None }
            .for_node(node)
            .to_string(),
        Operation::Query,
        Content::json(&body).unwrap_or_else(|_| Content::null()),
    )
}

/// Whether `msg` (edge form or cloud form) is the cloud's inventory question.
pub fn is_request(msg: &Message) -> bool {
    msg.operation() == Operation::Query
        && msg.router.source == module::SYNCCONTROLLER
        && is_inventory_resource(&msg.router.resource)
}

fn is_inventory_resource(resource: &str) -> bool {
    let edge = CloudResource::parse(resource).map(|r| r.path).or_else(|_| ResourcePath::parse(resource));
    edge.is_ok_and(|p| p.resource_type == RESOURCE_TYPE && p.namespace().is_some_and(|ns| ns == NAMESPACE))
}

/// The edge's answer to `question`.
pub fn answer(question: &Message, inventory: &Inventory) -> Message {
    let mut m = Message::response_to(question, Content::json(inventory).unwrap_or_else(|_| Content::null()));
    m.router.source = module::METAMANAGER.to_owned();
    m
}

/// Why an answer could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// The content is not an inventory.
    #[error("not an inventory: {0}")]
    Shape(String),
    /// It lists more than [`MAX_ITEMS`] objects.
    #[error("the inventory lists {0} objects, more than {MAX_ITEMS}")]
    TooLarge(usize),
}

/// Reads an edge's answer.
pub fn parse_answer(msg: &Message) -> Result<Inventory, InventoryError> {
    let inv: Inventory = msg.content.decode().map_err(|e| InventoryError::Shape(e.to_string()))?;
    match inv.len() {
        n if n > MAX_ITEMS => Err(InventoryError::TooLarge(n)),
        _ => Ok(inv),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn question_and_answer_round_trip() {
        let q = request("edge-1", &["pod", "configmap"]);
        assert_eq!(q.router.resource, "node/edge-1/kubeedge/inventory");
        assert!(is_request(&q));
        let mut edge_form = q.clone();
        edge_form.router.resource = "kubeedge/inventory".into();
        assert!(is_request(&edge_form));
        let asked: Request = q.content.decode().unwrap();
        assert_eq!(asked.types, ["pod", "configmap"]);

        let mut inv = Inventory { types: vec!["pod".into(), "configmap".into()], ..Default::default() };
        inv.push("pod", "default", ("web".into(), "u1".into(), 42));
        inv.push("configmap", "kube-system", ("cfg".into(), "u2".into(), 7));
        let a = answer(&q, &inv);
        assert_eq!(a.header.parent_id, q.header.id);
        assert_eq!(a.operation(), Operation::Response);
        let wire = String::from_utf8(a.encode()).unwrap();
        assert!(wire.contains(r#""pod":{"default":[["web","u1",42]]}"#), "{wire}");
        assert!(wire.contains(r#""types":["pod","configmap"]"#), "{wire}");
        let back = Message::decode(wire.as_bytes(), 1 << 20).unwrap();
        let got = parse_answer(&back).unwrap();
        assert_eq!(got, inv);
        assert_eq!(got.len(), 2);
        let all: Vec<_> = got.iter().collect();
        assert!(all.contains(&("configmap", "kube-system", "cfg", "u2", 7)));
    }

    #[test]
    fn other_queries_are_not_the_question() {
        let mut m = request("n", &["pod"]);
        m.router.source = "edged".into();
        assert!(!is_request(&m));
        let m =
            Message::build(module::SYNCCONTROLLER, group::RESOURCE, "default/pod/x", Operation::Query, Content::null());
        assert!(!is_request(&m));
    }

    #[test]
    fn malformed_answers_are_errors() {
        let q = request("n", &["pod"]);
        let bad = Message::response_to(&q, Content::json(&serde_json::json!({"items": {"pod": 3}})).unwrap());
        assert!(matches!(parse_answer(&bad), Err(InventoryError::Shape(_))));
    }
}
