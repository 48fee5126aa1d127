//! The actions of the three flows (upstream's `actions/*.go`). Each runs in its own task and
//! returns what to report and where the task goes next; the module's task owns the records and
//! does the reporting.

use std::collections::BTreeMap;
use std::time::Duration;

use kubeedge_apis::operations::task::{
    self as task, TaskType, UpgradeReport, UpstreamMessage, action, check_image_reference, check_upgrade_image,
    check_version, config_set_argument,
};
use kubeedge_apis::operations::v1alpha2::{
    ConfigUpdateJobSpec, ImagePrePullJobSpec, ImagePrePullTemplate, ImageStatus, NodeUpgradeJobSpec,
};
use kubeedge_cri::Cri;
use kubeedge_metastore::Store;
use tracing::{info, warn};

use super::{Settings, keadm, precheck, secret};

/// Delay between pull attempts (upstream's fixed 500 ms).
const PULL_RETRY_DELAY: Duration = Duration::from_millis(500);
/// The most `retryTimes` honoured.
const MAX_PULL_RETRIES: i32 = 10;
/// How long keadm's report of a detached action may take beyond twice the `--connect-timeout`
/// it was given (keadm waits that long for the new edgecore, and again for the old one after a
/// rollback): two `systemctl stop`s of up to 90 s each, starts, and writing the report.
pub const REPORT_GRACE_SECS: u64 = 300;

/// Where a task goes after an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Then {
    /// Run this action next.
    Next(&'static str),
    /// Stop until `keadm ctl confirm`.
    WaitConfirmation,
    /// keadm runs this action detached; its report file will tell within `seconds`.
    Pending {
        /// The action.
        action: &'static str,
        /// How long its report is waited for.
        seconds: u64,
    },
    /// The task ended.
    Done,
}

/// What an action produced.
#[derive(Debug, Clone)]
pub struct ActionResult {
    /// Reports to send, in order (the last is the task's latest).
    pub reports: Vec<UpstreamMessage>,
    /// What comes next.
    pub then: Then,
}

/// What the actions need from the node.
pub struct Env {
    /// Paths and commands.
    pub settings: Settings,
    /// MetaManager's store (pull secrets).
    pub store: Store,
}

fn report(action: &str, result: &Result<String, String>) -> UpstreamMessage {
    let (succ, reason, extend) = match result {
        Ok(extend) => (true, String::new(), extend.clone()),
        Err(e) => (false, e.clone(), String::new()),
    };
    UpstreamMessage { action: action.to_owned(), succ, finish_time: kubeedge_kube_serve::time::now(), reason, extend }
}

/// Follows the flow after `action` ended with `succ`.
fn follow(ty: TaskType, action: &'static str, succ: bool) -> Then {
    let next = ty.step(action).and_then(|s| if succ { s.on_success } else { s.on_failure });
    next.map_or(Then::Done, Then::Next)
}

/// A simple action's result: one report, then the flow.
fn simple(ty: TaskType, action: &'static str, result: Result<String, String>) -> ActionResult {
    let then = follow(ty, action, result.is_ok());
    ActionResult { reports: vec![report(action, &result)], then }
}

/// An action that must change the node but could not start: nothing was changed, so the task
/// ends with the action's failure and a successful RollBack (a final report for the cloud,
/// as when keadm refuses an upgrade before touching anything).
fn not_started(action: &'static str, why: String) -> ActionResult {
    let rollback = Ok(String::new());
    let mut rb = report(action::ROLL_BACK, &rollback);
    rb.reason = format!("nothing was changed: {why}");
    ActionResult { reports: vec![report(action, &Err(why)), rb], then: Then::Done }
}

/// An action that was not run, or not run to its end, for `why`: its failure, and the task
/// ends (an Upgrade or Update as [`not_started`], for nothing was changed).
pub fn not_run(action: &'static str, why: String) -> ActionResult {
    match action {
        action::UPGRADE | action::UPDATE => not_started(action, why),
        _ => ActionResult { reports: vec![report(action, &Err(why))], then: Then::Done },
    }
}

/// How long keadm's report of a detached action of a job given `timeout_seconds` is waited
/// for: keadm's worst case, twice the `--connect-timeout` handed to it, and
/// [`REPORT_GRACE_SECS`].
pub fn report_wait(timeout_seconds: Option<u32>) -> u64 {
    2 * u64::from(keadm::connect_timeout(timeout_seconds)) + REPORT_GRACE_SECS
}

