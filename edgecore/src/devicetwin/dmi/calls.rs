//! The DMI calls edgecore makes to mappers (`DeviceMapperService`), queued per protocol:
//! coalesced per object (the newest wins; a registration stays a registration until the
//! mapper has it), one call in flight per mapper, retried with backoff while the mapper is down.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

use kubeedge_dmi::v1beta1 as pb;
use kubeedge_dmi::v1beta1::device_mapper_service_client::DeviceMapperServiceClient;
use tonic::Code;

/// How long one call may take (upstream's client context: 10 s).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long dialing a mapper's socket may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// One call to a mapper.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    /// `RegisterDevice`.
    RegisterDevice(pb::Device),
    /// `UpdateDevice`.
    UpdateDevice(pb::Device),
    /// `RemoveDevice`.
    RemoveDevice {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// `CreateDeviceModel`.
    CreateModel(pb::DeviceModel),
    /// `UpdateDeviceModel`.
    UpdateModel(pb::DeviceModel),
    /// `RemoveDeviceModel`.
    RemoveModel {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
}

impl Call {
    /// What the call is about: (is a model, `{ns}/{name}`).
    pub fn key(&self) -> (bool, String) {
        match self {
            Call::RegisterDevice(d) | Call::UpdateDevice(d) => (false, d.id()),
            Call::RemoveDevice { namespace, name } => (false, format!("{namespace}/{name}")),
            Call::CreateModel(m) | Call::UpdateModel(m) => (true, m.id()),
            Call::RemoveModel { namespace, name } => (true, format!("{namespace}/{name}")),
        }
    }

    /// The RPC's name, for logs.
    pub fn rpc(&self) -> &'static str {
        match self {
            Call::RegisterDevice(_) => "RegisterDevice",
            Call::UpdateDevice(_) => "UpdateDevice",
            Call::RemoveDevice { .. } => "RemoveDevice",
            Call::CreateModel(_) => "CreateDeviceModel",
            Call::UpdateModel(_) => "UpdateDeviceModel",
            Call::RemoveModel { .. } => "RemoveDeviceModel",
        }
    }

    /// `self` (older) followed by `newer` for the same object, as one call.
    fn then(self, newer: Call) -> Call {
        match (self, newer) {
            // The mapper does not have it yet: it gets the newest spec as a registration.
            (Call::RegisterDevice(_), Call::UpdateDevice(d)) => Call::RegisterDevice(d),
            (Call::CreateModel(_), Call::UpdateModel(m)) => Call::CreateModel(m),
            (_, newer) => newer,
        }
    }
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The mapper could not be reached (dial failed, socket gone, timeout): worth retrying.
    #[error("mapper unreachable: {0}")]
    Unreachable(String),
    /// The mapper answered with an error: retrying the same call will not help.
    #[error("mapper refused: {0}")]
    Refused(String),
}

/// The calls waiting for one protocol's mapper.
#[derive(Debug, Default)]
pub struct Queue {
    calls: VecDeque<Call>,
}

impl Queue {
    /// Queues `call` behind the others, merged into a waiting call for the same object.
    pub fn push(&mut self, call: Call) {
        let key = call.key();
        match self.calls.iter().position(|c| c.key() == key).and_then(|i| Some((i, self.calls.remove(i)?))) {
            Some((i, waiting)) => self.calls.insert(i, waiting.then(call)),
            None => self.calls.push_back(call),
        }
    }

    /// Puts a failed call back at the front, under any newer call for the same object.
    pub fn retry(&mut self, failed: Call) {
        let key = failed.key();
        match self.calls.iter().position(|c| c.key() == key) {
            Some(i) => {
                if let Some(newer) = self.calls.remove(i) {
                    self.calls.push_front(failed.then(newer));
                }
            }
            None => self.calls.push_front(failed),
        }
    }

    /// The next call.
    pub fn pop(&mut self) -> Option<Call> {
        self.calls.pop_front()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// How many calls wait.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// Drops every waiting call (a mapper that registered with data has everything).
    pub fn clear(&mut self) {
        self.calls.clear();
    }
}

/// Backoff after `attempts` failures: 1 s doubling to 30 s.
pub fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(1u64 << attempts.min(5)).min(Duration::from_secs(30))
}

/// Makes one call on the mapper's socket.
pub async fn run(socket: PathBuf, call: Call) -> Result<(), CallError> {
    let channel = kubeedge_dmi::connect_unix(&socket, CONNECT_TIMEOUT)
        .await
        .map_err(|e| CallError::Unreachable(format!("{}: {e}", socket.display())))?;
    let mut client = DeviceMapperServiceClient::new(channel);
    let answer = tokio::time::timeout(CALL_TIMEOUT, async {
        match call {
            Call::RegisterDevice(device) => {
                client.register_device(pb::RegisterDeviceRequest { device: Some(device) }).await.map(drop)
            }
            Call::UpdateDevice(device) => {
                client.update_device(pb::UpdateDeviceRequest { device: Some(device) }).await.map(drop)
            }
            Call::RemoveDevice { namespace, name } => client
                .remove_device(pb::RemoveDeviceRequest { device_name: name, device_namespace: namespace })
                .await
                .map(drop),
            Call::CreateModel(model) => {
                client.create_device_model(pb::CreateDeviceModelRequest { model: Some(model) }).await.map(drop)
            }
            Call::UpdateModel(model) => {
                client.update_device_model(pb::UpdateDeviceModelRequest { model: Some(model) }).await.map(drop)
            }
            Call::RemoveModel { namespace, name } => client
                .remove_device_model(pb::RemoveDeviceModelRequest { model_name: name, model_namespace: namespace })
                .await
                .map(drop),
        }
    })
    .await
    .map_err(|_| CallError::Unreachable(format!("no answer within {CALL_TIMEOUT:?}")))?;
    answer.map_err(|s| match s.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::ResourceExhausted | Code::Aborted => {
            CallError::Unreachable(format!("{}: {}", s.code(), s.message()))
        }
        _ => CallError::Refused(format!("{}: {}", s.code(), s.message())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(name: &str, v: &str) -> pb::Device {
        pb::Device {
            name: name.into(),
            namespace: "default".into(),
            spec: Some(pb::DeviceSpec { device_model_reference: v.into(), ..Default::default() }),
            status: None,
        }
    }

    #[test]
    fn calls_coalesce_per_object_and_registrations_stay_registrations() {
        let mut q = Queue::default();
        q.push(Call::CreateModel(pb::DeviceModel { name: "m".into(), namespace: "default".into(), spec: None }));
        q.push(Call::RegisterDevice(dev("a", "1")));
        q.push(Call::RegisterDevice(dev("b", "1")));
        q.push(Call::UpdateDevice(dev("a", "2")));
        q.push(Call::RemoveDevice { namespace: "default".into(), name: "b".into() });
        assert_eq!(q.len(), 3);
        assert!(matches!(q.pop(), Some(Call::CreateModel(_))));
        let a = q.pop().unwrap();
        assert_eq!(a, Call::RegisterDevice(dev("a", "2")));
        // A failed call goes back to the front, under what came meanwhile.
        q.push(Call::UpdateDevice(dev("a", "3")));
        q.retry(a);
        assert_eq!(q.pop(), Some(Call::RegisterDevice(dev("a", "3"))));
        assert!(matches!(q.pop(), Some(Call::RemoveDevice { .. })));
        assert!(q.is_empty());
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(9), Duration::from_secs(30));
    }
}
