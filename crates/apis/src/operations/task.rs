//! The node-task protocol between cloudcore's TaskManager, edgecore's task manager and keadm,
//! in upstream's shapes (`pkg/nodetask/message`, `pkg/nodetask/actionflow`,
//! `pkg/upgrade/edge/upgrade_reporter.go`, `pkg/util/validation`):
//!
//! - cloud → edge: source and group `taskmanager`, resource [`TaskResource`]
//!   (`operations.kubeedge.io/v1alpha2/{type}/{job}/node/{node}`), operation the first action
//!   (`Check`), content the job's spec as JSON;
//! - edge → cloud: the same resource, operation [`UPDATE_NODE_ACTION_STATUS`], content an
//!   [`UpstreamMessage`];
//! - keadm → edgecore: [`UpgradeReport`] in `/etc/kubeedge/upgrade_report.json`.
//!
//! Everything a node executes comes from a job spec, so the checks of what may be executed live
//! here too ([`check_version`], [`check_upgrade_image`], [`check_image_reference`]): both ends
//! apply them, and the edge passes what they accept as argv elements, never to a shell.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::v1alpha2::{API_VERSION, ImageStatus};

/// Source and group of the messages (`taskmanager`).
pub const TASK_MANAGER: &str = "taskmanager";
/// The operation of an edge's report.
pub const UPDATE_NODE_ACTION_STATUS: &str = "UpdateNodeActionStatus";
/// Where keadm reports the result of an upgrade, backup, rollback or config update.
pub const UPGRADE_REPORT_PATH: &str = "/etc/kubeedge/upgrade_report.json";
/// Where keadm keeps backups, one directory per version.
pub const BACKUP_DIR: &str = "/etc/kubeedge/backup";
/// The most a status report (content or HTTP body) may hold.
pub const MAX_REPORT_BYTES: usize = 64 * 1024;

/// The three kinds of job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TaskType {
    /// NodeUpgradeJob (`nodeupgradejob`).
    NodeUpgrade,
    /// ImagePrePullJob (`imageprepulljob`).
    ImagePrePull,
    /// ConfigUpdateJob (`configupdatejob`).
    ConfigUpdate,
}

impl TaskType {
    /// All of them.
    pub const ALL: [TaskType; 3] = [TaskType::NodeUpgrade, TaskType::ImagePrePull, TaskType::ConfigUpdate];

    /// The resource name in messages (upstream's `Resource*` constants).
    pub fn resource(self) -> &'static str {
        match self {
            TaskType::NodeUpgrade => "nodeupgradejob",
            TaskType::ImagePrePull => "imageprepulljob",
            TaskType::ConfigUpdate => "configupdatejob",
        }
    }

    /// The kind.
    pub fn kind(self) -> &'static str {
        match self {
            TaskType::NodeUpgrade => "NodeUpgradeJob",
            TaskType::ImagePrePull => "ImagePrePullJob",
            TaskType::ConfigUpdate => "ConfigUpdateJob",
        }
    }

    /// From the resource name; v1alpha1's legacy `upgrade` and `prepull` too.
    pub fn from_resource(s: &str) -> Option<Self> {
        match s {
            "nodeupgradejob" | "upgrade" => Some(TaskType::NodeUpgrade),
            "imageprepulljob" | "prepull" => Some(TaskType::ImagePrePull),
            "configupdatejob" => Some(TaskType::ConfigUpdate),
            _ => None,
        }
    }

    /// The actions a node goes through (upstream's `actionflow`).
    pub fn flow(self) -> &'static [Step] {
        match self {
            TaskType::NodeUpgrade => &UPGRADE_FLOW,
            TaskType::ImagePrePull => &PREPULL_FLOW,
            TaskType::ConfigUpdate => &CONFIG_FLOW,
        }
    }

    /// The first action (what the cloud sends as the operation).
    pub fn first_action(self) -> &'static str {
        self.flow()[0].action
    }

    /// The step named `action`.
    pub fn step(self, action: &str) -> Option<&'static Step> {
        self.flow().iter().find(|s| s.action == action)
    }
}