/// [`report_wait`] for a task of type `ty` with `spec`.
pub fn report_wait_for(ty: TaskType, spec: &serde_json::Value) -> u64 {
    let timeout = match ty {
        TaskType::NodeUpgrade => {
            serde_json::from_value::<NodeUpgradeJobSpec>(spec.clone()).ok().and_then(|s| s.timeout_seconds)
        }
        TaskType::ConfigUpdate => {
            serde_json::from_value::<ConfigUpdateJobSpec>(spec.clone()).ok().and_then(|s| s.timeout_seconds)
        }
        TaskType::ImagePrePull => None,
    };
    report_wait(timeout)
}

/// Runs `action` of a task of type `ty` for `job` with its `spec`.
pub async fn run(env: &Env, ty: TaskType, job: &str, spec: &serde_json::Value, action: &'static str) -> ActionResult {
    info!(task.action = action, "Running the action.");
    match ty {
        TaskType::NodeUpgrade => match serde_json::from_value::<NodeUpgradeJobSpec>(spec.clone()) {
            Ok(s) => upgrade(env, job, &s, action).await,
            Err(e) => simple(ty, action, Err(format!("invalid NodeUpgradeJob spec: {e}"))),
        },
        TaskType::ImagePrePull => match serde_json::from_value::<ImagePrePullJobSpec>(spec.clone()) {
            Ok(s) => prepull(env, &s.image_pre_pull_template.unwrap_or_default(), action).await,
            Err(e) => simple(ty, action, Err(format!("invalid ImagePrePullJob spec: {e}"))),
        },
        TaskType::ConfigUpdate => match serde_json::from_value::<ConfigUpdateJobSpec>(spec.clone()) {
            Ok(s) => config_update(env, job, &s, action).await,
            Err(e) => simple(ty, action, Err(format!("invalid ConfigUpdateJob spec: {e}"))),
        },
    }
}

// === NodeUpgradeJob ===

async fn upgrade(env: &Env, job: &str, spec: &NodeUpgradeJobSpec, act: &'static str) -> ActionResult {
    let ty = TaskType::NodeUpgrade;
    let validate = || -> Result<(), String> {
        check_version(&spec.version).map_err(|e| e.to_string())?;
        if !spec.image.is_empty() {
            check_upgrade_image(&spec.image).map_err(|e| e.to_string())?;
        }
        Ok(())
    };
    match act {
        action::CHECK => {
            let result = async {
                precheck::run(&spec.check_items).await?;
                validate()?;
                if !spec.image.is_empty() {
                    fetch_upgrade_image(env, spec).await?;
                }
                Ok(String::new())
            }
            .await;
            simple(ty, act, result)
        }
        action::WAITING_CONFIRMATION => {
            let mut r = simple(ty, act, Ok(String::new()));
            if spec.require_confirmation {
                r.then = Then::WaitConfirmation;
            }
            r
        }
        action::BACK_UP => simple(ty, act, backup(&env.settings).await),
        action::UPGRADE => {
            if let Err(e) = validate() {
                return not_started(act, e);
            }
            let args = keadm::upgrade_args(
                &env.settings,
                &spec.version,
                &spec.image,
                keadm::connect_timeout(spec.timeout_seconds),
            );
            launch(env, job, args, act, spec.timeout_seconds).await
        }
        action::ROLL_BACK => rollback(env, job, ty, spec.timeout_seconds).await,
        other => simple(ty, act, Err(format!("{other} is not an action of {}", ty.kind()))),
    }
}

