//! An ImagePrePullJob's pull secret (`imageSecrets: "{namespace}/{name}"`): the Secret as
//! MetaManager stored it, its `.dockerconfigjson` (or legacy `.dockercfg`) decoded into CRI
//! credentials per registry.
//!
//! Upstream unmarshals the payload straight into CRI's `AuthConfig`, so only a flat
//! `{"username","password",…}` document works there and a standard `{"auths":{…}}` one yields
//! empty credentials. Both are read here: the standard shape matched by the image's registry
//! host (`docker.io` for bare names, with Docker Hub's other spellings), entries with `auth`
//! (base64 `user:password`) or `username`/`password`; and upstream's flat shape, used for
//! every image.

use std::collections::BTreeMap;

use base64::Engine;
use kubeedge_cri::v1::AuthConfig;
use serde::Deserialize;
use serde_json::Value;

/// Credentials for the images of one job.
#[derive(Debug, Clone, PartialEq)]
pub enum PullAuth {
    /// Per registry host (`host[:port]`, Docker Hub as `docker.io`).
    PerHost(BTreeMap<String, AuthConfig>),
    /// Upstream's flat shape: the same credentials for every image.
    Flat(AuthConfig),
}

impl PullAuth {
    /// The credentials for `image`, if any.
    pub fn for_image(&self, image: &str) -> Option<AuthConfig> {
        match self {
            PullAuth::Flat(a) => Some(a.clone()),
            PullAuth::PerHost(hosts) => hosts.get(&registry_host(image)).cloned(),
        }
    }
}

/// `"ns/name"` split as upstream does: exactly two non-empty parts.
pub fn parse_reference(reference: &str) -> Result<(&str, &str), String> {
    match reference.split('/').collect::<Vec<_>>().as_slice() {
        [ns, name] if !ns.is_empty() && !name.is_empty() => Ok((ns, name)),
        _ => Err(format!("pull secret format is not correct: {reference:?} is not \"namespace/name\"")),
    }
}

/// The registry host of an image reference: the first path component when it looks like a
/// host (has `.` or `:`, or is `localhost`), else Docker Hub.
pub fn registry_host(image: &str) -> String {
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => normalize_host(first),
        _ => DOCKER_HUB.to_owned(),
    }
}

const DOCKER_HUB: &str = "docker.io";

/// `https://index.docker.io/v1/` → `docker.io`; `http://reg:5000/v2` → `reg:5000`.
fn normalize_host(key: &str) -> String {
    let rest = key.split_once("://").map_or(key, |(_, r)| r);
    let host = rest.split('/').next().unwrap_or(rest).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => DOCKER_HUB.to_owned(),
        _ => host,
    }
}

/// The credentials in a Secret object (JSON as the cloud sent it).
pub fn from_secret(secret: &str) -> Result<PullAuth, String> {
    let obj: Value = serde_json::from_str(secret).map_err(|e| format!("the pull secret is not JSON: {e}"))?;
    let data = obj.get("data").and_then(Value::as_object);
    let string_data = obj.get("stringData").and_then(Value::as_object);
    for key in [".dockerconfigjson", ".dockercfg"] {
        let payload = if let Some(v) = data.and_then(|d| d.get(key)).and_then(Value::as_str) {
            base64::engine::general_purpose::STANDARD
                .decode(v.trim())
                .map_err(|e| format!("the pull secret's {key} is not base64: {e}"))?
        } else if let Some(v) = string_data.and_then(|d| d.get(key)).and_then(Value::as_str) {
            v.as_bytes().to_vec()
        } else {
            continue;
        };
        return parse_docker_config(&payload, key == ".dockercfg");
    }
    Err("the pull secret has no .dockerconfigjson".to_owned())
}

/// One registry's entry of a docker config.
#[derive(Debug, Default, Deserialize)]
struct Entry {
    #[serde(default)]
    auth: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default, rename = "identitytoken")]
    identity_token: String,
    #[serde(default, rename = "registrytoken")]
    registry_token: String,
}

/// CRI's own `AuthConfig` JSON (upstream's flat payload).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Flat {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    auth: String,
    #[serde(default)]
    server_address: String,
    #[serde(default)]
    identity_token: String,
    #[serde(default)]
    registry_token: String,
}

/// A `.dockerconfigjson` payload (`{"auths":{host: entry}}`), a legacy `.dockercfg` one
/// (`{host: entry}`), or upstream's flat CRI AuthConfig.
pub fn parse_docker_config(payload: &[u8], legacy: bool) -> Result<PullAuth, String> {
    let doc: Value =
        serde_json::from_slice(payload).map_err(|e| format!("the pull secret's docker config is not JSON: {e}"))?;
    let entries = match doc.get("auths") {
        Some(auths) => Some(auths.clone()),
        None if legacy => Some(doc.clone()),
        None => None,
    };
    if let Some(entries) = entries {
        let map: BTreeMap<String, Entry> = serde_json::from_value(entries)
            .map_err(|e| format!("the pull secret's auths are not registry entries: {e}"))?;
        let mut out = BTreeMap::new();
        for (key, entry) in map {
            let host = normalize_host(&key);
            out.insert(host.clone(), entry_auth(&host, entry)?);
        }
        return Ok(PullAuth::PerHost(out));
    }
    let flat: Flat = serde_json::from_value(doc)
        .map_err(|e| format!("the pull secret is neither {{\"auths\":…}} nor a CRI AuthConfig: {e}"))?;
    if flat.username.is_empty()
        && flat.auth.is_empty()
        && flat.identity_token.is_empty()
        && flat.registry_token.is_empty()
    {
        return Err("the pull secret holds no credentials".to_owned());
    }
    Ok(PullAuth::Flat(AuthConfig {
        username: flat.username,
        password: flat.password,
        auth: flat.auth,
        server_address: flat.server_address,
        identity_token: flat.identity_token,
        registry_token: flat.registry_token,
    }))
}