impl fmt::Display for TaskType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.resource())
    }
}

/// Action names.
pub mod action {
    /// Pre-checks (and, for upgrades, fetching the new version).
    pub const CHECK: &str = "Check";
    /// The upgrade waits for `keadm ctl confirm` when `requireConfirmation`.
    pub const WAITING_CONFIRMATION: &str = "WaitingConfirmation";
    /// `keadm backup edge`.
    pub const BACK_UP: &str = "BackUp";
    /// `keadm upgrade edge`.
    pub const UPGRADE: &str = "Upgrade";
    /// `keadm rollback edge`.
    pub const ROLL_BACK: &str = "RollBack";
    /// Image pulls.
    pub const PULL: &str = "Pull";
    /// `keadm config-update`.
    pub const UPDATE: &str = "Update";
}

/// One action of a flow and where it leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Its name.
    pub action: &'static str,
    /// The next action when it succeeds; `None`: the task is done.
    pub on_success: Option<&'static str>,
    /// The next action when it fails; `None`: the task failed.
    pub on_failure: Option<&'static str>,
}

impl Step {
    /// Whether a report of this action with `succ` ends the node's task.
    pub fn is_final(&self, succ: bool) -> bool {
        if succ { self.on_success.is_none() } else { self.on_failure.is_none() }
    }

    /// The node's phase after this action reported `succ`: a final report decides, anything
    /// else keeps the task in progress. A rollback always ends in Failure — the upgrade or
    /// update did not happen — where upstream calls a successful rollback Successful.
    pub fn node_phase(&self, succ: bool) -> &'static str {
        use super::v1alpha2::node_phase;
        match (self.is_final(succ), succ) {
            (false, _) => node_phase::IN_PROGRESS,
            (true, _) if self.action == action::ROLL_BACK => node_phase::FAILURE,
            (true, true) => node_phase::SUCCESSFUL,
            (true, false) => node_phase::FAILURE,
        }
    }
}

const fn step(action: &'static str, on_success: Option<&'static str>, on_failure: Option<&'static str>) -> Step {
    Step { action, on_success, on_failure }
}

static UPGRADE_FLOW: [Step; 5] = [
    step(action::CHECK, Some(action::WAITING_CONFIRMATION), None),
    step(action::WAITING_CONFIRMATION, Some(action::BACK_UP), None),
    step(action::BACK_UP, Some(action::UPGRADE), None),
    step(action::UPGRADE, None, Some(action::ROLL_BACK)),
    step(action::ROLL_BACK, None, None),
];
static PREPULL_FLOW: [Step; 2] = [step(action::CHECK, Some(action::PULL), None), step(action::PULL, None, None)];
static CONFIG_FLOW: [Step; 4] = [
    step(action::CHECK, Some(action::BACK_UP), None),
    step(action::BACK_UP, Some(action::UPDATE), None),
    step(action::UPDATE, None, Some(action::ROLL_BACK)),
    step(action::ROLL_BACK, None, None),
];

/// Why a task resource or report was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskError(pub String);

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TaskError {}

fn err(msg: impl Into<String>) -> TaskError {
    TaskError(msg.into())
}

/// `operations.kubeedge.io/v1alpha2/{type}/{job}/node/{node}`: which node's task of which job.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TaskResource {
    /// The kind of job.
    pub task_type: TaskType,
    /// The job's name.
    pub job: String,
    /// The node.
    pub node: String,
}

