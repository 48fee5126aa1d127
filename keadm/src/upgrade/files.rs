//! Files replaced atomically: written beside the target, synced, renamed over it, the directory
//! synced, so a crash leaves the old file or the new one, never a mix.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use super::Error;

/// Writes `data` to `path` through a temporary file beside it with `mode`, synced, then renamed.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), Error> {
    replace(path, mode, &mut { data })
}

/// Copies the file `from` over `to` atomically with `mode`.
pub fn copy_atomic(from: &Path, to: &Path, mode: u32) -> Result<(), Error> {
    let mut f = std::fs::File::open(from).map_err(|e| Error::io("opening", from, e))?;
    replace(to, mode, &mut f).map_err(|e| Error::Failed(format!("copying {} to {}: {e}", from.display(), to.display())))
}

fn replace(path: &Path, mode: u32, data: &mut dyn Read) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = path.parent().ok_or_else(|| Error::Failed(format!("{} has no directory", path.display())))?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.keadm-tmp"));
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| Error::io("creating", &tmp, e))?;
        std::io::copy(data, &mut f).map_err(|e| Error::io("writing", &tmp, e))?;
        f.set_permissions(std::fs::Permissions::from_mode(mode)).map_err(|e| Error::io("chmod", &tmp, e))?;
        f.sync_all().map_err(|e| Error::io("syncing", &tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io("renaming to", path, e))?;
        // The rename itself is durable once the directory is synced.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
