//! edgecore's modules. The binary (`main.rs`) wires them into the daemon; integration tests use
//! them directly.
//!
//! Built so far: EdgeHub — joining with the token alone, and the session to CloudHub
//! (keepalive, liveness deadline, reconnect with backoff, routing by group).

pub mod devicetwin;
pub mod edged;
pub mod edgehub;
pub mod edgestream;
pub mod eventbus;
pub mod metamanager;
pub mod servicebus;
