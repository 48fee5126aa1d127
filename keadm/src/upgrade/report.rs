//! `/etc/kubeedge/upgrade_report.json`: what edgecore's task manager reads after the restart a
//! command caused (upstream's `upgrade_reporter.go`, [`UpgradeReport`]). Written atomically
//! (beside, fsync, rename) with mode 0600, so a reader never sees half a report.

use std::path::Path;

use kubeedge_apis::operations::task::UpgradeReport;

use super::Error;

/// Writes `report` to `path`, replacing any earlier one.
pub fn write(path: &Path, report: &UpgradeReport) -> Result<(), Error> {
    let json = serde_json::to_vec(report).map_err(|e| Error::Failed(format!("encoding the report: {e}")))?;
    super::files::write_atomic(path, &json, 0o600)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn the_report_is_upstreams_json_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etc/kubeedge/upgrade_report.json");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let r = UpgradeReport {
            event: "Rollback".into(),
            success: true,
            from_version: "v1.99.0".into(),
            to_version: "v0.1.0".into(),
            error_message: "upgrade to v1.99.0 failed: x; rolled back to v0.1.0".into(),
        };
        write(&path, &r).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            r#"{"event":"Rollback","success":true,"fromVersion":"v1.99.0","toVersion":"v0.1.0","errorMessage":"upgrade to v1.99.0 failed: x; rolled back to v0.1.0"}"#
        );
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        // No temporary file is left.
        assert_eq!(std::fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
        let ok =
            UpgradeReport { event: "Backup".into(), success: true, to_version: "v0.1.0".into(), ..Default::default() };
        write(&path, &ok).unwrap();
        assert!(!std::fs::read_to_string(&path).unwrap().contains("errorMessage"));
    }
}