/// `image:version` through CRI (pulled only when missing, as upstream), and its digest checked
/// against `imageDigestGatter` for this architecture when one is given.
async fn fetch_upgrade_image(env: &Env, spec: &NodeUpgradeJobSpec) -> Result<(), String> {
    let reference = format!("{}:{}", spec.image, spec.version);
    let cri = connect(&env.settings).await?;
    let mut image = cri.image_status(&reference).await.map_err(|e| format!("ImageStatus {reference}: {e}"))?;
    if image.is_none() {
        cri.pull_image(&reference, None, None).await.map_err(|e| format!("pulling {reference}: {e}"))?;
        image = cri.image_status(&reference).await.map_err(|e| format!("ImageStatus {reference}: {e}"))?;
    }
    let Some(getter) = spec.image_digest_getter.as_ref().filter(|g| !g.amd64.is_empty() || !g.arm64.is_empty()) else {
        return Ok(());
    };
    let want = match std::env::consts::ARCH {
        "x86_64" => &getter.amd64,
        "aarch64" => &getter.arm64,
        other => return Err(format!("unsupported the arch {other} to verify the image digest")),
    };
    let digests: Vec<String> = image
        .map(|i| i.repo_digests.iter().filter_map(|d| d.split_once('@').map(|(_, h)| h.to_owned())).collect())
        .unwrap_or_default();
    if !want.is_empty() && !digests.iter().any(|d| d == want) {
        return Err(format!("the digest of {reference} is {digests:?}, not {want}"));
    }
    Ok(())
}

/// Upgrade or Update: keadm launched detached, or the action failed with nothing changed.
async fn launch(
    env: &Env,
    job: &str,
    args: Vec<std::ffi::OsString>,
    act: &'static str,
    timeout_seconds: Option<u32>,
) -> ActionResult {
    match keadm::launch_detached(&env.settings, job, args).await {
        Ok(()) => pending(act, timeout_seconds),
        Err(e) => not_started(act, e),
    }
}

fn pending(action: &'static str, timeout_seconds: Option<u32>) -> ActionResult {
    ActionResult { reports: Vec::new(), then: Then::Pending { action, seconds: report_wait(timeout_seconds) } }
}

async fn rollback(env: &Env, job: &str, ty: TaskType, timeout_seconds: Option<u32>) -> ActionResult {
    match keadm::launch_detached(&env.settings, job, keadm::rollback_args(&env.settings)).await {
        Ok(()) => pending(action::ROLL_BACK, timeout_seconds),
        Err(e) => simple(ty, action::ROLL_BACK, Err(e)),
    }
}

/// `keadm backup edge`, then its report read and removed; `extend` "from,to" from it.
async fn backup(s: &Settings) -> Result<String, String> {
    keadm::backup(s).await?;
    match read_report(s).await {
        Ok(Some(r)) if !r.success => Err(format!("keadm backup failed, err: {}", r.error_message)),
        Ok(Some(r)) => Ok(task::upgrade_extend(&r.from_version, &r.to_version)),
        Ok(None) => Ok(String::new()),
        Err(e) => Err(format!("keadm backup failed, err: {e}")),
    }
}

/// Reads and removes the report file (`None` when there is none). At most
/// [`task::MAX_REPORT_BYTES`] are read: a larger file is refused without being read whole.
pub async fn read_report(s: &Settings) -> Result<Option<UpgradeReport>, String> {
    use tokio::io::AsyncReadExt;
    let file = match tokio::fs::File::open(&s.report_file).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("reading {}: {e}", s.report_file.display())),
    };
    let mut bytes = Vec::new();
    let read = file.take(task::MAX_REPORT_BYTES as u64 + 1).read_to_end(&mut bytes).await;
    if let Err(e) = tokio::fs::remove_file(&s.report_file).await {
        warn!(path = %s.report_file.display(), error = %e, "Could not remove keadm's report file.");
    }
    read.map_err(|e| format!("reading {}: {e}", s.report_file.display()))?;
    if bytes.len() > task::MAX_REPORT_BYTES {
        return Err(format!("{} is over {} bytes", s.report_file.display(), task::MAX_REPORT_BYTES));
    }
    serde_json::from_slice(&bytes).map(Some).map_err(|e| format!("{} is not a report: {e}", s.report_file.display()))
}

// === ImagePrePullJob ===

async fn prepull(env: &Env, t: &ImagePrePullTemplate, act: &'static str) -> ActionResult {
    let ty = TaskType::ImagePrePull;
    match act {
        action::CHECK => {
            let result = async {
                precheck::run(&t.check_items).await?;
                for image in &t.images {
                    check_image_reference(image).map_err(|e| e.to_string())?;
                }
                Ok(String::new())
            }
            .await;
            simple(ty, act, result)
        }
        action::PULL => {
            let (result, statuses) = pull(env, t).await;
            let extend = serde_json::to_string(&statuses).unwrap_or_else(|_| "[]".to_owned());
            let mut r = simple(ty, act, result.map(|()| extend.clone()));
            // The image results go with a failure too.
            if let Some(m) = r.reports.first_mut() {
                m.extend = extend;
            }
            r
        }
        other => simple(ty, act, Err(format!("{other} is not an action of {}", ty.kind()))),
    }
}

