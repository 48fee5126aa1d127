//! The persistent record of each node task, in MetaManager's `meta_v2` table under upstream's
//! key form (`/operations.kubeedge.io/v1alpha2/{type}specs/{job}/nodes/{node}`), so a task
//! survives edgecore restarts (an upgrade restarts edgecore in the middle of its task) and a
//! duplicate task message is answered from it instead of running anything again.
//!
//! Upstream keeps only the spec there, and only for upgrades, and deletes the row when the task
//! ends. Ours holds the spec, the current action, where the task stands and the latest report,
//! for all three task types, and keeps finished tasks (the newest [`MAX_FINISHED`]) so a resent
//! task is answered with its final report.

use kubeedge_apis::operations::task::{TaskResource, TaskType, UpstreamMessage, action};
use kubeedge_apis::operations::v1alpha2::API_VERSION;
use kubeedge_metastore::{MetaV2Row, Op, Store};
use serde::{Deserialize, Serialize};

/// Finished records kept for answering resent tasks; older ones are deleted.
pub const MAX_FINISHED: usize = 64;

/// Where a task stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// `action` is being run by edgecore.
    Running,
    /// WaitingConfirmation succeeded and the job requires `keadm ctl confirm`.
    WaitingConfirmation,
    /// keadm was started detached for `action` (Upgrade, Update, RollBack); its result comes
    /// through the report file, or the task fails once [`Record::wait`] has passed.
    Pending,
    /// The task ended; `report` is its final report.
    Done,
}

/// One node task as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// The job's name.
    pub job: String,
    /// This node.
    pub node: String,
    /// The task type's resource name (`nodeupgradejob`…).
    #[serde(rename = "type")]
    pub task_type: String,
    /// The job's spec as the cloud sent it.
    pub spec: serde_json::Value,
    /// The action being run, waited on, or last reported.
    pub action: String,
    /// Where the task stands.
    pub phase: Phase,
    /// The latest report sent to the cloud.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<UpstreamMessage>,
    /// When the record last changed (RFC 3339), for pruning finished ones.
    #[serde(default)]
    pub updated: String,
    /// While [`Phase::Pending`]: how long keadm's report is waited for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<Wait>,
}

/// How long a pending action waits for keadm's report, kept in the record so a restart (or a
/// reboot) does not start the wait again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Wait {
    /// When keadm was launched (RFC 3339); for a launch an earlier edgecore may or may not have
    /// made, when this edgecore found it.
    pub launched: String,
    /// How long after `launched` the report may come.
    pub seconds: u64,
}

impl Wait {
    /// A wait of `seconds` from now.
    pub fn from_now(seconds: u64) -> Self {
        Self { launched: kubeedge_kube_serve::time::now(), seconds }
    }

    /// Whether the report is overdue at `now` (Unix seconds). A launch time that does not
    /// parse counts as overdue: nobody knows how long that keadm has run.
    pub fn is_over(&self, now: i64) -> bool {
        let launched = kubeedge_kube_serve::time::parse_unix(&self.launched);
        launched.is_none_or(|t| now >= t.saturating_add_unsigned(self.seconds))
    }
}

impl Record {
    /// A new task starting at `action`.
    pub fn new(resource: &TaskResource, spec: serde_json::Value, action: &str) -> Self {
        Self {
            job: resource.job.clone(),
            node: resource.node.clone(),
            task_type: resource.task_type.resource().to_owned(),
            spec,
            action: action.to_owned(),
            phase: Phase::Running,
            report: None,
            updated: kubeedge_kube_serve::time::now(),
            wait: None,
        }
    }

    /// Whether the task has keadm working for it: an action that runs keadm being run, or
    /// launched and not yet reported.
    pub fn holds_keadm(&self) -> bool {
        match self.phase {
            Phase::Pending => true,
            Phase::Running => runs_keadm(&self.action),
            Phase::WaitingConfirmation | Phase::Done => false,
        }
    }

