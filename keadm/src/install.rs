//! An install that is all or nothing: files are written beside their place and renamed, never
//! over an existing file, and everything this run created (files, directories, an enabled
//! unit) is undone in reverse order if it does not [`commit`](Tx::commit).

use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::paths::Root;
use crate::systemd::Systemctl;

/// A file operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The target exists already.
    #[error("{0} exists already; keadm does not overwrite it")]
    Exists(PathBuf),
    /// I/O failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// systemctl failed.
    #[error(transparent)]
    Systemd(#[from] crate::systemd::Error),
}

enum Undo {
    File(PathBuf),
    Dir(PathBuf),
    Unit(String),
    /// A path the installed daemon may create (its database, state dirs): removed, whatever
    /// it holds, if it exists at rollback. Only claimed when it did not exist before the run.
    Tree(PathBuf),
}

/// The changes of one run.
pub struct Tx<'a> {
    root: &'a Root,
    undo: Vec<Undo>,
    committed: bool,
}

impl<'a> Tx<'a> {
    /// A new, empty transaction in `root`.
    pub fn new(root: &'a Root) -> Self {
        Self { root, undo: Vec::new(), committed: false }
    }

    /// Creates `dir` (given inside the root) and its missing parents, remembering each.
    pub fn mkdirs(&mut self, dir: impl AsRef<Path>) -> Result<PathBuf, Error> {
        let dir = self.root.at(dir);
        let mut missing = Vec::new();
        let mut at = dir.as_path();
        while !at.exists() {
            missing.push(at.to_owned());
            match at.parent() {
                Some(p) => at = p,
                None => break,
            }
        }
        for d in missing.into_iter().rev() {
            std::fs::create_dir(&d).map_err(|source| Error::Io { what: "creating", path: d.clone(), source })?;
            self.undo.push(Undo::Dir(d));
        }
        Ok(dir)
    }

    /// Writes a new file `path` (inside the root) with `mode`.
    pub fn write(&mut self, path: impl AsRef<Path>, data: &[u8], mode: u32) -> Result<PathBuf, Error> {
        let path = path.as_ref();
        if let Some(parent) = path.parent() {
            self.mkdirs(parent)?;
        }
        let target = self.root.at(path);
        if target.exists() {
            return Err(Error::Exists(target));
        }
        write_beside(&target, &mut { data }, mode)?;
        self.undo.push(Undo::File(target.clone()));
        Ok(target)
    }

    /// Copies the file `from` (on this machine) to the new file `to` (inside the root).
    pub fn copy(&mut self, from: &Path, to: impl AsRef<Path>, mode: u32) -> Result<PathBuf, Error> {
        let data =
            std::fs::read(from).map_err(|source| Error::Io { what: "reading", path: from.to_owned(), source })?;
        self.write(to, &data, mode)
    }

    /// Enables (and on a running systemd starts) `unit`; undone by disabling (and stopping) it.
    pub fn enable(&mut self, unit: &str) -> Result<(), Error> {
        let systemctl = Systemctl::new(self.root);
        systemctl.daemon_reload()?;
        self.undo.push(Undo::Unit(unit.to_owned()));
        systemctl.enable_now(unit)?;
        Ok(())
    }

    /// Claims `path` (inside the root) for the installed daemon: when it does not exist now,
    /// a rollback removes whatever is there by then (a database, a state dir the daemon
    /// created). Something that exists already is not this run's, and is left alone.
    pub fn claim(&mut self, path: impl AsRef<Path>) {
        let path = self.root.at(path);
        if std::fs::symlink_metadata(&path).is_err() {
            self.undo.push(Undo::Tree(path));
        }
    }

