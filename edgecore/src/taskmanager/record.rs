//! The persistent record of each node task, in MetaManager's `meta_v2` table under upstream's
//! key form (`/operations.kubeedge.io/v1alpha2/{type}specs/{job}/nodes/{node}`), so a task
//! survives edgecore restarts (an upgrade restarts edgecore in the middle of its task) and a
//! duplicate task message is answered from it instead of running anything again.
//!
//! Upstream keeps only the spec there, and only for upgrades, and deletes the row when the task
//! ends. Ours holds the spec, the current action, where the task stands and the latest report,
//! for all three task types, and keeps finished tasks (the newest [`MAX_FINISHED`]) so a resent
//! task is answered with its final report.

use kubeedge_apis::operations::task::{TaskResource, TaskType, UpstreamMessage};
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
    /// through the report file.
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