impl TaskResource {
    /// Parses the six `/`-separated tokens upstream's `ParseResource` requires.
    pub fn parse(resource: &str) -> Result<Self, TaskError> {
        let parts: Vec<&str> = resource.split('/').collect();
        let [group, version, ty, job, node_word, node] = parts.as_slice() else {
            return Err(err(format!("a node task resource has 6 parts, not {}: {resource:?}", parts.len())));
        };
        if format!("{group}/{version}") != API_VERSION {
            return Err(err(format!("not a node task resource: {resource:?}")));
        }
        let task_type = TaskType::from_resource(ty).filter(|t| t.resource() == *ty);
        let task_type = task_type.ok_or_else(|| err(format!("unknown node task type {ty:?}")))?;
        if *node_word != "node" {
            return Err(err(format!("not a node task resource: {resource:?}")));
        }
        if !valid_name(job) || !valid_name(node) {
            return Err(err(format!("invalid job or node name in {resource:?}")));
        }
        Ok(Self { task_type, job: (*job).to_owned(), node: (*node).to_owned() })
    }

    /// Whether `resource` names a node task (upstream's `IsNodeJobResource`).
    pub fn is_task_resource(resource: &str) -> bool {
        resource.starts_with(API_VERSION)
    }
}

impl fmt::Display for TaskResource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{API_VERSION}/{}/{}/node/{}", self.task_type.resource(), self.job, self.node)
    }
}

/// A DNS-1123 subdomain: what object names are.
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// An edge's report of one action (upstream's `UpstreamMessage`; every key always written).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamMessage {
    /// The action reported.
    #[serde(default)]
    pub action: String,
    /// Whether it succeeded.
    #[serde(default)]
    pub succ: bool,
    /// When it finished, RFC 3339 UTC (empty from upstream's config updates).
    #[serde(default)]
    pub finish_time: String,
    /// Why it failed.
    #[serde(default)]
    pub reason: String,
    /// Upgrades: `"{fromVersion},{toVersion}"`; prepulls: the JSON list of [`ImageStatus`].
    #[serde(default)]
    pub extend: String,
}

impl UpstreamMessage {
    /// Parses a report, at most [`MAX_REPORT_BYTES`].
    pub fn parse(bytes: &[u8]) -> Result<Self, TaskError> {
        if bytes.len() > MAX_REPORT_BYTES {
            return Err(err(format!("a report of {} bytes is over the {MAX_REPORT_BYTES}-byte cap", bytes.len())));
        }
        serde_json::from_slice(bytes).map_err(|e| err(format!("invalid report: {e}")))
    }
}

/// `"{from},{to}"` of an upgrade report's `extend`.
pub fn upgrade_extend(from: &str, to: &str) -> String {
    format!("{from},{to}")
}

/// The versions an upgrade report's `extend` holds (exactly two, as upstream).
pub fn parse_upgrade_extend(extend: &str) -> Result<(String, String), TaskError> {
    match extend.split(',').collect::<Vec<_>>().as_slice() {
        [from, to] => Ok(((*from).to_owned(), (*to).to_owned())),
        _ => Err(err(format!("an upgrade report's extend is \"from,to\", not {extend:?}"))),
    }
}

/// The image results a prepull report's `extend` holds.
pub fn parse_prepull_extend(extend: &str) -> Result<Vec<ImageStatus>, TaskError> {
    serde_json::from_str(extend).map_err(|e| err(format!("a prepull report's extend is not a list of images: {e}")))
}

/// What keadm writes to [`UPGRADE_REPORT_PATH`] (upstream's `upgrade_reporter.go`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeReport {
    /// `Backup`, `Upgrade`, `Rollback` or `ConfigUpdate`.
    pub event: String,
    /// Whether it worked.
    pub success: bool,
    /// The version before.
    #[serde(default)]
    pub from_version: String,
    /// The version after.
    #[serde(default)]
    pub to_version: String,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error_message: String,
}

/// The events of an [`UpgradeReport`].
pub mod report_event {
    /// `keadm backup edge`.
    pub const BACKUP: &str = "Backup";
    /// `keadm upgrade edge`.
    pub const UPGRADE: &str = "Upgrade";
    /// `keadm rollback edge`.
    pub const ROLLBACK: &str = "Rollback";
    /// `keadm config-update`.
    pub const CONFIG_UPDATE: &str = "ConfigUpdate";
}