    /// Keeps everything.
    pub fn commit(mut self) {
        self.committed = true;
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if self.committed || self.undo.is_empty() {
            return;
        }
        println!("[rollback] Undoing what this run changed.");
        let systemctl = Systemctl::new(self.root);
        let mut units = false;
        while let Some(u) = self.undo.pop() {
            let result = match &u {
                Undo::Unit(name) => {
                    units = true;
                    systemctl.disable_now(name).map_err(|e| e.to_string())
                }
                Undo::File(p) => std::fs::remove_file(p).map_err(|e| format!("{}: {e}", p.display())),
                Undo::Dir(p) => std::fs::remove_dir(p).map_err(|e| format!("{}: {e}", p.display())),
                Undo::Tree(p) => match std::fs::symlink_metadata(p) {
                    Err(_) => Ok(()),
                    Ok(m) if m.is_dir() => std::fs::remove_dir_all(p).map_err(|e| format!("{}: {e}", p.display())),
                    Ok(_) => std::fs::remove_file(p).map_err(|e| format!("{}: {e}", p.display())),
                },
            };
            if let Err(e) = result {
                eprintln!("[rollback] Could not undo a change: {e}");
            }
        }
        if units {
            let _ = systemctl.daemon_reload();
        }
    }
}

/// Writes `data` to `target` atomically: into `.{name}.keadm-tmp` beside it with `mode`,
/// synced, then renamed over it (and the directory synced), so a crash leaves the old file or
/// the new one, never a mix. The temporary file is removed on failure.
pub fn write_beside(target: &Path, data: &mut dyn Read, mode: u32) -> Result<(), Error> {
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = target.with_file_name(format!(".{name}.keadm-tmp"));
    let _ = std::fs::remove_file(&tmp);
    let io = |what, source| Error::Io { what, path: tmp.clone(), source };
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| io("creating", e))?;
        std::io::copy(data, &mut f).map_err(|e| io("writing", e))?;
        f.set_permissions(std::fs::Permissions::from_mode(mode)).map_err(|e| io("chmod", e))?;
        f.sync_all().map_err(|e| io("syncing", e))?;
        std::fs::rename(&tmp, target).map_err(|source| Error::Io {
            what: "renaming to",
            path: target.to_owned(),
            source,
        })
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return result;
    }
    if let Some(dir) = target.parent().and_then(|d| std::fs::File::open(d).ok()) {
        let _ = dir.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file, directory and claimed path of an uncommitted run is gone after it; what
    /// existed before stays.
    #[test]
    fn an_uncommitted_run_leaves_the_root_as_it_found_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/hosts"), "before").unwrap();
        std::fs::create_dir_all(dir.path().join("var/lib/kubelet")).unwrap();
        let root = Root::new(Some(dir.path()));
        {
            let mut tx = Tx::new(&root);
            tx.write("/etc/kubeedge/config/edgecore.yaml", b"x", 0o644).unwrap();
            let key = tx.write("/etc/kubeedge/certs/server.key", b"k", 0o600).unwrap();
            assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
            assert!(matches!(tx.write("/etc/hosts", b"y", 0o644), Err(Error::Exists(_))));
            tx.claim("/var/lib/kubeedge");
            tx.claim("/var/lib/kubelet");
            // What the daemon would have made once it ran.
            std::fs::create_dir_all(dir.path().join("var/lib/kubeedge/sub")).unwrap();
            std::fs::write(dir.path().join("var/lib/kubeedge/edgecore.db"), "db").unwrap();
            std::fs::write(dir.path().join("var/lib/kubelet/kept"), "").unwrap();
        }
        let mut left: Vec<String> = walk(dir.path());
        left.sort();
        assert_eq!(left, ["etc", "etc/hosts", "var", "var/lib", "var/lib/kubelet", "var/lib/kubelet/kept"]);
        assert_eq!(std::fs::read_to_string(dir.path().join("etc/hosts")).unwrap(), "before");
    }

    #[test]
    fn a_committed_run_keeps_everything() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(Some(dir.path()));
        let mut tx = Tx::new(&root);
        tx.write("/etc/kubeedge/config/edgecore.yaml", b"x", 0o644).unwrap();
        tx.commit();
        assert!(dir.path().join("etc/kubeedge/config/edgecore.yaml").is_file());
    }

    fn walk(base: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![base.to_owned()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().filter_map(Result::ok) {
                let p = e.path();
                out.push(p.strip_prefix(base).unwrap().display().to_string());
                if p.is_dir() {
                    stack.push(p);
                }
            }
        }
        out
    }
}
