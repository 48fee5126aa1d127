//! OCI archives built in memory: one good image, and layers that try to escape, to put a
//! symlink or hardlink where the binary should be, to delete it, or to be too large. Each is
//! refused or ignored, and nothing but the one output file is ever written.

use std::io::Write as _;

use tar::EntryType;

use super::*;

/// A tar entry: a raw name (written as is, `..` and `/` included), its type and data.
struct E<'a>(&'a [u8], EntryType, &'a [u8]);

fn layer(entries: &[E<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for E(name, kind, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_entry_type(*kind);
        h.set_mode(0o755);
        if *kind == EntryType::Symlink || *kind == EntryType::Link {
            h.as_old_mut().linkname[..data.len()].copy_from_slice(data);
            h.set_size(0);
            h.set_cksum();
            b.append(&h, std::io::empty()).unwrap();
        } else {
            h.set_size(data.len() as u64);
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
    }
    b.into_inner().unwrap()
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn desc(media: &str, blob: &[u8]) -> Value {
    serde_json::json!({"mediaType": media, "digest": format!("sha256:{}", sha256_hex(blob)), "size": blob.len()})
}

/// An OCI layout archive: index.json → manifest → `layers` (lowest first).
fn archive(layers: &[Vec<u8>]) -> Vec<u8> {
    let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#.to_vec();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": desc("application/vnd.oci.image.config.v1+json", &config),
        "layers": layers.iter().map(|l| desc("application/vnd.oci.image.layer.v1.tar+gzip", l)).collect::<Vec<_>>(),
    }))
    .unwrap();
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [desc("application/vnd.oci.image.manifest.v1+json", &manifest)],
    }))
    .unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, data).unwrap();
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    add("index.json", &index);
    for blob in [config.as_slice(), manifest.as_slice()].into_iter().chain(layers.iter().map(Vec::as_slice)) {
        add(&format!("blobs/sha256/{}", sha256_hex(blob)), blob);
    }
    b.into_inner().unwrap()
}

/// Extracts from `layers` into a fresh directory; the result and what the directory holds.
fn extract(layers: &[Vec<u8>]) -> (Result<Vec<u8>, String>, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("a/b/work");
    std::fs::create_dir_all(&work).unwrap();
    let image = dir.path().join("image.tar");
    std::fs::write(&image, archive(layers)).unwrap();
    let out = work.join("edgecore");
    let result = extract_edgecore(&image, &out).map(|_| std::fs::read(&out).unwrap()).map_err(|e| e.to_string());
    let mut left: Vec<String> = walkdir(dir.path());
    left.retain(|p| p != "image.tar");
    (result, left)
}

