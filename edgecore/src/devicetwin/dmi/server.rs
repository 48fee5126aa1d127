//! edgecore's `DeviceManagerService` (upstream `dmiserver`): mappers register, and report
//! twins and states, which reach DeviceTwin exactly as the same MQTT messages would
//! (`$hw/events/device/{id}/twin/update` and `…/state/update`).
//!
//! Rate limits: upstream limits every call together to 1 per second with a burst of 100,
//! which refuses the reports of any mapper with more than a handful of properties. Here
//! `MapperRegister` keeps upstream's limit and reports have their own bucket
//! ([`REPORT_QPS`], [`REPORT_BURST`]); beyond it the call fails with `RESOURCE_EXHAUSTED`.
//! Reports also wait for room in DeviceTwin's inbox (up to 5 s, then `UNAVAILABLE`), so a
//! fast mapper slows to what the twin commits.

use std::sync::Arc;
use std::time::Instant;

use kubeedge_beehive::Bus;
use kubeedge_dmi::v1beta1 as pb;
use kubeedge_dmi::v1beta1::device_manager_service_server::DeviceManagerService;
use kubeedge_model::constants::module;
use kubeedge_model::now_millis;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tonic::{Request, Response, Status};
use tracing::debug;

use super::Registration;

/// Reports (ReportDeviceStatus and ReportDeviceStates together) per second.
pub const REPORT_QPS: f64 = 5_000.0;
/// Reports in a burst.
pub const REPORT_BURST: f64 = 5_000.0;
/// Upstream's limit, kept for registrations: one per second, a burst of 100.
const REGISTER_QPS: f64 = 1.0;
const REGISTER_BURST: f64 = 100.0;
const STATES: [&str; 5] = ["online", "offline", "ok", "unknown", "unhealthy"];
/// How long a report waits for room in DeviceTwin's inbox.
const HANDOFF_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// A token bucket.
#[derive(Debug)]
pub struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: f64) -> Self {
        Self { rate, burst, tokens: burst, at: Instant::now() }
    }

    /// Takes a token if there is one.
    pub fn allow(&mut self) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The service.
pub struct Server {
    bus: Bus,
    registrations: mpsc::Sender<Registration>,
    /// Two small buckets behind one short lock each (tonic runs calls concurrently).
    register_limit: Arc<Mutex<Bucket>>,
    report_limit: Arc<Mutex<Bucket>>,
}

impl Server {
    /// A service handing registrations to DeviceTwin through `registrations` and reports to
    /// it over `bus`.
    pub fn new(bus: Bus, registrations: mpsc::Sender<Registration>) -> Self {
        Self {
            bus,
            registrations,
            register_limit: Arc::new(Mutex::new(Bucket::new(REGISTER_QPS, REGISTER_BURST))),
            report_limit: Arc::new(Mutex::new(Bucket::new(REPORT_QPS, REPORT_BURST))),
        }
    }

    /// Hands a message to DeviceTwin, waiting at most [`HANDOFF_WAIT`] for room (then the
    /// mapper is told to retry: UNAVAILABLE).
    async fn to_twin(&self, topic: String, payload: Vec<u8>) -> Result<(), Status> {
        let msg = crate::eventbus::twin_message(&topic, &payload);
        match tokio::time::timeout(HANDOFF_WAIT, self.bus.send(module::TWIN, msg)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Status::unavailable(format!("DeviceTwin is not running: {e}"))),
            Err(_) => Err(Status::unavailable("DeviceTwin is busy; report again")),
        }
    }
}

fn id(namespace: &str, name: &str) -> Result<String, Status> {
    if name.is_empty() {
        return Err(Status::invalid_argument("deviceName is empty"));
    }
    let ns = if namespace.is_empty() { "default" } else { namespace };
    if [ns, name].iter().any(|s| s.contains('/') || s.contains('+') || s.contains('#')) {
        return Err(Status::invalid_argument(format!("invalid device {ns}/{name}")));
    }
    Ok(format!("{ns}/{name}"))
}

