//! A job's status, the same shape for the three kinds (what differs per kind — versions,
//! image results — rides along untouched in `other`), and the pure rules that change it:
//! applying a node's report ([`apply_report`]) and the job's phase ([`job_phase`]).

use kubeedge_apis::operations::task::{self, TaskType, UpstreamMessage};
use kubeedge_apis::operations::v1alpha2::{ActionStatus, job_phase, node_phase};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `status` of a NodeUpgradeJob, ImagePrePullJob or ConfigUpdateJob.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// [`job_phase`]; empty until the job is initialised.
    #[serde(default)]
    pub phase: String,
    /// One entry per node the job chose.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_status: Vec<NodeTask>,
    /// Why the job failed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Keys this build does not use, kept as they are.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// One node's task.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeTask {
    /// The actions reported so far.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub action_flow: Vec<ActionStatus>,
    /// The node.
    #[serde(default)]
    pub node_name: String,
    /// [`node_phase`].
    #[serde(default)]
    pub phase: String,
    /// Why it failed (or has not started).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Per kind: `currentVersion`, `historicVersion` (upgrades), `imageStatus` (prepulls).
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl NodeTask {
    /// A node the job will run on.
    pub fn pending(node: &str) -> Self {
        Self { node_name: node.to_owned(), phase: node_phase::PENDING.into(), ..Default::default() }
    }

    /// A node the job cannot run on, and why.
    pub fn failed(node: &str, reason: impl Into<String>) -> Self {
        Self {
            node_name: node.to_owned(),
            phase: node_phase::FAILURE.into(),
            reason: reason.into(),
            ..Default::default()
        }
    }

    /// Whether the node's task is over.
    pub fn is_done(&self) -> bool {
        matches!(self.phase.as_str(), node_phase::SUCCESSFUL | node_phase::FAILURE | node_phase::UNKNOWN)
    }

    /// Whether it counts as failed (upstream: Failure or Unknown).
    pub fn is_failed(&self) -> bool {
        matches!(self.phase.as_str(), node_phase::FAILURE | node_phase::UNKNOWN)
    }
}

/// Whether a job in `phase` is over: nothing more is started, resent or timed out.
pub fn is_final(phase: &str) -> bool {
    phase == job_phase::COMPLETED || phase == job_phase::FAILURE
}

/// What became of a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Recorded; `done` when it ended the node's task.
    Recorded {
        /// The node's task is over.
        done: bool,
    },
    /// Already recorded, or the node's task is over: nothing changed.
    Ignored,
}

/// Records `report` of `node`'s task; `now` (RFC 3339) stands in for a missing finish time.
/// Errors say why the report is refused (a node the job does not run on, an unknown action).
pub fn apply_report(
    ty: TaskType,
    status: &mut Status,
    node: &str,
    report: &UpstreamMessage,
    now: &str,
) -> Result<Applied, String> {
    let Some(entry) = status.node_status.iter_mut().find(|n| n.node_name == node) else {
        return Err(format!("node {node:?} is not one of this job's nodes"));
    };
    let Some(step) = ty.step(&report.action) else {
        return Err(format!("{:?} is not an action of a {}", report.action, ty.kind()));
    };
    if matches!(entry.phase.as_str(), node_phase::SUCCESSFUL | node_phase::FAILURE) {
        return Ok(Applied::Ignored);
    }
    let time = if report.finish_time.is_empty() { now.to_owned() } else { report.finish_time.clone() };
    let action = ActionStatus {
        action: report.action.clone(),
        status: if report.succ { "True" } else { "False" }.into(),
        reason: if report.succ { String::new() } else { report.reason.clone() },
        time,
    };
    // Each action happens once in a node's flow: a report of one already recorded is the edge
    // saying again what it said (the cloud asked again, or a stale report crossed a newer
    // one), nothing new.
    if entry.action_flow.iter().any(|a| a.action == action.action) {
        return Ok(Applied::Ignored);
    }
    entry.action_flow.push(action);
    entry.phase = step.node_phase(report.succ).to_owned();
    if !report.reason.is_empty() && (!report.succ || entry.phase == node_phase::FAILURE) {
        entry.reason = report.reason.clone();
    } else if entry.phase == node_phase::IN_PROGRESS {
        entry.reason.clear();
    }
    match ty {
        TaskType::NodeUpgrade if !report.extend.is_empty() => {
            if let Ok((from, to)) = task::parse_upgrade_extend(&report.extend) {
                entry.other.insert("historicVersion".into(), Value::String(from));
                entry.other.insert("currentVersion".into(), Value::String(to));
            }
        }
        TaskType::ImagePrePull if !report.extend.is_empty() => {
            if let Ok(images) = task::parse_prepull_extend(&report.extend) {
                entry.other.insert("imageStatus".into(), serde_json::to_value(images).unwrap_or_default());
            }
        }
        _ => {}
    }
    Ok(Applied::Recorded { done: step.is_final(report.succ) })
}

