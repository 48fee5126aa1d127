//! Port forward: kubelet's `/portForward`, CRI `PortForward` into the pod's sandbox, then the
//! runtime's streaming server proxied after the upgrade as for exec.
//!
//! The two protocols name ports differently. SPDY (`portforward.k8s.io`, kubectl's own, and
//! what kube-apiserver tunnels kubectl's WebSocket to) opens a pair of streams per connection,
//! each with a `port` header, so the request carries no ports. WebSocket
//! (`v4.channel.k8s.io`) has fixed channels, two per port (data, error), so the ports come in
//! the query; kubelet reads them (`NewV4Options`) and puts them in the CRI request, and the
//! runtime's streaming server takes them from there (the query itself is not forwarded).

use super::*;

/// The query parameter naming a forwarded port (`api.PortHeader`).
const PORT_PARAM: &str = "port";

/// Whether the request asks for a WebSocket (kubelet's `wsstream.IsWebSocketRequest`).
pub(super) fn is_websocket(headers: &HeaderMap) -> bool {
    let websocket =
        headers.get(header::UPGRADE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    websocket && is_upgrade(headers)
}

/// The ports a port forward asks for, as kubelet's `NewV4Options` reads them: none for SPDY;
/// for WebSocket, every `port` parameter (each may be a comma-separated list), at least one,
/// each in 1..=65535.
pub(super) fn forward_ports(query: &str, websocket: bool) -> Result<Vec<i32>, HttpError> {
    if !websocket {
        return Ok(Vec::new());
    }
    let values: Vec<String> = query_pairs(query).into_iter().filter(|(k, _)| k == PORT_PARAM).map(|(_, v)| v).collect();
    if values.is_empty() {
        return Err(HttpError::bad_request(format!("query parameter {PORT_PARAM:?} is required")));
    }
    let mut ports = Vec::new();
    for value in &values {
        if value.is_empty() {
            return Err(HttpError::bad_request(format!("query parameter {PORT_PARAM:?} cannot be empty")));
        }
        for p in value.split(',') {
            let port: u16 =
                p.parse().map_err(|e| HttpError::bad_request(format!("unable to parse {value:?} as a port: {e}")))?;
            if port == 0 {
                return Err(HttpError::bad_request(format!("port {value:?} must be > 0")));
            }
            ports.push(i32::from(port));
        }
    }
    Ok(ports)
}

/// `/portForward`: the pod's newest sandbox (a ready one first; the runtime refuses one that is
/// not), CRI `PortForward`, then the upgrade proxied. The order of checks is kubelet's: the
/// query, then the pod (404), then the upgrade.
pub(super) async fn port_forward(
    shared: &Arc<Shared>,
    target: &Target,
    query: &str,
    mut req: Request<Incoming>,
    peer: SocketAddr,
    permit: Arc<OwnedSemaphorePermit>,
) -> Result<Response<Body>, HttpError> {
    let ports = forward_ports(query, is_websocket(req.headers()))?;
    let sandbox = pod_sandboxes(&shared.cri, target).await?.into_iter().max_by_key(|s| {
        (v1::PodSandboxState::try_from(s.state) == Ok(v1::PodSandboxState::SandboxReady), s.created_at)
    });
    let Some(sandbox) = sandbox else {
        return Err(HttpError::not_found(format!("pod {:?} does not exist", target.pod)));
    };
    if !is_upgrade(req.headers()) {
        return Err(upgrade_required());
    }
    let url = shared.cri.port_forward(&sandbox.id, ports).await.map_err(streaming_error)?;
    debug!(sandbox.id = %sandbox.id, "Proxying a port forward to the runtime's streaming server.");
    let client = hyper::upgrade::on(&mut req);
    proxy_upgrade(shared, &url, req.method(), req.headers(), client, peer, permit).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_ports_are_read_as_kubelets_v4_options() {
        assert_eq!(forward_ports("", false), Ok(vec![]), "SPDY names ports per stream");
        assert_eq!(forward_ports("port=80", false), Ok(vec![]));
        assert_eq!(forward_ports("port=80", true), Ok(vec![80]));
        assert_eq!(forward_ports("port=80&port=8080,9090&other=1", true), Ok(vec![80, 8080, 9090]));
        for (q, msg) in [
            ("", "query parameter \"port\" is required"),
            ("ports=80", "query parameter \"port\" is required"),
            ("port=", "query parameter \"port\" cannot be empty"),
            ("port=0", "port \"0\" must be > 0"),
        ] {
            let e = forward_ports(q, true).unwrap_err();
            assert_eq!((e.status, e.message.as_str()), (StatusCode::BAD_REQUEST, msg), "{q}");
        }
        for q in ["port=http", "port=65536", "port=80,", "port=-1"] {
            let e = forward_ports(q, true).unwrap_err();
            assert!(e.status == StatusCode::BAD_REQUEST && e.message.starts_with("unable to parse"), "{q}: {e:?}");
        }
    }

    #[test]
    fn websockets_are_told_from_spdy() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("WebSocket"));
        assert!(is_websocket(&h));
        h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        assert!(!is_websocket(&h));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.remove(header::CONNECTION);
        assert!(!is_websocket(&h), "no Connection: Upgrade");
    }
}
