//! Reading the new edgecore out of an OCI image archive (`ctr images export`), by hand and
//! defensively: "extract nothing you did not check". Only `index.json` and
//! `blobs/sha256/{64 hex}` are looked at (every blob is checked against its digest); the image
//! is followed index → manifest (an index is resolved by platform) → layers, gzip or plain
//! tar; and of all the layers' entries exactly one is ever written: the **regular file**
//! `usr/local/bin/edgecore`, to the file the caller names, within a size cap.
//!
//! The layers are read top-down as an overlay mount would show them: the topmost layer that
//! mentions the path decides. A whiteout (`.wh.edgecore`, `.wh..wh..opq` in a parent, or a
//! whited-out parent) hides the lower layers' copies; a symlink, hardlink or directory at the
//! path, or a parent replaced by a non-directory, is refused. Entry names with `..` or a
//! leading `/` never match anything, so they are ignored: no entry name is ever turned into a
//! path on this machine.
//!
//! Everything read is capped: index and manifests at [`MAX_JSON`], the binary at
//! [`MAX_BINARY`], a layer's data at [`MAX_LAYER_DATA`], and each tar extension header (a GNU
//! long name, PAX records) at [`MAX_TAR_EXTENSION`] ([`for_each_entry`]).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use serde_json::Value;

use super::Error;

/// The file wanted, as a layer names it.
pub const TARGET: &str = "usr/local/bin/edgecore";
/// The largest binary accepted.
pub const MAX_BINARY: u64 = 512 * 1024 * 1024;
/// The largest index or manifest read.
const MAX_JSON: u64 = 4 * 1024 * 1024;
/// The most uncompressed layer data scanned (a decompression bomb stops here).
const MAX_LAYER_DATA: u64 = 16 * 1024 * 1024 * 1024;
/// The largest tar extension header read (a GNU long name or PAX records; a path is at most
/// 4 KiB, xattrs 64 KiB each).
const MAX_TAR_EXTENSION: u64 = 1024 * 1024;

/// Where each blob of interest sits in the archive file.
struct Blobs {
    file: File,
    at: HashMap<String, (u64, u64)>,
}

impl Blobs {
    fn scan(archive: &Path) -> Result<Self, Error> {
        let file = File::open(archive).map_err(|e| Error::io("opening", archive, e))?;
        let mut at = HashMap::new();
        let mut tar = tar::Archive::new(file.try_clone().map_err(|e| Error::io("opening", archive, e))?);
        let what = format!("image archive {}", archive.display());
        for_each_entry(&mut tar, &what, |name, entry| {
            if entry.header().entry_type() != tar::EntryType::Regular {
                return Ok(());
            }
            let name = String::from_utf8_lossy(name).trim_start_matches("./").to_owned();
            let wanted =
                name == "index.json" || name.strip_prefix("blobs/sha256/").is_some_and(|h| h.len() == 64 && is_hex(h));
            if wanted {
                at.insert(name, (entry.raw_file_position(), entry.size()));
            }
            Ok(())
        })?;
        Ok(Self { file, at })
    }

    /// The blob's bytes as a reader, positioned and limited.
    fn open(&self, name: &str) -> Result<impl Read + use<>, Error> {
        let &(offset, size) =
            self.at.get(name).ok_or_else(|| Error::Failed(format!("the image archive has no {name}")))?;
        let mut f = self.file.try_clone().map_err(|e| Error::Failed(format!("reading {name}: {e}")))?;
        f.seek(SeekFrom::Start(offset)).map_err(|e| Error::Failed(format!("reading {name}: {e}")))?;
        Ok(f.take(size))
    }

    /// A small JSON blob (or index.json), checked against `digest` when given.
    fn json(&self, name: &str, digest: Option<&str>) -> Result<Value, Error> {
        let mut buf = Vec::new();
        self.open(name)?
            .take(MAX_JSON + 1)
            .read_to_end(&mut buf)
            .map_err(|e| Error::Failed(format!("reading {name}: {e}")))?;
        if buf.len() as u64 > MAX_JSON {
            return Err(Error::Failed(format!("{name} is larger than {MAX_JSON} bytes")));
        }
        if let Some(d) = digest {
            check_digest(name, d, &sha256_hex(&buf))?;
        }
        serde_json::from_slice(&buf).map_err(|e| Error::Failed(format!("{name} is not JSON: {e}")))
    }
}

fn is_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn sha256_hex(data: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, data).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn check_digest(name: &str, want: &str, got: &str) -> Result<(), Error> {
    if want != format!("sha256:{got}") {
        return Err(Error::Failed(format!("{name} does not match its digest {want}")));
    }
    Ok(())
}

/// The blob a descriptor names (`sha256:` digests only).
fn blob_name(desc: &Value) -> Result<(String, String), Error> {
    let digest = desc.get("digest").and_then(Value::as_str).unwrap_or_default();
    let hex = digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && is_hex(h))
        .ok_or_else(|| Error::Failed(format!("unsupported digest {digest:?} in the image")))?;
    Ok((format!("blobs/sha256/{hex}"), digest.to_owned()))
}

