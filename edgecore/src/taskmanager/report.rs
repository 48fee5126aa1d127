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
//! Every row ends the task. A `Backup` report is a leftover (backups are read as they finish)
//! and is ignored; any other event is the pending action's failure.

use kubeedge_apis::operations::task::{UpgradeReport, UpstreamMessage, action, report_event, upgrade_extend};

/// What to do with a report file while `pending` waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A leftover: delete the file, keep waiting.
    Ignore,
    /// Send these reports (the last is final), delete the file, end the task.
    Finish(Vec<UpstreamMessage>),
}

fn msg(action: &str, succ: bool, reason: &str, extend: String) -> UpstreamMessage {
    UpstreamMessage {
        action: action.to_owned(),
        succ,
        finish_time: kubeedge_kube_serve::time::now(),
        reason: reason.to_owned(),
        extend,
    }
}

/// The reports for `pending` (Upgrade, Update or RollBack) from keadm's `report`.
pub fn outcome(pending: &str, report: &UpgradeReport) -> Outcome {
    let err = report.error_message.as_str();
    let (ok, why) = (report.success, if report.success { "" } else { err });
    let versions = upgrade_extend(&report.from_version, &report.to_version);
    let event = report.event.as_str();
    if event == report_event::BACKUP {
        return Outcome::Ignore;
    }
    let reports = match (pending, event) {
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
    };
    Outcome::Finish(reports)
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

    fn finish(o: Outcome) -> Vec<(String, bool, String, String)> {
        let Outcome::Finish(v) = o else { panic!("not finished: {o:?}") };
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
    fn leftovers_are_ignored_and_strangers_fail_the_pending_action() {
        assert_eq!(outcome("Upgrade", &report("Backup", true, "", "v1.0.0", "")), Outcome::Ignore);
        let odd = finish(outcome("Update", &report("Upgrade", true, "v1", "v2", "")));
        assert_eq!(odd.len(), 1);
        assert_eq!((odd[0].0.as_str(), odd[0].1), ("Update", false));
        assert!(odd[0].2.contains("\"Upgrade\""));
        assert!(!unreadable("Upgrade", "eof")[0].succ);
    }
}
