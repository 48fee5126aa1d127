//! Rule status: `successMessages`, `failMessages` and the last `errors`, counted here and
//! written about once a second per rule that changed (never one API write per message).
//!
//! One task owns the counts. Each flush reads the Rule, adds what was counted since, and
//! merge-patches `status` with the Rule's resourceVersion as a precondition, so two cloudcores
//! counting the same rule do not overwrite each other: a conflict keeps the counts for the
//! next flush. Upstream sends each result to EdgeController, whose patch puts the counters
//! at the top level of the Rule (where the API server drops them); ours land in `status`.

use std::collections::BTreeMap;
use std::time::Duration;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kubeedge_apis::rules::v1::RuleStatus;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::rules::Key;

/// How many errors a Rule's status keeps (the newest last).
pub const MAX_ERRORS: usize = 5;
/// How often counted results are written.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Results waiting for the counting task (senders wait when it is full).
const QUEUE: usize = 4096;

/// One delivery's result, or a rule's configuration error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Delivered (and answered, for calls).
    Delivered,
    /// Not delivered, and why.
    Failed(String),
    /// The rule cannot route: recorded in `errors` once, not counted as a message.
    Broken(String),
}

/// Where results are reported.
#[derive(Clone)]
pub struct Reporter(mpsc::Sender<(Key, Outcome)>);

impl Reporter {
    /// Reports `outcome` for rule `key` (waits while the counting task is behind).
    pub async fn report(&self, key: Key, outcome: Outcome) {
        let _ = self.0.send((key, outcome)).await;
    }
}

/// What was counted for one rule since its last write.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Delta {
    ok: i64,
    failed: i64,
    errors: Vec<String>,
}

impl Delta {
    fn add(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Delivered => self.ok += 1,
            Outcome::Failed(e) => {
                self.failed += 1;
                self.push_error(e);
            }
            Outcome::Broken(e) => self.push_error(e),
        }
    }

    fn push_error(&mut self, e: String) {
        self.errors.push(e);
        if self.errors.len() > MAX_ERRORS {
            self.errors.remove(0);
        }
    }

    /// `status` with this delta applied.
    fn apply(&self, mut status: RuleStatus) -> RuleStatus {
        status.success_messages += self.ok;
        status.fail_messages += self.failed;
        for e in &self.errors {
            // A broken rule reports its reason at each table change: once is enough.
            if status.errors.last() != Some(e) {
                status.errors.push(e.clone());
            }
        }
        let extra = status.errors.len().saturating_sub(MAX_ERRORS);
        status.errors.drain(..extra);
        status
    }
}

/// The counting task's channel: the [`Reporter`] and its receiving end for [`run`].
pub fn channel() -> (Reporter, mpsc::Receiver<(Key, Outcome)>) {
    let (tx, rx) = mpsc::channel(QUEUE);
    (Reporter(tx), rx)
}

/// A write of counted results under way: gives back what must be tried again.
type Flushing = std::pin::Pin<Box<dyn std::future::Future<Output = BTreeMap<Key, Delta>> + Send>>;

/// Counts results and writes them until `stop` (one last write then). Results keep being
/// counted while a write is under way, so reporters never wait on the API.
pub async fn run(client: kube::Client, mut rx: mpsc::Receiver<(Key, Outcome)>, stop: CancellationToken) {
    let mut pending: BTreeMap<Key, Delta> = BTreeMap::new();
    let mut flushing: Option<Flushing> = None;
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            got = rx.recv() => match got {
                Some((key, outcome)) => pending.entry(key).or_default().add(outcome),
                None => break,
            },
            _ = tick.tick(), if flushing.is_none() && !pending.is_empty() => {
                flushing = Some(Box::pin(flush(client.clone(), std::mem::take(&mut pending))));
            }
            again = async { match flushing.as_mut() { Some(f) => f.await, None => std::future::pending().await } },
                if flushing.is_some() => {
                flushing = None;
                merge(&mut pending, again);
            }
            () = stop.cancelled() => break,
        }
    }
    if let Some(f) = flushing {
        merge(&mut pending, f.await);
    }
    while let Ok((key, outcome)) = rx.try_recv() {
        pending.entry(key).or_default().add(outcome);
    }
    let _ = flush(client, pending).await;
}

