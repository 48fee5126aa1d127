//! edgecore's modules. The binary (`main.rs`) wires them into the daemon; integration tests use
//! them directly.
//!
//! Built: EdgeHub (joining with the token alone, the session to CloudHub, routing by group),
//! MetaManager with MetaServer, Edged (a kubelet on CRI), EventBus and DeviceTwin (MQTT, DMI),
//! EdgeStream (the stream tunnel), ServiceBus (HTTP between the Router and edge apps) and the
//! task manager (node upgrade, image pre-pull and config update jobs).

pub mod devicetwin;
pub mod edged;
pub mod edgehub;
pub mod edgestream;
pub mod eventbus;
pub mod metamanager;
pub mod servicebus;
pub mod taskmanager;