    /// The task's type (`None` for a record no build of ours writes).
    pub fn task_type(&self) -> Option<TaskType> {
        TaskType::from_resource(&self.task_type).filter(|t| t.resource() == self.task_type)
    }

    /// The task resource of the messages about it.
    pub fn resource(&self) -> Option<TaskResource> {
        Some(TaskResource { task_type: self.task_type()?, job: self.job.clone(), node: self.node.clone() })
    }

    /// The `meta_v2` key.
    pub fn key(&self) -> String {
        key(&self.task_type, &self.job, &self.node)
    }
}

/// Whether `action` runs keadm (which takes the node's one lock and writes the node's one
/// report file).
pub fn runs_keadm(action: &str) -> bool {
    matches!(action, action::BACK_UP | action::UPGRADE | action::UPDATE | action::ROLL_BACK)
}

/// `{type}specs`: the resource column of a task type's records (upstream's
/// `nodeupgradejobspecs`).
fn plural(task_type: &str) -> String {
    format!("{task_type}specs")
}

/// Upstream's key: `/operations.kubeedge.io/v1alpha2/{type}specs/{job}/nodes/{node}`.
pub fn key(task_type: &str, job: &str, node: &str) -> String {
    format!("/{API_VERSION}/{}/{job}/nodes/{node}", plural(task_type))
}

/// The `group_version_resource` column of a task type's records.
fn gvr(task_type: &str) -> String {
    let (group, version) = API_VERSION.split_once('/').unwrap_or((API_VERSION, ""));
    kubeedge_metastore::gvr_string(group, version, &plural(task_type))
}

/// The records in `meta_v2`: every read and write of them goes through the task manager's
/// own task, so this is a thin layer over the store's handle.
#[derive(Clone)]
pub struct Records {
    store: Store,
}

impl Records {
    /// Records kept in `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// Every stored record of the three types, oldest change first. A row that does not
    /// decode is skipped with a warning (and left in place).
    pub async fn load(&self) -> Result<Vec<Record>, kubeedge_metastore::Error> {
        let mut out = Vec::new();
        for t in TaskType::ALL {
            for row in self.store.list_v2(&gvr(t.resource()), None).await? {
                match serde_json::from_str::<Record>(&row.value) {
                    Ok(r) if r.key() == row.key => out.push(r),
                    Ok(_) => tracing::warn!(key = %row.key, "A task record under another task's key; skipped."),
                    Err(e) => tracing::warn!(key = %row.key, error = %e, "An unreadable task record; skipped."),
                }
            }
        }
        out.sort_by(|a, b| a.updated.cmp(&b.updated));
        Ok(out)
    }

    /// Stores `record` (committed when this returns).
    pub async fn save(&self, record: &Record) -> Result<(), kubeedge_metastore::Error> {
        let value = serde_json::to_string(record).unwrap_or_default();
        let row = MetaV2Row {
            key: record.key(),
            gvr: gvr(&record.task_type),
            namespace: String::new(),
            name: record.job.clone(),
            resource_version: 0,
            value,
        };
        self.store.apply(vec![Op::UpsertV2(row)]).await
    }

    /// Deletes these records.
    pub async fn delete(&self, keys: Vec<String>) -> Result<(), kubeedge_metastore::Error> {
        if keys.is_empty() {
            return Ok(());
        }
        self.store.apply(keys.into_iter().map(|key| Op::DeleteV2 { key }).collect()).await
    }
}

