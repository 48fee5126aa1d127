//! keadm's report file (`/etc/kubeedge/upgrade_report.json`) turned into the reports the cloud
//! gets, for the action that was left to keadm (the contract's "After a restart"):
//!
//! | pending   | report file          | reports                                                   |
//! |-----------|----------------------|-----------------------------------------------------------|
//! | Upgrade   | Upgrade / true       | Upgrade ✓ (`extend` "vA,vB")                              |
//! | Upgrade   | Upgrade / false      | Upgrade ✗ reason, RollBack ✓ "nothing was changed: …"     |
//! | Upgrade   | Rollback / x         | Upgrade ✗ reason, RollBack x reason                       |
//! | RollBack  | Rollback / x         | RollBack x                                                |
//! | Update    | ConfigUpdate / true  | Update ✓                                                  |
//! | Update    | ConfigUpdate / false | Update ✗ reason, RollBack ✓ (keadm keeps or restores the old file) |
//! | Update    | Rollback / x         | Update ✗ reason, RollBack x                               |
//!
//! Every row ends the task. A report goes to the task whose pending action it can answer
//! ([`answers`]): an `Upgrade` one to the upgrade, a `ConfigUpdate` one to the config update, a
//! `Rollback` one to either; a `Backup` report is a leftover (backups are read as they finish)
//! and is ignored. An event the pending action does not expect (an `Upgrade` report while the
//! upgrade's RollBack is pending, or an event keadm does not write) is its failure.
//!
//! A pending action whose report does not come in time ends as [`overdue`] says.

use kubeedge_apis::operations::task::{TaskType, UpgradeReport, UpstreamMessage, action, report_event, upgrade_extend};

fn msg(action: &str, succ: bool, reason: &str, extend: String) -> UpstreamMessage {
    UpstreamMessage {
        action: action.to_owned(),
        succ,
        finish_time: kubeedge_kube_serve::time::now(),
        reason: reason.to_owned(),
        extend,
    }
}

/// The reports for `pending` (Upgrade, Update or RollBack) from keadm's `report`, one that
/// [`answers`] it; the last is final.
pub fn outcome(pending: &str, report: &UpgradeReport) -> Vec<UpstreamMessage> {
    let err = report.error_message.as_str();
    let (ok, why) = (report.success, if report.success { "" } else { err });
    let versions = upgrade_extend(&report.from_version, &report.to_version);
    match (pending, report.event.as_str()) {
        (action::UPGRADE, report_event::UPGRADE) if ok => vec![msg(action::UPGRADE, true, "", versions)],
        (action::UPGRADE, report_event::UPGRADE) => vec![
            msg(action::UPGRADE, false, err, versions.clone()),
            msg(action::ROLL_BACK, true, &format!("nothing was changed: {err}"), versions),
        ],
        // keadm rolled back itself: the report is vB → vA.
        (action::UPGRADE, report_event::ROLLBACK) => vec![
            msg(action::UPGRADE, false, err, upgrade_extend(&report.to_version, &report.from_version)),
            msg(action::ROLL_BACK, ok, err, versions),
        ],
        (action::ROLL_BACK, report_event::ROLLBACK) => vec![msg(action::ROLL_BACK, ok, why, versions)],
        (action::UPDATE, report_event::CONFIG_UPDATE) if ok => vec![msg(action::UPDATE, true, "", String::new())],
        // keadm leaves the old file in place when it refuses a change, and restores it when
        // edgecore does not come back with the new one.
        (action::UPDATE, report_event::CONFIG_UPDATE) => vec![
            msg(action::UPDATE, false, err, String::new()),
            msg(action::ROLL_BACK, true, &format!("the previous config is in place: {err}"), String::new()),
        ],
        (action::UPDATE, report_event::ROLLBACK) => {
            vec![msg(action::UPDATE, false, err, String::new()), msg(action::ROLL_BACK, ok, err, String::new())]
        }
        (pending, other) => {
            let reason = format!("keadm reported {other:?} (success {ok}) while {pending} was expected: {err}");
            vec![msg(pending, false, &reason, String::new())]
        }
    }
}

/// Whether a report of `event` is for `pending`, an action of a task of type `ty` that keadm
/// runs detached. An event keadm does not write is for any (it fails the action).
pub fn answers(event: &str, ty: TaskType, pending: &str) -> bool {
    let upgrade = ty == TaskType::NodeUpgrade && matches!(pending, action::UPGRADE | action::ROLL_BACK);
    let update = ty == TaskType::ConfigUpdate && matches!(pending, action::UPDATE | action::ROLL_BACK);
    match event {
        report_event::BACKUP => false,
        report_event::UPGRADE => upgrade,
        report_event::CONFIG_UPDATE => update,
        _ => upgrade || update,
    }
}

/// The reports when keadm did not report `pending` of `job` within `seconds`: the action
/// failed, and (after an Upgrade or Update) a failed RollBack, for nobody knows what keadm
/// changed; the cloud sees a final Failure either way.
pub fn overdue(pending: &str, job: &str, seconds: u64) -> Vec<UpstreamMessage> {
    let why = format!("keadm did not report within {seconds}s; see journalctl -u kubeedge-task-{job}");
    let mut reports = vec![msg(pending, false, &why, String::new())];
    if pending != action::ROLL_BACK {
        reports.push(msg(action::ROLL_BACK, false, &format!("nothing known to be changed: {why}"), String::new()));
    }
    reports
}

