//! The mapper's REST API (upstream `httpserver`), with upstream's routes and JSON shapes:
//!
//! | route | answer |
//! |---|---|
//! | `GET /api/v1/ping` | `{apiVersion, statusCode, timeStamp, Message}` |
//! | `GET /api/v1/device/{ns}/{name}/{property}` | `{..., Data: {DeviceName, PropertyName, Namespace, Value, Type, TimeStamp}}`, read from the device now |
//! | `GET /api/v1/devicemethod/{ns}/{name}` | `{..., Data: {Methods: [{Name, Path, Parameters: [{PropertyName, ValueType}]}]}}` |
//! | `GET /api/v1/devicemethod/{ns}/{name}/{method}/{property}/{data}` | `{..., Message}` after writing `data` |
//! | `GET /api/v1/meta/model/{ns}/{name}` | `{..., id, name, namespace, properties: [{name, dataType, ...}]}`: the device's model |
//! | `GET /api/v1/database/{ns}/{name}` | 503: no database sink is built |
//!
//! Failures are `500` with a plain-text message, as Go's `http.Error` writes them. An
//! `X-Correlation-ID` request header is echoed.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::clock::{now_ms, rfc3339};
use crate::panel::{Panel, resource_id};
use crate::protocol::Protocol;

/// The REST API's version segment.
pub const API_VERSION: &str = "v1";
const CORRELATION: &str = "X-Correlation-ID";

/// The routes over `panel`.
pub fn router<P: Protocol>(panel: Panel<P>) -> Router {
    Router::new()
        .route("/api/v1/ping", get(ping))
        .route("/api/v1/device/{ns}/{name}/{property}", get(read::<P>))
        .route("/api/v1/devicemethod/{ns}/{name}", get(methods::<P>))
        .route("/api/v1/devicemethod/{ns}/{name}/{method}/{property}/{data}", get(write::<P>))
        .route("/api/v1/meta/model/{ns}/{name}", get(model::<P>))
        .route("/api/v1/database/{ns}/{name}", get(database))
        .with_state(panel)
}

/// Serves the API on `listener` until `stop`.
pub async fn serve<P: Protocol>(
    listener: TcpListener,
    panel: Panel<P>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(panel)).with_graceful_shutdown(stop.cancelled_owned()).await
}

fn base(mut body: Map<String, Value>) -> Value {
    body.insert("apiVersion".into(), API_VERSION.into());
    body.insert("statusCode".into(), 200.into());
    body.insert("timeStamp".into(), rfc3339(now_ms()).into());
    Value::Object(body)
}

fn ok(headers: &HeaderMap, body: Map<String, Value>) -> Response {
    let mut response =
        (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], base(body).to_string()).into_response();
    if let Some(id) = headers.get(CORRELATION) {
        response.headers_mut().insert(CORRELATION, id.clone());
    }
    response
}

fn fail(status: StatusCode, message: String) -> Response {
    let mut response = (status, format!("{message}\n")).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

async fn ping(headers: HeaderMap) -> Response {
    ok(&headers, object(json!({"Message": format!("This is {API_VERSION} API, the server is running normally.")})))
}

async fn read<P: Protocol>(
    State(panel): State<Panel<P>>,
    Path((ns, name, property)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    match panel.read(&ns, &name, &property).await {
        Ok((value, ty)) => {
            let data = json!({"DeviceName": name, "PropertyName": property, "Namespace": ns, "Value": value, "Type": ty, "TimeStamp": now_ms()});
            ok(&headers, object(json!({ "Data": data })))
        }
        Err(e) => fail(StatusCode::INTERNAL_SERVER_ERROR, format!("Get device data error: {e}")),
    }
}

async fn methods<P: Protocol>(
    State(panel): State<Panel<P>>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let Some(device) = panel.device(&ns, &name) else {
        return fail(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("Get device method error: device {} not found", resource_id(&ns, &name)),
        );
    };
    let spec = device.spec.unwrap_or_default();
    let model = panel.model(&ns, &spec.device_model_reference).and_then(|m| m.spec).unwrap_or_default();
    let mut out = Vec::new();
    for m in &spec.methods {
        let mut params = Vec::new();
        for p in &m.property_names {
            let declared = spec.properties.iter().any(|dp| &dp.name == p);
            let ty = model.properties.iter().find(|mp| &mp.name == p).map(|mp| mp.r#type.to_ascii_lowercase());
            match ty.filter(|_| declared) {
                Some(ty) => params.push(json!({"PropertyName": p, "ValueType": ty})),
                None => {
                    return fail(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("Get device method error: unable to find device property {p} defined in device method"),
                    );
                }
            }
        }
        let path = format!("/api/v1/devicemethod/{ns}/{name}/{}/{{propertyName}}/{{data}}", m.name);
        out.push(json!({"Name": m.name, "Path": path, "Parameters": params}));
    }
    ok(&headers, object(json!({"Data": {"Methods": out}})))
}

async fn write<P: Protocol>(
    State(panel): State<Panel<P>>,
    Path((ns, name, method, property, data)): Path<(String, String, String, String, String)>,
    headers: HeaderMap,
) -> Response {
    match panel.write(&ns, &name, &method, &property, &data).await {
        Ok(()) => ok(
            &headers,
            object(
                json!({"Message": format!("Write data {data} to device {} successfully.", resource_id(&ns, &name))}),
            ),
        ),
        Err(e) => fail(StatusCode::INTERNAL_SERVER_ERROR, format!("Write device data error: {e}")),
    }
}

async fn model<P: Protocol>(
    State(panel): State<Panel<P>>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let Some(device) = panel.device(&ns, &name) else {
        return fail(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("Get device error: device {} not found", resource_id(&ns, &name)),
        );
    };
    let model_name = device.spec.map(|s| s.device_model_reference).unwrap_or_default();
    let Some(model) = panel.model(&device.namespace, &model_name) else {
        return fail(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("Get device model error: deviceModel {} not found", resource_id(&device.namespace, &model_name)),
        );
    };
    // Upstream's common.DeviceModel: omitempty everywhere.
    let mut body = Map::new();
    body.insert("id".into(), model.id().into());
    body.insert("name".into(), model.name.clone().into());
    if !model.namespace.is_empty() {
        body.insert("namespace".into(), model.namespace.clone().into());
    }
    let props: Vec<Value> = model
        .spec
        .unwrap_or_default()
        .properties
        .iter()
        .map(|p| {
            let mut m = Map::new();
            for (k, v) in [
                ("name", &p.name),
                ("dataType", &p.r#type),
                ("description", &p.description),
                ("accessMode", &p.access_mode),
                ("minimum", &p.minimum),
                ("maximum", &p.maximum),
                ("unit", &p.unit),
            ] {
                if !v.is_empty() {
                    m.insert(k.into(), v.clone().into());
                }
            }
            Value::Object(m)
        })
        .collect();
    if !props.is_empty() {
        body.insert("properties".into(), props.into());
    }
    ok(&headers, body)
}

async fn database() -> Response {
    fail(
        StatusCode::SERVICE_UNAVAILABLE,
        "The database is not enabled. Please configure mapper and try again".to_owned(),
    )
}