/// Upstream's `failureTolerate`: a ratio; empty or unreadable is 0.
pub fn tolerance(failure_tolerate: &str) -> f64 {
    failure_tolerate.trim().parse::<f64>().ok().filter(|t| t.is_finite()).unwrap_or(0.0)
}

/// Whether the failed nodes exceed the tolerance (upstream: `round(failed/total, 2) > tol`).
pub fn exceeds_tolerance(status: &Status, tol: f64) -> Option<String> {
    let total = status.node_status.len();
    let failed = status.node_status.iter().filter(|n| n.is_failed()).count();
    if total == 0 || failed == 0 {
        return None;
    }
    #[allow(clippy::cast_precision_loss)] // Node counts are far below 2^52.
    let ratio = ((failed as f64 / total as f64) * 100.0).round() / 100.0;
    (ratio > tol).then(|| {
        format!("the number of failed nodes is {failed}/{total}, which exceeds the failure tolerance threshold")
    })
}

/// The job's phase from its nodes: Failure as soon as the failures exceed the tolerance (the
/// rollout stops there; upstream waits for every node first), InProgress while any node is
/// pending or running, else Completed. Returns the phase and its reason.
pub fn job_phase(status: &Status, tol: f64) -> (&'static str, String) {
    if status.node_status.is_empty() {
        return (job_phase::FAILURE, "the job has no nodes".into());
    }
    if let Some(why) = exceeds_tolerance(status, tol) {
        return (job_phase::FAILURE, why);
    }
    if status.node_status.iter().any(|n| !n.is_done()) {
        return (job_phase::IN_PROGRESS, String::new());
    }
    (job_phase::COMPLETED, String::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(phases: &[&str]) -> Status {
        let node_status = phases
            .iter()
            .enumerate()
            .map(|(i, p)| NodeTask { node_name: format!("n{i}"), phase: (*p).into(), ..Default::default() })
            .collect();
        Status { phase: job_phase::IN_PROGRESS.into(), node_status, ..Default::default() }
    }

    fn report(action: &str, succ: bool, reason: &str, extend: &str) -> UpstreamMessage {
        UpstreamMessage {
            action: action.into(),
            succ,
            finish_time: "2026-12-04T10:00:00Z".into(),
            reason: reason.into(),
            extend: extend.into(),
        }
    }

    #[test]
    fn phases_follow_upstreams_table() {
        // 1 of 10 failed with no tolerance: Failure; 5/10 at "0.5": Completed; 6/10: Failure.
        let mut ten = vec!["Successful"; 10];
        ten[0] = "Failure";
        assert_eq!(job_phase(&status(&ten), tolerance("")).0, "Failure");
        for n in ten.iter_mut().take(5) {
            *n = "Failure";
        }
        assert_eq!(job_phase(&status(&ten), tolerance("0.5")).0, "Completed");
        ten[5] = "Unknown";
        let (phase, reason) = job_phase(&status(&ten), tolerance("0.5"));
        assert_eq!(phase, "Failure");
        assert_eq!(reason, "the number of failed nodes is 6/10, which exceeds the failure tolerance threshold");
        assert_eq!(job_phase(&status(&["Successful", "Pending"]), 0.0).0, "InProgress");
        assert_eq!(job_phase(&status(&["Successful", "InProgress"]), 0.0).0, "InProgress");
        // The rollout stops at the first failure beyond the tolerance, with nodes still pending.
        assert_eq!(job_phase(&status(&["Failure", "Pending", "Pending"]), 0.0).0, "Failure");
        assert_eq!(job_phase(&status(&["Failure", "Pending", "Pending"]), 0.4).0, "InProgress");
        assert_eq!(job_phase(&status(&[]), 0.0).0, "Failure");
        assert_eq!(tolerance("nonsense"), 0.0);
        assert_eq!(tolerance("NaN"), 0.0);
    }

    #[test]
    fn an_upgrade_through_its_reports() {
        let mut st = status(&["InProgress"]);
        let ty = TaskType::NodeUpgrade;
        let now = "2026-12-04T10:00:01Z";
        assert_eq!(
            apply_report(ty, &mut st, "n0", &report("Check", true, "", ""), now),
            Ok(Applied::Recorded { done: false })
        );
        // The same report again (the cloud asked again) changes nothing.
        assert_eq!(apply_report(ty, &mut st, "n0", &report("Check", true, "", ""), now), Ok(Applied::Ignored));
        apply_report(ty, &mut st, "n0", &report("WaitingConfirmation", true, "", ""), now).unwrap();
        apply_report(ty, &mut st, "n0", &report("BackUp", true, "", "v0.1.0,v0.1.0"), now).unwrap();
        let done = apply_report(ty, &mut st, "n0", &report("Upgrade", true, "", "v0.1.0,v1.99.0"), now).unwrap();
        assert_eq!(done, Applied::Recorded { done: true });
        // A stale report of an earlier action changes nothing.
        assert_eq!(apply_report(ty, &mut st, "n0", &report("BackUp", true, "", ""), now), Ok(Applied::Ignored));
        let n = &st.node_status[0];
        assert_eq!(n.phase, "Successful");
        assert_eq!(n.action_flow.len(), 4);
        assert_eq!(n.other["currentVersion"], "v1.99.0");
        assert_eq!(n.other["historicVersion"], "v0.1.0");
        // Late reports after the end change nothing.
        assert_eq!(apply_report(ty, &mut st, "n0", &report("RollBack", true, "", ""), now), Ok(Applied::Ignored));
    }

    #[test]
    fn a_failed_upgrade_rolled_back_is_a_failure_with_its_reason() {
        let mut st = status(&["InProgress"]);
        let ty = TaskType::NodeUpgrade;
        let now = "t";
        let why = "upgrade to v1.97.0 failed: not connected within 10s; rolled back to v1.99.0";
        let r = apply_report(ty, &mut st, "n0", &report("Upgrade", false, why, "v1.99.0,v1.97.0"), now).unwrap();
        assert_eq!(r, Applied::Recorded { done: false });
        assert_eq!(st.node_status[0].phase, "InProgress");
        let r = apply_report(ty, &mut st, "n0", &report("RollBack", true, "", "v1.97.0,v1.99.0"), now).unwrap();
        assert_eq!(r, Applied::Recorded { done: true });
        let n = &st.node_status[0];
        assert_eq!((n.phase.as_str(), n.reason.as_str()), ("Failure", why));
        assert_eq!(n.other["currentVersion"], "v1.99.0");
    }

    #[test]
    fn refused_reports() {
        let mut st = status(&["InProgress"]);
        let ty = TaskType::ImagePrePull;
        assert!(apply_report(ty, &mut st, "other", &report("Check", true, "", ""), "t").is_err());
        assert!(apply_report(ty, &mut st, "n0", &report("Upgrade", true, "", ""), "t").is_err());
        let images = r#"[{"image":"busybox","status":"True"},{"image":"nope","status":"False","reason":"not found"}]"#;
        apply_report(
            ty,
            &mut st,
            "n0",
            &report("Pull", false, "there were some failures when pulling images", images),
            "t",
        )
        .unwrap();
        let n = &st.node_status[0];
        assert_eq!(n.phase, "Failure");
        assert_eq!(n.other["imageStatus"][1]["reason"], "not found");
        // An unknown key survives a round trip.
        let v: Status = serde_json::from_value(serde_json::json!({"phase": "Init", "x": 1, "nodeStatus": [
            {"nodeName": "a", "phase": "Pending", "y": [1]}]}))
        .unwrap();
        let back = serde_json::to_value(&v).unwrap();
        assert_eq!(back["x"], 1);
        assert_eq!(back["nodeStatus"][0]["y"][0], 1);
    }
}
