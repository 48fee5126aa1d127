//! The routing table's owner: one task watches Rules and RuleEndpoints in every namespace,
//! rebuilds the [`Table`] when they change and publishes it as a snapshot, and tells edges
//! what the rules whose source is on them need (`subscribe` to a topic, `start` allowing a
//! target URL; `unsubscribe` / `stop` when a rule goes) — again whenever a node connects, so
//! a node that was offline when a rule was made or removed is told too. The table is first
//! built once both watches have listed.
//!
//! Unlike upstream (which took each Rule once, on creation, and ignored edits), edits apply.
//! Objects are read one by one: one that does not parse is logged and skipped, not the list.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kubeedge_apis::rules::v1::{RuleEndpointSpec, RuleSpec};
use kubeedge_model::protocol::servicebus;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::Links;
use super::rules::{EdgeSetup, Key, Table};
use super::status::{Outcome, Reporter};

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: "rules.kubeedge.io".into(),
        version: "v1".into(),
        api_version: "rules.kubeedge.io/v1".into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

fn key_of(o: &DynamicObject) -> Option<Key> {
    Some((o.metadata.namespace.clone()?, o.metadata.name.clone()?))
}

fn spec_of<T: serde::de::DeserializeOwned>(o: &DynamicObject) -> Result<T, String> {
    let spec = o.data.get("spec").cloned().unwrap_or_default();
    serde_json::from_value(spec).map_err(|e| e.to_string())
}

/// What the owner keeps.
struct State {
    rules: BTreeMap<Key, RuleSpec>,
    endpoints: BTreeMap<Key, RuleEndpointSpec>,
    /// Rules and endpoints seen in the current (re)list, until it is done.
    relisting: (Option<BTreeSet<Key>>, Option<BTreeSet<Key>>),
    /// Whether each watch (Rules, RuleEndpoints) has listed once: no table before both have
    /// (a Rule listed before its endpoints would look broken).
    listed: (bool, bool),
    setups: BTreeSet<EdgeSetup>,
    /// Undoings a node could not be told (it was not connected), sent when it connects.
    undo: BTreeSet<EdgeSetup>,
    broken: BTreeMap<Key, String>,
}

/// Runs until `stop`: watches, publishes tables on `tables`, and sends edge setups through
/// `links`; `connected` brings the names of nodes that just connected.
pub async fn run(
    client: kube::Client,
    tables: watch::Sender<Arc<Table>>,
    links: Links,
    mut connected: mpsc::Receiver<String>,
    reporter: Reporter,
    stop: CancellationToken,
) {
    let rules: Api<DynamicObject> = Api::all_with(client.clone(), &resource("Rule", "rules"));
    let endpoints: Api<DynamicObject> = Api::all_with(client, &resource("RuleEndpoint", "ruleendpoints"));
    let mut rule_events = watcher::watcher(rules, watcher::Config::default()).default_backoff().boxed();
    let mut endpoint_events = watcher::watcher(endpoints, watcher::Config::default()).default_backoff().boxed();
    let mut st = State {
        rules: BTreeMap::new(),
        endpoints: BTreeMap::new(),
        relisting: (None, None),
        listed: (false, false),
        setups: BTreeSet::new(),
        undo: BTreeSet::new(),
        broken: BTreeMap::new(),
    };
    loop {
        let changed = tokio::select! {
            () = stop.cancelled() => return,
            Some(e) = rule_events.next() => match e {
                Ok(e) => st.on_rule(e),
                Err(e) => {
                    debug!(error = %e, "Rule watch error; retrying.");
                    false
                }
            },
            Some(e) = endpoint_events.next() => match e {
                Ok(e) => st.on_endpoint(e),
                Err(e) => {
                    debug!(error = %e, "RuleEndpoint watch error; retrying.");
                    false
                }
            },
            Some(node) = connected.recv() => {
                st.on_connected(&node, &links);
                false
            }
        };
        if changed && st.listed == (true, true) {
            st.rebuild(&tables, &links, &reporter).await;
        }
    }
}