/// v1alpha1's report on the legacy HTTP endpoint (`types.NodeTaskResponse`: no JSON tags, so
/// Go's field names are the keys).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LegacyTaskResponse {
    /// The node.
    #[serde(default)]
    pub node_name: String,
    /// The FSM state.
    #[serde(default)]
    pub state: String,
    /// The event: the action (`Check`, `Pull`, `Backup`, `Upgrade`, `Rollback`, …).
    #[serde(default)]
    pub event: String,
    /// `Success` or `Failure`.
    #[serde(default)]
    pub action: String,
    /// Why it failed.
    #[serde(default)]
    pub reason: String,
    /// When.
    #[serde(default)]
    pub time: String,
    /// Extra data (upgrades: unused; prepulls: the image results).
    #[serde(default)]
    pub external_message: String,
}

impl LegacyTaskResponse {
    /// The v1alpha2 report it means.
    pub fn to_upstream(&self) -> UpstreamMessage {
        let action = match self.event.as_str() {
            "Backup" | "BackUp" => action::BACK_UP,
            "Rollback" | "RollBack" => action::ROLL_BACK,
            other => other,
        };
        UpstreamMessage {
            action: action.to_owned(),
            succ: self.action == "Success",
            finish_time: self.time.clone(),
            reason: self.reason.clone(),
            extend: self.external_message.clone(),
        }
    }
}

/// Upstream's version rule: `^v\d+\.\d+\.\d+(-[a-zA-Z0-9_.]+(?:-[a-zA-Z0-9_.]+)*)?$`.
pub fn check_version(v: &str) -> Result<(), TaskError> {
    let bad = || err(format!("invalid version {v:?}: expected vMAJOR.MINOR.PATCH[-suffix]"));
    if v.len() > 128 {
        return Err(bad());
    }
    let rest = v.strip_prefix('v').ok_or_else(bad)?;
    let (core, suffix) = match rest.split_once('-') {
        Some((c, s)) => (c, Some(s)),
        None => (rest, None),
    };
    let nums: Vec<&str> = core.split('.').collect();
    if nums.len() != 3 || nums.iter().any(|n| n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit())) {
        return Err(bad());
    }
    if let Some(s) = suffix
        && s.split('-').any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.'))
    {
        return Err(bad());
    }
    Ok(())
}

/// An image repository without tag or digest (the upgrade's `image`; the version is its tag):
/// `[host[:port]/]path` with Docker's component rules, no `..`.
pub fn check_upgrade_image(image: &str) -> Result<(), TaskError> {
    let bad = |why: &str| err(format!("invalid image {image:?}: {why}"));
    if image.is_empty() || image.len() > 255 {
        return Err(bad("empty or longer than 255 characters"));
    }
    let mut parts: Vec<&str> = image.split('/').collect();
    if parts.len() > 1 && (parts[0].contains(['.', ':']) || parts[0] == "localhost") {
        let host = parts.remove(0);
        let (name, port) = host.split_once(':').unwrap_or((host, ""));
        let host_ok = !name.is_empty()
            && name.split('.').all(|l| {
                !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') && !l.starts_with('-')
            });
        if !host_ok || (host.contains(':') && (port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()))) {
            return Err(bad("the registry host is not a host name with an optional port"));
        }
    }
    for c in parts {
        // [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*
        let seps_ok = !c.is_empty()
            && c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
            && c.as_bytes()[0].is_ascii_alphanumeric()
            && c.as_bytes()[c.len() - 1].is_ascii_alphanumeric()
            && !c.contains("..")
            && !c.contains("___")
            && !c.contains(".-")
            && !c.contains("-.")
            && !c.contains("._")
            && !c.contains("_.");
        if !seps_ok {
            return Err(bad("a path component is not lowercase letters and digits joined by '.', '_' or '-'"));
        }
    }
    Ok(())
}

