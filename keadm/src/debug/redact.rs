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
    let mut block: Option<usize> = None;
    for line in text.split_inclusive('\n') {
        if in_key {
            if line.contains("-----END") && line.contains("PRIVATE KEY") {
                in_key = false;
            }
            continue;
        }
        if block.is_some_and(|indent| line.trim().is_empty() || indent_of(line) > indent) {
            // The lines of a `token: |` block scalar.
            out.push_str(&" ".repeat(indent_of(line)));
            out.push_str(REDACTED);
            if line.ends_with('\n') {
                out.push('\n');
            }
            continue;
        }
        block = secret_block_start(line);
        if let Some(at) = line.find("-----BEGIN").filter(|_| line.contains("PRIVATE KEY")) {
            out.push_str(&line[..at]);
            out.push_str(REDACTED);
            // A one-line block (`\n` escaped inside JSON) ends on this line.
            let one_line = line[at..].contains("-----END");
            if one_line {
                let end = line.rfind("-----END").and_then(|e| line[e + 8..].find("-----").map(|p| e + 8 + p + 5));
                let end = end.unwrap_or(line.len());
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

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

/// `  token: |` (or `>-`…): a YAML block scalar holding a secret starts; its indent.
fn secret_block_start(line: &str) -> Option<usize> {
    let t = line.trim_end();
    let (key, value) = t.trim_start().split_once(':')?;
    let value = value.trim();
    let block = matches!(value, "|" | "|-" | "|+" | ">" | ">-" | ">+");
    (block && SECRET_KEYS.iter().any(|k| key.trim_matches(['"', '\'']).to_ascii_lowercase().ends_with(k)))
        .then(|| indent_of(line))
}

/// Redacts key/value secrets, bearer credentials and JWTs in one line.
fn line_secrets(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let lower = line.to_ascii_lowercase();
    let bytes = line.as_bytes();
    let mut i = 0;
    let mut copied = 0;
    while i < bytes.len() {
        // Only at the start of a word (and never inside a multi-byte character).
        if !line.is_char_boundary(i) {
            i += 1;
            continue;
        }
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
    SECRET_KEYS.iter().any(|k| lower[..i].ends_with(k))
}

/// Key names (lower case, as a suffix: `bootstrapToken`, `db_password`) whose values are
/// secrets.
const SECRET_KEYS: &[&str] = &["token", "password", "passwd", "apikey", "api_key", "privatekey", "private_key"];

/// Whether a JSON key names a secret value (also `auth`/`authorization`: registry
/// credentials in the runtime's config, `Authorization` headers).
fn secret_key(key: &str) -> bool {
    let lower = key.to_ascii_lowercase();
    SECRET_KEYS.iter().any(|k| lower.ends_with(k)) || lower == "auth" || lower == "authorization"
}

/// At `i`: a `Bearer` credential, a JWT, or the separator after a secret key; the range of the
/// value to redact.
fn secret_value_at(line: &str, lower: &str, i: usize) -> Option<std::ops::Range<usize>> {
    let rest = &lower[i..];
    if rest.starts_with("bearer ") {
        let start = i + "bearer ".len();
        return Some(start..word_end(line, start));
    }
    // `Basic <base64 user:password>` (case as HTTP writes it, so prose stays).
    if line[i..].starts_with("Basic ") {
        let start = i + "Basic ".len();
        let end = word_end(line, start);
        if end - start >= 8 && line[start..end].bytes().all(|c| c.is_ascii_alphanumeric() || b"+/=".contains(&c)) {
            return Some(start..end);
        }
    }
    // A base64-encoded PEM block (`client-key-data: LS0tLS1CRUdJTi…` of a kubeconfig).
    if line[i..].starts_with("LS0tLS1CRUdJT") {
        return Some(i..word_end(line, i));
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
    let flow = line[..i].contains(['{', '[']);
    let end = match quote {
        Some(q) => line[j..].bytes().position(|c| c == q).map_or(line.len(), |p| j + p),
        // A block YAML `key: value` runs to the end of the line (`password: two words`).
        None if !flag && !flow && b.get(j.saturating_sub(1)).is_some_and(|c| *c == b' ' || *c == b':') => {
            line.trim_end_matches(['\n', '\r']).len().max(j)
        }
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
            // `{"name": "DB_PASSWORD", "value": "…"}` (a pod's env literal, a header).
            if map.get("name").and_then(Value::as_str).is_some_and(secret_key)
                && let Some(v) = map.get_mut("value").filter(|v| v.as_str().is_some_and(|s| !s.is_empty()))
            {
                *v = Value::String(REDACTED.into());
            }
            for (k, child) in map.iter_mut() {
                if secret
                    && (k == "data" || k == "stringData")
                    && let Some(m) = child.as_object_mut()
                {
                    for value in m.values_mut() {
                        *value = Value::String(REDACTED.into());
                    }
                    continue;
                }
                if secret_key(k) && child.is_string() {
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
            // JSON inside a string (`kubectl.kubernetes.io/last-applied-configuration` holds a
            // whole Secret) is redacted as JSON.
            if s.trim_start().starts_with(['{', '['])
                && let Ok(mut inner) = serde_json::from_str::<Value>(s)
                && (inner.is_object() || inner.is_array())
            {
                json(&mut inner);
                *s = inner.to_string();
                return;
            }
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
    fn non_ascii_text_is_fine() {
        assert_eq!(text("aé token: x ü\n"), "aé token: <redacted>\n");
        assert_eq!(text("温度 µs ©\u{fffd}password=p"), "温度 µs ©\u{fffd}password=<redacted>");
        let mut v = json!({"data": {"k": "温度 password: p"}});
        json(&mut v);
        assert_eq!(v["data"]["k"], "温度 password: <redacted>");
    }

    #[test]
    fn more_shapes_of_secrets() {
        let cases = [
            ("password: two words\n", "password: <redacted>\n"),
            ("password: ab,cd]ef", "password: <redacted>"),
            ("Authorization: Basic dXNlcjpwYXNzd29yZA==", "Authorization: Basic <redacted>"),
            ("a basic setup", "a basic setup"),
            ("    client-key-data: LS0tLS1CRUdJTiBFQyBQUklWQVRF", "    client-key-data: <redacted>"),
            (
                "-----BEGIN PGP PRIVATE KEY BLOCK-----\nabc\n-----END PGP PRIVATE KEY BLOCK-----\nok\n",
                "<redacted>\nok\n",
            ),
            ("token: |\n  line1\n  line2\nnext: 1\n", "token: <redacted>\n  <redacted>\n  <redacted>\nnext: 1\n"),
        ];
        for (input, want) in cases {
            assert_eq!(text(input), want, "{input:?}");
        }
    }

    #[test]
    fn nested_json_registry_auth_and_env_literals_lose_their_values() {
        let applied =
            r#"{"apiVersion":"v1","kind":"Secret","data":{"tls.key":"TFMwdExTMUNSVWRKVGk="},"metadata":{"name":"s"}}"#;
        let mut v = json!({"kind": "Secret", "metadata": {"annotations": {
            "kubectl.kubernetes.io/last-applied-configuration": applied}}, "data": {"tls.key": "x"}});
        json(&mut v);
        let s = v.to_string();
        assert!(!s.contains("TFMwdExTMUNSVWRKVGk="), "{s}");
        let mut cri = json!({"config": {"registry": {"configs": {"r.io": {"auth": {"username": "u", "password": "p",
            "auth": "dTpw", "identitytoken": "t"}}}, "headers": {"Authorization": ["Basic dXNlcjpwYXNzd29yZA=="]}}}});
        json(&mut cri);
        let s = cri.to_string();
        for leak in ["dTpw", "dXNlcjpwYXNzd29yZA==", "\"p\"", "\"t\""] {
            assert!(!s.contains(leak), "{leak} in {s}");
        }
        let mut pod = json!({"env": [{"name": "DB_PASSWORD", "value": "hunter2"}, {"name": "MODE", "value": "fast"}]});
        json(&mut pod);
        assert_eq!(pod["env"][0]["value"], REDACTED);
        assert_eq!(pod["env"][1]["value"], "fast");
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