/// Pulls every image, `retryTimes` more attempts 500 ms apart for those that failed; the
/// verdict and each image's result.
async fn pull(env: &Env, t: &ImagePrePullTemplate) -> (Result<(), String>, Vec<ImageStatus>) {
    let failed_all = |why: String| {
        let statuses =
            t.images.iter().map(|i| ImageStatus { image: i.clone(), status: "False".into(), reason: why.clone() });
        (Err(why.clone()), statuses.collect())
    };
    let auth = if t.image_secret.is_empty() {
        None
    } else {
        match pull_secret(&env.store, &t.image_secret).await {
            Ok(a) => Some(a),
            Err(e) => return failed_all(e),
        }
    };
    let cri = match connect(&env.settings).await {
        Ok(c) => c,
        Err(e) => return failed_all(e),
    };
    let mut results: BTreeMap<&str, Result<(), String>> =
        t.images.iter().map(|i| (i.as_str(), Err("not pulled".to_owned()))).collect();
    let attempts = t.retry_times.clamp(0, MAX_PULL_RETRIES) + 1;
    for attempt in 0..attempts {
        if attempt > 0 {
            tokio::time::sleep(PULL_RETRY_DELAY).await;
        }
        for image in &t.images {
            if results.get(image.as_str()).is_some_and(Result::is_ok) {
                continue;
            }
            let r = pull_one(&cri, image, auth.as_ref()).await;
            results.insert(image, r);
        }
        if results.values().all(Result::is_ok) {
            break;
        }
    }
    // In the job's order (duplicates reported once each, as given).
    let statuses: Vec<ImageStatus> = t
        .images
        .iter()
        .map(|i| match &results[i.as_str()] {
            Ok(()) => ImageStatus { image: i.clone(), status: "True".into(), reason: String::new() },
            Err(e) => ImageStatus { image: i.clone(), status: "False".into(), reason: e.clone() },
        })
        .collect();
    let verdict = if statuses.iter().all(|s| s.status == "True") {
        Ok(())
    } else {
        Err("there were some failures when pulling images".to_owned())
    };
    (verdict, statuses)
}

/// One image: present already, or pulled now.
async fn pull_one(cri: &Cri, image: &str, auth: Option<&secret::PullAuth>) -> Result<(), String> {
    check_image_reference(image).map_err(|e| e.to_string())?;
    if cri.image_status(image).await.map_err(|e| format!("ImageStatus: {e}"))?.is_some() {
        return Ok(());
    }
    let creds = auth.and_then(|a| a.for_image(image));
    cri.pull_image(image, creds, None).await.map(|_| ()).map_err(|e| format!("pulling {image}: {e}"))
}

/// The pull secret from MetaManager's store (`meta`, as the cloud sent it; `meta_v2` for one
/// only MetaServer's store has).
async fn pull_secret(store: &Store, reference: &str) -> Result<secret::PullAuth, String> {
    let (ns, name) = secret::parse_reference(reference)?;
    let read_err = |e: kubeedge_metastore::Error| format!("reading the pull secret {reference}: {e}");
    let value = match store.get(&format!("{ns}/secret/{name}")).await.map_err(read_err)? {
        Some(row) => row.value,
        None => {
            let key = kubeedge_metastore::v2_key("", "v1", "secrets", Some(ns), Some(name));
            let row = store.get_v2(&key).await.map_err(read_err)?;
            row.ok_or_else(|| format!("the pull secret {reference} is not on this node"))?.value
        }
    };
    secret::from_secret(&value).map_err(|e| format!("pull secret {reference}: {e}"))
}

async fn connect(s: &Settings) -> Result<Cri, String> {
    let socket = s.cri_socket.as_ref().ok_or("no container runtime endpoint is configured")?;
    Cri::connect(socket).await.map_err(|e| format!("container runtime {}: {e}", socket.display()))
}

