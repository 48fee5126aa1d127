//! Service-account tokens in the meta store, under upstream's keys.
//!
//! Upstream's MetaManager stores the token a pod's projected volume gets under the key kubelet's
//! token manager uses (`KeyFunc`): the account, its namespace, and the request's audiences,
//! expiry and bound object, each formatted as Go's `%q`/`%#v` print them, e.g.
//! `"default"/"default"/[]string(nil)/3607/v1.BoundObjectReference{Kind:"Pod", APIVersion:"v1",
//! Name:"web", UID:"8da9…"}`. So each pod has its own row (a token bound to one pod is never
//! handed to another) and an upstream edgecore.db reads the same both ways.

use kubeedge_model::go::quote as go_quote;
use serde_json::Value;

/// The store key of the token `request` (a TokenRequest) asks for, for account `name` in
/// `namespace`.
pub fn key(name: &str, namespace: &str, request: &Value) -> String {
    let spec = request.get("spec").unwrap_or(&Value::Null);
    let audiences = match spec.get("audiences").and_then(Value::as_array) {
        None => "[]string(nil)".to_owned(),
        Some(a) => {
            let items: Vec<String> = a.iter().map(|v| go_quote(v.as_str().unwrap_or_default())).collect();
            format!("[]string{{{}}}", items.join(", "))
        }
    };
    let exp = spec.get("expirationSeconds").and_then(Value::as_i64).unwrap_or(0);
    let r = spec.get("boundObjectRef").unwrap_or(&Value::Null);
    let f = |k: &str| go_quote(r.get(k).and_then(Value::as_str).unwrap_or_default());
    format!(
        "{}/{}/{audiences}/{exp}/v1.BoundObjectReference{{Kind:{}, APIVersion:{}, Name:{}, UID:{}}}",
        go_quote(name),
        go_quote(namespace),
        f("kind"),
        f("apiVersion"),
        f("name"),
        f("uid")
    )
}

/// When a stored token (a TokenRequest with its status) must be fetched again, as upstream's
/// edge and kubelet decide: past 80 % of its lifetime, or older than 24 hours.
pub fn requires_refresh(token: &Value, now: i64) -> bool {
    let Some(exp) = expires(token) else { return true };
    let Some(ttl) = token.pointer("/spec/expirationSeconds").and_then(Value::as_i64) else { return now >= exp };
    let issued = exp - ttl;
    now > issued + 24 * 3600 || now > exp - ttl * 20 / 100
}

/// Whether a stored token can no longer be used at all.
pub fn expired(token: &Value, now: i64) -> bool {
    expires(token).is_none_or(|exp| now >= exp)
}

fn expires(token: &Value) -> Option<i64> {
    let t = token.pointer("/status/expirationTimestamp")?.as_str()?;
    kubeedge_kube_serve::time::parse_unix(t)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn keys_are_upstreams() {
        // The request an upstream edge sent in the recorded pair (real-pair/transcript.jsonl).
        let req = json!({"metadata": {"creationTimestamp": null}, "spec": {"audiences": null, "expirationSeconds": 3607,
            "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "web", "uid": "8da9248e-8622-4dd2-a322-c8065847a431"}},
            "status": {"token": "", "expirationTimestamp": null}});
        assert_eq!(
            key("default", "default", &req),
            r#""default"/"default"/[]string(nil)/3607/v1.BoundObjectReference{Kind:"Pod", APIVersion:"v1", Name:"web", UID:"8da9248e-8622-4dd2-a322-c8065847a431"}"#
        );
        let req = json!({"spec": {"audiences": ["a", "b\"c"]}});
        assert_eq!(
            key("robot", "ns", &req),
            r#""robot"/"ns"/[]string{"a", "b\"c"}/0/v1.BoundObjectReference{Kind:"", APIVersion:"", Name:"", UID:""}"#
        );
        assert!(key("r", "n", &json!({"spec": {"audiences": []}})).contains("/[]string{}/"));
    }

    #[test]
    fn refresh_at_eighty_percent_of_the_lifetime() {
        let t = json!({"spec": {"expirationSeconds": 1000}, "status": {"expirationTimestamp": "1970-01-01T01:00:00Z"}});
        // Issued at 2600, expires at 3600.
        assert!(!requires_refresh(&t, 3400));
        assert!(requires_refresh(&t, 3401));
        assert!(!expired(&t, 3599));
        assert!(expired(&t, 3600));
        assert!(requires_refresh(&json!({"status": {}}), 0), "no expiry: fetch again");
    }
}
