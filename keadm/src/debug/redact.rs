//! What `keadm debug collect` removes before anything goes into the tarball: a diagnostics
//! bundle gets mailed around, so it must not carry a way into the node or the cluster.
//!
//! - PEM `PRIVATE KEY` blocks (any kind: RSA, EC, PKCS#8, encrypted) become `<redacted>`;
//!   certificates stay (they are public and often what is being debugged).
//! - Values of keys named `…token` or `…password` (`token: …`, `"token":"…"`, `--token=…`,
//!   `--token …`) become `<redacted>`; so do `Bearer …` credentials and anything shaped like a
//!   JWT (`eyJ….….…`), which is what join tokens and service-account tokens carry.
//! - In JSON objects (database rows, the runtime's info): every value under `data` and
//!   `stringData` of a `Secret`, and every string under a token/password key; all other
//!   strings get the text rules above.
//! - Files named `*.key` are never read ([`is_key_file`]).

use serde_json::Value;

/// What replaces a secret.
pub const REDACTED: &str = "<redacted>";

/// Whether the file at `path` is a private key by its name (`*.key`): never copied.
pub fn is_key_file(path: &std::path::Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("key"))
}

/// `text` with private keys, tokens, passwords and bearer credentials replaced.
pub fn text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_key = false;
    for line in text.split_inclusive('\n') {
        if in_key {
            if line.contains("-----END") && line.contains("PRIVATE KEY-----") {
                in_key = false;
            }
            continue;
        }
        if let Some(at) = line.find("-----BEGIN").filter(|_| line.contains("PRIVATE KEY-----")) {
            out.push_str(&line[..at]);
            out.push_str(REDACTED);
            // A one-line block (`\n` escaped inside JSON) ends on this line.
            let one_line = line[at..].contains("-----END");
            if one_line {
                let end = line.rfind("PRIVATE KEY-----").map_or(line.len(), |i| i + "PRIVATE KEY-----".len());
                out.push_str(&line[end..]);
            } else {
                in_key = true;
                if line.ends_with('\n') {
                    out.push('\n');
                }
            }
            continue;
        }
        out.push_str(&line_secrets(line));
    }
    out
}

/// Redacts key/value secrets, bearer credentials and JWTs in one line.
fn line_secrets(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let lower = line.to_ascii_lowercase();
    let bytes = line.as_bytes();
    let mut i = 0;
    let mut copied = 0;
    while i < bytes.len() {
        // Only at the start of a word.
        if i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_') && !is_key_end(&lower, i) {
            i += 1;
            continue;
        }
        if let Some(value) = secret_value_at(line, &lower, i)
            && !value.is_empty()
            && value.start >= copied
        {
            out.push_str(&line[copied..value.start]);
            out.push_str(REDACTED);
            copied = value.end;
            i = value.end;
            continue;
        }
        i += 1;
    }
    out.push_str(&line[copied..]);
    out
}

/// Whether a secret key word (`token`, `password`) ends at byte `i` of a longer word
/// (`bootstrapToken`), which counts too.
fn is_key_end(lower: &str, i: usize) -> bool {
    ["token", "password"].iter().any(|k| lower[..i].ends_with(k))
}

/// At `i`: a `Bearer` credential, a JWT, or the separator after a secret key; the range of the
/// value to redact.
fn secret_value_at(line: &str, lower: &str, i: usize) -> Option<std::ops::Range<usize>> {
    let rest = &lower[i..];
    if rest.starts_with("bearer ") {
        let start = i + "bearer ".len();
        return Some(start..word_end(line, start));
    }
    if rest.starts_with("eyj") {
        let end = word_end(line, i);
        if line[i..end].matches('.').count() >= 2 {
            return Some(i..end);
        }
    }
    if !is_key_end(lower, i) {
        return None;
    }
    // `key` `"`? spaces? (`:`|`=`) spaces? `"`? value — or `--token value`.
    let b = line.as_bytes();
    let mut j = i;
    while j < b.len() && (b[j] == b'"' || b[j] == b'\'') {
        j += 1;
    }
    let flag = lower[..i].trim_end_matches(|c: char| c.is_ascii_alphanumeric() || c == '_').ends_with("--");
    while j < b.len() && b[j] == b' ' {
        j += 1;
    }
    match b.get(j) {
        Some(b':' | b'=') => j += 1,
        Some(_) if flag && j > i => {}
        _ => return None,
    }
    while j < b.len() && (b[j] == b' ' || b[j] == b'\t') {
        j += 1;
    }
    let quote = b.get(j).copied().filter(|c| *c == b'"' || *c == b'\'');
    if quote.is_some() {
        j += 1;
    }
    let end = match quote {
        Some(q) => line[j..].bytes().position(|c| c == q).map_or(line.len(), |p| j + p),
        None => word_end(line, j),
    };
    Some(j..end)
}

/// The end of the value starting at `start`: whitespace, a quote, `,`, `}` or `]`.
fn word_end(line: &str, start: usize) -> usize {
    line[start..]
        .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ',' | '}' | ']'))
        .map_or(line.len(), |p| start + p)
}