// === ConfigUpdateJob ===

async fn config_update(env: &Env, job: &str, spec: &ConfigUpdateJobSpec, act: &'static str) -> ActionResult {
    let ty = TaskType::ConfigUpdate;
    let set = || config_set_argument(&spec.update_fields).map_err(|e| e.to_string());
    match act {
        // Upstream's Check does nothing; the fields are checked here, before the backup.
        action::CHECK => simple(ty, act, set().map(|_| String::new())),
        // Config updates report no versions (upstream's reports have no extend).
        action::BACK_UP => simple(ty, act, backup(&env.settings).await.map(|_| String::new())),
        action::UPDATE => {
            let set = match set() {
                Ok(s) => s,
                Err(e) => return not_started(act, e),
            };
            let args = keadm::config_update_args(&env.settings, &set, keadm::connect_timeout(spec.timeout_seconds));
            launch(env, job, args, act, spec.timeout_seconds).await
        }
        action::ROLL_BACK => rollback(env, job, ty, spec.timeout_seconds).await,
        other => simple(ty, act, Err(format!("{other} is not an action of {}", ty.kind()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flows_lead_where_upstreams_do() {
        assert_eq!(follow(TaskType::NodeUpgrade, action::CHECK, true), Then::Next(action::WAITING_CONFIRMATION));
        assert_eq!(follow(TaskType::NodeUpgrade, action::CHECK, false), Then::Done);
        assert_eq!(follow(TaskType::ImagePrePull, action::PULL, true), Then::Done);
        assert_eq!(follow(TaskType::ConfigUpdate, action::BACK_UP, true), Then::Next(action::UPDATE));
        let r = not_started(action::UPGRADE, "no systemd".into());
        assert_eq!(r.then, Then::Done);
        assert_eq!(
            r.reports.iter().map(|m| (m.action.as_str(), m.succ)).collect::<Vec<_>>(),
            [("Upgrade", false), ("RollBack", true)]
        );
        assert_eq!(r.reports[1].reason, "nothing was changed: no systemd");
    }

    #[test]
    fn an_action_not_run_ends_the_task() {
        let rows = |r: ActionResult| {
            assert_eq!(r.then, Then::Done);
            r.reports.into_iter().map(|m| (m.action, m.succ)).collect::<Vec<_>>()
        };
        assert_eq!(rows(not_run(action::BACK_UP, "busy".into())), [("BackUp".to_owned(), false)]);
        assert_eq!(rows(not_run(action::ROLL_BACK, "busy".into())), [("RollBack".to_owned(), false)]);
        assert_eq!(
            rows(not_run(action::UPDATE, "busy".into())),
            [("Update".to_owned(), false), ("RollBack".to_owned(), true)]
        );
        // Twice keadm's connect-timeout (120 s by default, half the job's timeout, at least
        // 30 s) and five minutes.
        assert_eq!(report_wait(None), 540);
        assert_eq!(report_wait(Some(600)), 900);
        assert_eq!(
            report_wait_for(TaskType::ConfigUpdate, &serde_json::json!({"timeoutSeconds": 60, "updateFields": {}})),
            360
        );
        assert_eq!(report_wait_for(TaskType::NodeUpgrade, &serde_json::json!({"version": 3})), 540);
    }

    #[tokio::test]
    async fn a_report_file_is_read_once_and_only_up_to_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Settings::new("edge-1", "keadm", "edgecore.yaml", None);
        s.report_file = dir.path().join("upgrade_report.json");
        assert_eq!(read_report(&s).await, Ok(None));
        std::fs::write(&s.report_file, r#"{"event":"Upgrade","success":true}"#).unwrap();
        assert_eq!(read_report(&s).await.unwrap().unwrap().event, "Upgrade");
        assert!(!s.report_file.exists());
        std::fs::write(&s.report_file, vec![b' '; task::MAX_REPORT_BYTES + 10]).unwrap();
        assert!(read_report(&s).await.unwrap_err().contains("is over 65536 bytes"));
        assert!(!s.report_file.exists());
        std::fs::write(&s.report_file, vec![b' '; task::MAX_REPORT_BYTES]).unwrap();
        assert!(read_report(&s).await.unwrap_err().contains("is not a report"));
    }
}
