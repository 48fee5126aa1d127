//! A read-only OCI registry on loopback serving images built in the test — the source a node's
//! containerd pulls from when no public registry can be reached. It speaks the part of the
//! distribution API a pull uses (`GET /v2/`, `GET|HEAD /v2/{name}/manifests/{tag|digest}`,
//! `GET|HEAD /v2/{name}/blobs/{digest}`), one thread per connection, one request per
//! connection. containerd pulls from a loopback registry over plain HTTP.
//!
//! Each image is one uncompressed layer holding the files it is given; the registry counts the
//! manifests it served per image.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use serde_json::json;

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn sha256(data: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    format!("sha256:{}", d.as_ref().iter().map(|b| format!("{b:02x}")).collect::<String>())
}

#[derive(Default)]
struct Content {
    /// `{name}:{tag}` and `{name}@{digest}` → the manifest's digest.
    tags: HashMap<String, String>,
    /// Digest → (media type, bytes).
    blobs: HashMap<String, (String, Vec<u8>)>,
    /// Manifest GETs answered (by tag or digest), per image name.
    pulls: HashMap<String, usize>,
}

/// The registry.
pub struct Registry {
    /// Where it listens.
    pub addr: SocketAddr,
    content: Arc<Mutex<Content>>,
}

impl Registry {
    /// Starts an empty registry on a free loopback port.
    pub fn start() -> Self {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let content: Arc<Mutex<Content>> = Arc::default();
        let shared = content.clone();
        std::thread::spawn(move || {
            for conn in l.incoming().flatten() {
                let shared = shared.clone();
                std::thread::spawn(move || serve(conn, &shared));
            }
        });
        Self { addr, content }
    }

    /// Adds image `{addr}/{name}:{tag}` whose layer holds `files` (path, contents); returns its
    /// full reference.
    pub fn add(&self, name: &str, tag: &str, files: &[(&str, &[u8])]) -> String {
        let mut layer = tar::Builder::new(Vec::new());
        for (path, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
            layer.append_data(&mut h, path, *data).unwrap();
        }
        let layer = layer.into_inner().unwrap();
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64", "os": "linux", "config": {},
            "rootfs": {"type": "layers", "diff_ids": [sha256(&layer)]},
        }))
        .unwrap();
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha256(&layer), "size": layer.len()}],
        }))
        .unwrap();
        let digest = sha256(&manifest);
        let mut c = self.content.lock().unwrap();
        c.tags.insert(format!("{name}:{tag}"), digest.clone());
        c.tags.insert(format!("{name}:{digest}"), digest.clone());
        for (media, data) in [("application/octet-stream", layer), ("application/octet-stream", config)] {
            c.blobs.insert(sha256(&data), (media.to_owned(), data));
        }
        c.blobs.insert(digest, (MANIFEST.to_owned(), manifest));
        format!("{}/{name}:{tag}", self.addr)
    }

    /// How many times a manifest of image `name` was fetched (a pull resolves the tag with a
    /// HEAD, then GETs the manifest by digest).
    pub fn pulls(&self, name: &str) -> usize {
        self.content.lock().unwrap().pulls.get(name).copied().unwrap_or(0)
    }
}

fn respond(conn: &mut TcpStream, code: &str, headers: &[(&str, &str)], body: &[u8], head_only: bool) {
    let mut out = format!("HTTP/1.1 {code}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let _ = conn.write_all(out.as_bytes());
    if !head_only {
        let _ = conn.write_all(body);
    }
}

fn serve(mut conn: TcpStream, content: &Mutex<Content>) {
    let mut r = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if r.read_line(&mut line).is_err() {
        return;
    }
    // The rest of the head (no request of a pull has a body).
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).map_or(true, |n| n == 0) || h == "\r\n" {
            break;
        }
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let head = method == "HEAD";
    let api = [("Docker-Distribution-API-Version", "registry/2.0")];
    if path == "/v2/" || path == "/v2" {
        return respond(&mut conn, "200 OK", &api, b"{}", head);
    }
    let not_found = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#;
    let Some(rest) = path.strip_prefix("/v2/") else {
        return respond(&mut conn, "404 Not Found", &api, not_found, head);
    };
    let (name, kind, reference) = match (rest.rsplit_once("/manifests/"), rest.rsplit_once("/blobs/")) {
        (Some((n, r)), _) => (n, "manifests", r),
        (_, Some((n, r))) => (n, "blobs", r),
        _ => return respond(&mut conn, "404 Not Found", &api, not_found, head),
    };
    let mut c = content.lock().unwrap();
    let digest = match kind {
        "manifests" => {
            let key = format!("{name}:{reference}");
            let known = c.tags.get(&key).cloned();
            if !head && known.is_some() {
                *c.pulls.entry(name.to_owned()).or_default() += 1;
            }
            known
        }
        _ => Some(reference.to_owned()),
    };
    match digest.and_then(|d| c.blobs.get(&d).cloned().map(|b| (d, b))) {
        Some((d, (media, data))) => {
            drop(c);
            let headers = [api[0], ("Content-Type", media.as_str()), ("Docker-Content-Digest", d.as_str())];
            respond(&mut conn, "200 OK", &headers, &data, head);
        }
        None => respond(&mut conn, "404 Not Found", &api, not_found, head),
    }
}