/// This machine's architecture in OCI's words.
fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        other => other,
    }
}

/// Follows index.json (and any nested index) to the image manifest.
fn manifest(blobs: &Blobs) -> Result<Value, Error> {
    let mut doc = blobs.json("index.json", None)?;
    for _ in 0..4 {
        let Some(list) = doc.get("manifests").and_then(Value::as_array) else {
            return Ok(doc);
        };
        let fits = |d: &&Value| {
            d.get("platform").is_none_or(|p| {
                p.get("os").and_then(Value::as_str) == Some("linux")
                    && p.get("architecture").and_then(Value::as_str) == Some(oci_arch())
            })
        };
        let chosen = list.iter().find(fits).ok_or_else(|| {
            Error::Failed(format!("the image has no manifest for linux/{} (or none at all)", oci_arch()))
        })?;
        let (name, digest) = blob_name(chosen)?;
        doc = blobs.json(&name, Some(&digest))?;
    }
    Err(Error::Failed("the image's indexes nest too deeply".into()))
}

/// Extracts `usr/local/bin/edgecore` from the OCI archive at `archive` into the new file `out`
/// (mode 0755); returns its size.
pub fn extract_edgecore(archive: &Path, out: &Path) -> Result<u64, Error> {
    let blobs = Blobs::scan(archive)?;
    let manifest = manifest(&blobs)?;
    let layers = manifest
        .get("layers")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::Failed("the image manifest lists no layers".into()))?;
    let mut sink = Sink { path: out, file: None };
    for (n, layer) in layers.iter().enumerate().rev() {
        let (name, digest) = blob_name(layer)?;
        match scan_layer(&blobs, &name, &digest, &mut sink).map_err(|e| e.in_layer(n))? {
            Found::File(size) => return Ok(size),
            Found::Hidden => {
                return Err(Error::Failed(format!("/{TARGET} is deleted (a whiteout) in layer {n} of the image")));
            }
            Found::Nothing => {}
        }
    }
    Err(Error::Failed(format!("the image has no /{TARGET}")))
}

enum Found {
    File(u64),
    Hidden,
    Nothing,
}

/// The output, created on the first copy found (and rewritten if a layer holds it twice).
struct Sink<'a> {
    path: &'a Path,
    file: Option<File>,
}

impl Sink<'_> {
    fn write(&mut self, from: &mut impl Read, size: u64) -> Result<u64, Error> {
        use std::os::unix::fs::OpenOptionsExt as _;
        if self.file.is_none() {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o755)
                .open(self.path)
                .map_err(|e| Error::io("creating", self.path, e))?;
            self.file = Some(f);
        }
        let f = self.file.as_mut().ok_or_else(|| Error::Failed("no output".into()))?;
        let io = |e| Error::io("writing", self.path, e);
        f.set_len(0).map_err(io)?;
        f.seek(SeekFrom::Start(0)).map_err(io)?;
        let copied = std::io::copy(&mut from.take(size), f).map_err(io)?;
        if copied != size {
            return Err(Error::Failed(format!("/{TARGET} in the image is truncated")));
        }
        f.sync_all().map_err(io)?;
        Ok(copied)
    }
}

/// A reader that hashes what passes through.
struct Hashing<R> {
    inner: R,
    ctx: ring::digest::Context,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.ctx.update(&buf[..n]);
        Ok(n)
    }
}

/// An entry name as a layer means it: `./` and trailing `/` dropped; `None` for a name that is
/// absolute, climbs with `..` or is empty (such an entry never matches anything).
fn clean(raw: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(raw).ok()?;
    let s = s.strip_prefix("./").unwrap_or(s).trim_end_matches('/');
    if s.is_empty() || s.starts_with('/') || s.split('/').any(|c| c == ".." || c == "." || c.is_empty()) {
        return None;
    }
    Some(s.to_owned())
}

