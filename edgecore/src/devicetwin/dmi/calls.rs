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

    /// `self` (older, not delivered) followed by `newer` for the same object, as one call, or
    /// none when they cancel out. A registration not delivered means the mapper lacks the
    /// object; a removal not delivered means it still has it (mapper-framework's
    /// `RegisterDevice` ignores a device it has, while `UpdateDevice` adds or replaces).
    fn then(self, newer: Call) -> Option<Call> {
        Some(match (self, newer) {
            // The mapper does not have it: it gets the newest spec as a registration, or nothing.
            (Call::RegisterDevice(_), Call::UpdateDevice(d) | Call::RegisterDevice(d)) => Call::RegisterDevice(d),
            (Call::CreateModel(_), Call::UpdateModel(m) | Call::CreateModel(m)) => Call::CreateModel(m),
            (Call::RegisterDevice(_), Call::RemoveDevice { .. }) | (Call::CreateModel(_), Call::RemoveModel { .. }) => {
                return None;
            }
            // The mapper has it: a registration would be ignored, so the newest spec replaces it.
            (Call::UpdateDevice(_) | Call::RemoveDevice { .. }, Call::RegisterDevice(d)) => Call::UpdateDevice(d),
            (Call::UpdateModel(_) | Call::RemoveModel { .. }, Call::CreateModel(m)) => Call::UpdateModel(m),
            (_, newer) => newer,
        })
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
    /// Queues `call` behind the others. A waiting call for the same object is merged into it
    /// and the result goes to the back, so an object never overtakes what it depends on (a
    /// device changed to use a model queued after it).
    pub fn push(&mut self, call: Call) {
        let key = call.key();
        let merged = match self.calls.iter().position(|c| c.key() == key).and_then(|i| self.calls.remove(i)) {
            Some(waiting) => waiting.then(call),
            None => Some(call),
        };
        self.calls.extend(merged);
    }

    /// Puts a failed call back: merged into a newer call for the same object where that one
    /// waits, else at the front.
    pub fn retry(&mut self, failed: Call) {
        let key = failed.key();
        match self.calls.iter().position(|c| c.key() == key) {
            Some(i) => {
                let Some(newer) = self.calls.remove(i) else { return };
                if let Some(merged) = failed.then(newer) {
                    self.calls.insert(i, merged);
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
    fn calls_coalesce_per_object_keeping_what_the_mapper_has_in_mind() {
        let model = |n: &str| pb::DeviceModel { name: n.into(), namespace: "default".into(), spec: None };
        let remove = |n: &str| Call::RemoveDevice { namespace: "default".into(), name: n.into() };
        let mut q = Queue::default();
        q.push(Call::UpdateDevice(dev("a", "1")));
        q.push(Call::RegisterDevice(dev("b", "1")));
        q.push(Call::CreateModel(model("m")));
        // a now uses model m: it goes behind m.
        q.push(Call::UpdateDevice(dev("a", "m")));
        // b was never delivered: registering then removing it is nothing.
        q.push(remove("b"));
        assert_eq!(q.len(), 2);
        assert!(matches!(q.pop(), Some(Call::CreateModel(_))));
        let a = q.pop().unwrap();
        assert_eq!(a, Call::UpdateDevice(dev("a", "m")));
        assert!(q.is_empty());
        // The mapper has c: removing and registering it again replaces its spec.
        q.push(remove("c"));
        q.push(Call::RegisterDevice(dev("c", "2")));
        assert_eq!(q.pop(), Some(Call::UpdateDevice(dev("c", "2"))));
        // A registration not delivered stays one, with the newest spec.
        q.push(Call::RegisterDevice(dev("d", "1")));
        q.push(Call::UpdateDevice(dev("d", "2")));
        assert_eq!(q.pop(), Some(Call::RegisterDevice(dev("d", "2"))));
        // A failed call is merged where a newer one for its object waits, else goes first.
        q.push(Call::CreateModel(model("n")));
        q.push(Call::UpdateDevice(dev("a", "3")));
        q.retry(a);
        assert!(matches!(q.pop(), Some(Call::CreateModel(_))));
        assert_eq!(q.pop(), Some(Call::UpdateDevice(dev("a", "3"))));
        q.push(Call::CreateModel(model("n")));
        q.retry(remove("e"));
        assert_eq!(q.pop(), Some(remove("e")));
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(9), Duration::from_secs(30));
    }
}