#[tonic::async_trait]
impl DeviceManagerService for Server {
    async fn mapper_register(
        &self,
        request: Request<pb::MapperRegisterRequest>,
    ) -> Result<Response<pb::MapperRegisterResponse>, Status> {
        let req = request.into_inner();
        let mapper = req.mapper.unwrap_or_default();
        if !self.register_limit.lock().allow() {
            return Err(Status::resource_exhausted(format!(
                "fail to register mapper because of too many request: {}",
                mapper.name
            )));
        }
        if mapper.protocol.is_empty() {
            return Err(Status::invalid_argument(format!(
                "fail to register mapper {} because the protocol is nil",
                mapper.name
            )));
        }
        if mapper.address.is_empty() {
            return Err(Status::invalid_argument(format!("mapper {} gives no address (its socket)", mapper.name)));
        }
        let (reply, answer) = oneshot::channel();
        let reg = Registration { mapper, with_data: req.with_data, reply };
        self.registrations.send(reg).await.map_err(|_| Status::unavailable("DeviceTwin is not running"))?;
        answer.await.map_err(|_| Status::unavailable("DeviceTwin stopped"))?.map(Response::new)
    }

    async fn report_device_status(
        &self,
        request: Request<pb::ReportDeviceStatusRequest>,
    ) -> Result<Response<pb::ReportDeviceStatusResponse>, Status> {
        let req = request.into_inner();
        if !self.report_limit.lock().allow() {
            return Err(Status::resource_exhausted(format!(
                "fail to report device status because of too many request: {}",
                req.device_name
            )));
        }
        let id = id(&req.device_namespace, &req.device_name)?;
        let twins = req.reported_device.map(|d| d.twins).unwrap_or_default();
        if twins.is_empty() {
            return Err(Status::invalid_argument("ReportDeviceStatusRequest does not have twin data"));
        }
        // One twin/update per property, as upstream: the reported value as `actual`, the
        // desired value the mapper has seen as `expected` when it has one, so one value the
        // twin refuses (answered 400 on its result topic) costs only that property.
        for t in &twins {
            if t.property_name.is_empty() {
                return Err(Status::invalid_argument("a twin without propertyName"));
            }
        }
        debug!(device = %id, twins = twins.len(), "DMI twin report.");
        for t in twins {
            let mut m = serde_json::Map::new();
            if let Some(d) = t.observed_desired.filter(|d| !d.value.is_empty()) {
                m.insert("expected".into(), serde_json::json!({"value": d.value}));
            }
            let reported = t.reported.unwrap_or_default();
            m.insert("actual".into(), serde_json::json!({"value": reported.value}));
            let payload = serde_json::json!({"event_id": "", "timestamp": now_millis(), "twin": {t.property_name: m}});
            self.to_twin(format!("$hw/events/device/{id}/twin/update"), payload.to_string().into_bytes()).await?;
        }
        Ok(Response::new(pb::ReportDeviceStatusResponse {}))
    }

    async fn report_device_states(
        &self,
        request: Request<pb::ReportDeviceStatesRequest>,
    ) -> Result<Response<pb::ReportDeviceStatesResponse>, Status> {
        let req = request.into_inner();
        if !self.report_limit.lock().allow() {
            return Err(Status::resource_exhausted(format!(
                "fail to report device states because of too many request: {}",
                req.device_name
            )));
        }
        let id = id(&req.device_namespace, &req.device_name)?;
        if !STATES.contains(&req.state.to_lowercase().as_str()) {
            return Err(Status::invalid_argument(format!(
                "ReportDeviceStatesRequest is invalid data: state {:?} is not one of {STATES:?}",
                req.state
            )));
        }
        let payload = serde_json::json!({"event_id": "", "timestamp": now_millis(), "state": req.state});
        self.to_twin(format!("$hw/events/device/{id}/state/update"), payload.to_string().into_bytes()).await?;
        Ok(Response::new(pb::ReportDeviceStatesResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let mut b = Bucket::new(1.0, 3.0);
        assert!((0..3).all(|_| b.allow()));
        assert!(!b.allow());
        b.at -= std::time::Duration::from_millis(1100);
        assert!(b.allow());
        assert!(!b.allow());
    }

    #[test]
    fn device_ids_default_the_namespace_and_refuse_topic_characters() {
        assert_eq!(id("", "t").unwrap(), "default/t");
        assert_eq!(id("ns", "t").unwrap(), "ns/t");
        assert!(id("ns", "").is_err());
        assert!(id("ns", "a/b").is_err());
        assert!(id("n#", "a").is_err());
    }
}
