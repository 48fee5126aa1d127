//! upstream's mutual exclusion of the node-task commands: `/etc/kubeedge/idempotency_record`,
//! created exclusively and removed when the command ends (on drop). The file holds keadm's pid,
//! so a record left by a keadm that was killed is recognised (its pid is gone) and taken over
//! instead of blocking every later upgrade.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use super::Error;

/// Where the record lives (upstream's path).
pub const LOCK_PATH: &str = "/etc/kubeedge/idempotency_record";

/// The held lock; released on drop.
#[derive(Debug)]
pub struct Lock {
    path: PathBuf,
}

impl Lock {
    /// Takes the lock at `path`, or fails with upstream's message when another keadm holds it.
    pub fn acquire(path: &Path) -> Result<Self, Error> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
        }
        for _ in 0..2 {
            match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
                Ok(mut f) => {
                    f.write_all(std::process::id().to_string().as_bytes())
                        .map_err(|e| Error::io("writing", path, e))?;
                    return Ok(Self { path: path.to_owned() });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if holder_alive(path) {
                        break;
                    }
                    // Left by a keadm that no longer runs: take it over.
                    let _ = std::fs::remove_file(path);
                }
                Err(e) => return Err(Error::io("creating", path, e)),
            }
        }
        Err(Error::Failed(format!(
            "the mutually exclusive command is being executed (lock file {} held by a running keadm)",
            path.display()
        )))
    }
}

/// Whether the pid in the record is a running process (an unreadable record counts as held).
fn holder_alive(path: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(path) else { return true };
    match text.trim().parse::<u32>() {
        Ok(pid) => Path::new(&format!("/proc/{pid}")).exists(),
        // Upstream writes no pid: respect its record.
        Err(_) => true,
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_command_is_refused_and_the_record_is_removed_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etc/kubeedge/idempotency_record");
        let held = Lock::acquire(&path).unwrap();
        let e = Lock::acquire(&path).unwrap_err();
        assert!(e.to_string().contains("the mutually exclusive command is being executed"), "{e}");
        drop(held);
        assert!(!path.exists());
        // Upstream's record (no pid) is respected.
        std::fs::write(&path, "").unwrap();
        assert!(Lock::acquire(&path).is_err());
        // A record of a process that is gone is taken over.
        std::fs::write(&path, "4294967295").unwrap();
        let l = Lock::acquire(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), std::process::id().to_string());
        drop(l);
    }
}
