//! `POST /task/{type}/name/{job}/node/{node}/status` on :10002: a node's report on its task
//! over HTTPS (upstream's legacy endpoint, which edges of v1alpha1 and `keadm` used), handed
//! to the TaskManager exactly as a report through the node's session.
//!
//! Unlike upstream (which took any caller's word for the node), the caller must present the
//! node's client certificate: none → 401, another node's → 403. The body is capped at
//! [`task::MAX_REPORT_BYTES`] (413) and is either v1alpha2's report
//! (`{"action","succ","finishTime","reason","extend"}`) or v1alpha1's `NodeTaskResponse`
//! (Go's field names: `{"NodeName","Event","Action","Reason","Time",…}`).

use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use kubeedge_apis::operations::task::{self, LegacyTaskResponse, TaskResource, TaskType, UpstreamMessage};
use kubeedge_model::constants::module;
use kubeedge_model::{CloudResource, Content, Message};
use tracing::{info, warn};

use super::https::{Body, JoinApi, text};

/// Whether `path` is this endpoint's.
pub fn is_task_path(path: &str) -> bool {
    path.starts_with("/task/")
}

/// `/task/{type}/name/{job}/node/{node}/status` → the task.
fn parse_path(path: &str) -> Result<TaskResource, (StatusCode, String)> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let ["task", ty, "name", job, "node", node, "status"] = parts.as_slice() else {
        return Err((StatusCode::NOT_FOUND, "expected /task/{type}/name/{job}/node/{node}/status".into()));
    };
    let task_type =
        TaskType::from_resource(ty).ok_or((StatusCode::NOT_FOUND, format!("unknown node task type {ty:?}")))?;
    let res = TaskResource { task_type, job: (*job).to_owned(), node: (*node).to_owned() };
    // The same checks as a report through the hub.
    TaskResource::parse(&res.to_string()).map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))
}

/// The report in either body form.
fn parse_body(body: &[u8]) -> Result<UpstreamMessage, String> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| format!("invalid report: {e}"))?;
    if v.get("action").is_some() || v.get("succ").is_some() {
        return UpstreamMessage::parse(body).map_err(|e| e.to_string());
    }
    let legacy: LegacyTaskResponse = serde_json::from_value(v).map_err(|e| format!("invalid report: {e}"))?;
    Ok(legacy.to_upstream())
}

/// Handles the endpoint.
pub async fn handle(api: &JoinApi, req: Request<Incoming>, client_cert: Option<&[u8]>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let res = match parse_path(&path) {
        Ok(r) => r,
        Err((code, why)) => return text(code, &why),
    };
    let Some(cert) = client_cert.filter(|c| kubeedge_pki::verify_signed_by(c, api.ca.cert_der())) else {
        return text(StatusCode::UNAUTHORIZED, "the node's client certificate is required");
    };
    let Ok((cn, orgs)) = kubeedge_pki::subject(cert) else {
        return text(StatusCode::UNAUTHORIZED, "unreadable client certificate");
    };
    if !kubeedge_pki::node_subject_matches(&cn, &orgs, &res.node, false) {
        warn!(certificate = %cn, node = %res.node, job = %res.job, "Refused a report on another node's task.");
        return text(StatusCode::FORBIDDEN, &format!("certificate {cn:?} may not report for node {:?}", res.node));
    }
    let limited = http_body_util::Limited::new(req.into_body(), task::MAX_REPORT_BYTES);
    let body = match limited.collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("the body is larger than {} bytes", task::MAX_REPORT_BYTES),
            );
        }
    };
    let report = match parse_body(&body) {
        Ok(r) => r,
        Err(why) => return text(StatusCode::BAD_REQUEST, &why),
    };
    let Some(bus) = &api.bus else {
        return text(StatusCode::SERVICE_UNAVAILABLE, "the TaskManager is not running (modules.taskManager)");
    };
    let content = match Content::json(&report) {
        Ok(c) => c,
        Err(e) => return text(StatusCode::BAD_REQUEST, &format!("invalid report: {e}")),
    };
    let msg = Message::build(
        task::TASK_MANAGER,
        kubeedge_model::constants::group::HUB,
        CloudResource::prefixed(&res.node, &res.to_string()),
        task::UPDATE_NODE_ACTION_STATUS,
        content,
    );
    if !bus.has_module(module::TASKMANAGER) {
        return text(StatusCode::SERVICE_UNAVAILABLE, "the TaskManager is not running (modules.taskManager)");
    }
    match bus.try_send(module::TASKMANAGER, msg) {
        Ok(()) => {
            info!(node = %res.node, job = %res.job, action = %report.action, "A node task report over HTTPS.");
            let mut r = Response::new(Full::new(bytes::Bytes::from_static(b"ok")));
            *r.status_mut() = StatusCode::OK;
            r
        }
        Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "the TaskManager is busy; report again"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_bodies() {
        let r = parse_path("/task/nodeupgradejob/name/j1/node/edge-1/status").unwrap();
        assert_eq!(r.to_string(), "operations.kubeedge.io/v1alpha2/nodeupgradejob/j1/node/edge-1");
        assert_eq!(parse_path("/task/upgrade/name/j1/node/e/status").unwrap().task_type, TaskType::NodeUpgrade);
        assert_eq!(parse_path("/task/x/name/j/node/e/status").unwrap_err().0, StatusCode::NOT_FOUND);
        assert_eq!(parse_path("/task/prepull/name/J/node/e/status").unwrap_err().0, StatusCode::BAD_REQUEST);
        assert_eq!(parse_path("/task/prepull/name/j/node/e").unwrap_err().0, StatusCode::NOT_FOUND);
        let m = parse_body(br#"{"action":"Pull","succ":true,"finishTime":"","reason":"","extend":""}"#).unwrap();
        assert!(m.succ);
        let m = parse_body(br#"{"NodeName":"e","Event":"Backup","Action":"Failure","Reason":"disk"}"#).unwrap();
        assert_eq!((m.action.as_str(), m.succ, m.reason.as_str()), ("BackUp", false, "disk"));
        assert!(parse_body(b"[1]").is_err());
    }
}