impl State {
    fn on_rule(&mut self, e: Event<DynamicObject>) -> bool {
        match e {
            Event::Init => {
                self.relisting.0 = Some(BTreeSet::new());
                false
            }
            Event::InitApply(o) | Event::Apply(o) => {
                let Some(key) = key_of(&o) else { return false };
                if let Some(seen) = &mut self.relisting.0 {
                    seen.insert(key.clone());
                }
                match spec_of::<RuleSpec>(&o) {
                    Ok(spec) => self.rules.insert(key, spec.clone()) != Some(spec),
                    Err(e) => {
                        warn!(rule = %format!("{}/{}", key.0, key.1), error = %e, "A Rule that does not parse; ignored.");
                        self.rules.remove(&key).is_some()
                    }
                }
            }
            Event::Delete(o) => key_of(&o).is_some_and(|k| self.rules.remove(&k).is_some()),
            Event::InitDone => {
                let seen = self.relisting.0.take().unwrap_or_default();
                self.rules.retain(|k, _| seen.contains(k));
                info!(rules = self.rules.len(), "Router has the Rules.");
                self.listed.0 = true;
                true
            }
        }
    }

    fn on_endpoint(&mut self, e: Event<DynamicObject>) -> bool {
        match e {
            Event::Init => {
                self.relisting.1 = Some(BTreeSet::new());
                false
            }
            Event::InitApply(o) | Event::Apply(o) => {
                let Some(key) = key_of(&o) else { return false };
                if let Some(seen) = &mut self.relisting.1 {
                    seen.insert(key.clone());
                }
                match spec_of::<RuleEndpointSpec>(&o) {
                    Ok(spec) => self.endpoints.insert(key, spec.clone()) != Some(spec),
                    Err(e) => {
                        warn!(endpoint = %format!("{}/{}", key.0, key.1), error = %e,
                            "A RuleEndpoint that does not parse (ruleEndpointType must be rest, eventbus or servicebus); ignored.");
                        self.endpoints.remove(&key).is_some()
                    }
                }
            }
            Event::Delete(o) => key_of(&o).is_some_and(|k| self.endpoints.remove(&k).is_some()),
            Event::InitDone => {
                let seen = self.relisting.1.take().unwrap_or_default();
                self.endpoints.retain(|k, _| seen.contains(k));
                self.listed.1 = true;
                true
            }
        }
    }

    async fn rebuild(&mut self, tables: &watch::Sender<Arc<Table>>, links: &Links, reporter: &Reporter) {
        let table = Table::build(&self.rules, &self.endpoints);
        for (key, why) in &table.broken {
            if self.broken.get(key) != Some(why) {
                warn!(rule = %format!("{}/{}", key.0, key.1), %why, "A Rule cannot route.");
                reporter.report(key.clone(), Outcome::Broken(why.clone())).await;
            }
        }
        self.broken = table.broken.clone();
        let setups = table.edge_setups();
        for gone in self.setups.difference(&setups) {
            if !send_setup(links, gone, false) {
                self.undo.insert(gone.clone());
            }
        }
        for new in setups.difference(&self.setups) {
            self.undo.remove(new);
            send_setup(links, new, true);
        }
        self.setups = setups;
        tables.send_replace(Arc::new(table));
    }
}

impl State {
    /// A node connected: what its rules need, and what it missed being told to undo.
    fn on_connected(&mut self, node: &str, links: &Links) {
        let undo: Vec<EdgeSetup> = self.undo.iter().filter(|s| s.node() == node).cloned().collect();
        let mine: Vec<EdgeSetup> = self.setups.iter().filter(|s| s.node() == node).cloned().collect();
        if !mine.is_empty() || !undo.is_empty() {
            debug!(%node, setups = mine.len(), undo = undo.len(), "Telling a connected node what its rules need.");
        }
        for s in &undo {
            if send_setup(links, s, false) {
                self.undo.remove(s);
            }
        }
        for s in &mine {
            send_setup(links, s, true);
        }
    }
}

/// Sends one setup (or its undoing) to its node, if connected (a node that is not is told
/// when it connects); returns whether it was handed to the node's session.
fn send_setup(links: &Links, setup: &EdgeSetup, on: bool) -> bool {
    let msg = match setup {
        EdgeSetup::Subscribe { node, topic } => servicebus::subscription(node, topic, on),
        EdgeSetup::Allow { node, target_url } => servicebus::allow(node, target_url, on),
    };
    let sent = links.dispatch(msg);
    if !sent {
        debug!(node = setup.node(), "Node not connected; it is told when it connects.");
    }
    sent
}
