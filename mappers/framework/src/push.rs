//! Push methods: where a property's values go besides edgecore (`pushMethod` in the Device).
//!
//! Each configured push runs as its own task behind a bounded queue, so a slow broker or HTTP
//! endpoint never stalls the device's polling: when the queue is full the value is dropped and
//! counted in the log (the next report carries a fresher one). Payloads are upstream's:
//! - MQTT: `time is 2006-01-02 15:04:05  {topic}: {value}` to `topic` with `qos` and `retained`;
//! - HTTP: `POST {hostName}:{port}{requestPath}` with the form body
//!   `{property}={value}&time=2006-01-02 15:04:05`.
//!
//! OTEL and the database sinks are not built; a Device asking for them gets a warning.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use kubeedge_dmi::v1beta1::{PushMethod, PushMethodHttp, PushMethodMqtt};
use rumqttc::{AsyncClient, MqttOptions, QoS};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::go_datetime;

/// Values waiting for one push target.
const PUSH_QUEUE: usize = 16;
/// The HTTP push deadline when `timeout` is 0.
const HTTP_DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// One value to push.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The property.
    pub property: String,
    /// The value as reported.
    pub value: String,
    /// When it was read (ms).
    pub timestamp: i64,
}

/// The sending side of a push task.
#[derive(Debug, Clone)]
pub struct Pusher {
    tx: mpsc::Sender<Sample>,
    target: String,
}

impl Pusher {
    /// Starts the push task a property asks for, if any (on `tracker`, until `stop`).
    pub fn start(
        method: Option<&PushMethod>,
        client_id: &str,
        tracker: &TaskTracker,
        stop: &CancellationToken,
    ) -> Result<Option<Self>, String> {
        let Some(method) = method else { return Ok(None) };
        let (tx, rx) = mpsc::channel(PUSH_QUEUE);
        if let Some(mqtt) = &method.mqtt {
            let (host, port) = broker(&mqtt.address)?;
            let target = format!("mqtt {host}:{port} {}", mqtt.topic);
            tracker.spawn(run_mqtt(mqtt.clone(), host, port, client_id.to_owned(), rx, stop.clone()));
            return Ok(Some(Self { tx, target }));
        }
        if let Some(http) = &method.http {
            let target = format!("{}:{}{}", http.hostname, http.port, http.requestpath);
            if !target.starts_with("http://") {
                return Err(format!("pushMethod.http: hostName {:?} must start with http://", http.hostname));
            }
            tracker.spawn(run_http(http.clone(), target.clone(), rx, stop.clone()));
            return Ok(Some(Self { tx, target }));
        }
        if method.otel.is_some() || method.db_method.is_some() {
            tracing::warn!("Push methods otel and dbMethod are not supported by this mapper; ignoring them.");
        }
        Ok(None)
    }

    /// Queues a value; drops it when the target is behind.
    pub fn push(&self, sample: Sample) {
        if let Err(mpsc::error::TrySendError::Full(s)) = self.tx.try_send(sample) {
            tracing::warn!(target = %self.target, property = %s.property, "Push target is behind; dropped a value.");
        }
    }
}

/// `tcp://host:port`, `mqtt://host:port` or `host:port` (port 1883 when absent).
fn broker(address: &str) -> Result<(String, u16), String> {
    let rest = address.split_once("://").map_or(address, |(_, r)| r);
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().map_err(|_| format!("pushMethod.mqtt.address: bad port in {address:?}"))?),
        None => (rest, 1883),
    };
    if host.is_empty() {
        return Err(format!("pushMethod.mqtt.address: no host in {address:?}"));
    }
    Ok((host.to_owned(), port))
}

async fn run_mqtt(
    cfg: PushMethodMqtt,
    host: String,
    port: u16,
    client_id: String,
    mut rx: mpsc::Receiver<Sample>,
    stop: CancellationToken,
) {
    let mut options = MqttOptions::new(client_id, host, port);
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(options, PUSH_QUEUE);
    let qos = match cfg.qos {
        0 => QoS::AtMostOnce,
        2 => QoS::ExactlyOnce,
        _ => QoS::AtLeastOnce,
    };
    let mut failures = 0u32;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            sample = rx.recv() => {
                let Some(s) = sample else { break };
                let payload = format!("time is {}  {}: {}", go_datetime(s.timestamp), cfg.topic, s.value);
                if client.try_publish(cfg.topic.clone(), qos, cfg.retained, payload).is_err() {
                    tracing::warn!(topic = %cfg.topic, "MQTT push queue is full; dropped a value.");
                }
            }
            event = eventloop.poll() => match event {
                Ok(_) => failures = 0,
                Err(e) => {
                    failures += 1;
                    if failures == 1 || failures.is_power_of_two() {
                        tracing::warn!(error = %e, topic = %cfg.topic, "MQTT push broker unreachable; retrying.");
                    }
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            },
        }
    }
    let _ = client.try_disconnect();
}

async fn run_http(cfg: PushMethodHttp, url: String, mut rx: mpsc::Receiver<Sample>, stop: CancellationToken) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let deadline =
        u64::try_from(cfg.timeout).ok().filter(|t| *t > 0).map_or(HTTP_DEFAULT_TIMEOUT, Duration::from_millis);
    loop {
        let sample = tokio::select! {
            _ = stop.cancelled() => break,
            s = rx.recv() => match s { Some(s) => s, None => break },
        };
        let body = format!("{}={}&time={}", sample.property, sample.value, go_datetime(sample.timestamp));
        let request = match http::Request::post(&url)
            .header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(body)))
        {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(url = %url, error = %e, "Bad HTTP push target.");
                continue;
            }
        };
        let sent = async {
            let response = client.request(request).await.map_err(|e| e.to_string())?;
            let status = response.status();
            // Read (and bound) the answer so the connection can be reused.
            let _ = http_body_util::Limited::new(response.into_body(), 64 * 1024).collect().await;
            Ok::<_, String>(status)
        };
        match tokio::time::timeout(deadline, sent).await {
            Ok(Ok(status)) if status.is_success() => tracing::debug!(url = %url, "Pushed a value by HTTP."),
            Ok(Ok(status)) => tracing::warn!(url = %url, %status, "HTTP push was refused."),
            Ok(Err(e)) => tracing::warn!(url = %url, error = %e, "HTTP push failed."),
            Err(_) => tracing::warn!(url = %url, after = ?deadline, "HTTP push timed out."),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_addresses() {
        assert_eq!(broker("tcp://127.0.0.1:1883").unwrap(), ("127.0.0.1".to_owned(), 1883));
        assert_eq!(broker("mqtt://broker").unwrap(), ("broker".to_owned(), 1883));
        assert!(broker("tcp://:x").is_err());
    }
}