/// A full image reference (a prepull's images): a repository as [`check_upgrade_image`] with
/// an optional `:tag` (`[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`) and/or `@sha256:{64 hex}`.
pub fn check_image_reference(image: &str) -> Result<(), TaskError> {
    let bad = |why: &str| err(format!("invalid image {image:?}: {why}"));
    let (name, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    if let Some(d) = digest {
        let hex = d.strip_prefix("sha256:").ok_or_else(|| bad("the digest is not sha256"))?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(bad("the digest is not 64 lowercase hex digits"));
        }
    }
    // A tag follows the last ':' after the last '/' (a ':' before it is the registry's port).
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    let (repo, tag) = match name[last_slash..].rfind(':') {
        Some(i) => (&name[..last_slash + i], Some(&name[last_slash + i + 1..])),
        None => (name, None),
    };
    if let Some(t) = tag {
        let ok = !t.is_empty()
            && t.len() <= 128
            && (t.as_bytes()[0].is_ascii_alphanumeric() || t.as_bytes()[0] == b'_')
            && t.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !ok {
            return Err(bad("the tag is not [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"));
        }
    }
    check_upgrade_image(repo)
}

/// Config keys (prefixes) a config update may not change: the task manager's own settings (what
/// it executes) and the database.
pub const PROTECTED_CONFIG_KEYS: [&str; 2] = ["modules.taskManager.", "database."];

