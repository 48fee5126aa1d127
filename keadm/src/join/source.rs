//! Where the edgecore binary comes from: never a download. `--tarballpath DIR` names a
//! directory holding `edgecore` (or upstream's release layout, `edge/edgecore` or
//! `kubeedge-*/edge/edgecore`); without it, the `edgecore` next to the keadm binary. The binary
//! must run and say it is edgecore (`edgecore --version`), of `--kubeedge-version` if given.

use std::path::{Path, PathBuf};

use super::Plan;

/// The fix printed when no usable binary is found.
pub const FIX: &str = "put edgecore next to keadm, or pass --tarballpath with a directory holding edgecore";

/// Why no usable edgecore was found.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Nothing found.
    #[error("no edgecore in {0}")]
    Missing(String),
    /// It does not run or is not edgecore.
    #[error("{path}: {why}")]
    Unusable {
        /// The binary.
        path: String,
        /// Why.
        why: String,
    },
    /// Not the version asked for.
    #[error("{path} is {found}, not --kubeedge-version {wanted}")]
    Version {
        /// The binary.
        path: String,
        /// What it says.
        found: String,
        /// `--kubeedge-version`.
        wanted: String,
    },
}

fn candidates(dir: &Path) -> Vec<PathBuf> {
    let mut c = vec![dir.join("edgecore"), dir.join("edge/edgecore")];
    if let Ok(entries) = std::fs::read_dir(dir) {
        let mut nested: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("kubeedge-")))
            .map(|p| p.join("edge/edgecore"))
            .collect();
        nested.sort();
        c.extend(nested);
    }
    c
}

/// The binary and its `--version` line.
pub fn find(plan: &Plan) -> Result<(PathBuf, String), Error> {
    let dir = match &plan.tarball_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(Path::to_owned))
            .ok_or_else(|| Error::Missing("the directory of keadm".into()))?,
    };
    let whence = if plan.tarball_dir.is_some() { "--tarballpath" } else { "keadm's own directory" };
    let path = candidates(&dir)
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| Error::Missing(format!("{} ({whence})", dir.display())))?;
    let shown = path.display().to_string();
    let out = std::process::Command::new(&path)
        .arg("--version")
        .output()
        .map_err(|e| Error::Unusable { path: shown.clone(), why: e.to_string() })?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || !version.starts_with("edgecore ") {
        return Err(Error::Unusable { path: shown, why: format!("`--version` says {version:?}, not edgecore") });
    }
    if let Some(wanted) = &plan.version {
        let bare = wanted.trim_start_matches('v');
        let found = version.split_whitespace().nth(1).unwrap_or_default().trim_start_matches('v');
        if found != bare {
            return Err(Error::Version { path: shown, found: version, wanted: wanted.clone() });
        }
    }
    Ok((path, version))
}