/// What one layer says about [`TARGET`].
fn scan_layer(blobs: &Blobs, name: &str, digest: &str, sink: &mut Sink<'_>) -> Result<Found, Error> {
    let bad = |e: std::io::Error| Error::Failed(format!("reading {name}: {e}"));
    let hashing = Hashing { inner: blobs.open(name)?, ctx: ring::digest::Context::new(&ring::digest::SHA256) };
    let mut buffered = BufReader::new(hashing);
    let head = buffered.fill_buf().map_err(bad)?;
    let gzip = head.starts_with(&[0x1f, 0x8b]);
    if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Err(Error::Failed("zstd-compressed layers are not supported (gzip or plain tar)".into()));
    }
    let data: Box<dyn Read + '_> = if gzip {
        Box::new(flate2::bufread::GzDecoder::new(&mut buffered).take(MAX_LAYER_DATA))
    } else {
        Box::new((&mut buffered).take(MAX_LAYER_DATA))
    };
    let mut found = Found::Nothing;
    let mut other: Option<String> = None;
    let mut hidden = false;
    let mut tar = tar::Archive::new(data);
    for_each_entry(&mut tar, &format!("reading {name}"), |entry_name, entry| {
        let Some(path) = clean(entry_name) else { return Ok(()) };
        let kind = entry.header().entry_type();
        let (dir, base) = path.rsplit_once('/').unwrap_or(("", path.as_str()));
        if let Some(gone) = base.strip_prefix(".wh.") {
            // `.wh..wh..opq` hides everything below `dir`; `.wh.X` hides `dir/X`.
            let hides = if gone == ".wh..opq" { dir.to_owned() } else { join(dir, gone) };
            if TARGET == hides || TARGET.starts_with(&format!("{hides}/")) || hides.is_empty() {
                hidden = true;
            }
        } else if path == TARGET {
            if kind == tar::EntryType::Regular || kind == tar::EntryType::Continuous {
                let size = entry.size();
                if size > MAX_BINARY {
                    return Err(Error::Failed(format!("/{TARGET} is {size} bytes, more than {MAX_BINARY}")));
                }
                found = Found::File(sink.write(entry, size)?);
                other = None;
            } else {
                other = Some(format!("/{TARGET} is a {kind:?} entry, not a regular file"));
                found = Found::Nothing;
            }
        } else if TARGET.starts_with(&format!("{path}/")) && kind != tar::EntryType::Directory {
            other = Some(format!("/{path} is a {kind:?} entry, not a directory"));
        }
        Ok(())
    })?;
    // The whole blob is read, so its digest can be checked.
    drop(tar);
    std::io::copy(&mut buffered, &mut std::io::sink()).map_err(bad)?;
    let hashing = buffered.into_inner();
    let got: String = hashing.ctx.finish().as_ref().iter().map(|b| format!("{b:02x}")).collect();
    check_digest(name, digest, &got)?;
    if let Some(why) = other {
        return Err(Error::Failed(why));
    }
    Ok(match found {
        Found::Nothing if hidden => Found::Hidden,
        f => f,
    })
}

/// Calls `each` with every entry of `tar` but the extension headers, and the entry's name as
/// a GNU long name or a PAX `path` record gives it (the tar crate's rule: the long name first).
///
/// The tar crate would read those headers itself, each into memory whatever size it claims,
/// so one header in a layer could make keadm allocate gigabytes: they are read here instead,
/// in raw mode, up to [`MAX_TAR_EXTENSION`]. Raw mode frames entries by their headers' sizes,
/// so what would change the framing (a PAX `size` other than the header's, a GNU sparse
/// entry with extension blocks) is refused rather than misread; image layers have neither.
fn for_each_entry<R: Read>(
    tar: &mut tar::Archive<R>,
    what: &str,
    mut each: impl FnMut(&[u8], &mut tar::Entry<'_, R>) -> Result<(), Error>,
) -> Result<(), Error> {
    let bad = |why: String| Error::Failed(format!("{what}: {why}"));
    let mut long_name: Option<Vec<u8>> = None;
    let mut pax: Option<Vec<u8>> = None;
    for entry in tar.entries().map_err(|e| bad(e.to_string()))?.raw(true) {
        let mut entry = entry.map_err(|e| bad(e.to_string()))?;
        let kind = entry.header().entry_type();
        if kind.is_gnu_longname() || kind.is_pax_local_extensions() {
            let size = entry.size();
            if size > MAX_TAR_EXTENSION {
                return Err(bad(format!("a {kind:?} header of {size} bytes (at most {MAX_TAR_EXTENSION})")));
            }
            let slot = if kind.is_gnu_longname() { &mut long_name } else { &mut pax };
            if slot.is_some() {
                return Err(bad(format!("two {kind:?} headers describe one entry")));
            }
            let mut data = Vec::new();
            entry.read_to_end(&mut data).map_err(|e| bad(e.to_string()))?;
            *slot = Some(data);
            continue;
        }
        if kind.is_gnu_longlink() || kind.is_pax_global_extensions() {
            // Link targets are never followed and global records name no entry: skipped unread.
            continue;
        }
        if kind.is_gnu_sparse() && entry.header().as_gnu().is_some_and(tar::GnuHeader::is_extended) {
            return Err(bad("GNU sparse entries with extension blocks are not supported".into()));
        }
        let mut pax_path = None;
        if let Some(records) = pax.take() {
            for record in tar::PaxExtensions::new(&records) {
                let record = record.map_err(|e| bad(format!("a PAX header: {e}")))?;
                match record.key_bytes() {
                    b"path" => pax_path = Some(record.value_bytes().to_vec()),
                    b"size" if record.value().ok().and_then(|v| v.parse::<u64>().ok()) != Some(entry.size()) => {
                        return Err(bad("a PAX size record other than the header's size is not supported".into()));
                    }
                    _ => {}
                }
            }
        }
        let name = match long_name.take() {
            Some(mut n) => {
                while n.last() == Some(&0) {
                    n.pop();
                }
                n
            }
            None => pax_path.unwrap_or_else(|| entry.header().path_bytes().into_owned()),
        };
        each(&name, &mut entry)?;
    }
    Ok(())
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() { name.to_owned() } else { format!("{dir}/{name}") }
}

#[cfg(test)]
mod tests;