/// Redacts a JSON value in place (see the module docs).
pub fn json(v: &mut Value) {
    match v {
        Value::Object(map) => {
            let secret = map.get("kind").and_then(Value::as_str) == Some("Secret");
            for (k, child) in map.iter_mut() {
                let lower = k.to_ascii_lowercase();
                if secret
                    && (k == "data" || k == "stringData")
                    && let Some(m) = child.as_object_mut()
                {
                    for value in m.values_mut() {
                        *value = Value::String(REDACTED.into());
                    }
                    continue;
                }
                if (lower.ends_with("token") || lower.ends_with("password")) && child.is_string() {
                    if child.as_str().is_some_and(|s| !s.is_empty()) {
                        *child = Value::String(REDACTED.into());
                    }
                    continue;
                }
                json(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(json),
        Value::String(s) => {
            let r = text(s);
            if r != *s {
                *s = r;
            }
        }
        _ => {}
    }
}

/// A stored value: JSON redacted as JSON (a `secret` row as a Secret even without `kind`),
/// anything else as text.
pub fn stored(ty: &str, value: &str) -> String {
    match serde_json::from_str::<Value>(value) {
        Ok(mut v) => {
            if (ty.eq_ignore_ascii_case("secret") || ty.ends_with("Resource=secrets"))
                && let Some(m) = v.as_object_mut()
            {
                m.entry("kind").or_insert_with(|| Value::String("Secret".into()));
            }
            json(&mut v);
            v.to_string()
        }
        Err(_) => text(value),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const KEY: &str = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBv3\nAbCd==\n-----END EC PRIVATE KEY-----\n";
    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIBkTCB\n-----END CERTIFICATE-----\n";

    #[test]
    fn private_keys_go_certificates_stay() {
        let input = format!("before\n{KEY}{CERT}after\n");
        let out = text(&input);
        assert!(!out.contains("MHcCAQEEIBv3") && !out.contains("AbCd=="), "{out}");
        assert!(out.contains("MIIBkTCB") && out.contains("before\n") && out.contains("after\n"), "{out}");
        assert!(out.contains(REDACTED));
        // PKCS#8, and a block escaped on one JSON line.
        let p8 = "x: -----BEGIN PRIVATE KEY-----\\nAAAA\\n-----END PRIVATE KEY----- tail\n";
        assert_eq!(text(p8), "x: <redacted> tail\n");
        // An unterminated block is redacted to the end.
        assert_eq!(text("-----BEGIN RSA PRIVATE KEY-----\nAAAA\nBBBB"), "<redacted>\n");
    }

    #[test]
    fn tokens_passwords_and_bearers_go() {
        let cases = [
            ("    token: abc.def.ghi\n", "    token: <redacted>\n"),
            ("  token: \"abc\"\n", "  token: \"<redacted>\"\n"),
            ("  token: \"\"\n", "  token: \"\"\n"),
            ("{\"token\":\"s3cr3t\",\"a\":1}", "{\"token\":\"<redacted>\",\"a\":1}"),
            ("bootstrapToken=xyz other", "bootstrapToken=<redacted> other"),
            ("keadm join --token=abc123 -e x", "keadm join --token=<redacted> -e x"),
            ("keadm join --token abc123 -e x", "keadm join --token <redacted> -e x"),
            ("Authorization: Bearer abc.def", "Authorization: Bearer <redacted>"),
            ("password: hunter2", "password: <redacted>"),
            ("see eyJhbGciOi.eyJzdWIi.c2ln now", "see <redacted> now"),
            ("tokensecret: kept, tokenData kept", "tokensecret: kept, tokenData kept"),
            ("the token field", "the token field"),
        ];
        for (input, want) in cases {
            assert_eq!(text(input), want, "{input:?}");
        }
    }

    #[test]
    fn secrets_in_json_lose_their_values() {
        let mut v = json!({"kind": "Secret", "metadata": {"name": "s"}, "data": {"password": "czNjcmV0"},
            "stringData": {"x": "plain"}, "type": "Opaque"});
        json(&mut v);
        assert_eq!(v["data"]["password"], REDACTED);
        assert_eq!(v["stringData"]["x"], REDACTED);
        assert_eq!(v["metadata"]["name"], "s");
        let mut cm =
            json!({"kind": "ConfigMap", "data": {"a": "visible", "key.pem": KEY}, "auth": {"identitytoken": "t"}});
        json(&mut cm);
        assert_eq!(cm["data"]["a"], "visible");
        assert_eq!(cm["data"]["key.pem"], "<redacted>\n");
        assert_eq!(cm["auth"]["identitytoken"], REDACTED);
        let row = stored("secret", r#"{"metadata":{"name":"s"},"data":{"k":"dmFsdWU="}}"#);
        assert!(!row.contains("dmFsdWU=") && row.contains(REDACTED), "{row}");
        assert_eq!(stored("pod", "not json token: x"), "not json token: <redacted>");
        assert!(is_key_file(std::path::Path::new("/etc/kubeedge/certs/server.key")));
        assert!(!is_key_file(std::path::Path::new("/etc/kubeedge/certs/server.crt")));
    }
}