/// Puts deltas that were not written back in front of what was counted since.
fn merge(pending: &mut BTreeMap<Key, Delta>, again: BTreeMap<Key, Delta>) {
    for (key, delta) in again {
        let now = pending.entry(key).or_default();
        now.ok += delta.ok;
        now.failed += delta.failed;
        let mut errors = delta.errors;
        errors.append(&mut now.errors);
        let extra = errors.len().saturating_sub(MAX_ERRORS);
        errors.drain(..extra);
        now.errors = errors;
    }
}

fn rules_api(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    let ar = kube::api::ApiResource {
        group: "rules.kubeedge.io".into(),
        version: "v1".into(),
        api_version: "rules.kubeedge.io/v1".into(),
        kind: "Rule".into(),
        plural: "rules".into(),
    };
    Api::namespaced_with(client.clone(), ns, &ar)
}

/// Writes each rule's delta; returns those to try again.
async fn flush(client: kube::Client, batch: BTreeMap<Key, Delta>) -> BTreeMap<Key, Delta> {
    let mut again = BTreeMap::new();
    for (key, delta) in batch {
        match write(&client, &key, &delta).await {
            Ok(()) | Err(Retry::Gone) => {}
            Err(Retry::Later(why)) => {
                debug!(rule = %format!("{}/{}", key.0, key.1), %why, "Rule status not written yet; kept for the next flush.");
                again.insert(key, delta);
            }
        }
    }
    again
}

enum Retry {
    Later(String),
    Gone,
}

async fn write(client: &kube::Client, (ns, name): &Key, delta: &Delta) -> Result<(), Retry> {
    let api = rules_api(client, ns);
    let rule = match api.get_opt(name).await {
        Ok(Some(r)) => r,
        Ok(None) => return Err(Retry::Gone),
        Err(e) => return Err(Retry::Later(e.to_string())),
    };
    let status: RuleStatus =
        rule.data.get("status").and_then(|s| serde_json::from_value(s.clone()).ok()).unwrap_or_default();
    let status = delta.apply(status);
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": rule.metadata.resource_version},
        "status": status,
    });
    match api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Err(Retry::Gone),
        Err(kube::Error::Api(e)) if e.code == 409 => Err(Retry::Later("conflict".into())),
        Err(e) => {
            warn!(rule = %format!("{ns}/{name}"), error = %e, "Writing a Rule's status failed; retrying.");
            Err(Retry::Later(e.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unwritten_deltas_go_back_in_front() {
        let key = ("default".to_owned(), "r".to_owned());
        let mut pending = BTreeMap::new();
        pending.entry(key.clone()).or_insert_with(Delta::default).add(Outcome::Failed("new".into()));
        let mut old = Delta::default();
        old.add(Outcome::Delivered);
        old.add(Outcome::Failed("old".into()));
        merge(&mut pending, BTreeMap::from([(key.clone(), old)]));
        let d = &pending[&key];
        assert_eq!((d.ok, d.failed, d.errors.clone()), (1, 2, vec!["old".to_owned(), "new".to_owned()]));
    }

    #[test]
    fn deltas_add_up_and_keep_the_last_errors() {
        let mut d = Delta::default();
        d.add(Outcome::Delivered);
        d.add(Outcome::Delivered);
        for i in 0..7 {
            d.add(Outcome::Failed(format!("e{i}")));
        }
        d.add(Outcome::Broken("broken".into()));
        assert_eq!((d.ok, d.failed), (2, 7));
        assert_eq!(d.errors, vec!["e3", "e4", "e5", "e6", "broken"]);
        let before = RuleStatus { success_messages: 10, fail_messages: 1, errors: vec!["old".into(), "e3".into()] };
        let after = d.apply(before);
        assert_eq!((after.success_messages, after.fail_messages), (12, 8));
        assert_eq!(after.errors.len(), MAX_ERRORS);
        assert_eq!(after.errors.last().map(String::as_str), Some("broken"));
        // The same reason again is not repeated.
        let mut again = Delta::default();
        again.add(Outcome::Broken("broken".into()));
        assert_eq!(again.apply(after.clone()).errors, after.errors);
    }
}
