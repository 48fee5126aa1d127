//! cloudcore's modules. The binary (`main.rs`) wires them into the daemon; integration tests
//! use them directly.
//!
//! Built so far: CloudHub — its PKI (CA, serving certificate and join token kept in the
//! Kubernetes API), the join API on :10002 (`/ca.crt`, `/edge.crt`, `/node/{name}`), and the
//! edge sessions on :10000 with upstream's ACK queues; EdgeController (pods, configmaps,
//! secrets and nodes to edges, their reports back); DeviceController (Devices and DeviceModels
//! to edges, twin and state reports into DeviceStatuses); SyncController (ObjectSync records
//! and the reconcile loop); the node authorizer every edge request passes ([`authz`]); the
//! Router (Rules between cloud and edge applications, [`router`]); the TaskManager (node
//! upgrade, image prepull and config update jobs, [`taskmanager`]).

pub mod authz;
pub mod cloudhub;
pub mod cloudstream;
pub mod delivery;
pub mod devicecontroller;
pub mod dynamiccontroller;
pub mod edgecontroller;
pub mod inflight;
pub mod iptables;
pub mod kubeclient;
pub mod router;
pub mod synccontroller;
pub mod taskmanager;
