//! Our DeviceMapperService: edgecore's calls that change the panel live.
//!
//! Semantics follow upstream's mapper-framework `grpcserver`: a device needs its model (upstream
//! waits up to 3 s for it, as the model's call may still be on its way), RegisterDevice of a
//! device we already run unchanged is a no-op, UpdateDeviceModel of an unknown model fails, and
//! GetDevice answers with the device's latest twins in `status`.

use std::time::Duration;

use kubeedge_dmi::v1beta1::device_mapper_service_server::DeviceMapperService;
use kubeedge_dmi::v1beta1::*;
use tonic::{Request, Response, Status};

use crate::panel::Panel;
use crate::protocol::Protocol;

const MODEL_WAIT_TRIES: u32 = 3;
const MODEL_WAIT_STEP: Duration = Duration::from_secs(1);

/// The service, over a [`Panel`].
pub struct MapperService<P: Protocol> {
    panel: Panel<P>,
}

impl<P: Protocol> MapperService<P> {
    /// Serves `panel`.
    pub fn new(panel: Panel<P>) -> Self {
        Self { panel }
    }

    async fn model_of(&self, device: &Device) -> Result<(), Status> {
        let model = device.spec.as_ref().map(|s| s.device_model_reference.as_str()).unwrap_or_default();
        for attempt in 0..MODEL_WAIT_TRIES {
            if self.panel.model(&device.namespace, model).is_some() {
                return Ok(());
            }
            if attempt + 1 < MODEL_WAIT_TRIES {
                tokio::time::sleep(MODEL_WAIT_STEP).await;
            }
        }
        Err(Status::not_found(format!("deviceModel {model} in {} namespace not found", device.namespace)))
    }
}

fn need<T>(value: Option<T>, what: &str) -> Result<T, Status> {
    value.ok_or_else(|| Status::invalid_argument(format!("{what} is nil")))
}

#[tonic::async_trait]
impl<P: Protocol> DeviceMapperService for MapperService<P> {
    async fn register_device(
        &self,
        req: Request<RegisterDeviceRequest>,
    ) -> Result<Response<RegisterDeviceResponse>, Status> {
        let device = need(req.into_inner().device, "device")?;
        let answer =
            RegisterDeviceResponse { device_name: device.name.clone(), device_namespace: device.namespace.clone() };
        let known = self.panel.device(&device.namespace, &device.name);
        if known.is_some_and(|mut d| {
            d.status = device.status.clone();
            d == device
        }) {
            return Ok(Response::new(answer));
        }
        self.model_of(&device).await?;
        self.panel.upsert_device(device);
        Ok(Response::new(answer))
    }

    async fn remove_device(&self, req: Request<RemoveDeviceRequest>) -> Result<Response<RemoveDeviceResponse>, Status> {
        let req = req.into_inner();
        if req.device_name.is_empty() {
            return Err(Status::invalid_argument("device name is nil"));
        }
        if !self.panel.remove_device(&req.device_namespace, &req.device_name) {
            return Err(Status::not_found(format!("device {}/{} not found", req.device_namespace, req.device_name)));
        }
        Ok(Response::new(RemoveDeviceResponse {}))
    }

    async fn update_device(&self, req: Request<UpdateDeviceRequest>) -> Result<Response<UpdateDeviceResponse>, Status> {
        let device = need(req.into_inner().device, "device")?;
        self.model_of(&device).await?;
        self.panel.upsert_device(device);
        Ok(Response::new(UpdateDeviceResponse {}))
    }

    async fn create_device_model(
        &self,
        req: Request<CreateDeviceModelRequest>,
    ) -> Result<Response<CreateDeviceModelResponse>, Status> {
        let model = need(req.into_inner().model, "deviceModel")?;
        let answer = CreateDeviceModelResponse {
            device_model_name: model.name.clone(),
            device_model_namespace: model.namespace.clone(),
        };
        self.panel.upsert_model(model);
        Ok(Response::new(answer))
    }

    async fn remove_device_model(
        &self,
        req: Request<RemoveDeviceModelRequest>,
    ) -> Result<Response<RemoveDeviceModelResponse>, Status> {
        let req = req.into_inner();
        self.panel.remove_model(&req.model_namespace, &req.model_name);
        Ok(Response::new(RemoveDeviceModelResponse {}))
    }

    async fn update_device_model(
        &self,
        req: Request<UpdateDeviceModelRequest>,
    ) -> Result<Response<UpdateDeviceModelResponse>, Status> {
        let model = need(req.into_inner().model, "deviceModel")?;
        if self.panel.model(&model.namespace, &model.name).is_none() {
            return Err(Status::not_found(format!("update deviceModel {} failed, not existed", model.name)));
        }
        self.panel.upsert_model(model);
        Ok(Response::new(UpdateDeviceModelResponse {}))
    }

    async fn get_device(&self, req: Request<GetDeviceRequest>) -> Result<Response<GetDeviceResponse>, Status> {
        let req = req.into_inner();
        if req.device_name.is_empty() {
            return Err(Status::invalid_argument("device name is nil"));
        }
        let device = self.panel.device(&req.device_namespace, &req.device_name);
        let device = device.ok_or_else(|| {
            Status::not_found(format!("device {}/{} not found", req.device_namespace, req.device_name))
        })?;
        Ok(Response::new(GetDeviceResponse { device: Some(device) }))
    }
}