/// `updateFields` of a ConfigUpdateJob as keadm's `--set` argument (`k=v` sorted by key,
/// joined by `,`). A key or value holding `,` or `=` (keys), or a control character, would
/// change what keadm sets, so it is refused.
pub fn config_set_argument(fields: &std::collections::BTreeMap<String, String>) -> Result<String, TaskError> {
    if fields.is_empty() {
        return Err(err("updateFields is empty"));
    }
    let mut out = Vec::with_capacity(fields.len());
    for (k, v) in fields {
        let key_ok = !k.is_empty()
            && k.split('.')
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'));
        if !key_ok {
            return Err(err(format!("updateFields key {k:?} is not a dotted path of letters, digits, '_' and '-'")));
        }
        // What the edge executes (`modules.taskManager.keadmPath`) and where it keeps its state
        // are not a job's to change.
        // A parent of them (`database`, `modules.taskManager`, `modules`) would replace them too.
        let parent = format!("{k}.");
        if let Some(p) = PROTECTED_CONFIG_KEYS.iter().find(|p| k.starts_with(*p) || p.starts_with(&parent)) {
            return Err(err(format!("updateFields key {k:?} may not be changed by a config update ({p}*)")));
        }
        if v.contains(',') || v.chars().any(char::is_control) {
            return Err(err(format!("updateFields.{k}: a value may not hold ',' or control characters")));
        }
        out.push(format!("{k}={v}"));
    }
    Ok(out.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_round_trip_and_refuse_others() {
        let r = TaskResource::parse("operations.kubeedge.io/v1alpha2/nodeupgradejob/job1/node/edge-1").unwrap();
        assert_eq!((r.task_type, r.job.as_str(), r.node.as_str()), (TaskType::NodeUpgrade, "job1", "edge-1"));
        assert_eq!(r.to_string(), "operations.kubeedge.io/v1alpha2/nodeupgradejob/job1/node/edge-1");
        for bad in [
            "operations.kubeedge.io/v1alpha2/nodeupgradejob/job1/node",
            "operations.kubeedge.io/v1alpha1/nodeupgradejob/job1/node/e",
            "operations.kubeedge.io/v1alpha2/upgrade/job1/node/e",
            "operations.kubeedge.io/v1alpha2/nodeupgradejob/job1/nodes/e",
            "operations.kubeedge.io/v1alpha2/nodeupgradejob/../node/e",
            "operations.kubeedge.io/v1alpha2/nodeupgradejob/j/node/E",
        ] {
            assert!(TaskResource::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn flows_are_upstreams() {
        let up = TaskType::NodeUpgrade;
        assert_eq!(up.first_action(), "Check");
        assert_eq!(up.step("Check").unwrap().node_phase(true), "InProgress");
        assert_eq!(up.step("Check").unwrap().node_phase(false), "Failure");
        assert_eq!(up.step("Upgrade").unwrap().node_phase(true), "Successful");
        assert_eq!(up.step("Upgrade").unwrap().node_phase(false), "InProgress");
        assert_eq!(up.step("RollBack").unwrap().node_phase(true), "Failure");
        assert_eq!(up.step("RollBack").unwrap().node_phase(false), "Failure");
        assert_eq!(TaskType::ImagePrePull.step("Pull").unwrap().node_phase(false), "Failure");
        assert!(TaskType::ImagePrePull.step("Upgrade").is_none());
        assert_eq!(TaskType::ConfigUpdate.step("Update").unwrap().on_failure, Some("RollBack"));
    }

    #[test]
    fn upstream_message_keys_are_exact() {
        let m = UpstreamMessage { action: "Pull".into(), succ: true, ..Default::default() };
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"action":"Pull","succ":true,"finishTime":"","reason":"","extend":""}"#
        );
        assert!(UpstreamMessage::parse(&vec![b' '; MAX_REPORT_BYTES + 1]).is_err());
        assert_eq!(parse_upgrade_extend("v1.0.0,v1.1.0").unwrap().1, "v1.1.0");
        assert!(parse_upgrade_extend("v1.0.0").is_err());
        let legacy: LegacyTaskResponse =
            serde_json::from_str(r#"{"NodeName":"e","Event":"Rollback","Action":"Success","Time":"t"}"#).unwrap();
        assert_eq!(legacy.to_upstream().action, "RollBack");
        assert!(legacy.to_upstream().succ);
    }

    #[test]
    fn versions_follow_upstreams_rule() {
        for ok in ["v1.21.0", "v1.22.2-rc.1", "v0.0.1-a_b-c.d"] {
            check_version(ok).unwrap();
        }
        for bad in ["1.21.0", "v1.21", "v1.21.0; touch /tmp/pwned", "v1.21.0-", "v1.21.0 --image x", "v1.2.3-$(id)", ""]
        {
            assert!(check_version(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn images_are_references_and_nothing_else() {
        for ok in ["kubeedge/installation-package", "localhost:5000/kubeedge/edgecore", "reg.example.com/a/b_c"] {
            check_upgrade_image(ok).unwrap();
        }
        for bad in ["../../etc/passwd", "a/../b", "Kubeedge/x", "x;rm -rf /", "-x", "a//b", "x:tag", ""] {
            assert!(check_upgrade_image(bad).is_err(), "{bad}");
        }
        for ok in ["busybox", "busybox:1.36", "localhost:5000/a/b:v1", &format!("a@sha256:{}", "0".repeat(64))] {
            check_image_reference(ok).unwrap();
        }
        for bad in ["busybox:", "../busybox:1", "a:b:c", "a@sha256:zz", "a:$(id)", "a:..%2f"] {
            assert!(check_image_reference(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn config_fields_become_one_sorted_argument() {
        let mut f = std::collections::BTreeMap::new();
        f.insert("modules.edged.enable".to_owned(), "true".to_owned());
        f.insert("modules.edgeHub.heartbeat".to_owned(), "20".to_owned());
        assert_eq!(config_set_argument(&f).unwrap(), "modules.edgeHub.heartbeat=20,modules.edged.enable=true");
        f.insert("a".into(), "1,b=2".into());
        assert!(config_set_argument(&f).is_err());
        let mut g = std::collections::BTreeMap::new();
        g.insert("a=b".to_owned(), "1".to_owned());
        assert!(config_set_argument(&g).is_err());
        for key in
            ["modules.taskManager.keadmPath", "database.dataSource", "database", "modules.taskManager", "modules"]
        {
            let mut h = std::collections::BTreeMap::new();
            h.insert(key.to_owned(), "/tmp/x".to_owned());
            assert!(config_set_argument(&h).unwrap_err().0.contains("may not be changed"), "{key}");
        }
    }
}