fn entry_auth(host: &str, e: Entry) -> Result<AuthConfig, String> {
    let (mut username, mut password) = (e.username, e.password);
    if !e.auth.is_empty() {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(e.auth.trim())
            .map_err(|err| format!("the pull secret's auth for {host} is not base64: {err}"))?;
        let text = String::from_utf8(raw).map_err(|_| format!("the pull secret's auth for {host} is not text"))?;
        let (u, p) = text
            .split_once(':')
            .ok_or_else(|| format!("the pull secret's auth for {host} is not \"user:password\""))?;
        (username, password) = (u.to_owned(), p.to_owned());
    }
    Ok(AuthConfig {
        username,
        password,
        server_address: host.to_owned(),
        identity_token: e.identity_token,
        registry_token: e.registry_token,
        ..AuthConfig::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn secret(key: &str, payload: &str) -> String {
        serde_json::json!({"kind": "Secret", "type": "kubernetes.io/dockerconfigjson", "data": {key: b64(payload)}})
            .to_string()
    }

    #[test]
    fn standard_docker_config_is_matched_by_registry_host() {
        let payload = serde_json::json!({"auths": {
            "https://index.docker.io/v1/": {"auth": b64("hub:hubpass")},
            "reg.example.com:5000": {"username": "u", "password": "p:w"},
        }})
        .to_string();
        let auth = from_secret(&secret(".dockerconfigjson", &payload)).unwrap();
        let hub = auth.for_image("busybox:1.36").unwrap();
        assert_eq!((hub.username.as_str(), hub.password.as_str()), ("hub", "hubpass"));
        assert_eq!(hub.server_address, "docker.io");
        assert_eq!(auth.for_image("library/nginx").unwrap().username, "hub");
        let own = auth.for_image("reg.example.com:5000/team/app:v1").unwrap();
        assert_eq!((own.username.as_str(), own.password.as_str()), ("u", "p:w"));
        assert_eq!(auth.for_image("quay.io/x/y"), None, "no credentials for another registry");
    }

    #[test]
    fn upstreams_flat_shape_and_legacy_dockercfg_are_read() {
        let flat = from_secret(&secret(".dockerconfigjson", r#"{"username":"a","password":"b"}"#)).unwrap();
        assert_eq!(flat.for_image("anything/at:all").unwrap().username, "a");
        let legacy =
            from_secret(&secret(".dockercfg", &format!(r#"{{"localhost:5000":{{"auth":"{}"}}}}"#, b64("x:y"))))
                .unwrap();
        assert_eq!(legacy.for_image("localhost:5000/a").unwrap().password, "y");
    }

    #[test]
    fn malformed_secrets_fail_with_a_reason() {
        assert!(from_secret("not json").unwrap_err().contains("not JSON"));
        assert!(from_secret(r#"{"data":{}}"#).unwrap_err().contains("no .dockerconfigjson"));
        assert!(from_secret(r#"{"data":{".dockerconfigjson":"%%%"}}"#).unwrap_err().contains("not base64"));
        assert!(from_secret(&secret(".dockerconfigjson", "[1,2]")).is_err());
        assert!(from_secret(&secret(".dockerconfigjson", r#"{"foo":"bar"}"#)).unwrap_err().contains("neither"));
        assert!(from_secret(&secret(".dockerconfigjson", "{}")).unwrap_err().contains("no credentials"));
        let bad_auth = format!(r#"{{"auths":{{"r.io":{{"auth":"{}"}}}}}}"#, b64("nocolon"));
        assert!(from_secret(&secret(".dockerconfigjson", &bad_auth)).unwrap_err().contains("user:password"));
        assert!(parse_reference("kubeedge/regcred").is_ok());
        for bad in ["regcred", "a/b/c", "/x", "x/"] {
            assert!(parse_reference(bad).unwrap_err().contains("pull secret format is not correct"), "{bad}");
        }
    }

    #[test]
    fn registry_hosts() {
        assert_eq!(registry_host("busybox"), "docker.io");
        assert_eq!(registry_host("library/busybox:1"), "docker.io");
        assert_eq!(registry_host("docker.io/library/busybox"), "docker.io");
        assert_eq!(registry_host("localhost/pause:busybox"), "localhost");
        assert_eq!(registry_host("127.0.0.1:5000/a"), "127.0.0.1:5000");
        assert_eq!(registry_host("Reg.Example.com/a"), "reg.example.com");
    }
}