/// The reports when the report file cannot be read as an [`UpgradeReport`].
pub fn unreadable(pending: &str, why: &str) -> Vec<UpstreamMessage> {
    vec![msg(pending, false, &format!("keadm's report is unreadable: {why}"), String::new())]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(event: &str, success: bool, from: &str, to: &str, err: &str) -> UpgradeReport {
        UpgradeReport {
            event: event.into(),
            success,
            from_version: from.into(),
            to_version: to.into(),
            error_message: err.into(),
        }
    }

    fn finish(v: Vec<UpstreamMessage>) -> Vec<(String, bool, String, String)> {
        v.into_iter().map(|m| (m.action, m.succ, m.reason, m.extend)).collect()
    }

    fn row(a: &str, s: bool, r: &str, e: &str) -> (String, bool, String, String) {
        (a.into(), s, r.into(), e.into())
    }

    #[test]
    fn upgrade_outcomes_follow_the_contract() {
        let ok = finish(outcome("Upgrade", &report("Upgrade", true, "v1.0.0", "v1.1.0", "")));
        assert_eq!(ok, vec![row("Upgrade", true, "", "v1.0.0,v1.1.0")]);

        let refused = finish(outcome("Upgrade", &report("Upgrade", false, "v1.0.0", "v1.1.0", "image missing")));
        assert_eq!(
            refused,
            vec![
                row("Upgrade", false, "image missing", "v1.0.0,v1.1.0"),
                row("RollBack", true, "nothing was changed: image missing", "v1.0.0,v1.1.0"),
            ]
        );

        let why = "upgrade to v1.1.0 failed: not connected; rolled back to v1.0.0";
        let rolled = finish(outcome("Upgrade", &report("Rollback", true, "v1.1.0", "v1.0.0", why)));
        assert_eq!(
            rolled,
            vec![row("Upgrade", false, why, "v1.0.0,v1.1.0"), row("RollBack", true, why, "v1.1.0,v1.0.0")]
        );
        let broken = finish(outcome("Upgrade", &report("Rollback", false, "v1.1.0", "v1.0.0", "restore failed")));
        assert_eq!(broken[1], row("RollBack", false, "restore failed", "v1.1.0,v1.0.0"));

        let after_rollback = finish(outcome("RollBack", &report("Rollback", true, "v1.1.0", "v1.0.0", "")));
        assert_eq!(after_rollback, vec![row("RollBack", true, "", "v1.1.0,v1.0.0")]);
    }

    #[test]
    fn config_update_outcomes_follow_the_contract() {
        assert_eq!(
            finish(outcome("Update", &report("ConfigUpdate", true, "", "", ""))),
            vec![row("Update", true, "", "")]
        );
        let failed = finish(outcome("Update", &report("ConfigUpdate", false, "", "", "modules.x: unknown key")));
        assert_eq!(failed[0], row("Update", false, "modules.x: unknown key", ""));
        assert_eq!((failed[1].0.as_str(), failed[1].1), ("RollBack", true));
        assert!(failed[1].2.contains("modules.x: unknown key"));
    }

    #[test]
    fn strangers_fail_the_pending_action() {
        let odd = finish(outcome("Update", &report("Upgrade", true, "v1", "v2", "")));
        assert_eq!(odd.len(), 1);
        assert_eq!((odd[0].0.as_str(), odd[0].1), ("Update", false));
        assert!(odd[0].2.contains("\"Upgrade\""));
        assert!(!unreadable("Upgrade", "eof")[0].succ);
    }

    #[test]
    fn a_report_goes_to_the_task_it_can_answer() {
        use TaskType::*;
        assert!(answers("Upgrade", NodeUpgrade, "Upgrade") && answers("Upgrade", NodeUpgrade, "RollBack"));
        assert!(!answers("Upgrade", ConfigUpdate, "Update"));
        assert!(answers("ConfigUpdate", ConfigUpdate, "Update") && answers("ConfigUpdate", ConfigUpdate, "RollBack"));
        assert!(!answers("ConfigUpdate", NodeUpgrade, "Upgrade") && !answers("ConfigUpdate", NodeUpgrade, "RollBack"));
        assert!(answers("Rollback", NodeUpgrade, "Upgrade") && answers("Rollback", ConfigUpdate, "Update"));
        assert!(!answers("Rollback", ImagePrePull, "Pull"));
        assert!(!answers("Backup", NodeUpgrade, "Upgrade") && !answers("Backup", ConfigUpdate, "Update"));
        assert!(answers("Other", ConfigUpdate, "Update"));
    }

    #[test]
    fn an_overdue_report_fails_the_action_and_its_rollback() {
        let why = "keadm did not report within 150s; see journalctl -u kubeedge-task-up-1";
        let rows: Vec<_> = overdue("Upgrade", "up-1", 150).into_iter().map(|m| (m.action, m.succ, m.reason)).collect();
        assert_eq!(
            rows,
            [
                ("Upgrade".to_owned(), false, why.to_owned()),
                ("RollBack".to_owned(), false, format!("nothing known to be changed: {why}"))
            ]
        );
        let rb = overdue("RollBack", "up-1", 150);
        assert_eq!((rb.len(), rb[0].action.as_str(), rb[0].succ), (1, "RollBack", false));
    }
}