/// The keys of the finished records beyond the newest [`MAX_FINISHED`].
pub fn prunable<'a>(records: impl Iterator<Item = &'a Record>) -> Vec<String> {
    let mut done: Vec<&Record> = records.filter(|r| r.phase == Phase::Done).collect();
    if done.len() <= MAX_FINISHED {
        return Vec::new();
    }
    done.sort_by(|a, b| a.updated.cmp(&b.updated));
    done[..done.len() - MAX_FINISHED].iter().map(|r| r.key()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(ty: TaskType, job: &str) -> TaskResource {
        TaskResource { task_type: ty, job: job.into(), node: "edge-1".into() }
    }

    #[test]
    fn keys_are_upstreams_form() {
        let r = Record::new(&resource(TaskType::NodeUpgrade, "up1"), serde_json::json!({}), "Check");
        assert_eq!(r.key(), "/operations.kubeedge.io/v1alpha2/nodeupgradejobspecs/up1/nodes/edge-1");
        assert_eq!(gvr("nodeupgradejob"), "operations.kubeedge.io/v1alpha2, Resource=nodeupgradejobspecs");
        assert_eq!(r.resource(), Some(resource(TaskType::NodeUpgrade, "up1")));
    }

    #[test]
    fn a_wait_is_over_at_its_deadline() {
        let w = Wait { launched: "2026-01-01T00:00:00Z".into(), seconds: 150 };
        let launched = kubeedge_kube_serve::time::parse_unix(&w.launched).unwrap();
        assert!(!w.is_over(launched + 149));
        assert!(w.is_over(launched + 150));
        assert!(Wait { launched: "yesterday".into(), seconds: 150 }.is_over(launched));
        assert!(!Wait::from_now(60).is_over(kubeedge_kube_serve::time::now_unix()));
    }

    #[test]
    fn keadm_is_held_by_its_actions_running_or_pending() {
        let mut r = Record::new(&resource(TaskType::NodeUpgrade, "u1"), serde_json::json!({}), "Check");
        assert!(!r.holds_keadm());
        r.action = "BackUp".into();
        assert!(r.holds_keadm());
        r.phase = Phase::Done;
        assert!(!r.holds_keadm());
        r.phase = Phase::Pending;
        r.action = "RollBack".into();
        assert!(r.holds_keadm());
        r.action = "WaitingConfirmation".into();
        r.phase = Phase::WaitingConfirmation;
        assert!(!r.holds_keadm());
    }

    #[tokio::test]
    async fn records_survive_reopening_and_prune_the_oldest_finished() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edgecore.db");
        let store = Store::open(&path, kubeedge_metastore::Options::default()).unwrap();
        let records = Records::new(store.clone());
        let mut pull = Record::new(&resource(TaskType::ImagePrePull, "p1"), serde_json::json!({"a": 1}), "Check");
        pull.report = Some(UpstreamMessage { action: "Check".into(), succ: true, ..Default::default() });
        records.save(&pull).await.unwrap();
        let mut up = Record::new(&resource(TaskType::NodeUpgrade, "u1"), serde_json::json!({}), "Upgrade");
        up.phase = Phase::Pending;
        up.wait = Some(Wait::from_now(270));
        records.save(&up).await.unwrap();
        // Something MetaServer stores is not a task.
        let other = MetaV2Row {
            key: "/core/v1/pods/default/p".into(),
            gvr: "/v1, Resource=pods".into(),
            namespace: "default".into(),
            name: "p".into(),
            resource_version: 1,
            value: "{}".into(),
        };
        store.apply(vec![Op::UpsertV2(other)]).await.unwrap();
        drop(records);
        store.close().unwrap();

        let store = Store::open(&path, kubeedge_metastore::Options::default()).unwrap();
        let records = Records::new(store);
        let loaded = records.load().await.unwrap();
        assert_eq!(loaded.len(), 2);
        assert!(loaded.contains(&pull) && loaded.contains(&up));

        let mut many: Vec<Record> = (0..MAX_FINISHED + 3)
            .map(|i| {
                let mut r =
                    Record::new(&resource(TaskType::ConfigUpdate, &format!("c{i}")), serde_json::json!({}), "Update");
                r.phase = Phase::Done;
                r.updated = format!("2026-01-01T00:00:{:02}Z", i);
                r
            })
            .collect();
        many.push(up.clone());
        let gone = prunable(many.iter());
        assert_eq!(gone.len(), 3);
        assert!(gone[0].ends_with("/c0/nodes/edge-1") && gone[2].ends_with("/c2/nodes/edge-1"));
        records.delete(vec![pull.key()]).await.unwrap();
        assert_eq!(records.load().await.unwrap(), vec![up]);
    }
}