fn walkdir(base: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![base.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                todo.push(p.clone());
            } else {
                out.push(p.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

const REG: EntryType = EntryType::Regular;
const DIR: EntryType = EntryType::Directory;

#[test]
fn the_binary_comes_from_the_top_layer_that_has_it() {
    let lower = gz(&layer(&[E(b"usr/", DIR, b""), E(b"usr/local/bin/edgecore", REG, b"OLD")]));
    let upper = layer(&[E(b"./usr/local/bin/edgecore", REG, b"NEW"), E(b"etc/other", REG, b"x")]);
    let (got, left) = extract(&[lower.clone(), upper]);
    assert_eq!(got.unwrap(), b"NEW");
    assert_eq!(left, ["a/b/work/edgecore"]);
    let (got, _) = extract(&[lower]);
    assert_eq!(got.unwrap(), b"OLD");
}

#[test]
fn traversal_and_absolute_names_are_never_matched_nor_written() {
    let evil = gz(&layer(&[
        E(b"../../x", REG, b"escaped"),
        E(b"../../usr/local/bin/edgecore", REG, b"escaped"),
        E(b"/usr/local/bin/edgecore", REG, b"absolute"),
        E(b"usr/local/bin/../bin/edgecore", REG, b"dotdot"),
    ]));
    let (got, left) = extract(std::slice::from_ref(&evil));
    assert!(got.unwrap_err().contains("the image has no /usr/local/bin/edgecore"));
    assert!(left.is_empty(), "{left:?}");
    // With the real file beside them, only the real file is taken.
    let real = layer(&[E(b"usr/local/bin/edgecore", REG, b"REAL")]);
    let (got, left) = extract(&[real, evil]);
    assert_eq!(got.unwrap(), b"REAL");
    assert_eq!(left, ["a/b/work/edgecore"]);
}

#[test]
fn links_at_the_path_or_above_it_are_refused() {
    let lower = layer(&[E(b"usr/local/bin/edgecore", REG, b"OLD")]);
    for top in [
        layer(&[E(b"usr/local/bin/edgecore", EntryType::Symlink, b"/etc/shadow")]),
        layer(&[E(b"usr/local/bin/edgecore", EntryType::Link, b"etc/shadow")]),
        layer(&[E(b"usr/local/bin/edgecore", DIR, b"")]),
        layer(&[E(b"usr/local/bin", EntryType::Symlink, b"/etc")]),
    ] {
        let (got, left) = extract(&[lower.clone(), top]);
        let e = got.unwrap_err();
        assert!(e.contains("not a regular file") || e.contains("not a directory"), "{e}");
        assert!(left.is_empty(), "{left:?}");
    }
}

#[test]
fn whiteouts_hide_the_lower_copies() {
    let lower = layer(&[E(b"usr/local/bin/edgecore", REG, b"OLD")]);
    for top in [
        layer(&[E(b"usr/local/bin/.wh.edgecore", REG, b"")]),
        layer(&[E(b"usr/local/bin/.wh..wh..opq", REG, b""), E(b"usr/local/bin/other", REG, b"x")]),
        layer(&[E(b"usr/.wh.local", REG, b"")]),
    ] {
        let (got, left) = extract(&[lower.clone(), top]);
        assert!(got.unwrap_err().contains("whiteout"));
        assert!(left.is_empty(), "{left:?}");
    }
    // An opaque directory does not hide what its own layer puts in it.
    let top = layer(&[E(b"usr/local/bin/.wh..wh..opq", REG, b""), E(b"usr/local/bin/edgecore", REG, b"NEW")]);
    assert_eq!(extract(&[lower, top]).0.unwrap(), b"NEW");
}

#[test]
fn a_too_large_file_is_refused_before_it_is_read() {
    // A header that claims more than the cap (the data is not there: it is never read).
    let mut h = tar::Header::new_gnu();
    h.set_path("usr/local/bin/edgecore").unwrap();
    h.set_size(MAX_BINARY + 1);
    h.set_entry_type(REG);
    h.set_cksum();
    let mut raw = h.as_bytes().to_vec();
    raw.extend_from_slice(&[0u8; 1024]);
    let (got, left) = extract(&[raw]);
    assert!(got.unwrap_err().contains("more than"), "too large");
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_blob_that_does_not_match_its_digest_is_refused() {
    let good = layer(&[E(b"usr/local/bin/edgecore", REG, b"NEW")]);
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = archive(std::slice::from_ref(&good));
    // Flip the file's content inside the stored layer blob.
    let at = bytes.windows(3).rposition(|w| w == b"NEW").unwrap();
    bytes[at] = b'X';
    let image = dir.path().join("image.tar");
    std::fs::write(&image, bytes).unwrap();
    let e = extract_edgecore(&image, &dir.path().join("out")).unwrap_err();
    assert!(e.to_string().contains("does not match its digest"), "{e}");
}

/// A PAX record: `"{len} {key}={value}\n"`, `len` counting the whole record.
fn pax(key: &str, value: &str) -> Vec<u8> {
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while format!("{len}{body}").len() != len {
        len += 1;
    }
    format!("{len}{body}").into_bytes()
}

#[test]
fn long_names_and_pax_paths_name_the_entry_that_follows() {
    // GNU tar's form: an `L` entry holding the name, then the entry under a cut name.
    let gnu =
        layer(&[E(b"././@LongLink", EntryType::GNULongName, b"usr/local/bin/edgecore\0"), E(b"cut", REG, b"GNU")]);
    assert_eq!(extract(&[gnu]).0.unwrap(), b"GNU");
    let pax_path = pax("path", "usr/local/bin/edgecore");
    let posix = layer(&[E(b"PaxHeaders/x", EntryType::XHeader, &pax_path), E(b"cut", REG, b"PAX")]);
    assert_eq!(extract(&[posix]).0.unwrap(), b"PAX");
    // A PAX size that agrees with the header is fine; one that does not is refused.
    let size = pax("size", "4");
    let same = layer(&[E(b"PaxHeaders/x", EntryType::XHeader, &size), E(b"usr/local/bin/edgecore", REG, b"SAME")]);
    assert_eq!(extract(&[same]).0.unwrap(), b"SAME");
    let size = pax("size", "9000000000");
    let other = layer(&[E(b"PaxHeaders/x", EntryType::XHeader, &size), E(b"usr/local/bin/edgecore", REG, b"SAME")]);
    assert!(extract(&[other]).0.unwrap_err().contains("PAX size"));
    // A long name of another file (the tar crate's own writer) does not disturb the walk.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(1);
    b.append_data(&mut h, format!("usr/share/{}", "d".repeat(200)), &b"x"[..]).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_size(4);
    h.set_mode(0o755);
    b.append_data(&mut h, TARGET, &b"REAL"[..]).unwrap();
    assert_eq!(extract(&[b.into_inner().unwrap()]).0.unwrap(), b"REAL");
}

/// Regression (#21 review): the tar crate reads a long-name or PAX header whole into memory,
/// whatever size it claims, so one header could make keadm allocate gigabytes.
#[test]
fn an_extension_header_larger_than_the_cap_is_refused_before_it_is_read() {
    for kind in [EntryType::GNULongName, EntryType::XHeader] {
        let mut h = tar::Header::new_gnu();
        h.set_path("././@LongLink").unwrap();
        h.set_size(4 * 1024 * 1024 * 1024);
        h.set_entry_type(kind);
        h.set_cksum();
        let mut raw = h.as_bytes().to_vec();
        raw.extend_from_slice(&[0u8; 1024]);
        let (got, left) = extract(&[raw]);
        let e = got.unwrap_err();
        assert!(e.contains(&format!("header of 4294967296 bytes (at most {MAX_TAR_EXTENSION})")), "{e}");
        assert!(left.is_empty(), "{left:?}");
    }
}
