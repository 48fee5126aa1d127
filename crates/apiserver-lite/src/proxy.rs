//! `pods/log` and `pods/exec`, proxied to the node's kubelet endpoint as kube-apiserver does:
//! the node's `InternalIP` and `status.daemonEndpoints.kubeletEndpoint.Port`, paths
//! `/containerLogs/{ns}/{pod}/{container}` and `/exec/{ns}/{pod}/{container}`, over HTTPS
//! without verifying the kubelet's certificate (kube-apiserver's behaviour when no kubelet CA is
//! configured). Upgrades (exec's SPDY or WebSocket) are spliced through after the 101.

use std::sync::Arc;

use http::{Request, Response, StatusCode, Uri, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use kubeedge_kube_serve::request::query_pairs;
use kubeedge_kube_serve::status::ApiError;
use rustls::pki_types::ServerName;
use serde_json::Value;
use tracing::debug;

use crate::registry::ResourceType;
use crate::server::Body;
use crate::store::Store;

/// Proxies a log or exec request for a pod to its node.
pub async fn to_kubelet(
    store: &Store,
    t: &ResourceType,
    ns: Option<&str>,
    name: &str,
    sub: &str,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    if sub != "log" && sub != "exec" && sub != "attach" {
        return Err(crate::api::no_such_path());
    }
    let pod = store.get(t, ns, name)?;
    let ns = ns.unwrap_or("default");
    let query = req.uri().query().unwrap_or_default().to_owned();
    let container = container_name(&pod, &query)?;
    let node_name = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request(format!("pod {name} does not have a host assigned")))?;
    let nodes = store.resolve("", "v1", "nodes").ok_or_else(|| ApiError::internal("no nodes type"))?;
    let node = store.get(&nodes, None, node_name)?;
    let ip = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().find(|x| x["type"] == "InternalIP").or_else(|| a.first()))
        .and_then(|x| x["address"].as_str())
        .ok_or_else(|| ApiError::bad_request(format!("node {node_name} has no address")))?
        .to_owned();
    let port = node.pointer("/status/daemonEndpoints/kubeletEndpoint/Port").and_then(Value::as_u64).unwrap_or(10250);
    let rest: Vec<String> = query_pairs(&query)
        .into_iter()
        .filter(|(k, _)| k != "container")
        .map(|(k, v)| format!("{}={}", enc(&k), enc(&v)))
        .collect();
    let base = if sub == "log" { "containerLogs" } else { sub };
    let mut path = format!("/{base}/{ns}/{name}/{container}");
    if !rest.is_empty() {
        path = format!("{path}?{}", rest.join("&"));
    }
    let host = if ip.contains(':') { format!("[{ip}]:{port}") } else { format!("{ip}:{port}") };
    let uri: Uri = path.parse().map_err(|_| ApiError::bad_request("invalid proxy path"))?;
    debug!(%host, %uri, "Proxying to the kubelet.");

    let tcp = tokio::net::TcpStream::connect(&host)
        .await
        .map_err(|e| ApiError::service_unavailable(format!("error dialing the node {node_name} at {host}: {e}")))?;
    // kube-apiserver does not verify the kubelet's certificate unless given a kubelet CA.
    let config = kubeedge_pki::insecure_client_config().map_err(|e| ApiError::internal(e.to_string()))?;
    let server_name = ServerName::try_from(ip.clone()).map_err(|_| ApiError::internal("bad server name"))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(server_name, tcp)
        .await
        .map_err(|e| ApiError::service_unavailable(format!("TLS to the node {node_name}: {e}")))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| ApiError::service_unavailable(format!("HTTP to the node {node_name}: {e}")))?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });

    let client_upgrade = hyper::upgrade::on(&mut req);
    let (mut parts, body) = req.into_parts();
    parts.uri = uri;
    parts.headers.remove(header::AUTHORIZATION);
    parts.headers.insert(header::HOST, host.parse().map_err(|_| ApiError::internal("bad host"))?);
    parts.version = http::Version::HTTP_11;
    let upstream_req = Request::from_parts(parts, body);
    let mut resp = sender
        .send_request(upstream_req)
        .await
        .map_err(|e| ApiError::service_unavailable(format!("proxying to the node {node_name}: {e}")))?;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            if let (Ok(client), Ok(upstream)) = (client_upgrade.await, upstream_upgrade.await) {
                let mut client = TokioIo::new(client);
                let mut upstream = TokioIo::new(upstream);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            }
        });
    }
    let (parts, body) = resp.into_parts();
    Ok(Response::from_parts(parts, body.map_err(std::io::Error::other).boxed()))
}

/// The container a log/exec request names, or the pod's only container.
fn container_name(pod: &Value, query: &str) -> Result<String, ApiError> {
    let names: Vec<&str> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| cs.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default();
    if let Some((_, c)) = query_pairs(query).into_iter().find(|(k, _)| k == "container") {
        let all = ["initContainers", "containers", "ephemeralContainers"];
        let known = all.iter().any(|l| {
            pod.pointer(&format!("/spec/{l}"))
                .and_then(Value::as_array)
                .is_some_and(|cs| cs.iter().any(|x| x["name"].as_str() == Some(c.as_str())))
        });
        if !known {
            return Err(ApiError::bad_request(format!(
                "container {c} is not valid for pod {}",
                pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default()
            )));
        }
        return Ok(c);
    }
    match names.as_slice() {
        [only] => Ok((*only).to_owned()),
        _ => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {}, choose one of: [{}]",
            pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default(),
            names.join(" ")
        ))),
    }
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn container_is_named_or_the_only_one() {
        let one = json!({"metadata":{"name":"p"},"spec":{"containers":[{"name":"c"}]}});
        assert_eq!(container_name(&one, "follow=true").unwrap(), "c");
        let two = json!({"metadata":{"name":"p"},"spec":{"containers":[{"name":"a"},{"name":"b"}]}});
        assert_eq!(container_name(&two, "container=b").unwrap(), "b");
        let bad = container_name(&two, "container=..%2F..%2Fexec").unwrap_err();
        assert!(bad.message.contains("is not valid for pod p"), "{}", bad.message);
        let err = container_name(&two, "").unwrap_err();
        assert!(err.message.contains("choose one of: [a b]"), "{}", err.message);
        assert_eq!(enc("echo hi"), "echo%20hi");
    }
}
