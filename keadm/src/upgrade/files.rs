//! Files replaced atomically: written beside the target, synced, renamed over it, the directory
//! synced, so a crash leaves the old file or the new one, never a mix.

use std::io::Read;
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
    let dir = path.parent().ok_or_else(|| Error::Failed(format!("{} has no directory", path.display())))?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
    crate::install::write_beside(path, data, mode).map_err(|e| match e {
        crate::install::Error::Io { what, path, source } => Error::Io { what, path, source },
        e => Error::Failed(e.to_string()),
    })
}
